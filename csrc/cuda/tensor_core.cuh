// What conv.cu and rnn.cu share about tensor cores: the CUDA-native element types behind
// torch's 16-bit types, the WMMA fragment shape and precision for each element type, and
// torch.backends.cudnn.allow_tf32 (the flag that governs the cuDNN op each kernel replaces).
#pragma once
#include <ATen/Context.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

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
