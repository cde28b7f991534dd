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
// Every output element is produced by one task, its sum in (input channel, r, s) order: bitwise
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

}  // namespace narrow
}  // namespace rnnkern
