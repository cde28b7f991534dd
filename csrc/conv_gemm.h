// Convolutions that are one matrix product, on the BLAS library (cuBLAS on CUDA, where they are
// the default; on CPU only with RNNKERN_CONV_GEMM=1, see conv_gemm_requested). Device-generic:
// ATen views and copies around a `gemm(C, A, B, beta)` the backend supplies (C = A B + beta C, 2-D,
// or 3-D batched where A may repeat one matrix over the batch).
//
// kernel == stride, no padding, one group (1x1 convolutions, and "patchify" ones such as the
// U-Net's 2x2/2 transposed convolution): every output pixel reads its own KH x KW patch and no
// two patches overlap, so with A the patches of x as a matrix (x itself when 1x1),
//   forward      y  = A Wm^T                 (pixels x C_out)
//   grad_input   gA = gy Wm, written back to the patches (rows / columns no patch covers: zero)
//   grad_weight  gW = gy^T A
//   transposed-convolution forward, kernel == stride: y = patches^-1(x Wt), the same product read
//   the other way.
// Why: these are plain GEMMs, where the implicit-GEMM engine (csrc/cuda/conv.cu) ran at 0.2-0.3x of
// cuDNN (bf16 channels_last U-Net up-convolution on an H200, bench/NOTES.md) and a tuned GEMM library
// does not. At most one layout copy a side (none for 1x1 channels_last, or the 1x1 forward in NCHW).
//
// Layouts: channels_last works on (pixels, channels) matrices, patch entries ordered (kh, kw, c);
// NCHW per image on (channels, pixels) ones, patch entries (c, kh, kw) (weight order).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "conv_common.h"

namespace rnnkern {

// RNNKERN_CONV_GEMM=0|1 (read per call): =0 keeps every convolution on the kernels, =1 sends the
// GEMM-shaped ones to the BLAS route on CPU too (tests use it to check this file's layouts without
// a GPU; the CPU kernels measured as fast there). Unset: `default_on` (CUDA: on).
inline bool conv_gemm_requested(bool default_on) { return env_switch("RNNKERN_CONV_GEMM", "0", "1", default_on); }

// A convolution this file computes: kernel == stride, no padding, one group. Dilation is allowed
// only where it changes nothing (a 1-tap dimension).
inline bool conv2d_is_gemm(const ConvGeometry& g) {
  return g.G == 1 && g.KH == g.sh && g.KW == g.sw && g.pt == 0 && g.pl == 0 && g.pb == 0 && g.pr == 0 &&
         (g.dh == 1 || g.KH == 1) && (g.dw == 1 || g.KW == 1);
}

namespace conv_gemm {

// x's patches as a matrix. channels_last: (N*OH*OW, KH*KW*C), entries (kh, kw, c). NCHW: per
// image (N, C*KH*KW, OH*OW) when !pixel_rows, else (N*OH*OW, C*KH*KW); entries (c, kh, kw). A view
// of x where the layout allows (1x1 channels_last, 1x1 NCHW per image), else one copy. Rows /
// columns past OH*KH / OW*KW belong to no patch. x: contiguous in its layout.
inline at::Tensor patches(const at::Tensor& x, const ConvGeometry& g, bool cl, bool pixel_rows) {
  const at::Tensor xc = x.narrow(2, 0, g.OH * g.KH).narrow(3, 0, g.OW * g.KW);
  const int64_t M = g.N * g.OH * g.OW, J = g.C * g.KH * g.KW;
  if (cl) {
    return xc.permute({0, 2, 3, 1})
        .reshape({g.N, g.OH, g.KH, g.OW, g.KW, g.C})
        .permute({0, 1, 3, 2, 4, 5})
        .reshape({M, J});
  }
  const at::Tensor p = xc.reshape({g.N, g.C, g.OH, g.KH, g.OW, g.KW});
  return pixel_rows ? p.permute({0, 2, 4, 1, 3, 5}).reshape({M, J})
                    : p.permute({0, 1, 3, 5, 2, 4}).reshape({g.N, J, g.OH * g.OW});
}

// m itself where one of its strides is 1, else a contiguous copy: a matrix the BLAS reads as it is
// (an expand()ed batch of it then stays one matrix, not N copies).
inline at::Tensor unit_stride(const at::Tensor& m) {
  return m.stride(0) == 1 || m.stride(1) == 1 ? m : m.contiguous();
}

// The weight (C_out, C, KH, KW) as (C_out, patch entries) in the layout's entry order.
inline at::Tensor weight_matrix(const at::Tensor& w, const ConvGeometry& g, bool cl) {
  return unit_stride((cl ? w.permute({0, 2, 3, 1}) : w).reshape({g.K, g.C * g.KH * g.KW}));
}

// One pixel in, one pixel out (the ASPP head's image-pooling branch): NCHW and channels_last hold
// the same bytes, and channels_last's one product beats NCHW's N matrix-vector products.
inline bool one_pixel(const ConvGeometry& g) { return g.H == 1 && g.W == 1 && g.OH == 1 && g.OW == 1; }

// `out` (a row-major matrix or batch of them) = bias broadcast along `dim`, so that a product with
// beta = 1 adds to it; false (nothing written) without a bias.
inline bool fill_bias(at::Tensor& out, const std::optional<at::Tensor>& bias, int64_t dim) {
  if (!bias) return false;
  std::vector<int64_t> shape(out.dim(), 1);
  shape[dim] = bias->size(0);
  out.copy_(bias->view(shape).expand_as(out));
  return true;
}

}  // namespace conv_gemm

// The CPU backend's gemm: ATen's BLAS (C is always a row-major matrix or batch here, so the _out
// forms write it in place).
struct AtenMatmul {
  void operator()(at::Tensor& C, const at::Tensor& A, const at::Tensor& B, float beta) const {
    if (C.dim() == 2) {
      if (beta == 0.f) at::mm_out(C, A, B);
      else C.addmm_(A, B);
    } else {
      if (beta == 0.f) at::bmm_out(C, A, B);
      else C.baddbmm_(A, B);
    }
  }
};

// y (N, K, OH, OW), allocated in the layout `cl`, = conv2d(x, w, bias). x contiguous in that layout.
template <class Gemm>
void conv2d_forward_gemm(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                         const ConvGeometry& g, bool cl, at::Tensor& y, Gemm&& gemm) {
  using namespace conv_gemm;
  cl = cl || one_pixel(g);
  const at::Tensor A = patches(x, g, cl, /*pixel_rows=*/false), wm = weight_matrix(w, g, cl);
  if (cl) {  // (pixels, K) = A (pixels, J) Wm^T
    at::Tensor out = y.permute({0, 2, 3, 1}).view({g.N * g.OH * g.OW, g.K});
    gemm(out, A, wm.t(), fill_bias(out, bias, 1) ? 1.f : 0.f);
  } else {  // per image (K, pixels) = Wm (K, J) A_n (J, pixels)
    at::Tensor out = y.view({g.N, g.K, g.OH * g.OW});
    gemm(out, wm.unsqueeze(0).expand({g.N, g.K, wm.size(1)}), A, fill_bias(out, bias, 1) ? 1.f : 0.f);
  }
}

// gx (N, C, H, W), allocated in the layout `cl`, = conv2d's grad_input. gy contiguous in that layout.
template <class Gemm>
void conv2d_backward_input_gemm(const at::Tensor& gy, const at::Tensor& w, const ConvGeometry& g, bool cl,
                                at::Tensor& gx, Gemm&& gemm) {
  using namespace conv_gemm;
  cl = cl || one_pixel(g);
  const at::Tensor wm = weight_matrix(w, g, cl);
  const int64_t M = g.N * g.OH * g.OW, J = g.C * g.KH * g.KW, P = g.OH * g.OW;
  // 1x1 (then OH == H, OW == W): the product's rows are gx's own
  const bool direct = g.KH == 1 && g.KW == 1;
  if (cl) {  // (pixels, J) = gy (pixels, K) Wm (K, J)
    const at::Tensor gy2 = gy.permute({0, 2, 3, 1}).reshape({M, g.K});
    at::Tensor cols = direct ? gx.permute({0, 2, 3, 1}).view({M, g.C}) : at::empty({M, J}, gy.options());
    gemm(cols, gy2, wm, 0.f);
    if (direct) return;
    if (g.OH * g.KH != g.H || g.OW * g.KW != g.W) gx.zero_();  // rows / columns no patch covers
    gx.permute({0, 2, 3, 1})
        .narrow(1, 0, g.OH * g.KH)
        .narrow(2, 0, g.OW * g.KW)
        .view({g.N, g.OH, g.KH, g.OW, g.KW, g.C})
        .copy_(cols.view({g.N, g.OH, g.OW, g.KH, g.KW, g.C}).permute({0, 1, 3, 2, 4, 5}));
  } else {  // per image (J, pixels) = Wm^T (J, K) gy_n (K, pixels)
    const at::Tensor gy3 = gy.view({g.N, g.K, P});
    at::Tensor cols = direct ? gx.view({g.N, g.C, P}) : at::empty({g.N, J, P}, gy.options());
    gemm(cols, wm.t().unsqueeze(0).expand({g.N, J, g.K}), gy3, 0.f);
    if (direct) return;
    if (g.OH * g.KH != g.H || g.OW * g.KW != g.W) gx.zero_();
    gx.narrow(2, 0, g.OH * g.KH)
        .narrow(3, 0, g.OW * g.KW)
        .view({g.N, g.C, g.OH, g.KH, g.OW, g.KW})
        .copy_(cols.view({g.N, g.C, g.KH, g.KW, g.OH, g.OW}).permute({0, 1, 4, 2, 5, 3}));
  }
}

// gw (K, C, KH, KW), allocated contiguous, = conv2d's grad_weight: one product whose reduction runs
// over every pixel of the batch (the library's own accumulation, fp32 for 16-bit inputs). gy and
// x contiguous in the layout `cl`; N > 0.
template <class Gemm>
void conv2d_backward_weight_gemm(const at::Tensor& gy, const at::Tensor& x, const ConvGeometry& g, bool cl,
                                 at::Tensor& gw, Gemm&& gemm) {
  using namespace conv_gemm;
  cl = cl || one_pixel(g);
  const int64_t M = g.N * g.OH * g.OW, J = g.C * g.KH * g.KW;
  // (pixels, K): a view for channels_last, a transposing copy for NCHW
  const at::Tensor gy2 = cl ? gy.permute({0, 2, 3, 1}).reshape({M, g.K})
                            : gy.view({g.N, g.K, g.OH * g.OW}).permute({0, 2, 1}).reshape({M, g.K});
  const at::Tensor A = patches(x, g, cl, /*pixel_rows=*/true);  // (pixels, J)
  // entries (c, kh, kw) are the weight's own order; channels_last's (kh, kw, c) are permuted after
  const bool direct = !cl || (g.KH == 1 && g.KW == 1);
  at::Tensor out = direct ? gw.view({g.K, J}) : at::empty({g.K, J}, gw.options());
  gemm(out, gy2.t(), A, 0.f);
  if (!direct) gw.copy_(out.view({g.K, g.KH, g.KW, g.C}).permute({0, 3, 1, 2}));
}

// The transposed convolution with kernel == stride, no padding, output_padding or groups (the
// conv2d of this file read the other way): y (N, C_out, H*KH, W*KW), allocated in the layout `cl`,
// = conv_transpose2d(x, w, bias) with w (C_in, C_out, KH, KW). x contiguous in that layout.
template <class Gemm>
void conv_transpose2d_forward_gemm(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                   bool cl, at::Tensor& y, Gemm&& gemm) {
  const int64_t N = x.size(0), Ci = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Co = w.size(1), KH = w.size(2), KW = w.size(3), M = N * H * W, J = Co * KH * KW;
  const bool direct = KH == 1 && KW == 1;  // y's pixels are x's
  // the bias goes into the product (beta = 1), once per (kh, kw) entry, so 16-bit outputs round once
  std::optional<at::Tensor> bias_j;
  if (bias) bias_j = cl ? bias->repeat({KH * KW}) : bias->repeat_interleave(KH * KW);
  if (cl) {  // (pixels, (kh, kw, co)) = x (pixels, C_in) Wt (C_in, (kh, kw, co))
    const at::Tensor wt = w.permute({0, 2, 3, 1}).reshape({Ci, J});
    at::Tensor cols = direct ? y.permute({0, 2, 3, 1}).view({M, Co}) : at::empty({M, J}, x.options());
    gemm(cols, x.permute({0, 2, 3, 1}).reshape({M, Ci}), wt, conv_gemm::fill_bias(cols, bias_j, 1) ? 1.f : 0.f);
    if (!direct)
      y.permute({0, 2, 3, 1})
          .view({N, H, KH, W, KW, Co})
          .copy_(cols.view({N, H, W, KH, KW, Co}).permute({0, 1, 3, 2, 4, 5}));
  } else {  // per image ((co, kh, kw), pixels) = Wt^T (J, C_in) x_n (C_in, pixels)
    const at::Tensor wt = conv_gemm::unit_stride(w.reshape({Ci, J}));
    at::Tensor cols = direct ? y.view({N, Co, H * W}) : at::empty({N, J, H * W}, x.options());
    gemm(cols, wt.t().unsqueeze(0).expand({N, J, Ci}), x.view({N, Ci, H * W}),
         conv_gemm::fill_bias(cols, bias_j, 1) ? 1.f : 0.f);
    if (!direct)
      y.view({N, Co, H, KH, W, KW}).copy_(cols.view({N, Co, KH, KW, H, W}).permute({0, 1, 4, 2, 5, 3}));
  }
}

}  // namespace rnnkern
