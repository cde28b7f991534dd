// Shape/argument checks and the output layout rule shared by the CPU and CUDA unpool kernels.
#pragma once
#include <ATen/ATen.h>
#include <c10/macros/Macros.h>
#include <optional>
#include "ops.h"

namespace rnnkern {

// Output layout rule (mirrored by the Python fake): channels_last iff the input is
// channels_last-contiguous and not plain-contiguous; otherwise contiguous.
inline at::MemoryFormat unpool_output_format(const at::Tensor& t) {
  return (t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast))
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

struct UnpoolGeometry {
  int64_t N, C, H, W;          // input
  int64_t OH, OW;              // output
  int64_t kh, kw, sh, sw, ph, pw;
  UnpoolMode mode;
  // kernel == stride and no padding: windows tile the output, so each output element is
  // produced by reading its own window once (gather) and written exactly once.
  bool windows_tile() const { return kh == sh && kw == sw && ph == 0 && pw == 0; }
  // Whether the output's window grid has a window for every input element. A gather visits only
  // those windows, so with an output_size below H * sh or W * sw (possible when the op is called
  // directly) it would never see the other inputs' indices: the scatter places (or rejects) them.
  bool grid_covers_input() const { return (OH + sh - 1) / sh >= H && (OW + sw - 1) / sw >= W; }
};

inline UnpoolGeometry check_unpool_args(const char* op, at::IntArrayRef in_sizes, at::Device device,
                                        at::ScalarType dtype, const std::optional<at::Tensor>& indices, int64_t mode,
                                        at::IntArrayRef kernel, at::IntArrayRef stride,
                                        at::IntArrayRef padding, at::IntArrayRef out_hw) {
  TORCH_CHECK(in_sizes.size() == 4, op, ": input must be 4-D (N, C, H, W), got ", in_sizes.size(), "-D");
  TORCH_CHECK(mode >= 0 && mode <= 2, op, ": mode must be 0, 1 or 2, got ", mode);
  // (before any early return for empty tensors: the Python wrappers leave the checks to the ops)
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": values must be float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2 && out_hw.size() == 2,
              op, ": kernel_size, stride, padding and output_size must have 2 entries");
  UnpoolGeometry g{in_sizes[0], in_sizes[1], in_sizes[2], in_sizes[3], out_hw[0], out_hw[1],
                   kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1],
                   static_cast<UnpoolMode>(mode)};
  TORCH_CHECK(g.kh > 0 && g.kw > 0 && g.sh > 0 && g.sw > 0, op, ": kernel_size and stride must be positive");
  TORCH_CHECK(g.ph >= 0 && g.pw >= 0, op, ": padding must be non-negative");
  TORCH_CHECK(g.OH >= 0 && g.OW >= 0, op, ": output_size must be non-negative");
  if (g.mode == UnpoolMode::kIndices) {
    TORCH_CHECK(indices.has_value(), op, ": indices are required for max-unpooling");
    TORCH_CHECK(indices->scalar_type() == at::kLong, op, ": indices must be int64, got ",
                indices->scalar_type());
    TORCH_CHECK(indices->sizes() == in_sizes, op, ": indices shape ", indices->sizes(),
                " must equal input shape ", in_sizes);
    TORCH_CHECK(indices->device() == device, op, ": indices on ", indices->device(),
                " but input on ", device);
  } else {
    TORCH_CHECK(g.windows_tile(), op, ": nearest and bed-of-nails unpooling need kernel == stride, no padding");
  }
  return g;
}

// Flags a kernel raises (integer OR, deterministic). Out of range: raised as IndexError when the
// caller asks for the check. Outside its window: the gather cannot place it, so a fix-up pass
// over the plane (unpool_outside_window_target) writes it afterwards; on CUDA that pass reads the
// flag on the device, so no host sync is needed for it.
constexpr int kUnpoolIndexOutOfRange = 1;
constexpr int kUnpoolIndexOutsideWindow = 2;

inline void raise_out_of_range(const UnpoolGeometry& g) {
  TORCH_CHECK_INDEX(false, "max_unpool: found an index out of range [0, ", g.OH * g.OW,
                    ") for output size (", g.OH, ", ", g.OW, ")");
}

// Element strides of a 4-D tensor, passed by value into the kernels.
struct Strides4 {
  int64_t n, c, h, w;
  C10_HOST_DEVICE int64_t at(int64_t in, int64_t ic, int64_t ih, int64_t iw) const {
    return in * n + ic * c + ih * h + iw * w;
  }
};

inline Strides4 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// The gather's unit of work (kernel == stride, so windows tile the output): window (wh, ww) of
// plane (n, c) reads its value (and index) once and writes each of its output elements once.
// Returns the error flags it saw, for the caller to OR together (atomically on its backend).
template <typename scalar_t>
C10_HOST_DEVICE int unpool_fill_window(const UnpoolGeometry& g, const scalar_t* in, const Strides4& xs,
                                       const int64_t* idx, const Strides4& is, scalar_t* out, const Strides4& os,
                                       int64_t n, int64_t c, int64_t wh, int64_t ww) {
  const int64_t oh0 = wh * g.sh, ow0 = ww * g.sw;
  const int64_t oh1 = oh0 + g.sh < g.OH ? oh0 + g.sh : g.OH, ow1 = ow0 + g.sw < g.OW ? ow0 + g.sw : g.OW;
  int flags = 0;
  scalar_t v = scalar_t(0);
  int64_t th = -1, tw = -1;  // target inside the window; (-1, -1) = none, (-2, -2) = every element
  if (wh < g.H && ww < g.W) {
    v = in[xs.at(n, c, wh, ww)];
    if (g.mode == UnpoolMode::kIndices) {
      const int64_t k = idx[is.at(n, c, wh, ww)];
      if (k < 0 || k >= g.OH * g.OW) {
        flags |= kUnpoolIndexOutOfRange;
      } else {
        th = k / g.OW;
        tw = k - th * g.OW;
        if (th < oh0 || th >= oh1 || tw < ow0 || tw >= ow1) flags |= kUnpoolIndexOutsideWindow;
      }
    } else if (g.mode == UnpoolMode::kBedOfNails) {
      th = oh0;
      tw = ow0;
    } else {
      th = tw = -2;
    }
  }
  scalar_t* o = out + n * os.n + c * os.c;
  for (int64_t oh = oh0; oh < oh1; ++oh)
    for (int64_t ow = ow0; ow < ow1; ++ow)
      o[oh * os.h + ow * os.w] = (th == -2 || (oh == th && ow == tw)) ? v : scalar_t(0);
  return flags;
}

// The fix-up pass after a gather that flagged an index outside its window. It visits the input
// elements of one (n, c) plane in increasing flat position h * W + w and writes element (h, w) at
// (th, tw) when this returns true; the last write to an output element then comes from the
// highest position targeting it, the rule of the scatter. In-window indices were written by the
// gather: an outside-window element targeting an output whose own window's element also targets
// it is written only when it comes later (higher position) than that element.
// Needs grid_covers_input(), so that the gather visited every input element.
C10_HOST_DEVICE inline bool unpool_outside_window_target(const UnpoolGeometry& g, const int64_t* idx,
                                                        const Strides4& is, int64_t n, int64_t c, int64_t h,
                                                        int64_t w, int64_t& th, int64_t& tw) {
  const int64_t k = idx[is.at(n, c, h, w)];
  if (k < 0 || k >= g.OH * g.OW) return false;  // out of range: never written
  th = k / g.OW;
  tw = k - th * g.OW;
  const int64_t wh = th / g.sh, ww = tw / g.sw;  // the window holding the target
  if (wh == h && ww == w) return false;          // in its own window: the gather wrote it
  if (wh < g.H && ww < g.W && idx[is.at(n, c, wh, ww)] == k) return wh * g.W + ww < h * g.W + w;
  return true;
}

}  // namespace rnnkern
