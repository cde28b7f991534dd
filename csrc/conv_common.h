// Argument checks, geometry and the output layout rule shared by the CPU and CUDA convolution
// kernels (csrc/cpu/conv.cpp, csrc/cuda/conv.cu).
#pragma once
#include <ATen/ATen.h>
#include <c10/util/safe_numerics.h>
#include <cstdlib>
#include <optional>
#include <string>

namespace rnnkern {

// Floor / ceil division for a possibly negative numerator and a positive denominator.
inline int64_t conv_div_floor(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t conv_div_ceil(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// Everything a convolution kernel needs to know about the problem, in one small struct.
// "input" is the convolution's input (x) and "output" its output (y) for all three passes.
struct ConvGeometry {
  int64_t N, C, H, W;      // input
  int64_t K, OH, OW;       // output channels and size
  int64_t KH, KW;          // filter
  int64_t sh, sw, dh, dw;  // stride, dilation
  int64_t pt, pl, pb, pr;  // padding: top, left, bottom, right
  int64_t G;               // groups
  int64_t Cg() const { return C / G; }
  int64_t Kg() const { return K / G; }
  int64_t taps() const { return KH * KW; }
  // Output positions [lo, hi) whose filter tap `r` (along H) reads a real input row; the rest read
  // padding. The same rule along W with (KW, sw, dw, pl, W, OW).
  static void valid_range(int64_t r, int64_t s, int64_t d, int64_t p, int64_t in, int64_t out, int64_t* lo,
                          int64_t* hi) {
    // in-position = o * s - p + r * d must lie in [0, in)
    const int64_t off = r * d - p;
    *lo = std::min<int64_t>(out, std::max<int64_t>(0, conv_div_ceil(-off, s)));
    *hi = std::max<int64_t>(*lo, std::min<int64_t>(out, conv_div_ceil(in - off, s)));
  }
  void valid_rows(int64_t r, int64_t* lo, int64_t* hi) const { valid_range(r, sh, dh, pt, H, OH, lo, hi); }
  void valid_cols(int64_t s, int64_t* lo, int64_t* hi) const { valid_range(s, sw, dw, pl, W, OW, lo, hi); }
  // fn(r, s, oh0, oh1, ow0, ow1) for every tap (r, s), with the output rows [oh0, oh1) and columns
  // [ow0, ow1) where it reads real input.
  template <typename Fn>
  void for_each_tap(Fn&& fn) const {
    for (int64_t r = 0; r < KH; ++r) {
      int64_t oh0, oh1;
      valid_rows(r, &oh0, &oh1);
      for (int64_t s = 0; s < KW; ++s) {
        int64_t ow0, ow1;
        valid_cols(s, &ow0, &ow1);
        fn(r, s, oh0, oh1, ow0, ow1);
      }
    }
  }
};

// Layout rule (mirrored by rnnkern.ops._validate.channels_last_output and the Python fakes):
// channels_last iff the tensor is channels_last-contiguous and not plain-contiguous.
inline bool conv_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}
inline at::MemoryFormat conv_output_format(const at::Tensor& t) {
  return conv_channels_last(t) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// The backward of a forward whose input was `input`: grad_output dense in the input's layout, as
// torch's convolution_backward makes it (grad_output.contiguous(backend memory format)), so the
// kernels (whose grad_input follows grad_output) return grad_input in the input's layout. A
// grad_output contiguous in both layouts (1 x 1 images, one channel) still leaves them NCHW:
// grad_input_in_layout_of converts the result there.
// Batched gradients (autograd.grad(is_grads_batched=True), jacobian(vectorize=True): the legacy
// vmap's Batched key, or functorch's) pass as they are: vmap cannot answer a channels_last query.
inline bool batched_gradient(const at::Tensor& t) {
  const c10::DispatchKeySet keys = t.key_set();
  return keys.has(c10::DispatchKey::Batched) || keys.has(c10::DispatchKey::FuncTorchBatched);
}
inline at::Tensor grad_output_in_layout_of(const at::Tensor& grad_output, const at::Tensor& input) {
  return batched_gradient(grad_output) ? grad_output : grad_output.contiguous(conv_output_format(input));
}
inline at::Tensor grad_input_in_layout_of(const at::Tensor& grad_input, const at::Tensor& input) {
  return !batched_gradient(grad_input) && conv_channels_last(input) &&
                 !grad_input.is_contiguous(at::MemoryFormat::ChannelsLast)
             ? grad_input.contiguous(at::MemoryFormat::ChannelsLast)
             : grad_input;
}

// grad_bias of a CUDA convolution or transposed convolution: grad_output (N, C, H, W) summed over
// (N, H, W) by ATen's deterministic reduction, accumulated in fp32 (fp64 for fp64); (0) when the
// op has no bias.
inline at::Tensor conv_grad_bias_cuda(const at::Tensor& grad_output, bool bias_grad) {
  if (!bias_grad) return at::empty({0}, grad_output.options());
  const auto acc_t = grad_output.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return grad_output.sum({0, 2, 3}, /*keepdim=*/false, acc_t).to(grad_output.scalar_type());
}

// A two-valued override of the CUDA convolution kernels (RNNKERN_CONV_PIPELINE, RNNKERN_CONV_GEMM,
// RNNKERN_CONV_NCHW, RNNKERN_CONVT_PATH, RNNKERN_CONVT_FCN), read per call so tests and benchmarks can switch it: true
// when set to `on`, false when set to `off`, `unset` when unset or empty, an error naming both
// values otherwise.
inline bool env_switch(const char* name, const char* off, const char* on, bool unset = false) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == '\0') return unset;
  const std::string v(e);
  TORCH_CHECK(v == off || v == on, name, " must be '", off, "' or '", on, "', got '", v, "'");
  return v == on;
}

// torch's output size; -1 when the dilated kernel does not fit the padded input. Sizes whose
// padded input or dilated kernel overflow int64 are refused (they would wrap into a small size).
inline int64_t conv_out_size(const char* op, int64_t in, int64_t k, int64_t s, int64_t d, int64_t p_lo,
                             int64_t p_hi) {
  int64_t extent = 0, padded = 0;
  TORCH_CHECK(!c10::mul_overflows(d, k - 1, &extent) && !c10::add_overflows(in, p_lo, &padded) &&
                  !c10::add_overflows(padded, p_hi, &padded),
              op, ": padding or dilation too large (the padded input or the dilated kernel overflows int64)");
  const int64_t span = padded - extent - 1;
  return span < 0 ? -1 : span / s + 1;
}

// Validates the scalar arguments and the input / weight shapes; returns the geometry with the
// output size computed by torch's formula.
inline ConvGeometry check_conv_args(const char* op, at::IntArrayRef in_sizes, at::IntArrayRef w_sizes,
                                    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t groups) {
  TORCH_CHECK(in_sizes.size() == 4, op, ": input must be 4-D (N, C, H, W), got ", in_sizes.size(), "-D");
  TORCH_CHECK(w_sizes.size() == 4, op, ": weight must be 4-D (C_out, C_in / groups, KH, KW), got ", w_sizes.size(),
              "-D");
  TORCH_CHECK(stride.size() == 2, op, ": stride must have 2 entries, got ", stride.size());
  TORCH_CHECK(dilation.size() == 2, op, ": dilation must have 2 entries, got ", dilation.size());
  TORCH_CHECK(padding.size() == 2 || padding.size() == 4, op,
              ": padding must have 2 entries (symmetric) or 4 (top, left, bottom, right), got ", padding.size());
  TORCH_CHECK(groups >= 1, op, ": groups must be positive, got ", groups);
  ConvGeometry g{};
  g.N = in_sizes[0];
  g.C = in_sizes[1];
  g.H = in_sizes[2];
  g.W = in_sizes[3];
  g.K = w_sizes[0];
  g.KH = w_sizes[2];
  g.KW = w_sizes[3];
  g.sh = stride[0];
  g.sw = stride[1];
  g.dh = dilation[0];
  g.dw = dilation[1];
  g.pt = padding[0];
  g.pl = padding[1];
  g.pb = padding.size() == 4 ? padding[2] : padding[0];
  g.pr = padding.size() == 4 ? padding[3] : padding[1];
  g.G = groups;
  TORCH_CHECK(g.sh >= 1 && g.sw >= 1, op, ": stride must be positive, got ", stride);
  TORCH_CHECK(g.dh >= 1 && g.dw >= 1, op, ": dilation must be positive, got ", dilation);
  TORCH_CHECK(g.pt >= 0 && g.pl >= 0 && g.pb >= 0 && g.pr >= 0, op, ": padding must be non-negative, got ", padding);
  TORCH_CHECK(g.N >= 0 && g.C >= 1 && g.H >= 1 && g.W >= 1, op, ": input must have C, H, W >= 1, got ", in_sizes);
  TORCH_CHECK(g.K >= 1 && g.KH >= 1 && g.KW >= 1, op, ": weight sizes must be positive, got ", w_sizes);
  TORCH_CHECK(g.C % groups == 0, op, ": groups (", groups, ") must divide the input channels (", g.C, ")");
  TORCH_CHECK(g.K % groups == 0, op, ": groups (", groups, ") must divide the output channels (", g.K, ")");
  TORCH_CHECK(w_sizes[1] * groups == g.C, op, ": weight ", w_sizes, " with groups=", groups, " expects ",
              w_sizes[1] * groups, " input channels, but input has ", g.C);
  g.OH = conv_out_size(op, g.H, g.KH, g.sh, g.dh, g.pt, g.pb);
  g.OW = conv_out_size(op, g.W, g.KW, g.sw, g.dw, g.pl, g.pr);
  TORCH_CHECK(g.OH >= 1 && g.OW >= 1, op, ": padded input (", g.H + g.pt + g.pb, " x ", g.W + g.pl + g.pr,
              ") is smaller than the dilated kernel (", g.dh * (g.KH - 1) + 1, " x ", g.dw * (g.KW - 1) + 1, ")");
  return g;
}

inline void check_conv_grad_output(const char* op, const ConvGeometry& g, const at::Tensor& grad_output) {
  TORCH_CHECK(grad_output.dim() == 4, op, ": grad_output must be 4-D, got ", grad_output.dim(), "-D");
  TORCH_CHECK(grad_output.size(0) == g.N && grad_output.size(1) == g.K && grad_output.size(2) == g.OH &&
                  grad_output.size(3) == g.OW,
              op, ": grad_output has size ", grad_output.sizes(), " but the convolution's output is [", g.N, ", ",
              g.K, ", ", g.OH, ", ", g.OW, "]");
}

inline void check_conv_tensors(const char* op, const at::Tensor& a, const char* a_name, const at::Tensor& b,
                               const char* b_name) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", b_name, " is on ", b.device(), " but ", a_name, " is on ",
              a.device());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", b_name, " has dtype ", b.scalar_type(), " but ", a_name,
              " has dtype ", a.scalar_type());
}

// The floating dtypes the kernels compute in (checked before any early return for empty tensors:
// the Python wrappers leave the checks to the ops).
inline void check_conv_dtype(const char* op, const char* name, const at::Tensor& t) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16, op, ": ", name,
              " must be float32, float64, float16 or bfloat16, got ", st);
}

// bias: (C_out) on the input's device and dtype, or none.
inline void check_conv_bias(const char* op, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
  if (!bias) return;
  check_conv_tensors(op, input, "input", *bias, "bias");
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": bias must have shape [",
              weight.size(0), "], got ", bias->sizes());
}

// CPU only (csrc/cpu/conv.cpp): the transposed convolution's forward on the conv engine's direct
// AVX-512 kernels, by output phase. Writes `output` (allocated, (N, C_out, OH, OW), dense in the
// layout of the result) and returns true; returns false (nothing written) where the direct path does
// not apply (not fp32, no AVX-512, fewer than 16 output channels per group, stride product > 16).
bool conv_transpose2d_forward_direct_cpu(const at::Tensor& input, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias, int64_t groups, at::IntArrayRef stride,
                                         at::IntArrayRef padding, at::IntArrayRef dilation, at::Tensor& output);

// CPU only (csrc/cpu/conv.cpp): the transposed convolution's weight gradient on the conv engine's
// direct AVX-512 wgrad kernel. dW[ci, co, kh, kw] = sum x[n, ci, ih, iw] gy[n, co, ih*s - p + kh*d, ...]
// is the weight gradient of the ordinary convolution of grad_output (C_out channels, stride /
// padding / dilation of the transposed conv) whose output is `input` (C_in channels), with the
// same (C_in, C_out/G, kH, kW) weight shape, its output cut to x's size (with output_padding >=
// stride it would be larger). Sets grad_weight (contiguous) and returns true; returns false
// (nothing set) where the direct kernel does not apply (not fp32, no AVX-512, fewer than 16
// channels per group on both sides, narrow groups, 1x1 stride-1, stride product > 16).
bool conv_transpose2d_backward_weight_direct_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                                 at::IntArrayRef weight_size, int64_t groups, at::IntArrayRef stride,
                                                 at::IntArrayRef padding, at::IntArrayRef dilation,
                                                 at::Tensor& grad_weight);

}  // namespace rnnkern
