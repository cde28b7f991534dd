// Transposed 2-D convolution on CUDA.
//
// Forward: k = J * s without padding (the FCN upsamplers, and k == s like the U-Net's 2x2/2) is a
// stride-1 convolution with C_out * s^2 channels whose epilogue stores the pixel shuffle
// (subpixel_forward below); with fewer than 8 input channels per group, k == s takes the SIMT
// kernel's one-GEMM pixel shuffle (kShuffle below); everything else runs on the convolution engine's
// implicit-GEMM gather kernel (csrc/cuda/conv.cu, conv_transpose2d_forward_gather_cuda): the
// transposed conv is conv2d's grad_input with x as grad_output and the weight as it is, and that
// kernel enumerates the output pixels phase-major (blockIdx.z = (group, stride phase)) and visits
// only the taps of the block's phase, so no inserted zero is multiplied; it has the tf32 (when
// torch allows TF32 for convolutions) and bf16/fp16 WMMA tensor-core paths, bias fused.
// grad_input and grad_weight likewise run on the engine where the stride product is <= 16:
// grad_input is the conv2d forward of grad_output (conv2d_forward_cuda), grad_weight the conv2d
// grad_weight with x as grad_output and grad_output as input (conv2d_backward_weight_cuda), both
// tensor cores and tap skipping. Larger strides (the FCN-32s head, k64 s32: K = 86016 against
// 2048 x 21 outputs) keep this file's split-K kDgrad / kWgrad, which the engine (no split-K in
// its gather) would run on a handful of blocks; so does output_padding >= stride (possible when
// dilation > stride), where the strided conv would not reproduce x's size. The FCN upsamplers'
// grad_input in fp32 under TF32 (k = J * s, no padding) is instead one block GEMM on tensor cores
// that reads grad_output once in 16-byte runs (fcn_dgrad_block_kernel, below).
// RNNKERN_CONVT_PATH=simt (read per call) sends every pass back to this file's SIMT kernels, for
// comparison or as a fall-back; "gather" or unset: the engine.
//
// This file: one tiled implicit-GEMM kernel, four ways of feeding it.
//
//  kFwd      (RNNKERN_CONVT_PATH=simt only) phase (stride) decomposition. Output rows with
//            oh = ph (mod sH) are hit only by the kernel rows kh with kh*dH = ph + pH (mod sH):
//            an arithmetic progression kh0 + j*tsH (tsH = sH / gcd(sH, dH)), about
//            ceil(kH / sH) taps, whose input row is
//            ih = ohq + b0H - j*eH for the phase-local row ohq = (oh - ph) / sH. So each of the
//            sH*sW output phases is an ordinary convolution with a sub-kernel of the real taps:
//            M = N*OHp*OWp (phase pixels), N = C_out/G, K = C_in/G * taps. No inserted zero is
//            ever multiplied, every output element is written once (bias fused), phases land
//            interleaved in the output. blockIdx.z = (group, phase).
//  kShuffle  k == s, p == 0, d == 1, output_padding == 0, < 8 input channels per group or unequal
//            strides (the wider ones take subpixel_forward's tensor cores): every input pixel owns
//            one disjoint kH x kW output patch, so the whole op is ONE GEMM
//            [N*H*W, C_in/G] x [C_in/G, C_out/G*kH*kW] whose epilogue writes the pixel shuffle.
//  kDgrad    grad_input is an ordinary strided conv of grad_output:
//            M = N*H*W, N = C_in/G, K = C_out/G*kH*kW.
//  kWgrad    M = C_in/G, N = C_out/G*kH*kW, K = N*H*W (x against im2col(grad_output), implicit).
//
// dgrad / wgrad have long K for the FCN-32s head (k64 s32: K = 21*64*64 = 86016 with only
// 2048 x 21 outputs), so K is split over blockIdx.z; each split writes its own fp32/fp64 partial
// tile to a workspace and a second kernel sums the splits in fixed order: deterministic, no float
// atomics anywhere. grad_bias is ATen's sum over (N, H, W) in fp32/fp64, as in conv.cu.
//
// Tiles: BM x BN x 16, 256 threads, 4x4 outputs per thread, operands staged in shared memory in
// the accumulation type (at::opmath_type: fp32 for fp32/bf16/fp16, fp64 for fp64), SIMT FMA
// (this file's kernel has no tensor cores: fp32 is true fp32, not tf32; the forward's gather path
// above has them). Three tile shapes (64x64, 128x32, 32x128) follow the GEMM's aspect ratio.
// Loads read any strides (NCHW, channels_last, or other); which GEMM index runs fastest across a
// warp's loads is chosen per mode and layout so that neighbouring threads read neighbouring
// addresses where the layout allows.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdlib>
#include <numeric>
#include <string>

#include "../conv_common.h"
#include "../ops.h"
#include "kernel_queries.cuh"
#include "tensor_core.cuh"

namespace rnnkern {
namespace {

enum Mode : int { kFwd = 0, kShuffle = 1, kDgrad = 2, kWgrad = 3 };

constexpr int kThreads = 256;
constexpr int kBK = 16;

struct S4 {
  int64_t n, c, h, w;
};

S4 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

struct Params {
  int mode;
  int N, Cin, H, W, Cout, G, kH, kW, sH, sW, pH, pW, dH, dW, OH, OW;
  int cin_g, cout_g, kk;
  int tsH, tsW, eH, eW;  // phase tap step (in kernel rows) and the input-row step it implies
  bool a_m_fast, b_n_fast;  // which GEMM index runs fastest in the tile loads
  bool k_cfast;             // dgrad: K ordered (kh, kw, c) (channels_last) instead of (c, kh, kw)
  bool j_cfast;             // wgrad: N ordered (kh, kw, c) (channels_last) instead of (c, kh, kw)
  S4 xs, ys, os;            // strides: x (input), y (output / grad_output), result
  int M, Nn, K;             // GEMM sizes (kFwd: computed per phase in the kernel; M here is the max)
  int splits, k_chunk;      // split-K: split z covers K range [z*k_chunk, min(K, (z+1)*k_chunk))
  const void* x;
  const void* y;
  const void* w;
  const void* bias;
  void* out;
  void* ws;  // split-K partials [splits][G][M][Nn] in acc type
};

// Per-block view of the GEMM: sizes and, for kFwd, the phase's tap tables.
struct Block {
  int g, split, M, Nn, K, k0, k1;
  int ph, pw, OHp, OWp, ntH, ntW, kh0, kw0, b0H, b0W;
};

__device__ __forceinline__ int first_tap(int k, int s, int d, int ts, int residue) {
  // smallest t in [0, min(k, ts)) with t*d = residue (mod s); k if none
  for (int t = 0; t < ts && t < k; ++t)
    if ((t * d) % s == residue) return t;
  return k;
}

__device__ __forceinline__ Block block_view(const Params& p) {
  Block b;
  b.ph = b.pw = b.OHp = b.OWp = b.ntH = b.ntW = b.kh0 = b.kw0 = b.b0H = b.b0W = 0;
  if (p.mode == kFwd) {
    const int phases = p.sH * p.sW;
    b.g = blockIdx.z / phases;
    const int phase = blockIdx.z % phases;
    b.ph = phase / p.sW;
    b.pw = phase % p.sW;
    b.split = 0;
    b.OHp = b.ph < p.OH ? (p.OH - b.ph + p.sH - 1) / p.sH : 0;
    b.OWp = b.pw < p.OW ? (p.OW - b.pw + p.sW - 1) / p.sW : 0;
    b.kh0 = first_tap(p.kH, p.sH, p.dH, p.tsH, (b.ph + p.pH) % p.sH);
    b.kw0 = first_tap(p.kW, p.sW, p.dW, p.tsW, (b.pw + p.pW) % p.sW);
    b.ntH = b.kh0 < p.kH ? (p.kH - 1 - b.kh0) / p.tsH + 1 : 0;
    b.ntW = b.kw0 < p.kW ? (p.kW - 1 - b.kw0) / p.tsW + 1 : 0;
    b.b0H = (b.ph + p.pH - b.kh0 * p.dH) / p.sH;  // exact by the choice of kh0
    b.b0W = (b.pw + p.pW - b.kw0 * p.dW) / p.sW;
    b.M = p.N * b.OHp * b.OWp;
    b.Nn = p.cout_g;
    b.K = p.cin_g * b.ntH * b.ntW;
    b.k0 = 0;
    b.k1 = b.K;
  } else {
    b.g = blockIdx.z / p.splits;
    b.split = blockIdx.z % p.splits;
    b.M = p.M;
    b.Nn = p.Nn;
    b.K = p.K;
    b.k0 = b.split * p.k_chunk;
    b.k1 = min(p.K, b.k0 + p.k_chunk);
  }
  return b;
}

// Operand gathers are split into a row-dependent and a column-dependent part, each tabulated once
// in shared memory (the M / N parts once per block, the K parts once per K-tile), so a tile load
// is two table reads, one bounds test and one global load, with no integer division in the
// inner loop:  value = (r, c) in [0, R) x [0, C) ? src[e1.off + e2.off + r*sh + c*sw] : 0,
// r = e1.r + e2.r, c = e1.c + e2.c. Weights use r = c = 0, sh = sw = 0 and no bounds.
struct Ent {
  int64_t off;
  int r, c;
};

struct Operand {
  const void* src;
  int64_t sh, sw;
  int R, C;
  bool bounded;
};

__device__ __forceinline__ Operand operand_a(const Params& p) {
  switch (p.mode) {
    case kDgrad: return {p.y, p.ys.h, p.ys.w, p.OH, p.OW, true};
    default: return {p.x, p.xs.h, p.xs.w, p.H, p.W, true};  // kFwd, kShuffle, kWgrad
  }
}

__device__ __forceinline__ Operand operand_b(const Params& p) {
  if (p.mode == kWgrad) return {p.y, p.ys.h, p.ys.w, p.OH, p.OW, true};
  return {p.w, 0, 0, 1, 1, false};
}

// A's M-side entry for GEMM row m.
__device__ __forceinline__ Ent ent_am(const Params& p, const Block& b, int m) {
  switch (p.mode) {
    case kFwd: {
      const int plane = b.OHp * b.OWp;
      const int n = m / plane, r = m - n * plane;
      const int ohq = r / b.OWp, owq = r - ohq * b.OWp;
      return {n * p.xs.n, ohq + b.b0H, owq + b.b0W};
    }
    case kShuffle: {
      const int plane = p.H * p.W;
      const int n = m / plane, r = m - n * plane;
      const int ih = r / p.W;
      return {n * p.xs.n, ih, r - ih * p.W};
    }
    case kDgrad: {
      const int plane = p.H * p.W;
      const int n = m / plane, r = m - n * plane;
      const int ih = r / p.W, iw = r - ih * p.W;
      return {n * p.ys.n, ih * p.sH - p.pH, iw * p.sW - p.pW};
    }
    default:  // kWgrad: m = input channel of the group
      return {int64_t(b.g * p.cin_g + m) * p.xs.c, 0, 0};
  }
}

// A's K-side entry for GEMM depth k.
__device__ __forceinline__ Ent ent_ak(const Params& p, const Block& b, int k) {
  switch (p.mode) {
    case kFwd: {
      const int tap = k / p.cin_g, ci = k - tap * p.cin_g;
      const int jh = tap / b.ntW, jw = tap - jh * b.ntW;
      return {int64_t(b.g * p.cin_g + ci) * p.xs.c, -jh * p.eH, -jw * p.eW};
    }
    case kShuffle:
      return {int64_t(b.g * p.cin_g + k) * p.xs.c, 0, 0};
    case kDgrad: {
      int co, kh, kw;
      if (p.k_cfast) {
        const int t = k / p.cout_g;
        co = k - t * p.cout_g;
        kh = t / p.kW;
        kw = t - kh * p.kW;
      } else {
        co = k / p.kk;
        const int t = k - co * p.kk;
        kh = t / p.kW;
        kw = t - kh * p.kW;
      }
      return {int64_t(b.g * p.cout_g + co) * p.ys.c, kh * p.dH, kw * p.dW};
    }
    default: {  // kWgrad: k = (n, ih, iw)
      const int plane = p.H * p.W;
      const int n = k / plane, r = k - n * plane;
      const int ih = r / p.W;
      return {n * p.xs.n, ih, r - ih * p.W};
    }
  }
}

// A GEMM index over (output channel co of the group, tap t) pairs: (t, co) with co fastest when
// channels are the contiguous dimension (channels_last), else (co, t) with the taps fastest.
__device__ __forceinline__ void split_channel_tap(int i, bool channels_fast, int cout_g, int kk, int* co, int* t) {
  if (channels_fast) {
    *t = i / cout_g;
    *co = i - *t * cout_g;
  } else {
    *co = i / kk;
    *t = i - *co * kk;
  }
}

// B's K-side entry for GEMM depth k.
__device__ __forceinline__ Ent ent_bk(const Params& p, const Block& b, int k) {
  switch (p.mode) {
    case kFwd: {  // w[((g*cin_g + ci)*cout_g + j)*kk + kh*kW + kw]
      const int tap = k / p.cin_g, ci = k - tap * p.cin_g;
      const int jh = tap / b.ntW, jw = tap - jh * b.ntW;
      const int kh = b.kh0 + jh * p.tsH, kw = b.kw0 + jw * p.tsW;
      return {int64_t(b.g * p.cin_g + ci) * p.cout_g * p.kk + kh * p.kW + kw, 0, 0};
    }
    case kShuffle:  // w[(g*cin_g + k)*cout_g*kk + j]
      return {int64_t(b.g * p.cin_g + k) * p.cout_g * p.kk, 0, 0};
    case kDgrad: {  // w[((g*cin_g + j)*cout_g + co)*kk + kh*kW + kw]
      int co, t;
      split_channel_tap(k, p.k_cfast, p.cout_g, p.kk, &co, &t);
      return {int64_t(co) * p.kk + t, 0, 0};
    }
    default: {  // kWgrad: grad_output at (n, ih*sH - pH + kh*dH, iw*sW - pW + kw*dW)
      const int plane = p.H * p.W;
      const int n = k / plane, r = k - n * plane;
      const int ih = r / p.W, iw = r - ih * p.W;
      return {n * p.ys.n, ih * p.sH - p.pH, iw * p.sW - p.pW};
    }
  }
}

// B's N-side entry for GEMM column j.
__device__ __forceinline__ Ent ent_bj(const Params& p, const Block& b, int j) {
  switch (p.mode) {
    case kFwd: return {int64_t(j) * p.kk, 0, 0};
    case kShuffle: return {int64_t(j), 0, 0};
    case kDgrad: return {int64_t(b.g * p.cin_g + j) * p.cout_g * p.kk, 0, 0};
    default: {  // kWgrad: j = (co, kh, kw), or (kh, kw, co) when j_cfast
      int co, t;
      split_channel_tap(j, p.j_cfast, p.cout_g, p.kk, &co, &t);
      const int kh = t / p.kW, kw = t - kh * p.kW;
      return {int64_t(b.g * p.cout_g + co) * p.ys.c, kh * p.dH, kw * p.dW};
    }
  }
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t gather(const Operand& o, const Ent& e1, const Ent& e2) {
  const int r = e1.r + e2.r, c = e1.c + e2.c;
  if (o.bounded && (r < 0 || r >= o.R || c < 0 || c >= o.C)) return acc_t(0);
  return static_cast<acc_t>(static_cast<const scalar_t*>(o.src)[e1.off + e2.off + r * o.sh + c * o.sw]);
}

// Final store of GEMM element (m, j) of group g (bias added where the mode has one).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void store(const Params& p, const Block& b, int g, int m, int j, acc_t v) {
  scalar_t* out = static_cast<scalar_t*>(p.out);
  const scalar_t* bias = static_cast<const scalar_t*>(p.bias);
  switch (p.mode) {
    case kFwd: {
      const int plane = b.OHp * b.OWp;
      const int n = m / plane, r = m - n * plane;
      const int ohq = r / b.OWp, owq = r - ohq * b.OWp;
      const int oh = b.ph + ohq * p.sH, ow = b.pw + owq * p.sW;
      const int co = g * p.cout_g + j;
      if (bias) v += static_cast<acc_t>(bias[co]);
      out[n * p.os.n + int64_t(co) * p.os.c + int64_t(oh) * p.os.h + int64_t(ow) * p.os.w] = static_cast<scalar_t>(v);
      break;
    }
    case kShuffle: {
      const int plane = p.H * p.W;
      const int n = m / plane, r = m - n * plane;
      const int ih = r / p.W, iw = r - ih * p.W;
      const int co_l = j / p.kk, t = j - co_l * p.kk;
      const int kh = t / p.kW, kw = t - kh * p.kW;
      const int co = g * p.cout_g + co_l;
      if (bias) v += static_cast<acc_t>(bias[co]);
      out[n * p.os.n + int64_t(co) * p.os.c + int64_t(ih * p.sH + kh) * p.os.h + int64_t(iw * p.sW + kw) * p.os.w] =
          static_cast<scalar_t>(v);
      break;
    }
    case kDgrad: {
      const int plane = p.H * p.W;
      const int n = m / plane, r = m - n * plane;
      const int ih = r / p.W, iw = r - ih * p.W;
      out[n * p.os.n + int64_t(g * p.cin_g + j) * p.os.c + int64_t(ih) * p.os.h + int64_t(iw) * p.os.w] =
          static_cast<scalar_t>(v);
      break;
    }
    default: {  // kWgrad: contiguous grad_weight (C_in, C_out/G, kH, kW)
      int64_t jw = j;  // j in the weight's own (co, kh, kw) order
      if (p.j_cfast) {
        const int t = j / p.cout_g, co = j - t * p.cout_g;
        jw = int64_t(co) * p.kk + t;
      }
      out[(int64_t(g * p.cin_g + m) * p.cout_g) * p.kk + jw] = static_cast<scalar_t>(v);
    }
  }
}

template <typename scalar_t, int BM, int BN>
__global__ void __launch_bounds__(kThreads) conv_transpose_gemm_kernel(const Params p) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int TM = 4, TN = 4;
  constexpr int RM = BM / TM;  // threads along M
  static_assert((BM / TM) * (BN / TN) == kThreads, "tile must give 4x4 outputs to each of 256 threads");
  __shared__ acc_t As[kBK][BM + 1];
  __shared__ acc_t Bs[kBK][BN + 1];

  __shared__ Ent tm[BM], tj[BN], tka[kBK], tkb[kBK];

  const Block b = block_view(p);
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  if (m0 >= b.M || n0 >= b.Nn) return;  // whole block (kFwd phases have different M)
  const int tid = threadIdx.x;
  const int ty = tid % RM, tx = tid / RM;  // M fastest across a warp: coalesced NCHW stores
  const Operand oa = operand_a(p), ob = operand_b(p);
  for (int i = tid; i < BM; i += kThreads) tm[i] = m0 + i < b.M ? ent_am(p, b, m0 + i) : Ent{0, 0, 0};
  for (int i = tid; i < BN; i += kThreads) tj[i] = n0 + i < b.Nn ? ent_bj(p, b, n0 + i) : Ent{0, 0, 0};

  acc_t acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = acc_t(0);

  for (int k0 = b.k0; k0 < b.k1; k0 += kBK) {
    if (tid < kBK) {
      const int k = k0 + tid;
      tka[tid] = k < b.k1 ? ent_ak(p, b, k) : Ent{0, 0, 0};
    } else if (tid < 2 * kBK) {
      const int k = k0 + tid - kBK;
      tkb[tid - kBK] = k < b.k1 ? ent_bk(p, b, k) : Ent{0, 0, 0};
    }
    __syncthreads();  // K tables (and, on the first pass, the M / N tables) are ready
    // Every element of this thread's share is loaded before any is stored: the loads are then in
    // flight together (a load followed by its shared store per element waited out one global
    // round trip per element).
    constexpr int kAPer = BM * kBK / kThreads, kBPer = BN * kBK / kThreads;
    static_assert(kAPer * kThreads == BM * kBK && kBPer * kThreads == BN * kBK, "tile / thread count");
    const auto a_at = [&](int e, int* mm, int* kk) {
      if (p.a_m_fast) { *mm = e % BM; *kk = e / BM; } else { *kk = e % kBK; *mm = e / kBK; }
    };
    const auto b_at = [&](int e, int* nn, int* kk) {
      if (p.b_n_fast) { *nn = e % BN; *kk = e / BN; } else { *kk = e % kBK; *nn = e / kBK; }
    };
    acc_t va[kAPer], vb[kBPer];
#pragma unroll
    for (int i = 0; i < kAPer; ++i) {
      int mm, kk;
      a_at(tid + i * kThreads, &mm, &kk);
      va[i] = (m0 + mm < b.M && k0 + kk < b.k1) ? gather<scalar_t, acc_t>(oa, tm[mm], tka[kk]) : acc_t(0);
    }
#pragma unroll
    for (int i = 0; i < kBPer; ++i) {
      int nn, kk;
      b_at(tid + i * kThreads, &nn, &kk);
      vb[i] = (n0 + nn < b.Nn && k0 + kk < b.k1) ? gather<scalar_t, acc_t>(ob, tkb[kk], tj[nn]) : acc_t(0);
    }
#pragma unroll
    for (int i = 0; i < kAPer; ++i) {
      int mm, kk;
      a_at(tid + i * kThreads, &mm, &kk);
      As[kk][mm] = va[i];
    }
#pragma unroll
    for (int i = 0; i < kBPer; ++i) {
      int nn, kk;
      b_at(tid + i * kThreads, &nn, &kk);
      Bs[kk][nn] = vb[i];
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      acc_t a[TM], bb[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = As[kk][ty + i * RM];
#pragma unroll
      for (int j = 0; j < TN; ++j) bb[j] = Bs[kk][tx + j * (BN / TN)];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * bb[j];
    }
    __syncthreads();
  }

  acc_t* ws = static_cast<acc_t*>(p.ws);
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + ty + i * RM;
    if (m >= b.M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int n = n0 + tx + j * (BN / TN);
      if (n >= b.Nn) continue;
      if (p.splits > 1)
        ws[((int64_t(b.split) * p.G + b.g) * b.M + m) * b.Nn + n] = acc[i][j];
      else
        store<scalar_t, acc_t>(p, b, b.g, m, n, acc[i][j]);
    }
  }
}

// Sums the split-K partials in split order (deterministic) and stores (dgrad / wgrad only).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) splitk_reduce_kernel(const Params p) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t* ws = static_cast<const acc_t*>(p.ws);
  const int64_t per_split = int64_t(p.G) * p.M * p.Nn;
  Block b{};
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < per_split;
       i += int64_t(gridDim.x) * blockDim.x) {
    acc_t v = acc_t(0);
    for (int s = 0; s < p.splits; ++s) v += ws[s * per_split + i];
    const int g = static_cast<int>(i / (int64_t(p.M) * p.Nn));
    const int64_t r = i - int64_t(g) * p.M * p.Nn;
    store<scalar_t, acc_t>(p, b, g, static_cast<int>(r / p.Nn), static_cast<int>(r % p.Nn), v);
  }
}

// ---- The FCN upsamplers (k = J s, no padding) as block GEMMs ----------------------------------
// The two block GEMMs' shared parts. cp_async_ring: kStages - 1 k-steps of copies in flight
// while the block computes on the oldest (issue(step, stage) must commit exactly one group, empty
// past the end, so the wait counts stay uniform). warp_mma_tf32: one BK-deep slice on a warp's
// 32 x 8NJ tile of a 4 (M) x 2 (N) warp grid, A as [m][k] (kAmk) or [k][m] (row stride LDA),
// B as [n][k] (kBnk) or [k][n] (row stride LDB). Fragments (g = lane / 4, t = lane % 4; PTX
// "Matrix Fragments for mma.m16n8k8", as beside conv.cu's MmaSyncMma): a0..a3 = (g, t),
// (g + 8, t), (g, t + 4), (g + 8, t + 4); b0, b1 = (k t, n g), (k t + 4, n g);
// c = (g, 2t..2t+1), (g + 8, 2t..2t+1).
template <int kStages, class Issue, class Compute>
__device__ __forceinline__ void cp_async_ring(int steps, Issue&& issue, Compute&& compute) {
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue(s, s);
  for (int step = 0; step < steps; ++step) {
    cp_async_wait<kStages - 2>();  // this step's group has landed (for this thread) ...
    __syncthreads();               // ... for every thread; and step - 1's stage is free again
    issue(step + kStages - 1, (step + kStages - 1) % kStages);
    compute(step % kStages);
  }
  cp_async_wait<0>();  // no copy may still target shared memory when the block exits
}

#if RNNKERN_HAS_SM80_TENSOR_CORES
template <int NJ, int BK, int LDA, int LDB, bool kAmk, bool kBnk>
__device__ __forceinline__ void warp_mma_tf32(float (&acc)[2][NJ][4], const float* As, const float* Bs, int wm,
                                              int wn, int lane) {
  const int g = lane / 4, t = lane % 4;
  // element (row r, depth k) of a tile stored [r][k] (rk) or [k][r], row stride ld
  const auto at = [](const float* tile, int ld, bool rk, int r, int k) {
    return rk ? tile[r * ld + k] : tile[k * ld + r];
  };
#pragma unroll
  for (int kk = 0; kk < BK; kk += 8) {
    uint32_t a[2][4], b[NJ][2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int m = wm * 32 + i * 16 + g;
      a[i][0] = __float_as_uint(at(As, LDA, kAmk, m, kk + t));
      a[i][1] = __float_as_uint(at(As, LDA, kAmk, m + 8, kk + t));
      a[i][2] = __float_as_uint(at(As, LDA, kAmk, m, kk + t + 4));
      a[i][3] = __float_as_uint(at(As, LDA, kAmk, m + 8, kk + t + 4));
    }
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int n = wn * 8 * NJ + j * 8 + g;
      b[j][0] = __float_as_uint(at(Bs, LDB, kBnk, n, kk + t));
      b[j][1] = __float_as_uint(at(Bs, LDB, kBnk, n, kk + t + 4));
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < NJ; ++j) mma_tile<float>(acc[i][j], a[i], b[j]);
  }
}
#endif


// FCN upsampler grad_input: one block GEMM on tensor cores.
// With k = J * s, no padding, dilation 1 and no output_padding (the FCN upsamplers: k64 s32,
// k32 s16, k16 s8), grad_output tiles exactly into s x s blocks, one per (n, I, J) with
// I < H + Jh - 1, J < W + Jw - 1, and
//   grad_input[n, ci, i, j] = sum_{jr < Jh, jc < Jw} P[(n, i + jr, j + jc), (jr, jc, ci)]
//   P[(n, I, J), (jr, jc, ci)] = sum_{co, ph, pw} gy[n, co, I s + ph, J s + pw] w[ci, co, jr s + ph, jc s + pw]
// P is one GEMM: M = N (H + Jh - 1)(W + Jw - 1) blocks, Q = Jh Jw C_in, K = C_out sH sW. Every
// grad_output element is read once (the split-K SIMT kernel above reads it Jh Jw times, an element
// at a time through index tables), and both operands arrive as 16-byte runs: a k-step is 32
// consecutive (co, ph, pw), runs of 4 pw along a grad_output row and along a weight row. For the
// FCN-32s head (N8, 21 -> 21, 544 x 544 grad_output) that is 199 MB streamed once from HBM, 46 us at
// 4.3 TB/s, for 3.7 GMAC (19 us of tf32 tensor-core peak); cuDNN takes 2.85 ms.
// cp.async ring of kBlkStages stages, mma.sync m16n8k8 tf32 (fp32 only, under cudnn.allow_tf32;
// operands unrounded, as cuBLAS feeds them), K split over blockIdx.z with fp32 partials in a
// workspace; fcn_dgrad_finish_kernel adds the splits and the Jh x Jw overlaps in a fixed order
// (deterministic, no atomics).
// The FCN upsamplers' sizes, as int (block_geometry fills them; the routing predicates bound
// them), and the three index decompositions every FCN kernel makes: an output block
// m = (n, I, J) over N x Hb x Wb, a tap and channel q = (jr, jc, ci) over Jh x Jw x C_in, a column
// c = (co, ph, pw) over C_out x sH x sW.
struct FcnGeometry {
  int N, Cin, Cout, H, W, sH, sW, kH, kW, Jh, Jw, OH, OW, Hb, Wb;

  __device__ __forceinline__ void block(int m, int& n, int& I, int& J) const {
    const int plane = Hb * Wb;
    n = m / plane;
    const int r = m - n * plane;
    I = r / Wb;
    J = r - I * Wb;
  }
  __device__ __forceinline__ void tap(int q, int& jr, int& jc, int& ci) const {
    const int t = q / Cin;
    ci = q - t * Cin;
    jr = t / Jw;
    jc = t - jr * Jw;
  }
  __device__ __forceinline__ void column(int c, int& co, int& ph, int& pw) const {
    const int blk = sH * sW;
    co = c / blk;
    const int rem = c - co * blk;
    ph = rem / sW;
    pw = rem - ph * sW;
  }
};

constexpr int kBlkM = 128, kBlkQ = 96, kBlkK = 32, kBlkStages = 3;
constexpr int kBlkLd = kBlkK + 4;  // row stride in floats: 16-byte rows, fragment reads on 32 banks
constexpr int kBlkStageFloats = (kBlkM + kBlkQ) * kBlkLd;
constexpr int kBlkSmemBytes = kBlkStages * kBlkStageFloats * 4;

struct BlockDgrad : FcnGeometry {
  const float* gy;  // (N, C_out, OH, OW), contiguous
  const float* w;   // (C_in, C_out, kH, kW), contiguous
  float* ws;        // P partials [splits][M][Q]
  float* gx;        // grad_input, strides gxs
  S4 gxs;
  int M, Q, K, steps_per_split, splits;
  int64_t gy_n, gy_c;
};

__global__ void __launch_bounds__(kThreads, 2) fcn_dgrad_block_kernel(const BlockDgrad p) {
#if RNNKERN_HAS_SM80_TENSOR_CORES
  extern __shared__ __align__(16) float blk_smem[];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int m0 = blockIdx.x * kBlkM, q0 = blockIdx.y * kBlkQ, split = blockIdx.z;
  const int step0 = split * p.steps_per_split;
  const int steps = min(p.K / kBlkK, step0 + p.steps_per_split) - step0;

  // Loads: thread tid copies 16-byte chunk ch = tid % 8 (k = 4 ch .. 4 ch + 3 of the step) of
  // rows tid / 8 + 32 i: 4 rows of the A tile (blocks), 3 of the B tile (Q columns).
  const int ch = tid % 8, row = tid / 8;
  int64_t a_off[4], b_off[3];
  bool a_ok[4], b_ok[3];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + row + 32 * i;
    a_ok[i] = m < p.M;
    int n, I, J;
    p.block(m, n, I, J);
    a_off[i] = a_ok[i] ? n * p.gy_n + int64_t(I) * p.sH * p.OW + int64_t(J) * p.sW : 0;
  }
  const int kk_w = p.kH * p.kW;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const int q = q0 + row + 32 * i;
    b_ok[i] = q < p.Q;
    int jr, jc, ci;
    p.tap(q, jr, jc, ci);
    b_off[i] = b_ok[i] ? int64_t(ci) * p.Cout * kk_w + int64_t(jr) * p.sH * p.kW + int64_t(jc) * p.sW : 0;
  }
  const auto issue = [&](int step, int stage) {
    if (step < steps) {
      const int k = (step0 + step) * kBlkK + 4 * ch;
      int co, ph, pw;
      p.column(k, co, ph, pw);
      const int64_t ak = co * p.gy_c + int64_t(ph) * p.OW + pw, bk = int64_t(co) * kk_w + int64_t(ph) * p.kW + pw;
      float* st = blk_smem + stage * kBlkStageFloats;
      // rows past M / Q zero-fill; their source is the tensor's base (no byte is read from it)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        cp_async16(smem_u32(st + (row + 32 * i) * kBlkLd + 4 * ch), a_ok[i] ? p.gy + a_off[i] + ak : p.gy, a_ok[i]);
#pragma unroll
      for (int i = 0; i < 3; ++i)
        cp_async16(smem_u32(st + (kBlkM + row + 32 * i) * kBlkLd + 4 * ch), b_ok[i] ? p.w + b_off[i] + bk : p.w,
                   b_ok[i]);
    }
    cp_async_commit();  // an empty group past the end: see cp_async_ring
  };

  // Warps as 4 (M) x 2 (Q), a 32 x 48 warp tile: 2 (m16) x 6 (n8) mma tiles.
  const int wm = warp / 2, wn = warp % 2, g = lane / 4, t = lane % 4;
  float acc[2][6][4] = {};
  cp_async_ring<kBlkStages>(steps, issue, [&](int stage) {
    const float* As = blk_smem + stage * kBlkStageFloats;
    warp_mma_tf32<6, kBlkK, kBlkLd, kBlkLd, true, true>(acc, As, As + kBlkM * kBlkLd, wm, wn, lane);
  });

  float* ws = p.ws + int64_t(split) * p.M * p.Q;
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = m0 + wm * 32 + i * 16 + g + 8 * h;
      if (m >= p.M) continue;
#pragma unroll
      for (int j = 0; j < 6; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int q = q0 + wn * 48 + j * 8 + 2 * t + e;
          if (q < p.Q) ws[int64_t(m) * p.Q + q] = acc[i][j][2 * h + e];
        }
    }
#else
  __trap();  // launched only on sm_80+
#endif
}

// grad_input[n, ci, i, j] = sum over (jr, jc), then splits, of P; one thread per element with ci
// fastest, so a warp's reads of a P row are contiguous.
__global__ void __launch_bounds__(kThreads) fcn_dgrad_finish_kernel(const BlockDgrad p) {
  const int64_t total = int64_t(p.N) * p.H * p.W * p.Cin;
  const int64_t per_split = int64_t(p.M) * p.Q;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int ci = static_cast<int>(e % p.Cin);
    const int64_t pix = e / p.Cin;
    const int j = static_cast<int>(pix % p.W), i = static_cast<int>(pix / p.W % p.H);
    const int n = static_cast<int>(pix / (int64_t(p.W) * p.H));
    float v = 0.f;
    for (int jr = 0; jr < p.Jh; ++jr)
      for (int jc = 0; jc < p.Jw; ++jc) {
        const int64_t at = (int64_t(n * p.Hb + i + jr) * p.Wb + j + jc) * p.Q + (jr * p.Jw + jc) * p.Cin + ci;
        for (int s = 0; s < p.splits; ++s) v += p.ws[s * per_split + at];
      }
    p.gx[n * p.gxs.n + ci * p.gxs.c + i * p.gxs.h + j * p.gxs.w] = v;
  }
}

// The forward of the same upsamplers as one block GEMM: with rows m = (n, I, J) over the
// (H + Jh - 1) x (W + Jw - 1) output blocks, columns c = (co, ph, pw) and k = (jr, jc, ci),
//   y[n, co, I sH + ph, J sW + pw] = b[co] + sum_k x[n, ci, I - jr, J - jc] w[ci, co, jr sH + ph, jc sW + pw]
// (x is zero outside its H x W). K = Jh Jw C_in is short (84 for the FCN-32s head) and the
// output long (N C_out OH OW: 199 MB for the head at N8), so a block keeps its 128-row slice of A
// (x over all of K, 4-byte cp.async, zero off the image) in shared memory and walks a run of
// 128-column tiles: it multiplies one tile (mma.sync m16n8k8 tf32) and stores it straight from
// the accumulators, two neighbouring pw per streaming store with the bias, while the next tile's
// B (w in 16-byte runs along pw) lands in the other half of a double buffer. The runs split the
// (row tile, column tile) grid evenly over one wave of blocks; a run that crosses into the next
// row tile reloads A. Every index that does not change along a run is computed once into shared
// tables (k -> offsets and taps per block; column -> output offset and bias per tile). The first
// version (one tile a block, A re-staged and every index re-derived per tile) issued 20 integer
// instructions per mma: 245 us on an H200 for the FCN-32s head against a ~46 us store floor.
// For K <= 96 (the FCN upsamplers of up to 24 classes); wider K runs subpixel_forward.
constexpr int kFwdM = 128, kFwdN = 128, kFwdKMax = 96;
constexpr int kFwdLd = 128 + 8;  // A [k][m] and B [k][c]: fragment reads (8t + g) hit 32 banks; 16-byte rows

struct FwdTables {
  int64_t x_k[kFwdKMax];  // ci * x's channel stride
  int w_k[kFwdKMax];      // (ci C_out kH + jr sH) kW + jc sW, -1 for k >= K (zero rows)
  int tap_k[kFwdKMax];    // jr << 16 | jc, -1 for k >= K
  int col_off[2][kFwdN];  // (co OH + ph) OW + pw of a tile's columns, -1 past C_out sH sW
  float col_bias[2][kFwdN];
};

// tables, A (kp rows) and two B buffers (kp rows each); kp = K rounded up to the mma's k of 8
size_t fwd_smem_bytes(int kp) { return sizeof(FwdTables) + size_t(3) * kp * kFwdLd * sizeof(float); }

struct BlockFwd : FcnGeometry {
  const float* x;  // (N, C_in, H, W), strides xs
  const float* w;  // (C_in, C_out, kH, kW), contiguous
  const float* bias;
  float* y;        // (N, C_out, OH, OW), contiguous
  S4 xs;
  int M, Ncols, K, Kp, col_tiles;
  int64_t units;  // row tiles x column tiles, tile u = (u / col_tiles, u % col_tiles)
};

__global__ void __launch_bounds__(kThreads, 2) fcn_forward_block_kernel(const BlockFwd p) {
#if RNNKERN_HAS_SM80_TENSOR_CORES
  extern __shared__ __align__(16) float blk_smem[];
  FwdTables& tab = *reinterpret_cast<FwdTables*>(blk_smem);
  float* const As = blk_smem + sizeof(FwdTables) / sizeof(float);
  float* const Bs = As + p.Kp * kFwdLd;  // two buffers of p.Kp x kFwdLd
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t u_begin = p.units * blockIdx.x / gridDim.x, u_end = p.units * (blockIdx.x + 1) / gridDim.x;

  for (int k = tid; k < p.Kp; k += kThreads) {
    const bool ok = k < p.K;
    int jr, jc, ci;
    p.tap(k, jr, jc, ci);
    tab.x_k[k] = ok ? ci * p.xs.c : 0;
    tab.w_k[k] = ok ? (ci * p.Cout * p.kH + jr * p.sH) * p.kW + jc * p.sW : -1;
    tab.tap_k[k] = ok ? (jr << 16) | jc : -1;
  }
  __syncthreads();
  if (u_begin >= u_end) return;  // (a whole block: more blocks than tiles)

  // A: thread tid fills column am = tid % 128 (neighbouring J: neighbouring x columns) at
  // k = tid / 128 + 2 i.
  const int am = tid % kFwdM;
  const auto load_a = [&](int mt) {
    const int m = mt * kFwdM + am;
    int n, I, J;
    p.block(m, n, I, J);
    for (int k = tid / kFwdM; k < p.Kp; k += kThreads / kFwdM) {
      const int tap = tab.tap_k[k], ih = I - (tap >> 16), iw = J - (tap & 0xffff);
      const bool ok = m < p.M && tap >= 0 && ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
      const float* src = ok ? p.x + n * p.xs.n + tab.x_k[k] + ih * p.xs.h + iw * p.xs.w : p.x;
      cp_async4(smem_u32(As + k * kFwdLd + am), src, ok);
    }
  };
  // B of column tile ct: thread tid copies the 16-byte run of columns 4 (tid % 32) .. + 3 (one
  // output row's pw run: sW % 4 == 0) of k-rows tid / 32 + 8 i. Commits the group (with any A).
  const auto issue_b = [&](int ct, int buf) {
    const int c = ct * kFwdN + 4 * (tid % 32);
    int co, ph, pw;
    p.column(c, co, ph, pw);
    const bool c_ok = c < p.Ncols;
    const float* w_c = p.w + (co * p.kH + ph) * p.kW + pw;
    float* dst = Bs + buf * p.Kp * kFwdLd + 4 * (tid % 32);
    for (int k = tid / 32; k < p.Kp; k += kThreads / 32) {
      const int wk = tab.w_k[k];
      const bool ok = c_ok && wk >= 0;
      cp_async16(smem_u32(dst + k * kFwdLd), ok ? w_c + wk : p.w, ok);
    }
    cp_async_commit();
  };
  // the output offset (within image n) and bias of each column of tile ct
  const auto set_columns = [&](int ct, int buf) {
    if (tid < kFwdN) {
      const int c = ct * kFwdN + tid;
      int co, ph, pw;
      p.column(c, co, ph, pw);
      const bool ok = c < p.Ncols;
      tab.col_off[buf][tid] = ok ? (co * p.OH + ph) * p.OW + pw : -1;
      tab.col_bias[buf][tid] = ok && p.bias ? p.bias[co] : 0.f;
    }
  };
  // Warps as 4 (M) x 2 (N), a 32 x 64 warp tile: 2 (m16) x 8 (n8) mma tiles. Output offsets of
  // the thread's four accumulator rows (-1 past M), per row tile.
  const int wm = warp / 2, wn = warp % 2, g = lane / 4, t = lane % 4;
  int64_t y_row[2][2];
  const auto set_rows = [&](int mt) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = mt * kFwdM + wm * 32 + i * 16 + g + 8 * h;
        int n, I, J;
        p.block(m, n, I, J);
        y_row[i][h] = m < p.M ? (int64_t(n) * p.Cout * p.OH + int64_t(I) * p.sH) * p.OW + int64_t(J) * p.sW : -1;
      }
  };

  int mt = static_cast<int>(u_begin / p.col_tiles);
  load_a(mt);
  issue_b(static_cast<int>(u_begin % p.col_tiles), 0);
  set_rows(mt);
  for (int64_t u = u_begin; u < u_end; ++u) {
    const int buf = static_cast<int>((u - u_begin) & 1);
    set_columns(static_cast<int>(u % p.col_tiles), buf);
    cp_async_wait<0>();
    // tile u's A, B and columns are in for every thread, and every warp is done with tile u - 1
    // (B buffer buf ^ 1; the column tables of tile u - 2 were freed one barrier earlier)
    __syncthreads();
    const bool more = u + 1 < u_end;
    const int next_mt = more ? static_cast<int>((u + 1) / p.col_tiles) : mt;
    if (more && next_mt == mt) issue_b(static_cast<int>((u + 1) % p.col_tiles), buf ^ 1);

    float acc[2][8][4] = {};
    const float* B = Bs + buf * p.Kp * kFwdLd;
#pragma unroll 2
    for (int kk = 0; kk < p.Kp; kk += 8)
      warp_mma_tf32<8, 8, kFwdLd, kFwdLd, false, false>(acc, As + kk * kFwdLd, B + kk * kFwdLd, wm, wn, lane);

    // c0 c1 of an mma tile are columns c, c + 1 with c even: neighbouring pw of one output row
    // (sW % 4 == 0), one float2 store; the output is not read back here (streaming stores).
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int col = wn * 64 + j * 8 + 2 * t;
      const int off = tab.col_off[buf][col];
      if (off < 0) continue;
      const float bv = tab.col_bias[buf][col];
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          if (y_row[i][h] >= 0)
            __stcs(reinterpret_cast<float2*>(p.y + y_row[i][h] + off),
                   make_float2(acc[i][j][2 * h] + bv, acc[i][j][2 * h + 1] + bv));
    }
    if (more && next_mt != mt) {
      __syncthreads();  // every warp is done reading A
      mt = next_mt;
      load_a(mt);
      issue_b(static_cast<int>((u + 1) % p.col_tiles), buf ^ 1);
      set_rows(mt);
    }
  }
  // (no copy is in flight here: each group is waited for at the top of the next tile, and the
  // last tile issues none)
#else
  __trap();  // launched only on sm_80+
#endif
}

// The same upsamplers' grad_weight as one block GEMM: with P[q, c] over q = (jr, jc, ci) and
// c = (co, ph, pw),
//   grad_w[ci, co, jr sH + ph, jc sW + pw] = P[q, c] = sum_m A[m, q] G[m, c]
//   A[m, q] = x[n, ci, I - jr, J - jc] (zero off the image),  G[m, c] = gy[n, co, I sH + ph, J sW + pw]
// over the m = (n, I, J) blocks of the forward. Q = Jh Jw C_in <= 128 is one tile of rows, so a
// block owns a 128-column tile and a range of m (split over blockIdx.y so that one wave fills the
// GPU), and every grad_output element is read once, in 16-byte runs; x arrives by 4-byte copies,
// a warp's 32 consecutive m (neighbouring x columns) at a time. 3-stage cp.async ring, mma.sync
// m16n8k8 tf32; partial sums go to a [split][Q][C_out sH sW] workspace that
// fcn_wgrad_finish_kernel adds in split order into grad_w (deterministic, no atomics). The SIMT
// kernel it replaces took 1.9 ms for the FCN-32s head and for FCN-8s's k16 s8 (cuDNN: 15 / 0.6 ms).
constexpr int kWgQ = 128, kWgN = 128, kWgK = 32, kWgStages = 3;
constexpr int kWgLdA = kWgK + 4;   // A as [q][m]: fragment reads (4g + t) and copies of 32 m hit 32 banks
constexpr int kWgLdB = kWgN + 8;   // G as [m][c]: fragment reads (8t + g) on 32 banks; 16-byte rows
constexpr int kWgStageFloats = kWgQ * kWgLdA + kWgK * kWgLdB;
constexpr int kWgSmemBytes = kWgStages * kWgStageFloats * 4 + kWgQ * (8 + 4);  // + the q tables

struct BlockWgrad : FcnGeometry {
  const float* x;   // (N, C_in, H, W), strides xs
  const float* gy;  // (N, C_out, OH, OW), contiguous
  float* ws;        // P partials [splits][Q][Ncols]
  float* gw;        // grad_weight (C_in, C_out, kH, kW), contiguous
  S4 xs;
  int M, Q, Ncols, steps_per_split, splits;
  int64_t gy_n, gy_c;
};

__global__ void __launch_bounds__(kThreads, 2) fcn_wgrad_block_kernel(const BlockWgrad p) {
#if RNNKERN_HAS_SM80_TENSOR_CORES
  extern __shared__ __align__(16) float blk_smem[];
  int64_t* const x_q = reinterpret_cast<int64_t*>(blk_smem + kWgStages * kWgStageFloats);  // ci * x stride c
  int* const tap_q = reinterpret_cast<int*>(x_q + kWgQ);                                  // jr << 16 | jc, -1 past Q
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int c0 = blockIdx.x * kWgN, split = blockIdx.y;
  const int step0 = split * p.steps_per_split;
  const int steps = min((p.M + kWgK - 1) / kWgK, step0 + p.steps_per_split) - step0;

  for (int q = tid; q < kWgQ; q += kThreads) {
    int jr, jc, ci;
    p.tap(q, jr, jc, ci);
    x_q[q] = q < p.Q ? ci * p.xs.c : 0;
    tap_q[q] = q < p.Q ? (jr << 16) | jc : -1;
  }
  __syncthreads();

  // A copies: lane = the m of the step (a warp: 32 consecutive blocks, mostly neighbouring x
  // columns), q = warp + 8 i. G copies: thread tid owns m = tid / 8 of the step and the 16-byte
  // runs of columns 4 (tid % 8 + 8 j), j < 4: their (co, ph, pw) offsets are fixed for the block.
  const int gm = tid / 8, gq = tid % 8;
  int64_t g_col[4];
  bool g_ok[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int c = c0 + 4 * (gq + 8 * j);
    int co, ph, pw;
    p.column(c, co, ph, pw);
    g_ok[j] = c < p.Ncols;
    g_col[j] = g_ok[j] ? co * p.gy_c + int64_t(ph) * p.OW + pw : 0;
  }
  const auto issue = [&](int step, int stage) {
    if (step < steps) {
      float* As = blk_smem + stage * kWgStageFloats;
      float* Gs = As + kWgQ * kWgLdA;
      const int mb = (step0 + step) * kWgK;
      {  // A
        const int m = mb + lane;
        int n, I, J;
        p.block(m, n, I, J);
        const bool m_ok = m < p.M;
        const float* x_n = p.x + n * p.xs.n;
        for (int q = warp; q < kWgQ; q += kThreads / 32) {
          const int tap = tap_q[q], ih = I - (tap >> 16), iw = J - (tap & 0xffff);
          const bool ok = m_ok && tap >= 0 && ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
          cp_async4(smem_u32(As + q * kWgLdA + lane), ok ? x_n + x_q[q] + ih * p.xs.h + iw * p.xs.w : p.x, ok);
        }
      }
      {  // G
        const int m = mb + gm;
        int n, I, J;
        p.block(m, n, I, J);
        const bool m_ok = m < p.M;
        const float* gy_m = p.gy + n * p.gy_n + int64_t(I) * p.sH * p.OW + int64_t(J) * p.sW;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const bool ok = m_ok && g_ok[j];
          cp_async16(smem_u32(Gs + gm * kWgLdB + 4 * (gq + 8 * j)), ok ? gy_m + g_col[j] : p.gy, ok);
        }
      }
    }
    cp_async_commit();  // an empty group past the end: see cp_async_ring
  };

  // Warps as 4 (q) x 2 (c), a 32 x 64 warp tile: 2 (m16) x 8 (n8) mma tiles. Warps whose rows are
  // all past Q (q tile 128 against the FCN heads' 84) skip the arithmetic, not the barriers.
  const int wm = warp / 2, wn = warp % 2, g = lane / 4, t = lane % 4;
  const bool rows_live = wm * 32 < p.Q;
  float acc[2][8][4] = {};
  cp_async_ring<kWgStages>(steps, issue, [&](int stage) {
    const float* As = blk_smem + stage * kWgStageFloats;
    if (rows_live) warp_mma_tf32<8, kWgK, kWgLdA, kWgLdB, true, false>(acc, As, As + kWgQ * kWgLdA, wm, wn, lane);
  });

  float* ws = p.ws + int64_t(split) * p.Q * p.Ncols;
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int q = wm * 32 + i * 16 + g + 8 * h;
      if (q >= p.Q) continue;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int c = c0 + wn * 64 + j * 8 + 2 * t;  // c, c + 1 < Ncols together (Ncols % 4 == 0)
        if (c < p.Ncols)
          *reinterpret_cast<float2*>(ws + int64_t(q) * p.Ncols + c) = make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
      }
    }
#else
  __trap();  // launched only on sm_80+
#endif
}

// grad_w[ci, co, jr sH + ph, jc sW + pw] = sum over splits (in order) of P[(jr, jc, ci), (co, ph, pw)];
// one thread per P element, c fastest (coalesced reads; writes along pw).
__global__ void __launch_bounds__(kThreads) fcn_wgrad_finish_kernel(const BlockWgrad p) {
  const int64_t total = int64_t(p.Q) * p.Ncols, per_split = total;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int q = static_cast<int>(e / p.Ncols), c = static_cast<int>(e - int64_t(q) * p.Ncols);
    int jr, jc, ci;
    p.tap(q, jr, jc, ci);
    int co, ph, pw;
    p.column(c, co, ph, pw);
    float v = 0.f;
    for (int s = 0; s < p.splits; ++s) v += p.ws[s * per_split + e];
    p.gw[((int64_t(ci) * p.Cout + co) * p.kH + jr * p.sH + ph) * p.kW + jc * p.sW + pw] = v;
  }
}

// ---------------------------------------------------------------------------------- host ----

void check_int32(const char* op, int64_t v, const char* what) {
  TORCH_CHECK(v < (int64_t(1) << 31), op, ": ", what, " (", v, ") exceeds the 32-bit index range of the CUDA kernel");
}

Params base_params(const char* op, const ConvT2dGeometry& g) {
  for (int64_t v : {g.N * g.H * g.W, g.N * g.OH * g.OW, g.Cout * g.kH * g.kW, g.Cin * g.kH * g.kW})
    check_int32(op, v, "a GEMM dimension");
  for (int64_t v : {g.sH, g.sW, g.pH, g.pW, g.dH, g.dW}) check_int32(op, v, "a stride, padding or dilation");
  // (the kernels' positions o + p = i * s + k * d on the padded output are ints, each side computed
  // from its own terms; the sizes are < 2^31 here)
  check_int32(op, std::max((g.H - 1) * g.sH + (g.kH - 1) * g.dH, g.OH + g.pH), "the padded output's height");
  check_int32(op, std::max((g.W - 1) * g.sW + (g.kW - 1) * g.dW, g.OW + g.pW), "the padded output's width");
  Params p{};
  p.N = g.N; p.Cin = g.Cin; p.H = g.H; p.W = g.W; p.Cout = g.Cout; p.G = g.G;
  p.kH = g.kH; p.kW = g.kW; p.sH = g.sH; p.sW = g.sW; p.pH = g.pH; p.pW = g.pW;
  p.dH = g.dH; p.dW = g.dW; p.OH = g.OH; p.OW = g.OW;
  p.cin_g = g.cin_g(); p.cout_g = g.cout_g(); p.kk = g.kH * g.kW;
  p.tsH = g.sH / std::gcd(g.sH, g.dH);
  p.tsW = g.sW / std::gcd(g.sW, g.dW);
  p.eH = p.tsH * g.dH / g.sH;  // lcm(s, d) / s
  p.eW = p.tsW * g.dW / g.sW;
  p.splits = 1;
  p.k_chunk = 0;
  return p;
}

// Tile shape from the GEMM's aspect ratio.
enum class Tile { k64x64, k128x32, k32x128 };
Tile pick_tile(int64_t M, int64_t Nn) {
  if (Nn <= 32 && M >= 128) return Tile::k128x32;
  if (M <= 32 && Nn >= 128) return Tile::k32x128;
  return Tile::k64x64;
}
int tile_m(Tile t) { return t == Tile::k128x32 ? 128 : (t == Tile::k32x128 ? 32 : 64); }
int tile_n(Tile t) { return t == Tile::k128x32 ? 32 : (t == Tile::k32x128 ? 128 : 64); }

// Split K until the grid has about two waves of blocks, keeping >= 8 K-tiles per split.
void choose_splits(Params& p, Tile t, int64_t groups_z) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t tiles = ((p.M + tile_m(t) - 1) / tile_m(t)) * ((p.Nn + tile_n(t) - 1) / tile_n(t)) * groups_z;
  int64_t splits = 1;
  const int64_t k_tiles = (p.K + kBK - 1) / kBK;
  while (tiles * splits < 2 * sms && k_tiles / (splits * 2) >= 8 && splits < 64) splits *= 2;
  p.splits = static_cast<int>(splits);
  p.k_chunk = static_cast<int>(((k_tiles + splits - 1) / splits) * kBK);
  if (p.k_chunk == 0) p.k_chunk = kBK;
}

template <typename scalar_t>
void launch(Params& p, Tile t, int64_t grid_x_rows, int64_t grid_z, const at::Tensor& like) {
  using acc_t = at::opmath_type<scalar_t>;
  const int bm = tile_m(t), bn = tile_n(t);
  TORCH_CHECK(grid_z <= 65535, "conv_transpose2d: too many groups x phases x splits for one launch (", grid_z, ")");
  const int64_t gy = (p.Nn + bn - 1) / bn;
  TORCH_CHECK(gy <= 65535, "conv_transpose2d: GEMM N dimension too large (", p.Nn, ")");
  const dim3 grid(static_cast<unsigned>((grid_x_rows + bm - 1) / bm), static_cast<unsigned>(gy),
                  static_cast<unsigned>(grid_z));
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  at::Tensor ws;
  if (p.splits > 1) {
    ws = at::empty({int64_t(p.splits) * p.G * p.M * p.Nn},
                   like.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    p.ws = ws.data_ptr();
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  switch (t) {
    case Tile::k64x64:
      conv_transpose_gemm_kernel<scalar_t, 64, 64><<<grid, kThreads, 0, stream>>>(p);
      break;
    case Tile::k128x32:
      conv_transpose_gemm_kernel<scalar_t, 128, 32><<<grid, kThreads, 0, stream>>>(p);
      break;
    case Tile::k32x128:
      conv_transpose_gemm_kernel<scalar_t, 32, 128><<<grid, kThreads, 0, stream>>>(p);
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (p.splits > 1) {
    const int64_t total = int64_t(p.G) * p.M * p.Nn;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20));
    splitk_reduce_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// RNNKERN_CONVT_PATH=simt: every pass on this file's SIMT kernels instead of conv.cu's engine
// (read per call, so a test can switch it). Unset or "gather": the engine where it applies.
bool simt_requested() { return env_switch("RNNKERN_CONVT_PATH", "gather", "simt"); }

// RNNKERN_CONVT_FCN=general (read per call): the FCN upsamplers take the general kernels (the
// engine's sub-pixel forward, the split-K grad_input) instead of the block GEMMs, for comparison.
bool fcn_general_requested() { return env_switch("RNNKERN_CONVT_FCN", "block", "general"); }

// The sizes every FCN block GEMM takes; the caller has checked they fit in int.
void block_geometry(const ConvT2dGeometry& g, FcnGeometry& p) {
  p.N = static_cast<int>(g.N);
  p.Cin = static_cast<int>(g.Cin);
  p.Cout = static_cast<int>(g.Cout);
  p.H = static_cast<int>(g.H);
  p.W = static_cast<int>(g.W);
  p.sH = static_cast<int>(g.sH);
  p.sW = static_cast<int>(g.sW);
  p.kH = static_cast<int>(g.kH);
  p.kW = static_cast<int>(g.kW);
  p.Jh = p.kH / p.sH;
  p.Jw = p.kW / p.sW;
  p.OH = static_cast<int>(g.OH);
  p.OW = static_cast<int>(g.OW);
  p.Hb = p.H + p.Jh - 1;
  p.Wb = p.W + p.Jw - 1;
}

// sm_80+ (cp.async, mma.sync) with room for the block's dynamic shared memory (sm_86 / sm_89 /
// sm_120 allow 99 KB a block, sm_80 163 KB, sm_90 227 KB).
bool block_gemm_fits(int smem_bytes) {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  return prop->major >= 8 && prop->sharedMemPerBlockOptin >= static_cast<size_t>(smem_bytes);
}

// 16-byte cp.async sources need 16-byte aligned bases (a weight may be a view into a flat buffer).
bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0; }

// Blocks of `kernel` (kThreads threads, `smem` bytes of dynamic shared memory) the GPU holds at
// once: one wave. Raises the kernel's shared-memory cap first (the occupancy query counts on it).
template <typename Kernel>
int64_t wave_slots(Kernel kernel, size_t smem) {
  allow_full_shared_memory(kernel);
  const int per_sm = blocks_per_sm(kernel, kThreads, smem);
  return int64_t(std::max(per_sm, 1)) * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}

// A grid-stride finishing kernel's blocks for `total` elements.
unsigned finish_blocks(int64_t total) {
  return static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20));
}

// Split a reduction of `steps` steps over blockIdx so that `tiles` x splits blocks fill one wave
// of `slots`, rounding down (a second wave of a few blocks would double the time), with at least
// `min_steps` steps a split so the copy ring fills. Sets p.steps_per_split and p.splits.
template <class P>
void split_over_wave(P& p, int64_t slots, int64_t tiles, int64_t steps, int64_t min_steps) {
  const int64_t want = std::max<int64_t>(1, std::min<int64_t>(slots / tiles, steps / min_steps));
  p.steps_per_split = static_cast<int>((steps + want - 1) / want);
  p.splits = static_cast<int>((steps + p.steps_per_split - 1) / p.steps_per_split);
}

// What the three FCN block GEMMs all need: no override (RNNKERN_CONVT_PATH=simt,
// RNNKERN_CONVT_FCN=general), fp32 under cudnn.allow_tf32, one group, k = J s with no padding,
// dilation or output_padding, and sW % 4 == 0 (pw runs of 4: 16-byte copies, float2 stores).
bool fcn_block_shape(const ConvT2dGeometry& g, at::ScalarType dtype) {
  return !simt_requested() && !fcn_general_requested() && dtype == at::kFloat && cudnn_tf32_allowed(CudnnOp::kConv) &&
         g.G == 1 && g.pH == 0 && g.pW == 0 && g.dH == 1 && g.dW == 1 && g.opH == 0 && g.opW == 0 &&
         g.kH % g.sH == 0 && g.kW % g.sW == 0 && g.sW % 4 == 0;
}

// The block GEMM above serves grad_input where: fcn_block_shape (fp32 without TF32, fp64 and
// 16-bit keep the split-K kernel), sm_80+ with room for its shared memory, s x s blocks whose
// k-steps of 32 hold whole 16-byte runs ((sH sW) % 32 == 0), a contiguous 16-byte-aligned
// grad_output and a 16-byte-aligned weight, and N OH OW < 2^31 (block_geometry keeps OH, OW, kH,
// kW as int).
bool fcn_block_dgrad(const ConvT2dGeometry& g, const at::Tensor& grad_output, const at::Tensor& weight) {
  return fcn_block_shape(g, grad_output.scalar_type()) && block_gemm_fits(kBlkSmemBytes) && aligned16(weight) &&
         (g.sH * g.sW) % kBlkK == 0 && grad_output.is_contiguous() && aligned16(grad_output) &&
         g.N * g.H * g.W > 0 && g.Cin > 0 && g.Cout > 0 &&
         (int64_t(g.kH / g.sH) * (g.kW / g.sW) * g.Cin + kBlkQ - 1) / kBlkQ <= 65535 &&
         g.N * g.OH * g.OW < (int64_t(1) << 31);
}

// w: the weight, contiguous (the caller's copy, which fcn_block_dgrad checked)
void fcn_block_dgrad_cuda(const at::Tensor& grad_output, const at::Tensor& w, const ConvT2dGeometry& g,
                          at::Tensor& grad_input) {
  const char* op = "conv_transpose2d_backward_input";
  BlockDgrad p{};
  p.gy = grad_output.const_data_ptr<float>();
  p.w = w.const_data_ptr<float>();
  p.gx = grad_input.data_ptr<float>();
  p.gxs = strides_of(grad_input);
  block_geometry(g, p);
  const int64_t M = g.N * p.Hb * p.Wb, Q = int64_t(p.Jh) * p.Jw * g.Cin, K = g.Cout * g.sH * g.sW;
  check_int32(op, M + kBlkM, "N * (H + kH / sH - 1) * (W + kW / sW - 1)");
  check_int32(op, Q, "C_in * (kH / sH) * (kW / sW)");
  check_int32(op, K, "C_out * sH * sW");
  p.M = static_cast<int>(M);
  p.Q = static_cast<int>(Q);
  p.K = static_cast<int>(K);
  p.gy_n = grad_output.stride(0);
  p.gy_c = grad_output.stride(1);
  const int64_t tiles = ((M + kBlkM - 1) / kBlkM) * ((Q + kBlkQ - 1) / kBlkQ);
  split_over_wave(p, wave_slots(fcn_dgrad_block_kernel, kBlkSmemBytes), tiles, K / kBlkK, 8);
  TORCH_CHECK(p.splits <= 65535 && (Q + kBlkQ - 1) / kBlkQ <= 65535, op, ": grad_output too large for one launch");
  at::Tensor ws = at::empty({int64_t(p.splits) * M * Q}, grad_output.options());
  p.ws = ws.data_ptr<float>();
  auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>((M + kBlkM - 1) / kBlkM), static_cast<unsigned>((Q + kBlkQ - 1) / kBlkQ),
                  static_cast<unsigned>(p.splits));
  fcn_dgrad_block_kernel<<<grid, kThreads, kBlkSmemBytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  fcn_dgrad_finish_kernel<<<finish_blocks(g.N * g.H * g.W * g.Cin), kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The block GEMM above serves grad_weight where: fcn_block_shape, sm_80+ with room for its shared
// memory, Q = Jh Jw C_in <= 128 (one tile of rows), a contiguous 16-byte-aligned grad_output,
// and 32-bit sizes (block_geometry keeps OH, OW, kH, kW as int; N OH OW < 2^31 bounds them all,
// as the SIMT kernel's own limit does).
bool fcn_block_wgrad(const ConvT2dGeometry& g, const at::Tensor& grad_output, const at::Tensor& input) {
  return fcn_block_shape(g, grad_output.scalar_type()) && block_gemm_fits(kWgSmemBytes) &&
         grad_output.is_contiguous() && aligned16(grad_output) && g.N * g.H * g.W > 0 && g.Cin > 0 && g.Cout > 0 &&
         (g.kH / g.sH) * (g.kW / g.sW) * g.Cin <= kWgQ && g.Cout * g.sH * g.sW < (int64_t(1) << 31) - kWgN &&
         g.N * g.OH * g.OW < (int64_t(1) << 31);
}

void fcn_block_wgrad_cuda(const at::Tensor& grad_output, const at::Tensor& input, const ConvT2dGeometry& g,
                          at::Tensor& grad_weight) {
  const char* op = "conv_transpose2d_backward_weight";
  TORCH_CHECK(grad_weight.is_contiguous(), op, ": internal: the block grad_weight writes a contiguous tensor");
  BlockWgrad p{};
  p.x = input.const_data_ptr<float>();
  p.gy = grad_output.const_data_ptr<float>();
  p.gw = grad_weight.data_ptr<float>();
  p.xs = strides_of(input);
  block_geometry(g, p);
  const int64_t M = g.N * p.Hb * p.Wb, Ncols = g.Cout * g.sH * g.sW;
  check_int32(op, M + kWgK, "N * (H + kH / sH - 1) * (W + kW / sW - 1)");
  p.M = static_cast<int>(M);
  p.Q = p.Jh * p.Jw * p.Cin;
  p.Ncols = static_cast<int>(Ncols);
  p.gy_n = grad_output.stride(0);
  p.gy_c = grad_output.stride(1);
  const int64_t col_tiles = (Ncols + kWgN - 1) / kWgN;
  split_over_wave(p, wave_slots(fcn_wgrad_block_kernel, kWgSmemBytes), col_tiles, (M + kWgK - 1) / kWgK, 4);
  TORCH_CHECK(p.splits <= 65535 && col_tiles < (int64_t(1) << 31), op, ": grad_output too large for one launch");
  at::Tensor ws = at::empty({int64_t(p.splits) * p.Q * Ncols}, grad_output.options());
  p.ws = ws.data_ptr<float>();
  auto stream = at::cuda::getCurrentCUDAStream();
  fcn_wgrad_block_kernel<<<dim3(static_cast<unsigned>(col_tiles), static_cast<unsigned>(p.splits)), kThreads,
                           kWgSmemBytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  fcn_wgrad_finish_kernel<<<finish_blocks(int64_t(p.Q) * Ncols), kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// grad_input / grad_weight through the convolution engine (see the top of the file).
bool backward_on_engine(const ConvT2dGeometry& g) {
  return !simt_requested() && g.sH * g.sW <= 16 && g.conv_maps_back() && g.N > 0 && g.Cin > 0 && g.Cout > 0;
}

void check_device(const char* op, const at::Tensor& ref, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda() && t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but expected ",
              ref.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), " but expected ",
              ref.scalar_type());
}

}  // namespace

// The upsamplers' forward on fcn_forward_block_kernel: fcn_block_shape, a 16-byte-aligned
// weight, K = Jh Jw C_in <= 96 (A stays in shared memory), sm_80+ with room for the kernel's
// shared memory, 32-bit output and weight offsets, and an NCHW result (an input that is not
// channels_last). Everything else of that family keeps subpixel_forward.
bool fcn_block_forward(const ConvT2dGeometry& g, const at::Tensor& input, const at::Tensor& weight) {
  if (!fcn_block_shape(g, input.scalar_type()) || !aligned16(weight) || conv_channels_last(input) || g.Cin <= 0)
    return false;
  const int64_t K = (g.kH / g.sH) * (g.kW / g.sW) * g.Cin;
  return K <= kFwdKMax && block_gemm_fits(static_cast<int>(fwd_smem_bytes(static_cast<int>((K + 7) / 8 * 8)))) &&
         g.Cout * g.OH * g.OW < (int64_t(1) << 31) && weight.numel() < (int64_t(1) << 31);
}

// w, b: the weight and (undefined or) bias, contiguous (the caller's copies, which fcn_block_forward checked)
void fcn_block_forward_cuda(const at::Tensor& input, const at::Tensor& w, const at::Tensor& b, const ConvT2dGeometry& g,
                            at::Tensor& output) {
  const char* op = "conv_transpose2d";
  TORCH_CHECK(output.is_contiguous(), op, ": internal: the block forward writes a contiguous output");
  BlockFwd p{};
  p.x = input.const_data_ptr<float>();
  p.w = w.const_data_ptr<float>();
  p.bias = b.defined() ? b.const_data_ptr<float>() : nullptr;
  p.y = output.data_ptr<float>();
  p.xs = strides_of(input);
  block_geometry(g, p);
  const int64_t M = g.N * p.Hb * p.Wb, Ncols = g.Cout * g.sH * g.sW;
  check_int32(op, M + kFwdM, "N * (H + kH / sH - 1) * (W + kW / sW - 1)");
  check_int32(op, Ncols + kFwdN, "C_out * sH * sW");
  p.M = static_cast<int>(M);
  p.Ncols = static_cast<int>(Ncols);
  p.K = p.Jh * p.Jw * p.Cin;
  p.Kp = (p.K + 7) / 8 * 8;
  p.col_tiles = static_cast<int>((Ncols + kFwdN - 1) / kFwdN);
  p.units = (M + kFwdM - 1) / kFwdM * p.col_tiles;
  const size_t smem = fwd_smem_bytes(p.Kp);
  // one wave: the runs of tiles are even, so a second, partial wave would only add its length
  const auto blocks = static_cast<unsigned>(std::min(p.units, wave_slots(fcn_forward_block_kernel, smem)));
  fcn_forward_block_kernel<<<blocks, kThreads, smem, at::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The FCN upsampling layers (k = J * s, one stride s >= 4 for both dims, no padding, dilation 1,
// no output_padding: k16 s8, k64 s32): the output is the pixel shuffle of a stride-1
// "full" convolution of x with J x J kernels and C_out * s * s output channels,
//   y[n, co, hq*s + ph, wq*s + pw] = sum_{ci, jr, jc} x[n, ci, hq - jr, wq - jc] w[ci, co, ph + s*jr, pw + s*jc],
// so it runs as conv2d on the engine with dense tiles (N = C_out * s^2 = 21504 for the FCN-32s
// head) where the phase-major mapping gives each of the s^2 phases a sliver of a tile (N = 21)
// and stores every element s apart; its epilogue stores each channel at its shuffled position.
// k == s (J = 1, the U-Net's k2 s2) is the same with a 1x1 kernel: one GEMM on the engine's
// tensor cores instead of the SIMT shuffle kernel (on an H200, bf16 CL 1024->512 at 32x32: the
// SIMT kernel ran 3.0 ms against cuDNN's 0.08).
bool subpixel_forward(const ConvT2dGeometry& g) {
  // >= 8 input channels and >= 8 shuffled output channels (C_out / groups * s^2) per group:
  // narrower products run conv.cu's direct kernel, which has no shuffled epilogue (the depthwise
  // bilinear upsampler stays on the phase path; so does k2 s2 with one output channel a group)
  const bool one_tap = g.kH == g.sH && g.kW == g.sW;
  // (s = 1 with k = 1 is no shuffle at all: the shuffled epilogue needs a factor >= 2)
  return g.sH == g.sW && (g.sH >= 4 || (one_tap && g.sH >= 2)) && g.kH % g.sH == 0 && g.kW % g.sW == 0 && g.pH == 0 &&
         g.pW == 0 && g.dH == 1 && g.dW == 1 && g.opH == 0 && g.opW == 0 && g.cin_g() >= 8 &&
         g.cout_g() * g.sH * g.sW >= 8;
}

void subpixel_forward_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           const ConvT2dGeometry& g, at::Tensor& output) {
  const int64_t s = g.sH, jh = g.kH / s, jw = g.kW / s, cg = g.cout_g();
  // w viewed as (G, cin_g, cout_g, jr, ph, jc, pw), kernel rows and columns flipped (the "full"
  // convolution reads x[hq - jr]), permuted to conv2d's (channel, cin_g, jh, jw) with the
  // channel order conv2d_forward_shuffled_cuda stores for the output's layout
  const bool cl = conv_channels_last(input);
  const at::Tensor w = weight.reshape({g.G, g.cin_g(), cg, jh, s, jw, s}).flip({3, 5});
  const at::Tensor w2 = (cl ? w.permute({0, 4, 6, 2, 1, 3, 5}) : w.permute({0, 2, 4, 6, 1, 3, 5}))
                            .reshape({g.Cout * s * s, g.cin_g(), jh, jw});
  std::optional<at::Tensor> b2;
  if (bias.has_value()) {
    const at::Tensor b = bias->view({g.G, cg});
    b2 = (cl ? b.view({g.G, 1, cg}).expand({g.G, s * s, cg}) : b.view({g.G, cg, 1}).expand({g.G, cg, s * s}))
             .reshape({g.Cout * s * s});
  }
  conv2d_forward_shuffled_cuda(input, w2, b2, {jh - 1, jw - 1}, g.G, s, output);
}

at::Tensor conv_transpose2d_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                         at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                         at::IntArrayRef dilation) {
  const char* op = "conv_transpose2d";
  const ConvT2dGeometry g = conv_transpose2d_geometry(op, input.sizes(), weight.sizes(), stride, padding,
                                                      output_padding, groups, dilation);
  check_conv_dtype(op, "input", input);
  check_device(op, input, "weight", weight);
  if (bias.has_value()) {
    check_device(op, input, "bias", *bias);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.Cout, op, ": bias must have shape (", g.Cout, "), got ",
                bias->sizes());
  }
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  const bool cl = conv_channels_last(input);
  at::Tensor output = at::empty({g.N, g.Cout, g.OH, g.OW}, input.options().memory_format(conv_output_format(input)));
  if (output.numel() == 0) return output;
  const at::Tensor w = weight.contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const bool shuffle = g.kH == g.sH && g.kW == g.sW && g.pH == 0 && g.pW == 0 && g.dH == 1 && g.dW == 1 &&
                       g.opH == 0 && g.opW == 0;
  const bool fcn_block = fcn_block_forward(g, input, w);
  // the cuBLAS route first: it has its own size limits, not base_params' 32-bit ones
  if (!fcn_block && !simt_requested() && conv_transpose2d_forward_gemm_cuda(input, weight, bias, g, output))
    return output;
  Params p = base_params(op, g);
  p.xs = strides_of(input);
  p.os = strides_of(output);
  p.x = input.const_data_ptr();
  p.w = w.const_data_ptr();
  p.bias = b.defined() ? b.const_data_ptr() : nullptr;
  p.out = output.data_ptr();
  if (fcn_block) {
    fcn_block_forward_cuda(input, w, b, g, output);
    return output;
  }
  if (!simt_requested() && subpixel_forward(g)) {
    subpixel_forward_cuda(input, weight, bias, g, output);
    return output;
  }
  if (!shuffle && !simt_requested()) {
    conv_transpose2d_forward_gather_cuda(input, weight, bias, g, output);
    return output;
  }
  int64_t rows, grid_z;
  if (shuffle) {
    p.mode = kShuffle;
    p.M = g.N * g.H * g.W;
    p.Nn = g.cout_g() * g.kH * g.kW;
    p.K = g.cin_g();
    p.k_chunk = p.K;   // one split: block_view reads K range [0, k_chunk)
    p.a_m_fast = !cl;  // NCHW: pixels contiguous; channels_last: channels contiguous
    p.b_n_fast = true;
    rows = p.M;
    grid_z = g.G;
  } else {
    p.mode = kFwd;
    const int64_t ohp = (g.OH + g.sH - 1) / g.sH, owp = (g.OW + g.sW - 1) / g.sW;  // largest phase
    p.M = static_cast<int>(g.N * ohp * owp);
    p.Nn = g.cout_g();
    p.K = 0;  // per phase, in the kernel
    p.a_m_fast = !cl;
    p.b_n_fast = true;
    rows = p.M;
    grid_z = g.G * g.sH * g.sW;
  }
  const Tile t = pick_tile(p.M, p.Nn);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "conv_transpose2d_forward_cuda",
                                  [&] { launch<scalar_t>(p, t, rows, grid_z, output); });
  return output;
}

at::Tensor conv_transpose2d_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                                at::IntArrayRef input_size, at::IntArrayRef stride,
                                                at::IntArrayRef padding, at::IntArrayRef output_padding,
                                                int64_t groups, at::IntArrayRef dilation) {
  const char* op = "conv_transpose2d_backward_input";
  const ConvT2dGeometry g = conv_transpose2d_geometry(op, input_size, weight.sizes(), stride, padding,
                                                      output_padding, groups, dilation);
  check_conv_transpose2d_grad_output(op, g, grad_output);
  check_conv_dtype(op, "grad_output", grad_output);
  check_device(op, grad_output, "weight", weight);
  const at::cuda::OptionalCUDAGuard guard(device_of(grad_output));
  if (backward_on_engine(g)) {
    return conv2d_forward_cuda(grad_output, weight, std::nullopt, stride, padding, dilation, groups);
  }
  const bool cl = conv_channels_last(grad_output);
  at::Tensor grad_input = at::empty(input_size, grad_output.options().memory_format(conv_output_format(grad_output)));
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor w = weight.contiguous();
  if (fcn_block_dgrad(g, grad_output, w)) {
    fcn_block_dgrad_cuda(grad_output, w, g, grad_input);
    return grad_input;
  }
  Params p = base_params(op, g);
  p.mode = kDgrad;
  p.ys = strides_of(grad_output);
  p.os = strides_of(grad_input);
  p.y = grad_output.const_data_ptr();
  p.w = w.const_data_ptr();
  p.out = grad_input.data_ptr();
  p.M = static_cast<int>(g.N * g.H * g.W);
  p.Nn = static_cast<int>(g.cin_g());
  p.K = static_cast<int>(g.cout_g() * g.kH * g.kW);
  p.k_cfast = cl;      // channels_last: consecutive K = consecutive channels
  p.a_m_fast = false;  // NCHW: consecutive K = consecutive kw = neighbouring output columns
  p.b_n_fast = false;
  const Tile t = pick_tile(p.M, p.Nn);
  choose_splits(p, t, g.G);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                  "conv_transpose2d_backward_input_cuda",
                                  [&] { launch<scalar_t>(p, t, p.M, int64_t(g.G) * p.splits, grad_input); });
  return grad_input;
}

std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward_weight_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef weight_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
    bool bias_grad) {
  const char* op = "conv_transpose2d_backward_weight";
  const ConvT2dGeometry g = conv_transpose2d_geometry(op, input.sizes(), weight_size, stride, padding,
                                                      output_padding, groups, dilation);
  check_conv_transpose2d_grad_output(op, g, grad_output);
  check_conv_dtype(op, "grad_output", grad_output);
  check_device(op, grad_output, "input", input);
  const at::cuda::OptionalCUDAGuard guard(device_of(grad_output));
  const bool engine = backward_on_engine(g) && g.H * g.W > 0;
  at::Tensor grad_weight =
      engine ? std::get<0>(conv2d_backward_weight_cuda(input, grad_output, weight_size, stride, padding, dilation,
                                                       groups, /*bias_grad=*/false))
             : at::empty(weight_size, grad_output.options());
  // ATen's reduction, as conv.cu's: deterministic, coalesced in either layout
  at::Tensor grad_bias = conv_grad_bias_cuda(grad_output, bias_grad);
  if (!engine && grad_weight.numel() > 0 && fcn_block_wgrad(g, grad_output, input)) {
    fcn_block_wgrad_cuda(grad_output, input, g, grad_weight);
    return {grad_weight, grad_bias};
  }
  const bool cl = conv_channels_last(grad_output);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                  "conv_transpose2d_backward_weight_cuda", [&] {
    if (!engine && grad_weight.numel() > 0) {
      Params p = base_params(op, g);
      p.mode = kWgrad;
      p.xs = strides_of(input);
      p.ys = strides_of(grad_output);
      p.x = input.const_data_ptr();
      p.y = grad_output.const_data_ptr();
      p.out = grad_weight.data_ptr();
      p.M = static_cast<int>(g.cin_g());
      p.Nn = static_cast<int>(g.cout_g() * g.kH * g.kW);
      p.K = static_cast<int>(g.N * g.H * g.W);
      p.a_m_fast = cl;  // channels_last: channels contiguous; NCHW: pixels contiguous
      p.b_n_fast = true;  // NCHW: consecutive j = consecutive kw = neighbouring output columns;
      p.j_cfast = cl;     // channels_last: consecutive j = consecutive channels
      const Tile t = pick_tile(p.M, p.Nn);
      choose_splits(p, t, g.G);
      launch<scalar_t>(p, t, p.M, int64_t(g.G) * p.splits, grad_weight);
    }
  });
  return {grad_weight, grad_bias};
}

}  // namespace rnnkern
