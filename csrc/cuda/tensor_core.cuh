// What the CUDA files share about tensor cores: the CUDA-native element types behind torch's
// 16-bit types, the PTX wrappers (ldmatrix, cp.async, mma.sync, wgmma) and
// torch.backends.cudnn.allow_tf32 (the flag that governs the cuDNN op each kernel replaces).
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
// TF32 rounding and the mma.sync / ldmatrix / cp.async forms need sm_80+ (the host pass sees
// the declarations)
#define RNNKERN_HAS_SM80_TENSOR_CORES 1
#else
#define RNNKERN_HAS_SM80_TENSOR_CORES 0
#endif

namespace rnnkern {

// c10::Half / c10::BFloat16 have the same bits as __half / __nv_bfloat16, which the PTX wrappers take.
template <typename T> struct NativeOf { using type = T; };
template <> struct NativeOf<at::Half> { using type = __half; };
template <> struct NativeOf<at::BFloat16> { using type = __nv_bfloat16; };

// ---- PTX building blocks (sm_80+): shared addresses, ldmatrix, cp.async, mma.sync -------------
// Used by conv.cu's engine, conv_transpose.cu's block kernel and rnn.cu's tensor-core kernel;
// fragment layouts are described beside conv.cu's MmaSyncMma.
#if RNNKERN_HAS_SM80_TENSOR_CORES
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
// the same, allocating in L1 too (for data the block copies again soon: conv.cu's kTapGroup)
__device__ __forceinline__ void cp_async16_ca(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
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

// ---- wgmma (sm_90a: Hopper's warpgroup MMA, an arch-specific feature) --------------------------
// Compiled only where nvcc targets sm_90a (setup.py turns an sm_90 target into sm_90a, and defines
// RNNKERN_WITH_SM90A for the host side); elsewhere the callers trap and the host never picks them.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define RNNKERN_HAS_WGMMA 1
#else
#define RNNKERN_HAS_WGMMA 0
#endif

#if RNNKERN_HAS_WGMMA
// Shared-memory matrix descriptor, no swizzle: the operand is made of 8-row x 16-byte core
// matrices, each 128 contiguous bytes; `lbo` = bytes between core matrices adjacent along k,
// `sbo` = bytes between groups of 8 rows (m or n). Base offset 0, swizzle bits (62-63) 0.
__device__ __forceinline__ uint64_t wgmma_desc(uint32_t smem_addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((smem_addr >> 4) & 0x3FFF) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// Shared memory written through the generic proxy (st.shared, cp.async) visible to the async
// proxy that wgmma reads it through: each writing thread, after its writes, before the barrier.
__device__ __forceinline__ void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Pins the accumulators at this point of the program: the compiler must not move their uses
// across a wgmma fence / wait (it cannot see that the asynchronous MMA writes them).
template <int R>
__device__ __forceinline__ void wgmma_pin(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The accumulator operands of one wgmma: this thread's N / 2 fp32 registers, read and written.
#define RNNKERN_ACC8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                        "+f"(d[i + 6]), "+f"(d[i + 7])
#define RNNKERN_ACC32 RNNKERN_ACC8(0), RNNKERN_ACC8(8), RNNKERN_ACC8(16), RNNKERN_ACC8(24)
#define RNNKERN_ACC64 RNNKERN_ACC32, RNNKERN_ACC8(32), RNNKERN_ACC8(40), RNNKERN_ACC8(48), RNNKERN_ACC8(56)
#define RNNKERN_ACC128 RNNKERN_ACC64, RNNKERN_ACC8(64), RNNKERN_ACC8(72), RNNKERN_ACC8(80), RNNKERN_ACC8(88), \
                       RNNKERN_ACC8(96), RNNKERN_ACC8(104), RNNKERN_ACC8(112), RNNKERN_ACC8(120)
#define RNNKERN_REGS32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define RNNKERN_REGS64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define RNNKERN_REGS128 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
// Operand numbers after the R accumulators: the descriptors, the scale-d predicate's source, the
// transpose immediates.
#define RNNKERN_DESC32 "%32, %33"
#define RNNKERN_DESC64 "%64, %65"
#define RNNKERN_DESC128 "%128, %129"
#define RNNKERN_PRED32 "%34"
#define RNNKERN_PRED64 "%66"
#define RNNKERN_PRED128 "%130"
#define RNNKERN_TRANS32 "%35, %36"
#define RNNKERN_TRANS64 "%67, %68"
#define RNNKERN_TRANS128 "%131, %132"
// One wgmma.mma_async of shape SHAPE ("m64n64k16", ...) and types TYPES ("f32.bf16.bf16", ...) on
// R accumulators (R = N / 2: 32 or 64) and the descriptors da, db; D accumulated (scale-d 1), A and
// B unscaled; _T adds the transpose immediates of the 16-bit types.
#define RNNKERN_WGMMA_ASYNC(R, SHAPE, TYPES)                                                       \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " RNNKERN_PRED##R ", 0;\n"                        \
               "wgmma.mma_async.sync.aligned." SHAPE "." TYPES " " RNNKERN_REGS##R ", " RNNKERN_DESC##R \
               ", p, 1, 1;\n}\n"                                                                    \
               : RNNKERN_ACC##R                                                                     \
               : "l"(da), "l"(db), "r"(1))
#define RNNKERN_WGMMA_ASYNC_T(R, SHAPE, TYPES)                                                     \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " RNNKERN_PRED##R ", 0;\n"                        \
               "wgmma.mma_async.sync.aligned." SHAPE "." TYPES " " RNNKERN_REGS##R ", " RNNKERN_DESC##R \
               ", p, 1, 1, " RNNKERN_TRANS##R ";\n}\n"                                               \
               : RNNKERN_ACC##R                                                                     \
               : "l"(da), "l"(db), "r"(1), "n"(int(kTransA)), "n"(int(kTransB)))

// d (64 x N fp32 accumulators of the warpgroup; this thread's N / 2) += A (64 x k) B (k x N), A and
// B K-major in shared memory (descriptors da, db): k = 16 for bf16 / fp16, 8 for tf32 (fp32 bits,
// the top 19 used); N = 64, 128 or 256. Accumulator layout: warp w of the group rows 16 w + lane / 4
// (+ 8 for d[4j+2], d[4j+3]), columns 8 j + 2 (lane % 4) (+ 1 for odd registers).
// kTransA / kTransB (16-bit only): that operand is MN-major instead (rows of 8 m / n elements per k;
// without swizzle the descriptor's SBO then steps 8 m / n, its LBO 8 k: wgmma_desc; with 128-byte
// swizzle the roles swap: wgmma_desc_mn_sw128).
template <typename T, int N, bool kTransA = false, bool kTransB = false>
__device__ __forceinline__ void wgmma_m64n(float (&d)[N / 2], uint64_t da, uint64_t db) {
  static_assert(N == 64 || N == 128 || N == 256, "wgmma_m64n: N = 64, 128 or 256");
  static_assert(!std::is_same_v<T, float> || (!kTransA && !kTransB), "tf32 wgmma takes K-major operands only");
  if constexpr (std::is_same_v<T, float>) {
    if constexpr (N == 64) RNNKERN_WGMMA_ASYNC(32, "m64n64k8", "f32.tf32.tf32");
    else if constexpr (N == 128) RNNKERN_WGMMA_ASYNC(64, "m64n128k8", "f32.tf32.tf32");
    else RNNKERN_WGMMA_ASYNC(128, "m64n256k8", "f32.tf32.tf32");
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if constexpr (N == 64) RNNKERN_WGMMA_ASYNC_T(32, "m64n64k16", "f32.bf16.bf16");
    else if constexpr (N == 128) RNNKERN_WGMMA_ASYNC_T(64, "m64n128k16", "f32.bf16.bf16");
    else RNNKERN_WGMMA_ASYNC_T(128, "m64n256k16", "f32.bf16.bf16");
  } else {
    static_assert(std::is_same_v<T, __half>, "wgmma_m64n: tf32 (float), bf16 or fp16");
    if constexpr (N == 64) RNNKERN_WGMMA_ASYNC_T(32, "m64n64k16", "f32.f16.f16");
    else if constexpr (N == 128) RNNKERN_WGMMA_ASYNC_T(64, "m64n128k16", "f32.f16.f16");
    else RNNKERN_WGMMA_ASYNC_T(128, "m64n256k16", "f32.f16.f16");
  }
}
// Descriptor of a K-major operand as TMA writes it with 128-byte swizzle: rows of 128 bytes, 16-byte
// chunk j of row i at chunk j ^ (i % 8), in 1024-byte atoms of 8 rows (SBO 1024; LBO unused for
// swizzled K-major operands, 1 by convention). Layout type 1 (bits 62-63) = SWIZZLE_128B. The atoms
// must be 1024-byte aligned: the swizzle is applied to the address bits, so a k step inside a row
// is the start address plus its byte offset (32 bytes a k16 / k8 instruction).
__device__ __forceinline__ uint64_t wgmma_desc_sw128(uint32_t smem_addr) {
  return static_cast<uint64_t>((smem_addr >> 4) & 0x3FFF) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}

// Descriptor of an MN-major 16-bit operand as TMA writes it with 128-byte swizzle: the 64 m / n
// elements of one k in a 128-byte row (16-byte chunks swizzled as above), 8 k rows a 1024-byte atom
// (SBO 1024: the k direction), the next 64 m / n elements `lbo` bytes further (LBO: the m / n
// direction). PTX ISA's canonical MN-major SWIZZLE_128B layout ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)),
// in which LBO and SBO swap roles against the unswizzled MN-major layout's (wgmma_desc). A k16
// instruction's 16 rows are two atoms: its start is 2048 bytes on from the previous one's.
__device__ __forceinline__ uint64_t wgmma_desc_mn_sw128(uint32_t smem_addr, uint32_t lbo) {
  return static_cast<uint64_t>((smem_addr >> 4) & 0x3FFF) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// ---- mbarriers and TMA (sm_90) -------------------------------------------------------------------
// A shared-memory mbarrier (8 bytes) by its shared address. init: `count` arrivals complete a phase;
// the transaction count of arrive_expect_tx is added to the phase and the TMA copies' complete_tx
// retire it, so the phase completes when the one arrival and all the bytes are in.
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// The initialised barriers visible to the async proxy (the TMA unit signals them) and the cluster.
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\nfence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Waits until the phase of parity `parity` has completed (try_wait suspends the thread for a
// system-dependent time before it reports false, so the loop does not spin hot). kCluster: acquire
// at cluster scope, pairing with arrivals released at cluster scope by other CTAs of the cluster.
template <bool kCluster = false>
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    if constexpr (kCluster)
      asm volatile(
          "{\n.reg .pred p;\nmbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
          "selp.u32 %0, 1, 0, p;\n}\n"
          : "=r"(done)
          : "r"(bar), "r"(parity)
          : "memory");
    else
      asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                   : "=r"(done)
                   : "r"(bar), "r"(parity)
                   : "memory");
  } while (!done);
}
__device__ __forceinline__ void tma_prefetch_map(const void* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}
// One im2col-mode load of a rank-4 (C, W, H, N) map: the map's pixelsPerColumn pixels from the
// base pixel (w, h, n) on, channelsPerPixel channels from c each, each pixel read at (w + off_w,
// h + off_h) (zeros outside the tensor), into dst; completes `bytes` on bar.
__device__ __forceinline__ void tma_load_im2col_4d(uint32_t dst, const void* map, uint32_t bar, int c, int w, int h,
                                                   int n, uint16_t off_w, uint16_t off_h) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
      "[%2], {%7, %8};\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c), "r"(w), "r"(h), "r"(n), "h"(off_w), "h"(off_h)
      : "memory");
}
// One tiled load of a rank-2 map's box at (x0, x1) (innermost first; zeros past the tensor).
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void* map, uint32_t bar, int x0, int x1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::
          "r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(x0), "r"(x1)
      : "memory");
}
// One tiled load of a rank-4 map's box at (x0, x1, x2, x3) (innermost first; signed coordinates,
// zeros outside the tensor).
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const void* map, uint32_t bar, int x0, int x1, int x2,
                                            int x3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
      "[%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(x0), "r"(x1), "r"(x2), "r"(x3)
      : "memory");
}
// One tiled load of a rank-3 map's box at (x0, x1, x2) (innermost first; zeros past the tensor).
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const void* map, uint32_t bar, int x0, int x1, int x2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];\n" ::
          "r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(x0), "r"(x1), "r"(x2)
      : "memory");
}

// ---- thread-block clusters (sm_90): the TMA gather's CTA pairs --------------------------------------
// This CTA's rank in its cluster.
__device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
// Every thread of every CTA of the cluster: this CTA's earlier shared-memory writes (and mbarrier
// initialisations, after mbar_init_fence) visible to the others' later accesses. (.aligned: the
// whole warp executes it, so the warp is converged first.)
__device__ __forceinline__ void cluster_sync_all() {
  __syncwarp();
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// The shared::cluster address of this CTA's shared address `smem_addr` in CTA `rank`'s shared memory.
__device__ __forceinline__ uint32_t cluster_map(uint32_t smem_addr, uint32_t rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(smem_addr), "r"(rank));
  return r;
}
__device__ __forceinline__ unsigned long long ld_cluster_u64(uint32_t cluster_addr) {
  unsigned long long v;
  asm volatile("ld.shared::cluster.u64 %0, [%1];\n" : "=l"(v) : "r"(cluster_addr) : "memory");
  return v;
}
// One arrival on an mbarrier of another CTA of the cluster (a shared::cluster address: cluster_map),
// releasing this thread's earlier accesses at cluster scope.
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t cluster_bar) {
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(cluster_bar) : "memory");
}
// tma_load_3d's box written to the same shared offset dst in every CTA of the cluster whose bit is
// set in cta_mask, each completing its bytes on its own mbarrier at offset bar: one L2 read feeds
// them all.
__device__ __forceinline__ void tma_load_3d_multicast(uint32_t dst, const void* map, uint32_t bar, int x0, int x1,
                                                      int x2, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%0], "
      "[%1, {%3, %4, %5}], [%2], %6;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(x0), "r"(x1), "r"(x2), "h"(cta_mask)
      : "memory");
}
// tma_load_im2col_4d's box multicast as tma_load_3d_multicast's.
__device__ __forceinline__ void tma_load_im2col_4d_multicast(uint32_t dst, const void* map, uint32_t bar, int c, int w,
                                                             int h, int n, uint16_t off_w, uint16_t off_h,
                                                             uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes.multicast::cluster [%0], "
      "[%1, {%3, %4, %5, %6}], [%2], {%7, %8}, %9;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c), "r"(w), "r"(h), "r"(n), "h"(off_w), "h"(off_h),
      "h"(cta_mask)
      : "memory");
}

#undef RNNKERN_WGMMA_ASYNC_T
#undef RNNKERN_WGMMA_ASYNC
#undef RNNKERN_TRANS128
#undef RNNKERN_TRANS64
#undef RNNKERN_TRANS32
#undef RNNKERN_PRED128
#undef RNNKERN_PRED64
#undef RNNKERN_PRED32
#undef RNNKERN_DESC128
#undef RNNKERN_DESC64
#undef RNNKERN_DESC32
#undef RNNKERN_REGS128
#undef RNNKERN_REGS64
#undef RNNKERN_REGS32
#undef RNNKERN_ACC128
#undef RNNKERN_ACC64
#undef RNNKERN_ACC32
#undef RNNKERN_ACC8
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
