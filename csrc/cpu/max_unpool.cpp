// Max-unpooling (and its nearest / bed-of-nails relatives) on the CPU.
//
// Two formulations:
//  * gather (kernel == stride, no padding; channels_last output, nearest, bed-of-nails): windows
//    tile the output, so each window reads its value (and index) once and writes all of its
//    output elements once; no zero-fill pass.
//  * scatter (max-unpool into contiguous planes, other geometries): zero the plane — it stays in
//    L2 — then write input elements in input order. After a gather, the indices that leave
//    their window are written by a fix-up pass over the plane in input order.
//    Duplicate indices: the LAST input element (highest flat input position in its plane)
//    wins — the rule torch's CPU kernel follows and the CUDA kernel reproduces deterministically.
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <atomic>

#include "../unpool_common.h"
#include "fresh_buffer.h"

namespace rnnkern {
namespace {

// Visit (n, c, h, w) over an N x C x H x W grid in the memory order of `fmt`, in parallel over
// the two outer loops, so the writes of each task stay contiguous.
template <typename F>
void for_each_nchw(at::MemoryFormat fmt, int64_t N, int64_t C, int64_t H, int64_t W, const F& fn) {
  if (fmt == at::MemoryFormat::ChannelsLast) {
    at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t nh = begin; nh < end; ++nh)
        for (int64_t w = 0; w < W; ++w)
          for (int64_t c = 0; c < C; ++c) fn(nh / H, c, nh % H, w);
    });
  } else {
    at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w) fn(nc / C, nc % C, h, w);
    });
  }
}

// Nearest / bed-of-nails into a contiguous (NCHW) output: one pass over the windows of each plane,
// each window read once and its kh x kw outputs written across kh output rows (unit-stride
// within a row). (Max-unpool into NCHW takes unpool_scatter: measured faster on the CPU.)
template <typename scalar_t, int64_t K>  // K: compile-time square kernel (== stride), 0 = any
void unpool_fill_nchw(const UnpoolGeometry& g, const at::Tensor& input, at::Tensor& output) {
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out = output.data_ptr<scalar_t>();
  const Strides4 xs = strides_of(input);
  const int64_t plane = g.OH * g.OW, OW = g.OW, sh = g.sh, sw = g.sw;
  const int64_t WH = (g.OH + sh - 1) / sh, WW = (OW + sw - 1) / sw;
  const bool nearest = g.mode == UnpoolMode::kNearest;
  at::parallel_for(0, g.N * g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / g.C, c = nc % g.C;
      for (int64_t wh = 0; wh < WH; ++wh) {
        const int64_t oh0 = wh * sh, rows = std::min(sh, g.OH - oh0);
        scalar_t* o = out + nc * plane + oh0 * OW;
        if (wh >= g.H) {  // rows past the last window (output_size larger than the default)
          std::fill(o, o + rows * OW, scalar_t(0));
          continue;
        }
        const scalar_t* xrow = in + n * xs.n + c * xs.c + wh * xs.h;
        for (int64_t ww = 0; ww < WW; ++ww) {
          const int64_t cols = std::min(sw, OW - ww * sw);
          scalar_t* dst = o + ww * sw;
          const scalar_t v = ww < g.W ? xrow[ww * xs.w] : scalar_t(0);
          // branch-free: nearest fills the window, bed-of-nails only its top-left element
          if (K != 0 && rows == K && cols == K) {  // full window of the common 2x2 / 3x3 case: unrolled
#pragma GCC unroll 4
            for (int64_t dr = 0; dr < K; ++dr)
#pragma GCC unroll 4
              for (int64_t j = 0; j < K; ++j) dst[dr * OW + j] = (nearest || dr + j == 0) ? v : scalar_t(0);
          } else {
            for (int64_t dr = 0; dr < rows; ++dr)
              for (int64_t j = 0; j < cols; ++j) dst[dr * OW + j] = (nearest || dr + j == 0) ? v : scalar_t(0);
          }
        }
      }
    }
  });
}

// Any output layout: visits windows in the output's memory order.
// Returns the error flags seen (kUnpoolIndexOutOfRange / kUnpoolIndexOutsideWindow).
template <typename scalar_t>
int unpool_gather(const UnpoolGeometry& g, const at::Tensor& input, const int64_t* idx, const Strides4& is,
                  at::Tensor& output, at::MemoryFormat fmt) {
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out = output.data_ptr<scalar_t>();
  const Strides4 xs = strides_of(input), os = strides_of(output);
  const int64_t WH = (g.OH + g.sh - 1) / g.sh, WW = (g.OW + g.sw - 1) / g.sw;  // window grid
  std::atomic<int> flags{0};
  for_each_nchw(fmt, g.N, g.C, WH, WW, [&](int64_t n, int64_t c, int64_t wh, int64_t ww) {
    if (const int f = unpool_fill_window(g, in, xs, idx, is, out, os, n, c, wh, ww))
      flags.fetch_or(f, std::memory_order_relaxed);
  });
  return flags.load();
}

// After a gather that flagged indices outside their windows: write those elements, plane by
// plane in input order (unpool_outside_window_target says which, and where).
template <typename scalar_t>
void unpool_fix_outside_window(const UnpoolGeometry& g, const at::Tensor& input, const int64_t* idx,
                               const Strides4& is, at::Tensor& output) {
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out = output.data_ptr<scalar_t>();
  const Strides4 xs = strides_of(input), os = strides_of(output);
  at::parallel_for(0, g.N * g.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / g.C, c = nc % g.C;
      for (int64_t h = 0; h < g.H; ++h)
        for (int64_t w = 0; w < g.W; ++w) {
          int64_t th, tw;
          if (unpool_outside_window_target(g, idx, is, n, c, h, w, th, tw))
            out[os.at(n, c, th, tw)] = in[xs.at(n, c, h, w)];
        }
    }
  });
}

template <typename scalar_t>
int unpool_scatter(const UnpoolGeometry& g, const at::Tensor& input, const int64_t* idx, const Strides4& is,
                   at::Tensor& output) {
  const scalar_t* in = input.const_data_ptr<scalar_t>();
  scalar_t* out = output.data_ptr<scalar_t>();
  const Strides4 xs = strides_of(input), os = strides_of(output);
  const int64_t plane = g.OH * g.OW;
  const bool contiguous_planes = os.w == 1 && os.h == g.OW;
  std::atomic<int> flags{0};
  // One task per (n, c) plane: planes are disjoint, and inside a plane input order is kept.
  at::parallel_for(0, g.N * g.C, 1, [&](int64_t begin, int64_t end) {
    int local = 0;
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / g.C, c = nc % g.C;
      scalar_t* o = out + n * os.n + c * os.c;
      if (contiguous_planes) {  // a plane is one flat block: memset, then flat-index stores (no division)
        std::fill(o, o + plane, scalar_t(0));
      } else {
        for (int64_t oh = 0; oh < g.OH; ++oh)
          for (int64_t ow = 0; ow < g.OW; ++ow) o[oh * os.h + ow * os.w] = scalar_t(0);
      }
      for (int64_t h = 0; h < g.H; ++h)
        for (int64_t w = 0; w < g.W; ++w) {
          const int64_t k = idx[is.at(n, c, h, w)];
          if (k < 0 || k >= plane) {
            local |= kUnpoolIndexOutOfRange;
            continue;
          }
          o[contiguous_planes ? k : (k / g.OW) * os.h + (k % g.OW) * os.w] = in[xs.at(n, c, h, w)];
        }
    }
    if (local) flags.fetch_or(local, std::memory_order_relaxed);
  });
  return flags.load();
}

// True when all tensors are dense in `fmt` (NCHW- or channels_last-contiguous), so a flat plane
// index k addresses element k (NCHW) or k * C (channels_last) of its plane directly.
bool same_dense_layout(at::MemoryFormat fmt, const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
  return a.is_contiguous(fmt) && b.is_contiguous(fmt) && c.is_contiguous(fmt);
}

// grad_input[n, c, i] = grad_output[n, c, idx[n, c, i]] over dense tensors in `fmt`; indices out of
// range (already rejected by the forward) read as zero.
template <typename scalar_t>
void gather_flat(at::MemoryFormat fmt, const UnpoolGeometry& g, const scalar_t* go, const int64_t* idx,
                 scalar_t* gi) {
  const int64_t P = g.H * g.W, OP = g.OH * g.OW, C = g.C;
  if (fmt == at::MemoryFormat::ChannelsLast) {
    at::parallel_for(0, g.N * P, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t ni = begin; ni < end; ++ni) {
        const int64_t n = ni / P;
        const scalar_t* gon = go + n * OP * C;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t k = idx[ni * C + c];
          gi[ni * C + c] = (k >= 0 && k < OP) ? gon[k * C + c] : scalar_t(0);
        }
      }
    });
    return;
  }
  at::parallel_for(0, g.N * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const scalar_t* gop = go + nc * OP;
      const int64_t* kp = idx + nc * P;
      scalar_t* gip = gi + nc * P;
      for (int64_t i = 0; i < P; ++i) gip[i] = (kp[i] >= 0 && kp[i] < OP) ? gop[kp[i]] : scalar_t(0);
    }
  });
}

// max-unpool into a channels_last output: zero it, then per image write input elements in input
// order (within a channel that is the plane's flat order, so the last duplicate wins).
template <typename scalar_t>
int unpool_scatter_channels_last(const UnpoolGeometry& g, const scalar_t* in, const int64_t* idx, at::Tensor& output) {
  output.zero_();
  scalar_t* out = output.data_ptr<scalar_t>();
  const int64_t P = g.H * g.W, OP = g.OH * g.OW, C = g.C;
  std::atomic<int> flags{0};
  at::parallel_for(0, g.N, 1, [&](int64_t begin, int64_t end) {
    int local = 0;
    for (int64_t n = begin; n < end; ++n) {
      scalar_t* on = out + n * OP * C;
      for (int64_t i = n * P; i < (n + 1) * P; ++i)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t k = idx[i * C + c];
          if (k < 0 || k >= OP) {
            local |= kUnpoolIndexOutOfRange;
            continue;
          }
          on[k * C + c] = in[i * C + c];
        }
    }
    if (local) flags.fetch_or(local, std::memory_order_relaxed);
  });
  return flags.load();
}

}  // namespace

at::Tensor max_unpool_forward_cpu(const at::Tensor& input, const std::optional<at::Tensor>& indices,
                                  int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef output_size, bool check_indices) {
  const UnpoolGeometry g = check_unpool_args("max_unpool_forward", input.sizes(), input.device(),
                                             input.scalar_type(), indices, mode, kernel, stride, padding,
                                             output_size);
  const at::MemoryFormat fmt = unpool_output_format(input);
  at::Tensor output = empty_for_full_write({g.N, g.C, g.OH, g.OW}, input.options().memory_format(fmt));
  if (output.numel() == 0) return output;
  const int64_t* idx = g.mode == UnpoolMode::kIndices ? indices->const_data_ptr<int64_t>() : nullptr;
  const Strides4 is = strides_of(g.mode == UnpoolMode::kIndices ? *indices : input);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_unpool_forward_cpu", [&] {
    int flags = 0;
    if (g.windows_tile()) {
      if (fmt == at::MemoryFormat::ChannelsLast && g.mode == UnpoolMode::kIndices &&
          same_dense_layout(fmt, input, *indices, output)) {
        flags = unpool_scatter_channels_last<scalar_t>(g, input.const_data_ptr<scalar_t>(), idx, output);
      } else if (fmt != at::MemoryFormat::Contiguous && (g.mode != UnpoolMode::kIndices || g.grid_covers_input())) {
        flags = unpool_gather<scalar_t>(g, input, idx, is, output, fmt);
      } else if (g.mode == UnpoolMode::kIndices) {
        // Measured (bench/NOTES.md): on the CPU a plane fits in L2, so memset + scatter into it
        // costs fewer instructions than the branch-free gather; the gather's one-pass advantage
        // is a GPU (DRAM-bound) one.
        flags = unpool_scatter<scalar_t>(g, input, idx, is, output);
      } else if (g.sh == 2 && g.sw == 2) {
        unpool_fill_nchw<scalar_t, 2>(g, input, output);
      } else if (g.sh == 3 && g.sw == 3) {
        unpool_fill_nchw<scalar_t, 3>(g, input, output);
      } else {
        unpool_fill_nchw<scalar_t, 0>(g, input, output);
      }
      if (flags & kUnpoolIndexOutsideWindow) unpool_fix_outside_window<scalar_t>(g, input, idx, is, output);
    } else {
      TORCH_CHECK(g.mode == UnpoolMode::kIndices, "max_unpool_forward: this mode needs kernel == stride");
      flags = unpool_scatter<scalar_t>(g, input, idx, is, output);
    }
    if (check_indices && (flags & kUnpoolIndexOutOfRange)) raise_out_of_range(g);
  });
  return output;
}

at::Tensor max_unpool_backward_cpu(const at::Tensor& grad_output, const std::optional<at::Tensor>& indices,
                                   int64_t mode, at::IntArrayRef input_size, at::IntArrayRef kernel,
                                   at::IntArrayRef stride, at::IntArrayRef padding) {
  TORCH_CHECK(grad_output.dim() == 4, "max_unpool_backward: grad_output must be 4-D");
  TORCH_CHECK(input_size.size() == 4, "max_unpool_backward: input_size must have 4 entries");
  const UnpoolGeometry g = check_unpool_args("max_unpool_backward", input_size, grad_output.device(),
                                             grad_output.scalar_type(), indices, mode, kernel, stride, padding,
                                             {grad_output.size(2), grad_output.size(3)});
  TORCH_CHECK(grad_output.size(0) == g.N && grad_output.size(1) == g.C,
              "max_unpool_backward: grad_output batch/channels do not match input_size");
  const at::MemoryFormat fmt = unpool_output_format(grad_output);
  at::Tensor grad_input = empty_for_full_write({g.N, g.C, g.H, g.W}, grad_output.options().memory_format(fmt));
  if (grad_input.numel() == 0) return grad_input;
  const int64_t* idx = g.mode == UnpoolMode::kIndices ? indices->const_data_ptr<int64_t>() : nullptr;
  const Strides4 is = strides_of(g.mode == UnpoolMode::kIndices ? *indices : grad_input);
  const Strides4 gs = strides_of(grad_output), os = strides_of(grad_input);
  const int64_t plane = g.OH * g.OW;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "max_unpool_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_input.data_ptr<scalar_t>();
    if (g.mode == UnpoolMode::kIndices && same_dense_layout(fmt, *indices, grad_output, grad_input)) {
      gather_flat(fmt, g, go, idx, gi);  // the common case: one flat gather, no index arithmetic
      return;
    }
    for_each_nchw(fmt, g.N, g.C, g.H, g.W, [&](int64_t n, int64_t c, int64_t h, int64_t w) {
      acc_t acc = 0;
      if (g.mode == UnpoolMode::kIndices) {
        const int64_t k = idx[is.at(n, c, h, w)];
        // forward already rejected out-of-range indices; never read outside grad_output
        if (k >= 0 && k < plane) acc = go[gs.at(n, c, k / g.OW, k % g.OW)];
      } else {
        const int64_t oh0 = h * g.sh, ow0 = w * g.sw;
        const int64_t oh1 = g.mode == UnpoolMode::kNearest ? std::min(oh0 + g.sh, g.OH) : std::min(oh0 + 1, g.OH);
        const int64_t ow1 = g.mode == UnpoolMode::kNearest ? std::min(ow0 + g.sw, g.OW) : std::min(ow0 + 1, g.OW);
        for (int64_t oh = oh0; oh < oh1; ++oh)
          for (int64_t ow = ow0; ow < ow1; ++ow) acc += go[gs.at(n, c, oh, ow)];
      }
      gi[os.at(n, c, h, w)] = static_cast<scalar_t>(acc);
    });
  });
  return grad_input;
}

}  // namespace rnnkern
