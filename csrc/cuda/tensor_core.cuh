// What the CUDA files share about tensor cores: the CUDA-native element types behind torch's
// 16-bit types, the WMMA fragment shape and precision for each element type, the PTX wrappers
// (ldmatrix, cp.async, mma.sync) and torch.backends.cudnn.allow_tf32 (the flag that governs the
// cuDNN op each kernel replaces).
#pragma once
#include <ATen/Context.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstdint>
#include <string>
#include <type_traits>

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define RNNKERN_HAS_WMMA 1  // WMMA bf16 / tf32 need sm_80+ (the host pass sees the declarations)
#else
#define RNNKERN_HAS_WMMA 0
#endif

namespace rnnkern {

// c10::Half / c10::BFloat16 have the same bits as __half / __nv_bfloat16, which WMMA takes.
template <typename T> struct NativeOf { using type = T; };
template <> struct NativeOf<at::Half> { using type = __half; };
template <> struct NativeOf<at::BFloat16> { using type = __nv_bfloat16; };

#if RNNKERN_HAS_WMMA
template <typename T> struct WmmaTypes {  // bf16 / fp16: m16n16k16
  using Frag = T;
  static constexpr int FK = 16;
};
template <> struct WmmaTypes<float> {  // tf32: m16n16k8 on fp32 values (rounded with __float_to_tf32)
  using Frag = nvcuda::wmma::precision::tf32;
  static constexpr int FK = 8;
};
#endif

// ---- PTX building blocks (sm_80+): shared addresses, ldmatrix, cp.async, mma.sync -------------
// Used by conv.cu's engine and conv_transpose.cu's block kernel; fragment layouts are described
// beside conv.cu's MmaSyncMma.
#if RNNKERN_HAS_WMMA
__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// cp.async (sm_80+): src_bytes = 0 copies nothing and zero-fills the destination (padding).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

__device__ __forceinline__ uint32_t lds_u32(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}

// d += a * b on one m16 x n8 tile (k16 for 16-bit types, k8 for tf32)
template <typename T>
__device__ __forceinline__ void mma_tile(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, float>) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    static_assert(std::is_same_v<T, __half>, "mma_tile: tf32 (float), bf16 or fp16");
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}
#endif

// torch.backends.cudnn.allow_tf32 for one kind of op, across the C++ API's generations:
// allowTF32CuDNN() (<= 2.8), allowTF32CuDNN("conv") (2.9), allowTF32CuDNN(at::Float32Op::CONV)
// (later; its no-argument form throws when the conv and RNN settings differ). The parameter type
// of the member picks the form, so this builds against the GPU machine's torch as well as ours.
enum class CudnnOp { kConv, kRnn };

template <typename F> struct first_param;
template <typename C, typename R> struct first_param<R (C::*)() const> { using type = void; };
template <typename C, typename R, typename A> struct first_param<R (C::*)(A) const> { using type = std::decay_t<A>; };

template <typename Ctx>
bool cudnn_tf32_allowed(const Ctx& ctx, CudnnOp op) {
  using Arg = typename first_param<decltype(&Ctx::allowTF32CuDNN)>::type;
  if constexpr (std::is_void_v<Arg>) {
    return ctx.allowTF32CuDNN();
  } else if constexpr (std::is_same_v<Arg, std::string>) {
    return ctx.allowTF32CuDNN(op == CudnnOp::kConv ? "conv" : "rnn");
  } else {
    using E = typename Arg::value_type;
    return ctx.allowTF32CuDNN(op == CudnnOp::kConv ? E::CONV : E::RNN);
  }
}

inline bool cudnn_tf32_allowed(CudnnOp op) { return cudnn_tf32_allowed(at::globalContext(), op); }

}  // namespace rnnkern
