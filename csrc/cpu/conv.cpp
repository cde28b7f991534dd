// Dilated / strided / grouped 2-D convolution on the CPU: im2col (col2im for the input gradient)
// with the dilation in the index mapping, over ATen's BLAS GEMM (at::mm / addmm on the column
// matrix, MKL underneath).
//
// Layouts. NCHW: per image and group the column matrix is (Cg*KH*KW, OH*OW) and
//   y[n, g] (Kg, OH*OW) = W_g (Kg, Cg*KH*KW) @ col.
// channels_last (NHWC): the column matrix is (OH*OW, KH*KW*Cg), one row per output pixel holding
//   its KH*KW channel runs (each a memcpy), and
//   y[n] (OH*OW, K)[:, group] = col @ W_g^T with the weight permuted to (K, KH, KW, Cg).
// Either way the GEMM writes the output in place (the output is a strided view, no copy).
//
// Threads. With at least as many images as threads, images are spread over the threads (each
// with its own column buffer) and each GEMM runs on one thread; otherwise images run one after
// another with a threaded GEMM and a threaded im2col. Weight gradients: the batch is cut into a
// fixed number of parts (min(N, threads)), each part accumulates its own partial sum and the
// parts are added in order, so every result is bitwise reproducible for a given thread count.
// col2im accumulates each input element in a fixed order (no atomics, no races).
//
// fp32 and fp64 natively; bf16/fp16 are computed in fp32 and rounded once at the end.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "../conv_common.h"
#include "../ops.h"

namespace rnnkern {
namespace {

// 1x1 kernel, stride 1, no padding: the column matrix is the input itself.
bool is_pointwise(const ConvGeometry& g) {
  return g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.pb == 0 && g.pr == 0;
}

int64_t grain_for(int64_t work_per_item) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item)); }

template <typename T>
void fill_zero(T* p, int64_t n) {
  if (n > 0) std::memset(static_cast<void*>(p), 0, sizeof(T) * n);
}

// x: one image, one group: Cg planes of H x W (plane stride H*W). col: (Cg*KH*KW, OH*OW).
template <typename T>
void im2col_nchw(const ConvGeometry& g, const T* x, T* col) {
  const int64_t OHW = g.OH * g.OW, rows = g.Cg() * g.taps();
  at::parallel_for(0, rows, grain_for(OHW), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t c = row / g.taps(), r = (row % g.taps()) / g.KW, s = row % g.KW;
      int64_t oh0, oh1, ow0, ow1;
      g.valid_rows(r, &oh0, &oh1);
      g.valid_cols(s, &ow0, &ow1);
      T* dst = col + row * OHW;
      const T* plane = x + c * g.H * g.W;
      fill_zero(dst, oh0 * g.OW);
      fill_zero(dst + oh1 * g.OW, (g.OH - oh1) * g.OW);
      const int64_t iw0 = ow0 * g.sw - g.pl + s * g.dw;
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        T* d = dst + oh * g.OW;
        const T* src = plane + (oh * g.sh - g.pt + r * g.dh) * g.W + iw0;
        fill_zero(d, ow0);
        fill_zero(d + ow1, g.OW - ow1);
        if (g.sw == 1) {
          std::memcpy(static_cast<void*>(d + ow0), src, sizeof(T) * (ow1 - ow0));
        } else {
          for (int64_t ow = ow0; ow < ow1; ++ow) d[ow] = src[(ow - ow0) * g.sw];
        }
      }
    }
  });
}

// Adds col (Cg*KH*KW, OH*OW) into gx (Cg planes of H x W, already zeroed). One task per input
// channel, taps in a fixed order: deterministic and race-free.
template <typename T>
void col2im_nchw(const ConvGeometry& g, const T* col, T* gx) {
  const int64_t OHW = g.OH * g.OW;
  at::parallel_for(0, g.Cg(), grain_for(g.taps() * OHW), [&](int64_t begin, int64_t end) {
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
          if (g.sw == 1) {
            for (int64_t ow = ow0; ow < ow1; ++ow) dst[ow - ow0] += src[ow];
          } else {
            for (int64_t ow = ow0; ow < ow1; ++ow) dst[(ow - ow0) * g.sw] += src[ow];
          }
        }
      }
    }
  });
}

// x: one image (H, W, C) with the group's first channel at x[0]; col: (OH*OW, KH*KW*Cg).
template <typename T>
void im2col_nhwc(const ConvGeometry& g, const T* x, T* col) {
  const int64_t Cg = g.Cg(), row_len = g.taps() * Cg;
  at::parallel_for(0, g.OH, grain_for(g.OW * row_len), [&](int64_t begin, int64_t end) {
    for (int64_t oh = begin; oh < end; ++oh) {
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        T* d = col + (oh * g.OW + ow) * row_len;
        for (int64_t r = 0; r < g.KH; ++r) {
          const int64_t ih = oh * g.sh - g.pt + r * g.dh;
          for (int64_t s = 0; s < g.KW; ++s, d += Cg) {
            const int64_t iw = ow * g.sw - g.pl + s * g.dw;
            if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) {
              fill_zero(d, Cg);
            } else {
              std::memcpy(static_cast<void*>(d), x + (ih * g.W + iw) * g.C, sizeof(T) * Cg);
            }
          }
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
  at::parallel_for(0, g.H, grain_for(g.KH * g.OW * row_len / std::max<int64_t>(1, g.sh)), [&](int64_t begin,
                                                                                             int64_t end) {
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

// Runs fn(n, col) for every image: in parallel over images (one column buffer per task, one
// thread per GEMM) when the batch is at least as large as the thread pool, else sequentially.
template <typename F>
void for_each_image(const ConvGeometry& g, int64_t col_numel, const at::TensorOptions& opts, const F& fn) {
  const int64_t threads = at::get_num_threads();
  if (g.N >= threads && threads > 1) {
    at::parallel_for(0, g.N, 1, [&](int64_t begin, int64_t end) {
      at::Tensor col = at::empty({col_numel}, opts);
      for (int64_t n = begin; n < end; ++n) fn(n, col);
    });
  } else {
    at::Tensor col = at::empty({col_numel}, opts);
    for (int64_t n = 0; n < g.N; ++n) fn(n, col);
  }
}

template <typename T>
void forward_impl(const ConvGeometry& g, bool cl, const at::Tensor& x, const at::Tensor& w,
                  const std::optional<at::Tensor>& bias, at::Tensor& y) {
  const int64_t G = g.G, Cg = g.Cg(), Kg = g.Kg(), OHW = g.OH * g.OW, red = Cg * g.taps();
  const bool pw = is_pointwise(g);
  std::vector<at::Tensor> bias_g;
  if (bias) {
    for (int64_t gi = 0; gi < G; ++gi) {
      at::Tensor b = bias->narrow(0, gi * Kg, Kg);
      bias_g.push_back(cl ? b.unsqueeze(0) : b.unsqueeze(1));
    }
  }
  if (!cl) {
    const at::Tensor wg = w.contiguous().view({G, Kg, red});
    const at::Tensor xv = x.view({g.N, G, Cg, g.H * g.W});
    const at::Tensor yv = y.view({g.N, G, Kg, OHW});
    for_each_image(g, pw ? 0 : red * OHW, x.options(), [&](int64_t n, at::Tensor& col_buf) {
      for (int64_t gi = 0; gi < G; ++gi) {
        at::Tensor col;
        if (pw) {
          col = xv[n][gi];
        } else {
          im2col_nchw<T>(g, xv[n][gi].const_data_ptr<T>(), col_buf.mutable_data_ptr<T>());
          col = col_buf.view({red, OHW});
        }
        at::Tensor out = yv[n][gi];
        if (bias) at::addmm_out(out, bias_g[gi], wg[gi], col);
        else at::mm_out(out, wg[gi], col);
      }
    });
  } else {
    // weight as (G, Kg, KH*KW*Cg), the column order of the NHWC column matrix
    const at::Tensor wt = w.permute({0, 2, 3, 1}).contiguous().view({G, Kg, red});
    const at::Tensor xn = x.permute({0, 2, 3, 1});  // (N, H, W, C) contiguous
    const at::Tensor yn = y.permute({0, 2, 3, 1}).view({g.N, OHW, g.K});
    for_each_image(g, pw ? 0 : red * OHW, x.options(), [&](int64_t n, at::Tensor& col_buf) {
      for (int64_t gi = 0; gi < G; ++gi) {
        at::Tensor col;
        if (pw) {
          col = xn[n].view({g.H * g.W, g.C}).narrow(1, gi * Cg, Cg);
        } else {
          im2col_nhwc<T>(g, xn[n].const_data_ptr<T>() + gi * Cg, col_buf.mutable_data_ptr<T>());
          col = col_buf.view({OHW, red});
        }
        at::Tensor out = yn[n].narrow(1, gi * Kg, Kg);
        if (bias) at::addmm_out(out, bias_g[gi], col, wt[gi].t());
        else at::mm_out(out, col, wt[gi].t());
      }
    });
  }
}

template <typename T>
void backward_input_impl(const ConvGeometry& g, bool cl, const at::Tensor& gy, const at::Tensor& w, at::Tensor& gx) {
  const int64_t G = g.G, Cg = g.Cg(), Kg = g.Kg(), OHW = g.OH * g.OW, red = Cg * g.taps();
  const bool pw = is_pointwise(g);
  if (!cl) {
    const at::Tensor wg = w.contiguous().view({G, Kg, red});
    const at::Tensor gyv = gy.view({g.N, G, Kg, OHW});
    const at::Tensor gxv = gx.view({g.N, G, Cg, g.H * g.W});
    for_each_image(g, pw ? 0 : red * OHW, gy.options(), [&](int64_t n, at::Tensor& col_buf) {
      for (int64_t gi = 0; gi < G; ++gi) {
        at::Tensor dst = gxv[n][gi];
        if (pw) {
          at::mm_out(dst, wg[gi].t(), gyv[n][gi]);
        } else {
          at::Tensor col = col_buf.view({red, OHW});
          at::mm_out(col, wg[gi].t(), gyv[n][gi]);
          dst.zero_();
          col2im_nchw<T>(g, col.const_data_ptr<T>(), dst.mutable_data_ptr<T>());
        }
      }
    });
  } else {
    const at::Tensor wt = w.permute({0, 2, 3, 1}).contiguous().view({G, Kg, red});
    const at::Tensor gyn = gy.permute({0, 2, 3, 1}).view({g.N, OHW, g.K});
    const at::Tensor gxn = gx.permute({0, 2, 3, 1});  // (N, H, W, C) contiguous
    for_each_image(g, pw ? 0 : red * OHW, gy.options(), [&](int64_t n, at::Tensor& col_buf) {
      if (!pw) gxn[n].zero_();
      for (int64_t gi = 0; gi < G; ++gi) {
        const at::Tensor src = gyn[n].narrow(1, gi * Kg, Kg);
        if (pw) {
          at::Tensor dst = gxn[n].view({g.H * g.W, g.C}).narrow(1, gi * Cg, Cg);
          at::mm_out(dst, src, wt[gi]);
        } else {
          at::Tensor col = col_buf.view({OHW, red});
          at::mm_out(col, src, wt[gi]);
          col2im_nhwc<T>(g, col.const_data_ptr<T>(), gxn[n].mutable_data_ptr<T>() + gi * Cg);
        }
      }
    });
  }
}

// Returns the weight gradient in the pass's natural order: (G, Kg, Cg*KH*KW) for NCHW,
// (G, Kg, KH*KW*Cg) for NHWC.
template <typename T>
at::Tensor backward_weight_impl(const ConvGeometry& g, bool cl, const at::Tensor& gy, const at::Tensor& x) {
  const int64_t G = g.G, Cg = g.Cg(), Kg = g.Kg(), OHW = g.OH * g.OW, red = Cg * g.taps();
  const bool pw = is_pointwise(g);
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(g.N, at::get_num_threads()));
  at::Tensor partial = at::zeros({parts, G, Kg, red}, x.options());
  // One part: images [n0, n1) accumulated into partial[p] (one thread per part when parts > 1).
  auto run_part = [&](int64_t p, int64_t n0, int64_t n1) {
    at::Tensor col_buf = at::empty({pw ? 0 : red * OHW}, x.options());
    at::Tensor acc = partial[p];
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t gi = 0; gi < G; ++gi) {
        at::Tensor a = acc[gi];
        if (!cl) {
          const at::Tensor gyg = gy[n].view({G, Kg, OHW})[gi];
          at::Tensor col;
          if (pw) {
            col = x[n].view({G, Cg, g.H * g.W})[gi];
          } else {
            im2col_nchw<T>(g, x[n].view({G, Cg, g.H * g.W})[gi].const_data_ptr<T>(), col_buf.mutable_data_ptr<T>());
            col = col_buf.view({red, OHW});
          }
          a.addmm_(gyg, col.t());
        } else {
          const at::Tensor xn = x[n].permute({1, 2, 0});  // (H, W, C) contiguous
          const at::Tensor gyg = gy[n].permute({1, 2, 0}).view({OHW, g.K}).narrow(1, gi * Kg, Kg);
          at::Tensor col;
          if (pw) {
            col = xn.view({g.H * g.W, g.C}).narrow(1, gi * Cg, Cg);
          } else {
            im2col_nhwc<T>(g, xn.const_data_ptr<T>() + gi * Cg, col_buf.mutable_data_ptr<T>());
            col = col_buf.view({OHW, red});
          }
          a.addmm_(gyg.t(), col);
        }
      }
    }
  };
  if (parts > 1) {
    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) run_part(p, p * g.N / parts, (p + 1) * g.N / parts);
    });
  } else {
    run_part(0, 0, g.N);
  }
  at::Tensor total = partial[0];
  for (int64_t p = 1; p < parts; ++p) total.add_(partial[p]);  // fixed order: reproducible
  return total;
}

struct Prepared {
  ConvGeometry g;
  bool cl;
  at::ScalarType compute;
};

at::ScalarType cpu_compute_type(const char* op, at::ScalarType t) {
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf, op,
              ": CPU kernels support float32, float64, bfloat16 and float16, got ", t);
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Detached (the kernels call ATen GEMMs, possibly on worker threads where autograd is not
// excluded), in the compute dtype, dense in the chosen layout.
at::Tensor prep(const at::Tensor& t, at::ScalarType dtype, bool cl) {
  return t.detach().to(dtype).contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

}  // namespace

at::Tensor conv2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              int64_t groups) {
  constexpr const char* op = "conv2d_forward";
  check_conv_tensors(op, input, "input", weight, "weight");
  if (bias) {
    check_conv_tensors(op, input, "input", *bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": bias must have shape [",
                weight.size(0), "], got ", bias->sizes());
  }
  const ConvGeometry g = check_conv_args(op, input.sizes(), weight.sizes(), stride, padding, dilation, groups);
  const bool cl = conv_channels_last(input);
  const at::ScalarType ct = cpu_compute_type(op, input.scalar_type());
  at::Tensor y = at::empty({g.N, g.K, g.OH, g.OW}, input.options().dtype(ct).memory_format(conv_output_format(input)));
  if (g.N > 0) {
    const at::Tensor x = prep(input, ct, cl), w = prep(weight, ct, false);
    std::optional<at::Tensor> b;
    if (bias) b = bias->detach().to(ct);
    AT_DISPATCH_FLOATING_TYPES(ct, "conv2d_forward_cpu", [&] { forward_impl<scalar_t>(g, cl, x, w, b, y); });
  }
  return ct == input.scalar_type() ? y : y.to(input.scalar_type());
}

at::Tensor conv2d_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                     at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups) {
  constexpr const char* op = "conv2d_backward_input";
  check_conv_tensors(op, grad_output, "grad_output", weight, "weight");
  const ConvGeometry g = check_conv_args(op, input_size, weight.sizes(), stride, padding, dilation, groups);
  check_conv_grad_output(op, g, grad_output);
  const bool cl = conv_channels_last(grad_output);
  const at::ScalarType ct = cpu_compute_type(op, grad_output.scalar_type());
  at::Tensor gx = at::empty(input_size, grad_output.options().dtype(ct).memory_format(conv_output_format(grad_output)));
  if (g.N > 0) {
    const at::Tensor gy = prep(grad_output, ct, cl), w = prep(weight, ct, false);
    AT_DISPATCH_FLOATING_TYPES(ct, "conv2d_backward_input_cpu",
                               [&] { backward_input_impl<scalar_t>(g, cl, gy, w, gx); });
  }
  return ct == grad_output.scalar_type() ? gx : gx.to(grad_output.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> conv2d_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                                              at::IntArrayRef weight_size, at::IntArrayRef stride,
                                                              at::IntArrayRef padding, at::IntArrayRef dilation,
                                                              int64_t groups, bool bias_grad) {
  constexpr const char* op = "conv2d_backward_weight";
  check_conv_tensors(op, grad_output, "grad_output", input, "input");
  const ConvGeometry g = check_conv_args(op, input.sizes(), weight_size, stride, padding, dilation, groups);
  check_conv_grad_output(op, g, grad_output);
  // Both operands in one layout: the input's (it is the large one; the ASPP case has C_in = 2048).
  const bool cl = conv_channels_last(input);
  const at::ScalarType ct = cpu_compute_type(op, input.scalar_type());
  const at::Tensor x = prep(input, ct, cl), gy = prep(grad_output, ct, cl);
  at::Tensor gw;
  AT_DISPATCH_FLOATING_TYPES(ct, "conv2d_backward_weight_cpu", [&] {
    at::Tensor acc = backward_weight_impl<scalar_t>(g, cl, gy, x);
    gw = cl ? acc.view({g.K, g.KH, g.KW, g.Cg()}).permute({0, 3, 1, 2}).contiguous() : acc.view(weight_size).clone();
  });
  at::Tensor gb = bias_grad ? gy.sum({0, 2, 3}) : at::empty({0}, gy.options());
  const at::ScalarType out_t = input.scalar_type();
  return {gw.to(out_t), gb.to(out_t)};
}

}  // namespace rnnkern
