// Convolutions that are one matrix product, on the BLAS library (cuBLAS on CUDA, where they are
// the default; on CPU only with RNNKERN_CONV_GEMM=1, see conv_gemm_requested). Device-generic:
// ATen views and copies around a `gemm(C, A, B, beta)` the backend supplies (C = A B + beta C, 2-D,
// or 3-D batched where A may repeat one matrix over the batch).
//
// kernel <= stride, no padding, one group (1x1 convolutions of any stride, and "patchify" ones
// such as the U-Net's 2x2/2 transposed convolution): every output pixel reads its own KH x KW patch
// and no two patches overlap, so with A the patches of x as a matrix (x itself when 1x1, stride 1),
//   forward      y  = A Wm^T                 (pixels x C_out)
//   grad_input   gA = gy Wm, written back to the patches (what no patch covers: zero)
//   grad_weight  gW = gy^T A
//   transposed-convolution forward, kernel <= stride: y = patches^-1(x Wt), the same product read
//   the other way (what no patch covers: the bias).
// Why: these are plain GEMMs, where the implicit-GEMM engine (csrc/cuda/conv.cu) ran at 0.2-0.3x of
// cuDNN (bf16 channels_last U-Net up-convolution on an H200, bench/NOTES.md) and a tuned GEMM library
// does not. At most one layout copy a side (none for 1x1 stride-1 channels_last, or the 1x1 stride-1
// forward in NCHW).
//
// Layouts: channels_last works on (pixels, channels) matrices, patch entries ordered (kh, kw, c);
// NCHW per image on (channels, pixels) ones, patch entries (c, kh, kw) (weight order).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "conv_common.h"
#include "ops.h"

namespace rnnkern {

// RNNKERN_CONV_GEMM=0|1 (read per call): =0 keeps every convolution on the kernels, =1 sends the
// GEMM-shaped ones to the BLAS route on CPU too (tests use it to check this file's layouts without
// a GPU, with RNNKERN_EMULATE_CUBLAS=1 also the cuBLAS arguments they lead to, see
// csrc/cpu/blas_emulation.h; the CPU kernels measured as fast there). Unset: `default_on` (CUDA: on).
inline bool conv_gemm_requested(bool default_on) { return env_switch("RNNKERN_CONV_GEMM", "0", "1", default_on); }

// A convolution this file computes: kernel <= stride (patches that do not overlap), no padding, one
// group. Dilation is allowed only where it changes nothing (a 1-tap dimension).
inline bool gemm_shaped(int64_t groups, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                        bool padded) {
  return groups == 1 && kh <= sh && kw <= sw && !padded && (dh == 1 || kh == 1) && (dw == 1 || kw == 1);
}
inline bool conv2d_is_gemm(const ConvGeometry& g) {
  return gemm_shaped(g.G, g.KH, g.KW, g.sh, g.sw, g.dh, g.dw, g.pt || g.pl || g.pb || g.pr);
}
// conv2d on this file's route: GEMM-shaped and not turned off (default_on: the backend's default,
// see conv_gemm_requested).
inline bool conv2d_takes_gemm(const ConvGeometry& g, bool default_on) {
  return conv2d_is_gemm(g) && conv_gemm_requested(default_on);
}
// The transposed convolution read the same way (output_padding only adds rows / columns no patch
// covers).
inline bool conv_transpose2d_is_gemm(const ConvT2dGeometry& g) {
  return gemm_shaped(g.G, g.kH, g.kW, g.sH, g.sW, g.dH, g.dW, g.pH || g.pW);
}

namespace conv_gemm {

// t (N, C, H, W), any strides, as its patches (N, C, PH, KH, PW, KW): patch (ph, pw) is the KH x KW
// window at (ph * sh, pw * sw). A view (the patches do not overlap: KH <= sh, KW <= sw).
inline at::Tensor patch_view(const at::Tensor& t, int64_t PH, int64_t PW, int64_t KH, int64_t KW, int64_t sh,
                             int64_t sw) {
  return t.as_strided({t.size(0), t.size(1), PH, KH, PW, KW},
                      {t.stride(0), t.stride(1), sh * t.stride(2), t.stride(2), sw * t.stride(3), t.stride(3)},
                      t.storage_offset());
}

// Orders of patch_view's dims: channels_last matrices (pixels, (kh, kw, c)); NCHW per image
// ((c, kh, kw), pixels); NCHW (pixels, (c, kh, kw)).
constexpr int64_t kPixelsKhKwC[] = {0, 2, 4, 3, 5, 1};
constexpr int64_t kCKhKwPixels[] = {0, 1, 3, 5, 2, 4};
constexpr int64_t kPixelsCKhKw[] = {0, 2, 4, 1, 3, 5};

// x's patches as a matrix. channels_last: (N*OH*OW, KH*KW*C), entries (kh, kw, c). NCHW: per
// image (N, C*KH*KW, OH*OW) when !pixel_rows, else (N*OH*OW, C*KH*KW); entries (c, kh, kw). A view
// of x where the layout allows (1x1 stride 1: channels_last, NCHW per image), else one copy.
// x: contiguous in its layout.
inline at::Tensor patches(const at::Tensor& x, const ConvGeometry& g, bool cl, bool pixel_rows) {
  const at::Tensor v = patch_view(x, g.OH, g.OW, g.KH, g.KW, g.sh, g.sw);
  const int64_t M = g.N * g.OH * g.OW, J = g.C * g.KH * g.KW;
  if (cl) return v.permute(kPixelsKhKwC).reshape({M, J});
  return pixel_rows ? v.permute(kPixelsCKhKw).reshape({M, J}) : v.permute(kCKhKwPixels).reshape({g.N, J, g.OH * g.OW});
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
  // 1x1 stride 1 (then OH == H, OW == W): the product's rows are gx's own
  const bool in_place = g.KH * g.KW * g.sh * g.sw == 1;
  at::Tensor cols;
  if (cl) {  // (pixels, J) = gy (pixels, K) Wm (K, J)
    cols = in_place ? gx.permute({0, 2, 3, 1}).view({M, g.C}) : at::empty({M, J}, gy.options());
    gemm(cols, gy.permute({0, 2, 3, 1}).reshape({M, g.K}), wm, 0.f);
  } else {  // per image (J, pixels) = Wm^T (J, K) gy_n (K, pixels)
    cols = in_place ? gx.view({g.N, g.C, P}) : at::empty({g.N, J, P}, gy.options());
    gemm(cols, wm.t().unsqueeze(0).expand({g.N, J, g.K}), gy.view({g.N, g.K, P}), 0.f);
  }
  if (in_place) return;
  // the patches tile gx exactly, or what none covers (gaps, the last rows / columns) is zero
  if (g.KH != g.sh || g.KW != g.sw || g.OH * g.sh != g.H || g.OW * g.sw != g.W) gx.zero_();
  const at::Tensor dst = patch_view(gx, g.OH, g.OW, g.KH, g.KW, g.sh, g.sw);
  if (cl) dst.permute(kPixelsKhKwC).copy_(cols.view({g.N, g.OH, g.OW, g.KH, g.KW, g.C}));
  else dst.permute(kCKhKwPixels).copy_(cols.view({g.N, g.C, g.KH, g.KW, g.OH, g.OW}));
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
  const bool in_place = !cl || (g.KH == 1 && g.KW == 1);
  at::Tensor out = in_place ? gw.view({g.K, J}) : at::empty({g.K, J}, gw.options());
  gemm(out, gy2.t(), A, 0.f);
  if (!in_place) gw.copy_(out.view({g.K, g.KH, g.KW, g.C}).permute({0, 3, 1, 2}));
}

// The transposed convolution with kernel <= stride, no padding, one group (the conv2d of this file
// read the other way): y (N, C_out, OH, OW), allocated in the layout `cl`, = conv_transpose2d(x, w,
// bias, stride (sh, sw), output_padding OH - ((H - 1) sh + KH) ...) with w (C_in, C_out, KH, KW).
// x contiguous in that layout.
template <class Gemm>
void conv_transpose2d_forward_gemm(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                   int64_t sh, int64_t sw, bool cl, at::Tensor& y, Gemm&& gemm) {
  using namespace conv_gemm;
  const int64_t N = x.size(0), Ci = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Co = w.size(1), KH = w.size(2), KW = w.size(3), M = N * H * W, J = Co * KH * KW;
  const bool in_place = KH * KW * sh * sw == 1 && y.size(2) == H && y.size(3) == W;  // y's pixels are x's
  // the bias goes into the product (beta = 1), once per (kh, kw) entry, so 16-bit outputs round once
  std::optional<at::Tensor> bias_j;
  if (bias) bias_j = cl ? bias->repeat({KH * KW}) : bias->repeat_interleave(KH * KW);
  at::Tensor cols;
  if (cl) {  // (pixels, (kh, kw, co)) = x (pixels, C_in) Wt (C_in, (kh, kw, co))
    cols = in_place ? y.permute({0, 2, 3, 1}).view({M, Co}) : at::empty({M, J}, x.options());
    gemm(cols, x.permute({0, 2, 3, 1}).reshape({M, Ci}), w.permute({0, 2, 3, 1}).reshape({Ci, J}),
         fill_bias(cols, bias_j, 1) ? 1.f : 0.f);
  } else {  // per image ((co, kh, kw), pixels) = Wt^T (J, C_in) x_n (C_in, pixels)
    cols = in_place ? y.view({N, Co, H * W}) : at::empty({N, J, H * W}, x.options());
    gemm(cols, unit_stride(w.reshape({Ci, J})).t().unsqueeze(0).expand({N, J, Ci}), x.view({N, Ci, H * W}),
         fill_bias(cols, bias_j, 1) ? 1.f : 0.f);
  }
  if (in_place) return;
  // what no patch covers (gaps between them, output_padding's rows / columns) is the bias alone
  if (KH != sh || KW != sw || y.size(2) != H * sh || y.size(3) != W * sw) {
    if (bias) y.copy_(bias->view({1, Co, 1, 1}).expand_as(y));
    else y.zero_();
  }
  const at::Tensor dst = patch_view(y, H, W, KH, KW, sh, sw);
  if (cl) dst.permute(kPixelsKhKwC).copy_(cols.view({N, H, W, KH, KW, Co}));
  else dst.permute(kCKhKwPixels).copy_(cols.view({N, Co, KH, KW, H, W}));
}

}  // namespace rnnkern
