// Dilated / strided / grouped 2-D convolution on CUDA: implicit GEMM (no im2col is ever
// materialised), shared-memory tiles, tensor cores where the dtype allows.
//
// Two kernel families, both deterministic (no float atomics anywhere):
//
// * gather_conv_kernel: C[m, n] = sum_{tap, c} A[m, (tap, c)] * B[(tap, c), n] with m an output
//   pixel (n, ho, wo), n an output channel of the group, and A read straight from the source
//   tensor through the index mapping of the tap:
//     forward     (kTrans = false): hs = ho * sh - pt + r * dh
//     grad_input  (kTrans = true):  hs = (ho + pt - r * dh) / sh, only where that divides
//   (the same along W), with B the weight permuted once to (G, taps, R, Nn). grad_input of a
//   convolution is the transposed mapping on grad_output with the weight's (Kg, Cg) swapped,
//   which is also the forward of a transposed convolution (conv_transpose2d_forward_gather_cuda,
//   called by csrc/cuda/conv_transpose.cu).
//   Stride phases (transposed mapping only): with s > 1 an output row ho is reached only by the
//   taps r with (ho + pt - r * dh) % sh == 0, which depend on ho's phase ho % sh alone. So the
//   pixels are enumerated phase-major: blockIdx.x = m_tile * (sh * sw) + (ph * sw + pw), block pixels
//   m in [0, N * Hq * Wq) (Hq = ceil(Ho / sh)) at ho = hq * sh + ph, wo = wq * sw + pw (ragged
//   positions past Ho / Wo are masked), and the tap loop runs over a compressed index t over
//   only the phase's taps r = r0 + j * (sh / gcd(sh, dh)) (r0 found per block, likewise along W)
//   mapped back to the real tap r * KW + s for the weight rows and the source mapping. No
//   inserted zero is multiplied (without this, (1 - 1/(sh sw)) of the MACs were zeros) and the
//   k64 s32 FCN-32s head visits 2 x 2 of its 4096 taps per phase. Forward: one phase, all taps.
//   Tap skipping: before the first k-step of a tap, the block builds the per-pixel source offsets
//   of its BM pixels for that tap (one smem table, -1 = reads padding); __syncthreads_or over the
//   pixels decides whether any pixel of the tile reads real data, and taps whose whole tile reads
//   only padding are skipped with all their channel steps (at 32x32 with dilation 18 most of the
//   off-centre taps of most tiles). The same table makes every A load one add.
//
// * wgrad_kernel: for each tap, grad_weight[k, c] = sum_p gy[p, k] * x[p shifted by the tap, c]
//   over the output pixels p whose shifted read is real input: that set is a rectangle
//   (rows [oh0, oh1) x cols [ow0, ow1) per image), so the reduction runs over it and nothing
//   else (exact tap skipping). Split-K over the pixels, each split writing its own fp32 (fp64)
//   partial tile to a workspace, then wgrad_reduce_kernel adds the splits in index order:
//   bitwise reproducible.
//
// Tiles: BM = 128 x BN = 64, 256 threads, BK = 32 (16 on the SIMT paths). Tensor cores through
// mma.sync with ldmatrix fragment loads: bf16/fp16 (m16n8k16) and tf32 (m16n8k8, when
// torch.backends.cudnn.allow_tf32), fp32 accumulate; fp32 with TF32 disallowed and fp64 run a
// SIMT FMA path (8x4 outputs per thread). On Hopper, sm_90a builds add Hopper's asynchronous
// warpgroup MMA on 128 x 128 or 128 x 64 tiles (wgmma_tile_n): the forward / grad_input's default
// on 128-column tiles where it measured faster, everywhere with RNNKERN_CONV_MMA=wgmma (conv_mma_form).
// And a third gather, gather_tma_kernel: the forward / grad_input of channels_last tensors fed by
// TMA im2col loads into a ring of 128-byte-swizzled stages (one producer thread, two consumer
// warpgroups on wgmma; 128 x 128 or 128 x 256 tiles): 16-bit's default where it runs (tma_wanted),
// any tensor-core dtype with RNNKERN_CONV_MMA=tma; RNNKERN_CONV_TMA_CLUSTER=2|4 runs its CTAs in
// clusters that share the weight tile through multicast copies.
// Mainloop: a ring of cp.async stages (kStages > 1; use_pipeline says where), else one shared
// stage + register prefetch (the next step's global loads in flight while the tensor cores work
// on the current one; RNNKERN_CONV_PIPELINE=0 forces it). Epilogue: accumulators staged through shared
// memory in the orientation that makes the global stores coalesced for the output's layout.
// Layouts: NCHW and channels_last natively (template kCL); loads along the contiguous dimension
// use 16-byte vectors where the channel counts and pointers allow it (runtime flag).
// 16-bit NCHW runs on the channels_last kernels through copies (nchw_via_channels_last; TF32 too
// with RNNKERN_CONV_NCHW=transpose).
// Groups with very few channels (depthwise) run direct kernels (one thread per output /
// one block per weight element with a fixed-order reduction) instead of 97%-empty tiles.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda.h>  // CUtensorMap (the encode functions are reached through the runtime: tensor_map_encoders)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "../conv_common.h"
#include "../conv_gemm.h"
#include "../env.h"
#include "../ops.h"
#include "blas.cuh"
#include "kernel_queries.cuh"
#include "layout_copy.cuh"
#include "tensor_core.cuh"


namespace rnnkern {
namespace {

using namespace nvcuda;

constexpr int kThreads = 256;
constexpr int BM = 128, BN = 64;

// ---- element types ----------------------------------------------------------------------------

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T, typename A> __device__ __forceinline__ T from_acc(A v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(static_cast<float>(v));
  else return static_cast<T>(v);
}

template <typename T> __device__ __forceinline__ T zero_of() { return from_acc<T>(typename AccOf<T>::type(0)); }

// 16 bytes of T kept as four 32-bit words, so 16-bit elements stay two to a register (an array
// of T would give each element its own register and unpack the load at once).
template <typename T> struct alignas(16) Vec16 {
  static constexpr int N = 16 / sizeof(T);
  uint4 bits;
  __device__ __forceinline__ T get(int e) const { return reinterpret_cast<const T*>(&bits)[e]; }
  __device__ __forceinline__ void set(int e, T x) { reinterpret_cast<T*>(&bits)[e] = x; }
};

// One run of Vec16<T>::N consecutive elements base[off + j + e] into r: a single 16-byte
// load when `vec` (the caller guarantees alignment and that `limit` is a multiple of the run),
// element-wise otherwise. Zeros for a padding position (off < 0) and past `limit` in j. The run
// stays packed in registers until store_run: unpacking 16-bit elements right after the load
// would make the thread wait for it there, before the tile's MMA, instead of at the store.
template <typename T>
__device__ __forceinline__ void load_run(Vec16<T>& r, const T* base, long long off, int j, int limit, bool vec) {
  constexpr int V = Vec16<T>::N;
  if (vec) {
    r.bits = off >= 0 && j < limit ? *reinterpret_cast<const uint4*>(base + off + j) : make_uint4(0, 0, 0, 0);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) r.set(e, (off >= 0 && j + e < limit) ? base[off + j + e] : zero_of<T>());
  }
}

// The arithmetic of a kernel instance: SIMT FMA, or tensor cores in tf32 / 16-bit, which run
// mma.sync on fragments loaded with ldmatrix (MmaSyncMma; on sm_90a optionally Hopper's wgmma,
// WgmmaMma). (An earlier WMMA form of the same tiles measured 10-30% slower on an H200 and was
// removed, bench/NOTES.md.)
enum class Path { kSimt, kTf32, k16 };
constexpr bool is_tf32(Path p) { return p == Path::kTf32; }

// Per-path tile constants. Shared tiles hold T, already rounded to tf32 on the tf32 path (to_smem).
template <typename T, Path P> struct Cfg {
  static constexpr int BK = P == Path::kSimt ? 16 : 32;
  static constexpr int PAD = 16 / sizeof(T);  // keeps rows 16-byte aligned, breaks bank strides
  // Tiles whose rows are k (rows of BM or BN elements): a tf32 fragment reads k = t and t + 4 of
  // 8 columns, so a row stride of 4 (mod 32) words puts two lanes on one bank; 8 does not.
  static constexpr int PAD_K = is_tf32(P) ? 8 : PAD;
  static constexpr int V = 16 / sizeof(T);    // elements per 16-byte global vector
};

// A value as it is kept in a shared tile: rounded to tf32 once here on the tf32 path, so the
// fragments are loaded as they are (instead of every warp rounding every fragment it loads).
template <Path P, typename T>
__device__ __forceinline__ T to_smem(T v) {
#if RNNKERN_HAS_SM80_TENSOR_CORES
  if constexpr (is_tf32(P)) return wmma::__float_to_tf32(v);
#endif
  return v;
}

// A run from load_run into a shared tile at dst (16-byte aligned: tile rows are), one 16-byte store.
template <Path P, typename T>
__device__ __forceinline__ void store_run(T* dst, Vec16<T> r) {
  if constexpr (is_tf32(P)) {
#pragma unroll
    for (int e = 0; e < Vec16<T>::N; ++e) r.set(e, to_smem<P>(r.get(e)));
  }
  *reinterpret_cast<uint4*>(dst) = r.bits;
}

// Shared-memory tile of R x Cc elements stored row-major with padding.
template <int R, int Cc, int PAD> struct SmemTile {
  static constexpr int LD = Cc + PAD;
  static constexpr int SIZE = R * LD;
};

// ---- block-level MMA: SIMT ---------------------------------------------------------------------
// A(m, k) lives in As as [m][k] (A_MK) or [k][m]; B(k, n) in Bs as [k][n] (B_KN) or [n][k].
// Thread (tm, tn) owns rows tm + 16 i (i < 8) and columns tn + 16 j (j < 4); m_contig (default
// kMContig) puts neighbouring threads on neighbouring m (coalesced NCHW stores), else on
// neighbouring n. The epilogue emits straight from the registers in that order.
template <typename T, int BK, int LDA, int LDB, bool A_MK, bool B_KN, bool kMContig>
struct SimtMma {
  using Acc = typename AccOf<T>::type;
  Acc acc[8][4];
  int tm, tn;
  __device__ void init(int tid, bool m_contig = kMContig) {
    tm = m_contig ? tid % 16 : tid / 16;
    tn = m_contig ? tid / 16 : tid % 16;
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);
  }
  __device__ void step(const T* As, const T* Bs) {
#pragma unroll 4
    for (int k = 0; k < BK; ++k) {
      Acc a[8], b[4];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int m = tm + 16 * i;
        a[i] = to_acc(A_MK ? As[m * LDA + k] : As[k * LDA + m]);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int n = tn + 16 * j;
        b[j] = to_acc(B_KN ? Bs[k * LDB + n] : Bs[n * LDB + k]);
      }
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
  }
  template <class Emit> __device__ void epilogue(unsigned char*, Emit&& emit, bool /*m_contig: set in init*/ = kMContig) {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) emit(tm + 16 * i, tn + 16 * j, acc[i][j]);
  }
};

// The tensor-core epilogues' second half: a BM x TN fp32 tile (TN: the block's columns, BN but for
// the wgmma gather's) staged in Cs ([n][m] with row stride LDC when m_contig, else [m][n]) is
// handed to emit(m, n, value), consecutive threads on consecutive m (m_contig) or n.
template <int TN = BN, class Emit>
__device__ __forceinline__ void emit_staged(const float* Cs, int LDC, bool m_contig, Emit&& emit) {
  for (int idx = threadIdx.x; idx < BM * TN; idx += kThreads) {
    const int m = m_contig ? idx % BM : idx / TN;
    const int n = m_contig ? idx / BM : idx % TN;
    emit(m, n, m_contig ? Cs[n * LDC + m] : Cs[m * LDC + n]);
  }
}

// The mma.sync / wgmma epilogues, whose accumulators come in pairs (row m, columns n and n + 1):
// for_pairs(put) calls put(m, n, v0, v1) for each pair this thread holds; they are staged in
// shared memory (aliasing the A/B tiles) and emitted as above.
template <int TN = BN, class ForPairs, class Emit>
__device__ __forceinline__ void epilogue_from_pairs(unsigned char* smem, bool m_contig, ForPairs&& for_pairs,
                                                    Emit&& emit) {
  float* Cs = reinterpret_cast<float*>(smem);
  const int LDC = m_contig ? BM + 4 : TN + 4;  // (epilogue_bytes(P, TN) covers both)
  __syncthreads();  // the A/B tiles this aliases are no longer read
  for_pairs([&](int m, int n, float v0, float v1) {
    if (m_contig) {
      Cs[n * LDC + m] = v0;
      Cs[(n + 1) * LDC + m] = v1;
    } else {
      *reinterpret_cast<float2*>(Cs + m * LDC + n) = make_float2(v0, v1);
    }
  });
  __syncthreads();
  emit_staged<TN>(Cs, LDC, m_contig, emit);
}

#if RNNKERN_HAS_SM80_TENSOR_CORES
// ---- block-level MMA: tensor cores (mma.sync) --------------------------------------------------
// 8 warps as 4 (m) x 2 (n), each a 32 x 32 warp tile as 2 (m16) x 4 (n8) tiles of
// mma.sync.m16n8k16 (bf16 / fp16) or m16n8k8 (tf32), fp32 accumulators in registers. Fragments
// come from shared memory through 32-bit shared addresses: ldmatrix.x4 (one instruction for four
// 8 x 8 pieces; .trans where the tile's rows are k) wherever the fragment's layout allows, and for
// tf32 tiles whose rows are k (ldmatrix transposes 16-bit elements, not 32-bit ones) one
// ld.shared.b32 per register, conflict-free with PAD_K = 8. WMMA compiled its fragment loads to
// generic 64-bit-addressed loads, one per register, each with its own address arithmetic (sm_90
// SASS), which cost more issue slots per k-step than the MMAs themselves.
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 / m16n8k8"), g = lane / 4,
// t = lane % 4: accumulators c0 c1 at (row g, cols 2t, 2t + 1), c2 c3 at row g + 8; 16-bit A
// registers a0..a3 = (g, 2t..2t+1), (g + 8, 2t..), (g, 2t + 8..), (g + 8, 2t + 8..), B b0, b1 =
// (k 2t..2t+1, n g), (k 2t + 8.., n g); tf32 A a0..a3 = (g, t), (g + 8, t), (g, t + 4),
// (g + 8, t + 4), B b0, b1 = (k t, n g), (k t + 4, n g). ldmatrix gives lane l the (l / 4)-th row,
// (l % 4)-th 32-bit word of each 8 x 8 piece (its transpose with .trans), lanes 8i..8i+7
// supplying the row addresses of piece i; scripts/check_mma_fragments.py replays this mapping in
// numpy against a plain matrix product for all four tile layouts. The PTX wrappers (ldmatrix_x4,
// cp_async16, mma_tile, ...) live in tensor_core.cuh.

// cp.async counterpart of load_run: the run base[off + j ...] into shared memory at dst, one
// 16-byte copy when `vec`, else 4-byte copies per element (fp32 only: cp.async has no 2-byte
// form, so the host runs 16-bit ring kernels only with `vec`: use_pipeline, use_wgmma); zeros for
// off < 0 and past `limit` in j. 16-bit copies 16 bytes whatever `vec` says: a __trap() on the
// other branch, a divergent exit, made ptxas serialise every wgmma of the kernels (C7518).
// l1: the 16-byte copies allocate in L1 as well (cp.async.ca), for an operand that other k-steps of
// the block read again (the gathered pixels under tap groups, GatherParams::tap_group); else L2
// only (.cg).
template <typename T>
__device__ __forceinline__ void copy_run_async(uint32_t dst, const T* base, long long off, int j, int limit, bool vec,
                                               bool l1 = false) {
  if (sizeof(T) != 4 || vec) {
    const bool ok = off >= 0 && j < limit;
    if (l1) cp_async16_ca(dst, ok ? base + off + j : base, ok);
    else cp_async16(dst, ok ? base + off + j : base, ok);
  } else {
#pragma unroll
    for (int e = 0; e < Vec16<T>::N; ++e) {
      const bool ok = off >= 0 && j + e < limit;
      cp_async4(dst + 4 * e, ok ? base + off + j + e : base, ok);
    }
  }
}

// The host's side of that precondition, before launching a ring kernel (p: GatherParams, WgradParams).
template <typename T, typename Params>
void check_ring_runs(const Params& p) {
  TORCH_INTERNAL_ASSERT(sizeof(T) == 4 || (p.vec_a && p.vec_b), "16-bit ring kernels copy 16-byte runs only");
}

template <typename T, int BK, int LDA, int LDB, bool A_MK, bool B_KN, bool kMContig>
struct MmaSyncMma {
  static constexpr bool kTf32 = std::is_same_v<T, float>;
  static constexpr int FK = kTf32 ? 8 : 16;  // k of one mma.sync; an 8 x 8 ldmatrix piece (16 bytes a row) holds FK / 2
  static constexpr int E = sizeof(T);
  float acc[2][4][4];  // [m16 tile][n8 tile][register]
  int wm, wn, lane;
  __device__ void init(int tid, bool /*m_contig: the epilogue's*/ = kMContig) {
    const int warp = tid / 32;
    wm = warp / 2;
    wn = warp % 2;
    lane = tid % 32;
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;
  }
  __device__ void step(const T* As, const T* Bs) {
    const uint32_t a_base = smem_u32(As), b_base = smem_u32(Bs);
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int kk = 0; kk < BK; kk += FK) {
      uint32_t a[2][4], b[4][2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int m0 = wm * 32 + i * 16;
        if constexpr (A_MK) {  // rows are m: pieces (m0-7, k lo), (m8-15, k lo), (m0-7, k hi), (m8-15, k hi)
          ldmatrix_x4<false>(a[i], a_base + ((m0 + lane % 16) * LDA + kk + lane / 16 * (FK / 2)) * E);
        } else if constexpr (!kTf32) {  // rows are k: the same pieces, transposed
          ldmatrix_x4<true>(a[i], a_base + ((kk + lane % 8 + lane / 16 * 8) * LDA + m0 + lane / 8 % 2 * 8) * E);
        } else {
          a[i][0] = lds_u32(a_base + ((kk + t) * LDA + m0 + g) * E);
          a[i][1] = lds_u32(a_base + ((kk + t) * LDA + m0 + g + 8) * E);
          a[i][2] = lds_u32(a_base + ((kk + t + 4) * LDA + m0 + g) * E);
          a[i][3] = lds_u32(a_base + ((kk + t + 4) * LDA + m0 + g + 8) * E);
        }
      }
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {  // two n8 tiles per ldmatrix.x4
        const int n0 = wn * 32 + jj * 16;
        if constexpr (!B_KN || !kTf32) {
          uint32_t r[4];
          if constexpr (!B_KN)  // rows are n: pieces (n0-7, k lo), (n0-7, k hi), (n8-15, k lo), (n8-15, k hi)
            ldmatrix_x4<false>(r, b_base + ((n0 + lane % 8 + lane / 16 * 8) * LDB + kk + lane / 8 % 2 * (FK / 2)) * E);
          else  // rows are k: the same pieces, transposed
            ldmatrix_x4<true>(r, b_base + ((kk + lane % 8 + lane / 8 % 2 * 8) * LDB + n0 + lane / 16 * 8) * E);
          b[2 * jj][0] = r[0];
          b[2 * jj][1] = r[1];
          b[2 * jj + 1][0] = r[2];
          b[2 * jj + 1][1] = r[3];
        } else {
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            b[2 * jj + j][0] = lds_u32(b_base + ((kk + t) * LDB + n0 + j * 8 + g) * E);
            b[2 * jj + j][1] = lds_u32(b_base + ((kk + t + 4) * LDB + n0 + j * 8 + g) * E);
          }
        }
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_tile<T>(acc[i][j], a[i], b[j]);
    }
  }
  // Staged through shared memory (float, [n][m] when m_contig else [m][n]) and
  // emitted with neighbouring threads on neighbouring output addresses.
  template <class Emit> __device__ void epilogue(unsigned char* smem, Emit&& emit, bool m_contig = kMContig) {
    const int g = lane / 4, t = lane % 4;
    epilogue_from_pairs(smem, m_contig, [&](auto&& put) {
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int h = 0; h < 2; ++h)  // rows g and g + 8
            put(wm * 32 + i * 16 + g + 8 * h, wn * 32 + j * 8 + 2 * t, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
    }, emit);
  }
};
#endif

// The block MMA of path P: SIMT FMA, or mma.sync where this arch has tensor cores (without them,
// kernels of the tensor-core paths trap and are never launched; the SIMT type keeps them compiling).
template <typename T, Path P, int BK, int LDA, int LDB, bool A_MK, bool B_KN, bool kMContig>
using BlockMma = std::conditional_t<P == Path::kSimt, SimtMma<T, BK, LDA, LDB, A_MK, B_KN, kMContig>,
#if RNNKERN_HAS_SM80_TENSOR_CORES
                                    MmaSyncMma<T, BK, LDA, LDB, A_MK, B_KN, kMContig>
#else
                                    SimtMma<T, BK, LDA, LDB, A_MK, B_KN, kMContig>
#endif
                                    >;

constexpr int epilogue_bytes(Path p, int tn = BN) {
  return p == Path::kSimt ? 0 : (BM * (tn + 4) > tn * (BM + 4) ? BM * (tn + 4) : tn * (BM + 4)) * 4;
}
constexpr int cmax(int a, int b) { return a > b ? a : b; }

// ---- gather (forward / grad_input) -------------------------------------------------------------

struct GatherParams {
  const void* src;   // (N, Cs, Hs, Ws) in the kernel's layout
  const void* wt;    // (G, taps, R, Nn) contiguous, or (G, taps, Nn, R) for the wgmma form (launch_gather)
  const void* bias;  // (Co) or nullptr
  void* out;         // (N, Co, Ho, Wo) in the kernel's layout
  int N, Cs, Hs, Ws, Co, Ho, Wo, G, R, Nn;
  int KH, KW, sh, sw, dh, dw, pt, pl;
  long long M;  // N * Ho * Wo
  // Tiled kernel's pixel enumeration. Forward: Mt = M, one phase. Transposed mapping: phase-major,
  // blockIdx.x = m_tile * (sh * sw) + phase (the phases of one pixel tile are neighbouring blocks,
  // so their interleaved, partial-sector stores meet in L2 instead of each phase streaming a
  // half-written output to DRAM), Mt = N * Hq * Wq pixels per phase (Hq = ceil(Ho / sh),
  // Wq = ceil(Wo / sw)); th / tw = s / gcd(s, d), the step between the taps that hit one phase.
  long long Mt;
  int Hq, Wq, th, tw;
  // Forward only: ps > 1 writes output channel c' of pixel (ho, wo) pixel-shuffled into an
  // (N, Co / ps^2, Ho * ps, Wo * ps) tensor at (ho*ps + ph, wo*ps + pw), c' = (c, ph, pw) for NCHW
  // and (group, ph, pw, c within the group) for channels_last: the fastest channel part lands
  // on neighbouring addresses in either layout.
  int ps;
  // Forward, and the TMA kernel's problems: tile_w > 0 enumerates pixels in two-dimensional tiles
  // of BM / tile_w rows x tile_w columns (tiles_h x tiles_w per image; Mt counts their slots,
  // ragged ones masked) so that a large dilation's taps can miss a whole tile along W as well as
  // along H; 0: row order.
  int tile_w, tiles_h, tiles_w;
  // The ring forms' k order (kStages > 1): taps in groups of tap_group (1..kTapGroup, set by the
  // ring's launchers: tap_group_for), chunk-major within a group, the gathered operand copied
  // through L1 when > 1; 1: tap by tap.
  int tap_group;
  // The TMA kernel only (tma_problems): output pixel (ho, wo) of its stride-1 problem is pixel
  // (ho * oy_step + oy0, wo * ox_step + ox0) of the (out_h, out_w) output (a stride phase's).
  int oy_step, ox_step, oy0, ox0, out_h, out_w;
  bool vec_a, vec_b;
};

// Transposed mapping: the taps r with (o + pad - r * dil) % stride == 0 are r0, r0 + step, ...
// (step = stride / gcd(stride, dil)), the same for every output position o of one stride phase.
// Returns their count (0 when there is none below k) and the first one in *r0.
__host__ __device__ __forceinline__ int trans_taps(int o, int stride, int dil, int pad, int k, int step, int* r0) {
  const int res = (o + pad) % stride;
  int r = 0;
  while (r < step && r < k && (r * dil) % stride != res) ++r;
  *r0 = r;
  return (r < step && r < k) ? (k - 1 - r) / step + 1 : 0;
}

template <bool kTrans>
__device__ __forceinline__ bool map_in(int o, int k, int stride, int dil, int pad, int in, int* src) {
  if (!kTrans) {
    const int v = o * stride - pad + k * dil;
    *src = v;
    return v >= 0 && v < in;
  }
  const int t = o + pad - k * dil;
  if (t < 0 || t % stride != 0) return false;
  *src = t / stride;
  return *src < in;
}

// A kernel's shared tiles, A then B, one stage after another (kStages of them with the cp.async
// pipeline); the epilogue's staging tile reuses the same bytes.
template <typename T, Path P, typename ATile, typename BTile>
struct StagedTiles {
  using A = ATile;
  using B = BTile;
  static constexpr int kStageBytes = (A::SIZE + B::SIZE) * sizeof(T);
  // bytes of shared memory for `stages` stages
  static constexpr int bytes(int stages) { return cmax(stages * kStageBytes, epilogue_bytes(P)); }
  // stage st's A tile (its B tile follows at + A::SIZE)
  __device__ static T* stage(unsigned char* smem, int st) { return reinterpret_cast<T*>(smem + st * kStageBytes); }
};

// Shared tiles of the gather kernel: A (BM pixels x BK reduction channels) is [m][k] for
// channels_last (channels contiguous), [k][m] for NCHW (pixels contiguous); B (BK x BN) is [k][n].
template <typename T, Path P, bool kCL, typename C = Cfg<T, P>>
using GatherTiles = StagedTiles<T, P, std::conditional_t<kCL, SmemTile<BM, C::BK, C::PAD>, SmemTile<C::BK, BM, C::PAD_K>>,
                                SmemTile<C::BK, BN, C::PAD_K>>;

// ---- block-level MMA: Hopper's warpgroup MMA (sm_90a; conv_mma_form says where) ---------------
// The two warpgroups of the block take rows 0-63 and 64-127 of the BM x TN tile (TN = 64 or 128
// columns), each one wgmma.m64nTN per k16 (bf16 / fp16) or k8 (tf32) straight from shared memory,
// asynchronously (one k-step in flight, kWgmmaInFlight): no fragment loads, no register tiles of A
// and B. The tiles are stored K-major in core matrices (8 rows x 16 bytes,
// 128 contiguous bytes, wgmma's unswizzled layout): element (row, k) of a tile at byte
//   (row / 8) * kSbo + (k * E / 16) * 128 + (row % 8) * 16 + (k * E) % 16,   kSbo = BK * E * 8,
// A's rows are the pixels m, B's the output channels n (the host passes the weight as
// (G, taps, Nn, R), k contiguous). Each 16-byte run a cp.async copies is one core-matrix row.
template <typename T, int BK>
struct WgmmaLayout {
  static constexpr int E = sizeof(T);
  static constexpr uint32_t kLbo = 128;              // core matrices adjacent along k
  static constexpr uint32_t kSbo = BK * E * 8;        // groups of 8 rows
  static constexpr int kSteps = BK * E / 32;          // wgmma instructions per k-step (32 bytes of k each)
  // element offset of (row, k) in a tile
  __host__ __device__ static constexpr int at(int row, int k) {
    return static_cast<int>(((row / 8) * kSbo + (k * E / 16) * 128 + (row % 8) * 16 + (k * E) % 16) / E);
  }
  // The q-th 16-byte run of a tile, (row, first k): eight consecutive q fill one core matrix (128
  // contiguous bytes, no bank conflict among the eight), a warp's 32 four of them along k.
  __host__ __device__ static constexpr void run(int q, int* row, int* k) {
    constexpr int kRuns = BK * E / 16;  // runs per row
    *row = q / (8 * kRuns) * 8 + q % 8;
    *k = q / 8 % kRuns * (16 / E);
  }
  // MN-major tiles (16-bit; wgmma's transposed operands): core matrices of 8 k-rows x 8 m / n
  // elements; element (mn, k) at byte (mn / 8) * kSbo + (k / 8) * 128 + (k % 8) * 16 + (mn % 8) * E,
  // so the descriptor's SBO (kSbo) steps 8 m / n and its LBO (128) 8 k, as for K-major tiles.
  __host__ __device__ static constexpr int at_mn(int mn, int k) {
    static_assert(E == 2, "MN-major operands: 16-bit only");
    return static_cast<int>(((mn / 8) * kSbo + (k / 8) * 128 + (k % 8) * 16 + (mn % 8) * E) / E);
  }
  // The q-th 16-byte run (8 m / n of one k) of an MN-major tile, (first mn, k): eight consecutive q
  // fill one core matrix; a warp's 32 are 8 k x 4 blocks of 8 mn (for a channels_last source: 8
  // pixels' 64 contiguous bytes each). Tiles of a multiple of 32 mn.
  __host__ __device__ static constexpr void run_mn(int q, int* mn, int* k) {
    constexpr int kBlocks = BK / 8;  // blocks of 8 k
    *mn = (q / (32 * kBlocks) * 4 + q / 8 % 4) * 8;
    *k = q / 32 % kBlocks * 8 + q % 8;
  }
};

// k-steps whose wgmma may still run when WgmmaMma::step returns: the kernels keep that many ring
// stages beyond their copies' untouched (kWgmmaStages), so the tensor cores multiply one k-step
// while the warpgroup issues the next instead of idling through each one's latency.
constexpr int kWgmmaInFlight = 1;

// The cp.async ring of the gather and grad_weight kernels: of its kStages stages, kAhead hold
// k-steps of copies in flight, kLag k-steps whose MMA may still run (wgmma's asynchronous k-step),
// and one is being multiplied.
template <int kStages, bool kWg>
struct RingDepth {
  static constexpr int kLag = kWg ? kWgmmaInFlight : 0;
  static constexpr int kAhead = kStages - 1 - kLag;
  static_assert(kStages == 1 || kAhead >= 1, "too few stages for the MMAs in flight");
};

// kTransA / kTransB: that tile is MN-major (WgmmaLayout::at_mn; 16-bit), else K-major. TN: the
// block tile's columns, 64 or 128 (one wgmma.m64nTN per warpgroup and 32 bytes of k).
template <typename T, int BK, int LDA, int LDB, bool A_MK, bool B_KN, bool kMContig, bool kTransA = false,
          bool kTransB = false, int TN = BN>
struct WgmmaMma {
  using L = WgmmaLayout<T, BK>;
  float acc[TN / 2];
  int wg, warp, lane;  // warpgroup (rows 64 wg ...), warp within it, lane
  __device__ void init(int tid, bool /*m_contig: the epilogue's*/ = kMContig) {
    wg = tid / 128;
    warp = tid / 32 % 4;
    lane = tid % 32;
#pragma unroll
    for (int i = 0; i < TN / 2; ++i) acc[i] = 0.f;
  }
  // As: BM x BK, Bs: TN x BK, in L's layout (L::at, or L::at_mn where kTransA / kTransB); every
  // thread's copies into them have landed and been fenced for the async proxy (the caller's
  // fence_proxy_async_shared + barrier).
  __device__ void step(const T* As, const T* Bs) {
#if RNNKERN_HAS_WGMMA
    const uint32_t a0 = smem_u32(As) + wg * 8 * L::kSbo, b0 = smem_u32(Bs);
    wgmma_pin(acc);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < L::kSteps; ++ks)
      wgmma_m64n<T, TN, kTransA, kTransB>(acc, wgmma_desc(a0 + ks * 256, L::kLbo, L::kSbo),
                                          wgmma_desc(b0 + ks * 256, L::kLbo, L::kSbo));
    wgmma_commit();
    wgmma_wait<kWgmmaInFlight>();  // the previous k-step's stage is read: refillable after the next barrier
    wgmma_pin(acc);
#else
    __trap();  // the host launches this form only on sm_90 with an sm_90a build
#endif
  }
  // As MmaSyncMma's: staged through shared memory and emitted coalesced for the output layout.
  template <class Emit> __device__ void epilogue(unsigned char* smem, Emit&& emit, bool m_contig = kMContig) {
#if RNNKERN_HAS_WGMMA
    wgmma_wait<0>();  // the last k-steps' products are in acc (and their stages, which Cs aliases, read)
    wgmma_pin(acc);
#endif
    const int g = lane / 4, t = lane % 4;
    epilogue_from_pairs<TN>(smem, m_contig, [&](auto&& put) {
#pragma unroll
      for (int j = 0; j < TN / 8; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h)  // rows g and g + 8
          put(wg * 64 + warp * 16 + g + 8 * h, j * 8 + 2 * t, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
    }, emit);
  }
};

// The wgmma form's stages: A (BM x BK) then B (TN x BK), unpadded, in WgmmaLayout.
template <typename T, Path P, int TN = BN, typename C = Cfg<T, P>>
struct WgmmaTiles {
  // (LD: only for the register-staged path's code, which the ring-only wgmma form never runs)
  struct A { static constexpr int SIZE = BM * C::BK, LD = C::BK; };
  struct B { static constexpr int SIZE = TN * C::BK, LD = C::BK; };
  static constexpr int kStageBytes = (A::SIZE + B::SIZE) * sizeof(T);
  static constexpr int bytes(int stages) { return cmax(stages * kStageBytes, epilogue_bytes(P, TN)); }
  __device__ static T* stage(unsigned char* smem, int st) { return reinterpret_cast<T*>(smem + st * kStageBytes); }
};

// The ring forms' k order (GatherParams::tap_group, tap_group_for: 9 on wgmma, else 1 unless
// RNNKERN_CONV_TAP_GROUP says): taps in groups of up to kTapGroup (all of a 3x3 kernel's), and
// within a group, channel chunk by chunk, each chunk's BK channels for every tap of the group before
// the next chunk (a group of one: tap by tap, all channels of a tap before the next tap). A 3x3 kernel's
// taps read the block's pixels shifted by one to two rows / columns: 128 pixels of two 64-wide rows
// (d1) touch ~4 x 64 distinct pixels over 9 taps, so a chunk's ~9 x 8 KB (bf16) of gathered A is
// ~12-16 KB of distinct lines, which stay in L1 from one tap's copy to the next's (cp.async.ca) where
// all 256 channels of a tap (64 KB) did not. Prediction in bench/NOTES.md: the gathered operand's L2
// traffic, the larger one at 128-column tiles, ~4x smaller at d1. Costs one offset table per tap of
// the group (tap_group x BM x 8 bytes of dynamic shared memory after the stages: ring_table_bytes)
// instead of one, so a group of one costs what the single table did.
constexpr int kTapGroup = 9;
constexpr int ring_table_bytes(int tap_group) { return tap_group * BM * static_cast<int>(sizeof(long long)); }

// kStages == 1: one shared stage, the next k-step's loads held in registers while the tensor
// cores work (static shared memory). kStages > 1 (use_pipeline): a ring of kStages shared stages
// filled by cp.async, kAhead k-steps of loads in flight while one is multiplied (kStages - 1 on
// mma.sync; kStages - 2 on wgmma, whose previous k-step may still be running) (dynamic shared
// memory, GatherTiles / WgmmaTiles::bytes(kStages)).
// kWg (with kStages > 1): the block MMA on wgmma (WgmmaMma, WgmmaTiles), p.wt K-major, on block
// tiles of BM x TN (TN = 64 or 128: wgmma_tile_n); the other forms take BM x BN.
template <typename T, Path P, bool kCL, bool kTrans, int kStages = 1, bool kWg = false, int TN = BN>
__global__ void __launch_bounds__(kThreads) gather_conv_kernel(const GatherParams p) {
  static_assert(!kWg || kStages > 1, "the wgmma form runs on the cp.async ring");
  static_assert(TN == BN || (kWg && TN == 128), "BM x 128 tiles: the wgmma form only");
  constexpr int kAhead = RingDepth<kStages, kWg>::kAhead;
  using C = Cfg<T, P>;
  constexpr int BK = C::BK, V = C::V;
  using Tiles = std::conditional_t<kWg, WgmmaTiles<T, P, TN>, GatherTiles<T, P, kCL>>;
  using ATile = typename Tiles::A;
  using BTile = typename Tiles::B;
  __shared__ __align__(128) unsigned char smem_static[kStages == 1 ? Tiles::bytes(1) : 16];
  extern __shared__ __align__(128) unsigned char smem_stages[];
  unsigned char* smem = kStages == 1 ? smem_static : smem_stages;
  // source offset of pixel m for the current tap, -1: padding; the ring forms: one table of BM for
  // each tap of the group (p.tap_group of them), after the stages (ring_table_bytes); and the
  // ring's weight offset of each of the group's taps
  static_assert(kStages == 1 || Tiles::bytes(kStages) % 16 == 0, "the ring's tables follow its stages, aligned");
  __shared__ long long s_off_single[kStages == 1 ? BM : 1];
  long long* const s_off =
      kStages == 1 ? s_off_single : reinterpret_cast<long long*>(smem_stages + Tiles::bytes(kStages));
  __shared__ long long s_tap_wt[kStages > 1 ? kTapGroup : 1];
  __shared__ long long s_out[BM];      // output offset of pixel m (channel 0), -1: past the end
  T* As = reinterpret_cast<T*>(smem);
  T* Bs = As + ATile::SIZE;

#if !RNNKERN_HAS_SM80_TENSOR_CORES
  if constexpr (P != Path::kSimt) {
    __trap();
    return;
  } else {
#else
  {
#endif
    using Mma = std::conditional_t<kWg, WgmmaMma<T, BK, ATile::LD, BTile::LD, kCL, true, !kCL, false, false, TN>,
                                   BlockMma<T, P, BK, ATile::LD, BTile::LD, kCL, true, !kCL>>;
    const int tid = threadIdx.x;
    const int phases = kTrans ? p.sh * p.sw : 1;
    const int g = static_cast<int>(blockIdx.z);
    const long long m0 = static_cast<long long>(blockIdx.x / phases) * BM;
    const int n0 = blockIdx.y * TN;
    const int taps = p.KH * p.KW;
    const T* src = static_cast<const T*>(p.src);
    const T* wt = static_cast<const T*>(p.wt);
    const long long src_cstride = kCL ? 1 : static_cast<long long>(p.Hs) * p.Ws;
    // Transposed mapping: the block's stride phase (ph, pw) and its taps, r = r0 + jr * th,
    // s = s0 + js * tw (jr < nr, js < ns); the tap loop below runs over t = jr * ns + js only, so
    // no tap that divides for none of the phase's pixels (an inserted zero) is ever visited.
    // Forward: all taps, t = r * KW + s.
    int ph = 0, pw = 0, r0 = 0, s0 = 0, nr = p.KH, ns = p.KW;
    if constexpr (kTrans) {
      const int phase = static_cast<int>(blockIdx.x % phases);
      ph = phase / p.sw;
      pw = phase - ph * p.sw;
      nr = trans_taps(ph, p.sh, p.dh, p.pt, p.KH, p.th, &r0);
      ns = trans_taps(pw, p.sw, p.dw, p.pl, p.KW, p.tw, &s0);
    }
    const int ntaps = nr * ns;
    // compressed tap index -> (r, s)
    auto tap_rs = [&](int t, int* r, int* s) {
      if constexpr (kTrans) {
        const int jr = t / ns;
        *r = r0 + jr * p.th;
        *s = s0 + (t - jr * ns) * p.tw;
      } else {
        *r = t / p.KW;
        *s = t % p.KW;
      }
    };

    // This thread's pixel for the offset tables.
    int pn = -1, pho = 0, pwo = 0;
    if (tid < BM) {
      const long long m = m0 + tid;
      s_out[tid] = -1;
      if (m < p.Mt) {
        const long long hw = static_cast<long long>(p.Ho) * p.Wo;
        int n, ho, wo;  // this thread's pixel (past Ho / Wo in a ragged phase or tile: masked)
        if constexpr (kTrans) {
          // phase-major: m = (n, hq, wq), (ho, wo) = (hq * sh + ph, wq * sw + pw)
          const long long hwq = static_cast<long long>(p.Hq) * p.Wq;
          n = static_cast<int>(m / hwq);
          const int remq = static_cast<int>(m - n * hwq);
          const int hq = remq / p.Wq;
          ho = hq * p.sh + ph;
          wo = (remq - hq * p.Wq) * p.sw + pw;
        } else if (p.tile_w > 0) {
          const long long tile = m0 / BM;
          const int per_image = p.tiles_h * p.tiles_w;
          n = static_cast<int>(tile / per_image);
          const int t = static_cast<int>(tile - static_cast<long long>(n) * per_image);
          ho = t / p.tiles_w * (BM / p.tile_w) + tid / p.tile_w;
          wo = t % p.tiles_w * p.tile_w + tid % p.tile_w;
        } else {  // row order
          n = static_cast<int>(m / hw);
          const int rem = static_cast<int>(m - n * hw);
          ho = rem / p.Wo;
          wo = rem % p.Wo;
        }
        if (ho < p.Ho && wo < p.Wo) {
          pn = n;
          pho = ho;
          pwo = wo;
          // channel 0's output offset; with ps > 1, the top-left of the pixel's ps x ps cell in
          // the shuffled (N, Co / ps^2, Ho * ps, Wo * ps) output
          const int ps = p.ps > 1 ? p.ps : 1;
          const long long ow = static_cast<long long>(p.Wo) * ps, cr = p.Co / (ps * ps);
          const long long pix = static_cast<long long>(ho) * ps * ow + static_cast<long long>(wo) * ps;
          s_out[tid] = kCL ? (static_cast<long long>(n) * hw * ps * ps + pix) * cr
                           : static_cast<long long>(n) * p.Co * hw + pix;
        }
      }
    }
    // Builds the table for compressed tap `tap` in `offs` (BM entries); true when this thread's
    // pixel reads real data.
    auto table = [&](int tap, long long* offs) -> bool {
      bool ok = false;
      if (tid < BM) {
        long long off = -1;
        if (pn >= 0) {
          int hs, ws, r, s;
          tap_rs(tap, &r, &s);
          if (map_in<kTrans>(pho, r, p.sh, p.dh, p.pt, p.Hs, &hs) && map_in<kTrans>(pwo, s, p.sw, p.dw, p.pl, p.Ws, &ws)) {
            off = kCL ? ((static_cast<long long>(pn) * p.Hs + hs) * p.Ws + ws) * p.Cs + static_cast<long long>(g) * p.R
                      : ((static_cast<long long>(pn) * p.Cs + static_cast<long long>(g) * p.R) * p.Hs + hs) * p.Ws + ws;
            ok = true;
          }
        }
        offs[tid] = off;
      }
      return ok;
    };
    // First tap at or after `from` that some pixel of the tile reads real data for (block-uniform).
    auto find_tap = [&](int from) -> int {
      for (int t = from; t < ntaps; ++t) {
        if (__syncthreads_or(table(t, s_off))) return t;
      }
      return ntaps;
    };

    // Register staging of one k-step: A (BM x BK) and B (BK x BN), BM*BK/256 and BK*BN/256 each.
    constexpr int A_PER = BM * BK / kThreads, B_PER = BK * BN / kThreads;
    T ra[A_PER];                               // NCHW A: one element per (pixel, k)
    Vec16<T> va[A_PER / V], vb[B_PER / V];     // channels_last A and all of B: V-wide runs
    // A mapping. channels_last: V-wide channel runs, (BK/V) threads per pixel row.
    constexpr int A_TPR = BK / V, A_RPP = kThreads / A_TPR;  // threads per row, rows per pass
    // NCHW: one pixel per thread (m = tid % BM), k = tid / BM + 2 i.
    constexpr int A_KSTEP = kThreads / BM;
    // B mapping: V-wide output-channel runs.
    constexpr int B_TPR = BN / V, B_RPP = kThreads / B_TPR;
    static_assert(A_PER % V == 0 && B_PER == (BK / B_RPP) * V, "tile mapping");

    auto load = [&](int tap, int c0) {
      if constexpr (kCL) {
        const int kv = (tid % A_TPR) * V;
#pragma unroll
        for (int i = 0; i < A_PER / V; ++i) {
          const int m = tid / A_TPR + i * A_RPP;
          load_run(va[i], src, s_off[m], c0 + kv, p.R, p.vec_a);
        }
      } else {
        const long long off = s_off[tid % BM];
#pragma unroll
        for (int i = 0; i < A_PER; ++i) {
          const int c = c0 + tid / BM + A_KSTEP * i;
          ra[i] = (off >= 0 && c < p.R) ? src[off + c * src_cstride] : zero_of<T>();
        }
      }
      int r, s;
      tap_rs(tap, &r, &s);
      const T* wrow = wt + (static_cast<long long>(g) * taps + r * p.KW + s) * p.R * p.Nn;
      const int nv = (tid % B_TPR) * V, n = n0 + nv;
#pragma unroll
      for (int i = 0; i < BK / B_RPP; ++i) {
        const int c = c0 + tid / B_TPR + i * B_RPP;
        load_run(vb[i], wrow, c < p.R ? static_cast<long long>(c) * p.Nn : -1, n, p.Nn, p.vec_b);
      }
    };
    auto store = [&]() {
      if constexpr (kCL) {
        const int kv = (tid % A_TPR) * V;
#pragma unroll
        for (int i = 0; i < A_PER / V; ++i) {
          store_run<P>(As + (tid / A_TPR + i * A_RPP) * ATile::LD + kv, va[i]);
        }
      } else {
        const int m = tid % BM;
#pragma unroll
        for (int i = 0; i < A_PER; ++i) As[(tid / BM + A_KSTEP * i) * ATile::LD + m] = to_smem<P>(ra[i]);
      }
      const int nv = (tid % B_TPR) * V;
#pragma unroll
      for (int i = 0; i < BK / B_RPP; ++i) {
        store_run<P>(Bs + (tid / B_TPR + i * B_RPP) * BTile::LD + nv, vb[i]);
      }
    };

    // NCHW emits along m (neighbouring pixels) unless the pixels land ps apart (pixel-shuffled
    // output); then along the channels, whose fastest part (pw) is contiguous
    const bool m_contig = !kCL && p.ps <= 1;
    Mma mma;
    mma.init(tid, m_contig);
    if constexpr (kStages == 1) {
      int tap = find_tap(0), c0 = 0;  // compressed tap index
      if (tap < ntaps) load(tap, c0);
      // The prologue load reads other threads' s_off entries; without this barrier a thread that
      // reaches find_tap below (R <= BK) could rewrite its entry before they are read.
      __syncthreads();
      while (tap < ntaps) {
        store();
        int ntap = tap, nc0 = c0 + BK;
        if (nc0 >= p.R) {
          nc0 = 0;
          ntap = find_tap(tap + 1);  // rewrites s_off: every read of it (this step's loads) is done
        }
        __syncthreads();
        if (ntap < ntaps) load(ntap, nc0);
        mma.step(As, Bs);
        __syncthreads();
        tap = ntap;
        c0 = nc0;
      }
    } else {
#if RNNKERN_HAS_SM80_TENSOR_CORES
      // The weights of compressed tap t: (R, Nn), or (Nn, R) for wgmma (found once per tap, not
      // once per k-step: tap_rs divides)
      const auto tap_weights = [&](int t) -> const T* {
        int r, s;
        tap_rs(t, &r, &s);
        return wt + (static_cast<long long>(g) * taps + r * p.KW + s) * p.R * p.Nn;
      };
      // Copies one k-step (the tap whose weights are wtap, channels c0 ...) into stage st straight
      // from global memory (cp.async: no registers, zero-filled where the load_run above would give
      // zeros). fp32 keeps its full bits in the tile: the tf32 tensor cores use the top 19 (as
      // cuBLAS / cuDNN feed them).
      const auto issue = [&](const T* wtap, int c0, int st, const long long* offs) {
        T* as = Tiles::stage(smem, st);
        T* bs = as + ATile::SIZE;
        // element (m, k) of the A tile: [m][k] channels_last, [k][m] NCHW, core matrices for wgmma
        const auto a_at = [](int m, int k) {
          if constexpr (kWg) return WgmmaLayout<T, BK>::at(m, k);
          else if constexpr (kCL) return m * ATile::LD + k;
          else return k * ATile::LD + m;
        };
        if constexpr (kCL) {  // (16-bit only with 16-byte runs: use_pipeline)
#pragma unroll
          for (int i = 0; i < A_PER / V; ++i) {
            int m = tid / A_TPR + i * A_RPP, kv = (tid % A_TPR) * V;
            if constexpr (kWg) WgmmaLayout<T, BK>::run(tid + i * kThreads, &m, &kv);
            copy_run_async(smem_u32(as + a_at(m, kv)), src, offs[m], c0 + kv, p.R, p.vec_a, p.tap_group > 1);
          }
        } else if constexpr (sizeof(T) == 4 && kWg) {
          // fp32 NCHW into core matrices: a warp's 32 copies are 8 pixels x 4 channels, one 16-byte
          // row of each of 8 core-matrix rows (all 32 banks; one pixel a thread would put 4 threads
          // on each bank), each channel's 8 pixels one 32-byte sector
          static_assert(BM == 128 && BK == 32 && kThreads == 256, "fp32 NCHW wgmma copy mapping");
#pragma unroll
          for (int i = 0; i < A_PER; ++i) {
            const int m = tid % 8 + 8 * ((tid / 32 + 8 * i) % 16), k = tid / 8 % 4 + 4 * (i / 2), c = c0 + k;
            const long long off = offs[m];
            const bool ok = off >= 0 && c < p.R;
            cp_async4(smem_u32(as + a_at(m, k)), ok ? src + off + c * src_cstride : src, ok);
          }
        } else if constexpr (sizeof(T) == 4) {
          const long long off = offs[tid % BM];
#pragma unroll
          for (int i = 0; i < A_PER; ++i) {
            const int k = tid / BM + A_KSTEP * i, c = c0 + k;
            const bool ok = off >= 0 && c < p.R;
            cp_async4(smem_u32(as + a_at(tid % BM, k)), ok ? src + off + c * src_cstride : src, ok);
          }
        } else {
          __trap();  // 16-bit NCHW stays on kStages == 1 (no 2-byte cp.async)
        }
        if constexpr (kWg) {
          // K-major weight (G, taps, Nn, R): row n of the tap's slice, 16-byte runs along k
          constexpr int KV = BK / V;  // runs per row
          static_assert((TN * KV) % kThreads == 0, "B runs per thread");
#pragma unroll
          for (int i = 0; i < TN * KV / kThreads; ++i) {
            int n, kv;
            WgmmaLayout<T, BK>::run(tid + i * kThreads, &n, &kv);
            copy_run_async(smem_u32(bs + WgmmaLayout<T, BK>::at(n, kv)), wtap,
                           n0 + n < p.Nn ? static_cast<long long>(n0 + n) * p.R : -1, c0 + kv, p.R, p.vec_b);
          }
        } else {
          const int nv = (tid % B_TPR) * V;
#pragma unroll
          for (int i = 0; i < BK / B_RPP; ++i) {
            const int k = tid / B_TPR + i * B_RPP, c = c0 + k;
            copy_run_async(smem_u32(bs + k * BTile::LD + nv), wtap, c < p.R ? static_cast<long long>(c) * p.Nn : -1,
                           n0 + nv, p.Nn, p.vec_b);
          }
        }
      };
      // Taps in groups of up to p.tap_group (1..kTapGroup; 1: tap by tap), each group's k-steps
      // chunk-major: (c0, slot) for c0 = 0, BK, ... and every slot of the group (kTapGroup above).
      // build_group tabulates the next group: the taps from next_tap on that some pixel of the tile
      // reads real data for (a block-uniform count; the others are skipped), their pixel offsets in
      // s_off's slots and their weights' offsets in s_tap_wt.
      int next_tap = 0, group = 0;  // (group: taps in the current group; 0 once all are done)
      const auto build_group = [&]() {
        group = 0;
        for (; next_tap < ntaps && group < p.tap_group; ++next_tap) {
          if (__syncthreads_or(table(next_tap, s_off + group * BM))) {
            if (tid == 0) s_tap_wt[group] = tap_weights(next_tap) - wt;
            ++group;
          }
        }
        __syncthreads();  // s_tap_wt visible (the tables are, through the last __syncthreads_or)
      };
      // Iteration i copies the next k-step (slot, lc0), if any, into stage `fill` and, from
      // i = kAhead on, multiplies the k-step copied kAhead iterations earlier (stage `stage`).
      // Every iteration commits one cp.async group, empty or not, so that wait_group<kAhead - 1>
      // always means "the oldest uncomputed k-step has landed". The stage filled in iteration i
      // was last multiplied in iteration i - 1 - kLag, which mma.step has waited for by the end
      // of iteration i - 1 (wgmma: in its own warpgroup; the barrier covers the other one).
      build_group();
      int slot = 0, lc0 = 0;
      int pending = 0, fill = 0, stage = 0;  // k-steps copied but not yet multiplied; ring positions
#pragma unroll 1
      for (int i = 0; group > 0 || pending > 0; ++i) {
        const bool multiply = i >= kAhead;
        if (multiply) {
          cp_async_wait<kAhead - 1>();  // this thread's copies of the oldest k-step have landed ...
#if RNNKERN_HAS_WGMMA
          if constexpr (kWg) fence_proxy_async_shared();  // ... are visible to wgmma's reads ...
#endif
          __syncthreads();  // ... everyone's have, and no warp still multiplies the stage filled next
        }
        if (group > 0) {
          issue(wt + s_tap_wt[slot], lc0, fill, s_off + slot * BM);
          fill = fill + 1 == kStages ? 0 : fill + 1;
          ++pending;
          if (++slot == group) {  // the chunk's last tap of the group: the next chunk
            slot = 0;
            lc0 += BK;
            if (lc0 >= p.R) {  // past the group's last channels: the next group
              lc0 = 0;
              __syncthreads();  // every thread has read the tables for its copies before build_group rewrites them
              build_group();
            }
          }
        }
        cp_async_commit();
        if (multiply) {
          T* as = Tiles::stage(smem, stage);
          mma.step(as, as + ATile::SIZE);
          --pending;
          stage = stage + 1 == kStages ? 0 : stage + 1;
        }
      }
      cp_async_wait<0>();  // (only empty groups can remain) nothing lands in the epilogue's tile
#endif
    }

    const T* bias = static_cast<const T*>(p.bias);
    T* out = static_cast<T*>(p.out);
    const long long out_cstride = kCL ? 1 : static_cast<long long>(p.Ho) * p.Wo;
    __syncthreads();  // s_out visible (the loop may have run no barrier)
    // pixel-shuffled output: channel co = (c, ph, pw) (NCHW) / (group, ph, pw, c in group)
    // (channels_last) is stored at c's plane / slot, ph rows and pw columns from the pixel (p.ps)
    const long long ow_ps = static_cast<long long>(p.Wo) * p.ps, plane_ps = static_cast<long long>(p.Ho) * p.ps * ow_ps;
    const int ps2 = p.ps * p.ps, cr = p.ps > 1 ? p.Co / ps2 : p.Co, cg = p.ps > 1 ? p.Nn / ps2 : p.Nn;
    const auto channel_offset = [&](int co) -> long long {
      if (p.ps <= 1) return co * out_cstride;
      if constexpr (kCL) {
        const int grp = co / p.Nn, nn = co - grp * p.Nn, q = nn / cg, ph = q / p.ps;
        return (ph * ow_ps + (q - ph * p.ps)) * cr + grp * cg + (nn - q * cg);
      } else {
        const int c = co / ps2, r = co - c * ps2, ph = r / p.ps;
        return c * plane_ps + ph * ow_ps + (r - ph * p.ps);
      }
    };
    mma.epilogue(
        smem,
        [&](int m, int n, auto v) {
          const long long o = s_out[m];
          const int nn = n0 + n;
          if (o < 0 || nn >= p.Nn) return;
          const int co = g * p.Nn + nn;
          auto val = v;
          if (bias != nullptr) val += to_acc(bias[co]);
          out[o + channel_offset(co)] = from_acc<T>(val);
        },
        m_contig);
  }
}

// ---- forward on TMA im2col + wgmma (sm_90a; RNNKERN_CONV_MMA=tma, opt-in until a GPU has run it) --
// The gather kernel's threads compute each 16-byte run's address and padding mask and issue its
// cp.async themselves, and its MMA warps wait on that issue stream (bench/NOTES.md, eighteenth
// session: the engine's likely bound). Here Hopper's tensor memory accelerator does the gather: a
// tensor map in im2col mode over the NHWC input (cuTensorMapEncodeIm2col) turns one instruction into
// a whole tile of BM consecutive output pixels x 128 bytes of channels for one tap, the tap's
// dilated offset given as the instruction's im2col offsets and the padding zero-filled by the copy
// engine; a tiled map over the K-major weight (G, taps, Nn, R) loads its 128 x 128-byte tile. One
// thread of the producer warpgroup issues both into a ring of kTmaStages stages guarded by
// mbarriers (full: the stage's bytes have landed; empty: the 8 consumer warps' wgmma have read it);
// the two consumer warpgroups run wgmma.m64n128 on rows 0-63 / 64-127 of the BM x 128 tile, one
// k-step in flight. No thread computes an address in the mainloop.
// Tiles as TMA writes them with 128-byte swizzle are wgmma's K-major SWIZZLE_128B operands
// (wgmma_desc_sw128); BK = 128 bytes of channels (64 bf16 / fp16, 32 fp32 for tf32).
// Scope: channels_last, no pixel shuffle: the forward (strides up to 8: the map's traversal
// strides), and grad_input / a transposed convolution's forward at any stride as stride-1 forwards
// of the flipped taps, a problem a stride phase, up to four a launch (tma_problems, TmaBatch;
// outputs scattered to the phase's pixels: GatherParams::oy_step ...); tiles of BM pixels in row
// order, or at large dilation the
// gather kernel's 8 x 16 pixel tiles (set_pixel_tiles: eight 16-pixel loads a stage, from a map of
// 16 pixels a column); G == 1 or R % BK == 0 (a chunk never reads the next group's channels; with
// G == 1 the channels past R are outside the map and read as zeros). Tap skipping as the gather
// kernel's: the taps whose whole tile reads padding are never loaded (s_live).
// Tiles of BM x TN, TN = 128 or 256 (tma_tile_n: one wgmma.m64n256 a consumer warpgroup and k step,
// each pixel tile read from L2 half as often; 128 accumulators a thread), one CTA an SM either way.
constexpr int kTmaThreads = 384;  // warpgroup 0 produces, 1 and 2 consume
constexpr int kTmaMaxTaps = 64;
template <int TN> struct TmaTile {
  static constexpr int kStages = TN == 128 ? 5 : 4;
  static constexpr int kStageBytes = (BM + TN) * 128;  // A then B, 128 bytes a row
  static constexpr int kSmemBytes = kStages * kStageBytes + 1024;  // + the 1024-byte alignment of the atoms
  static_assert(BM * (TN + 8) * 4 <= kStages * kStageBytes, "the epilogue's tile aliases the ring");
};
// One launch's problems: up to kTmaBatch of one call's tma_problems (a transposed mapping's stride
// phases: the four of stride 2 in one launch), blocks [block_end[i - 1], block_end[i]) along x for
// problem i (whole clusters each), its maps beside it. 4 x (128 + 128 + sizeof(GatherParams)) bytes:
// within the 4 KB of kernel parameters every CUDA 12 driver takes.
constexpr int kTmaBatch = 4;
struct TmaBatch {
  CUtensorMap map_x[kTmaBatch], map_w[kTmaBatch];  // (CUtensorMap is 128-byte aligned: first, no padding)
  GatherParams p[kTmaBatch];
  int block_end[kTmaBatch];
  int count;
};
static_assert(sizeof(TmaBatch) <= 4096, "a launch's parameters fit 4 KB");

// The K-major weight copies of a call's problems (the stride phases) from one kernel
// (RNNKERN_CONV_TMA_BATCH=1), where each problem's copy took a slice, a transpose and a clone (and
// the transposed mapping a flip first): part i of the pack is problem i's (G, taps_i, Nn, R) copy,
// prepare_tma_launch's layout. Its tap j = (jr, jc) of rows x cols is weight tap
// (row_first + jr row_step, col_first + jc col_step), counted from the last where flipped.
constexpr int kTmaPackParts = 16;
struct TmaPackPart {
  long long end;  // one past the part's last element in the pack (parts in order)
  int row_first, row_step, rows, col_first, col_step, cols;
  bool flipped;
};
struct TmaPack {
  const void* src;                      // the callers' (G, KH, KW, R, Nn) view of the weight ...
  long long s_g, s_kh, s_kw, s_r, s_n;  // ... and its strides (elements)
  void* out;
  int R, Nn, count;
  TmaPackPart part[kTmaPackParts];
};
// One thread an element of the pack, its writes along R.
template <typename T>
__global__ void tma_weight_pack_kernel(const __grid_constant__ TmaPack k) {
  const long long total = k.part[k.count - 1].end;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    int i = 0;
    while (e >= k.part[i].end) ++i;
    const TmaPackPart& q = k.part[i];
    long long rel = e - (i > 0 ? k.part[i - 1].end : 0);
    const int r = static_cast<int>(rel % k.R);
    rel /= k.R;
    const int n = static_cast<int>(rel % k.Nn);
    rel /= k.Nn;
    const int taps = q.rows * q.cols, j = static_cast<int>(rel % taps), jr = j / q.cols, jc = j % q.cols;
    const long long g = rel / taps;
    const int kh = q.row_first + (q.flipped ? q.rows - 1 - jr : jr) * q.row_step;
    const int kw = q.col_first + (q.flipped ? q.cols - 1 - jc : jc) * q.col_step;
    static_cast<T*>(k.out)[e] =
        static_cast<const T*>(k.src)[g * k.s_g + kh * k.s_kh + kw * k.s_kw + r * k.s_r + n * k.s_n];
  }
}

#if RNNKERN_HAS_WGMMA
// A block's pixel tile (blockIdx.x): BM consecutive pixels in row order (p.tile_w == 0; a tile may
// cross images), or at large dilation BM / tile_w rows x tile_w columns of one image
// (set_pixel_tiles), one load of `seg` pixels (the map's pixelsPerColumn) for each of its `rows`
// rows. img0, ho0, wo0: its first pixel; slot i is pixel m0 + i, or (ho0 + i / seg, wo0 + i % seg).
// loads: the rows inside the output (the others are never loaded: their slots are never stored).
struct TmaTileOrigin {
  long long m0 = 0;
  int img0, ho0, wo0, seg, rows, loads;
  // the bytes one stage's copies bring, A's loaded rows and B's b_rows rows of 128 bytes
  __device__ uint32_t stage_bytes(int b_rows) const { return static_cast<uint32_t>((loads * seg + b_rows) * 128); }
};
__device__ __forceinline__ TmaTileOrigin tma_tile_origin(const GatherParams& p, int bx) {
  TmaTileOrigin o;
  o.seg = p.tile_w > 0 ? p.tile_w : BM;
  o.rows = BM / o.seg;
  if (static_cast<long long>(bx) * BM >= p.Mt) {  // an idle CTA of a cluster (tiles not a multiple of CM)
    o.m0 = p.Mt;
    o.img0 = p.N, o.ho0 = o.wo0 = 0;
    o.loads = 0;
  } else if (p.tile_w > 0) {
    const int per_image = p.tiles_h * p.tiles_w, t = bx % per_image;
    o.img0 = bx / per_image;
    o.ho0 = t / p.tiles_w * o.rows;
    o.wo0 = t % p.tiles_w * o.seg;
    o.loads = min(o.rows, p.Ho - o.ho0);
  } else {
    const long long hw = static_cast<long long>(p.Ho) * p.Wo;
    o.m0 = static_cast<long long>(bx) * BM;
    o.img0 = static_cast<int>(o.m0 / hw);
    const int rem = static_cast<int>(o.m0 - o.img0 * hw);
    o.ho0 = rem / p.Wo;
    o.wo0 = rem - o.ho0 * p.Wo;
    o.loads = 1;
  }
  return o;
}

// The copies of one k-step (tap t, channels c0 ... of group g; output channels n0 ...) into the
// stage at shared address a (A: the tile's pixels, then B at a + BM * 128), completing on bar, which
// the caller has armed with the stage's bytes ((loads * seg + TN) * 128). Each load's first pixel
// is the map's base pixel: output (ho, wo) reads input (ho sh - pt + r dh, wo sw - pl + s dw), the
// (r dh, s dw) part given per tap as im2col offsets (the map's traversal strides step the base
// pixels by sh, sw).
// With CM > 1 (a cluster of CM CTAs sharing n0) this CTA loads only its part of B, rows
// rank * TN / CM ..., multicast into every CTA's stage, each part completing on each CTA's bar
// (tma_b_rows: a part wholly past the output channels is not loaded at all).
template <int TN, int CM>
__device__ __forceinline__ void tma_issue_stage(const GatherParams& p, const TmaTileOrigin& o, const CUtensorMap* map_x,
                                                const CUtensorMap* map_w, uint32_t a, uint32_t bar, int g, int n0,
                                                int t, int c0, uint32_t rank) {
  const int r = t / p.KW, s = t - r * p.KW;
  for (int j = 0; j < o.loads; ++j)
    tma_load_im2col_4d(a + j * o.seg * 128, map_x, bar, g * p.R + c0, o.wo0 * p.sw - p.pl, (o.ho0 + j) * p.sh - p.pt,
                       o.img0, static_cast<uint16_t>(s * p.dw), static_cast<uint16_t>(r * p.dh));
  if constexpr (CM == 1) {
    tma_load_3d(a + BM * 128, map_w, bar, c0, n0, g * p.KH * p.KW + t);
  } else {
    constexpr int kPart = TN / CM;
    const int np = n0 + static_cast<int>(rank) * kPart;
    if (np < p.Nn)
      tma_load_3d_multicast(a + (BM + static_cast<int>(rank) * kPart) * 128, map_w, bar, c0, np,
                            g * p.KH * p.KW + t, static_cast<uint16_t>((1u << CM) - 1));
  }
}
// The B rows of a stage that some CTA of the cluster loads: TN, less the parts that start past the
// output channels (never issued, as no box wholly past a tiled map's extent is; the im2col loads of
// pixels that are all padding, which the clusters' union of taps issues, were already issued at
// CM = 1 by 8 x 16 tiles' rows and completed on the H200).
template <int TN, int CM>
__device__ __forceinline__ int tma_b_rows(const GatherParams& p, int n0) {
  if constexpr (CM == 1) return TN;
  int rows = 0;
  for (int h = 0; h < CM; ++h) rows += n0 + h * (TN / CM) < p.Nn ? TN / CM : 0;
  return rows;
}
#endif

// CM = 2 (RNNKERN_CONV_TMA_CLUSTER=2, opt-in, not yet run on a GPU): clusters of two CTAs on
// neighbouring pixel tiles and the same output channels share B: each loads half of the weight tile
// and multicasts it into both CTAs' stages, so the pair reads the weight from L2 once. The H200 runs
// of the 128 x 256 tiles moved ~4.0 TB/s from L2 at 128 and at 256 columns alike
// (bench/NOTES.md, twenty-first session): the weight is two thirds of those bytes. The pair must
// then agree on everything a stage depends on: its k-steps run the union of both tiles' live taps
// (a tap live in one tile only brings the other the copy engine's zero fill), a stage is refilled
// only when all 16 consumer warps of the pair have released it (each consumer warp arrives on both
// CTAs' empty barriers), and neither CTA exits while its partner may still arrive on its barriers
// or read its shared memory (a cluster barrier at the end). An odd tile count leaves the last
// pair's second CTA idle: it loads its half of B and stores nothing. CM = 4
// (RNNKERN_CONV_TMA_CLUSTER=4) is the same with quarters of B and the union of four tiles' taps.
template <typename T, int TN, int CM>
__global__ void __launch_bounds__(kTmaThreads, 1) gather_tma_kernel(const __grid_constant__ TmaBatch batch) {
#if RNNKERN_HAS_WGMMA
  static_assert(CM == 1 || CM == 2 || CM == 4, "clusters of 1, 2 or 4 CTAs");
  // This block's problem (its blocks along x: [block_end[pi - 1], block_end[pi]), whole clusters) and
  // its tile in it; the problem's parameters and maps read in place from the parameter space.
  int pi = 0;
  while (pi + 1 < batch.count && static_cast<int>(blockIdx.x) >= batch.block_end[pi]) ++pi;
  const int bx = static_cast<int>(blockIdx.x) - (pi > 0 ? batch.block_end[pi - 1] : 0);
  const GatherParams& p = batch.p[pi];
  const CUtensorMap* const map_x = &batch.map_x[pi];
  const CUtensorMap* const map_w = &batch.map_w[pi];
  constexpr int BK = 128 / static_cast<int>(sizeof(T));
  constexpr int kTmaStages = TmaTile<TN>::kStages, kTmaStageBytes = TmaTile<TN>::kStageBytes, kTmaTileN = TN;
  __shared__ __align__(8) uint64_t full[kTmaStages], empty[kTmaStages];
  __shared__ unsigned long long s_live;  // bit t: some pixel of the tile reads real data through tap t
  extern __shared__ __align__(1024) unsigned char tma_smem_raw[];
  const uint32_t raw = smem_u32(tma_smem_raw);
  const uint32_t ring = (raw + 1023) & ~1023u;
  unsigned char* const smem = tma_smem_raw + (ring - raw);
  __shared__ long long s_out[BM];  // output offset of tile slot m (channel 0), -1: outside the output
  const int tid = threadIdx.x;
  const int g = static_cast<int>(blockIdx.z);
  const int n0 = static_cast<int>(blockIdx.y) * kTmaTileN;
  const int taps = p.KH * p.KW;
  const long long hw = static_cast<long long>(p.Ho) * p.Wo;
  const TmaTileOrigin tile = tma_tile_origin(p, bx);  // (its pixels)
  const int seg = tile.seg, img0 = tile.img0, ho0 = tile.ho0, wo0 = tile.wo0;
  const long long m0 = tile.m0;
  const uint32_t rank = CM > 1 ? cluster_ctarank() : 0;

  if (tid == 0) {
    for (int s = 0; s < kTmaStages; ++s) {
      mbar_init(smem_u32(&full[s]), 1);  // the producer's arrive_expect_tx (+ the bytes)
      mbar_init(smem_u32(&empty[s]), 8 * CM);  // one arrival per consumer warp of the cluster
    }
    mbar_init_fence();
    s_live = 0;
    tma_prefetch_map(map_x);
    tma_prefetch_map(map_w);
  }
  // This thread's tile slot (tid < BM), then the taps some pixel of the tile reads real data for
  // (s_live: each thread's taps as a mask, OR-ed across its warp, then into shared memory: two block
  // barriers, where a __syncthreads_or a tap took one for each tap).
  int pn = -1, pho = 0, pwo = 0;
  if (tid < BM) {
    if (tile.loads == 0) {
      // an idle CTA of a cluster: no pixel (every slot -1, so its store loops store nothing)
    } else if (p.tile_w > 0) {
      pho = ho0 + tid / seg;
      pwo = wo0 + tid % seg;
      if (pho < p.Ho && pwo < p.Wo) pn = img0;
    } else if (m0 + tid < p.M) {
      const long long m = m0 + tid;
      pn = static_cast<int>(m / hw);
      const int rem = static_cast<int>(m - pn * hw);
      pho = rem / p.Wo;
      pwo = rem - pho * p.Wo;
    }
    s_out[tid] = pn < 0 ? -1
                        : ((static_cast<long long>(pn) * p.out_h + pho * p.oy_step + p.oy0) * p.out_w +
                           pwo * p.ox_step + p.ox0) * p.Co;
  }
  unsigned long long mine = 0;  // (taps <= kTmaMaxTaps = 64: tma_plan)
  if (pn >= 0) {
    for (int t = 0; t < taps; ++t) {
      const int hs = pho * p.sh - p.pt + t / p.KW * p.dh, ws = pwo * p.sw - p.pl + t % p.KW * p.dw;
      if (hs >= 0 && hs < p.Hs && ws >= 0 && ws < p.Ws) mine |= 1ull << t;
    }
  }
  // s_live zeroed and the barriers' initialisation visible (to the cluster's other CTAs too: their
  // copies and arrivals reach them)
  if constexpr (CM == 1) __syncthreads();
  else cluster_sync_all();
  const unsigned lo = __reduce_or_sync(0xffffffffu, static_cast<unsigned>(mine));
  const unsigned hi = __reduce_or_sync(0xffffffffu, static_cast<unsigned>(mine >> 32));
  if (tid % 32 == 0 && (lo | hi) != 0) atomicOr(&s_live, (static_cast<unsigned long long>(hi) << 32) | lo);
  unsigned long long live_taps;
  if constexpr (CM == 1) {
    __syncthreads();  // s_live complete
    live_taps = s_live;
  } else {
    cluster_sync_all();  // s_live complete in every CTA: the cluster runs the union of their taps
    live_taps = s_live;
#pragma unroll
    for (uint32_t r = 1; r < CM; ++r) live_taps |= ld_cluster_u64(cluster_map(smem_u32(&s_live), (rank + r) % CM));
  }
  const int chunks = (p.R + BK - 1) / BK;
  const int ksteps = __popcll(live_taps) * chunks;

  float acc[kTmaTileN / 2];
#pragma unroll
  for (int i = 0; i < kTmaTileN / 2; ++i) acc[i] = 0.f;
  const int wg = tid / 128, warp = tid / 32 % 4, lane = tid % 32;
  if (wg == 0) {
    if (tid == 0) {  // one thread issues; its warp reconverges below before the block's barrier
      const uint32_t bytes = tile.stage_bytes(tma_b_rows<TN, CM>(p, n0));
      int i = 0;  // k-step: the live taps in order, all chunks of one before the next
      for (unsigned long long rest = live_taps; rest != 0; rest &= rest - 1) {
        const int t = __ffsll(static_cast<long long>(rest)) - 1;
        for (int c0 = 0; c0 < p.R; c0 += BK, ++i) {
          const int st = i % kTmaStages;
          // its last reads are done (CM > 1: the other CTAs' consumers' too, released at cluster scope)
          if (i >= kTmaStages) mbar_wait<(CM > 1)>(smem_u32(&empty[st]), (i / kTmaStages - 1) & 1);
          const uint32_t bar = smem_u32(&full[st]);
          mbar_arrive_expect_tx(bar, bytes);
          tma_issue_stage<TN, CM>(p, tile, map_x, map_w, ring + st * kTmaStageBytes, bar, g, n0, t, c0, rank);
        }
      }
    }
    __syncwarp();
  } else {
    const int cw = wg - 1;  // rows 64 cw ... of the tile
    for (int i = 0; i < ksteps; ++i) {
      const int st = i % kTmaStages;
      mbar_wait(smem_u32(&full[st]), (i / kTmaStages) & 1);
      __syncwarp();  // (the warp converged again before the .aligned wgmma instructions)
      const uint32_t a = ring + st * kTmaStageBytes + cw * 64 * 128, b = ring + st * kTmaStageBytes + BM * 128;
      wgmma_pin(acc);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < 4; ++ks)  // 32 bytes of k each: k16 (16-bit) / k8 (tf32)
        wgmma_m64n<T, kTmaTileN>(acc, wgmma_desc_sw128(a + ks * 32), wgmma_desc_sw128(b + ks * 32));
      wgmma_commit();
      wgmma_wait<1>();  // the previous k-step's products are done: its stage can be refilled
      wgmma_pin(acc);
      if (i > 0 && lane == 0) {
        const uint32_t released = smem_u32(&empty[(i - 1) % kTmaStages]);
        mbar_arrive(released);
        // (CM > 1: and on the other CTAs' empty barriers, whose producers refill their part of B
        // into this CTA's stage too)
#pragma unroll
        for (uint32_t r = 1; r < CM; ++r) mbar_arrive_cluster(cluster_map(released, (rank + r) % CM));
      }
    }
    wgmma_wait<0>();
    wgmma_pin(acc);
  }

  // Epilogue: the accumulators staged in shared memory (aliasing the ring: every copy has landed,
  // the consumers waited for each, and every wgmma has read its stage) as [m][n], then all 384
  // threads store them along the channels (channels_last rows), 16 bytes a thread where aligned.
  constexpr int LDC = kTmaTileN + 8;  // (+ 8: the float2 stores of a warp's 8 rows on distinct banks)
  float* Cs = reinterpret_cast<float*>(smem);
  __syncthreads();
  if (wg > 0) {
    const int gq = lane / 4, tq = lane % 4, row0 = (wg - 1) * 64 + warp * 16 + gq;
#pragma unroll
    for (int j = 0; j < kTmaTileN / 8; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        *reinterpret_cast<float2*>(Cs + (row0 + 8 * h) * LDC + j * 8 + 2 * tq) =
            make_float2(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
  }
  __syncthreads();
  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
  // 16-byte stores of VE channels where every run starts aligned (channel counts multiples of VE,
  // so a run is all inside the group's channels or all outside), else one element a thread
  constexpr int VE = 16 / static_cast<int>(sizeof(T));
  if (p.Co % VE == 0 && p.Nn % VE == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0) {
    for (int idx = tid; idx < BM * kTmaTileN / VE; idx += kTmaThreads) {
      const int m = idx / (kTmaTileN / VE), n = idx % (kTmaTileN / VE) * VE;
      const long long o = s_out[m];
      if (o < 0 || n0 + n >= p.Nn) continue;
      const int co = g * p.Nn + n0 + n;
      alignas(16) T vals[VE];
      alignas(16) float acc_run[VE];
#pragma unroll
      for (int e = 0; e < VE; e += 4)  // (float4 reads of the staged row: n and LDC are multiples of 4)
        *reinterpret_cast<float4*>(acc_run + e) = *reinterpret_cast<const float4*>(Cs + m * LDC + n + e);
#pragma unroll
      for (int e = 0; e < VE; ++e) {
        float v = acc_run[e];
        if (bias != nullptr) v += to_acc(bias[co + e]);
        vals[e] = from_acc<T>(v);
      }
      *reinterpret_cast<uint4*>(out + o + co) = *reinterpret_cast<const uint4*>(vals);
    }
  } else {
    for (int idx = tid; idx < BM * kTmaTileN; idx += kTmaThreads) {
      const int m = idx / kTmaTileN, n = idx % kTmaTileN;
      const int nn = n0 + n;
      const long long o = s_out[m];
      if (o < 0 || nn >= p.Nn) continue;
      const int co = g * p.Nn + nn;
      float v = Cs[m * LDC + n];
      if (bias != nullptr) v += to_acc(bias[co]);
      out[o + co] = from_acc<T>(v);
    }
  }
  if constexpr (CM > 1) cluster_sync_all();  // the other CTAs' arrivals on this CTA's barriers are done
#else
  __trap();  // the host launches this form only on sm_90 with an sm_90a build
#endif
}

// A diagnostic of the TMA form's copies alone, without the MMA (conv2d_tma_stage_probe_cuda, for a
// test that tells a wrong copy from a wrong product on the first GPU run): block (bx, by, g)'s stage
// for tap t and channels c0 ..., as gather_tma_kernel's producer issues it, copied raw (swizzled, as
// wgmma reads it) to out; bytes no copy wrote read 0xAB. CM > 1: the cluster of block bx (launched
// as one cluster of CM), each CTA's stage at out + rank * the stage's bytes, B from every CTA's part.
template <int TN, int CM>
__global__ void tma_stage_probe_kernel(const GatherParams p, const __grid_constant__ CUtensorMap map_x,
                                       const __grid_constant__ CUtensorMap map_w, int bx, int by, int g, int t, int c0,
                                       uint8_t* out) {
#if RNNKERN_HAS_WGMMA
  constexpr int kBytes = TmaTile<TN>::kStageBytes;
  __shared__ __align__(8) uint64_t bar;
  extern __shared__ __align__(1024) unsigned char probe_raw[];
  const uint32_t raw = smem_u32(probe_raw), stage = (raw + 1023) & ~1023u;
  unsigned char* const st = probe_raw + (stage - raw);
  const uint32_t rank = CM > 1 ? cluster_ctarank() : 0;
  const TmaTileOrigin o = tma_tile_origin(p, bx / CM * CM + static_cast<int>(rank));
  for (int i = threadIdx.x; i < kBytes; i += blockDim.x) st[i] = 0xAB;
  fence_proxy_async_shared();  // (these writes ordered before the copies' through the async proxy)
  if (threadIdx.x == 0) {
    mbar_init(smem_u32(&bar), 1);
    mbar_init_fence();
  }
  if constexpr (CM == 1) __syncthreads();
  else cluster_sync_all();  // (every CTA's stage filled and barrier initialised before any copy)
  if (threadIdx.x == 0) {
    mbar_arrive_expect_tx(smem_u32(&bar), o.stage_bytes(tma_b_rows<TN, CM>(p, by * TN)));
    tma_issue_stage<TN, CM>(p, o, &map_x, &map_w, stage, smem_u32(&bar), g, by * TN, t, c0, rank);
    mbar_wait(smem_u32(&bar), 0);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kBytes; i += blockDim.x) out[rank * kBytes + i] = st[i];
  if constexpr (CM > 1) cluster_sync_all();
#else
  __trap();  // (conv2d_tma_stage_probe_cuda refuses builds without sm_90a)
#endif
}

// ---- grad_weight -----------------------------------------------------------------------------

struct WgradParams {
  const void* gy;  // (N, K, OH, OW) in the kernel's layout
  const void* x;   // (N, C, H, W) in the kernel's layout
  void* ws;        // (splits, G, taps, Kg, Cg) partial sums (fp32; fp64 for double)
  int N, C, H, W, K, OH, OW, G, Kg, Cg;
  int KH, KW, sh, sw, dh, dw, pt, pl;
  int splits, tiles_n;
  bool vec_a, vec_b;
};

// The output positions [*lo, *hi) whose read o s + t d - p lies in [0, in), in 64-bit arithmetic
// (in + p + s - 1 can pass int32 at sizes the maps allow).
__device__ __forceinline__ void valid_range_dev(int t, int s, int d, int p, int in, int out, int* lo, int* hi) {
  const long long off = static_cast<long long>(t) * d - p;
  auto cdiv = [](long long a, long long b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); };
  long long l = cdiv(-off, s), h = cdiv(in - off, s);
  l = l < 0 ? 0 : (l > out ? out : l);
  h = h > out ? out : h;
  *lo = static_cast<int>(l);
  *hi = static_cast<int>(h < l ? l : h);
}

// Shared tiles of the grad-weight kernel: A(m = k_out, p) is [m][p] for NCHW (pixels contiguous),
// [p][m] for channels_last; B(p, n = c_in) is [n][p] / [p][n].
template <typename T, Path P, bool kCL, typename C = Cfg<T, P>>
using WgradTiles = StagedTiles<T, P, std::conditional_t<kCL, SmemTile<C::BK, BM, C::PAD_K>, SmemTile<BM, C::BK, C::PAD>>,
                               std::conditional_t<kCL, SmemTile<C::BK, BN, C::PAD_K>, SmemTile<BN, C::BK, C::PAD>>>;

// kStages as in gather_conv_kernel: 1 = one shared stage behind a register prefetch; > 1 = a ring
// of cp.async stages (RNNKERN_CONV_PIPELINE), each with its own pixel-offset tables. Pipelined
// channels_last instances fit 128 registers (two blocks an SM); NCHW ones keep ~200 (its 24
// element-wise copies' 64-bit offsets stay live across the loop; capped at 128 they spill).
// kWg (on the ring only): the block MMA on wgmma, as gather_conv_kernel's. fp32 NCHW: both operands
// K-major (A [m][p], B [n][p]); 16-bit channels_last: both MN-major (A [p][m], B [p][n]: wgmma's
// transposed operands, WgmmaLayout::at_mn).
// TN: the block tile's columns (input channels), 128 only for the 16-bit channels_last wgmma form
// (wgmma_tile_n); the fp32 NCHW one already holds ~210 registers at 64.
template <typename T, Path P, bool kCL, int kStages = 1, bool kWg = false, int TN = BN>
__global__ void __launch_bounds__(kThreads, kStages > 1 && kCL ? 2 : 1) wgrad_kernel(const WgradParams p) {
  static_assert(!kWg || (kStages > 1 && (kCL ? sizeof(T) == 2 : sizeof(T) == 4)),
                "the wgmma grad_weight: fp32 NCHW or 16-bit channels_last, on the ring");
  static_assert(TN == BN || (kWg && kCL && TN == 128), "BM x 128 grad_weight tiles: the 16-bit wgmma form only");
  constexpr int kAhead = RingDepth<kStages, kWg>::kAhead;
  using C = Cfg<T, P>;
  constexpr int BK = C::BK, V = C::V;
  using Tiles = std::conditional_t<kWg, WgmmaTiles<T, P, TN>, WgradTiles<T, P, kCL>>;
  using ATile = typename Tiles::A;
  using BTile = typename Tiles::B;
  constexpr int kTables = kStages > 1 ? kStages : 2;
  __shared__ __align__(128) unsigned char smem_static[kStages == 1 ? Tiles::bytes(1) : 16];
  extern __shared__ __align__(128) unsigned char smem_stages[];
  unsigned char* smem = kStages == 1 ? smem_static : smem_stages;
  // pixel offsets (channel 0) of each k-step's BK pixels: double-buffered by step (kStages == 1),
  // one set per stage otherwise
  __shared__ long long s_gy[kTables][BK], s_x[kTables][BK];
  T* As = reinterpret_cast<T*>(smem);
  T* Bs = As + ATile::SIZE;

#if !RNNKERN_HAS_SM80_TENSOR_CORES
  if constexpr (P != Path::kSimt) {
    __trap();
    return;
  } else {
#else
  {
#endif
    using Mma = std::conditional_t<kWg, WgmmaMma<T, BK, ATile::LD, BTile::LD, !kCL, kCL, false, kCL, kCL, TN>,
                                   BlockMma<T, P, BK, ATile::LD, BTile::LD, !kCL, kCL, false>>;
    using Acc = typename AccOf<T>::type;
    const int tid = threadIdx.x;
    const int mt = blockIdx.x / p.tiles_n, nt = blockIdx.x % p.tiles_n;
    const int taps = p.KH * p.KW;
    const int tap = blockIdx.y % taps, sp = blockIdx.y / taps, g = blockIdx.z;
    const int r = tap / p.KW, s = tap % p.KW;
    const int k0 = mt * BM, c0 = nt * TN;
    int oh0, oh1, ow0, ow1;
    valid_range_dev(r, p.sh, p.dh, p.pt, p.H, p.OH, &oh0, &oh1);
    valid_range_dev(s, p.sw, p.dw, p.pl, p.W, p.OW, &ow0, &ow1);
    const int vh = oh1 - oh0, vw = ow1 - ow0;
    const long long P_all = static_cast<long long>(p.N) * vh * vw;
    const long long steps = (P_all + BK - 1) / BK;
    const long long s_begin = steps * sp / p.splits, s_end = steps * (sp + 1) / p.splits;
    const T* gy = static_cast<const T*>(p.gy);
    const T* x = static_cast<const T*>(p.x);
    const long long gy_cs = kCL ? 1 : static_cast<long long>(p.OH) * p.OW;
    const long long x_cs = kCL ? 1 : static_cast<long long>(p.H) * p.W;

    auto tables = [&](long long step, int buf) {
      if (tid < BK) {
        const long long q = step * BK + tid;
        long long og = -1, ox = -1;
        if (q < P_all) {
          const long long per = static_cast<long long>(vh) * vw;
          const int n = static_cast<int>(q / per);
          const int rem = static_cast<int>(q - n * per);
          const int oh = oh0 + rem / vw, ow = ow0 + rem % vw;
          const int ih = oh * p.sh - p.pt + r * p.dh, iw = ow * p.sw - p.pl + s * p.dw;
          og = kCL ? ((static_cast<long long>(n) * p.OH + oh) * p.OW + ow) * p.K + static_cast<long long>(g) * p.Kg
                   : ((static_cast<long long>(n) * p.K + static_cast<long long>(g) * p.Kg) * p.OH + oh) * p.OW + ow;
          ox = kCL ? ((static_cast<long long>(n) * p.H + ih) * p.W + iw) * p.C + static_cast<long long>(g) * p.Cg
                   : ((static_cast<long long>(n) * p.C + static_cast<long long>(g) * p.Cg) * p.H + ih) * p.W + iw;
        }
        s_gy[buf][tid] = og;
        s_x[buf][tid] = ox;
      }
    };

    constexpr int A_PER = BM * BK / kThreads, B_PER = BK * BN / kThreads;
    T ra[A_PER], rb[B_PER];                    // NCHW: one element per (pixel, channel)
    Vec16<T> va[A_PER / V], vb[B_PER / V];     // channels_last: V-wide runs
    // channels_last: V-wide runs along k_out (A) / c_in (B), pixels across threads
    constexpr int A_TPR = BM / V, A_RPP = kThreads / A_TPR;
    constexpr int B_TPR = BN / V, B_RPP = kThreads / B_TPR;
    // NCHW: lane = pixel (tid % BK), rows across the rest
    constexpr int N_RPP = kThreads / BK;
    static_assert(!kCL || (A_PER == (BK / A_RPP) * V && B_PER == (BK / B_RPP) * V), "tile mapping");

    auto load = [&](int buf) {
      if constexpr (kCL) {
        const int mv = (tid % A_TPR) * V, k = k0 + mv;
#pragma unroll
        for (int i = 0; i < BK / A_RPP; ++i) {
          load_run(va[i], gy, s_gy[buf][tid / A_TPR + i * A_RPP], k, p.Kg, p.vec_a);
        }
        const int nv = (tid % B_TPR) * V, c = c0 + nv;
#pragma unroll
        for (int i = 0; i < BK / B_RPP; ++i) {
          load_run(vb[i], x, s_x[buf][tid / B_TPR + i * B_RPP], c, p.Cg, p.vec_b);
        }
      } else {
        const int q = tid % BK;
        const long long og = s_gy[buf][q], ox = s_x[buf][q];
#pragma unroll
        for (int i = 0; i < A_PER; ++i) {
          const int k = k0 + tid / BK + i * N_RPP;
          ra[i] = (og >= 0 && k < p.Kg) ? gy[og + k * gy_cs] : zero_of<T>();
        }
#pragma unroll
        for (int i = 0; i < B_PER; ++i) {
          const int c = c0 + tid / BK + i * N_RPP;
          rb[i] = (ox >= 0 && c < p.Cg) ? x[ox + c * x_cs] : zero_of<T>();
        }
      }
    };
    auto store = [&]() {
      if constexpr (kCL) {
        const int mv = (tid % A_TPR) * V;
#pragma unroll
        for (int i = 0; i < BK / A_RPP; ++i) {
          store_run<P>(As + (tid / A_TPR + i * A_RPP) * ATile::LD + mv, va[i]);
        }
        const int nv = (tid % B_TPR) * V;
#pragma unroll
        for (int i = 0; i < BK / B_RPP; ++i) {
          store_run<P>(Bs + (tid / B_TPR + i * B_RPP) * BTile::LD + nv, vb[i]);
        }
      } else {
        const int q = tid % BK;
#pragma unroll
        for (int i = 0; i < A_PER; ++i) As[(tid / BK + i * N_RPP) * ATile::LD + q] = to_smem<P>(ra[i]);
#pragma unroll
        for (int i = 0; i < B_PER; ++i) Bs[(tid / BK + i * N_RPP) * BTile::LD + q] = to_smem<P>(rb[i]);
      }
    };

    Mma mma;
    mma.init(tid);
    if constexpr (kStages == 1) {
      if (s_begin < s_end) tables(s_begin, 0);
      __syncthreads();
      if (s_begin < s_end) load(0);
      int buf = 0;
      for (long long step = s_begin; step < s_end; ++step) {
        store();
        if (step + 1 < s_end) tables(step + 1, buf ^ 1);
        __syncthreads();
        if (step + 1 < s_end) load(buf ^ 1);
        mma.step(As, Bs);
        __syncthreads();
        buf ^= 1;
      }
    } else if (s_begin < s_end) {
#if RNNKERN_HAS_SM80_TENSOR_CORES
      // Copies k-step j (its pixels' offsets in tables j % kStages) into stage j % kStages straight
      // from global memory, zero-filled where load() above gives zeros; fp32 unrounded, as in
      // gather_conv_kernel.
      const auto issue = [&](int st) {
        T* as = Tiles::stage(smem, st);
        T* bs = as + ATile::SIZE;
        if constexpr (kCL && kWg) {  // MN-major core matrices (16-bit, 16-byte runs: use_wgmma)
          using L = WgmmaLayout<T, BK>;
          static_assert(BM % 32 == 0 && TN % 32 == 0 && (BM * BK / V) % kThreads == 0 && (TN * BK / V) % kThreads == 0,
                        "run_mn: tiles of 32-row multiples, whole runs per thread");
#pragma unroll
          for (int i = 0; i < BM * BK / V / kThreads; ++i) {
            int m, q;  // channels m ... m + 7 of pixel q
            L::run_mn(tid + i * kThreads, &m, &q);
            copy_run_async(smem_u32(as + L::at_mn(m, q)), gy, s_gy[st][q], k0 + m, p.Kg, p.vec_a);
          }
#pragma unroll
          for (int i = 0; i < TN * BK / V / kThreads; ++i) {
            int n, q;
            L::run_mn(tid + i * kThreads, &n, &q);
            copy_run_async(smem_u32(bs + L::at_mn(n, q)), x, s_x[st][q], c0 + n, p.Cg, p.vec_b);
          }
        } else if constexpr (kCL) {  // (16-bit only with 16-byte runs: use_pipeline)
          const int mv = (tid % A_TPR) * V;
#pragma unroll
          for (int i = 0; i < BK / A_RPP; ++i) {
            const int row = tid / A_TPR + i * A_RPP;
            copy_run_async(smem_u32(as + row * ATile::LD + mv), gy, s_gy[st][row], k0 + mv, p.Kg, p.vec_a);
          }
          const int nv = (tid % B_TPR) * V;
#pragma unroll
          for (int i = 0; i < BK / B_RPP; ++i) {
            const int row = tid / B_TPR + i * B_RPP;
            copy_run_async(smem_u32(bs + row * BTile::LD + nv), x, s_x[st][row], c0 + nv, p.Cg, p.vec_b);
          }
        } else if constexpr (sizeof(T) == 4) {
          // [row][q] tiles, or core matrices (wgmma): there a warp's 32 copies are 8 rows x 4 pixels,
          // one 16-byte row of each of 8 core-matrix rows (all 32 banks; 32 pixels of one row would
          // put 8 threads on each bank), and each thread keeps one pixel
          const int q = kWg ? tid % 4 + 4 * (tid / 32 % 8) : tid % BK;
          const int row0 = kWg ? tid / 4 % 8 : tid / BK, row_step = kWg ? 8 : N_RPP;
          const auto at = [](int row, int k) {
            if constexpr (kWg) return WgmmaLayout<T, BK>::at(row, k);
            else return row * ATile::LD + k;  // (A and B rows have one stride: BK + PAD)
          };
          static_assert(kWg || ATile::LD == BTile::LD, "one row stride");
          const long long og = s_gy[st][q], ox = s_x[st][q];
#pragma unroll
          for (int i = 0; i < A_PER; ++i) {
            const int row = row0 + i * row_step, k = k0 + row;
            const bool ok = og >= 0 && k < p.Kg;
            cp_async4(smem_u32(as + at(row, q)), ok ? gy + og + k * gy_cs : gy, ok);
          }
#pragma unroll
          for (int i = 0; i < B_PER; ++i) {
            const int row = row0 + i * row_step, c = c0 + row;
            const bool ok = ox >= 0 && c < p.Cg;
            cp_async4(smem_u32(bs + at(row, q)), ok ? x + ox + c * x_cs : x, ok);
          }
        } else {
          __trap();  // 16-bit NCHW stays on kStages == 1 (no 2-byte cp.async)
        }
      };
      // Iteration i copies k-step s_begin + i (if any) and, from i = kAhead on, multiplies k-step
      // s_begin + i - kAhead; one cp.async group per iteration, as in the gather kernel (stage
      // i % kStages was last multiplied in iteration i - 1 - kLag). The tables of the next k-step
      // to copy are built one iteration ahead, into a set last read kStages - 1 iterations
      // earlier, so the loop's one barrier orders every use.
      const int n_steps = static_cast<int>(s_end - s_begin);
      tables(s_begin, 0);
#pragma unroll 1
      for (int i = 0; i < n_steps + kAhead; ++i) {
        const int mul = i - kAhead;  // k-step (from s_begin) multiplied here, if >= 0
        if (mul >= 0) cp_async_wait<kAhead - 1>();
#if RNNKERN_HAS_WGMMA
        if constexpr (kWg) fence_proxy_async_shared();  // the landed copies visible to wgmma's reads
#endif
        __syncthreads();  // tables of k-step i visible; k-step mul landed; stage i % kStages free
        if (i < n_steps) issue(i % kStages);
        cp_async_commit();
        if (i + 1 < n_steps) tables(s_begin + i + 1, (i + 1) % kStages);
        if (mul >= 0) {
          T* as = Tiles::stage(smem, mul % kStages);
          mma.step(as, as + ATile::SIZE);
        }
      }
      cp_async_wait<0>();
#endif
    }

    Acc* ws = static_cast<Acc*>(p.ws) + ((static_cast<long long>(sp) * p.G + g) * taps + tap) * p.Kg * p.Cg;
    mma.epilogue(smem, [&](int m, int n, auto v) {
      const int k = k0 + m, c = c0 + n;
      if (k < p.Kg && c < p.Cg) ws[static_cast<long long>(k) * p.Cg + c] = static_cast<Acc>(v);
    });
  }
}

// ---- grad_weight on TMA loads + wgmma (sm_90a, 16-bit channels_last / TF32 NCHW; RNNKERN_CONV_MMA=tma)
// grad_weight of one tap t is D[k, c] = sum_p gy[p, k] x[p shifted by t, c] over the output pixels p:
// a GEMM whose reduction runs along the pixels, so both operands are MN-major in channels_last
// memory (channels contiguous, pixels strided): wgmma's transposed 16-bit operands. One CTA (384
// threads, as gather_tma_kernel's) a 128 k x TN c tile of one tap and group over one split of the
// pixels, 64 pixels a k-step: the producer thread loads gy's 64 pixels x 128 output channels with a
// tiled map over gy as (K, pixels) (up to two 64-channel boxes) and x's same 64 pixels shifted by
// the tap with the forward's im2col map (up to TN / 64 loads of 64 channels, padding zero-filled;
// boxes starting past the group's Kg / Cg are not loaded); with
// 128-byte swizzle each box is wgmma's MN-major SWIZZLE_128B layout (wgmma_desc_mn_sw128: 64
// channels of a pixel in a 128-byte row, 8-pixel atoms of 1024 bytes along k, the next 64 channels
// one box further). Consumer warpgroup cw takes output channels 64 cw ... of the tile. Each split
// writes its fp32 partial tile to the workspace and wgrad_reduce_kernel adds the splits in order
// (deterministic, as wgrad_kernel). k-steps whose 64 pixels all miss the tap's valid rectangle
// (valid_range_dev: the rows / columns whose shifted read is real input) are skipped, by producer
// and consumers alike; inside the others the copy engine's zero fill takes the padding, and pixels
// past the batch read zeros from both maps. Channels past a group's Kg / Cg (the tile's ragged
// edge) read the next group's channels or zeros, or, in boxes not loaded, stale bytes, and land in
// rows / columns that are never stored.
// TF32 NCHW (wgrad_tma_kernel<float, TN>; RNNKERN_CONV_MMA=tma, unit column stride): in NCHW memory
// the pixels are the contiguous dimension of both operands, so they are K-major, tf32 wgmma's only
// form, and the forward's consumer loop reads them as is (wgmma_desc_sw128). A k-step is 32 pixels
// (128 bytes) of one output row: a tiled 4-D box of gy (32 columns x 128 output channels) and one
// of x at the tap's shifted row and columns (32 x TN input channels; the map's zero fill takes the
// padding, as a tiled load's out-of-bounds elements read 0). k-steps whose row or 32 columns read
// only padding through the tap are skipped. Output widths are whole 32-column blocks
// (launch_wgrad_tma): a ragged block's columns past OW would multiply gy's zero fill by input
// columns the convolution never reads, and 0 x NaN / Inf there would reach the gradient.
constexpr int kTmaWgradPixels = 64;  // pixels a k-step (BKp): 64 x 128-byte rows an operand box
constexpr int kTmaWgradRowPixels = 32;  // the TF32 NCHW form's k-step: 32 fp32 pixels, 128 bytes

#if RNNKERN_HAS_WGMMA
// The k-step at pixel m (of P) has no pixel inside tap t's valid rectangle (rows [oh0, oh1) x columns
// [ow0, ow1) of every image): checked on the k-step's first and last pixels' rows, conservatively
// live where the k-step crosses an image.
__device__ __forceinline__ bool tma_wgrad_step_dead(long long m, long long P, int OH, int OW, int oh0, int oh1, int ow0,
                                                    int ow1) {
  if (oh0 >= oh1 || ow0 >= ow1) return true;
  const long long hw = static_cast<long long>(OH) * OW, last = min(m + kTmaWgradPixels, P) - 1;
  const long long na = m / hw, nb = last / hw;
  if (na != nb) return false;
  const int ra = static_cast<int>(m - na * hw), rb = static_cast<int>(last - nb * hw);
  const int ha = ra / OW, hb = rb / OW;
  if (hb < oh0 || ha >= oh1) return true;
  return ha == hb && (rb - hb * OW < ow0 || ra - ha * OW >= ow1);
}
#endif

// The TF32 NCHW form's k-step k: image n, output row ho, columns wo0 .. wo0 + 31 (rows of `spr`
// such steps; launch_wgrad_tma takes whole 32-column blocks only).
struct TmaWgradRowStep {
  int n, ho, wo0;
};
__device__ __forceinline__ TmaWgradRowStep tma_wgrad_row_step(long long k, int OH, int spr) {
  const long long per_image = static_cast<long long>(OH) * spr;
  const int n = static_cast<int>(k / per_image), rem = static_cast<int>(k - n * per_image);
  return {n, rem / spr, rem % spr * kTmaWgradRowPixels};
}

// CM > 1 (16-bit only; RNNKERN_CONV_TMA_CLUSTER=2|4, opt-in, not yet run on a GPU): clusters of CM
// CTAs on neighbouring output-channel tiles (blockIdx.x = n tile x tiles_m + m tile; tiles_m a
// multiple of CM) of the same tap, split and input-channel tile share the x boxes, the larger
// operand (TN / 64 boxes against gy's 2): box j is loaded by rank j % CM and multicast into every
// CTA's stage, as gather_tma_kernel's clusters share their weight tile. Their k-steps are the same
// (same tap and split: the same dead steps); the empty barriers count every CTA's consumer warps,
// each of which arrives on all of them; cluster barriers at the start and the end.
template <typename T, int TN, int CM>
__global__ void __launch_bounds__(kTmaThreads, 1)
    wgrad_tma_kernel(const WgradParams p, const __grid_constant__ CUtensorMap map_gy,
                     const __grid_constant__ CUtensorMap map_x) {
#if RNNKERN_HAS_WGMMA
  // T = float: the TF32 NCHW form (K-major operands), else 16-bit channels_last (MN-major)
  constexpr bool kNchw = std::is_same_v<T, float>;
  static_assert(kNchw || sizeof(T) == 2, "the TMA grad_weight: TF32 NCHW or 16-bit channels_last");
  static_assert(CM == 1 || (!kNchw && (CM == 2 || CM == 4)), "clusters: 16-bit channels_last, of 2 or 4");
  constexpr int kStages = TmaTile<TN>::kStages, kStageBytes = TmaTile<TN>::kStageBytes;
  constexpr int kBoxBytes = kTmaWgradPixels * 128;  // one box: 64 pixels x 64 channels
  static_assert(kStageBytes == 2 * kBoxBytes + TN / 64 * kBoxBytes, "a stage: gy's two boxes, then x's TN / 64");
  static_assert(BM * 128 == 2 * kBoxBytes, "the TF32 NCHW form's A: 128 output channels x 128 bytes, then B");
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
  extern __shared__ __align__(1024) unsigned char tma_smem_raw[];
  const uint32_t ring = (smem_u32(tma_smem_raw) + 1023) & ~1023u;
  const int tid = threadIdx.x;
  const int g = static_cast<int>(blockIdx.z);
  const int taps = p.KH * p.KW;
  const int t = static_cast<int>(blockIdx.y) % taps, split = static_cast<int>(blockIdx.y) / taps;
  const int tiles_m = (p.Kg + BM - 1) / BM;
  const int m0 = (CM == 1 ? static_cast<int>(blockIdx.x) / p.tiles_n : static_cast<int>(blockIdx.x) % tiles_m) * BM;
  const int n0 = (CM == 1 ? static_cast<int>(blockIdx.x) % p.tiles_n : static_cast<int>(blockIdx.x) / tiles_m) * TN;
  const uint32_t rank = CM > 1 ? cluster_ctarank() : 0;
  const int r = t / p.KW, s = t - r * p.KW;
  const long long P = static_cast<long long>(p.N) * p.OH * p.OW, hw = static_cast<long long>(p.OH) * p.OW;
  const int spr = (p.OW + kTmaWgradRowPixels - 1) / kTmaWgradRowPixels;  // (the TF32 NCHW form's steps a row)
  const long long steps = kNchw ? static_cast<long long>(p.N) * p.OH * spr : (P + kTmaWgradPixels - 1) / kTmaWgradPixels;
  const long long k_begin = steps * split / p.splits, k_end = steps * (split + 1) / p.splits;
  int oh0, oh1, ow0, ow1;
  valid_range_dev(r, p.sh, p.dh, p.pt, p.H, p.OH, &oh0, &oh1);
  valid_range_dev(s, p.sw, p.dw, p.pl, p.W, p.OW, &ow0, &ow1);
  const auto dead = [&](long long k) {
    if constexpr (kNchw) {
      if (oh0 >= oh1 || ow0 >= ow1) return true;  // (the tap reads only padding)
      const TmaWgradRowStep q = tma_wgrad_row_step(k, p.OH, spr);
      return q.ho < oh0 || q.ho >= oh1 || q.wo0 + kTmaWgradRowPixels <= ow0 || q.wo0 >= ow1;
    } else {
      return tma_wgrad_step_dead(k * kTmaWgradPixels, P, p.OH, p.OW, oh0, oh1, ow0, ow1);
    }
  };

  if (tid == 0) {
    for (int st = 0; st < kStages; ++st) {
      mbar_init(smem_u32(&full[st]), 1);
      mbar_init(smem_u32(&empty[st]), 8 * CM);  // one arrival per consumer warp of the cluster
    }
    mbar_init_fence();
    tma_prefetch_map(&map_gy);
    tma_prefetch_map(&map_x);
  }
  if constexpr (CM == 1) __syncthreads();
  else cluster_sync_all();  // (the barriers initialised before another CTA's copies or arrivals reach them)

  float acc[TN / 2];
#pragma unroll
  for (int i = 0; i < TN / 2; ++i) acc[i] = 0.f;
  const int wg = tid / 128, warp = tid / 32 % 4, lane = tid % 32;
  // 16-bit: the boxes whose 64 channels start past the group's Kg / Cg are not loaded (they would
  // land in rows / columns that are never stored, and a box wholly outside the tensor is never
  // issued); the stage's bytes count the others. (The TF32 NCHW form's two boxes start inside.)
  const int a_boxes = kNchw ? 2 : min(2, (p.Kg - m0 + 63) / 64);
  const int b_boxes = kNchw ? TN / 64 : min(TN / 64, (p.Cg - n0 + 63) / 64);
  const uint32_t stage_bytes = static_cast<uint32_t>((a_boxes + b_boxes) * kBoxBytes);
  if (wg == 0) {
    if (tid == 0) {
      int i = 0;  // live k-steps issued
      for (long long k = k_begin; k < k_end; ++k) {
        if (dead(k)) continue;
        const int st = i % kStages;
        if (i >= kStages) mbar_wait<(CM > 1)>(smem_u32(&empty[st]), (i / kStages - 1) & 1);
        const uint32_t bar = smem_u32(&full[st]), a = ring + st * kStageBytes;
        mbar_arrive_expect_tx(bar, stage_bytes);
        if constexpr (kNchw) {
          // gy: columns wo0 ..., row ho, output channels g Kg + m0 ...; x: the tap's shifted columns and
          // row, input channels g Cg + n0 ... (both boxes 128-byte rows, one a channel)
          const TmaWgradRowStep q = tma_wgrad_row_step(k, p.OH, spr);
          tma_load_4d(a, &map_gy, bar, q.wo0, q.ho, g * p.Kg + m0, q.n);
          tma_load_4d(a + BM * 128, &map_x, bar, q.wo0 - p.pl + s * p.dw, q.ho * p.sh - p.pt + r * p.dh, g * p.Cg + n0,
                      q.n);
        } else {
          const long long m = k * kTmaWgradPixels;
          const int n = static_cast<int>(m / hw), rem = static_cast<int>(m - n * hw);
          const int ho = rem / p.OW, wo = rem - ho * p.OW;
          for (int h = 0; h < a_boxes; ++h)  // gy: output channels g Kg + m0 + 64 h ..., pixels m ...
            tma_load_2d(a + h * kBoxBytes, &map_gy, bar, g * p.Kg + m0 + 64 * h, static_cast<int>(m));
          for (int j = 0; j < b_boxes; ++j) {  // x: input channels g Cg + n0 + 64 j ... of the shifted pixels
            const uint32_t dst = a + (2 + j) * kBoxBytes;
            const int c = g * p.Cg + n0 + 64 * j, w = wo * p.sw - p.pl, h = ho * p.sh - p.pt;
            const uint16_t ow = static_cast<uint16_t>(s * p.dw), oh = static_cast<uint16_t>(r * p.dh);
            if constexpr (CM == 1) tma_load_im2col_4d(dst, &map_x, bar, c, w, h, n, ow, oh);
            else if (j % CM == static_cast<int>(rank))  // (into every CTA of the cluster)
              tma_load_im2col_4d_multicast(dst, &map_x, bar, c, w, h, n, ow, oh, static_cast<uint16_t>((1u << CM) - 1));
          }
        }
        ++i;
      }
    }
    __syncwarp();
  } else {
    const int cw = wg - 1;  // output channels m0 + 64 cw ...
    int i = 0;
    for (long long k = k_begin; k < k_end; ++k) {
      if (dead(k)) continue;
      const int st = i % kStages;
      mbar_wait(smem_u32(&full[st]), (i / kStages) & 1);
      __syncwarp();
      // (both forms: A's rows 64 cw ... at cw * 8192, B after A's 128 rows at 16384)
      const uint32_t a = ring + st * kStageBytes + cw * kBoxBytes, b = ring + st * kStageBytes + 2 * kBoxBytes;
      wgmma_pin(acc);
      wgmma_fence();
      if constexpr (kNchw) {
#pragma unroll
        for (int ks = 0; ks < 4; ++ks)  // 8 pixels (32 bytes of the K-major rows) a k8 instruction
          wgmma_m64n<T, TN>(acc, wgmma_desc_sw128(a + ks * 32), wgmma_desc_sw128(b + ks * 32));
      } else {
#pragma unroll
        for (int ks = 0; ks < kTmaWgradPixels / 16; ++ks)  // 16 pixels (two 1024-byte atoms) a k16 instruction
          wgmma_m64n<T, TN, true, true>(acc, wgmma_desc_mn_sw128(a + ks * 2048, kBoxBytes),
                                        wgmma_desc_mn_sw128(b + ks * 2048, kBoxBytes));
      }
      wgmma_commit();
      wgmma_wait<1>();
      wgmma_pin(acc);
      if (i > 0 && lane == 0) {
        const uint32_t released = smem_u32(&empty[(i - 1) % kStages]);
        mbar_arrive(released);
#pragma unroll
        for (uint32_t q = 1; q < CM; ++q) mbar_arrive_cluster(cluster_map(released, (rank + q) % CM));
      }
      ++i;
    }
    wgmma_wait<0>();
    wgmma_pin(acc);
    // this split's partial tile, straight from the accumulators: rows (k) 16 warp + lane / 4 (+ 8),
    // columns (c) 8 j + 2 (lane % 4) (+ 1); Cg is even (launch_wgrad_tma), so a pair is 8-byte
    // aligned and whole or outside
    float* ws = static_cast<float*>(p.ws) +
                ((static_cast<long long>(split) * p.G + g) * taps + t) * static_cast<long long>(p.Kg) * p.Cg;
    const int row0 = m0 + cw * 64 + warp * 16 + lane / 4;
#pragma unroll
    for (int j = 0; j < TN / 8; ++j) {
      const int c = n0 + j * 8 + 2 * (lane % 4);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int kk = row0 + 8 * h;
        if (kk < p.Kg && c < p.Cg)
          *reinterpret_cast<float2*>(ws + static_cast<long long>(kk) * p.Cg + c) =
              make_float2(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
      }
    }
  }
  if constexpr (CM > 1) cluster_sync_all();  // the other CTAs' copies into and arrivals on this CTA are done
#else
  __trap();  // the host launches this form only on sm_90 with an sm_90a build
#endif
}

// A diagnostic of the TMA grad_weight's products alone, without the copies (wgmma_mn_probe_cuda, for
// a test that tells a wrong descriptor from a wrong copy): one warpgroup stores A (64 k x 64 m) and
// B (64 k x TN n) into shared memory as wgrad_tma_kernel's copies leave them (a k row of 64
// elements in 128 bytes, 16-byte chunk j at j ^ (k % 8), TN / 64 boxes of 64 n 8192 bytes apart),
// then runs that kernel's four MN-major wgmma k16 steps on them: d = A^T B (64 x TN, fp32).
template <int TN>
__global__ void wgmma_mn_probe_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, float* d) {
#if RNNKERN_HAS_WGMMA
  constexpr int kBox = kTmaWgradPixels * 128;
  extern __shared__ __align__(1024) unsigned char probe_raw[];
  const uint32_t raw = smem_u32(probe_raw), base = (raw + 1023) & ~1023u;
  unsigned char* const sm = probe_raw + (base - raw);
  const auto at = [](int k, int mn) { return k * 128 + (((mn / 8) ^ (k % 8)) * 16) + mn % 8 * 2; };
  for (int i = threadIdx.x; i < 64 * 64; i += blockDim.x)
    *reinterpret_cast<__nv_bfloat16*>(sm + at(i / 64, i % 64)) = a[i];
  for (int i = threadIdx.x; i < 64 * TN; i += blockDim.x) {
    const int k = i / TN, n = i % TN;
    *reinterpret_cast<__nv_bfloat16*>(sm + (1 + n / 64) * kBox + at(k, n % 64)) = b[i];
  }
  fence_proxy_async_shared();
  __syncthreads();
  float acc[TN / 2];
#pragma unroll
  for (int i = 0; i < TN / 2; ++i) acc[i] = 0.f;
  wgmma_pin(acc);
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < kTmaWgradPixels / 16; ++ks)
    wgmma_m64n<__nv_bfloat16, TN, true, true>(acc, wgmma_desc_mn_sw128(base + ks * 2048, kBox),
                                              wgmma_desc_mn_sw128(base + kBox + ks * 2048, kBox));
  wgmma_commit();
  wgmma_wait<0>();
  wgmma_pin(acc);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < TN / 2; ++i)
    d[(warp * 16 + lane / 4 + 8 * (i / 2 % 2)) * TN + 8 * (i / 4) + 2 * (lane % 4) + i % 2] = acc[i];
#else
  __trap();  // (wgmma_mn_probe_cuda refuses builds without sm_90a)
#endif
}

// grad_weight[(g Kg + k), c, r, s] = sum over splits, in split order, of the partial tiles.
template <typename T>
__global__ void wgrad_reduce_kernel(const typename AccOf<T>::type* ws, T* gw, int splits, int G, int taps, int Kg,
                                    int Cg) {
  const long long total = static_cast<long long>(G) * taps * Kg * Cg;
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  // i enumerates one split's workspace slice (g, tap, k, c) contiguously: the `splits` reads per
  // output are coalesced, the one write per output (to (g * Kg + k, c, tap)) is strided by taps
  const int c = static_cast<int>(i % Cg);
  const long long r = i / Cg;
  const int k = static_cast<int>(r % Kg);
  const long long gt = r / Kg;  // g * taps + tap
  const int tap = static_cast<int>(gt % taps), g = static_cast<int>(gt / taps);
  typename AccOf<T>::type acc = 0;
  for (int sp = 0; sp < splits; ++sp) acc += ws[sp * total + i];
  gw[((static_cast<long long>(g) * Kg + k) * Cg + c) * taps + tap] = from_acc<T>(acc);
}

// ---- direct kernels for tiny channel groups (depthwise and friends) ----------------------------

template <typename T, bool kTrans>
__global__ void gather_direct_kernel(const GatherParams p, bool cl) {
  using Acc = typename AccOf<T>::type;
  const long long total = p.M * p.Co;
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  int co, ho, wo, n;
  if (cl) {
    co = static_cast<int>(i % p.Co);
    long long t = i / p.Co;
    wo = static_cast<int>(t % p.Wo);
    t /= p.Wo;
    ho = static_cast<int>(t % p.Ho);
    n = static_cast<int>(t / p.Ho);
  } else {
    wo = static_cast<int>(i % p.Wo);
    long long t = i / p.Wo;
    ho = static_cast<int>(t % p.Ho);
    t /= p.Ho;
    co = static_cast<int>(t % p.Co);
    n = static_cast<int>(t / p.Co);
  }
  const int g = co / p.Nn, nn = co % p.Nn;
  const T* src = static_cast<const T*>(p.src);
  const T* wt = static_cast<const T*>(p.wt);
  Acc acc = 0;
  // transposed mapping: only the taps that divide for this output position (see trans_taps)
  int r0 = 0, s0 = 0, rstep = 1, sstep = 1, nr = p.KH, ns = p.KW;
  if constexpr (kTrans) {
    nr = trans_taps(ho, p.sh, p.dh, p.pt, p.KH, p.th, &r0);
    ns = trans_taps(wo, p.sw, p.dw, p.pl, p.KW, p.tw, &s0);
    rstep = p.th;
    sstep = p.tw;
  }
  for (int jr = 0; jr < nr; ++jr) {
    const int r = r0 + jr * rstep;
    int hs;
    if (!map_in<kTrans>(ho, r, p.sh, p.dh, p.pt, p.Hs, &hs)) continue;
    for (int js = 0; js < ns; ++js) {
      const int s = s0 + js * sstep;
      int ws;
      if (!map_in<kTrans>(wo, s, p.sw, p.dw, p.pl, p.Ws, &ws)) continue;
      const T* wrow = wt + ((static_cast<long long>(g) * p.KH * p.KW + r * p.KW + s) * p.R) * p.Nn + nn;
      for (int c = 0; c < p.R; ++c) {
        const int cs = g * p.R + c;
        const long long o = cl ? ((static_cast<long long>(n) * p.Hs + hs) * p.Ws + ws) * p.Cs + cs
                               : ((static_cast<long long>(n) * p.Cs + cs) * p.Hs + hs) * p.Ws + ws;
        acc += to_acc(src[o]) * to_acc(wrow[static_cast<long long>(c) * p.Nn]);
      }
    }
  }
  if (p.bias != nullptr) acc += to_acc(static_cast<const T*>(p.bias)[co]);
  static_cast<T*>(p.out)[i] = from_acc<T>(acc);
}

// One block per grad_weight element (K, Cg, taps order); fixed-order tree reduction.
template <typename T>
__global__ void wgrad_direct_kernel(const WgradParams p, T* gw, bool cl) {
  using Acc = typename AccOf<T>::type;
  __shared__ Acc red[kThreads];
  const long long i = blockIdx.x;
  const int taps = p.KH * p.KW;
  const int tap = static_cast<int>(i % taps);
  const long long kc = i / taps;
  const int c = static_cast<int>(kc % p.Cg);
  const int kg = static_cast<int>(kc / p.Cg);  // global output channel
  const int g = kg / p.Kg, ci = g * p.Cg + c;
  const int r = tap / p.KW, s = tap % p.KW;
  int oh0, oh1, ow0, ow1;
  valid_range_dev(r, p.sh, p.dh, p.pt, p.H, p.OH, &oh0, &oh1);
  valid_range_dev(s, p.sw, p.dw, p.pl, p.W, p.OW, &ow0, &ow1);
  const int vh = oh1 - oh0, vw = ow1 - ow0;
  const long long P_all = static_cast<long long>(p.N) * vh * vw;
  const T* gy = static_cast<const T*>(p.gy);
  const T* x = static_cast<const T*>(p.x);
  Acc acc = 0;
  for (long long q = threadIdx.x; q < P_all; q += kThreads) {
    const long long per = static_cast<long long>(vh) * vw;
    const int n = static_cast<int>(q / per), rem = static_cast<int>(q % per);
    const int oh = oh0 + rem / vw, ow = ow0 + rem % vw;
    const int ih = oh * p.sh - p.pt + r * p.dh, iw = ow * p.sw - p.pl + s * p.dw;
    const long long og = cl ? ((static_cast<long long>(n) * p.OH + oh) * p.OW + ow) * p.K + kg
                            : ((static_cast<long long>(n) * p.K + kg) * p.OH + oh) * p.OW + ow;
    const long long ox = cl ? ((static_cast<long long>(n) * p.H + ih) * p.W + iw) * p.C + ci
                            : ((static_cast<long long>(n) * p.C + ci) * p.H + ih) * p.W + iw;
    acc += to_acc(gy[og]) * to_acc(x[ox]);
  }
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) gw[i] = from_acc<T>(red[0]);
}

// ---- host side -------------------------------------------------------------------------------

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

bool allow_tf32() { return cudnn_tf32_allowed(CudnnOp::kConv); }

// RNNKERN_CONV_MMA (read per call): the tensor-core form. mma: mma.sync + ldmatrix; wgmma:
// Hopper's warpgroup MMA where it runs (sm_90 with an sm_90a build, on the cp.async ring): the
// forward / grad_input gather kernel for fp32 in any layout and 16-bit channels_last, the
// grad_weight for fp32 NCHW and 16-bit channels_last (tf32 wgmma has no transposed operands for
// fp32 channels_last), on 128- or 64-column tiles (wgmma_tile_n); the rest stays on mma.sync.
// Unset (kAuto): what measured faster on an H200 (bench/results/h200-20261127-s18.json): wgmma for
// the gather kernel on 128-column tiles (> 64 output channels) except fp32 channels_last (TF32
// NCHW and bf16 channels_last forward / grad_input 1.01-1.13x; fp32 channels_last 0.92-0.97x, and
// 64-column tiles 0.76-0.91x), mma.sync for the grad_weight (wgmma 0.85-0.95x).
// Unset, 16-bit forward / grad_input gathers also take gather_tma_kernel where tma_wanted says.
// tma: the forward and grad_input gathers on gather_tma_kernel where they fit (tma_plan), for every
// tensor-core dtype, and the grad_weight on wgrad_tma_kernel where launch_wgrad_tma takes it;
// everything else as unset.
enum class MmaForm { kAuto, kMma, kWgmma, kTma };
MmaForm conv_mma_form() {
  const char* e = std::getenv("RNNKERN_CONV_MMA");
  if (e == nullptr || *e == '\0') return MmaForm::kAuto;
  const std::string v(e);
  if (v == "mma") return MmaForm::kMma;
  if (v == "wgmma") return MmaForm::kWgmma;
  if (v == "tma") return MmaForm::kTma;
  TORCH_CHECK(false, "RNNKERN_CONV_MMA must be 'mma', 'wgmma' or 'tma', got '", v, "'");
}

// Shared stages of the cp.async pipeline: tf32 3 x 27 KB, 16-bit 4 x 15 KB (two blocks an SM).
template <typename T> constexpr int kPipelineStages = sizeof(T) == 4 ? 3 : 4;
// The wgmma form's ring: one stage more, held by the k-step whose wgmma is still running
// (kWgmmaInFlight), at the same copy distance. fp32 4 x 24 KB, 16-bit 5 x 12 KB.
template <typename T> constexpr int kWgmmaStages = kPipelineStages<T> + kWgmmaInFlight;

// The gather and grad-weight kernels' mma.sync paths fill a ring of shared stages with cp.async
// (kStages > 1) instead of one stage behind a register prefetch, on sm_80+, where the loads allow
// it: fp32 any layout (4- or 16-byte copies), 16-bit channels_last with 16-byte channel runs
// (16-bit NCHW would need 2-byte copies, which cp.async does not have). On by default: on an H200
// it was faster on all twelve benchmark rows (by 0.1-26%) (bench/NOTES.md, seventh session). The
// pixel-shuffled epilogue (`shuffled`: the transposed convolution's sub-pixel forward) has not
// run pipelined on a GPU, so there only RNNKERN_CONV_PIPELINE=1 turns it on; =0 turns it off
// everywhere (read per call).
// vec_a / vec_b: the kernel's A / B loads are 16-byte runs (the flags of its Params).
bool use_pipeline(size_t elem_size, bool cl, bool vec_a, bool vec_b, bool shuffled) {
  return env_switch("RNNKERN_CONV_PIPELINE", "0", "1", /*unset=*/!shuffled) &&
         at::cuda::getCurrentDeviceProperties()->major >= 8 && (elem_size == 4 || (cl && vec_a && vec_b));
}

// Calls fn(std::integral_constant<Path, P>{}) with T's compute path: fp64 on SIMT, fp32 on tf32
// tensor cores when torch allows TF32 for convolutions (else true-fp32 SIMT), 16-bit types on
// tensor cores. Only the paths T can take are instantiated. The tensor-core paths (mma.sync with
// tf32 / bf16 operands) need sm_80: before it fp32 runs in true fp32 (TF32 does not exist there,
// cuDNN's flag has no effect either) and 16-bit types are a clear error, not a trap in the kernel.
template <typename T, typename Fn>
void with_path(Fn&& fn) {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const bool tensor_cores = prop->major >= 8;
  if constexpr (std::is_same_v<T, double>) {
    fn(std::integral_constant<Path, Path::kSimt>{});
  } else if constexpr (std::is_same_v<T, float>) {
    if (!allow_tf32() || !tensor_cores) fn(std::integral_constant<Path, Path::kSimt>{});
    else fn(std::integral_constant<Path, Path::kTf32>{});
  } else {
    TORCH_CHECK(tensor_cores, "rnnkern: CUDA convolutions in float16 / bfloat16 need an sm_80 or newer GPU, this one is "
                "sm_", prop->major, prop->minor, " (float32 and float64 run there)");
    fn(std::integral_constant<Path, Path::k16>{});
  }
}

// A pipelined kernel (kStages > 1) with `bytes` of dynamic shared memory beside its static
// tables: above the default 48 KB a kernel must opt in first. The cap is raised once per device
// and kernel to all the GPU allows (not to this call's size, which a call on another host thread
// could lower between the set and the launch); a size past it is a clear error, not a failed launch.
template <typename Kernel, typename Params>
void launch_with_dynamic_smem(Kernel kernel, dim3 grid, int bytes, cudaStream_t stream, const Params& p) {
  const int cap = allow_full_shared_memory(kernel);
  TORCH_CHECK(bytes <= cap, "rnnkern: a convolution kernel needs ", bytes, " bytes of dynamic shared memory beside "
              "its static tables; this GPU allows ", cap, " (RNNKERN_CONV_PIPELINE=0 runs the single-stage kernel)");
  kernel<<<grid, kThreads, bytes, stream>>>(p);
}

// Taps per group of the ring forms' k order (GatherParams::tap_group): kTapGroup on wgmma, whose
// floor is the gathered operand's L2 traffic (bench/NOTES.md), 1 (tap by tap) on mma.sync until a
// GPU has compared them; RNNKERN_CONV_TAP_GROUP=1..9 (read per call) forces one.
int tap_group_for(bool wgmma) {
  const char* e = std::getenv("RNNKERN_CONV_TAP_GROUP");
  if (e == nullptr || *e == '\0') return wgmma ? kTapGroup : 1;
  const std::string v(e);
  TORCH_CHECK(v.size() == 1 && v[0] >= '1' && v[0] <= '0' + kTapGroup,
              "RNNKERN_CONV_TAP_GROUP must be an integer from 1 to ", kTapGroup, ", got '", v, "'");
  return v[0] - '0';
}

// gather_conv_kernel with kPipelineStages<T> cp.async stages (use_pipeline chose it); 16-bit
// runs only channels_last, so only those variants are instantiated for it.
template <typename T, Path P>
void launch_gather_pipelined(GatherParams p, bool cl, bool trans, dim3 grid, cudaStream_t stream) {
  constexpr int S = kPipelineStages<T>;
  check_ring_runs<T>(p);
  p.tap_group = tap_group_for(false);
  const auto run = [&](auto kernel, int bytes) { launch_with_dynamic_smem(kernel, grid, bytes, stream, p); };
  if (cl) {
    const int bytes = GatherTiles<T, P, true>::bytes(S) + ring_table_bytes(p.tap_group);
    if (trans) run(gather_conv_kernel<T, P, true, true, S>, bytes);
    else run(gather_conv_kernel<T, P, true, false, S>, bytes);
  } else if constexpr (sizeof(T) == 4) {
    const int bytes = GatherTiles<T, P, false>::bytes(S) + ring_table_bytes(p.tap_group);
    if (trans) run(gather_conv_kernel<T, P, false, true, S>, bytes);
    else run(gather_conv_kernel<T, P, false, false, S>, bytes);
  } else {
    TORCH_INTERNAL_ASSERT(false, "16-bit NCHW has no pipelined gather kernel");
  }
}

// The wgmma form (RNNKERN_CONV_MMA, conv_mma_form) where it can run: an sm_90a build on an sm_90
// device, and the cp.async ring's loads (fp32 any layout; 16-bit channels_last with 16-byte runs
// of the input's channels and of the K-major weight's rows, vec_bk). `gather`: the forward /
// grad_input kernel with `columns` output channels a group (else the grad_weight), which decide
// the unset form. Like the ring it runs on (use_pipeline), RNNKERN_CONV_PIPELINE=0 turns it off and
// the pixel-shuffled epilogue (`shuffled`) takes it only with RNNKERN_CONV_PIPELINE=1.
bool use_wgmma(size_t elem_size, bool cl, bool vec_a, bool vec_bk, bool shuffled, bool gather, int64_t columns) {
#ifdef RNNKERN_WITH_SM90A
  const MmaForm form = conv_mma_form();
  const bool wanted = form == MmaForm::kWgmma || ((form == MmaForm::kAuto || form == MmaForm::kTma) && gather &&
                                                   columns > 64 && !(elem_size == 4 && cl));
  return wanted && use_pipeline(elem_size, cl, vec_a, vec_bk, shuffled) &&
         at::cuda::getCurrentDeviceProperties()->major == 9;
#else
  (void)elem_size, (void)cl, (void)vec_a, (void)vec_bk, (void)shuffled, (void)gather, (void)columns;
  return false;
#endif
}

// The columns of the wgmma form's block tiles for `n` of them (the gather's output channels, the
// 16-bit channels_last grad_weight's input channels). 128 where n > 64: each pixel tile, the large
// operand, feeds twice the channels of the mma.sync form's 64, so it crosses L2 half as often (bf16
// d1 256 -> 256: 906 -> 604 MB a forward), one wgmma.m64n128 a warpgroup and k-step; 64 for 64
// channels or fewer, which half of a 128-column tile would multiply as zeros.
// RNNKERN_CONV_WGMMA_N=64|128 (read per call) forces one.
int wgmma_tile_n(int64_t n) {
  const char* e = std::getenv("RNNKERN_CONV_WGMMA_N");
  if (e == nullptr || *e == '\0') return n > 64 ? 128 : 64;
  const std::string v(e);
  TORCH_CHECK(v == "64" || v == "128", "RNNKERN_CONV_WGMMA_N must be '64' or '128', got '", v, "'");
  return v == "128" ? 128 : 64;
}

// gather_conv_kernel's wgmma form on BM x TN tiles, kWgmmaStages<T> stages; p.wt is the weight
// K-major (G, taps, Nn, R) and p.vec_b says its rows run in 16-byte copies.
template <typename T, Path P, int TN>
void launch_gather_wgmma_tn(const GatherParams& p, bool cl, bool trans, dim3 grid, cudaStream_t stream) {
  constexpr int S = kWgmmaStages<T>;
  check_ring_runs<T>(p);
  const int bytes = WgmmaTiles<T, P, TN>::bytes(S) + ring_table_bytes(p.tap_group);
  const auto run = [&](auto kernel) { launch_with_dynamic_smem(kernel, grid, bytes, stream, p); };
  if (cl) {
    if (trans) run(gather_conv_kernel<T, P, true, true, S, true, TN>);
    else run(gather_conv_kernel<T, P, true, false, S, true, TN>);
  } else if constexpr (sizeof(T) == 4) {
    if (trans) run(gather_conv_kernel<T, P, false, true, S, true, TN>);
    else run(gather_conv_kernel<T, P, false, false, S, true, TN>);
  } else {
    TORCH_INTERNAL_ASSERT(false, "16-bit NCHW has no wgmma gather kernel");
  }
}

// grid_for(columns): the launch grid for block tiles of that many columns.
template <typename T, Path P, typename GridFor>
void launch_gather_wgmma(GatherParams p, bool cl, bool trans, GridFor&& grid_for, cudaStream_t stream) {
  p.tap_group = tap_group_for(true);
  if (wgmma_tile_n(p.Nn) == 128) launch_gather_wgmma_tn<T, P, 128>(p, cl, trans, grid_for(128), stream);
  else launch_gather_wgmma_tn<T, P, 64>(p, cl, trans, grid_for(64), stream);
}

// ---- the TMA form's host side -------------------------------------------------------------------
// cuTensorMapEncodeIm2col / Tiled are driver API functions; they are reached through the runtime's
// driver entry points, so the extension does not link libcuda itself (torch does not either).
using EncodeIm2colFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                    const cuuint64_t*, const int*, const int*, cuuint32_t, cuuint32_t,
                                    const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                    CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The driver's `name`, or nullptr where this driver / runtime cannot give it (the TMA form then
// steps aside: launch_gather_tma_tn). cudaGetDriverEntryPointByVersion is CUDA 12.5's; before it,
// the unversioned query (deprecated since, removed in 13).
template <typename Fn>
Fn driver_function(const char* name) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
  const cudaError_t err = cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &found);
#else
  const cudaError_t err = cudaGetDriverEntryPoint(name, &fn, cudaEnableDefault, &found);
#endif
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // (a failed query is an answer, not an error for later calls to see)
    return nullptr;
  }
  return found == cudaDriverEntryPointSuccess ? reinterpret_cast<Fn>(fn) : nullptr;
}

struct TensorMapEncoders {
  EncodeIm2colFn im2col = nullptr;
  EncodeTiledFn tiled = nullptr;
};
// Looked up once per process; both null where the driver lacks them.
const TensorMapEncoders& tensor_map_encoders() {
  static const TensorMapEncoders e{driver_function<EncodeIm2colFn>("cuTensorMapEncodeIm2col"),
                                   driver_function<EncodeTiledFn>("cuTensorMapEncodeTiled")};
  return e;
}

template <typename T>
CUtensorMapDataType tensor_map_type() {
  if constexpr (std::is_same_v<T, float>) return CU_TENSOR_MAP_DATA_TYPE_FLOAT32;  // full bits: tf32 uses the top 19
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  else return CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
}

// The im2col map's bounding box of base pixels, along one axis: from -pad (lower corner) to
// in - 1 + upper = (out - 1) stride - pad, the last output's base pixel, so that the traversal (at
// the map's traversal stride, wrapping to the next row at the lower corner) visits exactly `out`
// positions (the far side's padding follows from the output size, which covers padding='same' with
// an even kernel extent).
struct Im2colCorners {
  int lower, upper;
};
Im2colCorners im2col_corners(int in, int out, int pad, int stride) {
  return {-pad, (out - 1) * stride - pad - (in - 1)};
}

// The forward mapping's pixel enumeration (GatherParams::tile_w, Mt): 8 x 16 pixel tiles where a
// tap can read only padding for a whole 16-column tile (the padding or the reach on the other side
// is >= 16 columns; 3x3 'same' at d >= 16): at 32x32 d=18 a block then visits 4 of the 9 taps
// instead of 6 (a BM-pixel row-order tile spans every column, so no tap is skipped along W); row
// order otherwise.
void set_pixel_tiles(GatherParams& p) {
  constexpr int kTileW = 16;
  p.tile_w = 0;
  p.Mt = p.M;
  const int reach_w = std::max(p.pl, p.dw * (p.KW - 1) - p.pl);
  if (reach_w >= kTileW && p.Wo >= 2 * kTileW && p.Ho >= BM / kTileW) {
    p.tile_w = kTileW;
    p.tiles_h = (p.Ho + BM / kTileW - 1) / (BM / kTileW);
    p.tiles_w = (p.Wo + kTileW - 1) / kTileW;
    p.Mt = static_cast<long long>(p.N) * p.tiles_h * p.tiles_w * BM;
  }
}

// The TMA kernel runs stride-1 forward problems. A gather is one or several of them, each with the
// kernel taps it visits (rows, cols: the weight's tap indices in the problem's tap order):
// - the forward: itself, all taps;
// - the transposed mapping (grad_input, a transposed convolution's forward), stride phase by stride
//   phase as the gather kernel enumerates them: output row ho = hq s + ph is reached by the taps
//   r = r0 + j th (j < nr, th = s / gcd(s, d): trans_taps) through source row
//   (ho + p - r d) / s = hq + c0 - j e, with c0 = (ph + p - r0 d) / s and e = th d / s (= lcm(s, d) / s,
//   an integer). With the taps flipped, j' = nr - 1 - j, that is hq - p' + j' e: a stride-1 forward
//   over the phase's (Hph = ceil((Ho - ph) / s)) x (Wpw) pixels with nr x ns taps of dilation e and
//   padding p' = (nr - 1) e - c0, its outputs scattered to (hq s + ph, wq s + pw). At stride 1 it is
//   one problem: all taps flipped, padding d (k - 1) - p. Phases with no pixel are left out.
// The taps of one axis a problem visits: first, first + step, ... (count of them), in reverse order
// where `flipped`.
struct TapRange {
  int first = 0, step = 1, count = 0;
  bool flipped = false;
};
struct TmaProblem {
  GatherParams p;
  TapRange rows, cols;
};

// One axis of a transposed mapping's phase: the problem's taps, dilation and padding; false where
// the phase has no tap (its pixels would need the bias alone).
bool phase_axis(int phase, int stride, int dil, int pad, int k, TapRange* taps, int* e, int* pad_out) {
  taps->step = stride / std::gcd(stride, dil);
  taps->count = trans_taps(phase, stride, dil, pad, k, taps->step, &taps->first);
  taps->flipped = true;
  if (taps->count == 0) return false;
  const int c0 = (phase + pad - taps->first * dil) / stride;  // (exact: the phase's taps divide)
  *e = taps->step * dil / stride;
  *pad_out = (taps->count - 1) * *e - c0;
  return true;
}

std::vector<TmaProblem> tma_problems(const GatherParams& q, bool trans) {
  std::vector<TmaProblem> out;
  TmaProblem base{q, {0, 1, q.KH, false}, {0, 1, q.KW, false}};
  base.p.oy_step = base.p.ox_step = 1;
  base.p.oy0 = base.p.ox0 = 0;
  base.p.out_h = q.Ho;
  base.p.out_w = q.Wo;
  if (!trans) {
    out.push_back(base);
    return out;
  }
  for (int ph = 0; ph < std::min(q.sh, q.Ho); ++ph) {
    for (int pw = 0; pw < std::min(q.sw, q.Wo); ++pw) {
      TmaProblem t = base;
      GatherParams& p = t.p;
      if (!phase_axis(ph, q.sh, q.dh, q.pt, q.KH, &t.rows, &p.dh, &p.pt) ||
          !phase_axis(pw, q.sw, q.dw, q.pl, q.KW, &t.cols, &p.dw, &p.pl))
        return {};  // a phase whose pixels no tap reaches: the gather kernel writes them (bias or 0)
      p.KH = t.rows.count;
      p.KW = t.cols.count;
      p.sh = p.sw = 1;
      p.Ho = (q.Ho - ph + q.sh - 1) / q.sh;
      p.Wo = (q.Wo - pw + q.sw - 1) / q.sw;
      p.M = static_cast<long long>(q.N) * p.Ho * p.Wo;
      p.oy_step = q.sh;
      p.ox_step = q.sw;
      p.oy0 = ph;
      p.ox0 = pw;
      set_pixel_tiles(p);
      out.push_back(t);
    }
  }
  return out;
}

// Where gather_tma_kernel runs (RNNKERN_CONV_MMA=tma asks for it; sm_90 with an sm_90a build):
// channels_last gathers without pixel shuffle on tensor cores, forwards of stride <= 8 (the map's
// traversal stride) and the transposed mapping at any stride (through its phases: tma_problems),
// where every problem meets the map's limits: 16-byte row strides (C, R multiples of 16 bytes), a
// 16-byte aligned source, G == 1 or R % BK == 0, at most kTmaMaxTaps taps, corners within a rank-4
// map's [-128, 127] and im2col offsets (the taps' dilated positions) within its [0, 255]. (A phase's
// padding may be negative: its base pixels then start inside the source, a positive lower corner.)
// tma_wanted: the form asked for, on an sm_90 device with an sm_90a build; tma_plan: the call's
// problems where its shape fits, none where it does not.
// Unset (kAuto), 16-bit gathers take it where each pixel row brings whole 128-byte chunks (R >= BK)
// and the output channels fill more than half a 128-column tile (Nn > 64): on an H200
// (bench/results/h200-20261128-s20.json, bf16 channels_last N8 256 -> 256 64x64 d1-d18, ASPP
// 2048 -> 256 32x32 d6-d18, bf16 NCHW d1, the transposed k4s2) it ran the forward 1.09-2.03x and
// grad_input 1.36-1.98x faster than the wgmma gather, and its test passed in bf16 and fp16. TF32
// stays opt-in (=tma) until its test passes on a GPU (the run stopped on a wrong launch count,
// after six right results); RNNKERN_CONV_PIPELINE=0 turns the unset form's use off, as the ring's.
bool tma_wanted(size_t elem_size, const GatherParams& p) {
#ifdef RNNKERN_WITH_SM90A
  const MmaForm form = conv_mma_form();
  const bool by_default = form == MmaForm::kAuto && elem_size == 2 && p.R >= static_cast<int>(128 / elem_size) &&
                          p.Nn > 64 && env_switch("RNNKERN_CONV_PIPELINE", "0", "1", /*unset=*/true);
  return (form == MmaForm::kTma || by_default) && at::cuda::getCurrentDeviceProperties()->major == 9;
#else
  (void)elem_size, (void)p;
  return false;
#endif
}

std::vector<TmaProblem> tma_plan(const GatherParams& q, size_t elem_size, bool cl, bool trans) {
  // (a traversal stride is at most 8)
  if (!cl || q.ps > 1 || (!trans && (q.sh > 8 || q.sw > 8))) return {};
  const int V = static_cast<int>(16 / elem_size), BK = static_cast<int>(128 / elem_size);
  if (q.Cs % V != 0 || q.R % V != 0 || !aligned16(q.src) || (q.G > 1 && q.R % BK != 0)) return {};
  std::vector<TmaProblem> problems = tma_problems(q, trans);
  for (const TmaProblem& t : problems) {
    const GatherParams& p = t.p;
    if (p.KH * p.KW > kTmaMaxTaps || int64_t{p.dh} * (p.KH - 1) > 255 || int64_t{p.dw} * (p.KW - 1) > 255) return {};
    for (const Im2colCorners c : {im2col_corners(p.Hs, p.Ho, p.pt, p.sh), im2col_corners(p.Ws, p.Wo, p.pl, p.sw)})
      if (c.lower < -128 || c.lower > 127 || c.upper < -128 || c.upper > 127) return {};
    // (grid.x, rounded up to whole clusters of up to 4 CTAs, within 2^31 - 1)
    if ((p.Mt + BM - 1) / BM >= (int64_t{1} << 31) - 4 || (p.Nn + 127) / 128 > 65535 || p.G > 65535) return {};
  }
  return problems;
}

// RNNKERN_CONV_TMA_N=128|256 (read per call): the TMA forms' tile columns forced; 0 when unset.
int tma_tile_n_forced() {
  const char* e = std::getenv("RNNKERN_CONV_TMA_N");
  if (e == nullptr || *e == '\0') return 0;
  const std::string v(e);
  TORCH_CHECK(v == "128" || v == "256", "RNNKERN_CONV_TMA_N must be '128' or '256', got '", v, "'");
  return v == "256" ? 256 : 128;
}
// The TMA gather's tile columns, as forced, else 256 where every problem has 256 output channels or
// more and its 256-column grid still gives each SM a tile, else 128. A 256-column tile reads each
// pixel tile from L2 half as often: on an H200 (h200-20261128-s20.json) bf16 N8 256 -> 256 64x64 d1
// (256 tiles) ran the forward and grad_input 1.33x and 1.30x faster than at 128 columns, TF32 1.01x
// and 1.05x; the ASPP's d18 2048 -> 256 at 32x32 (64 tiles on 132 SMs) 0.98x and 1.03x, a tie.
int tma_tile_n(const std::vector<TmaProblem>& plan) {
  if (const int forced = tma_tile_n_forced()) return forced;
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  for (const TmaProblem& t : plan) {
    const int64_t tiles = (t.p.Mt + BM - 1) / BM * ((t.p.Nn + 255) / 256) * t.p.G;
    if (t.p.Nn < 256 || tiles < sms) return 128;
  }
  return 256;
}

// RNNKERN_CONV_TMA_CLUSTER=1|2|4 (read per call): the TMA forms' CTAs in clusters of 2 or 4 sharing
// an operand (gather_tma_kernel's CM: the weight tile; wgrad_tma_kernel's, 16-bit: the input's
// boxes), or alone (1, the default: the clusters have not run on a GPU yet).
int tma_cluster() {
  check_env_choice("RNNKERN_CONV_TMA_CLUSTER", {"1", "2", "4"});
  const char* e = std::getenv("RNNKERN_CONV_TMA_CLUSTER");
  return e == nullptr || *e == '\0' ? 1 : std::atoi(e);
}
// f(std::integral_constant<int, CM>{}) for CM = cm, one of tma_cluster's sizes.
template <typename F>
decltype(auto) with_cluster_size(int cm, F&& f) {
  if (cm == 4) return f(std::integral_constant<int, 4>{});
  if (cm == 2) return f(std::integral_constant<int, 2>{});
  return f(std::integral_constant<int, 1>{});
}

// RNNKERN_CONV_TMA_BATCH=0|1 (read per call): a call's problems (the stride phases) up to
// kTmaBatch a launch (1), or one a launch (0, the default until the batched launches have run on a GPU).
bool tma_batch() { return env_switch("RNNKERN_CONV_TMA_BATCH", "0", "1", /*unset=*/false); }

// RNNKERN_CONV_TMA_WEIGHT=copy|inplace (read per call): whether a channels_last-contiguous weight
// (G == 1) is read in place by the forward's map (prepare_tma_launch) or copied (the default until
// the in-place map has run on a GPU).
bool tma_weight_in_place() { return env_switch("RNNKERN_CONV_TMA_WEIGHT", "copy", "inplace", /*unset=*/false); }

// One problem of tma_problems made ready to launch: its weight's K-major copy (kept alive until the
// launch; freed stream-ordered after it) and both tensor maps.
struct TmaLaunch {
  GatherParams p;
  at::Tensor wt_k;
  CUtensorMap map_x, map_w;  // (CUtensorMap is declared 64-byte aligned or more, as the encoders want)
};

// The weight's taps for a call's problems: w, the weight as (G, KH, KW, R, Nn), and where some
// problem visits its taps backwards (the transposed mapping) w flipped along both tap axes, made
// once a call (not once a stride phase and axis).
struct TmaWeight {
  at::Tensor w, flipped;
};
TmaWeight tma_weight(const at::Tensor& w, const std::vector<TmaProblem>& problems) {
  const bool any_flipped = std::any_of(problems.begin(), problems.end(), [](const TmaProblem& t) { return t.rows.flipped; });
  return {w, any_flipped ? w.flip({1, 2}) : at::Tensor()};
}

// Encodes a problem's maps (channels_last src, tma_plan said yes); false where an encoder refuses
// them (nothing is launched then: the caller falls back). The weight's box is the TN / CM rows one
// CTA of a cluster loads.
template <typename T, int TN, int CM>
bool prepare_tma_launch(const TmaProblem& t, const TmaWeight& w, TmaLaunch* l, const void* packed = nullptr,
                        bool weight_in_place = false) {
  constexpr cuuint32_t E = sizeof(T), BK = 128 / E;
  const TensorMapEncoders& enc = tensor_map_encoders();
  GatherParams& p = l->p;
  p = t.p;
  // The weight's map: over (G, taps, Nn, R), a fresh K-major copy of the problem's taps in its order
  // (a backward range last, last - step, ..., first is the forward range from K - 1 - last in the
  // flipped weight; `packed`: the copy the call's pack made), or over the weight itself.
  TORCH_INTERNAL_ASSERT(t.rows.flipped == t.cols.flipped &&
                        (packed != nullptr || !t.rows.flipped || w.flipped.defined()));
  const at::Tensor& v = t.rows.flipped && packed == nullptr ? w.flipped : w.w;
  const auto taps = [](const at::Tensor& u, int64_t dim, const TapRange& r) {
    const int64_t span = int64_t{r.count - 1} * r.step, start = r.flipped ? u.size(dim) - 1 - (r.first + span) : r.first;
    return u.slice(dim, start, start + span + 1, r.step);
  };
  // A forward over all taps of a channels_last-contiguous weight with G == 1 (a channels_last
  // model's parameters) is (taps, Nn, R) with R contiguous already: the map reads it in place, taps
  // R elements apart and output channels taps * R apart (RNNKERN_CONV_TMA_WEIGHT=inplace; opt-in
  // until a GPU has run it). Otherwise, and where the encoder refuses those strides, the copy. (The
  // strides do not ascend with the dimensions; the driver documents only their 16-byte multiples
  // and 2^40 bound, and CuTe's TMA descriptors, e.g. FlashAttention-3's (seqlen, d, head) operands,
  // pass it such maps.)
  const int64_t R = p.R, KHW = int64_t{p.KH} * p.KW;
  const bool full = !t.rows.flipped && t.rows.first == 0 && t.rows.step == 1 && t.rows.count == v.size(1) &&
                    t.cols.first == 0 && t.cols.step == 1 && t.cols.count == v.size(2);
  const int64_t cl_strides[5] = {0, p.KW * R, R, 1, KHW * R};  // (G, KH, KW, R, Nn); size-1 dims: any
  bool in_place = weight_in_place && full && v.size(0) == 1 && aligned16(v.data_ptr());
  for (int d = 1; d < 5 && in_place; ++d) in_place = v.size(d) == 1 || v.stride(d) == cl_strides[d];
  const auto encode_w = [&](const void* base, cuuint64_t n_stride, cuuint64_t tap_stride) {
    const cuuint64_t dims[3] = {cuuint64_t(p.R), cuuint64_t(p.Nn), cuuint64_t(p.G) * KHW};
    const cuuint64_t strides[2] = {n_stride * E, tap_stride * E};
    const cuuint32_t box[3] = {BK, TN / CM, 1}, element_strides[3] = {1, 1, 1};
    return enc.tiled(&l->map_w, tensor_map_type<T>(), 3, const_cast<void*>(base), dims, strides, box, element_strides,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
  };
  if (packed != nullptr) {
    p.wt = packed;
    if (!encode_w(p.wt, R, int64_t{p.Nn} * R)) return false;
  } else if (in_place && encode_w(v.data_ptr(), KHW * R, R)) {
    p.wt = v.data_ptr();
  } else {
    l->wt_k = taps(taps(v, 1, t.rows), 2, t.cols).transpose(-1, -2).clone(at::MemoryFormat::Contiguous);
    p.wt = l->wt_k.data_ptr();
    if (!encode_w(p.wt, R, int64_t{p.Nn} * R)) return false;
  }
  {
    const cuuint64_t dims[4] = {cuuint64_t(p.Cs), cuuint64_t(p.Ws), cuuint64_t(p.Hs), cuuint64_t(p.N)};
    const cuuint64_t strides[3] = {p.Cs * E, cuuint64_t(p.Ws) * p.Cs * E, cuuint64_t(p.Hs) * p.Ws * p.Cs * E};
    const Im2colCorners ch = im2col_corners(p.Hs, p.Ho, p.pt, p.sh), cw = im2col_corners(p.Ws, p.Wo, p.pl, p.sw);
    const int lower[2] = {cw.lower, ch.lower}, upper[2] = {cw.upper, ch.upper};  // (W, H)
    const cuuint32_t element_strides[4] = {1, cuuint32_t(p.sw), cuuint32_t(p.sh), 1};  // the traversal strides
    const CUresult r = enc.im2col(&l->map_x, tensor_map_type<T>(), 4, const_cast<void*>(p.src), dims, strides, lower,
                                  upper, BK, p.tile_w > 0 ? p.tile_w : BM, element_strides,
                                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                  CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) return false;
  }
  return true;
}

// Every problem's K-major weight copy from one tma_weight_pack_kernel (w: the callers'
// (G, KH, KW, R, Nn) view); the pack tensor, and each problem's copy in it in *parts. Empty (nothing
// launched) for more problems than one pack takes.
template <typename T>
at::Tensor tma_weight_pack(const std::vector<TmaProblem>& problems, const at::Tensor& w, cudaStream_t stream,
                           std::vector<const void*>* parts) {
  if (problems.empty() || problems.size() > static_cast<size_t>(kTmaPackParts)) return {};
  TmaPack k{};
  k.src = w.data_ptr();
  k.s_g = w.stride(0), k.s_kh = w.stride(1), k.s_kw = w.stride(2), k.s_r = w.stride(3), k.s_n = w.stride(4);
  k.R = problems[0].p.R;
  k.Nn = problems[0].p.Nn;
  k.count = static_cast<int>(problems.size());
  long long total = 0;
  std::vector<long long> begin;
  for (size_t i = 0; i < problems.size(); ++i) {
    const TmaProblem& t = problems[i];
    TORCH_INTERNAL_ASSERT(t.p.R == k.R && t.p.Nn == k.Nn && t.rows.flipped == t.cols.flipped);
    begin.push_back(total);
    total += w.size(0) * t.rows.count * t.cols.count * static_cast<long long>(k.Nn) * k.R;
    k.part[i] = {total, t.rows.first, t.rows.step, t.rows.count,
                 t.cols.first, t.cols.step, t.cols.count, t.rows.flipped};
  }
  at::Tensor pack = at::empty({total}, w.options());
  k.out = pack.data_ptr();
  const int threads = 256;
  const long long blocks = std::min<long long>((total + threads - 1) / threads, 65535);
  tma_weight_pack_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(k);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  parts->clear();
  for (long long b : begin) parts->push_back(static_cast<const char*>(k.out) + b * static_cast<long long>(sizeof(T)));
  return pack;
}

// A launch of `kernel` in clusters of CM CTAs along x (grid.x a multiple of CM); plain <<<>>> for 1.
// False where the runtime refuses the cluster launch's configuration (cleared: e.g. a partitioned
// GPU whose GPCs hold fewer CTAs than clusters_fit's query promised), so that the caller can fall
// back; any other error is raised (clear_refusal).
template <int CM, typename Kernel, typename... Args>
[[nodiscard]] bool launch_in_clusters(Kernel kernel, dim3 grid, int threads, int smem, cudaStream_t stream,
                                      const Args&... args) {
  if constexpr (CM == 1) {
    kernel<<<grid, threads, smem, stream>>>(args...);
  } else {
    ClusterLaunch launch(grid, CM, smem, threads, stream);
    const cudaError_t err = cudaLaunchKernelEx(&launch.config, kernel, args...);
    if (err != cudaSuccess) {
      clear_refusal(err);
      return false;
    }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

// Whether clusters of CM CTAs of `kernel` (kTmaThreads, smem bytes each) fit this GPU at all: asked
// of the runtime once a kernel instance, size and device (cached_query: locked, per device).
template <int CM, typename Kernel>
bool clusters_fit(Kernel kernel, int smem) {
  if constexpr (CM == 1) {
    return true;
  } else {
    const size_t bytes = static_cast<size_t>(smem);
    return cached_query({QueryKind::kResidentClusters, kernel_id(kernel), kTmaThreads, CM, CM, bytes}, [&] {
             ClusterLaunch probe(dim3(CM), CM, bytes, kTmaThreads);
             int clusters = 0;
             const cudaError_t err = cudaOccupancyMaxActiveClusters(&clusters, kernel, &probe.config);
             return refused_as_zero(err, clusters);
           }) > 0;
  }
}

// gather_tma_kernel on every problem of a call's tma_plan, at the tile width tma_tile_n picks, in
// clusters of CM; false, with nothing launched (but, batched, the weight pack), where the driver's
// encoders are missing, an encoder refuses a map, the GPU's shared memory is too small or no
// cluster fits (RNNKERN_DEBUG=1 says which): the caller then runs the gather kernel, as for any call
// tma_plan refuses.
template <typename T, int TN, int CM>
bool launch_gather_tma_tn(const std::vector<TmaProblem>& problems, const at::Tensor& w, cudaStream_t stream) {
  const auto refuse = [](const char* why) {
    if (debug_log_enabled()) std::fprintf(stderr, "rnnkern: conv2d: TMA form not taken (%s): gather kernel\n", why);
    return false;
  };
  const TensorMapEncoders& enc = tensor_map_encoders();
  if (enc.im2col == nullptr || enc.tiled == nullptr) return refuse("no tensor-map encoders in this driver");
  const auto kernel = gather_tma_kernel<T, TN, CM>;
  constexpr int bytes = TmaTile<TN>::kSmemBytes;
  if (bytes > allow_full_shared_memory(kernel)) return refuse("too little shared memory");
  if (!clusters_fit<CM>(kernel, bytes)) return refuse("no room for a cluster of its CTAs");
  std::vector<TmaLaunch> launches(problems.size());
  // Batched (tma_batch), a call's several problems (the stride phases) take their weight copies from
  // one pack kernel (no flip, slices or clones: for a k4 s2 transposed forward, 1 kernel where there
  // were 5) and run up to kTmaBatch a launch; else each its own copy and launch.
  const bool batched = tma_batch(), weight_in_place = tma_weight_in_place();  // (read once a call)
  std::vector<const void*> parts;
  const at::Tensor pack =
      batched && problems.size() > 1 ? tma_weight_pack<T>(problems, w, stream, &parts) : at::Tensor();
  const TmaWeight taps = pack.defined() ? TmaWeight{w, at::Tensor()} : tma_weight(w, problems);
  for (size_t i = 0; i < problems.size(); ++i)
    if (!prepare_tma_launch<T, TN, CM>(problems[i], taps, &launches[i], pack.defined() ? parts[i] : nullptr,
                                       weight_in_place))
      return refuse("a tensor-map encoder refused");
  // kTmaBatch problems a launch, while their blocks stay within grid.x's 2^31 - 1 (the phases of one
  // call share G and Nn, so grid.y and z). A stride phase's kernel is short (a k4 s2 phase: 4 of 16
  // taps), so the four of stride 2 in one launch overlap each other's prologue and tail, and the
  // call pays one launch's host time instead of four.
  const size_t per_launch = batched ? kTmaBatch : 1;
  for (size_t first = 0; first < launches.size();) {
    TmaBatch batch{};
    long long blocks = 0;
    size_t i = first;
    for (; i < launches.size() && i - first < per_launch; ++i) {
      const TmaLaunch& l = launches[i];
      const long long tiles = (l.p.Mt + BM - 1) / BM, mine = (tiles + CM - 1) / CM * CM;
      if (i > first && blocks + mine > std::numeric_limits<int>::max()) break;
      TORCH_INTERNAL_ASSERT(l.p.G == launches[first].p.G && l.p.Nn == launches[first].p.Nn);
      blocks += mine;
      batch.map_x[i - first] = l.map_x;
      batch.map_w[i - first] = l.map_w;
      batch.p[i - first] = l.p;
      batch.block_end[i - first] = static_cast<int>(blocks);
    }
    batch.count = static_cast<int>(i - first);
    const GatherParams& p = launches[first].p;
    const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>((p.Nn + TN - 1) / TN),
                    static_cast<unsigned>(p.G));
    if (!launch_in_clusters<CM>(kernel, grid, kTmaThreads, bytes, stream, batch)) {
      // (nothing of this call launched yet but the weight pack: the gather kernel runs it)
      TORCH_CHECK(first == 0, "conv2d: a cluster launch of the TMA form was refused after an earlier one ran");
      return refuse("the runtime refused the cluster launch");
    }
    first = i;
  }
  return true;
}

template <typename T>
bool launch_gather_tma(const std::vector<TmaProblem>& plan, const at::Tensor& w, cudaStream_t stream) {
  TORCH_INTERNAL_ASSERT(w.dim() == 5, "launch_gather_tma: the weight as (G, KH, KW, R, Nn)");
  const int cm = tma_cluster();
  const auto launch = [&](auto tn) {
    return with_cluster_size(cm, [&](auto cm_c) {
      return launch_gather_tma_tn<T, decltype(tn)::value, decltype(cm_c)::value>(plan, w, stream);
    });
  };
  return tma_tile_n(plan) == 256 ? launch(std::integral_constant<int, 256>{})
                                 : launch(std::integral_constant<int, 128>{});
}

// The one place that picks the kernel and its launch configuration for the gather family.
// w: the weight as (G, taps, R, Nn), any strides (the callers' permuted view), copied here once in
// the layout of the kernel that runs: (G, taps, R, Nn) contiguous, or K-major (G, taps, Nn, R) for
// the wgmma form. Sets p.wt and p.vec_b.
template <typename T>
void launch_gather(GatherParams p, const at::Tensor& w, bool cl, bool trans, int64_t elem_size) {
  auto stream = at::cuda::getCurrentCUDAStream();
  if (p.M == 0) return;
  const int V = static_cast<int>(16 / elem_size);
  // Tiles of 128 pixels x 64 (or 128) channels x 32 reduction channels: groups narrower than 8
  // channels on either side would leave the tiles mostly empty.
  if (p.R < 8 || p.Nn < 8) {
    TORCH_INTERNAL_ASSERT(p.ps <= 1, "the direct kernel has no pixel-shuffled output (conv2d_forward_shuffled_cuda needs >= 8 channels per group)");
    const at::Tensor wt = w.contiguous();  // freed stream-ordered after the launch
    p.wt = wt.data_ptr();
    const long long total = p.M * p.Co;
    const int blocks = static_cast<int>((total + kThreads - 1) / kThreads);
    if (trans) gather_direct_kernel<T, true><<<blocks, kThreads, 0, stream>>>(p, cl);
    else gather_direct_kernel<T, false><<<blocks, kThreads, 0, stream>>>(p, cl);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  // channels_last A loads: V channels at once when every pixel's channel run starts aligned
  p.vec_a = cl && p.Cs % V == 0 && p.R % V == 0 && aligned16(p.src);
  // the grid for tiles of `columns` output channels (BN but for the wgmma form's); the transposed
  // mapping puts the stride phases of one pixel tile in neighbouring x blocks, see GatherParams::Mt
  const auto grid_for = [&](int columns) {
    const long long gx = (p.Mt + BM - 1) / BM * (trans ? static_cast<long long>(p.sh) * p.sw : 1);
    const long long gy = (p.Nn + columns - 1) / columns;
    TORCH_CHECK(gx < (int64_t{1} << 31) && gy <= 65535 && p.G <= 65535,
                "conv2d: too many pixels x stride phases, channels or groups for one launch");
    return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(p.G));
  };
  with_path<T>([&](auto path) {
    constexpr Path P = decltype(path)::value;
    if constexpr (P != Path::kSimt) {
      if (tma_wanted(sizeof(T), p)) {
        const std::vector<TmaProblem> plan = tma_plan(p, sizeof(T), cl, trans);
        if (!plan.empty() && launch_gather_tma<T>(plan, w, stream)) return;
      }
      const bool vec_bk = p.R % V == 0;  // K-major weight rows of R elements (a fresh tensor: aligned)
      if (use_wgmma(sizeof(T), cl, p.vec_a, vec_bk, p.ps > 1, /*gather=*/true, p.Nn)) {
        // (G, taps, Nn, R), always a fresh copy (contiguous() could hand back the caller's storage at
        // any offset, e.g. for 1x1 kernels); freed stream-ordered
        const at::Tensor wt_k = w.transpose(-1, -2).clone(at::MemoryFormat::Contiguous);
        p.wt = wt_k.data_ptr();
        p.vec_b = vec_bk;
        launch_gather_wgmma<T, P>(p, cl, trans, grid_for, stream);
        return;
      }
    }
    const at::Tensor wt = w.contiguous();  // (G, taps, R, Nn); freed stream-ordered
    p.wt = wt.data_ptr();
    p.vec_b = p.Nn % V == 0 && aligned16(p.wt);
    const dim3 grid = grid_for(BN);
    if constexpr (P != Path::kSimt) {
      if (use_pipeline(sizeof(T), cl, p.vec_a, p.vec_b, p.ps > 1)) {
        launch_gather_pipelined<T, P>(p, cl, trans, grid, stream);
        return;
      }
    }
    if (cl) {
      if (trans) gather_conv_kernel<T, P, true, true><<<grid, kThreads, 0, stream>>>(p);
      else gather_conv_kernel<T, P, true, false><<<grid, kThreads, 0, stream>>>(p);
    } else {
      if (trans) gather_conv_kernel<T, P, false, true><<<grid, kThreads, 0, stream>>>(p);
      else gather_conv_kernel<T, P, false, false><<<grid, kThreads, 0, stream>>>(p);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The split of a grad_weight's k-steps (grid.y = taps x splits): about `ctas` CTAs over the `base`
// tiles, at least ~8 k-steps a split, grid.y within 65535 (taps <= 65535 already).
int64_t wgrad_splits(int64_t base, int64_t steps, int taps, int64_t ctas) {
  int64_t splits = std::max<int64_t>(1, (ctas + base - 1) / base);
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, steps / 8));
  return std::min<int64_t>(splits, std::max<int64_t>(1, 65535 / taps));
}

// The grad_weight on wgrad_tma_kernel: asked for with RNNKERN_CONV_MMA=tma (opt-in: not yet run on a
// GPU), on an sm_90 device with an sm_90a build, for 16-bit channels_last operands or (with TF32
// allowed for convolutions) fp32 NCHW ones at unit column stride and output widths a multiple of
// 32, within the maps' limits (16-byte
// rows and base addresses; 16-bit: traversal strides <= 8, the rank-4 im2col map's corners in
// [-128, 127] and offsets in [0, 255]; TF32 NCHW: the box coordinates' extremes in 32 bits) and with
// an even number of input
// channels a group (the epilogue's float2 stores). Encodes both maps, sizes the split over the
// k-steps and launches it, then wgrad_reduce_kernel; false, with nothing launched, where it does
// not run (the caller runs wgrad_kernel; RNNKERN_DEBUG=1 says why once the form was asked for).
// Tiles of 128 output x TN input channels, TN = RNNKERN_CONV_TMA_N, unset 256 where a group has
// >= 256 input channels, else 128.
template <typename T>
bool launch_wgrad_tma(WgradParams p, bool cl, T* gw, const at::TensorOptions& opts, cudaStream_t stream) {
#ifdef RNNKERN_WITH_SM90A
  constexpr bool kNchw = std::is_same_v<T, float>;  // (the TF32 NCHW form; else 16-bit channels_last)
  if constexpr (!kNchw && sizeof(T) != 2) {
    return false;
  } else {
    if (conv_mma_form() != MmaForm::kTma || cl == kNchw || at::cuda::getCurrentDeviceProperties()->major != 9 ||
        (kNchw && !allow_tf32()))
      return false;
    const auto refuse = [](const char* why) {
      if (debug_log_enabled())
        std::fprintf(stderr, "rnnkern: conv2d_backward_weight: TMA form not taken (%s): wgrad kernel\n", why);
      return false;
    };
    constexpr cuuint32_t E = sizeof(T);
    const int taps = p.KH * p.KW;
    const long long P = static_cast<long long>(p.N) * p.OH * p.OW;
    if (p.Cg % 2 != 0) return refuse("odd input channels a group");
    if (!aligned16(p.gy) || !aligned16(p.x) || (kNchw ? p.W % 4 != 0 || p.OW % kTmaWgradRowPixels != 0
                                                      : p.K % 8 != 0 || p.C % 8 != 0))
      return refuse(kNchw ? "rows not 16-byte or widths not whole 32-column blocks" : "rows not 16-byte");
    const Im2colCorners ch = im2col_corners(p.H, p.OH, p.pt, p.sh), cw = im2col_corners(p.W, p.OW, p.pl, p.sw);
    // (the TF32 NCHW form's box coordinates, ho sh - pt + r dh and wo0 - pl + s dw, in 32 bits)
    const auto coordinate_fits = [](int64_t out, int64_t stride, int64_t pad, int64_t k, int64_t dil) {
      return (out - 1) * stride + (k - 1) * dil + kTmaWgradRowPixels <= std::numeric_limits<int>::max() &&
             pad <= std::numeric_limits<int>::max() / 2;
    };
    const bool maps_fit =
        kNchw ? p.sw == 1 && coordinate_fits(p.OH, p.sh, p.pt, p.KH, p.dh) && coordinate_fits(p.OW, 1, p.pl, p.KW, p.dw)
              : p.sh <= 8 && p.sw <= 8 && int64_t{p.dh} * (p.KH - 1) <= 255 && int64_t{p.dw} * (p.KW - 1) <= 255 &&
                    std::min({ch.lower, ch.upper, cw.lower, cw.upper}) >= -128 &&
                    std::max({ch.lower, ch.upper, cw.lower, cw.upper}) <= 127;
    if (!maps_fit || P >= (int64_t{1} << 31) || p.G > 65535) return refuse("outside the maps' limits");
    const TensorMapEncoders& enc = tensor_map_encoders();
    if (enc.im2col == nullptr || enc.tiled == nullptr) return refuse("no tensor-map encoders in this driver");
    const int forced = tma_tile_n_forced();
    const int tn = forced != 0 ? forced : p.Cg >= 256 ? 256 : 128;
    // clusters (tma_cluster; the 16-bit form) over whole groups of m tiles: of the size asked where
    // the m tiles divide into them, else of 2 where they do, else none
    const int tiles_m = (p.Kg + BM - 1) / BM, asked = kNchw ? 1 : tma_cluster();
    const int cm = tiles_m % asked == 0 ? asked : asked > 1 && tiles_m % 2 == 0 ? 2 : 1;
    alignas(64) CUtensorMap map_gy, map_x;
    const auto encoded = [](CUresult r) { return r == CUDA_SUCCESS; };
    bool ok;
    if constexpr (kNchw) {
      // both (W, H, C, N), boxes of 32 columns (128 bytes) x 1 row x 128 output / TN input channels
      const cuuint64_t gy_dims[4] = {cuuint64_t(p.OW), cuuint64_t(p.OH), cuuint64_t(p.K), cuuint64_t(p.N)};
      const cuuint64_t gy_strides[3] = {cuuint64_t(p.OW) * E, cuuint64_t(p.OH) * p.OW * E,
                                        cuuint64_t(p.K) * p.OH * p.OW * E};
      const cuuint64_t x_dims[4] = {cuuint64_t(p.W), cuuint64_t(p.H), cuuint64_t(p.C), cuuint64_t(p.N)};
      const cuuint64_t x_strides[3] = {cuuint64_t(p.W) * E, cuuint64_t(p.H) * p.W * E, cuuint64_t(p.C) * p.H * p.W * E};
      const cuuint32_t gy_box[4] = {kTmaWgradRowPixels, 1, BM, 1}, x_box[4] = {kTmaWgradRowPixels, 1, cuuint32_t(tn), 1};
      const cuuint32_t ones[4] = {1, 1, 1, 1};
      ok = encoded(enc.tiled(&map_gy, tensor_map_type<T>(), 4, const_cast<void*>(p.gy), gy_dims, gy_strides, gy_box,
                             ones, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                             CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)) &&
           encoded(enc.tiled(&map_x, tensor_map_type<T>(), 4, const_cast<void*>(p.x), x_dims, x_strides, x_box, ones,
                             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                             CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
    } else {
      constexpr cuuint32_t BOX = 64;  // 64 channels (128 bytes) x 64 pixels a box
      // gy as (K, pixels); x through the forward's im2col map
      const cuuint64_t gy_dims[2] = {cuuint64_t(p.K), cuuint64_t(P)};
      const cuuint64_t gy_strides[1] = {cuuint64_t(p.K) * E};
      const cuuint32_t gy_box[2] = {BOX, BOX}, ones[2] = {1, 1};
      const cuuint64_t x_dims[4] = {cuuint64_t(p.C), cuuint64_t(p.W), cuuint64_t(p.H), cuuint64_t(p.N)};
      const cuuint64_t x_strides[3] = {cuuint64_t(p.C) * E, cuuint64_t(p.W) * p.C * E, cuuint64_t(p.H) * p.W * p.C * E};
      const int lower[2] = {cw.lower, ch.lower}, upper[2] = {cw.upper, ch.upper};  // (W, H)
      const cuuint32_t element_strides[4] = {1, cuuint32_t(p.sw), cuuint32_t(p.sh), 1};
      ok = encoded(enc.tiled(&map_gy, tensor_map_type<T>(), 2, const_cast<void*>(p.gy), gy_dims, gy_strides, gy_box,
                             ones, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                             CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)) &&
           encoded(enc.im2col(&map_x, tensor_map_type<T>(), 4, const_cast<void*>(p.x), x_dims, x_strides, lower, upper,
                              BOX, BOX, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
    }
    if (!ok) return refuse("a tensor-map encoder refused");
    // split over the k-steps: about two CTAs an SM (one fits), at least 8 k-steps a split
    p.tiles_n = (p.Cg + tn - 1) / tn;
    const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
    const int64_t base = static_cast<int64_t>(tiles_m) * p.tiles_n * taps * p.G;
    const int64_t steps = kNchw ? int64_t{p.N} * p.OH * ((p.OW + kTmaWgradRowPixels - 1) / kTmaWgradRowPixels)
                                : (P + kTmaWgradPixels - 1) / kTmaWgradPixels;
    const int64_t splits = wgrad_splits(base, steps, taps, 2 * sms);
    p.splits = static_cast<int>(splits);
    const int64_t outputs = static_cast<int64_t>(p.G) * p.Kg * p.Cg * taps;
    at::Tensor ws = at::empty({splits * outputs}, opts.dtype(at::kFloat));  // (splits, G, taps, Kg, Cg)
    p.ws = ws.data_ptr();
    const dim3 grid(static_cast<unsigned>(tiles_m * p.tiles_n), static_cast<unsigned>(taps * splits),
                    static_cast<unsigned>(p.G));
    const auto run = [&](auto tn_c, auto cm_c) {
      constexpr int TN = decltype(tn_c)::value, CM = decltype(cm_c)::value;
      const auto kernel = wgrad_tma_kernel<T, TN, CM>;
      constexpr int bytes = TmaTile<TN>::kSmemBytes;
      if (bytes > allow_full_shared_memory(kernel) || !clusters_fit<CM>(kernel, bytes)) return false;
      return launch_in_clusters<CM>(kernel, grid, kTmaThreads, bytes, stream, p, map_gy, map_x);
    };
    using N128 = std::integral_constant<int, 128>;
    using N256 = std::integral_constant<int, 256>;
    bool launched;
    if constexpr (kNchw) {
      using One = std::integral_constant<int, 1>;
      launched = tn == 256 ? run(N256{}, One{}) : run(N128{}, One{});
    } else {
      const auto run_cm = [&](auto tn_c) {
        return with_cluster_size(cm, [&](auto cm_c) { return run(tn_c, cm_c); });
      };
      launched = tn == 256 ? run_cm(N256{}) : run_cm(N128{});
    }
    if (!launched) return refuse("too little shared memory, or no room for (or a refused launch of) a cluster");
    const int blocks = static_cast<int>((outputs + kThreads - 1) / kThreads);
    wgrad_reduce_kernel<T><<<blocks, kThreads, 0, stream>>>(static_cast<const float*>(p.ws), gw, p.splits, p.G, taps,
                                                           p.Kg, p.Cg);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  }
#else
  (void)p, (void)cl, (void)gw, (void)opts, (void)stream;
  return false;
#endif
}

template <typename T>
void launch_wgrad(WgradParams p, bool cl, int64_t elem_size, T* gw, const at::TensorOptions& opts) {
  auto stream = at::cuda::getCurrentCUDAStream();
  const int taps = p.KH * p.KW;
  const int64_t outputs = static_cast<int64_t>(p.G) * p.Kg * p.Cg * taps;
  // grid.y holds taps x splits (grid.x one block per weight in the direct kernel): limits of one launch
  TORCH_CHECK(taps <= 65535 && outputs < (int64_t{1} << 31), "conv2d_backward_weight: weight of ", outputs,
              " elements with a ", p.KH, "x", p.KW, " kernel exceeds one launch (at most 65535 taps)");
  if (p.Kg < 8 || p.Cg < 8) {
    wgrad_direct_kernel<T><<<static_cast<unsigned>(outputs), kThreads, 0, stream>>>(p, gw, cl);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  if (launch_wgrad_tma<T>(p, cl, gw, opts, stream)) return;
  const int V = static_cast<int>(16 / elem_size);
  p.vec_a = cl && p.K % V == 0 && p.Kg % V == 0 && aligned16(p.gy);
  p.vec_b = cl && p.C % V == 0 && p.Cg % V == 0 && aligned16(p.x);
  // the wgmma form requested and its ring able to run (with_path below gives 16-bit types Path::k16
  // whenever the form is wgmma); taken by fp32 NCHW and 16-bit channels_last (fp32 channels_last
  // stays on mma.sync: tf32 wgmma has no transposed operands), the latter with wgmma_tile_n's width.
  // The ring is asked once: the grid below is sized for the kernel it picks (the environment is
  // read per call, and a second read could pick a kernel of other tile widths than the grid's).
  const bool ring = use_pipeline(elem_size, cl, p.vec_a, p.vec_b, false);
  const bool wgmma = ring && use_wgmma(elem_size, cl, p.vec_a, p.vec_b, false, /*gather=*/false, p.Cg);
  const bool wgmma_cl16 = elem_size == 2 && wgmma;
  const int tn = wgmma_cl16 ? wgmma_tile_n(p.Cg) : BN;
  const int tiles_m = (p.Kg + BM - 1) / BM;
  p.tiles_n = (p.Cg + tn - 1) / tn;
  // Split-K over the pixels: enough blocks for ~4 per SM, at least ~8 k-steps per split.
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t base = static_cast<int64_t>(tiles_m) * p.tiles_n * taps * p.G;
  const int64_t steps = (static_cast<int64_t>(p.N) * p.OH * p.OW + 31) / 32;
  const int64_t splits = wgrad_splits(base, steps, taps, 4 * sms);
  p.splits = static_cast<int>(splits);
  using Acc = typename AccOf<T>::type;
  at::Tensor ws = at::empty({splits * outputs}, opts.dtype(std::is_same_v<Acc, double> ? at::kDouble : at::kFloat));
  p.ws = ws.data_ptr();
  const dim3 grid(static_cast<unsigned>(tiles_m * p.tiles_n), static_cast<unsigned>(taps * splits),
                  static_cast<unsigned>(p.G));
  TORCH_CHECK(grid.z <= 65535, "conv2d_backward_weight: too many groups for one launch");
  with_path<T>([&](auto path) {
    constexpr Path P = decltype(path)::value;
    if constexpr (P != Path::kSimt) {
      if (ring) {
        constexpr int S = kPipelineStages<T>;
        check_ring_runs<T>(p);
        const auto run = [&](auto kernel, int bytes) { launch_with_dynamic_smem(kernel, grid, bytes, stream, p); };
        if (cl) {
          // 16-bit channels_last: both operands MN-major, wgmma's transposed form (RNNKERN_CONV_MMA=wgmma)
          if constexpr (sizeof(T) == 2) {
            if (wgmma_cl16) {
              constexpr int SW = kWgmmaStages<T>;
              if (tn == 128) run(wgrad_kernel<T, P, true, SW, true, 128>, WgmmaTiles<T, P, 128>::bytes(SW));
              else run(wgrad_kernel<T, P, true, SW, true, 64>, WgmmaTiles<T, P, 64>::bytes(SW));
              return;
            }
          }
          run(wgrad_kernel<T, P, true, S>, WgradTiles<T, P, true>::bytes(S));
        } else if constexpr (sizeof(T) == 4) {
          // fp32 NCHW: both operands K-major, so the wgmma form can take it (RNNKERN_CONV_MMA=wgmma)
          if (wgmma)
            run(wgrad_kernel<T, P, false, kWgmmaStages<T>, true>, WgmmaTiles<T, P>::bytes(kWgmmaStages<T>));
          else
            run(wgrad_kernel<T, P, false, S>, WgradTiles<T, P, false>::bytes(S));
        }
        return;
      }
    }
    if (cl) wgrad_kernel<T, P, true><<<grid, kThreads, 0, stream>>>(p);
    else wgrad_kernel<T, P, false><<<grid, kThreads, 0, stream>>>(p);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int blocks = static_cast<int>((outputs + kThreads - 1) / kThreads);
  wgrad_reduce_kernel<T><<<blocks, kThreads, 0, stream>>>(static_cast<const Acc*>(p.ws), gw, p.splits, p.G, taps,
                                                         p.Kg, p.Cg);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

int to_int(int64_t v, const char* what) {
  TORCH_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(), "conv2d: ", what, " too large (", v, ")");
  return static_cast<int>(v);
}

// The kernels hold an input position o * s - p + k * d on the padded input and a tap's offset
// r * KW + s in ints.
void check_int_spans(const ConvGeometry& g) {
  to_int(g.H + g.pt + g.pb, "padded input height");
  to_int(g.W + g.pl + g.pr, "padded input width");
  to_int(g.KH * g.KW, "kernel (height x width)");
}

void check_cuda(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, ": expected a CUDA tensor");
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16, op,
              ": CUDA kernels support float32, float64, float16 and bfloat16, got ", st);
}

GatherParams gather_params(const ConvGeometry& g, bool trans) {
  GatherParams p{};
  // forward: source x (N, C, H, W) -> y (N, K, OH, OW), reduce over Cg, produce Kg per group.
  // grad_input: source gy (N, K, OH, OW) -> gx (N, C, H, W), reduce over Kg, produce Cg.
  p.N = to_int(g.N, "batch");
  p.Cs = to_int(trans ? g.K : g.C, "channels");
  p.Hs = to_int(trans ? g.OH : g.H, "height");
  p.Ws = to_int(trans ? g.OW : g.W, "width");
  p.Co = to_int(trans ? g.C : g.K, "channels");
  p.Ho = to_int(trans ? g.H : g.OH, "height");
  p.Wo = to_int(trans ? g.W : g.OW, "width");
  p.G = to_int(g.G, "groups");
  p.R = to_int(trans ? g.Kg() : g.Cg(), "channels");
  p.Nn = to_int(trans ? g.Cg() : g.Kg(), "channels");
  p.KH = to_int(g.KH, "kernel");
  p.KW = to_int(g.KW, "kernel");
  p.sh = to_int(g.sh, "stride");
  p.sw = to_int(g.sw, "stride");
  p.dh = to_int(g.dh, "dilation");
  p.dw = to_int(g.dw, "dilation");
  p.pt = to_int(g.pt, "padding");
  p.pl = to_int(g.pl, "padding");
  // (the kernels hold a pixel's position within its image in an int)
  to_int(int64_t{p.Ho} * p.Wo, "image (height x width)");
  check_int_spans(g);
  p.M = static_cast<long long>(g.N) * p.Ho * p.Wo;
  if (trans) {  // phase-major pixel enumeration (GatherParams::Mt)
    // (the stride phases' sizes, (Ho - phase + s - 1) / s, are computed in ints here and in tma_problems)
    to_int(int64_t{p.Ho} + p.sh, "height + stride");
    to_int(int64_t{p.Wo} + p.sw, "width + stride");
    p.Hq = (p.Ho + p.sh - 1) / p.sh;
    p.Wq = (p.Wo + p.sw - 1) / p.sw;
    p.th = p.sh / std::gcd(p.sh, p.dh);
    p.tw = p.sw / std::gcd(p.sw, p.dw);
    p.Mt = static_cast<long long>(g.N) * p.Hq * p.Wq;
  } else {
    p.Hq = p.Ho;
    p.Wq = p.Wo;
    p.th = p.tw = 1;
    set_pixel_tiles(p);
  }
  return p;
}

at::MemoryFormat fmt(bool cl) { return cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous; }

// t dense in the kernels' layout: channels_last when `cl` (from dense NCHW through
// layout_copy.cuh's transpose, where RNNKERN_CONV_LAYOUT_COPY=kernel), else NCHW.
at::Tensor dense_in(const at::Tensor& t, bool cl) { return cl ? layout_cuda::to_channels_last(t) : t.contiguous(); }

// conv_gemm.h's products on cuBLAS, fp32 in TF32 exactly where the engine would use it.
struct CublasConvGemm {
  bool tf32 = allow_tf32();
  void operator()(at::Tensor& C, const at::Tensor& A, const at::Tensor& B, float beta) const {
    cublas_gemm(C, A, B, beta, tf32);
  }
};

// GEMM-shaped convolutions go to cuBLAS unless RNNKERN_CONV_GEMM=0, where its 32-bit sizes hold
// every matrix.
bool gemm_sizes_fit(int64_t pixels, int64_t entries, int64_t channels) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  return pixels <= kMax && entries <= kMax && channels <= kMax;
}
bool gemm_route(const ConvGeometry& g) {
  return conv2d_takes_gemm(g, /*default_on=*/true) && gemm_sizes_fit(g.N * g.OH * g.OW, g.C * g.KH * g.KW, g.K);
}

}  // namespace

namespace {
// RNNKERN_CONV_NCHW=transpose|native (read per call): NCHW tensors run on the engine's
// channels_last kernels, through channels_last copies of the operands and of the result. The
// default for 16-bit types: on an H200 (bench/results/h200-20261127-s18.json, bf16 N8 256->256
// 64x64) it ran the forward, grad_input and grad_weight 1.27x, 1.28x and 1.72x faster than the
// NCHW kernels; TF32 stays native (0.94-1.14x, mixed). The NCHW tiles gather A an element at a
// time (fp32: 4-byte cp.async, 16 of them a thread a k-step; 16-bit: no cp.async at all, so no
// ring; wgmma's tf32 operands must be K-major), the channels_last tiles in 16-byte runs along the
// channels; the copies cost a read and a write of the input and of the output (N8 256->256 64x64 fp32: 4 x 33.5 MB, ~40 us on an H200).
// Only where the tiles run on tensor cores (tf32, 16-bit; >= 8 channels a group on both sides, else
// direct kernels run): true fp32 and fp64 gather element by element either way. Covers the
// transposed convolution too (its gather forward here; its gradients are conv2d's forward and
// grad_weight). =native: the NCHW kernels.
bool nchw_via_channels_last(bool cl, at::ScalarType dtype, const ConvGeometry& g) {
  if (cl || g.Cg() < 8 || g.Kg() < 8) return false;
  const bool half = dtype == at::kHalf || dtype == at::kBFloat16;
  const bool tensor_cores = half || (dtype == at::kFloat && allow_tf32());
  return tensor_cores && env_switch("RNNKERN_CONV_NCHW", "native", "transpose", /*unset=*/half);
}

// The forward on the engine into y (N, K, OH, OW), or with shuffle > 1 into the pixel-shuffled
// y (N, K / shuffle^2, OH * shuffle, OW * shuffle) (GatherParams::ps); y is contiguous in the
// layout `cl` says, which the input is made contiguous in.
void conv2d_forward_into(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         const ConvGeometry& g, int64_t shuffle, bool cl, at::Tensor& y) {
  const at::Tensor x = dense_in(input, cl);
  // (G, taps, Cg, Kg): B(tap, c; k) rows along the output channels (launch_gather copies it)
  const at::Tensor wt = weight.reshape({g.G, g.Kg(), g.Cg(), g.KH, g.KW}).permute({0, 3, 4, 2, 1});
  const at::Tensor b = bias ? bias->contiguous() : at::Tensor();
  GatherParams p = gather_params(g, false);
  if (shuffle > 1) {
    p.ps = static_cast<int>(shuffle);
    p.tile_w = 0;  // the shuffled offsets assume row order
    p.Mt = p.M;
  }
  p.src = x.data_ptr();
  p.bias = bias ? b.data_ptr() : nullptr;
  p.out = y.data_ptr();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "conv2d_forward_cuda", [&] {
    launch_gather<typename NativeOf<scalar_t>::type>(p, wt, cl, false, sizeof(scalar_t));
  });
}
}  // namespace

std::tuple<at::Tensor, int64_t, int64_t> conv2d_tma_stage_probe_cuda(const at::Tensor& input, const at::Tensor& weight,
                                                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                                                     at::IntArrayRef dilation, int64_t groups,
                                                                     int64_t block_x, int64_t block_y, int64_t group,
                                                                     int64_t tap, int64_t c0, int64_t tile_n,
                                                                     int64_t cluster) {
  constexpr const char* op = "conv2d_tma_stage_probe";
#ifdef RNNKERN_WITH_SM90A
  check_cuda(op, input);
  check_conv_tensors(op, input, "input", weight, "weight");
  TORCH_CHECK(at::cuda::getCurrentDeviceProperties()->major == 9, op, ": needs an sm_90 GPU");
  TORCH_CHECK(tile_n == 128 || tile_n == 256, op, ": tile_n must be 128 or 256");
  TORCH_CHECK(cluster == 1 || cluster == 2 || cluster == 4, op, ": cluster must be 1, 2 or 4");
  const ConvGeometry g = check_conv_args(op, input.sizes(), weight.sizes(), stride, padding, dilation, groups);
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor wt = weight.reshape({g.G, g.Kg(), g.Cg(), g.KH, g.KW}).permute({0, 3, 4, 2, 1});
  GatherParams p = gather_params(g, false);
  p.src = x.data_ptr();
  at::Tensor out;
  int64_t tile_w = 0, tiles_w = 0;
  const auto probe = [&](auto zero) {
    using T = decltype(zero);
    const std::vector<TmaProblem> plan = tma_plan(p, sizeof(T), true, false);
    TORCH_CHECK(!plan.empty(), op, ": this convolution is outside the TMA form's scope");
    const TmaProblem& problem = plan[0];
    TORCH_CHECK(block_x >= 0 && block_x < (problem.p.Mt + BM - 1) / BM && block_y >= 0 &&
                    block_y < (problem.p.Nn + tile_n - 1) / tile_n && group >= 0 && group < g.G && tap >= 0 &&
                    tap < g.KH * g.KW && c0 >= 0 && c0 < g.Cg(),
                op, ": block, group, tap or channel out of range");
    const auto run = [&](auto tn, auto cm) {
      constexpr int TN = decltype(tn)::value, CM = decltype(cm)::value;
      TmaLaunch l;
      const bool encoded =
          tensor_map_encoders().im2col != nullptr && prepare_tma_launch<T, TN, CM>(problem, tma_weight(wt, plan), &l);
      TORCH_CHECK(encoded, op, ": the tensor maps could not be encoded");
      out = at::empty({CM * TmaTile<TN>::kStageBytes}, input.options().dtype(at::kByte));
      const auto kernel = tma_stage_probe_kernel<TN, CM>;
      constexpr int smem = TmaTile<TN>::kStageBytes + 1024;
      allow_full_shared_memory(kernel);
      const bool launched = launch_in_clusters<CM>(
          kernel, dim3(CM), 128, smem, at::cuda::getCurrentCUDAStream(), l.p, l.map_x, l.map_w,
          static_cast<int>(block_x), static_cast<int>(block_y), static_cast<int>(group), static_cast<int>(tap),
          static_cast<int>(c0), out.data_ptr<uint8_t>());
      TORCH_CHECK(launched, op, ": the runtime refused a cluster of ", CM, " CTAs");
      tile_w = l.p.tile_w;
      tiles_w = l.p.tiles_w;
    };
    const auto run_cm = [&](auto tn) {
      with_cluster_size(static_cast<int>(cluster), [&](auto cm) { run(tn, cm); });
    };
    if (tile_n == 256) run_cm(std::integral_constant<int, 256>{});
    else run_cm(std::integral_constant<int, 128>{});
  };
  switch (input.scalar_type()) {
    case at::kFloat: probe(float{}); break;
    case at::kBFloat16: probe(__nv_bfloat16{}); break;
    case at::kHalf: probe(__half{}); break;
    default: TORCH_CHECK(false, op, ": float32, bfloat16 or float16 only, got ", input.scalar_type());
  }
  return {out, tile_w, tiles_w};
#else
  (void)input, (void)weight, (void)stride, (void)padding, (void)dilation, (void)groups, (void)block_x, (void)block_y,
      (void)group, (void)tap, (void)c0, (void)tile_n, (void)cluster;
  TORCH_CHECK(false, op, ": this build has no sm_90a code");
#endif
}

at::Tensor wgmma_mn_probe_cuda(const at::Tensor& a, const at::Tensor& b) {
  constexpr const char* op = "wgmma_mn_probe";
#ifdef RNNKERN_WITH_SM90A
  TORCH_CHECK(a.is_cuda() && b.is_cuda() && a.scalar_type() == at::kBFloat16 && b.scalar_type() == at::kBFloat16, op,
              ": a and b must be bfloat16 CUDA tensors");
  TORCH_CHECK(a.sizes() == at::IntArrayRef({64, 64}) && b.dim() == 2 && b.size(0) == 64 &&
                  (b.size(1) == 128 || b.size(1) == 256),
              op, ": a must be (64, 64) and b (64, 128) or (64, 256), got ", a.sizes(), " and ", b.sizes());
  const at::cuda::OptionalCUDAGuard guard(device_of(a));
  TORCH_CHECK(at::cuda::getCurrentDeviceProperties()->major == 9, op, ": needs an sm_90 GPU");
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  at::Tensor d = at::empty({64, b.size(1)}, a.options().dtype(at::kFloat));
  const auto run = [&](auto kernel, int tn) {
    const int bytes = (1 + tn / 64) * kTmaWgradPixels * 128 + 1024;
    allow_full_shared_memory(kernel);
    kernel<<<1, 128, bytes, at::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const __nv_bfloat16*>(ac.data_ptr()), reinterpret_cast<const __nv_bfloat16*>(bc.data_ptr()),
        d.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (b.size(1) == 256) run(wgmma_mn_probe_kernel<256>, 256);
  else run(wgmma_mn_probe_kernel<128>, 128);
  return d;
#else
  (void)a, (void)b;
  TORCH_CHECK(false, op, ": this build has no sm_90a code");
#endif
}

at::Tensor conv2d_forward_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups) {
  constexpr const char* op = "conv2d_forward";
  check_cuda(op, input);
  check_conv_tensors(op, input, "input", weight, "weight");
  check_conv_bias(op, input, weight, bias);
  const ConvGeometry g = check_conv_args(op, input.sizes(), weight.sizes(), stride, padding, dilation, groups);
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  at::Tensor y = at::empty({g.N, g.K, g.OH, g.OW}, input.options().memory_format(conv_output_format(input)));
  if (g.N == 0) return y;
  const bool cl = conv_channels_last(input);
  if (gemm_route(g)) {
    conv2d_forward_gemm(dense_in(input, cl), weight, bias, g, cl, y, CublasConvGemm{});
  } else if (nchw_via_channels_last(cl, input.scalar_type(), g)) {
    at::Tensor y_cl = at::empty_like(y, fmt(true));
    conv2d_forward_into(input, weight, bias, g, 1, true, y_cl);
    layout_cuda::copy_to_nchw(y, y_cl);
  } else {
    conv2d_forward_into(input, weight, bias, g, 1, cl, y);
  }
  return y;
}

void conv2d_forward_shuffled_cuda(const at::Tensor& input, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, at::IntArrayRef padding, int64_t groups,
                                  int64_t shuffle, at::Tensor& output) {
  constexpr const char* op = "conv2d_forward_shuffled";
  check_cuda(op, input);
  check_conv_tensors(op, input, "input", weight, "weight");
  check_conv_bias(op, input, weight, bias);
  const ConvGeometry g = check_conv_args(op, input.sizes(), weight.sizes(), {1, 1}, padding, {1, 1}, groups);
  TORCH_CHECK(shuffle > 1 && g.K % (shuffle * shuffle) == 0 &&
                  output.sizes() == at::IntArrayRef({g.N, g.K / (shuffle * shuffle), g.OH * shuffle, g.OW * shuffle}) &&
                  output.is_contiguous(conv_output_format(input)),
              op, ": output must be the pixel shuffle of the convolution's output, in the input's layout");
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  if (g.N > 0) conv2d_forward_into(input, weight, bias, g, shuffle, conv_channels_last(input), output);
}

at::Tensor conv2d_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                      at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "conv2d_backward_input";
  check_cuda(op, grad_output);
  check_conv_tensors(op, grad_output, "grad_output", weight, "weight");
  const ConvGeometry g = check_conv_args(op, input_size, weight.sizes(), stride, padding, dilation, groups);
  check_conv_grad_output(op, g, grad_output);
  const at::cuda::OptionalCUDAGuard guard(device_of(grad_output));
  const bool cl = conv_channels_last(grad_output);
  at::Tensor gx = at::empty(input_size, grad_output.options().memory_format(fmt(cl)));
  if (g.N == 0) return gx;
  if (gemm_route(g)) {
    conv2d_backward_input_gemm(dense_in(grad_output, cl), weight, g, cl, gx, CublasConvGemm{});
    return gx;
  }
  const bool via_cl = nchw_via_channels_last(cl, grad_output.scalar_type(), g), kcl = cl || via_cl;  // the kernels' layout
  const at::Tensor gy = dense_in(grad_output, kcl);
  at::Tensor out = via_cl ? at::empty(input_size, grad_output.options().memory_format(fmt(true))) : gx;
  // (G, taps, Kg, Cg): B(tap, k; c) rows along the input channels (launch_gather copies it)
  const at::Tensor wt = weight.reshape({g.G, g.Kg(), g.Cg(), g.KH, g.KW}).permute({0, 3, 4, 1, 2});
  GatherParams p = gather_params(g, true);
  p.src = gy.data_ptr();
  p.bias = nullptr;
  p.out = out.data_ptr();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "conv2d_backward_input_cuda",
                                  [&] {
                                    launch_gather<typename NativeOf<scalar_t>::type>(p, wt, kcl, true, sizeof(scalar_t));
                                  });
  if (via_cl) layout_cuda::copy_to_nchw(gx, out);
  return gx;
}

void conv_transpose2d_forward_gather_cuda(const at::Tensor& input, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias, const ConvT2dGeometry& t,
                                          at::Tensor& output) {
  constexpr const char* op = "conv_transpose2d";
  check_cuda(op, input);
  check_conv_tensors(op, input, "input", weight, "weight");
  if (bias) check_conv_tensors(op, input, "input", *bias, "bias");
  // The convolution whose grad_input this is: its input is our output (C_out channels, OH x OW),
  // its output our input (C_in channels, H x W), its weight (K, Cg, KH, KW) = (C_in, C_out/G, kH, kW)
  // is ours as it is.
  ConvGeometry g{};
  g.N = t.N;
  g.C = t.Cout;
  g.H = t.OH;
  g.W = t.OW;
  g.K = t.Cin;
  g.OH = t.H;
  g.OW = t.W;
  g.KH = t.kH;
  g.KW = t.kW;
  g.sh = t.sH;
  g.sw = t.sW;
  g.dh = t.dH;
  g.dw = t.dW;
  g.pt = g.pb = t.pH;
  g.pl = g.pr = t.pW;
  g.G = t.G;
  const bool cl = conv_channels_last(input);
  TORCH_INTERNAL_ASSERT(output.is_cuda() && output.scalar_type() == input.scalar_type() && output.dim() == 4 &&
                            output.size(0) == t.N && output.size(1) == t.Cout && output.size(2) == t.OH &&
                            output.size(3) == t.OW && output.is_contiguous(fmt(cl)),
                        op, ": gather forward got an output tensor of the wrong shape or layout");
  if (output.numel() == 0) return;
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  const bool via_cl = nchw_via_channels_last(cl, input.scalar_type(), g), kcl = cl || via_cl;  // the kernel's layout
  const at::Tensor x = dense_in(input, kcl);
  at::Tensor out = via_cl ? at::empty_like(output, fmt(true)) : output;
  // (G, taps, C_in/G, C_out/G): B(tap, ci; co) rows along the output channels (launch_gather copies it)
  const at::Tensor wt = weight.reshape({g.G, g.Kg(), g.Cg(), g.KH, g.KW}).permute({0, 3, 4, 1, 2});
  const at::Tensor b = bias ? bias->contiguous() : at::Tensor();
  GatherParams p = gather_params(g, true);
  p.src = x.data_ptr();
  p.bias = bias ? b.data_ptr() : nullptr;
  p.out = out.data_ptr();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "conv_transpose2d_forward_gather_cuda", [&] {
                                    launch_gather<typename NativeOf<scalar_t>::type>(p, wt, kcl, true, sizeof(scalar_t));
                                  });
  if (via_cl) layout_cuda::copy_to_nchw(output, out);
}

bool conv_transpose2d_forward_gemm_cuda(const at::Tensor& input, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, const ConvT2dGeometry& t,
                                        at::Tensor& output) {
  if (!conv_transpose2d_is_gemm(t) || !conv_gemm_requested(true) ||
      !gemm_sizes_fit(t.N * t.H * t.W, t.Cout * t.kH * t.kW, t.Cin))
    return false;
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  const bool cl = conv_channels_last(input);
  if (output.numel() > 0)
    conv_transpose2d_forward_gemm(dense_in(input, cl), weight, bias, t.sH, t.sW, cl, output, CublasConvGemm{});
  return true;
}

std::tuple<at::Tensor, at::Tensor> conv2d_backward_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                                               at::IntArrayRef weight_size, at::IntArrayRef stride,
                                                               at::IntArrayRef padding, at::IntArrayRef dilation,
                                                               int64_t groups, bool bias_grad) {
  constexpr const char* op = "conv2d_backward_weight";
  check_cuda(op, input);
  check_conv_tensors(op, grad_output, "grad_output", input, "input");
  const ConvGeometry g = check_conv_args(op, input.sizes(), weight_size, stride, padding, dilation, groups);
  check_conv_grad_output(op, g, grad_output);
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  const bool cl = conv_channels_last(input);
  at::Tensor gw = at::empty(weight_size, input.options());
  if (g.N == 0) {
    gw.zero_();
  } else if (gemm_route(g)) {
    conv2d_backward_weight_gemm(dense_in(grad_output, cl), dense_in(input, cl), g, cl, gw,
                                CublasConvGemm{});
  } else {
    const bool kcl = cl || nchw_via_channels_last(cl, input.scalar_type(), g);  // the kernel's layout
    const at::Tensor x = dense_in(input, kcl), gy = dense_in(grad_output, kcl);
    WgradParams p{};
    p.gy = gy.data_ptr();
    p.x = x.data_ptr();
    p.N = to_int(g.N, "batch");
    p.C = to_int(g.C, "channels");
    p.H = to_int(g.H, "height");
    p.W = to_int(g.W, "width");
    p.K = to_int(g.K, "channels");
    p.OH = to_int(g.OH, "height");
    p.OW = to_int(g.OW, "width");
    to_int(g.OH * g.OW, "image (height x width)");  // (a pixel's position within its image is an int)
    p.G = to_int(g.G, "groups");
    p.Kg = to_int(g.Kg(), "channels");
    p.Cg = to_int(g.Cg(), "channels");
    p.KH = to_int(g.KH, "kernel");
    p.KW = to_int(g.KW, "kernel");
    p.sh = to_int(g.sh, "stride");
    p.sw = to_int(g.sw, "stride");
    p.dh = to_int(g.dh, "dilation");
    p.dw = to_int(g.dw, "dilation");
    p.pt = to_int(g.pt, "padding");
    p.pl = to_int(g.pl, "padding");
    check_int_spans(g);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "conv2d_backward_weight_cuda", [&] {
      using T = typename NativeOf<scalar_t>::type;
      launch_wgrad<T>(p, kcl, sizeof(scalar_t), reinterpret_cast<T*>(gw.data_ptr()), input.options());
    });
  }
  return {gw, conv_grad_bias_cuda(grad_output, bias_grad)};
}

}  // namespace rnnkern
