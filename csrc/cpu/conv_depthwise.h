// Depthwise convolutions (one input and one output channel a group: MobileNet-style separable
// layers) in fp32 on AVX-512, for conv.cpp. The generic narrow-group loops there compile for the
// build's baseline (SSE2: no -march), and in channels_last, where consecutive channels sit next to
// each other in memory, they ran at 0.3-0.6x of torch's oneDNN kernels (bench/NOTES.md). Here
// channels_last passes run 16 channels a vector (masked at the tail), and the NCHW forward and
// weight gradient 16 pixels of a row a vector.
//
// Every output element is produced by one task in a fixed order (taps in (r, s) order, pixels in
// row order; the weight gradient in a fixed number of parts added in part order), so results are
// bitwise reproducible for any thread count. Compiled with a target attribute and called only
// where the CPU has AVX-512 (conv.cpp's cpu_has_avx512).
#pragma once
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../conv_common.h"
#include "simd_mask.h"

namespace rnnkern {
namespace depthwise {

// One input and one output channel a group.
inline bool applies(const ConvGeometry& g) { return g.G == g.C && g.K == g.C; }

// Channel vectors a block: four independent FMA chains per pixel (the FMA latency is 4 cycles).
constexpr int64_t kBlockVectors = 4;

// The weight (C, 1, KH, KW) as (taps, C): a tap's 16 channels in one load.
inline std::vector<float> taps_by_channel(const float* w, int64_t C, int64_t taps) {
  std::vector<float> wd(static_cast<size_t>(taps * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < taps; ++t) wd[t * C + c] = w[c * taps + t];
  return wd;
}

// y[n, oh, :, :] (channels_last) = bias + sum over taps of w[tap] * x[n, ih, iw, :], NV channel
// vectors at a time. Pixels whose taps all read real columns go PX at a time, each tap's NV weight
// vectors loaded once for the PX pixels; the rest one at a time, skipping taps in the padding.
template <int NV, int PX>
__attribute__((target("avx512f"))) void forward_nhwc_row(const ConvGeometry& g, const float* x, const float* wd,
                                                          const float* b, float* y, int64_t n, int64_t oh) {
  const int64_t C = g.C;
  float* yrow = y + (n * g.OH + oh) * g.OW * C;
  // [in0, in1): output columns whose every tap reads a real input column
  int64_t in0 = 0, in1 = g.OW;
  for (int64_t s = 0; s < g.KW; ++s) {
    int64_t lo, hi;
    g.valid_cols(s, &lo, &hi);
    in0 = std::max(in0, lo);
    in1 = std::min(in1, hi);
  }
  for (int64_t c0 = 0; c0 < C; c0 += 16 * NV) {
    __mmask16 m[NV];
    __m512 bias[NV];
    for (int j = 0; j < NV; ++j) {
      m[j] = lanes(C - c0 - 16 * j);
      bias[j] = b ? _mm512_maskz_loadu_ps(m[j], b + c0 + 16 * j) : _mm512_setzero_ps();
    }
    int64_t ow = 0;
    while (ow < g.OW) {
      if (ow >= in0 && ow + PX <= in1) {
        __m512 acc[PX][NV];
        for (int p = 0; p < PX; ++p)
          for (int j = 0; j < NV; ++j) acc[p][j] = bias[j];
        for (int64_t r = 0; r < g.KH; ++r) {
          const int64_t ih = oh * g.sh - g.pt + r * g.dh;
          if (ih < 0 || ih >= g.H) continue;  // a tap row in the padding
          const float* xrow = x + ((n * g.H + ih) * g.W + ow * g.sw - g.pl) * C + c0;
          const float* wrow = wd + r * g.KW * C + c0;
          for (int64_t s = 0; s < g.KW; ++s) {
            __m512 wv[NV];
            for (int j = 0; j < NV; ++j) wv[j] = _mm512_maskz_loadu_ps(m[j], wrow + s * C + 16 * j);
            const float* xs = xrow + s * g.dw * C;
            for (int p = 0; p < PX; ++p)
              for (int j = 0; j < NV; ++j)
                acc[p][j] = _mm512_fmadd_ps(wv[j], _mm512_maskz_loadu_ps(m[j], xs + p * g.sw * C + 16 * j), acc[p][j]);
          }
        }
        for (int p = 0; p < PX; ++p)
          for (int j = 0; j < NV; ++j) _mm512_mask_storeu_ps(yrow + (ow + p) * C + c0 + 16 * j, m[j], acc[p][j]);
        ow += PX;
        continue;
      }
      __m512 acc[NV];
      for (int j = 0; j < NV; ++j) acc[j] = bias[j];
      for (int64_t r = 0; r < g.KH; ++r) {
        const int64_t ih = oh * g.sh - g.pt + r * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        const float* xrow = x + ((n * g.H + ih) * g.W) * C + c0;
        const float* wrow = wd + r * g.KW * C + c0;
        for (int64_t s = 0; s < g.KW; ++s) {
          const int64_t iw = ow * g.sw - g.pl + s * g.dw;
          if (iw < 0 || iw >= g.W) continue;
          for (int j = 0; j < NV; ++j)
            acc[j] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[j], wrow + s * C + 16 * j),
                                     _mm512_maskz_loadu_ps(m[j], xrow + iw * C + 16 * j), acc[j]);
        }
      }
      for (int j = 0; j < NV; ++j) _mm512_mask_storeu_ps(yrow + ow * C + c0 + 16 * j, m[j], acc[j]);
      ++ow;
    }
  }
}

// Channels_last forward: x (N, H, W, C) and y (N, OH, OW, C) dense, w (C, 1, KH, KW) contiguous.
// The channel block is as wide as the channels need (up to 4 vectors); accumulators and the
// weight vectors stay within the 32 zmm registers.
inline void forward_nhwc(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) {
  const std::vector<float> wd = taps_by_channel(w, g.C, g.taps());
  const double macs = double(g.N) * g.OH * g.OW * g.C * g.taps();
  const int64_t vectors = (g.C + 15) / 16;
  auto row_fn = vectors >= 4 ? forward_nhwc_row<4, 4> : vectors == 3 ? forward_nhwc_row<3, 6>
              : vectors == 2 ? forward_nhwc_row<2, 8> : forward_nhwc_row<1, 12>;
  at::parallel_for(0, g.N * g.OH, macs < double(1 << 21) ? g.N * g.OH : 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) row_fn(g, x, wd.data(), b, y, row / g.OH, row % g.OH);
  });
}

// NCHW forward with unit column stride: one task per (image, channel) plane, each output row 16
// pixels a vector, the taps in (r, s) order; lanes whose input column lies in the padding are
// masked off (a masked load does not touch them).
__attribute__((target("avx512f"))) inline void forward_nchw_plane(const ConvGeometry& g, const float* x,
                                                                     const float* w, const float* b, float* y,
                                                                     int64_t plane) {
  const int64_t c = plane % g.C;
  const float* xp = x + plane * g.H * g.W;
  const float* wc = w + c * g.taps();
  float* yp = y + plane * g.OH * g.OW;
  const __m512 bias = _mm512_set1_ps(b ? b[c] : 0.f);
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    for (int64_t ow0 = 0; ow0 < g.OW; ow0 += 16) {
      const __mmask16 m = lanes(g.OW - ow0);
      __m512 acc = bias;
      for (int64_t r = 0; r < g.KH; ++r) {
        const int64_t ih = oh * g.sh - g.pt + r * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        const float* xrow = xp + ih * g.W;
        for (int64_t s = 0; s < g.KW; ++s) {
          const int64_t iw0 = ow0 - g.pl + s * g.dw;  // lane i reads column iw0 + i
          const __mmask16 v = m & lanes_in_row(iw0, g.W);
          acc = _mm512_fmadd_ps(_mm512_set1_ps(wc[r * g.KW + s]), _mm512_maskz_loadu_ps(v, xrow + iw0), acc);
        }
      }
      _mm512_mask_storeu_ps(yp + oh * g.OW + ow0, m, acc);
    }
  }
}

inline void forward_nchw(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y) {
  const double macs = double(g.N) * g.OH * g.OW * g.C * g.taps();
  at::parallel_for(0, g.N * g.C, macs < double(1 << 21) ? g.N * g.C : 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) forward_nchw_plane(g, x, w, b, y, plane);
  });
}

// gx[n, ih, :, :] (channels_last) = sum over the taps that reach input row ih of
// w[tap] * gy[n, oh, ow, :], with oh * sh = ih + pt - r * dh (and the same along W): a gather, so
// each input pixel is written once, for any stride.
__attribute__((target("avx512f"))) inline void backward_input_nhwc_row(const ConvGeometry& g, const float* gy,
                                                                          const float* wd, float* gx, int64_t n,
                                                                          int64_t ih) {
  const int64_t C = g.C;
  float* gxrow = gx + (n * g.H + ih) * g.W * C;
  for (int64_t c0 = 0; c0 < C; c0 += 16 * kBlockVectors) {
    __mmask16 m[kBlockVectors];
    for (int64_t j = 0; j < kBlockVectors; ++j) m[j] = lanes(C - c0 - 16 * j);
    for (int64_t iw = 0; iw < g.W; ++iw) {
      __m512 acc[kBlockVectors];
      for (int64_t j = 0; j < kBlockVectors; ++j) acc[j] = _mm512_setzero_ps();
      for (int64_t r = 0; r < g.KH; ++r) {
        const int64_t th = ih + g.pt - r * g.dh;
        if (th < 0 || th % g.sh != 0 || th / g.sh >= g.OH) continue;
        const float* gyrow = gy + ((n * g.OH + th / g.sh) * g.OW) * C + c0;
        const float* wrow = wd + r * g.KW * C + c0;
        for (int64_t s = 0; s < g.KW; ++s) {
          const int64_t tw = iw + g.pl - s * g.dw;
          if (tw < 0 || tw % g.sw != 0 || tw / g.sw >= g.OW) continue;
          for (int64_t j = 0; j < kBlockVectors; ++j)
            acc[j] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[j], wrow + s * C + 16 * j),
                                     _mm512_maskz_loadu_ps(m[j], gyrow + (tw / g.sw) * C + 16 * j), acc[j]);
        }
      }
      for (int64_t j = 0; j < kBlockVectors; ++j) _mm512_mask_storeu_ps(gxrow + iw * C + c0 + 16 * j, m[j], acc[j]);
    }
  }
}

// Channels_last grad_input: gy (N, OH, OW, C) and gx (N, H, W, C) dense, w (C, 1, KH, KW).
inline void backward_input_nhwc(const ConvGeometry& g, const float* gy, const float* w, float* gx) {
  const std::vector<float> wd = taps_by_channel(w, g.C, g.taps());
  const double macs = double(g.N) * g.OH * g.OW * g.C * g.taps();
  at::parallel_for(0, g.N * g.H, macs < double(1 << 21) ? g.N * g.H : 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) backward_input_nhwc_row(g, gy, wd.data(), gx, row / g.H, row % g.H);
  });
}

// partial[t, c] += sum over output rows [row0, row1) and the pixels tap t reads of
// gy[n, oh, ow, c] * x[n, ih, iw, c], channels c0 .. c0 + 16 * kBlockVectors.
__attribute__((target("avx512f"))) inline void backward_weight_nhwc_part(const ConvGeometry& g, const float* gy,
                                                                            const float* x, int64_t row0,
                                                                            int64_t row1, int64_t c0, float* partial) {
  const int64_t C = g.C;
  __mmask16 m[kBlockVectors];
  for (int64_t j = 0; j < kBlockVectors; ++j) m[j] = lanes(C - c0 - 16 * j);
  for (int64_t r = 0; r < g.KH; ++r) {
    for (int64_t s = 0; s < g.KW; ++s) {
      int64_t ow0, ow1;
      g.valid_cols(s, &ow0, &ow1);
      __m512 acc[kBlockVectors];
      for (int64_t j = 0; j < kBlockVectors; ++j) acc[j] = _mm512_setzero_ps();
      for (int64_t row = row0; row < row1; ++row) {
        const int64_t n = row / g.OH, oh = row % g.OH;
        const int64_t ih = oh * g.sh - g.pt + r * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        const float* gyp = gy + row * g.OW * C + c0;
        const float* xp = x + ((n * g.H + ih) * g.W) * C + c0;
        for (int64_t ow = ow0; ow < ow1; ++ow) {
          const float* xq = xp + (ow * g.sw - g.pl + s * g.dw) * C;
          for (int64_t j = 0; j < kBlockVectors; ++j)
            acc[j] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[j], gyp + ow * C + 16 * j),
                                     _mm512_maskz_loadu_ps(m[j], xq + 16 * j), acc[j]);
        }
      }
      float* dst = partial + (r * g.KW + s) * C + c0;
      for (int64_t j = 0; j < kBlockVectors; ++j) _mm512_mask_storeu_ps(dst + 16 * j, m[j], acc[j]);
    }
  }
}

// The same sums for a 3x3 kernel, 32 channels at a time, all nine taps' accumulators in registers
// across the part: each grad_output vector is loaded once for its nine taps (the loop above reads
// the part's rows once per tap). Each (tap, channel) sum runs over the same pixels in the same order.
__attribute__((target("avx512f"))) inline void backward_weight_nhwc_part_3x3(const ConvGeometry& g, const float* gy,
                                                                                const float* x, int64_t row0,
                                                                                int64_t row1, int64_t c0,
                                                                                float* partial) {
  constexpr int NV = 2;
  const int64_t C = g.C;
  __mmask16 m[NV];
  for (int j = 0; j < NV; ++j) m[j] = lanes(C - c0 - 16 * j);
  __m512 acc[9][NV];
  for (int t = 0; t < 9; ++t)
    for (int j = 0; j < NV; ++j) acc[t][j] = _mm512_setzero_ps();
  for (int64_t row = row0; row < row1; ++row) {
    const int64_t n = row / g.OH, oh = row % g.OH;
    const float* xr[3];
    for (int r = 0; r < 3; ++r) {
      const int64_t ih = oh * g.sh - g.pt + r * g.dh;
      xr[r] = ih < 0 || ih >= g.H ? nullptr : x + ((n * g.H + ih) * g.W) * C + c0;
    }
    const float* gyp = gy + row * g.OW * C + c0;
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      __m512 gv[NV];
      for (int j = 0; j < NV; ++j) gv[j] = _mm512_maskz_loadu_ps(m[j], gyp + ow * C + 16 * j);
      for (int s = 0; s < 3; ++s) {
        const int64_t iw = ow * g.sw - g.pl + s * g.dw;
        if (iw < 0 || iw >= g.W) continue;
        for (int r = 0; r < 3; ++r) {
          if (xr[r] == nullptr) continue;
          for (int j = 0; j < NV; ++j)
            acc[r * 3 + s][j] =
                _mm512_fmadd_ps(gv[j], _mm512_maskz_loadu_ps(m[j], xr[r] + iw * C + 16 * j), acc[r * 3 + s][j]);
        }
      }
    }
  }
  for (int t = 0; t < 9; ++t)
    for (int j = 0; j < NV; ++j) _mm512_mask_storeu_ps(partial + t * C + c0 + 16 * j, m[j], acc[t][j]);
}

// Channels_last grad_weight into w (C, 1, KH, KW): output rows in `parts` fixed parts (parallel
// with the channel blocks), each part's sums added in part order.
inline void backward_weight_nhwc(const ConvGeometry& g, const float* gy, const float* x, int64_t parts, float* w) {
  const int64_t C = g.C, taps = g.taps(), rows = g.N * g.OH;
  const bool k3x3 = g.KH == 3 && g.KW == 3;
  const int64_t width = k3x3 ? 32 : 16 * kBlockVectors;  // channels a block
  const int64_t blocks = (C + width - 1) / width;
  std::vector<float> partial(static_cast<size_t>(parts * taps * C));
  at::parallel_for(0, parts * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t part = item / blocks, c0 = (item % blocks) * width;
      const int64_t row0 = part * rows / parts, row1 = (part + 1) * rows / parts;
      float* dst = partial.data() + part * taps * C;
      if (k3x3) backward_weight_nhwc_part_3x3(g, gy, x, row0, row1, c0, dst);
      else backward_weight_nhwc_part(g, gy, x, row0, row1, c0, dst);
    }
  });
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < taps; ++t) {
      float sum = 0.f;
      for (int64_t part = 0; part < parts; ++part) sum += partial[(part * taps + t) * C + c];
      w[c * taps + t] = sum;
    }
}

// sum_i a[i] * b[i] for i < len, 16 at a time into two accumulators (pixel i's product in lane
// i % 16 of accumulator (i / 16) % 2), reduced at the end: a fixed order for a given len.
__attribute__((target("avx512f"))) inline __m512 dot_accumulate(const float* a, const float* b, int64_t len,
                                                                   __m512 acc) {
  __m512 acc2 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= len; i += 32) {
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc2);
  }
  for (; i < len; i += 16) {
    const __mmask16 m = lanes(len - i);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
  }
  return _mm512_add_ps(acc, acc2);
}

// NCHW grad_weight with unit column stride into w (C, 1, KH, KW): one task per channel, a tap's
// weight the sum over images and rows of the row dot products it reads.
__attribute__((target("avx512f"))) inline void backward_weight_nchw_channel(const ConvGeometry& g, const float* gy,
                                                                               const float* x, int64_t c, float* w) {
  for (int64_t r = 0; r < g.KH; ++r) {
    int64_t oh0, oh1;
    g.valid_rows(r, &oh0, &oh1);
    for (int64_t s = 0; s < g.KW; ++s) {
      int64_t ow0, ow1;
      g.valid_cols(s, &ow0, &ow1);
      __m512 acc = _mm512_setzero_ps();
      for (int64_t n = 0; n < g.N; ++n) {
        const float* plane = x + (n * g.C + c) * g.H * g.W;
        const float* grad = gy + (n * g.C + c) * g.OH * g.OW;
        for (int64_t oh = oh0; oh < oh1; ++oh)
          acc = dot_accumulate(grad + oh * g.OW + ow0, plane + (oh * g.sh - g.pt + r * g.dh) * g.W + (ow0 - g.pl + s * g.dw),
                               ow1 - ow0, acc);
      }
      alignas(64) float lane[16];  // (GCC 12's _mm512_reduce_add_ps warns about its own headers)
      _mm512_store_ps(lane, acc);
      float sum = 0.f;
      for (int i = 0; i < 16; ++i) sum += lane[i];
      w[c * g.taps() + r * g.KW + s] = sum;
    }
  }
}

inline void backward_weight_nchw(const ConvGeometry& g, const float* gy, const float* x, float* w) {
  const double macs = double(g.N) * g.OH * g.OW * g.C * g.taps();
  at::parallel_for(0, g.C, macs < double(1 << 21) ? g.C : 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) backward_weight_nchw_channel(g, gy, x, c, w);
  });
}

}  // namespace depthwise
}  // namespace rnnkern
