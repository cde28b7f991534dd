// NCHW convolutions with fewer output channels a group than a vector (narrow layers, segmentation
// heads), fp32 on AVX-512, for conv.cpp. The direct kernels vectorise along output channels: below
// 16 of them most lanes are zeros, and NCHW operands go through channels_last copies first. Here
// the vectors run along an output row instead, 16 pixels a vector (unit column stride): a block of
// up to 8 output channels x 2-4 pixel vectors stays in registers across the whole reduction; each
// (input channel, tap) loads its input vectors once for all the block's channels and broadcasts
// each channel's weight. Lanes whose input column lies in the padding are masked off (a masked
// load does not touch them), so there is no padded copy. The weight gradient of layers narrow on
// both sides runs along the rows the same way (backward_weight_nchw, below).
//
// Every output element is produced by one task, its sum in (input channel, r, s) order (the
// channels_last weight gradient below: per image, then over the images in order): bitwise
// reproducible for any thread count. Compiled with a target attribute and called only where the
// CPU has AVX-512 (conv.cpp's cpu_has_avx512).
#pragma once
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../conv_common.h"
#include "simd_mask.h"

namespace rnnkern {
namespace narrow {

// The prepared weight (G, Kg, KH, KW, Cg) with each group's output channels padded with zero
// kernels to a multiple of KB: the block loop needs no channel tail.
inline std::vector<float> pad_output_channels(const ConvGeometry& g, const float* wt, int64_t kb, int64_t* Kp) {
  const int64_t Kg = g.Kg(), per = g.taps() * g.Cg();
  *Kp = (Kg + kb - 1) / kb * kb;
  std::vector<float> w(static_cast<size_t>(g.G * *Kp * per), 0.f);
  for (int64_t gi = 0; gi < g.G; ++gi)
    std::copy(wt + gi * Kg * per, wt + (gi + 1) * Kg * per, w.begin() + gi * *Kp * per);
  return w;
}

// Kernel widths up to this many columns (applies() sends wider ones to the direct kernels).
constexpr int64_t kMaxKW = 16;

// y[n, k0 .. k0 + kn, oh, :] for output channels k0 (within group gi) on, kn <= KB of them: KB
// channels x PV pixel vectors = 16 accumulators.
template <int KB, int PV>
__attribute__((target("avx512f"))) void forward_row(const ConvGeometry& g, const float* x, const float* w,
                                                     int64_t Kp, const float* b, float* y, int64_t n, int64_t gi,
                                                     int64_t k0, int64_t kn, int64_t oh) {
  const int64_t Cg = g.Cg(), Kg = g.Kg(), per = g.taps() * Cg;
  const float* wg = w + (gi * Kp + k0) * per;  // channel k's tap (r, s), input c: wg[k * per + (r * KW + s) * Cg + c]
  for (int64_t ow0 = 0; ow0 < g.OW; ow0 += 16 * PV) {
    __mmask16 m[PV];
    for (int p = 0; p < PV; ++p) m[p] = lanes(g.OW - ow0 - 16 * p);
    // each tap column's load masks depend on (s, p) alone: set once a block, not once an (input
    // channel, r, s), which left the loop issue-bound on mask arithmetic (bench/NOTES.md)
    __mmask16 ms[kMaxKW][PV];
    for (int64_t s = 0; s < g.KW; ++s)
      for (int p = 0; p < PV; ++p) ms[s][p] = m[p] & lanes_in_row(ow0 + 16 * p - g.pl + s * g.dw, g.W);
    __m512 acc[KB][PV];
    for (int k = 0; k < KB; ++k) {
      const __m512 init = _mm512_set1_ps(b != nullptr && k < kn ? b[gi * Kg + k0 + k] : 0.f);
      for (int p = 0; p < PV; ++p) acc[k][p] = init;
    }
    for (int64_t c = 0; c < Cg; ++c) {
      const float* plane = x + ((n * g.C + gi * Cg + c) * g.H) * g.W;
      for (int64_t r = 0; r < g.KH; ++r) {
        const int64_t ih = oh * g.sh - g.pt + r * g.dh;
        if (ih < 0 || ih >= g.H) continue;  // a tap row in the padding
        const float* xrow = plane + ih * g.W;
        for (int64_t s = 0; s < g.KW; ++s) {
          __m512 xv[PV];
          const float* xs = xrow + ow0 - g.pl + s * g.dw;  // lane i of vector p reads xs[16 p + i]
          for (int p = 0; p < PV; ++p) xv[p] = _mm512_maskz_loadu_ps(ms[s][p], xs + 16 * p);
          const float* wk = wg + (r * g.KW + s) * Cg + c;
          for (int k = 0; k < KB; ++k) {
            const __m512 wv = _mm512_set1_ps(wk[k * per]);
            for (int p = 0; p < PV; ++p) acc[k][p] = _mm512_fmadd_ps(wv, xv[p], acc[k][p]);
          }
        }
      }
    }
    for (int k = 0; k < KB; ++k) {
      if (k >= kn) break;
      float* yrow = y + (((n * g.K + gi * Kg + k0 + k) * g.OH + oh) * g.OW) + ow0;
      for (int p = 0; p < PV; ++p) _mm512_mask_storeu_ps(yrow + 16 * p, m[p], acc[k][p]);
    }
  }
}

// Where it runs: unit column stride, at most 8 output channels a group and rows of at least two
// vectors, so the 16 accumulators are mostly live (one core: 8 -> 8 at 64x64 0.84x torch on the
// direct kernels, 1.41x here; 8 -> 1 0.94x on the GEMM engine, 1.70x here; but 64 -> 11 at 8x8,
// three quarters of each vector past the row, 1.44x direct against 0.32x here).
inline bool applies(const ConvGeometry& g) { return g.sw == 1 && g.Kg() <= 8 && g.OW >= 32 && g.KW <= kMaxKW; }

// NCHW x (N, C, H, W) and y (N, K, OH, OW) dense, wt the prepared (G, Kg, KH, KW, Cg) weight.
template <int KB, int PV>
void forward_blocks(const ConvGeometry& g, const float* x, const float* wt, const float* b, float* y) {
  int64_t Kp = 0;
  const std::vector<float> w = pad_output_channels(g, wt, KB, &Kp);
  const int64_t kblocks = Kp / KB, rows = g.N * g.G * kblocks * g.OH;
  const double macs = double(g.N) * g.OH * g.OW * g.K * g.Cg() * g.taps();
  at::parallel_for(0, rows, macs < double(1 << 21) ? rows : 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t oh = row % g.OH, kb = (row / g.OH) % kblocks, gi = (row / g.OH / kblocks) % g.G;
      const int64_t n = row / g.OH / kblocks / g.G;
      forward_row<KB, PV>(g, x, w.data(), Kp, b, y, n, gi, kb * KB, std::min<int64_t>(KB, g.Kg() - kb * KB), oh);
    }
  });
}

// ---- grad_weight ----------------------------------------------------------------------------
// dW[k, c, r, s] = sum over (n, oh, ow) of gy[n, k, oh, ow] x[n, c, oh sh - pt + r dh, ow - pl + s dw].
// One task a (group, block of KB output channels, run of up to kWgradChannels input channels). It
// walks the images and output rows once; for each row it visits every (input channel, kernel row)
// of its run, whose KB x KW vector accumulators it loads from a task-local buffer (L1-sized), adds
// the row's products to, and stores back. So each gy row is read from memory once per task and
// then from L1 for all of the run's (c, r), where a task per (c, r) with its accumulators held in
// registers re-read all of gy Cg x KH times (measured: 8 -> 8 at 64x64 0.91 ms, L2-bound). Each
// accumulator lane adds its products in (n, oh, column block) order and the lanes are summed at
// the end in a fixed order: bitwise reproducible for any thread count. gy lanes past the row and
// x lanes in the padding load as zeros (both masked, so a NaN past the row cannot leak in).

// Where it runs: both operands NCHW, unit column stride, <= 8 channels a group on both sides (from
// 16 input channels the direct kernels' vectors over them are full, and faster: one core, 16 -> 8
// at 64x64 0.97 ms there against 1.47 here, 32 -> 8 1.58 against 2.98), rows of at least two
// vectors, 1 <= KW <= 7 (the accumulators of one (c, r) stay in registers).
inline bool backward_weight_applies(const ConvGeometry& g) {
  return g.sw == 1 && g.Kg() <= 8 && g.Cg() <= 8 && g.OW >= 32 && g.KW >= 1 && g.KW <= 7;
}

constexpr int64_t kWgradRows = 4;      // output rows a pass over a (c, r)'s accumulators
constexpr int64_t kWgradChannels = 8;  // input channels a task (backward_weight_applies: all of them)

template <int KB, int KW>
__attribute__((target("avx512f"))) void backward_weight_task(const ConvGeometry& g, const float* gy, const float* x,
                                                              const __mmask16* masks, float* buf, float* w,
                                                              int64_t gi, int64_t k0, int64_t kn, int64_t c0,
                                                              int64_t cn) {
  const int64_t Cg = g.Cg(), Kg = g.Kg(), blocks = (g.OW + 15) / 16;
  constexpr int kSlot = KB * KW * 16;  // floats of one (c, r)'s accumulators
  std::fill(buf, buf + cn * g.KH * kSlot, 0.f);
  for (int64_t n = 0; n < g.N; ++n) {
    const float* gk = gy + ((n * g.K + gi * Kg + k0) * g.OH) * g.OW;  // channel k's plane at gk + k OH OW
    // kWgradRows output rows a pass over the accumulators: their loads and stores amortised over as
    // many rows' FMAs (one core, 8 -> 8 at 64x64: 0.64-0.78 ms a row at a time, 0.60-0.68 at four)
    for (int64_t oh0 = 0; oh0 < g.OH; oh0 += kWgradRows) {
      const int64_t rows = std::min<int64_t>(kWgradRows, g.OH - oh0);
      for (int64_t c = 0; c < cn; ++c) {
        const float* plane = x + ((n * g.C + gi * Cg + c0 + c) * g.H) * g.W;
        for (int64_t r = 0; r < g.KH; ++r) {
          float* slot = buf + (c * g.KH + r) * kSlot;
          __m512 acc[KB][KW];
          for (int k = 0; k < KB; ++k)
            for (int s = 0; s < KW; ++s) acc[k][s] = _mm512_loadu_ps(slot + (k * KW + s) * 16);
          for (int64_t j = 0; j < rows; ++j) {  // output rows in order: each lane's sum order is fixed
            const int64_t oh = oh0 + j, ih = oh * g.sh - g.pt + r * g.dh;
            if (ih < 0 || ih >= g.H) continue;  // this output row's tap row lies in the padding
            const float* xrow = plane + ih * g.W - g.pl;
            const float* grow = gk + oh * g.OW;
            for (int64_t b = 0; b < blocks; ++b) {
              const __mmask16* mb = masks + b * (KW + 1);  // [0]: gy's lanes in the row, [1 + s]: tap s's x lanes
              __m512 gv[KB];
              for (int k = 0; k < KB; ++k)
                gv[k] = k < kn ? _mm512_maskz_loadu_ps(mb[0], grow + k * g.OH * g.OW + 16 * b) : _mm512_setzero_ps();
              for (int s = 0; s < KW; ++s) {
                const __m512 xv = _mm512_maskz_loadu_ps(mb[1 + s], xrow + 16 * b + s * g.dw);
                for (int k = 0; k < KB; ++k) acc[k][s] = _mm512_fmadd_ps(gv[k], xv, acc[k][s]);
              }
            }
          }
          for (int k = 0; k < KB; ++k)
            for (int s = 0; s < KW; ++s) _mm512_storeu_ps(slot + (k * KW + s) * 16, acc[k][s]);
        }
      }
    }
  }
  for (int64_t c = 0; c < cn; ++c)
    for (int64_t r = 0; r < g.KH; ++r)
      for (int k = 0; k < KB && k < kn; ++k)
        for (int s = 0; s < KW; ++s)
          w[(((gi * Kg + k0 + k) * Cg + c0 + c) * g.KH + r) * KW + s] =
              _mm512_reduce_add_ps(_mm512_loadu_ps(buf + (c * g.KH + r) * kSlot + (k * KW + s) * 16));
}

template <int KW>
void backward_weight_kw(const ConvGeometry& g, const float* gy, const float* x, float* w) {
  constexpr int KB = KW <= 5 ? 4 : 2;  // KB x KW accumulators + KB gy vectors + one x vector <= 32
  const int64_t blocks = (g.OW + 15) / 16;
  // per 16-column block: gy's in-row lanes, then each tap column's x lanes
  std::vector<__mmask16> masks(static_cast<size_t>(blocks * (KW + 1)));
  for (int64_t b = 0; b < blocks; ++b) {
    const __mmask16 in_row = lanes(g.OW - 16 * b);
    masks[b * (KW + 1)] = in_row;
    for (int s = 0; s < KW; ++s) masks[b * (KW + 1) + 1 + s] = in_row & lanes_in_row(16 * b - g.pl + s * g.dw, g.W);
  }
  // input channels a task: all of them (<= 8), fewer where that leaves threads idle (each weight's
  // sum is the same whichever task computes it, so the split may follow the thread count)
  const int64_t kblocks = (g.Kg() + KB - 1) / KB;
  const int64_t want = (2 * at::get_num_threads() + g.G * kblocks - 1) / (g.G * kblocks);  // runs a block
  const int64_t run = std::max<int64_t>(1, std::min<int64_t>(kWgradChannels, (g.Cg() + want - 1) / want));
  const int64_t cruns = (g.Cg() + run - 1) / run, tasks = g.G * kblocks * cruns;
  const double macs = double(g.N) * g.OH * g.OW * g.K * g.Cg() * g.taps();
  at::parallel_for(0, tasks, macs < double(1 << 21) ? tasks : 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(static_cast<size_t>(kWgradChannels * g.KH * KB * KW * 16));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t cr = t % cruns, kb = (t / cruns) % kblocks, gi = t / cruns / kblocks;
      const int64_t c0 = cr * run;
      backward_weight_task<KB, KW>(g, gy, x, masks.data(), buf.data(), w, gi, kb * KB,
                                   std::min<int64_t>(KB, g.Kg() - kb * KB), c0, std::min<int64_t>(run, g.Cg() - c0));
    }
  });
}

// gy (N, K, OH, OW) and x (N, C, H, W) dense NCHW; w the (K, Cg, KH, KW) weight gradient, every
// element written.
inline void backward_weight_nchw(const ConvGeometry& g, const float* gy, const float* x, float* w) {
  switch (g.KW) {
    case 1: return backward_weight_kw<1>(g, gy, x, w);
    case 2: return backward_weight_kw<2>(g, gy, x, w);
    case 3: return backward_weight_kw<3>(g, gy, x, w);
    case 4: return backward_weight_kw<4>(g, gy, x, w);
    case 5: return backward_weight_kw<5>(g, gy, x, w);
    case 6: return backward_weight_kw<6>(g, gy, x, w);
    default: return backward_weight_kw<7>(g, gy, x, w);  // backward_weight_applies: KW <= 7
  }
}

// 4 channels x 4 vectors where the row fills them, else 8 x 2.
inline void forward_nchw(const ConvGeometry& g, const float* x, const float* wt, const float* b, float* y) {
  if (g.Kg() <= 4 && g.OW >= 64) forward_blocks<4, 4>(g, x, wt, b, y);
  else forward_blocks<8, 2>(g, x, wt, b, y);
}

// ---- channels_last weight gradient, 8 output channels a group ---------------------------------
// gw[k, c, r, s] = sum over pixels p of gy[p, k] x[p shifted by (r, s), c]. In channels_last a
// pixel's 8 output channels are one 256-bit vector, so the accumulators run along k: one for each
// (s, c) of a block of a tap row's columns, and each pixel adds gy's vector times x[shifted pixel, c]
// broadcast from memory. (The NCHW row kernels above need copies of both operands here, which cost
// more than they save: 8 -> 8 at 64x64, one core, 0.74x torch through them.) An image at a time,
// every tap row and column block in turn, so the image's operands stay in L2 across the passes;
// each image's partial gradient goes to a slice of its own and the slices are summed in image
// order: bitwise reproducible for any thread count. Groups of 8 output channels and at most 8
// input channels (CB x SB <= 24 accumulators of the 32 AVX-512VL registers), any stride, dilation,
// padding and kernel size.
inline bool backward_weight_cl_k8_applies(const ConvGeometry& g) {
  static const bool vl = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
  return vl && g.Kg() == 8 && g.Cg() <= 8 && !(g.G > 1 && g.Cg() * g.Kg() <= 16);
}

// The output columns [*lo, *hi) where all of the kernel columns s0 .. s0 + sb - 1 read inside the
// input (the others read padding for some of them: checked per column), lo <= hi <= OW.
inline void inner_columns(const ConvGeometry& g, int64_t s0, int64_t sb, int64_t* lo, int64_t* hi) {
  *lo = 0;
  *hi = g.OW;
  for (int64_t s = s0; s < s0 + sb; ++s) {
    int64_t l, h;
    g.valid_cols(s, &l, &h);
    *lo = std::max(*lo, l);
    *hi = std::min(*hi, h);
  }
  *lo = std::min(*lo, g.OW);
  *hi = std::max(*hi, *lo);
}

// One output pixel's products for a block: gy's vector (the pixel's 8 output channels) times each
// (s, c)'s input value, where kChecked the columns that read padding left out.
template <int CB, int SB, bool kChecked>
__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"), always_inline)) inline void backward_weight_cl_k8_pixel(
    const ConvGeometry& g, const float* gyp, const float* xr, int64_t ow, int64_t s0, __m256 (&acc)[SB][CB]) {
  const __m256 v = _mm256_loadu_ps(gyp);
  for (int s = 0; s < SB; ++s) {
    const int64_t iw = ow * g.sw - g.pl + (s0 + s) * g.dw;
    if (kChecked && (iw < 0 || iw >= g.W)) continue;
    const float* xp = xr + iw * g.C;
    for (int c = 0; c < CB; ++c) acc[s][c] = _mm256_fmadd_ps(v, _mm256_broadcast_ss(xp + c), acc[s][c]);
  }
}

// Image n's partial gradient of group gi, tap row r, columns s0 .. s0 + SB - 1, into part (K, Cg,
// KH, KW) (each element of the block written once).
template <int CB, int SB>
__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"))) void backward_weight_cl_k8_block(const ConvGeometry& g, const float* gy,
                                                                            const float* x, float* part, int64_t n,
                                                                            int64_t gi, int64_t r, int64_t s0) {
  __m256 acc[SB][CB];
  for (int s = 0; s < SB; ++s)
    for (int c = 0; c < CB; ++c) acc[s][c] = _mm256_setzero_ps();
  int64_t oh0, oh1, wlo, whi;
  g.valid_rows(r, &oh0, &oh1);
  inner_columns(g, s0, SB, &wlo, &whi);
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const float* gyr = gy + ((n * g.OH + oh) * g.OW) * g.K + gi * 8;
    const float* xr = x + ((n * g.H + oh * g.sh - g.pt + r * g.dh) * g.W) * g.C + gi * CB;
    for (int64_t ow = 0; ow < wlo; ++ow) backward_weight_cl_k8_pixel<CB, SB, true>(g, gyr + ow * g.K, xr, ow, s0, acc);
    for (int64_t ow = wlo; ow < whi; ++ow) backward_weight_cl_k8_pixel<CB, SB, false>(g, gyr + ow * g.K, xr, ow, s0, acc);
    for (int64_t ow = whi; ow < g.OW; ++ow) backward_weight_cl_k8_pixel<CB, SB, true>(g, gyr + ow * g.K, xr, ow, s0, acc);
  }
  for (int s = 0; s < SB; ++s)
    for (int c = 0; c < CB; ++c) {
      alignas(32) float lane[8];
      _mm256_store_ps(lane, acc[s][c]);
      for (int k = 0; k < 8; ++k) part[(((gi * 8 + k) * CB + c) * g.KH + r) * g.KW + s0 + s] = lane[k];
    }
}

// 8 input channels too: a tap's 64 products of a pixel as four 512-bit vectors, each two output
// channels (2j, 2j + 1) x the 8 input channels, the shifted pixel's 8 channels loaded once into
// both halves. The four output-channel pairs are permuted out of the pixel's gy once a pixel and
// pass (shared by the pass's taps), so a tap costs one load and four FMAs (the per-channel
// broadcasts above cost a load an FMA, and the loads bound them). RB tap rows x SB columns a pass:
// 4 RB SB accumulators.
template <int RB, int SB, bool kChecked>
__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"), always_inline)) inline void backward_weight_cl_c8_pixel(
    const ConvGeometry& g, const float* gyp, const float* (&xr)[RB], int64_t ow, int64_t s0,
    __m512 (&acc)[RB][SB][4]) {
  const __m512 v = _mm512_castps256_ps512(_mm256_loadu_ps(gyp));
  __m512 pair[4];
  for (int j = 0; j < 4; ++j)
    pair[j] = _mm512_permutexvar_ps(_mm512_set_epi32(2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1,
                                                     2 * j + 1, 2 * j + 1, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j,
                                                     2 * j, 2 * j),
                                    v);
  for (int s = 0; s < SB; ++s) {
    const int64_t iw = ow * g.sw - g.pl + (s0 + s) * g.dw;
    if (kChecked && (iw < 0 || iw >= g.W)) continue;
    for (int r = 0; r < RB; ++r) {
      const __m512 xv = _mm512_broadcast_f32x8(_mm256_loadu_ps(xr[r] + iw * g.C));
      for (int j = 0; j < 4; ++j) acc[r][s][j] = _mm512_fmadd_ps(pair[j], xv, acc[r][s][j]);
    }
  }
}

// Image n's partial gradient of group gi, tap rows r0 .. r0 + RB - 1 (all valid on the same output
// rows: the caller's), columns s0 .. s0 + SB - 1, output rows oh0 .. oh1, into part.
template <int RB, int SB>
__attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"))) void backward_weight_cl_c8_block(
    const ConvGeometry& g, const float* gy, const float* x, float* part, int64_t n, int64_t gi, int64_t r0,
    int64_t s0, int64_t oh0, int64_t oh1) {
  __m512 acc[RB][SB][4];
  for (int r = 0; r < RB; ++r)
    for (int s = 0; s < SB; ++s)
      for (int j = 0; j < 4; ++j) acc[r][s][j] = _mm512_setzero_ps();
  int64_t wlo, whi;
  inner_columns(g, s0, SB, &wlo, &whi);
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const float* gyr = gy + ((n * g.OH + oh) * g.OW) * g.K + gi * 8;
    const float* xr[RB];
    for (int r = 0; r < RB; ++r) xr[r] = x + ((n * g.H + oh * g.sh - g.pt + (r0 + r) * g.dh) * g.W) * g.C + gi * 8;
    for (int64_t ow = 0; ow < wlo; ++ow) backward_weight_cl_c8_pixel<RB, SB, true>(g, gyr + ow * g.K, xr, ow, s0, acc);
    for (int64_t ow = wlo; ow < whi; ++ow) backward_weight_cl_c8_pixel<RB, SB, false>(g, gyr + ow * g.K, xr, ow, s0, acc);
    for (int64_t ow = whi; ow < g.OW; ++ow) backward_weight_cl_c8_pixel<RB, SB, true>(g, gyr + ow * g.K, xr, ow, s0, acc);
  }
  for (int r = 0; r < RB; ++r)
    for (int s = 0; s < SB; ++s)
      for (int j = 0; j < 4; ++j) {
        alignas(64) float lane[16];
        _mm512_store_ps(lane, acc[r][s][j]);
        for (int h = 0; h < 2; ++h)
          for (int c = 0; c < 8; ++c)
            part[(((gi * 8 + 2 * j + h) * 8 + c) * g.KH + r0 + r) * g.KW + s0 + s] = lane[8 * h + c];
      }
}

// One image's pass over tap rows r0 .. and columns s0 .. (SB of them): two rows at once where both
// read real input on the same output rows (their valid ranges agree), else one.
template <int SB>
inline void backward_weight_cl_c8_rows(const ConvGeometry& g, const float* gy, const float* x, float* part, int64_t n,
                                       int64_t gi, int64_t s0) {
  for (int64_t r = 0; r < g.KH;) {
    int64_t lo, hi, lo2 = 0, hi2 = -1;
    g.valid_rows(r, &lo, &hi);
    if (r + 1 < g.KH) g.valid_rows(r + 1, &lo2, &hi2);
    if (lo2 == lo && hi2 == hi) {
      backward_weight_cl_c8_block<2, SB>(g, gy, x, part, n, gi, r, s0, lo, hi);
      r += 2;
    } else {
      backward_weight_cl_c8_block<1, SB>(g, gy, x, part, n, gi, r, s0, lo, hi);
      r += 1;
    }
  }
}

template <int CB>
inline void backward_weight_cl_k8_cb(const ConvGeometry& g, const float* gy, const float* x, float* w) {
  constexpr int SB = 24 / CB >= 3 ? 3 : 24 / CB;  // columns a block (3: a 3x3 kernel's row in one pass)
  const int64_t per = g.K * CB * g.taps();
  std::vector<float> parts(static_cast<size_t>(g.N * per));
  // tasks: (image, group, column block, and tap row where CB < 8; CB == 8 pairs rows in one pass),
  // each writing its own elements of its image's slice
  const int64_t sblocks = (g.KW + SB - 1) / SB, rows = CB == 8 ? 1 : g.KH;
  at::parallel_for(0, g.N * g.G * sblocks * rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r = t % rows, s0 = t / rows % sblocks * SB, gi = t / rows / sblocks % g.G;
      const int64_t n = t / rows / sblocks / g.G;
      float* part = parts.data() + n * per;
      const int64_t sb = std::min<int64_t>(SB, g.KW - s0);
      if constexpr (CB == 8) {
        if (sb == 1) backward_weight_cl_c8_rows<1>(g, gy, x, part, n, gi, s0);
        else if (sb == 2) backward_weight_cl_c8_rows<2>(g, gy, x, part, n, gi, s0);
        else backward_weight_cl_c8_rows<3>(g, gy, x, part, n, gi, s0);
      } else {
        switch (sb) {
          case 1: backward_weight_cl_k8_block<CB, 1>(g, gy, x, part, n, gi, r, s0); break;
          case 2: backward_weight_cl_k8_block<CB, 2 <= SB ? 2 : 1>(g, gy, x, part, n, gi, r, s0); break;
          default: backward_weight_cl_k8_block<CB, SB>(g, gy, x, part, n, gi, r, s0); break;
        }
      }
    }
  });
  // each weight summed over the images in image order: the same bits for any thread count
  at::parallel_for(0, per, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float acc = 0.f;
      for (int64_t n = 0; n < g.N; ++n) acc += parts[n * per + i];
      w[i] = acc;
    }
  });
}

// gy (N, OH, OW, K) and x (N, H, W, C) dense channels_last; w the (K, Cg, KH, KW) weight gradient,
// every element written.
inline void backward_weight_cl_k8(const ConvGeometry& g, const float* gy, const float* x, float* w) {
  switch (g.Cg()) {
    case 1: return backward_weight_cl_k8_cb<1>(g, gy, x, w);
    case 2: return backward_weight_cl_k8_cb<2>(g, gy, x, w);
    case 3: return backward_weight_cl_k8_cb<3>(g, gy, x, w);
    case 4: return backward_weight_cl_k8_cb<4>(g, gy, x, w);
    case 5: return backward_weight_cl_k8_cb<5>(g, gy, x, w);
    case 6: return backward_weight_cl_k8_cb<6>(g, gy, x, w);
    case 7: return backward_weight_cl_k8_cb<7>(g, gy, x, w);
    default: return backward_weight_cl_k8_cb<8>(g, gy, x, w);  // backward_weight_cl_k8_applies: Cg <= 8
  }
}

}  // namespace narrow
}  // namespace rnnkern
