// Dilated / strided / grouped 2-D convolution on the CPU: tiled im2col with the dilation in the
// index mapping, over ATen's BLAS GEMM (at::mm_out / addmm_out on the column matrix, MKL
// underneath).
//
// Tiles and tap skipping. The output plane is cut into tiles of output pixels. Along each axis
// the taps that read real input (not padding) form a contiguous range that changes only at a few
// breakpoints (lo/hi of each tap's valid output range), so the plane is first cut at those
// breakpoints (segments shorter than kMinSegment are merged back) and each tile carries the
// rectangle of taps [r0, r1) x [s0, s1) that can read real data anywhere in it. The column matrix
// of a tile holds only those taps and the GEMM runs against the matching slice of the weight (a
// compact copy made once per distinct tap rectangle). At 32x32 with dilation 18 ('same') this
// does only the ~39% of the 3x3 MACs that touch real data; at d = 1 the whole row is one tile
// with all taps. Tiles hold ~kTilePixels output pixels so a tile's columns stay in L2.
//
// Layouts. Columns are tap-major, (r, s, c), matching the weight prepared once as
// (G, Kg, KH, KW, Cg); a tap rectangle spanning all of KW is then a strided view of it.
// NCHW: a tile's column matrix is (nr*ns*Cg, P), each row a run of one input row (memcpy), and
//   y_tile (Kg, P) = Wc (Kg, nr*ns*Cg) @ col.
// channels_last (NHWC): the column matrix is (P, nr*ns*Cg), one row per output pixel holding its
//   channel runs (each a memcpy), and y_tile (P, Kg) = col @ Wc^T. Tiles spanning whole output rows are written by the GEMM in place (a strided view of
//   the output); narrower tiles go through a small buffer.
//
// Passes. forward: the tiled engine. grad_input: for stride 1 (and padding no larger than the
// dilated kernel extent, i.e. every DeepLab/ASPP case) it is the forward engine run on
// grad_output with the flipped, transposed weight (a gather: parallel over tiles, tap skipping
// included, no col2im); otherwise GEMM + col2im per image. grad_weight: the tiled engine's column
// tiles against the matching grad_output tiles, accumulated per tap rectangle.
//
// Threads and determinism. Work items are (image, tile) pairs spread over at::parallel_for; each
// GEMM runs on one thread. Forward / grad_input items write disjoint outputs. grad_weight cuts the
// items into a fixed number of parts (min(items, kWgradParts), not the thread count), each
// accumulating its own partial sums, added in part order at the end, so every result is bitwise
// reproducible run to run. Across thread counts too, except where a call has a single work item:
// at::parallel_for then runs it on the calling thread, outside a parallel region, and the BLAS
// library threads that GEMM itself (its bits can then differ in the last places between 1 and 2
// threads; seen in fuzzing for N = 1 1x1 grad_weights and one-output-channel forwards). (fp32
// with >= 16 channels on one side takes the direct wgrad kernel instead; see its comment.) col2im accumulates each element in a fixed order (no atomics, no races).
//
// Narrow groups (G > 1, Cg * Kg <= 16: depthwise and friends) skip the GEMMs, which would be a
// row or two each, for direct loops (forward_direct, backward_weight_direct; fp32 depthwise on
// AVX-512 in conv_depthwise.h). NCHW layers with <= 8 output channels a group and long rows take
// conv_narrow.h's kernels, vectorised along the row.
//
// fp32 and fp64 natively; bf16/fp16 are computed in fp32 and rounded once at the end.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../conv_common.h"
#include "../conv_gemm.h"
#include "../env.h"
#include "blas_emulation.h"
#include "conv_depthwise.h"
#include "conv_narrow.h"
#include "conv_precision.h"
#include "fresh_buffer.h"
#include "layout_copy.h"
#include "../ops.h"

namespace rnnkern {
namespace {

constexpr int64_t kTilePixels = 512;  // output pixels per tile (the N dimension of the tile GEMM)
constexpr int64_t kMinSegment = 4;    // shorter tap-skipping segments are merged into a neighbour
// The GEMM-path weight gradients reduce over a fixed number of parts (partial sums added in part
// order), whatever the thread count: bits do not depend on it.
constexpr int64_t kWgradParts = 4;

template <typename T>
void fill_zero(T* p, int64_t n) {
  if (n > 0) std::memset(static_cast<void*>(p), 0, sizeof(T) * n);
}

// Per-thread scratch (column matrices, tile buffers), kept between calls: a fresh multi-MB buffer
// per call costs an mmap and a page fault per 4 KB on first touch, which measured ~10% of a
// 64-channel 32x32 convolution. Worker threads are the persistent OpenMP pool, so each keeps
// at most the largest buffer it has needed (slot 0: columns, slot 1: tile buffer, slot 2: packed
// weight of the direct path).
at::Tensor scratch(int slot, int64_t numel, const at::TensorOptions& opts) {
  thread_local std::vector<unsigned char> bufs[3];
  std::vector<unsigned char>& b = bufs[slot];
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(numel, 1)) * c10::elementSize(opts.dtype().toScalarType());
  if (b.size() < bytes) b.resize(bytes + 64);
  void* p = b.data();
  size_t space = b.size();
  std::align(64, bytes, p, space);  // (b.size() - 64 >= bytes leaves room to align)
  return at::from_blob(p, {numel}, opts);
}

// 1x1 kernel, stride 1, no padding: the column matrix is the input itself.
bool is_pointwise(const ConvGeometry& g) {
  return g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.pb == 0 && g.pr == 0;
}

// ---- tiling --------------------------------------------------------------------------------

struct TapRect {
  int64_t r0, r1, s0, s1;
  int64_t taps() const { return (r1 - r0) * (s1 - s0); }
  bool operator==(const TapRect& o) const { return r0 == o.r0 && r1 == o.r1 && s0 == o.s0 && s1 == o.s1; }
};

struct Tile {
  int64_t oh0, oh1, ow0, ow1;
  int64_t rect;  // index into Plan::rects, or -1: no tap reads real data (output = bias)
  int64_t pixels() const { return (oh1 - oh0) * (ow1 - ow0); }
};

struct Plan {
  std::vector<Tile> tiles;
  std::vector<TapRect> rects;
  int64_t max_pixels = 0, max_red = 0;  // largest tile, largest column-matrix height (Cg * taps)
};

struct AxisSeg {
  int64_t lo, hi, t0, t1;  // output range [lo, hi), taps [t0, t1) that read real data in it
};

// Cuts [0, out) where the set of taps reading real data changes; see the header comment. The cut
// is kept only when it saves at least (1 - keep_below) of the MACs along this axis (more, smaller
// GEMMs and, along W, a copy through a tile buffer cost something); else one segment.
std::vector<AxisSeg> axis_segments(int64_t out, int64_t taps, int64_t s, int64_t d, int64_t p, int64_t in,
                                   double keep_below) {
  std::vector<int64_t> lo(taps), hi(taps), bp{0, out};
  for (int64_t t = 0; t < taps; ++t) {
    ConvGeometry::valid_range(t, s, d, p, in, out, &lo[t], &hi[t]);
    if (lo[t] < hi[t]) {
      bp.push_back(lo[t]);
      bp.push_back(hi[t]);
    }
  }
  std::sort(bp.begin(), bp.end());
  bp.erase(std::unique(bp.begin(), bp.end()), bp.end());
  std::vector<AxisSeg> segs;
  for (size_t i = 0; i + 1 < bp.size(); ++i) {
    const AxisSeg seg{bp[i], bp[i + 1], 0, 0};
    if (!segs.empty() && (seg.hi - seg.lo < kMinSegment || segs.back().hi - segs.back().lo < kMinSegment)) {
      segs.back().hi = seg.hi;
    } else {
      segs.push_back(seg);
    }
  }
  for (AxisSeg& seg : segs) {
    // Taps overlapping the segment form a contiguous range (valid ranges move monotonically with
    // the tap index); with stride > 1 it may include taps that read nothing here: a superset is
    // always correct (those reads are zero-filled), only slower.
    int64_t t0 = taps, t1 = 0;
    for (int64_t t = 0; t < taps; ++t) {
      if (lo[t] < hi[t] && lo[t] < seg.hi && hi[t] > seg.lo) {
        t0 = std::min(t0, t);
        t1 = std::max(t1, t + 1);
      }
    }
    seg.t0 = t0 < t1 ? t0 : 0;
    seg.t1 = t0 < t1 ? t1 : 0;
  }
  int64_t split = 0, u0 = taps, u1 = 0;
  for (const AxisSeg& seg : segs) {
    split += (seg.hi - seg.lo) * (seg.t1 - seg.t0);
    if (seg.t0 < seg.t1) {
      u0 = std::min(u0, seg.t0);
      u1 = std::max(u1, seg.t1);
    }
  }
  if (segs.size() > 1 && u0 < u1 && double(split) > keep_below * double(out * (u1 - u0))) {
    return {AxisSeg{0, out, u0, u1}};
  }
  return segs;
}

Plan make_plan(const ConvGeometry& g) {
  Plan plan;
  const auto rows = axis_segments(g.OH, g.KH, g.sh, g.dh, g.pt, g.H, 0.9);
  const auto cols = axis_segments(g.OW, g.KW, g.sw, g.dw, g.pl, g.W, 0.75);
  for (const AxisSeg& rs : rows) {
    for (const AxisSeg& cs : cols) {
      int64_t rect = -1;
      if (rs.t0 < rs.t1 && cs.t0 < cs.t1) {
        const TapRect tr{rs.t0, rs.t1, cs.t0, cs.t1};
        auto it = std::find(plan.rects.begin(), plan.rects.end(), tr);
        rect = it - plan.rects.begin();
        if (it == plan.rects.end()) plan.rects.push_back(tr);
        plan.max_red = std::max(plan.max_red, g.Cg() * tr.taps());
      }
      const int64_t width = cs.hi - cs.lo;
      const int64_t tw = std::min(width, kTilePixels);
      const int64_t th = std::max<int64_t>(1, kTilePixels / tw);
      for (int64_t ow = cs.lo; ow < cs.hi; ow += tw) {
        for (int64_t oh = rs.lo; oh < rs.hi; oh += th) {
          const Tile t{oh, std::min(oh + th, rs.hi), ow, std::min(ow + tw, cs.hi), rect};
          plan.max_pixels = std::max(plan.max_pixels, t.pixels());
          plan.tiles.push_back(t);
        }
      }
    }
  }
  return plan;
}

// The weight in tap-major order, (G, Kg, KH, KW, Cg) contiguous: the column order of every column
// matrix below. flip_transpose: the weight of grad_input-as-a-convolution, (G, Cg, KH, KW, Kg)
// with the taps reversed (see backward_input_impl).
at::Tensor prepare_weight(const ConvGeometry& g, const at::Tensor& w, bool flip_transpose) {
  // ATen's strided copy (a 1x1 kernel's is no copy at all): an element-by-element loop here took
  // ~0.5 ms for a 512 x 512 pointwise weight, twice the GEMM it feeds
  const at::Tensor w5 = w.view({g.G, g.Kg(), g.Cg(), g.KH, g.KW});  // (K, Cg, KH, KW) contiguous
  if (flip_transpose) return w5.flip({3, 4}).permute({0, 2, 3, 4, 1}).contiguous();
  return w5.permute({0, 1, 3, 4, 2}).contiguous();
}

// The prepared weight restricted to each tap rectangle, per group: (G, Kg, nr*ns*Cg). A rectangle
// spanning all of KW is a strided view (its rows are contiguous column blocks); others are copied
// (runs of ns*Cg elements).
template <typename T>
std::vector<at::Tensor> compact_weights(const ConvGeometry& g, const Plan& plan, const at::Tensor& wt) {
  const int64_t G = g.G, Kg = g.Kg(), Cg = g.Cg(), row = g.KW * Cg, red_all = g.KH * row;
  std::vector<at::Tensor> out;
  for (const TapRect& tr : plan.rects) {
    if (tr.s0 == 0 && tr.s1 == g.KW) {
      out.push_back(wt.view({G, Kg, red_all}).narrow(2, tr.r0 * row, (tr.r1 - tr.r0) * row));
      continue;
    }
    const int64_t run = (tr.s1 - tr.s0) * Cg, nr = tr.r1 - tr.r0;
    at::Tensor c = at::empty({G, Kg, nr * run}, wt.options());
    const T* src = wt.const_data_ptr<T>();
    T* dst = c.mutable_data_ptr<T>();
    for (int64_t gk = 0; gk < G * Kg; ++gk)
      for (int64_t r = tr.r0; r < tr.r1; ++r, dst += run)
        std::memcpy(static_cast<void*>(dst), src + gk * red_all + r * row + tr.s0 * Cg, sizeof(T) * run);
    out.push_back(c);
  }
  return out;
}

// ---- column matrices -------------------------------------------------------------------------

// Tile columns from an NCHW image: x = the group's first channel plane (planes H*W apart);
// col (nr * ns * Cg, P), rows tap-major (r, s, c), P in (oh, ow) row-major tile order.
template <typename T>
void im2col_tile_nchw(const ConvGeometry& g, const T* x, const Tile& t, const TapRect& tr, T* col) {
  const int64_t TW = t.ow1 - t.ow0, P = t.pixels();
  for (int64_t r = tr.r0; r < tr.r1; ++r) {
    int64_t vh0, vh1;
    g.valid_rows(r, &vh0, &vh1);
    const int64_t h0 = std::clamp(vh0, t.oh0, t.oh1), h1 = std::clamp(vh1, h0, t.oh1);
    for (int64_t s = tr.s0; s < tr.s1; ++s) {
      int64_t vw0, vw1;
      g.valid_cols(s, &vw0, &vw1);
      const int64_t w0 = std::clamp(vw0, t.ow0, t.ow1), w1 = std::clamp(vw1, w0, t.ow1);
      const int64_t off = (-g.pt + r * g.dh) * g.W + (w0 * g.sw - g.pl + s * g.dw);
      if (g.sh == 1 && g.sw == 1 && TW == g.W) {
        // Tile rows as wide as the input rows (the 'same' case): the valid rows of this tap are
        // one contiguous run of the input plane, shifted. One memcpy (clipped to the plane),
        // then zero the few columns per row whose taps fall off the left/right edge (they read
        // the neighbouring row in the run).
        const int64_t fs = (h0 - g.pt + r * g.dh) * g.W + (t.ow0 - g.pl + s * g.dw), len = (h1 - h0) * TW;
        const int64_t lead = std::clamp<int64_t>(-fs, 0, len);
        const int64_t tail = std::clamp<int64_t>(fs + len - g.H * g.W, 0, len - lead);
        for (int64_t c = 0; c < g.Cg(); ++c, col += P) {
          fill_zero(col, (h0 - t.oh0) * TW);
          fill_zero(col + (h1 - t.oh0) * TW, (t.oh1 - h1) * TW);
          T* d = col + (h0 - t.oh0) * TW;
          if (len > 0) {
            fill_zero(d, lead);
            std::memcpy(static_cast<void*>(d + lead), x + c * g.H * g.W + fs + lead, sizeof(T) * (len - lead - tail));
            fill_zero(d + len - tail, tail);
          }
          for (int64_t oh = h0; oh < h1; ++oh, d += TW) {
            for (int64_t i = 0; i < w0 - t.ow0; ++i) d[i] = T(0);
            for (int64_t i = w1 - t.ow0; i < TW; ++i) d[i] = T(0);
          }
        }
        continue;
      }
      for (int64_t c = 0; c < g.Cg(); ++c, col += P) {
        const T* plane = x + c * g.H * g.W + off;
        fill_zero(col, (h0 - t.oh0) * TW);
        fill_zero(col + (h1 - t.oh0) * TW, (t.oh1 - h1) * TW);
        for (int64_t oh = h0; oh < h1; ++oh) {
          T* d = col + (oh - t.oh0) * TW;
          fill_zero(d, w0 - t.ow0);
          fill_zero(d + (w1 - t.ow0), t.ow1 - w1);
          const T* src = plane + oh * g.sh * g.W;
          T* dd = d + (w0 - t.ow0);
          if (g.sw == 1) {
            if (w1 > w0) std::memcpy(static_cast<void*>(dd), src, sizeof(T) * (w1 - w0));
          } else {
            for (int64_t i = 0; i < w1 - w0; ++i) dd[i] = src[i * g.sw];
          }
        }
      }
    }
  }
}

// Tile columns from an NHWC image: x = the image's pixel (0, 0) at the group's first channel
// (pixels C apart); col (P, nr * ns * Cg).
template <typename T>
void im2col_tile_nhwc(const ConvGeometry& g, const T* x, const Tile& t, const TapRect& tr, T* col) {
  const int64_t Cg = g.Cg();
  for (int64_t oh = t.oh0; oh < t.oh1; ++oh) {
    for (int64_t ow = t.ow0; ow < t.ow1; ++ow) {
      for (int64_t r = tr.r0; r < tr.r1; ++r) {
        const int64_t ih = oh * g.sh - g.pt + r * g.dh;
        const bool row_ok = ih >= 0 && ih < g.H;
        for (int64_t s = tr.s0; s < tr.s1; ++s, col += Cg) {
          const int64_t iw = ow * g.sw - g.pl + s * g.dw;
          if (!row_ok || iw < 0 || iw >= g.W) {
            fill_zero(col, Cg);
          } else {
            std::memcpy(static_cast<void*>(col), x + (ih * g.W + iw) * g.C, sizeof(T) * Cg);
          }
        }
      }
    }
  }
}

// Adds col (Cg*KH*KW, OH*OW) into gx (Cg planes of H x W, already zeroed). One task per input
// channel, taps in a fixed order: deterministic and race-free.
template <typename T>
void col2im_nchw(const ConvGeometry& g, const T* col, T* gx) {
  const int64_t OHW = g.OH * g.OW;
  at::parallel_for(0, g.Cg(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      T* plane = gx + c * g.H * g.W;
      for (int64_t tap = 0; tap < g.taps(); ++tap) {
        const int64_t r = tap / g.KW, s = tap % g.KW;
        int64_t oh0, oh1, ow0, ow1;
        g.valid_rows(r, &oh0, &oh1);
        g.valid_cols(s, &ow0, &ow1);
        const T* src_row = col + (c * g.taps() + tap) * OHW;
        const int64_t iw0 = ow0 * g.sw - g.pl + s * g.dw;
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          const T* src = src_row + oh * g.OW;
          T* dst = plane + (oh * g.sh - g.pt + r * g.dh) * g.W + iw0;
          for (int64_t ow = ow0; ow < ow1; ++ow) dst[(ow - ow0) * g.sw] += src[ow];
        }
      }
    }
  });
}

// Adds col (OH*OW, KH*KW*Cg) into gx (H, W, C; group's first channel at gx[0], zeroed). One task
// per input row: every (oh, r) reaching row ih is visited by that task alone, in a fixed order.
template <typename T>
void col2im_nhwc(const ConvGeometry& g, const T* col, T* gx) {
  const int64_t Cg = g.Cg(), row_len = g.taps() * Cg;
  at::parallel_for(0, g.H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t ih = begin; ih < end; ++ih) {
      for (int64_t r = 0; r < g.KH; ++r) {
        const int64_t t = ih + g.pt - r * g.dh;  // = oh * sh
        if (t < 0 || t % g.sh != 0 || t / g.sh >= g.OH) continue;
        const int64_t oh = t / g.sh;
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const T* src = col + (oh * g.OW + ow) * row_len + r * g.KW * Cg;
          for (int64_t s = 0; s < g.KW; ++s, src += Cg) {
            const int64_t iw = ow * g.sw - g.pl + s * g.dw;
            if (iw < 0 || iw >= g.W) continue;
            T* dst = gx + (ih * g.W + iw) * g.C;
            for (int64_t c = 0; c < Cg; ++c) dst[c] += src[c];
          }
        }
      }
    }
  });
}

// ---- tile <-> tensor views -------------------------------------------------------------------

// The (Kg, P) [NCHW] or (P, Kg) [NHWC] block of a 4-D tensor `t` (N, K, OH, OW) for image n,
// group gi and a tile spanning whole rows: a strided view the GEMM can write / read in place.
at::Tensor tile_view(const at::Tensor& t, bool cl, int64_t n, int64_t gi, int64_t Kg, const Tile& tile) {
  const int64_t OW = t.size(3), P = tile.pixels();
  if (!cl) return t[n].view({t.size(1), -1}).narrow(0, gi * Kg, Kg).narrow(1, tile.oh0 * OW, P);
  return t[n].permute({1, 2, 0}).view({-1, t.size(1)}).narrow(0, tile.oh0 * OW, P).narrow(1, gi * Kg, Kg);
}

bool full_rows(const Tile& t, int64_t OW) { return t.ow0 == 0 && t.ow1 == OW; }

// A tile buffer as (Kg, P) [NCHW] or (P, Kg) [NHWC].
at::Tensor tile_buffer(const at::Tensor& buf, bool cl, int64_t Kg, int64_t P) {
  const at::Tensor b = buf.narrow(0, 0, Kg * P);
  return cl ? b.view({P, Kg}) : b.view({Kg, P});
}

// Items below this many MACs in total run on the calling thread (thread wake-up costs more).
int64_t item_grain(int64_t items, double macs) { return macs < double(1 << 21) ? std::max<int64_t>(1, items) : 1; }

// Copies between a tile buffer (Kg, P) / (P, Kg) and the tensor (any tile shape).
template <typename T>
void tile_copy(T* buf, T* base, bool cl, int64_t n, int64_t gi, int64_t Kg, const Tile& tile, const at::Tensor& t,
               bool to_tensor) {
  const int64_t K = t.size(1), OH = t.size(2), OW = t.size(3), TW = tile.ow1 - tile.ow0, P = tile.pixels();
  if (!cl) {
    for (int64_t k = 0; k < Kg; ++k) {
      for (int64_t oh = tile.oh0; oh < tile.oh1; ++oh) {
        T* tp = base + ((n * K + gi * Kg + k) * OH + oh) * OW + tile.ow0;
        T* bp = buf + k * P + (oh - tile.oh0) * TW;
        if (to_tensor) std::memcpy(static_cast<void*>(tp), bp, sizeof(T) * TW);
        else std::memcpy(static_cast<void*>(bp), tp, sizeof(T) * TW);
      }
    }
  } else {
    for (int64_t oh = tile.oh0; oh < tile.oh1; ++oh) {
      for (int64_t ow = tile.ow0; ow < tile.ow1; ++ow) {
        T* tp = base + ((n * OH + oh) * OW + ow) * K + gi * Kg;
        T* bp = buf + ((oh - tile.oh0) * TW + (ow - tile.ow0)) * Kg;
        if (to_tensor) std::memcpy(static_cast<void*>(tp), bp, sizeof(T) * Kg);
        else std::memcpy(static_cast<void*>(bp), tp, sizeof(T) * Kg);
      }
    }
  }
}

// Output tile with no tap reading real data: bias (or 0).
template <typename T>
void tile_fill(T* base, bool cl, int64_t n, int64_t gi, int64_t Kg, const Tile& tile, const at::Tensor& t,
               const T* bias) {
  const int64_t K = t.size(1), OH = t.size(2), OW = t.size(3);
  for (int64_t oh = tile.oh0; oh < tile.oh1; ++oh) {
    for (int64_t ow = tile.ow0; ow < tile.ow1; ++ow) {
      for (int64_t k = 0; k < Kg; ++k) {
        const T v = bias ? bias[gi * Kg + k] : T(0);
        if (cl) base[((n * OH + oh) * OW + ow) * K + gi * Kg + k] = v;
        else base[((n * K + gi * Kg + k) * OH + oh) * OW + ow] = v;
      }
    }
  }
}

// ---- passes ----------------------------------------------------------------------------------

// y = conv(x, w) + bias with the tiled engine. x, y dense in the layout `cl`; wt the prepared
// (G, Kg, KH, KW, Cg) weight.
template <typename T>
void forward_tiled(const ConvGeometry& g, bool cl, const at::Tensor& x, const at::Tensor& wt,
                   const std::optional<at::Tensor>& bias, at::Tensor& y) {
  const Plan plan = make_plan(g);
  const std::vector<at::Tensor> wc = compact_weights<T>(g, plan, wt);
  const int64_t G = g.G, Kg = g.Kg(), Cg = g.Cg();
  std::vector<at::Tensor> bias_g;
  for (int64_t gi = 0; bias && gi < G; ++gi) {
    const at::Tensor b = bias->narrow(0, gi * Kg, Kg);
    bias_g.push_back(cl ? b.unsqueeze(0) : b.unsqueeze(1));
  }
  const T* bias_ptr = bias ? bias->const_data_ptr<T>() : nullptr;
  const T* xp = x.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  const int64_t items = g.N * static_cast<int64_t>(plan.tiles.size());
  const double macs = double(g.N) * g.OH * g.OW * g.K * Cg * g.taps();
  at::parallel_for(0, items, item_grain(items, macs), [&](int64_t begin, int64_t end) {
    at::Tensor col_buf = scratch(0, plan.max_red * plan.max_pixels, x.options());
    at::Tensor out_buf = scratch(1, Kg * plan.max_pixels, x.options());
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / static_cast<int64_t>(plan.tiles.size());
      const Tile& tile = plan.tiles[item % plan.tiles.size()];
      const int64_t P = tile.pixels();
      const bool direct = full_rows(tile, g.OW);
      for (int64_t gi = 0; gi < G; ++gi) {
        if (tile.rect < 0) {
          tile_fill<T>(yp, cl, n, gi, Kg, tile, y, bias_ptr);
          continue;
        }
        const TapRect& tr = plan.rects[tile.rect];
        const int64_t red = Cg * tr.taps();
        at::Tensor out = direct ? tile_view(y, cl, n, gi, Kg, tile) : tile_buffer(out_buf, cl, Kg, P);
        const at::Tensor wg = wc[tile.rect][gi];  // (Kg, red)
        if (!cl) {
          im2col_tile_nchw<T>(g, xp + (n * g.C + gi * Cg) * g.H * g.W, tile, tr, col_buf.mutable_data_ptr<T>());
          const at::Tensor col = col_buf.narrow(0, 0, red * P).view({red, P});
          if (bias) at::addmm_out(out, bias_g[gi], wg, col);
          else at::mm_out(out, wg, col);
        } else {
          im2col_tile_nhwc<T>(g, xp + n * g.H * g.W * g.C + gi * Cg, tile, tr, col_buf.mutable_data_ptr<T>());
          const at::Tensor col = col_buf.narrow(0, 0, red * P).view({P, red});
          if (bias) at::addmm_out(out, bias_g[gi], col, wg.t());
          else at::mm_out(out, col, wg.t());
        }
        if (!direct) tile_copy<T>(out_buf.mutable_data_ptr<T>(), yp, cl, n, gi, Kg, tile, y, true);
      }
    }
  });
}

// Pointwise (1x1, stride 1, no padding): GEMMs on the tensors themselves. One group: a single
// product, (N*HW, C) x W^T in channels_last, W x (C, HW) batched over the images in NCHW (one
// GEMM call a image cost ~4 us each: 39 us against torch's 12 for an 8-image 64 -> 11 classifier at
// 8x8). Groups: one GEMM per image and group.
template <typename T>
void forward_pointwise(const ConvGeometry& g, bool cl, const at::Tensor& x, const at::Tensor& wt,
                       const std::optional<at::Tensor>& bias, at::Tensor& y) {
  const int64_t G = g.G, Kg = g.Kg(), Cg = g.Cg();
  const at::Tensor wg = wt.view({G, Kg, Cg});
  if (G == 1) {
    const int64_t HW = g.OH * g.OW;
    if (cl) {  // x and y dense channels_last: (N*HW, C) and (N*HW, K) row-major
      at::Tensor out = y.permute({0, 2, 3, 1}).view({g.N * HW, g.K});
      const at::Tensor in = x.permute({0, 2, 3, 1}).view({g.N * HW, g.C});
      if (bias) at::addmm_out(out, bias->unsqueeze(0), in, wg[0].t());
      else at::mm_out(out, in, wg[0].t());
    } else {
      at::Tensor out = y.view({g.N, g.K, HW});
      const at::Tensor in = x.view({g.N, g.C, HW});
      const at::Tensor w = wg[0].unsqueeze(0).expand({g.N, g.K, g.C});
      if (bias) at::baddbmm_out(out, bias->view({1, g.K, 1}).expand({g.N, g.K, HW}), w, in);
      else at::bmm_out(out, w, in);
    }
    return;
  }
  at::parallel_for(0, g.N * G, item_grain(g.N * G, double(g.N) * g.H * g.W * g.K * Cg), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / G, gi = item % G;
      const Tile all{0, g.OH, 0, g.OW, 0};
      at::Tensor out = tile_view(y, cl, n, gi, Kg, all);
      at::Tensor in = tile_view(x, cl, n, gi, Cg, all);
      if (!cl) {
        if (bias) at::addmm_out(out, bias->narrow(0, gi * Kg, Kg).unsqueeze(1), wg[gi], in);
        else at::mm_out(out, wg[gi], in);
      } else {
        if (bias) at::addmm_out(out, bias->narrow(0, gi * Kg, Kg).unsqueeze(0), in, wg[gi].t());
        else at::mm_out(out, in, wg[gi].t());
      }
    }
  });
}

// Groups this narrow (depthwise and friends) make per-group GEMMs of a row or two: loop directly.
bool narrow_groups(const ConvGeometry& g) { return g.G > 1 && g.Cg() * g.Kg() <= 16; }

bool cpu_has_avx512();  // (below, with the direct AVX-512 kernels)

// Direct convolution for narrow groups. wt is the prepared (G, Kg, KH, KW, Cg) weight, so output
// channel co's tap (r, s) for input channel c is wt[((co * KH + r) * KW + s) * Cg + c].
// NCHW: one task per (image, output channel) plane, rows accumulated tap by tap (the inner loop
// runs along a row). NHWC: one task per (image, output row), channels innermost.
template <typename T>
void forward_direct(const ConvGeometry& g, bool cl, const at::Tensor& x, const at::Tensor& wt,
                    const std::optional<at::Tensor>& bias, at::Tensor& y) {
  const int64_t Cg = g.Cg(), Kg = g.Kg(), K = g.K, KH = g.KH, KW = g.KW;
  const T* xp = x.const_data_ptr<T>();
  const T* w = wt.const_data_ptr<T>();
  const T* b = bias ? bias->const_data_ptr<T>() : nullptr;
  T* yp = y.mutable_data_ptr<T>();
  if constexpr (std::is_same_v<T, float>) {
    if (depthwise::applies(g) && cpu_has_avx512()) {
      if (cl) return depthwise::forward_nhwc(g, xp, w, b, yp);
      if (g.sw == 1) return depthwise::forward_nchw(g, xp, w, b, yp);
    }
  }
  const double macs = double(g.N) * g.OH * g.OW * K * Cg * g.taps();
  if (!cl) {
    at::parallel_for(0, g.N * K, macs < double(1 << 21) ? g.N * K : 1, [&](int64_t begin, int64_t end) {
      for (int64_t nk = begin; nk < end; ++nk) {
        const int64_t n = nk / K, co = nk % K, gi = co / Kg;
        T* o = yp + nk * g.OH * g.OW;
        std::fill(o, o + g.OH * g.OW, b ? b[co] : T(0));
        for (int64_t c = 0; c < Cg; ++c) {
          const T* plane = xp + (n * g.C + gi * Cg + c) * g.H * g.W;
          for (int64_t r = 0; r < KH; ++r) {
            int64_t oh0, oh1;
            g.valid_rows(r, &oh0, &oh1);
            for (int64_t s = 0; s < KW; ++s) {
              int64_t ow0, ow1;
              g.valid_cols(s, &ow0, &ow1);
              const T wv = w[((co * KH + r) * KW + s) * Cg + c];
              for (int64_t oh = oh0; oh < oh1; ++oh) {
                const T* src = plane + (oh * g.sh - g.pt + r * g.dh) * g.W + (ow0 * g.sw - g.pl + s * g.dw);
                T* dst = o + oh * g.OW + ow0;
                const int64_t len = ow1 - ow0;
                if (g.sw == 1) {
                  for (int64_t i = 0; i < len; ++i) dst[i] += wv * src[i];
                } else {
                  for (int64_t i = 0; i < len; ++i) dst[i] += wv * src[i * g.sw];
                }
              }
            }
          }
        }
      }
    });
    return;
  }
  // NHWC: weight as (taps, Cg, K) so the innermost loop (output channels) reads it contiguously
  std::vector<T> wd(static_cast<size_t>(g.taps() * Cg * K));
  for (int64_t co = 0; co < K; ++co)
    for (int64_t t = 0; t < g.taps(); ++t)
      for (int64_t c = 0; c < Cg; ++c) wd[(t * Cg + c) * K + co] = w[(co * g.taps() + t) * Cg + c];
  at::parallel_for(0, g.N * g.OH, macs < double(1 << 21) ? g.N * g.OH : 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.OH, oh = row % g.OH;
      T* orow = yp + row * g.OW * K;
      for (int64_t ow = 0; ow < g.OW; ++ow)
        for (int64_t co = 0; co < K; ++co) orow[ow * K + co] = b ? b[co] : T(0);
      for (int64_t r = 0; r < KH; ++r) {
        const int64_t ih = oh * g.sh - g.pt + r * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        for (int64_t s = 0; s < KW; ++s) {
          int64_t ow0, ow1;
          g.valid_cols(s, &ow0, &ow1);
          for (int64_t c = 0; c < Cg; ++c) {
            const T* wv = wd.data() + ((r * KW + s) * Cg + c) * K;
            for (int64_t ow = ow0; ow < ow1; ++ow) {
              const T* xq = xp + ((n * g.H + ih) * g.W + (ow * g.sw - g.pl + s * g.dw)) * g.C + c;
              T* op = orow + ow * K;
              if (Cg == 1 && Kg == 1) {
                for (int64_t co = 0; co < K; ++co) op[co] += wv[co] * xq[co];
              } else {
                for (int64_t co = 0; co < K; ++co) op[co] += wv[co] * xq[(co / Kg) * Cg];
              }
            }
          }
        }
      }
    }
  });
}

// ---- direct AVX-512 convolution (fp32) ---------------------------------------------------------
//
// Register-blocked direct convolution, the structure oneDNN's CPU kernels use: a block of PX
// output pixels (along one output row) x KV vectors of 16 output channels is held in 24 zmm
// accumulators across the whole reduction (taps x Cg); for every (tap, input channel) the KV
// weight vectors are loaded once and each pixel's input value is broadcast against them. No
// column matrix, no GEMM calls. The input is read as NHWC (in place when channels_last, else a
// copy). Convolution (forward_direct_avx512): the output row is cut at every tap's valid-range
// ends before it is cut into blocks, so a tap reads real input for all pixels of a block or for
// none; rows likewise (a tap whose input row lies in the padding is skipped), so tap skipping at
// large dilation is exact (segments too short to be worth a block are merged, over a zero-padded
// copy; the transposed convolution's phase blocks always read one). Each thread packs the
// 64-output-channel slice of the weight it works on, (taps, Cg, 16 x KV) with zero columns past
// Kg, and runs the reduction in chunks over a band of output rows (see ReductionChunks). The
// partial sums live in a per-band buffer (pixel-major) written out in the output's layout (NHWC:
// runs of channels; NCHW: transposed), or straight in a channels_last output whose groups hold
// whole vectors. Compiled for AVX-512 with a target attribute and taken only when the CPU has it
// (the build has no -march). Each output element is produced by one task in a fixed order:
// deterministic.

bool cpu_has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}

// 16 floats p[idx[i]] (GCC 12's plain gather intrinsic warns about its own uninitialised source)
__attribute__((target("avx512f"))) inline __m512 gather16(__m512i idx, const float* p, int) {
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF, idx, p, 4);
}

constexpr int64_t kDirectMaxPx = 24;  // widest pixel block (KV = 1)

template <int PX, int KV>
__attribute__((target("avx512f"))) void direct_block(const float* x, int64_t xs, const int64_t* toff,
                                                      const float* const* tw, int64_t ntaps, int64_t Cg, int64_t wp,
                                                      float* out, int64_t op, const float* init,
                                                      bool accumulate) {
  // accumulate (a later chunk of the reduction): this chunk's sum starts from zero and is added to
  // the partial sums at the end, rather than continuing them. A running sum over the whole
  // reduction loses accuracy with its length: the FCN-32s head's grad_input (a million terms an
  // output) ran 7-27x torch's fp32 error that way, now the chunk's length plus the chunk count.
  __m512 acc[PX][KV];
#pragma GCC unroll 32
  for (int i = 0; i < PX; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < KV; ++v) acc[i][v] = !accumulate && init ? _mm512_loadu_ps(init + 16 * v) : _mm512_setzero_ps();
  for (int64_t t = 0; t < ntaps; ++t) {
    const float* xt = x + toff[t];
    const float* wt = tw[t];
    for (int64_t c = 0; c < Cg; ++c) {
      __m512 w[KV];
#pragma GCC unroll 4
      for (int v = 0; v < KV; ++v) w[v] = _mm512_loadu_ps(wt + c * wp + 16 * v);
#pragma GCC unroll 32
      for (int i = 0; i < PX; ++i) {
        const __m512 b = _mm512_set1_ps(xt[i * xs + c]);
#pragma GCC unroll 4
        for (int v = 0; v < KV; ++v) acc[i][v] = _mm512_fmadd_ps(b, w[v], acc[i][v]);
      }
    }
  }
#pragma GCC unroll 32
  for (int i = 0; i < PX; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < KV; ++v)
      _mm512_storeu_ps(out + i * op + 16 * v,
                       accumulate ? _mm512_add_ps(_mm512_loadu_ps(out + i * op + 16 * v), acc[i][v]) : acc[i][v]);
}

using DirectBlockFn = void (*)(const float*, int64_t, const int64_t*, const float* const*, int64_t, int64_t, int64_t,
                               float*, int64_t, const float*, bool);
template <int KV, int... PX>
constexpr std::array<DirectBlockFn, sizeof...(PX)> direct_blocks(std::integer_sequence<int, PX...>) {
  return {direct_block<PX + 1, KV>...};
}
// kDirectBlocksKV[px - 1]: the kernel for px pixels (1 <= px <= 24 / KV)
constexpr auto kDirectBlocks1 = direct_blocks<1>(std::make_integer_sequence<int, 24>{});
constexpr auto kDirectBlocks2 = direct_blocks<2>(std::make_integer_sequence<int, 12>{});
constexpr auto kDirectBlocks3 = direct_blocks<3>(std::make_integer_sequence<int, 8>{});
constexpr auto kDirectBlocks4 = direct_blocks<4>(std::make_integer_sequence<int, 6>{});
DirectBlockFn direct_block_fn(int kv, int64_t px) {
  switch (kv) {
    case 1: return kDirectBlocks1[px - 1];
    case 2: return kDirectBlocks2[px - 1];
    case 3: return kDirectBlocks3[px - 1];
    default: return kDirectBlocks4[px - 1];
  }
}

// Which engine a forward pass (and grad_input, a forward in disguise) takes where both can run.
// Convolutions: the direct kernels at every size measured on one core of the Sapphire Rapids VM
// (bench/NOTES.md, fourteenth session: 1.03-2.7x the GEMM engine over 15 shapes of 64-2048
// channels, grad_input 1.0-3.1x). Transposed convolutions: the GEMM engine for tiny inputs, where
// each weight element meets few pixels and the direct kernels' weight packing (a transpose of the
// whole weight every call) outweighs its gains; k == s is one product on the GEMM engine with the
// weight as it comes (k2 s2 512 -> 512 at 8x8: direct 1.77 ms, GEMM 1.45; k3 s2 2.0 vs 1.5; at
// 16x16 direct leads by 1.1-1.4x at every channel count tried).
constexpr int64_t kDirectTransposedMinPixels = 128;  // input pixels (N x H x W) per call

// RNNKERN_CONV_CPU_FORWARD=direct / gemm forces the fp32 forward's engine where both can run (tests,
// benchmarks); unset: by the rule above.
enum class ForwardEngine { kBySize, kDirect, kGemm };
ForwardEngine forward_engine_override() {
  const char* e = std::getenv("RNNKERN_CONV_CPU_FORWARD");
  if (e == nullptr || *e == '\0') return ForwardEngine::kBySize;
  const std::string v(e);
  TORCH_CHECK(v == "direct" || v == "gemm", "RNNKERN_CONV_CPU_FORWARD must be 'direct' or 'gemm', got '", v, "'");
  return v == "direct" ? ForwardEngine::kDirect : ForwardEngine::kGemm;
}

// Whether a pass runs on the direct kernels (given that they can run it): `by_size` unless
// RNNKERN_CONV_CPU_FORWARD forces an engine. RNNKERN_DEBUG=1 logs the choice.
bool forward_takes_direct(const char* op, bool by_size) {
  const ForwardEngine e = forward_engine_override();
  const bool direct = e == ForwardEngine::kDirect || (e == ForwardEngine::kBySize && by_size);
  if (debug_log_enabled()) {
    std::cerr << "[rnnkern] " << op << " (cpu): " << (direct ? "direct" : "gemm") << " engine"
              << (e == ForwardEngine::kBySize ? "" : " (forced)") << "\n";
  }
  return direct;
}

// The direct path covers fp32 convolutions other than narrow groups (their own direct loops) and
// pointwise ones (plain GEMMs), down to a single output channel a group in channels_last and two
// in NCHW: below a vector of output channels the packed weight's zero columns waste lanes, but the
// GEMM engine's column matrices cost more there (one core: 4 -> 4 at 64x64 channels_last 0.18x
// torch on the GEMM engine, 0.73x direct; 64 -> 11 at 8x8 0.50x, 1.16x; 8 -> 1 NCHW 0.94x, 0.76x).
bool direct_ok(const ConvGeometry& g, bool cl, at::ScalarType t) {
  return t == at::kFloat && cpu_has_avx512() && g.Kg() >= (cl ? 1 : 2) && !narrow_groups(g) && !is_pointwise(g);
}

// NCHW fp32 convolutions (not narrow groups, not pointwise) where conv_narrow.h's row-vectorised
// kernels apply: unit column stride, <= 8 output channels a group, rows of >= 32 pixels.
bool narrow_nchw_ok(const ConvGeometry& g, bool cl, at::ScalarType t) {
  return t == at::kFloat && !cl && cpu_has_avx512() && narrow::applies(g) && !narrow_groups(g) && !is_pointwise(g);
}

// RNNKERN_DEBUG=1: which calls take conv_narrow.h's row kernels, and whether through NCHW copies
// (the tests check the routes with it).
void log_narrow_route(const char* op, bool copies) {
  if (debug_log_enabled())
    std::cerr << "[rnnkern] " << op << " (cpu): narrow NCHW rows" << (copies ? " through NCHW copies" : "") << "\n";
}

// The weight gradient's NCHW narrow kernel (conv_narrow.h): both operands NCHW, fp32, <= 8 channels
// a group on both sides, rows of >= 32 pixels, kernels up to 7 columns wide (bench/NOTES.md,
// eighteenth session).
bool narrow_nchw_wgrad_ok(const ConvGeometry& g, bool x_cl, bool gy_cl, at::ScalarType t) {
  if (t != at::kFloat || !cpu_has_avx512() || !narrow::backward_weight_applies(g) || narrow_groups(g) ||
      is_pointwise(g))
    return false;
  // channels_last operands through NCHW copies where that measured faster (kNarrowCopies)
  return (!x_cl && !gy_cl) || (g.Kg() * g.Cg() <= 32 && g.OW >= 64);
}

// The weight gradient of channels_last operands with 8 output channels a group and at most 8 input
// channels, not narrow groups (conv_narrow.h's backward_weight_cl_k8: vectors along the output
// channels, no copies).
// One core, N8 64x64 3x3: 8 -> 8 0.74x torch through the NCHW copies, 3 -> 8 0.71x (bench/NOTES.md,
// twentieth session, for the new numbers).
bool narrow_cl_wgrad_ok(const ConvGeometry& g, bool x_cl, bool gy_cl, at::ScalarType t) {
  return t == at::kFloat && x_cl && gy_cl && g.N > 0 && narrow::backward_weight_cl_k8_applies(g) && !is_pointwise(g);
}

// kNarrowCopies: channels_last layers narrow enough for the NCHW row kernels run them on NCHW
// copies of their operands, the result copied back. In channels_last the direct kernels vectorise
// over those few channels (a quarter to half of each vector live): one core, N8 at 64x64, 4 -> 4
// forward / grad_input / grad_weight 0.64x / 0.73x / 0.46x torch there, 1.43x / 1.63x / ~1.2x
// through the copies; 8 -> 2 0.66x -> 1.38x forward; 32 -> 4 0.72x -> 1.02x forward. Where the copies
// cost more than the lanes save they stay: 64 -> 8 at 32x32 forward (0.75x direct, 0.69x copied),
// grad_input from 16 input channels (its NCHW kernel is then not narrow: 0.78x -> 0.48x), grad_weight
// at 8 -> 8 (~0.7x either way).
bool narrow_forward_via_nchw(const ConvGeometry& g, bool cl, at::ScalarType t) {
  return cl && narrow_nchw_ok(g, false, t) && g.Cg() <= 32 && g.OW >= 64;
}

// grad_input as a convolution of grad_output where it is one: at unit stride, grad_input[c, ih] =
// sum_{k, r} gy[k, ih + pt - r*dh] w[k, c, r], a stride-1 convolution with the flipped kernel
// (r' = KH-1-r), channels swapped per group, and padding ext - p on each side. Fills *t with that
// convolution's geometry and returns true, or returns false (a stride, or padding past the kernel's
// extent).
bool backward_input_as_convolution(const ConvGeometry& g, ConvGeometry* t) {
  const int64_t ext_h = g.dh * (g.KH - 1), ext_w = g.dw * (g.KW - 1);
  if (g.sh != 1 || g.sw != 1 || g.pt > ext_h || g.pb > ext_h || g.pl > ext_w || g.pr > ext_w) return false;
  *t = g;
  t->C = g.K;
  t->H = g.OH;
  t->W = g.OW;
  t->K = g.C;
  t->OH = g.H;
  t->OW = g.W;
  t->pt = ext_h - g.pt;
  t->pb = ext_h - g.pb;
  t->pl = ext_w - g.pl;
  t->pr = ext_w - g.pr;
  return true;
}

// grad_input's side of kNarrowCopies: the grad_input that backward_input_impl runs as a
// convolution of grad_output, where that convolution is narrow (<= 8 input channels a group).
bool narrow_backward_input_via_nchw(const ConvGeometry& g, bool cl, at::ScalarType t) {
  ConvGeometry conv{};
  return cl && backward_input_as_convolution(g, &conv) && narrow_nchw_ok(conv, false, t) && g.W >= 64;
}

// Floats between consecutive input channels' rows of the packed weight: Kgp, plus one vector when
// Kgp spans an even number of 64-byte lines. A block reads the same 4 lines of every row; with an
// even line pitch those fall into a fraction of L1's sets (a quarter at Kgp = 256: rows 1 KB apart
// meet every 4th row in the same set), the weight slice stops fitting, and 3x3 convolutions ran
// 2-3x slower from 256 channels on (bench/NOTES.md, thirteenth session).
int64_t direct_weight_pitch(int64_t Kgp) { return (Kgp / 16) % 2 == 0 ? Kgp + 16 : Kgp; }

// In-register transpose of a 16 x 16 block: r[i] (row i) -> r[j] (column j); always inlined (a call
// passes the 16 rows through the stack). (GCC 12's headers build these shuffles on
// _mm512_undefined_ps and warn about it: silenced here.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
__attribute__((target("avx512f"), always_inline)) inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {  // per 128-bit lane L: rows 2i, 2i+1 interleaved
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // r[4i + k], lane L: rows 4i..4i+3 of column 4L + k
    r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int k = 0; k < 4; ++k) {  // column 4L + k gathers lane L of r[k], r[4+k], r[8+k], r[12+k]
    const __m512 t1 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88), t2 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);
    const __m512 t3 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88),
                 t4 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
    t[k] = _mm512_shuffle_f32x4(t1, t3, 0x88);
    t[8 + k] = _mm512_shuffle_f32x4(t1, t3, 0xDD);
    t[4 + k] = _mm512_shuffle_f32x4(t2, t4, 0x88);
    t[12 + k] = _mm512_shuffle_f32x4(t2, t4, 0xDD);
  }
  for (int j = 0; j < 16; ++j) r[j] = t[j];
}
#pragma GCC diagnostic pop

// Output channels [k_lo, k_hi) of group gi of the direct kernels' weight, as rows (t, c) `pitch`
// floats apart: dst[(t * Cg + c) * pitch + k - k_lo] = the weight of output k, input c, tap t, and
// zeros for k >= Kg (k_hi may reach past Kg to the padded width). Read straight from the torch
// weight w (K, Cg, KH, KW), any strides. flip_transpose: g is the grad_input-as-a-convolution
// geometry (its C / K are w's K / Cg) and its weight is w with the taps reversed and the channels
// swapped.
__attribute__((target("avx512f"))) void pack_direct_weight(const ConvGeometry& g, const at::Tensor& w,
                                                            bool flip_transpose, int64_t gi, int64_t k_lo,
                                                            int64_t k_hi, float* dst, int64_t pitch) {
  const int64_t Cg = g.Cg(), Kg = g.Kg(), taps = g.taps(), kn = std::min(k_hi, Kg);
  const float* src = w.const_data_ptr<float>();
  const int64_t sK = w.stride(flip_transpose ? 1 : 0), sC = w.stride(flip_transpose ? 0 : 1);
  auto row = [&](int64_t t, int64_t c) { return dst + (t * Cg + c) * pitch; };  // output k at [k - k_lo]
  if (!flip_transpose && w.stride(3) == 1 && w.stride(2) == g.KW && w.stride(1) == taps) {
    // Each output channel's (Cg, KH, KW) weights are one contiguous run j = c * taps + t: the
    // packing is a transpose of (channels, Cg * taps), 16 x 16 in registers (a 16-channel gather
    // per (c, t) touched 16 lines a run apart: 1-3 GB/s, a third of a 512 -> 512 3x3 convolution).
    const int64_t R = Cg * taps, j16 = R / 16 * 16;
    const float* sg = src + gi * Kg * sK;
    int64_t k0 = k_lo;
    for (; k0 + 16 <= kn; k0 += 16) {
      for (int64_t j0 = 0; j0 < j16; j0 += 16) {
        __m512 r[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(sg + (k0 + i) * sK + j0);
        transpose16x16(r);
        for (int i = 0; i < 16; ++i) _mm512_storeu_ps(row((j0 + i) % taps, (j0 + i) / taps) + (k0 - k_lo), r[i]);
      }
      for (int64_t j = j16; j < R; ++j)
        for (int64_t k = k0; k < k0 + 16; ++k) row(j % taps, j / taps)[k - k_lo] = sg[k * sK + j];
    }
    for (int64_t j = 0; j < R; ++j) {
      float* d = row(j % taps, j / taps);
      for (int64_t k = k0; k < kn; ++k) d[k - k_lo] = sg[k * sK + j];
      for (int64_t k = std::max(k0, kn); k < k_hi; ++k) d[k - k_lo] = 0.f;
    }
    return;
  }
  if (flip_transpose && w.stride(3) == 1 && w.stride(2) == g.KW && w.stride(1) == taps) {
    // grad_input: output channel k's taps, w[c, k, :], are one run, and the runs of consecutive k
    // follow each other: 16 k x (up to 16 taps) by masked loads, transposed in registers, give
    // tap ts of 16 k per vector (a 16-channel gather per (c, t) was ~40% of a 512 -> 512 8x8 call).
    const float* sg = src + gi * Cg * sC;
    for (int64_t c = 0; c < Cg; ++c) {
      const float* sc = sg + c * sC;
      // Each c's run of the slice starts on a new page (sC floats on), where the hardware
      // prefetchers start over: the first load of every run stalled (~40% of the pack's samples).
      if (c + 2 < Cg)
        for (int64_t off = k_lo * sK; off < kn * sK; off += 16)
          _mm_prefetch(reinterpret_cast<const char*>(sc + 2 * sC + off), _MM_HINT_T0);
      int64_t k0 = k_lo;
      for (; k0 + 16 <= kn; k0 += 16)
        for (int64_t t0 = 0; t0 < taps; t0 += 16) {
          const int64_t tn = std::min<int64_t>(16, taps - t0);
          const __mmask16 m = static_cast<__mmask16>((1u << tn) - 1);
          __m512 r[16];
          for (int i = 0; i < 16; ++i) r[i] = _mm512_maskz_loadu_ps(m, sc + (k0 + i) * sK + t0);
          transpose16x16(r);  // r[j]: tap t0 + j of outputs k0 .. k0 + 15
          for (int64_t j = 0; j < tn; ++j) _mm512_storeu_ps(row(taps - 1 - t0 - j, c) + (k0 - k_lo), r[j]);
        }
      for (int64_t t = 0; t < taps; ++t) {
        float* d = row(t, c);
        for (int64_t k = k0; k < kn; ++k) d[k - k_lo] = sc[k * sK + taps - 1 - t];
        for (int64_t k = std::max(k0, kn); k < k_hi; ++k) d[k - k_lo] = 0.f;
      }
    }
    return;
  }
  // Any strides: 16-channel gathers, taps innermost (a channel's taps share the gathered lines).
  const bool gather = 16 * sK < (int64_t(1) << 31);
  const __m512i idx = _mm512_mullo_epi32(_mm512_set1_epi32(static_cast<int>(gather ? sK : 0)),
                                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t t = 0; t < taps; ++t) {
      const int64_t ts = flip_transpose ? taps - 1 - t : t;
      const float* sp = src + (flip_transpose ? gi * Cg * sC : gi * Kg * sK) + (ts / g.KW) * w.stride(2) +
                        (ts % g.KW) * w.stride(3) + c * sC;
      float* d = row(t, c);
      int64_t k = k_lo;
      if (gather)
        for (; k + 16 <= kn; k += 16) _mm512_storeu_ps(d + (k - k_lo), gather16(idx, sp + k * sK, 4));
      for (; k < kn; ++k) d[k - k_lo] = sp[k * sK];
      for (; k < k_hi; ++k) d[k - k_lo] = 0.f;
    }
}

// NCHW -> NHWC for one input row (n, ih): d[iw * C + c] = s[c * HW + iw], 16 channels at a time
// by gathers (pixel-major writes, row-contiguous reads).
__attribute__((target("avx512f"))) void nchw_row_to_nhwc(const float* s, int64_t C, int64_t HW, int64_t W,
                                                          float* d) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_set1_epi32(static_cast<int>(HW)),
                                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  int64_t c = 0;
  for (; c + 16 <= C && 16 * HW < (int64_t(1) << 31); c += 16)
    for (int64_t iw = 0; iw < W; ++iw)
      _mm512_storeu_ps(d + iw * C + c, gather16(idx, s + c * HW + iw, 4));
  for (; c < C; ++c)
    for (int64_t iw = 0; iw < W; ++iw) d[iw * C + c] = s[c * HW + iw];
}

// Row buffer (OW, Kgp) -> NCHW output rows o[k * OHW + ow] for k < Kg, by gathers.
__attribute__((target("avx512f"))) void row_to_nchw(const float* rb, int64_t Kgp, int64_t Kg, int64_t OW,
                                                     int64_t OHW, float* o) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_set1_epi32(static_cast<int>(Kgp)),
                                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  for (int64_t k = 0; k < Kg; ++k) {
    int64_t ow = 0;
    for (; ow + 16 <= OW; ow += 16) _mm512_storeu_ps(o + k * OHW + ow, gather16(idx, rb + ow * Kgp + k, 4));
    for (; ow < OW; ++ow) o[k * OHW + ow] = rb[ow * Kgp + k];
  }
}

// The input as a zero-padded NHWC image (N, H, pl + W + pr, C) in per-thread scratch (slot 0),
// followed by `slack` zeros; x is (N, C, H, W), dense NCHW or channels_last (cl).
const float* pad_input_nhwc(const at::Tensor& x, bool cl, int64_t pl, int64_t pr, int64_t slack) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Wp = W + pl + pr;
  const int64_t xsz = N * H * Wp * C;
  at::Tensor xbuf = scratch(0, xsz + slack, x.options());
  float* xq = xbuf.mutable_data_ptr<float>();
  const float* xs = x.const_data_ptr<float>();
  fill_zero(xq + xsz, slack);
  at::parallel_for(0, N * H, item_grain(N * H, double(xsz) * 4), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      float* d = xq + row * Wp * C;
      fill_zero(d, pl * C);
      fill_zero(d + (pl + W) * C, pr * C);
      d += pl * C;
      if (cl) {
        std::memcpy(static_cast<void*>(d), xs + row * W * C, sizeof(float) * W * C);
      } else {
        const int64_t n = row / H, ih = row % H;
        nchw_row_to_nhwc(xs + (n * C * H + ih) * W, C, H * W, W, d);
      }
    }
  });
  return xq;
}

// Writes a row buffer (OW, pitch) to output row (n, oh), channels [k, k + count), of y (N, K, OH, OW).
void store_row(const float* rb, int64_t pitch, bool cl, at::Tensor& y, int64_t n, int64_t oh, int64_t k,
               int64_t count) {
  const int64_t K = y.size(1), OH = y.size(2), OW = y.size(3);
  float* yp = y.mutable_data_ptr<float>();
  if (cl) {
    float* o = yp + ((n * OH + oh) * OW) * K + k;
    for (int64_t ow = 0; ow < OW; ++ow)
      std::memcpy(static_cast<void*>(o + ow * K), rb + ow * pitch, sizeof(float) * count);
  } else {
    row_to_nchw(rb, pitch, count, OW, OH * OW, yp + ((n * K + k) * OH + oh) * OW);
  }
}

// A zero-padded copy of the bias per group, (G, Kgp), or empty.
std::vector<float> pack_direct_bias(const std::optional<at::Tensor>& bias, int64_t G, int64_t Kg, int64_t Kgp) {
  std::vector<float> bd;
  if (!bias) return bd;
  bd.assign(static_cast<size_t>(G * Kgp), 0.f);
  const float* b = bias->const_data_ptr<float>();
  for (int64_t gi = 0; gi < G; ++gi) std::copy(b + gi * Kg, b + (gi + 1) * Kg, bd.begin() + gi * Kgp);
  return bd;
}

// Reduction blocking. A block re-reads its weight slice (taps x input channels x 64 outputs) for
// every (tap, channel) step; once the slice outgrows L2 it streams from L3 (3x3 256 -> 256 ran at
// 2/3 of the 64-output rate). So the reduction runs in chunks whose slice fits kDirectChunkBytes,
// each chunk over every block of a band of output rows before the next (partial sums kept in the
// output rows), so a band's ~kDirectBandPixels pixels reuse each chunk from L2. A chunk is a range
// of input channels with all taps or, where fewer than 16 channels would fit, a range of taps with
// all channels (FCN's 64 x 64 kernels: a one-channel chunk would use one value of every input line
// it loads; 39 ms against the GEMM engine's 21). The chunks depend on the geometry alone: the
// sums' order, hence the bits, do not depend on the thread count.
constexpr int64_t kDirectChunkBytes = 320 << 10;
constexpr int64_t kDirectBandPixels = 256;
struct ReductionChunks {
  int64_t count, Cg, taps;
  bool by_taps;
  // chunk ch: input channels [c0, c1), taps [t0, t1) (tap indices of the packed weight)
  void range(int64_t ch, int64_t* c0, int64_t* c1, int64_t* t0, int64_t* t1) const {
    *c0 = by_taps ? 0 : ch * Cg / count;
    *c1 = by_taps ? Cg : (ch + 1) * Cg / count;
    *t0 = by_taps ? ch * taps / count : 0;
    *t1 = by_taps ? (ch + 1) * taps / count : taps;
  }
};
ReductionChunks direct_reduction_chunks(int64_t taps, int64_t Cg) {
  const int64_t budget = env_positive_int("RNNKERN_CONV_CHUNK_BYTES", kDirectChunkBytes);
  const int64_t vec_bytes = 64 * static_cast<int64_t>(sizeof(float));  // a tap's 64 outputs, one channel
  const int64_t cc = budget / (taps * vec_bytes);
  if (cc >= std::min<int64_t>(Cg, 16)) return {(Cg + std::max<int64_t>(cc, 1) - 1) / std::max<int64_t>(cc, 1), Cg, taps, false};
  const int64_t tc = std::max<int64_t>(1, budget / (Cg * vec_bytes));
  return {(taps + tc - 1) / tc, Cg, taps, true};
}
// Rows per band: ~kDirectBandPixels pixels, fewer where that would leave threads idle.
int64_t direct_band_rows(int64_t OH, int64_t OW, int64_t outer_items) {
  int64_t band = (env_positive_int("RNNKERN_CONV_BAND_PIXELS", kDirectBandPixels) + OW - 1) / OW;
  band = std::min(band, std::max<int64_t>(1, outer_items * OH / (4 * at::get_num_threads())));
  return std::max<int64_t>(1, std::min(band, OH));
}

// Work item `item` of the direct loops: (group, 64-channel slice, image, band), band innermost.
struct DirectItem {
  int64_t gs, gi, k0, n, oh0, oh1;  // gs: the (group, slice) index, what a thread's packed weight holds
  int kv;                            // vectors of 16 output channels in the slice
};
DirectItem direct_item(int64_t item, int64_t N, int64_t slices, int64_t band, int64_t bands, int64_t OH,
                       int64_t Kgp) {
  DirectItem it{};
  it.gs = item / bands / N;
  it.gi = it.gs / slices;
  it.k0 = it.gs % slices * 64;
  it.n = item / bands % N;
  it.oh0 = item % bands * band;
  it.oh1 = std::min(OH, it.oh0 + band);
  it.kv = static_cast<int>(std::min<int64_t>(4, (Kgp - it.k0) / 16));
  return it;
}

// Sorted cuts [0, ..., end] without segments shorter than min_len (each merged into the segment
// before it, the first into the one after), unless only one segment is left.
constexpr int64_t kMinDirectSegment = 4;
void merge_short_segments(std::vector<int64_t>& cuts, int64_t min_len) {
  std::vector<int64_t> kept{cuts.front()};
  for (size_t i = 1; i + 1 < cuts.size(); ++i)
    if (cuts[i] - kept.back() >= min_len) kept.push_back(cuts[i]);
  if (kept.size() > 1 && cuts.back() - kept.back() < min_len) kept.pop_back();
  kept.push_back(cuts.back());
  cuts = std::move(kept);
}

void forward_direct_avx512(const ConvGeometry& g, bool cl, const at::Tensor& x, const at::Tensor& w,
                           bool flip_transpose, const std::optional<at::Tensor>& bias, at::Tensor& y) {
  const int64_t G = g.G, Cg = g.Cg(), Kg = g.Kg(), C = g.C, K = g.K, taps = g.taps();
  const int64_t Kgp = (Kg + 15) / 16 * 16;
  const std::vector<float> bd = pack_direct_bias(bias, G, Kg, Kgp);  // (G, Kgp), zero-padded
  // The row is cut at every tap's valid-range ends, then each segment into blocks as even as the
  // kernels allow, so a tap reads real data for all pixels of a block or for none and is skipped
  // there (exact tap skipping at large dilation). Segments shorter than kMinDirectSegment are
  // merged into a neighbour instead: at dilation 1 the cuts leave a 1-pixel block at each end of
  // the row, which re-reads the weight slice for one pixel (~20% of a 32-wide row's time). Merged
  // blocks read the zero padding, so the input is then a zero-padded NHWC copy; otherwise it is
  // read in place when channels_last, else from an unpadded NHWC copy.
  std::vector<int64_t> lo(g.KW), hi(g.KW), cuts{0, g.OW};
  for (int64_t s = 0; s < g.KW; ++s) {
    g.valid_cols(s, &lo[s], &hi[s]);
    cuts.push_back(lo[s]);
    cuts.push_back(hi[s]);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  const size_t exact_cuts = cuts.size();
  merge_short_segments(cuts, kMinDirectSegment);
  const bool padded = cuts.size() != exact_cuts;
  const int64_t Wq = padded ? g.W + g.pl + g.pr : g.W, ql = padded ? g.pl : 0;  // the read copy's width, offset
  const float* xq = padded ? pad_input_nhwc(x, cl, g.pl, g.pr, 0)
                    : cl   ? x.const_data_ptr<float>()
                           : pad_input_nhwc(x, false, 0, 0, 0);
  std::array<std::vector<std::pair<int64_t, int64_t>>, 5> blocks;  // [kv]: the row's [ow0, ow1) blocks
  for (int kv = 1; kv <= 4; ++kv)
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      const int64_t a = cuts[i], len = cuts[i + 1] - a, nb = (len + 24 / kv - 1) / (24 / kv);
      for (int64_t b = 0; b < nb; ++b) blocks[kv].emplace_back(a + b * len / nb, a + (b + 1) * len / nb);
    }
  // channels_last output with whole vectors per group: the kernels store into it directly
  const bool in_place = cl && Kg == Kgp;
  float* yp = y.mutable_data_ptr<float>();
  // Items: (group, 64-channel slice, image, band of output rows), in that order, so a thread's
  // consecutive items share a slice: each thread packs the slice's weight (taps, Cg, 64) into its
  // own buffer when it first meets it, and the copy is still in L2 when the kernels read it (a
  // whole-weight pack beforehand went to memory and back at 256+ channels: 1.3 of 4 ms at 3x3
  // 512 -> 512 8x8). Each item runs the reduction chunk by chunk over all its blocks.
  const int64_t slices = (Kgp + 63) / 64;
  const ReductionChunks chunks = direct_reduction_chunks(taps, Cg);
  const int64_t outer = g.N * G * slices;
  const int64_t band = direct_band_rows(g.OH, g.OW, outer), bands = (g.OH + band - 1) / band;
  const double macs = double(g.N) * g.OH * g.OW * K * Cg * taps;
  at::parallel_for(0, outer * bands, item_grain(outer * bands, macs), [&](int64_t begin, int64_t end) {
    float* buf = in_place ? nullptr : scratch(1, band * g.OW * 64, x.options()).mutable_data_ptr<float>();
    float* wd = scratch(2, taps * Cg * direct_weight_pitch(64), x.options()).mutable_data_ptr<float>();
    int64_t packed = -1;  // the (group, slice) in wd
    std::vector<int64_t> toff(static_cast<size_t>(taps));
    std::vector<const float*> tw(static_cast<size_t>(taps));
    for (int64_t item = begin; item < end; ++item) {
      // (plain copies: structured bindings cannot be captured by lambdas before C++20)
      const DirectItem it = direct_item(item, g.N, slices, band, bands, g.OH, Kgp);
      const int64_t gs = it.gs, gi = it.gi, k0 = it.k0, n = it.n, oh0 = it.oh0, oh1 = it.oh1;
      const int kv = it.kv;
      const int64_t pitch = direct_weight_pitch(16 * kv);
      if (packed != gs) {
        pack_direct_weight(g, w, flip_transpose, gi, k0, k0 + 16 * kv, wd, pitch);
        packed = gs;
      }
      const int64_t rp = in_place ? K : 16 * kv;  // pixel pitch of the partial sums
      auto row_out = [&](int64_t oh) {
        return in_place ? yp + ((n * g.OH + oh) * g.OW) * K + gi * Kg + k0 : buf + (oh - oh0) * g.OW * rp;
      };
      for (int64_t ch = 0; ch < chunks.count; ++ch) {
        int64_t c0, c1, t0, t1;
        chunks.range(ch, &c0, &c1, &t0, &t1);
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          float* rb = row_out(oh);
          for (const auto& [ow0, ow1] : blocks[kv]) {
            int64_t nt = 0;
            for (int64_t r = 0; r < g.KH; ++r) {
              const int64_t ih = oh * g.sh - g.pt + r * g.dh;
              if (ih < 0 || ih >= g.H) continue;
              for (int64_t s = std::max<int64_t>(0, t0 - r * g.KW); s < std::min(g.KW, t1 - r * g.KW); ++s) {
                if (hi[s] <= ow0 || lo[s] >= ow1) continue;  // every pixel of the block reads padding
                toff[nt] = ((n * g.H + ih) * Wq + ql + ow0 * g.sw - g.pl + s * g.dw) * C + gi * Cg + c0;
                tw[nt] = wd + ((r * g.KW + s) * Cg + c0) * pitch;
                ++nt;
              }
            }
            if (nt == 0 && ch > 0) continue;  // nothing to add
            direct_block_fn(kv, ow1 - ow0)(xq, g.sw * C, toff.data(), tw.data(), nt, c1 - c0, pitch,
                                           rb + ow0 * rp, rp, bias ? bd.data() + gi * Kgp + k0 : nullptr,
                                           /*accumulate=*/ch > 0);
          }
        }
      }
      if (!in_place)
        for (int64_t oh = oh0; oh < oh1; ++oh)
          store_row(row_out(oh), rp, cl, y, n, oh, gi * Kg + k0, std::min<int64_t>(rp, Kg - k0));
    }
  });
}

// Transposed convolution forward on the direct kernels, by output phase: output column ow
// receives tap kw only when (ow + pW - kw*dW) is a multiple of sW, so the columns ow = pw + sW*j
// of one phase form an ordinary stride-1 convolution over the input columns j + const (no inserted
// zeros are multiplied), and likewise for rows. Each block is PX consecutive j of one phase,
// written sW pixels apart into the row buffer. The weight (C_in, C_out/G, KH, KW) is packed with
// the channel roles swapped (reduction over C_in/G, vectors over C_out/G).
void conv_transpose_direct_avx512(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                  int64_t G, int64_t sH, int64_t sW, int64_t pH, int64_t pW, int64_t dH, int64_t dW,
                                  bool cl, at::Tensor& y) {
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Cout = y.size(1), OH = y.size(2), OW = y.size(3), KH = w.size(2), KW = w.size(3), taps = KH * KW;
  const int64_t Cig = Cin / G, Cog = Cout / G, Kgp = (Cog + 15) / 16 * 16;
  ConvGeometry pg{};  // the packing's view: reduction over C_in, outputs C_out, taps reversed
  pg.C = Cin;
  pg.K = Cout;
  pg.KH = KH;
  pg.KW = KW;
  pg.G = G;
  const std::vector<float> bd = pack_direct_bias(bias, G, Cog, Kgp);
  // every read column iw = (ow + pW - kw*dW) / sW lies in [-PL, W + PR)
  const int64_t PL = ((KW - 1) * dW) / sW + 2, PR = ((KW - 1) * dW + pW + sW) / sW + 2, Wp = W + PL + PR;
  const float* xq = pad_input_nhwc(x, cl, PL, PR, 16);
  // Items, slices packed per thread, reduction chunks and bands as in forward_direct_avx512.
  const int64_t slices = (Kgp + 63) / 64;
  const ReductionChunks chunks = direct_reduction_chunks(taps, Cig);
  const int64_t outer = N * G * slices, band = direct_band_rows(OH, OW, outer), bands = (OH + band - 1) / band;
  const double macs = double(N) * H * W * Cin * Cog * taps;
  at::parallel_for(0, outer * bands, item_grain(outer * bands, macs), [&](int64_t begin, int64_t end) {
    const int64_t row_floats = (OW + kDirectMaxPx) * 64;
    float* buf = scratch(1, band * row_floats, x.options()).mutable_data_ptr<float>();
    float* wd = scratch(2, taps * Cig * direct_weight_pitch(64), x.options()).mutable_data_ptr<float>();
    int64_t packed = -1;  // the (group, slice) in wd
    std::vector<int64_t> toff(static_cast<size_t>(taps));
    std::vector<const float*> tw(static_cast<size_t>(taps));
    for (int64_t item = begin; item < end; ++item) {
      const DirectItem it = direct_item(item, N, slices, band, bands, OH, Kgp);
      const int64_t gs = it.gs, gi = it.gi, k0 = it.k0, n = it.n, oh0 = it.oh0, oh1 = it.oh1;
      const int kv = it.kv;
      const int64_t pitch = direct_weight_pitch(16 * kv), rp = 16 * kv;  // weight row / pixel pitch
      if (packed != gs) {
        pack_direct_weight(pg, w, /*flip_transpose=*/true, gi, k0, k0 + 16 * kv, wd, pitch);
        packed = gs;
      }
      for (int64_t ch = 0; ch < chunks.count; ++ch) {
        int64_t c0, c1, t0, t1;
        chunks.range(ch, &c0, &c1, &t0, &t1);
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          float* rb = buf + (oh - oh0) * row_floats;
          for (int64_t pw = 0; pw < std::min(sW, OW); ++pw) {
            const int64_t J = (OW - pw + sW - 1) / sW, nb = (J + 24 / kv - 1) / (24 / kv);
            for (int64_t blk = 0; blk < nb; ++blk) {
              const int64_t j0 = blk * J / nb, j1 = (blk + 1) * J / nb;
              int64_t nt = 0;
              for (int64_t kh = 0; kh < KH; ++kh) {
                const int64_t th = oh + pH - kh * dH;
                if (((th % sH) + sH) % sH != 0) continue;
                const int64_t ih = th / sH;
                if (ih < 0 || ih >= H) continue;
                for (int64_t kw = 0; kw < KW; ++kw) {
                  const int64_t tw0 = pw + pW - kw * dW;
                  if (((tw0 % sW) + sW) % sW != 0) continue;
                  const int64_t col0 = tw0 / sW, t = taps - 1 - (kh * KW + kw);  // input column of j = 0, packed tap
                  if (j1 + col0 <= 0 || j0 + col0 >= W || t < t0 || t >= t1) continue;
                  toff[nt] = ((n * H + ih) * Wp + PL + j0 + col0) * Cin + gi * Cig + c0;
                  tw[nt] = wd + (t * Cig + c0) * pitch;
                  ++nt;
                }
              }
              if (nt == 0 && ch > 0) continue;  // nothing to add
              direct_block_fn(kv, j1 - j0)(xq, Cin, toff.data(), tw.data(), nt, c1 - c0, pitch,
                                           rb + (pw + j0 * sW) * rp, sW * rp,
                                           bias ? bd.data() + gi * Kgp + k0 : nullptr, /*accumulate=*/ch > 0);
            }
          }
        }
      }
      for (int64_t oh = oh0; oh < oh1; ++oh)
        store_row(buf + (oh - oh0) * row_floats, rp, cl, y, n, oh, gi * Cog + k0, std::min<int64_t>(rp, Cog - k0));
    }
  });
}

// ---- direct AVX-512 weight gradient (fp32) -----------------------------------------------------
//
// dW[k, c, r, s] = sum over (n, oh, ow) of gy[n, k, oh, ow] * x[n, c, oh*sh - pt + r*dh, ow*sw - pl + s*dw]:
// per tap, a (channels x channels) product reduced over the output pixels whose read of that tap
// lands on real input (exact valid rectangle: padding is never multiplied). One operand, "A", is
// read as vectors of 16 channels (a pixel-major copy with its channels per group padded to 16, or
// the channels_last tensor itself when nothing needs padding); the other, "B", is broadcast one
// channel at a time straight from the tensor in either layout (no copy: a broadcast is one load
// wherever the value lives). A block of CB B-channels x KV A-vectors (CB * KV <= 24 zmm) is held
// in registers across a chunk of ~kWgradChunk pixels (loaded from / stored to the tap's rows of
// an L2-resident slab of the result around the chunk), so the chunk's A vectors are reused from
// L1 by every B-block and every tap.
// A = gy (vectors over output channels) or x, whichever wgrad_direct_choice estimates cheaper.
//
// Determinism and accuracy: every result element is the sum, in chunk order, of per-chunk FMA
// chains (each chunk's partial starts from zero: a two-level sum, not one chain over all N*OH*OW
// pixels); the pixels run in a fixed order (image, row, column), the chunks (bands) are fixed by
// the geometry alone, and threads take disjoint (group, slab of B-channels) items. Bitwise
// identical run to run, for any thread count and any slab size.

constexpr int64_t kWgradChunk = 96;  // pixels per register-block pass

struct WgradSeg {
  const float* a;  // first pixel of A (group and block offsets added by the kernel call)
  const float* b;
  int64_t len;     // pixels; consecutive pixels are as / bs elements apart
};

template <int CB, int KV>
__attribute__((target("avx512f"))) void wgrad_block(const WgradSeg* segs, int64_t nseg, int64_t as, int64_t bs,
                                                     int64_t bcs, int64_t aoff, int64_t boff, float* acc,
                                                     int64_t ldacc) {
  __m512 s[CB][KV];
#pragma GCC unroll 24
  for (int j = 0; j < CB; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < KV; ++v) s[j][v] = _mm512_setzero_ps();
  for (int64_t q = 0; q < nseg; ++q) {
    const float* a = segs[q].a + aoff;
    const float* b = segs[q].b + boff;
    const int64_t len = segs[q].len;
    for (int64_t i = 0; i < len; ++i, a += as, b += bs) {
      __m512 av[KV];
#pragma GCC unroll 4
      for (int v = 0; v < KV; ++v) av[v] = _mm512_loadu_ps(a + 16 * v);
#pragma GCC unroll 24
      for (int j = 0; j < CB; ++j) {
        const __m512 bb = _mm512_set1_ps(b[j * bcs]);
#pragma GCC unroll 4
        for (int v = 0; v < KV; ++v) s[j][v] = _mm512_fmadd_ps(bb, av[v], s[j][v]);
      }
    }
  }
#pragma GCC unroll 24
  for (int j = 0; j < CB; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < KV; ++v)
      _mm512_storeu_ps(acc + j * ldacc + 16 * v, _mm512_add_ps(_mm512_loadu_ps(acc + j * ldacc + 16 * v), s[j][v]));
}

using WgradBlockFn = void (*)(const WgradSeg*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float*, int64_t);
template <int KV, int... CB>
constexpr std::array<WgradBlockFn, sizeof...(CB)> wgrad_blocks(std::integer_sequence<int, CB...>) {
  return {wgrad_block<CB + 1, KV>...};
}
constexpr auto kWgradBlocks1 = wgrad_blocks<1>(std::make_integer_sequence<int, 24>{});
constexpr auto kWgradBlocks2 = wgrad_blocks<2>(std::make_integer_sequence<int, 12>{});
constexpr auto kWgradBlocks3 = wgrad_blocks<3>(std::make_integer_sequence<int, 8>{});
constexpr auto kWgradBlocks4 = wgrad_blocks<4>(std::make_integer_sequence<int, 6>{});
WgradBlockFn wgrad_block_fn(int kv, int64_t cb) {
  switch (kv) {
    case 1: return kWgradBlocks1[cb - 1];
    case 2: return kWgradBlocks2[cb - 1];
    case 3: return kWgradBlocks3[cb - 1];
    default: return kWgradBlocks4[cb - 1];
  }
}

// A 4-D (N, C, R, S) dense tensor seen pixel by pixel: element (n, gi*Cg + c, y, x) at
// p + n*img + y*row + x*pix + c*ch (+ the group offset goff * gi).
struct PixelView {
  const float* p;
  int64_t img, row, pix, ch, goff;
};

PixelView pixel_view(const at::Tensor& t, bool cl, int64_t Cg) {
  const int64_t C = t.size(1), H = t.size(2), W = t.size(3);
  if (cl) return {t.const_data_ptr<float>(), H * W * C, W * C, C, 1, Cg};
  return {t.const_data_ptr<float>(), C * H * W, W, 1, H * W, Cg * H * W};
}

// One (image, row) of the A operand: dp[(x * G + gi) * Cgp + c] = t[n, gi*Cg + c, y, x], zeros for
// c >= Cg. From NCHW by 16 x 16 blocks (16 channel rows loaded whole, transposed in registers):
// one 16-channel gather per pixel touched 16 planes H*W apart, which alias in L1 and miss (the
// pack of a 128-channel 64x64 gy was ~40% of its wgrad call).
__attribute__((target("avx512f"))) void pack_a_row(const float* src, bool cl, int64_t n, int64_t y, int64_t C,
                                                    int64_t R, int64_t S, int64_t G, int64_t Cg, int64_t Cgp,
                                                    float* dp) {
  const int64_t RS = R * S, pitch = G * Cgp;
  for (int64_t gi = 0; gi < G; ++gi) {
    float* dg = dp + gi * Cgp;
    if (cl) {
      for (int64_t xx = 0; xx < S; ++xx)
        std::memcpy(static_cast<void*>(dg + xx * pitch), src + ((n * R + y) * S + xx) * C + gi * Cg,
                    sizeof(float) * Cg);
    } else {
      const float* sp = src + (n * C + gi * Cg) * RS + y * S;  // channel c, pixel xx at sp[c * RS + xx]
      const int64_t c16 = Cg / 16 * 16, x16 = S / 16 * 16;
      for (int64_t c0 = 0; c0 < c16; c0 += 16) {
        for (int64_t x0 = 0; x0 < x16; x0 += 16) {
          __m512 r[16];
          for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(sp + (c0 + i) * RS + x0);
          transpose16x16(r);
          for (int j = 0; j < 16; ++j) _mm512_storeu_ps(dg + (x0 + j) * pitch + c0, r[j]);
        }
        for (int64_t xx = x16; xx < S; ++xx)
          for (int64_t c = c0; c < c0 + 16; ++c) dg[xx * pitch + c] = sp[c * RS + xx];
      }
      for (int64_t c = c16; c < Cg; ++c)
        for (int64_t xx = 0; xx < S; ++xx) dg[xx * pitch + c] = sp[c * RS + xx];
    }
    for (int64_t xx = 0; xx < S; ++xx)
      for (int64_t c = Cg; c < Cgp; ++c) dg[xx * pitch + c] = 0.f;
  }
}

// The A operand: t (N, G*Cg, R, S) as pixel-major (N*R*S, G, Cgp) with zero channels c >= Cg, in
// per-thread scratch (slot 1); or t itself when it is channels_last with Cg == Cgp.
PixelView pack_a_operand(const at::Tensor& t, bool cl, int64_t G, int64_t Cg, int64_t Cgp) {
  const int64_t N = t.size(0), C = t.size(1), R = t.size(2), S = t.size(3), RS = R * S;
  if (cl && Cg == Cgp) return pixel_view(t, true, Cg);
  at::Tensor buf = scratch(1, N * RS * G * Cgp, t.options());
  float* d = buf.mutable_data_ptr<float>();
  const float* src = t.const_data_ptr<float>();
  const int64_t rows = N * R;
  at::parallel_for(0, rows, item_grain(rows, double(N * RS * C) * 4), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row)
      pack_a_row(src, cl, row / R, row % R, C, R, S, G, Cg, Cgp, d + row * S * G * Cgp);
  });
  return {d, RS * G * Cgp, S * G * Cgp, G * Cgp, 1, Cgp};
}

// Which operand is read as vectors: gy (output channels) or x (input channels); none: the GEMM path.
enum class WgradA { kNone, kGradOutput, kInput };

// A side qualifies with >= 16 channels per group. Between two that qualify, the smaller estimated
// cost in cycles: the FMAs at the side's lane fill (Ach / Ap; one vector per pixel, KV = 1,
// issues 25 loads per 24 FMAs: ~10% more; against an NCHW B, a block of 12-24 B channels is that
// many broadcast streams H*W apart, which alias in the L1 sets: 16 -> 128 channels NCHW 64x64
// measured 0.70x torch with x vectorised, 0.98x with gy), plus ~0.25 cycle per element to pack
// the side pixel-major (16 x 16 register transposes) unless it is read in place (channels_last,
// whole vectors). Ties go to gy.
WgradA wgrad_direct_choice(const ConvGeometry& g, at::ScalarType t, bool gy_cl, bool x_cl) {
  if (t != at::kFloat || !cpu_has_avx512() || narrow_groups(g) || is_pointwise(g)) return WgradA::kNone;
  const int64_t Kg = g.Kg(), Cg = g.Cg();
  const double macs = double(g.N) * g.OH * g.OW * Kg * Cg * g.taps();
  const double gy_px = double(g.N) * g.OH * g.OW, x_px = double(g.N) * g.H * g.W;
  auto cost = [&](int64_t ch, bool cl, double pixels, bool b_cl) {
    const int64_t cp = (ch + 15) / 16 * 16;
    const double fma = macs * double(cp) / double(ch) * (cp == 16 ? 1.1 : 1.0) * (!b_cl && cp <= 32 ? 1.5 : 1.0) / 32.0;
    return fma + (cl && cp == ch ? 0.0 : 0.25 * pixels * double(g.G * cp));
  };
  // Both sides narrower than a vector: direct from 4 channels on the wider side (one core: 4 -> 4
  // channels_last at 64x64 0.39x torch on the GEMM engine, 0.64x direct; 8 -> 8 NCHW 0.80x, 1.35x),
  // the GEMM engine below (3 -> 3 NCHW: 1.03x, 0.86x direct).
  if (Kg < 16 && Cg < 16) {
    if (std::max(Kg, Cg) < 4) return WgradA::kNone;
    return cost(Kg, gy_cl, gy_px, x_cl) <= cost(Cg, x_cl, x_px, gy_cl) ? WgradA::kGradOutput : WgradA::kInput;
  }
  if (Cg < 16) return WgradA::kGradOutput;
  if (Kg < 16) return WgradA::kInput;
  return cost(Kg, gy_cl, gy_px, x_cl) <= cost(Cg, x_cl, x_px, gy_cl) ? WgradA::kGradOutput : WgradA::kInput;
}

// One slab of the direct wgrad's result, rows (jj, t) for B-channels j0 + jj (jj < nj) and taps t,
// each Ap floats over the A channels, into the weight gradient (K, Cg, KH, KW) of group gi.
// gy vectorised (B = input channels): output k's part of the slab, w[k, j0 .. j0 + nj, :], is
// nj * taps consecutive floats, the slab's column k: 16 x 16 register transposes (16 rows, 16 k).
// x vectorised (B = output channels): w[j0 + jj] is (c, t) with t innermost, the slab's taps rows
// of B-channel jj read side by side.
__attribute__((target("avx512f"))) void wgrad_slab_to_weight(const float* slab, int64_t nj, int64_t taps,
                                                              int64_t Ap, bool a_is_gy, int64_t gi, int64_t j0,
                                                              int64_t Kg, int64_t Cg, float* w) {
  const int64_t wk = Cg * taps;
  if (!a_is_gy) {
    for (int64_t jj = 0; jj < nj; ++jj) {
      float* d = w + (gi * Kg + j0 + jj) * wk;
      const float* s = slab + jj * taps * Ap;
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t t = 0; t < taps; ++t) d[c * taps + t] = s[t * Ap + c];
    }
    return;
  }
  const int64_t rows = nj * taps, r16 = rows / 16 * 16;
  float* base = w + gi * Kg * wk + j0 * taps;  // w[k, j0 + jj, t] at base[k * wk + jj * taps + t]
  for (int64_t k0 = 0; k0 < Kg; k0 += 16) {
    const int64_t kn = std::min<int64_t>(16, Kg - k0);  // (k0 + 16 <= Ap: the rows are padded)
    for (int64_t r0 = 0; r0 < r16; r0 += 16) {
      __m512 v[16];
      for (int i = 0; i < 16; ++i) v[i] = _mm512_loadu_ps(slab + (r0 + i) * Ap + k0);
      transpose16x16(v);  // v[j]: rows r0 .. r0 + 15 of column k0 + j
      for (int64_t j = 0; j < kn; ++j) _mm512_storeu_ps(base + (k0 + j) * wk + r0, v[j]);
    }
    for (int64_t j = 0; j < kn; ++j)
      for (int64_t r = r16; r < rows; ++r) base[(k0 + j) * wk + r] = slab[r * Ap + k0 + j];
  }
}

// Result slabs of at most this size (B-channels x taps x Ap floats) stay in L2 between the register
// blocks that accumulate them and their reorder into the weight gradient.
constexpr int64_t kWgradSlabBytes = 512 << 10;

// Returns the weight gradient (K, Cg, KH, KW); gy and x dense, each in its own layout.
// Items are (group, slab of B-channels): a slab's result is accumulated over all bands and taps in
// an L2-resident buffer and written into the weight gradient itself; every slab re-reads the A
// operand (from L2 at few pixels per weight element, else a few passes from memory). (Bands outer,
// all slabs per band, accumulated a weight-sized result through memory, zeroed, reloaded per band
// and reordered at the end: ~3/4 of a 1024 -> 512 8x8 wgrad; slabs outer measured 0.96-1.8x of
// it over 12 shapes, 1 and 2 threads, bench/NOTES.md.)
at::Tensor backward_weight_direct_avx512(const ConvGeometry& g, WgradA which,
                                      const at::Tensor& gy, bool gy_cl,
                                      const at::Tensor& x, bool x_cl) {
  const int64_t G = g.G, Kg = g.Kg(), Cg = g.Cg(), taps = g.taps();
  const bool a_is_gy = which == WgradA::kGradOutput;
  const int64_t Ach = a_is_gy ? Kg : Cg, Bch = a_is_gy ? Cg : Kg, Ap = (Ach + 15) / 16 * 16;
  at::Tensor gw = empty_for_full_write({g.K, Cg, g.KH, g.KW}, x.options());
  float* w = gw.mutable_data_ptr<float>();
  if (g.N == 0) return gw.zero_();
  const PixelView A = a_is_gy ? pack_a_operand(gy, gy_cl, G, Kg, Ap) : pack_a_operand(x, x_cl, G, Cg, Ap);
  const PixelView B = a_is_gy ? pixel_view(x, x_cl, Cg) : pixel_view(gy, gy_cl, Kg);
  const PixelView& Y = a_is_gy ? A : B;  // the gy side
  const PixelView& X = a_is_gy ? B : A;  // the x side
  const int64_t as = a_is_gy ? A.pix : A.pix * g.sw, bs = a_is_gy ? B.pix * g.sw : B.pix;
  // Bands of output pixels (a few rows, or a piece of one long row), all taps of a band in turn:
  // the band's gy pixels and the x rows they read are reused from L1 / L2 by every tap (tap by
  // tap over the whole problem re-streamed x once per tap: the transposed conv's 4 MB grad_output
  // 16 times). Rows per band: ~kWgradChunk pixels at the taps' mean valid width.
  std::vector<int64_t> vlo(g.KH), vhi(g.KH), ulo(g.KW), uhi(g.KW);
  int64_t valid_w = 0;
  for (int64_t r = 0; r < g.KH; ++r) g.valid_rows(r, &vlo[r], &vhi[r]);
  for (int64_t s = 0; s < g.KW; ++s) {
    g.valid_cols(s, &ulo[s], &uhi[s]);
    valid_w += uhi[s] - ulo[s];
  }
  const int64_t pieces = (g.OW + kWgradChunk - 1) / kWgradChunk;
  const int64_t band_rows = pieces > 1 ? 1 : std::max<int64_t>(1, kWgradChunk * g.KW / std::max<int64_t>(1, valid_w));
  // Calls body(t, segs) with group gi's pixel runs of tap t, band by band, in a fixed order.
  auto for_each_band_tap = [&](int64_t gi, std::vector<WgradSeg>& segs, auto&& body) {
    for (int64_t R0 = 0; R0 < g.N * g.OH; R0 += band_rows) {
      const int64_t R1 = std::min(R0 + band_rows, g.N * g.OH);
      for (int64_t pc = 0; pc < pieces; ++pc) {
        const int64_t c0 = pc * g.OW / pieces, c1 = (pc + 1) * g.OW / pieces;
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t r = t / g.KW, s = t % g.KW;
          const int64_t ow0 = std::max(c0, ulo[s]), ow1 = std::min(c1, uhi[s]);
          if (ow0 >= ow1) continue;
          segs.clear();
          for (int64_t row = R0; row < R1; ++row) {
            const int64_t n = row / g.OH, oh = row % g.OH;
            if (oh < vlo[r] || oh >= vhi[r]) continue;
            const int64_t ih = oh * g.sh - g.pt + r * g.dh, iw0 = ow0 * g.sw - g.pl + s * g.dw;
            const float* ya = Y.p + n * Y.img + oh * Y.row + ow0 * Y.pix + gi * Y.goff;
            const float* xa = X.p + n * X.img + ih * X.row + iw0 * X.pix + gi * X.goff;
            segs.push_back(a_is_gy ? WgradSeg{ya, xa, ow1 - ow0} : WgradSeg{xa, ya, ow1 - ow0});
          }
          if (!segs.empty()) body(t, segs);
        }
      }
    }
  };
  // B-channels [jlo, jhi) against every A vector over segs, in register blocks of up to 24 / KV
  // B-channels x KV vectors; B-channel j's partial sums added into acc[(j - jlo) * ldj + a].
  auto run_blocks = [&](const std::vector<WgradSeg>& segs, int64_t jlo, int64_t jhi, float* acc, int64_t ldj) {
    for (int64_t a0 = 0; a0 < Ap; a0 += 64) {
      const int kv = static_cast<int>(std::min<int64_t>(4, (Ap - a0) / 16));
      const int64_t cb = 24 / kv, nb = (jhi - jlo + cb - 1) / cb;
      for (int64_t blk = 0; blk < nb; ++blk) {
        const int64_t j0 = jlo + blk * (jhi - jlo) / nb, j1 = jlo + (blk + 1) * (jhi - jlo) / nb;
        wgrad_block_fn(kv, j1 - j0)(segs.data(), static_cast<int64_t>(segs.size()), as, bs, B.ch, a0, j0 * B.ch,
                                    acc + (j0 - jlo) * ldj + a0, ldj);
      }
    }
  };
  const double macs = double(g.N) * g.OH * g.OW * g.K * Cg * taps;
  // a slab's rows are (jj, t), Ap floats each (RNNKERN_CONV_WGRAD_SLAB_BYTES: a test hook for
  // ragged slabs; a slab's size never changes the sums)
  int64_t slab = std::clamp<int64_t>(env_positive_int("RNNKERN_CONV_WGRAD_SLAB_BYTES", kWgradSlabBytes) /
                                         (taps * Ap * int64_t(sizeof(float))), 1, Bch);
  const int64_t threads = at::get_num_threads();  // at least ~4 items a thread where the channels allow
  if (threads > 1) slab = std::min(slab, std::max<int64_t>(6, (Bch * G + 4 * threads - 1) / (4 * threads)));
  if (slab >= 24) slab = slab / 24 * 24;  // whole register blocks at every KV
  const int64_t nslabs = (Bch + slab - 1) / slab, items = G * nslabs;
  at::parallel_for(0, items, item_grain(items, macs), [&](int64_t begin, int64_t end) {
    std::vector<WgradSeg> segs;
    float* buf = scratch(2, slab * taps * Ap, x.options()).mutable_data_ptr<float>();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t gi = item / nslabs, j0 = item % nslabs * slab, nj = std::min(slab, Bch - j0);
      fill_zero(buf, nj * taps * Ap);
      for_each_band_tap(gi, segs, [&](int64_t t, const std::vector<WgradSeg>& sg) {
        run_blocks(sg, j0, j0 + nj, buf + t * Ap, taps * Ap);
      });
      wgrad_slab_to_weight(buf, nj, taps, Ap, a_is_gy, gi, j0, Kg, Cg, w);
    }
  });
  return gw;
}

template <typename T>
void forward_impl(const ConvGeometry& g, bool cl, const at::Tensor& x, const at::Tensor& wt,
                  const std::optional<at::Tensor>& bias, at::Tensor& y) {
  if (narrow_groups(g)) forward_direct<T>(g, cl, x, wt, bias, y);
  else if (is_pointwise(g)) forward_pointwise<T>(g, cl, x, wt, bias, y);
  else forward_tiled<T>(g, cl, x, wt, bias, y);
}

// grad_input by GEMM + col2im, one image per task (any stride / padding).
template <typename T>
void backward_input_col2im(const ConvGeometry& g, bool cl, const at::Tensor& gy, const at::Tensor& w, at::Tensor& gx) {
  const int64_t G = g.G, Cg = g.Cg(), Kg = g.Kg(), OHW = g.OH * g.OW, red = Cg * g.taps();
  const at::Tensor wg = cl ? w.permute({0, 2, 3, 1}).contiguous().view({G, Kg, red}) : w.view({G, Kg, red});
  T* gxp = gx.mutable_data_ptr<T>();
  auto run = [&](int64_t n, at::Tensor& col_buf) {
    const Tile all{0, g.OH, 0, g.OW, 0};
    T* img = gxp + n * g.C * g.H * g.W;
    fill_zero(img, g.C * g.H * g.W);
    for (int64_t gi = 0; gi < G; ++gi) {
      const at::Tensor src = tile_view(gy, cl, n, gi, Kg, all);
      if (!cl) {
        at::Tensor col = col_buf.view({red, OHW});
        at::mm_out(col, wg[gi].t(), src);
        col2im_nchw<T>(g, col.const_data_ptr<T>(), img + gi * Cg * g.H * g.W);
      } else {
        at::Tensor col = col_buf.view({OHW, red});
        at::mm_out(col, src, wg[gi]);
        col2im_nhwc<T>(g, col.const_data_ptr<T>(), img + gi * Cg);
      }
    }
  };
  const int64_t threads = at::get_num_threads();
  if (g.N >= threads && threads > 1) {
    at::parallel_for(0, g.N, 1, [&](int64_t begin, int64_t end) {
      at::Tensor col_buf = scratch(0, red * OHW, gy.options());
      for (int64_t n = begin; n < end; ++n) run(n, col_buf);
    });
  } else {  // few images: threaded GEMM and col2im inside each
    at::Tensor col_buf = scratch(0, red * OHW, gy.options());
    for (int64_t n = 0; n < g.N; ++n) run(n, col_buf);
  }
}

// Depthwise NCHW grad_input at any stride: per (image, channel) plane, each tap's weight times the
// output gradient added into the input pixels the tap reads, in (r, s, oh, ow) order: one task a
// plane (which stays in L1), a fixed order. (The GEMM + col2im path ran one tiny product a group.)
template <typename T>
void backward_input_depthwise_nchw(const ConvGeometry& g, const T* gy, const T* w, T* gx) {
  const double macs = double(g.N) * g.OH * g.OW * g.C * g.taps();
  at::parallel_for(0, g.N * g.C, macs < double(1 << 21) ? g.N * g.C : 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      T* o = gx + plane * g.H * g.W;
      fill_zero(o, g.H * g.W);
      const T* src = gy + plane * g.OH * g.OW;
      const T* wc = w + (plane % g.C) * g.taps();
      g.for_each_tap([&](int64_t r, int64_t s, int64_t oh0, int64_t oh1, int64_t ow0, int64_t ow1) {
        const T wv = wc[r * g.KW + s];
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          T* dst = o + (oh * g.sh - g.pt + r * g.dh) * g.W + (ow0 * g.sw - g.pl + s * g.dw);
          const T* row = src + oh * g.OW + ow0;
          for (int64_t i = 0; i < ow1 - ow0; ++i) dst[i * g.sw] += wv * row[i];
        }
      });
    }
  });
}

template <typename T>
void backward_input_impl(const ConvGeometry& g, bool cl, const at::Tensor& gy, const at::Tensor& w, at::Tensor& gx) {
  ConvGeometry t{};
  if (backward_input_as_convolution(g, &t)) {
    if constexpr (std::is_same_v<T, float>) {
      if (narrow_nchw_ok(t, cl, gy.scalar_type()) && forward_takes_direct("conv2d_backward_input", true)) {
        log_narrow_route("conv2d_backward_input", false);
        const at::Tensor wt = prepare_weight(g, w, /*flip_transpose=*/true);
        return narrow::forward_nchw(t, gy.const_data_ptr<float>(), wt.const_data_ptr<float>(), nullptr,
                                    gx.mutable_data_ptr<float>());
      }
    }
    if (direct_ok(t, cl, gy.scalar_type()) && forward_takes_direct("conv2d_backward_input", true))
      forward_direct_avx512(t, cl, gy, w, /*flip_transpose=*/true, std::nullopt, gx);
    else forward_impl<T>(t, cl, gy, prepare_weight(g, w, /*flip_transpose=*/true), std::nullopt, gx);
  } else if (depthwise::applies(g) && !cl) {  // depthwise, strided (w: (C, 1, KH, KW))
    backward_input_depthwise_nchw<T>(g, gy.const_data_ptr<T>(), w.const_data_ptr<T>(), gx.mutable_data_ptr<T>());
  } else if (std::is_same_v<T, float> && depthwise::applies(g) && cpu_has_avx512()) {
    // channels_last: a gather over the taps that reach each input pixel, 16 channels a vector
    depthwise::backward_input_nhwc(g, gy.const_data_ptr<float>(), w.const_data_ptr<float>(),
                                   gx.mutable_data_ptr<float>());
  } else {
    backward_input_col2im<T>(g, cl, gy, w, gx);
  }
}

// Weight gradient for narrow groups, (K, Cg, KH, KW). NCHW: one task per output channel, each
// weight a sum of row dot products over the tap's valid rectangle. NHWC: output rows cut into a
// fixed number of parts, each accumulating (taps, Cg, K) partial sums with the output channels
// innermost, the parts added in order (reproducible for any thread count).
template <typename T>
at::Tensor backward_weight_direct(const ConvGeometry& g, bool cl, const at::Tensor& gy, const at::Tensor& x) {
  const int64_t Cg = g.Cg(), Kg = g.Kg(), K = g.K, taps = g.taps();
  const T* xp = x.const_data_ptr<T>();
  const T* gp = gy.const_data_ptr<T>();
  at::Tensor gw = empty_for_full_write({K, Cg, g.KH, g.KW}, x.options());
  T* w = gw.mutable_data_ptr<T>();
  const double macs = double(g.N) * g.OH * g.OW * K * Cg * taps;
  const int64_t rows = g.N * g.OH;
  const int64_t parts = macs < double(1 << 21) ? 1 : std::max<int64_t>(1, std::min<int64_t>(rows, kWgradParts));
  if constexpr (std::is_same_v<T, float>) {
    if (depthwise::applies(g) && cpu_has_avx512() && (cl || g.sw == 1)) {
      if (cl) depthwise::backward_weight_nhwc(g, gp, xp, parts, w);
      else depthwise::backward_weight_nchw(g, gp, xp, w);
      return gw;
    }
  }
  if (!cl) {
    at::parallel_for(0, K, macs < double(1 << 21) ? K : 1, [&](int64_t begin, int64_t end) {
      for (int64_t co = begin; co < end; ++co) {
        const int64_t gi = co / Kg;
        for (int64_t c = 0; c < Cg; ++c)
          g.for_each_tap([&](int64_t r, int64_t s, int64_t oh0, int64_t oh1, int64_t ow0, int64_t ow1) {
            T acc = T(0);
            for (int64_t n = 0; n < g.N; ++n) {
              const T* plane = xp + (n * g.C + gi * Cg + c) * g.H * g.W;
              const T* grad = gp + (n * K + co) * g.OH * g.OW;
              for (int64_t oh = oh0; oh < oh1; ++oh) {
                const T* xr = plane + (oh * g.sh - g.pt + r * g.dh) * g.W + (ow0 * g.sw - g.pl + s * g.dw);
                const T* gr = grad + oh * g.OW + ow0;
                T row = T(0);
                for (int64_t i = 0; i < ow1 - ow0; ++i) row += gr[i] * xr[i * g.sw];
                acc += row;
              }
            }
            w[((co * Cg + c) * g.KH + r) * g.KW + s] = acc;
          });
      }
    });
    return gw;
  }
  std::vector<T> partial(static_cast<size_t>(parts * taps * Cg * K), T(0));
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part) {
      T* acc = partial.data() + part * taps * Cg * K;
      for (int64_t row = part * rows / parts; row < (part + 1) * rows / parts; ++row) {
        const int64_t n = row / g.OH, oh = row % g.OH;
        const T* grow = gp + row * g.OW * K;
        for (int64_t r = 0; r < g.KH; ++r) {
          const int64_t ih = oh * g.sh - g.pt + r * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          for (int64_t s = 0; s < g.KW; ++s) {
            int64_t ow0, ow1;
            g.valid_cols(s, &ow0, &ow1);
            for (int64_t c = 0; c < Cg; ++c) {
              T* a = acc + ((r * g.KW + s) * Cg + c) * K;
              for (int64_t ow = ow0; ow < ow1; ++ow) {
                const T* xq = xp + ((n * g.H + ih) * g.W + (ow * g.sw - g.pl + s * g.dw)) * g.C + c;
                const T* gq = grow + ow * K;
                if (Cg == 1 && Kg == 1) {
                  for (int64_t co = 0; co < K; ++co) a[co] += gq[co] * xq[co];
                } else {
                  for (int64_t co = 0; co < K; ++co) a[co] += gq[co] * xq[(co / Kg) * Cg];
                }
              }
            }
          }
        }
      }
    }
  });
  for (int64_t co = 0; co < K; ++co)
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t t = 0; t < taps; ++t) {
        T sum = T(0);
        for (int64_t part = 0; part < parts; ++part) sum += partial[((part * taps + t) * Cg + c) * K + co];
        w[(co * Cg + c) * taps + t] = sum;
      }
  return gw;
}

// Returns the weight gradient as (K, Cg, KH, KW) contiguous.
template <typename T>
at::Tensor backward_weight_impl(const ConvGeometry& g, bool cl, const at::Tensor& gy, const at::Tensor& x) {
  if (narrow_groups(g)) return backward_weight_direct<T>(g, cl, gy, x);
  const int64_t G = g.G, Cg = g.Cg(), Kg = g.Kg();
  const bool pw = is_pointwise(g);
  Plan plan;
  if (pw) {  // one tile per image, read in place
    plan.tiles.push_back(Tile{0, g.OH, 0, g.OW, 0});
    plan.rects.push_back(TapRect{0, 1, 0, 1});
    plan.max_pixels = g.OH * g.OW;
    plan.max_red = Cg;
  } else {
    plan = make_plan(g);
  }
  const int64_t ntiles = static_cast<int64_t>(plan.tiles.size()), items = g.N * ntiles;
  const double macs = double(g.N) * g.OH * g.OW * g.K * Cg * g.taps();
  const int64_t parts =
      macs < double(1 << 21) ? 1 : std::max<int64_t>(1, std::min<int64_t>(items, kWgradParts));
  // acc[p][rect]: (G, Kg, Cg * taps of rect), in the layout's column order
  std::vector<std::vector<at::Tensor>> acc(parts, std::vector<at::Tensor>(plan.rects.size()));
  const T* xp = x.const_data_ptr<T>();
  T* gyp = const_cast<T*>(gy.const_data_ptr<T>());
  auto run_part = [&](int64_t p) {
    const int64_t i0 = p * items / parts, i1 = (p + 1) * items / parts;
    at::Tensor col_buf = scratch(0, pw ? 0 : plan.max_red * plan.max_pixels, x.options());
    at::Tensor gy_buf = scratch(1, Kg * plan.max_pixels, x.options());
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t n = item / ntiles;
      const Tile& tile = plan.tiles[item % ntiles];
      if (tile.rect < 0) continue;
      const TapRect& tr = plan.rects[tile.rect];
      const int64_t P = tile.pixels(), red = Cg * tr.taps();
      const bool direct = full_rows(tile, g.OW);
      if (!acc[p][tile.rect].defined()) acc[p][tile.rect] = at::zeros({G, Kg, red}, x.options());
      for (int64_t gi = 0; gi < G; ++gi) {
        at::Tensor src;
        if (direct) {
          src = tile_view(gy, cl, n, gi, Kg, tile);
        } else {
          tile_copy<T>(gy_buf.mutable_data_ptr<T>(), gyp, cl, n, gi, Kg, tile, gy, false);
          src = tile_buffer(gy_buf, cl, Kg, P);
        }
        at::Tensor a = acc[p][tile.rect][gi];
        if (!cl) {
          at::Tensor col;
          if (pw) {
            col = tile_view(x, cl, n, gi, Cg, tile);
          } else {
            im2col_tile_nchw<T>(g, xp + (n * g.C + gi * Cg) * g.H * g.W, tile, tr, col_buf.mutable_data_ptr<T>());
            col = col_buf.narrow(0, 0, red * P).view({red, P});
          }
          a.addmm_(src, col.t());
        } else {
          at::Tensor col;
          if (pw) {
            col = tile_view(x, cl, n, gi, Cg, tile);
          } else {
            im2col_tile_nhwc<T>(g, xp + n * g.H * g.W * g.C + gi * Cg, tile, tr, col_buf.mutable_data_ptr<T>());
            col = col_buf.narrow(0, 0, red * P).view({P, red});
          }
          a.addmm_(src.t(), col);
        }
      }
    }
  };
  if (parts > 1) {
    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) run_part(p);
    });
  } else {
    run_part(0);
  }
  // Scatter the rectangles into the tap-major gradient, parts and rectangles in a fixed order,
  // then reorder to (K, Cg, KH, KW).
  at::Tensor gwt = at::zeros({G, Kg, g.KH, g.KW, Cg}, x.options());
  for (int64_t p = 0; p < parts; ++p) {
    for (size_t i = 0; i < plan.rects.size(); ++i) {
      if (!acc[p][i].defined()) continue;
      const TapRect& tr = plan.rects[i];
      at::Tensor dst = gwt.slice(2, tr.r0, tr.r1).slice(3, tr.s0, tr.s1);
      dst.add_(acc[p][i].view(dst.sizes()));
    }
  }
  at::Tensor gw = empty_for_full_write({g.K, Cg, g.KH, g.KW}, x.options());
  const T* src = gwt.const_data_ptr<T>();
  T* dst = gw.mutable_data_ptr<T>();
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t t = 0; t < g.taps(); ++t) dst[(k * Cg + c) * g.taps() + t] = src[(k * g.taps() + t) * Cg + c];
  return gw;
}

at::ScalarType cpu_compute_type(const char* op, at::ScalarType t) {
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf, op,
              ": CPU kernels support float32, float64, bfloat16 and float16, got ", t);
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Detached (the kernels call ATen GEMMs on worker threads, where autograd is not excluded), in
// the compute dtype, dense in the chosen layout.
at::Tensor prep(const at::Tensor& t, at::ScalarType dtype, bool cl) {
  return t.detach().to(dtype).contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

// kNarrowCopies' NCHW copy of a channels_last operand: layout_copy.h's transpose where it applies
// (fp32, 2-16 channels, dense; ~1.5-2x ATen's strided copy, judged by the copied passes' times:
// 4 -> 4 at 64x64 forward 0.269 -> 0.231 ms), else prep's.
at::Tensor nchw_copy(const at::Tensor& t, at::ScalarType dtype) {
  if (dtype == at::kFloat && t.scalar_type() == at::kFloat && t.dim() == 4 && cpu_has_avx512() &&
      t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous() &&
      layout::applies(t.size(1), t.size(2) * t.size(3)))
    return layout::to_nchw(t.detach());
  return prep(t, dtype, false);
}

// kNarrowCopies' way back: dst (channels_last dense, fp32) <- src (NCHW dense, fp32).
void copy_into_channels_last(const at::Tensor& src, at::Tensor& dst) {
  TORCH_INTERNAL_ASSERT(src.is_contiguous() && src.scalar_type() == at::kFloat && dst.scalar_type() == at::kFloat &&
                        src.sizes() == dst.sizes());
  if (cpu_has_avx512() && dst.is_contiguous(at::MemoryFormat::ChannelsLast) && !dst.is_contiguous() &&
      layout::applies(src.size(1), src.size(2) * src.size(3)))
    layout::copy_to_channels_last(src, dst);
  else
    dst.copy_(src);
}

}  // namespace

bool conv_transpose2d_forward_direct_cpu(const at::Tensor& input, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias, int64_t groups, at::IntArrayRef stride,
                                         at::IntArrayRef padding, at::IntArrayRef dilation, at::Tensor& output) {
  if (input.scalar_type() != at::kFloat || !cpu_has_avx512() || output.size(1) / groups < 16 ||
      stride[0] * stride[1] > 16 || output.numel() == 0)
    return false;
  if (!forward_takes_direct("conv_transpose2d_forward",
                            input.size(0) * input.size(2) * input.size(3) >= kDirectTransposedMinPixels))
    return false;
  const bool cl = conv_channels_last(output);
  const at::Tensor x = prep(input, at::kFloat, cl);
  std::optional<at::Tensor> b;
  if (bias) b = bias->detach().contiguous();
  conv_transpose_direct_avx512(x, weight.detach(), b, groups, stride[0], stride[1], padding[0], padding[1],
                               dilation[0], dilation[1], cl, output);
  return true;
}

bool conv_transpose2d_backward_weight_direct_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                                 at::IntArrayRef weight_size, int64_t groups, at::IntArrayRef stride,
                                                 at::IntArrayRef padding, at::IntArrayRef dilation,
                                                 at::Tensor& grad_weight) {
  // Stride product > 16 (the FCN-32s head, k64 s32) keeps the GEMM path, as the forward does:
  // there every pixel step of the strided grad_output operand is a new cache line per channel
  // (measured 14.4 ms direct vs 12.1 ms GEMM on the bench row).
  if (input.scalar_type() != at::kFloat || input.numel() == 0 || grad_output.numel() == 0 ||
      stride[0] * stride[1] > 16)
    return false;
  // the convolution of grad_output (its input, C_out channels) producing `input` (C_in channels)
  ConvGeometry g = check_conv_args("conv_transpose2d_backward_weight", grad_output.sizes(), weight_size, stride,
                                   padding, dilation, groups);
  // With output_padding >= stride (allowed below the dilation) that convolution's output is larger
  // than x: its extra rows / columns would meet x = 0, so the reduction stops at x's size.
  g.OH = input.size(2);
  g.OW = input.size(3);
  const bool x_cl = conv_channels_last(grad_output), gy_cl = conv_channels_last(input);
  const WgradA which = wgrad_direct_choice(g, at::kFloat, gy_cl, x_cl);
  if (which == WgradA::kNone) return false;
  grad_weight = backward_weight_direct_avx512(g, which, prep(input, at::kFloat, gy_cl), gy_cl,
                                              prep(grad_output, at::kFloat, x_cl), x_cl);
  return true;
}

at::Tensor conv2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              int64_t groups) {
  constexpr const char* op = "conv2d_forward";
  const ConvMatmulPrecision matmul_precision;  // the products at the conv's fp32 precision
  check_conv_tensors(op, input, "input", weight, "weight");
  check_conv_bias(op, input, weight, bias);
  const ConvGeometry g = check_conv_args(op, input.sizes(), weight.sizes(), stride, padding, dilation, groups);
  const bool cl = conv_channels_last(input);
  const at::ScalarType ct = cpu_compute_type(op, input.scalar_type());
  at::Tensor y = empty_for_full_write({g.N, g.K, g.OH, g.OW},
                                      input.options().dtype(ct).memory_format(conv_output_format(input)));
  if (g.N > 0) {
    const at::Tensor x = prep(input, ct, cl);
    std::optional<at::Tensor> b;
    if (bias) b = bias->detach().to(ct).contiguous();
    if (conv2d_takes_gemm(g, /*default_on=*/false)) {
      // the weight as it comes, as the CUDA route takes it (weight_matrix copies what a BLAS cannot read)
      conv2d_forward_gemm(x, weight.detach().to(ct), b, g, cl, y, CpuGemm{});
    } else if ((narrow_nchw_ok(g, cl, ct) || narrow_forward_via_nchw(g, cl, ct)) &&
               forward_takes_direct("conv2d_forward", true)) {
      const at::Tensor wt = prepare_weight(g, prep(weight, ct, false), false);
      log_narrow_route(op, cl);
      const at::Tensor xn = cl ? nchw_copy(x, ct) : x;  // (kNarrowCopies; x is already fp32)
      at::Tensor yn =
          cl ? at::empty({g.N, g.K, g.OH, g.OW}, y.options().memory_format(at::MemoryFormat::Contiguous)) : y;
      narrow::forward_nchw(g, xn.const_data_ptr<float>(), wt.const_data_ptr<float>(),
                           b ? b->const_data_ptr<float>() : nullptr, yn.mutable_data_ptr<float>());
      if (cl) copy_into_channels_last(yn, y);
    } else if (direct_ok(g, cl, ct) && forward_takes_direct("conv2d_forward", true)) {
      // (reads the weight through its strides)
      forward_direct_avx512(g, cl, x, weight.detach().to(ct), /*flip_transpose=*/false, b, y);
    } else {
      const at::Tensor w = prep(weight, ct, false);
      AT_DISPATCH_FLOATING_TYPES(ct, "conv2d_forward_cpu",
                                 [&] { forward_impl<scalar_t>(g, cl, x, prepare_weight(g, w, false), b, y); });
    }
  }
  return ct == input.scalar_type() ? y : y.to(input.scalar_type());
}

at::Tensor conv2d_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                     at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "conv2d_backward_input";
  const ConvMatmulPrecision matmul_precision;  // the products at the conv's fp32 precision
  check_conv_tensors(op, grad_output, "grad_output", weight, "weight");
  const ConvGeometry g = check_conv_args(op, input_size, weight.sizes(), stride, padding, dilation, groups);
  check_conv_grad_output(op, g, grad_output);
  const bool cl = conv_channels_last(grad_output);
  const at::ScalarType ct = cpu_compute_type(op, grad_output.scalar_type());
  at::Tensor gx = empty_for_full_write(input_size,
                                       grad_output.options().dtype(ct).memory_format(conv_output_format(grad_output)));
  if (g.N > 0) {
    const at::Tensor gy = prep(grad_output, ct, cl);
    if (conv2d_takes_gemm(g, /*default_on=*/false)) {
      conv2d_backward_input_gemm(gy, weight.detach().to(ct), g, cl, gx, CpuGemm{});  // (as the forward's)
    } else if (narrow_backward_input_via_nchw(g, cl, ct) && forward_takes_direct("conv2d_backward_input", true)) {
      // (kNarrowCopies) backward_input_impl's narrow NCHW kernel on an NCHW copy of grad_output
      log_narrow_route(op, true);
      at::Tensor gxn = at::empty(input_size, gx.options().memory_format(at::MemoryFormat::Contiguous));
      backward_input_impl<float>(g, false, nchw_copy(gy, ct), prep(weight, ct, false), gxn);
      copy_into_channels_last(gxn, gx);
    } else {
      const at::Tensor w = prep(weight, ct, false);
      AT_DISPATCH_FLOATING_TYPES(ct, "conv2d_backward_input_cpu",
                                 [&] { backward_input_impl<scalar_t>(g, cl, gy, w, gx); });
    }
  }
  return ct == grad_output.scalar_type() ? gx : gx.to(grad_output.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> conv2d_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                                              at::IntArrayRef weight_size, at::IntArrayRef stride,
                                                              at::IntArrayRef padding, at::IntArrayRef dilation,
                                                              int64_t groups, bool bias_grad) {
  constexpr const char* op = "conv2d_backward_weight";
  const ConvMatmulPrecision matmul_precision;  // the products at the conv's fp32 precision
  check_conv_tensors(op, grad_output, "grad_output", input, "input");
  const ConvGeometry g = check_conv_args(op, input.sizes(), weight_size, stride, padding, dilation, groups);
  check_conv_grad_output(op, g, grad_output);
  const at::ScalarType ct = cpu_compute_type(op, input.scalar_type());
  if (conv2d_takes_gemm(g, /*default_on=*/false) && g.N > 0) {
    const bool cl = conv_channels_last(input);
    const at::Tensor x = prep(input, ct, cl), gy = prep(grad_output, ct, cl);
    at::Tensor gw = empty_for_full_write(weight_size, x.options().memory_format(at::MemoryFormat::Contiguous));
    conv2d_backward_weight_gemm(gy, x, g, cl, gw, CpuGemm{});
    at::Tensor gb = bias_grad ? gy.sum({0, 2, 3}) : at::empty({0}, gy.options());
    return {gw.to(input.scalar_type()), gb.to(input.scalar_type())};
  }
  const bool x_cl = conv_channels_last(input), gy_cl = conv_channels_last(grad_output);
  if (narrow_cl_wgrad_ok(g, x_cl, gy_cl, ct)) {  // vectors along 8 output channels (conv_narrow.h)
    if (debug_log_enabled()) std::cerr << "[rnnkern] " << op << " (cpu): narrow channels_last, 8 output channels\n";
    const at::Tensor x = prep(input, ct, true), gy = prep(grad_output, ct, true);
    at::Tensor gw = empty_for_full_write(weight_size, x.options().memory_format(at::MemoryFormat::Contiguous));
    narrow::backward_weight_cl_k8(g, gy.const_data_ptr<float>(), x.const_data_ptr<float>(),
                                  gw.mutable_data_ptr<float>());
    at::Tensor gb = bias_grad ? gy.sum({0, 2, 3}) : at::empty({0}, gy.options());
    return {gw.to(input.scalar_type()), gb.to(input.scalar_type())};
  }
  if (narrow_nchw_wgrad_ok(g, x_cl, gy_cl, ct)) {  // vectors along the output row (conv_narrow.h, kNarrowCopies)
    log_narrow_route(op, x_cl || gy_cl);
    const at::Tensor x = nchw_copy(input, ct), gy = nchw_copy(grad_output, ct);
    at::Tensor gw = empty_for_full_write(weight_size, x.options());
    narrow::backward_weight_nchw(g, gy.const_data_ptr<float>(), x.const_data_ptr<float>(),
                                 gw.mutable_data_ptr<float>());
    at::Tensor gb = bias_grad ? gy.sum({0, 2, 3}) : at::empty({0}, gy.options());
    return {gw.to(input.scalar_type()), gb.to(input.scalar_type())};
  }
  const WgradA which = wgrad_direct_choice(g, ct, gy_cl, x_cl);
  if (which != WgradA::kNone) {  // each operand read in its own layout
    const at::Tensor x = prep(input, ct, x_cl), gy = prep(grad_output, ct, gy_cl);
    at::Tensor gw = backward_weight_direct_avx512(g, which, gy, gy_cl, x, x_cl);
    at::Tensor gb = bias_grad ? gy.sum({0, 2, 3}) : at::empty({0}, gy.options());
    return {gw.to(input.scalar_type()), gb.to(input.scalar_type())};
  }
  // Both operands in one layout: the input's (the larger one; the ASPP case has C_in = 2048).
  const bool cl = conv_channels_last(input);
  const at::Tensor x = prep(input, ct, cl), gy = prep(grad_output, ct, cl);
  at::Tensor gw;
  AT_DISPATCH_FLOATING_TYPES(ct, "conv2d_backward_weight_cpu", [&] { gw = backward_weight_impl<scalar_t>(g, cl, gy, x); });
  at::Tensor gb = bias_grad ? gy.sum({0, 2, 3}) : at::empty({0}, gy.options());
  const at::ScalarType out_t = input.scalar_type();
  return {gw.to(out_t), gb.to(out_t)};
}

}  // namespace rnnkern
