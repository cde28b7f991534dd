// NCHW convolutions with fewer output channels a group than a vector (narrow layers, segmentation
// heads), fp32 on AVX-512, for conv.cpp. The direct kernels vectorise along output channels: below
// 16 of them most lanes are zeros, and NCHW operands go through channels_last copies first. Here
// the vectors run along an output row instead, 16 pixels a vector (unit column stride): a block of
// up to 8 output channels x 2-4 pixel vectors stays in registers across the whole reduction; each
// (input channel, tap) loads its input vectors once for all the block's channels and broadcasts
// each channel's weight. Lanes whose input column lies in the padding are masked off (a masked
// load does not touch them), so there is no padded copy.
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

// 4 channels x 4 vectors where the row fills them, else 8 x 2.
inline void forward_nchw(const ConvGeometry& g, const float* x, const float* wt, const float* b, float* y) {
  if (g.Kg() <= 4 && g.OW >= 64) forward_blocks<4, 4>(g, x, wt, b, y);
  else forward_blocks<8, 2>(g, x, wt, b, y);
}

}  // namespace narrow
}  // namespace rnnkern
