// Transposed 2-D convolution on the CPU (1-D is the H == 1 view of it).
//
// Weight (C_in, C_out/G, kH, kW), output (N, C_out, OH, OW) with
//   OH = (H - 1) * sH - 2 pH + dH (kH - 1) + opH + 1,
// and out[n, co, oh, ow] = bias[co] + sum x[n, ci, ih, iw] * w[ci, co', kh, kw] over the taps with
//   oh = ih * sH - pH + kh * dH,  ow = iw * sW - pW + kw * dW.
//
// Formulation (only useful MACs; no zero-inserted input is ever built):
//  * forward  = GEMM + col2im: cols = W_g^T x_g per group (one MKL GEMM), then every output row
//               GATHERS its taps from cols into a row accumulator (bias included) and is written
//               once. Which kernel rows hit output row oh depends only on (oh + pH) mod sH: the
//               "phase" tap tables below, so no per-tap divisibility test runs in the inner loop.
//  * dgrad    = an ordinary strided conv of grad_output: im2col(grad_output) + GEMM with W_g.
//  * wgrad    = for fp32 with >= 16 channels per group on one side and stride product <= 16: the
//               weight gradient of the ordinary strided convolution of grad_output that produces
//               x, on the conv engine's direct AVX-512 wgrad kernel
//               (conv_transpose2d_backward_weight_direct_cpu: only the (input pixel, tap) pairs
//               that land inside the output are multiplied); otherwise GEMM of x_g with
//               im2col(grad_output) (K = the pixels of each sample).
// NCHW: cols is [G, C_out/G, kH, kW, H*W]; channels_last: cols is [H*W, G, kH, kW, C_out/G] with
// the weight permuted to (G, C_in/G, kH, kW, C_out/G) once, so the gathers read contiguous
// channel vectors.
//
// Parallelism and determinism: samples are independent tasks of an at::parallel_for (each
// output/grad-input element is produced by exactly one task, in a fixed order). Inside a task
// the im2col/col2im loops are parallel_for's too: they run serially when nested and in parallel
// when the batch offers a single task (N == 1), when MKL's GEMM also gets all threads. wgrad
// (GEMM path) reduces over samples: one partial per contiguous batch slot (kWgradSlots of them,
// or one for samples of few pixels, whatever the thread count), summed in slot order, so the
// result is reproducible run to run and does not depend on at::get_num_threads() (a single-slot
// GEMM runs outside a parallel region, where MKL's own threading decides its split).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/safe_numerics.h>

#include <numeric>
#include <vector>

#include "../conv_common.h"
#include "../conv_gemm.h"
#include "blas_emulation.h"
#include "conv_precision.h"
#include "fresh_buffer.h"
#include "../ops.h"

namespace rnnkern {

namespace {

int64_t div_floor(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t div_ceil(int64_t a, int64_t b) { return -div_floor(-a, b); }

constexpr int64_t kGrain = 32768;  // ATen's at::internal::GRAIN_SIZE
// wgrad partial sums (GEMM path): a fixed number of batch slots, not the thread count, so the
// bits do not depend on it
constexpr int64_t kWgradSlots = 4;
constexpr int64_t kWgradSlotMinPixels = 256;  // input pixels per sample below which one slot is used

// Tasks of at::parallel_for carry at least kGrain units of work: tiny
// problems stay on one thread (forking OpenMP for microseconds of work costs more than it saves,
// and on a loaded machine a barrier can wait a whole time slice).
int64_t grain(int64_t work_per_item) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, work_per_item));
}

// MACs of one sample: each input pixel meets C_out/G * kH * kW taps for each of its C_in channels.
int64_t macs_per_sample(const ConvT2dGeometry& g) { return g.Cin * g.cout_g() * g.kH * g.kW * g.H * g.W; }

void check_pair(const char* op, const char* name, at::IntArrayRef v, int64_t minimum) {
  TORCH_CHECK(v.size() == 2, op, ": ", name, " must have 2 entries, got ", v.size());
  TORCH_CHECK(v[0] >= minimum && v[1] >= minimum, op, ": ", name, " must be >= ", minimum, ", got ", v);
}

}  // namespace

void check_conv_transpose2d_grad_output(const char* op, const ConvT2dGeometry& g, const at::Tensor& grad_output) {
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.N && grad_output.size(1) == g.Cout &&
                  grad_output.size(2) == g.OH && grad_output.size(3) == g.OW,
              op, ": grad_output must have shape (", g.N, ", ", g.Cout, ", ", g.OH, ", ", g.OW, "), got ",
              grad_output.sizes());
}

ConvT2dGeometry conv_transpose2d_geometry(const char* op, at::IntArrayRef input_size, at::IntArrayRef weight_size,
                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation) {
  TORCH_CHECK(input_size.size() == 4, op, ": input must be 4-D (N, C_in, H, W), got ", input_size.size(), "-D");
  TORCH_CHECK(weight_size.size() == 4, op, ": weight must be 4-D (C_in, C_out/groups, kH, kW), got ",
              weight_size.size(), "-D");
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "output_padding", output_padding, 0);
  check_pair(op, "dilation", dilation, 1);
  TORCH_CHECK(groups >= 1, op, ": groups must be >= 1, got ", groups);
  ConvT2dGeometry g;
  g.N = input_size[0]; g.Cin = input_size[1]; g.H = input_size[2]; g.W = input_size[3];
  g.G = groups;
  g.kH = weight_size[2]; g.kW = weight_size[3];
  g.sH = stride[0]; g.sW = stride[1];
  g.pH = padding[0]; g.pW = padding[1];
  g.opH = output_padding[0]; g.opW = output_padding[1];
  g.dH = dilation[0]; g.dW = dilation[1];
  TORCH_CHECK(weight_size[0] == g.Cin, op, ": weight.size(0) (", weight_size[0], ") must equal the input channels (",
              g.Cin, ")");
  TORCH_CHECK(g.Cin % groups == 0, op, ": input channels (", g.Cin, ") must be divisible by groups (", groups, ")");
  TORCH_CHECK(g.kH >= 1 && g.kW >= 1, op, ": kernel size must be >= 1, got ", weight_size);
  TORCH_CHECK(g.Cin >= 1 && weight_size[1] >= 1, op, ": weight must have non-zero sizes, got ", weight_size);
  g.Cout = weight_size[1] * groups;
  for (int d = 0; d < 2; ++d)
    TORCH_CHECK(output_padding[d] < stride[d] || output_padding[d] < dilation[d], op,
                ": output_padding must be smaller than either stride or dilation, got output_padding=",
                output_padding, " stride=", stride, " dilation=", dilation);
  // (H - 1) s - 2 p + d (k - 1) + op + 1, refused where a term overflows int64 (it would wrap)
  const auto out_size = [&](int64_t in, int64_t s, int64_t p, int64_t d, int64_t k, int64_t opad) {
    int64_t strided = 0, extent = 0, pad2 = 0, sum = 0;
    TORCH_CHECK(!c10::mul_overflows(in - 1, s, &strided) &&
                    !c10::mul_overflows(d, k - 1, &extent) && !c10::mul_overflows(p, int64_t{2}, &pad2) &&
                    !c10::add_overflows(strided, extent, &sum) && !c10::add_overflows(sum, opad + 1, &sum),
                op, ": stride, padding or dilation too large (the output size overflows int64)");
    return sum - pad2;
  };
  g.OH = out_size(g.H, g.sH, g.pH, g.dH, g.kH, g.opH);
  g.OW = out_size(g.W, g.sW, g.pW, g.dW, g.kW, g.opW);
  // an empty batch may have empty images too (torch returns an empty result there), never negative sizes
  const int64_t least = g.N == 0 ? 0 : 1;
  TORCH_CHECK(g.H >= least && g.W >= least, op, ": input spatial size must be >= 1, got ", input_size);
  TORCH_CHECK(g.OH >= least && g.OW >= least, op, ": output size (", g.OH, ", ", g.OW,
              ") is too small for input ", input_size, " (padding too large)");
  return g;
}

namespace {

// Elements of an im2col / col2im operand block, sized to stay in L2.
constexpr int64_t chunk_pixels_budget() { return int64_t(1) << 17; }

// For each output phase r = (o + p) mod s: the kernel taps k with k*d == r (mod s), ascending.
// The input position of tap k is i = (o + p - k*d) / s (exact), valid when 0 <= i < In.
std::vector<std::vector<int64_t>> phase_taps(int64_t k, int64_t s, int64_t d) {
  std::vector<std::vector<int64_t>> taps(s);
  for (int64_t t = 0; t < k; ++t) taps[(t * d) % s].push_back(t);
  return taps;
}

at::MemoryFormat format_of(bool cl) { return cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous; }

bool channels_last_output(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// Weight (C_in, C_out/G, kH, kW) -> (G, C_in/G, kH*kW*C_out/G): the channels_last GEMM operand.
at::Tensor permute_weight_cl(const at::Tensor& w, const ConvT2dGeometry& g) {
  return w.view({g.G, g.cin_g(), g.cout_g(), g.kH, g.kW}).permute({0, 1, 3, 4, 2}).contiguous()
      .view({g.G, g.cin_g(), g.kH * g.kW * g.cout_g()});
}

// ---------------------------------------------------------------- forward (GEMM + col2im) ----

// NCHW forward of one sample, block of output channels by block: cols = W_g^T x_g for the
// block's (C_out-block * kH * kW) rows stays in L2, then the block's output rows gather from it.
template <typename scalar_t>
void forward_sample_nchw(const ConvT2dGeometry& g, const at::Tensor& x_n /* [C_in, HW] */, const at::Tensor& w,
                         const scalar_t* bias, scalar_t* out /* [C_out, OH, OW] */,
                         const std::vector<std::vector<int64_t>>& th) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = g.H * g.W, kk = g.kH * g.kW, Cg = g.cout_g(), M = Cg * kk;
  const int64_t cb = std::max<int64_t>(1, std::min<int64_t>(Cg, chunk_pixels_budget() / std::max<int64_t>(1, kk * HW)));
  at::Tensor cols = at::empty({cb * kk, HW}, x_n.options());
  const at::Tensor wv = w.view({g.G, g.cin_g(), M});
  const at::Tensor xv = x_n.view({g.G, g.cin_g(), HW});
  // iw range of each kernel column: ow = iw*sW - pW + kw*dW in [0, OW)
  std::vector<int64_t> lo(g.kW), hi(g.kW);
  for (int64_t kw = 0; kw < g.kW; ++kw) {
    lo[kw] = std::max<int64_t>(0, div_ceil(g.pW - kw * g.dW, g.sW));
    hi[kw] = std::min<int64_t>(g.W, div_floor(g.OW - 1 + g.pW - kw * g.dW, g.sW) + 1);
  }
  for (int64_t gi = 0; gi < g.G; ++gi)
    for (int64_t c0 = 0; c0 < Cg; c0 += cb) {
      const int64_t nc = std::min(cb, Cg - c0);
      at::Tensor c = cols.narrow(0, 0, nc * kk);
      at::mm_out(c, wv.select(0, gi).narrow(1, c0 * kk, nc * kk).t(), xv.select(0, gi));
      const scalar_t* cp = cols.const_data_ptr<scalar_t>();
      at::parallel_for(0, nc, grain(g.OH * g.OW + kk * HW), [&](int64_t j0, int64_t j1) {
        std::vector<acc_t> acc(g.OW);
        for (int64_t j = j0; j < j1; ++j) {
          const int64_t co = gi * Cg + c0 + j;
          const scalar_t* cc = cp + j * kk * HW;  // cols rows of channel co: [kH, kW, H, W]
          const acc_t b = bias ? static_cast<acc_t>(bias[co]) : acc_t(0);
          for (int64_t oh = 0; oh < g.OH; ++oh) {
            std::fill(acc.begin(), acc.end(), b);
            for (int64_t kh : th[(oh + g.pH) % g.sH]) {
              const int64_t num = oh + g.pH - kh * g.dH;
              if (num < 0) break;  // taps ascend: every later one is out too
              const int64_t ih = num / g.sH;
              if (ih >= g.H) continue;
              for (int64_t kw = 0; kw < g.kW; ++kw) {
                const scalar_t* __restrict__ row = cc + ((kh * g.kW + kw) * g.H + ih) * g.W;
                acc_t* __restrict__ a = acc.data() + kw * g.dW - g.pW;
                const int64_t s = g.sW;
                for (int64_t iw = lo[kw]; iw < hi[kw]; ++iw) a[iw * s] += static_cast<acc_t>(row[iw]);
              }
            }
            scalar_t* o = out + (co * g.OH + oh) * g.OW;
            for (int64_t ow = 0; ow < g.OW; ++ow) o[ow] = static_cast<scalar_t>(acc[ow]);
          }
        }
      });
    }
}

// Pixels per chunk: the im2col / GEMM operand of one chunk (chunk x C_out*kH*kW) stays in L2,
// so it is produced and consumed from cache (a whole sample's columns can be megabytes).
int64_t chunk_pixels(const ConvT2dGeometry& g) {
  const int64_t kColsBudget = chunk_pixels_budget();
  const int64_t per_px = std::max<int64_t>(1, g.Cout * g.kH * g.kW);
  return std::max<int64_t>(1, std::min<int64_t>(g.H * g.W, std::max<int64_t>(16, kColsBudget / per_px)));
}

// channels_last forward of one sample, chunk by chunk of input pixels: cols = x_chunk W'_g per
// group, then each input pixel adds its contiguous C_out/G-vectors to the output pixels its taps
// hit. The output (bias-initialised) is accumulated in a fixed order: deterministic.
template <typename scalar_t>
void forward_sample_cl(const ConvT2dGeometry& g, const at::Tensor& x_n /* [HW, C_in] */, const at::Tensor& wp,
                       const scalar_t* bias, scalar_t* out /* [OH, OW, C_out] */) {
  const int64_t HW = g.H * g.W, kk = g.kH * g.kW, Cg = g.cout_g(), M = kk * Cg;
  for (int64_t o = 0; o < g.OH * g.OW; ++o)
    for (int64_t c = 0; c < g.Cout; ++c) out[o * g.Cout + c] = bias ? bias[c] : scalar_t(0);
  const int64_t P = chunk_pixels(g);
  at::Tensor cols = at::empty({P, g.G, M}, x_n.options());
  for (int64_t p0 = 0; p0 < HW; p0 += P) {
    const int64_t np = std::min(P, HW - p0);
    at::Tensor c = cols.narrow(0, 0, np);
    for (int64_t gi = 0; gi < g.G; ++gi) {
      at::Tensor cg = c.select(1, gi);
      at::mm_out(cg, x_n.narrow(0, p0, np).narrow(1, gi * g.cin_g(), g.cin_g()), wp.select(0, gi));
    }
    const scalar_t* cp = cols.const_data_ptr<scalar_t>();
    for (int64_t q = 0; q < np; ++q) {
      const int64_t ih = (p0 + q) / g.W, iw = (p0 + q) % g.W;
      for (int64_t kh = 0; kh < g.kH; ++kh) {
        const int64_t oh = ih * g.sH - g.pH + kh * g.dH;
        if (oh < 0 || oh >= g.OH) continue;
        for (int64_t kw = 0; kw < g.kW; ++kw) {
          const int64_t ow = iw * g.sW - g.pW + kw * g.dW;
          if (ow < 0 || ow >= g.OW) continue;
          scalar_t* o = out + (oh * g.OW + ow) * g.Cout;
          const scalar_t* src = cp + q * g.G * M + (kh * g.kW + kw) * Cg;
          for (int64_t gi = 0; gi < g.G; ++gi) {
            scalar_t* og = o + gi * Cg;
            const scalar_t* sg = src + gi * M;
#pragma omp simd
            for (int64_t cc = 0; cc < Cg; ++cc) og[cc] += sg[cc];
          }
        }
      }
    }
  }
}

// ------------------------------------------------------- im2col of grad_output (dgrad, wgrad) ----

// NCHW, input pixels [p0, p0 + np): cols[(co, kh, kw)][q] = gy[co, oh, ow] for pixel p0 + q = (ih, iw),
// oh = ih*sH - pH + kh*dH, ow = iw*sW - pW + kw*dW (0 outside).
template <typename scalar_t>
void im2col_nchw(const ConvT2dGeometry& g, const scalar_t* gy /* [C_out, OH, OW] */, scalar_t* cols, int64_t p0,
                 int64_t np) {
  const int64_t kk = g.kH * g.kW;
  at::parallel_for(0, g.Cout * kk, grain(np), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t co = r / kk, kh = (r % kk) / g.kW, kw = r % g.kW;
      const int64_t lo = std::max<int64_t>(0, div_ceil(g.pW - kw * g.dW, g.sW));
      const int64_t hi = std::min<int64_t>(g.W, div_floor(g.OW - 1 + g.pW - kw * g.dW, g.sW) + 1);
      scalar_t* c = cols + r * np;
      for (int64_t p = p0; p < p0 + np;) {
        const int64_t ih = p / g.W, iw0 = p % g.W, iw1 = std::min(g.W, iw0 + (p0 + np - p));
        scalar_t* cr = c + (p - p0) - iw0;  // indexed by iw
        const int64_t oh = ih * g.sH - g.pH + kh * g.dH;
        if (oh < 0 || oh >= g.OH) {
          for (int64_t iw = iw0; iw < iw1; ++iw) cr[iw] = scalar_t(0);
        } else {
          const scalar_t* src = gy + (co * g.OH + oh) * g.OW + kw * g.dW - g.pW;
          const int64_t a = std::max(iw0, std::min(lo, iw1)), b = std::max(a, std::min(hi, iw1));
          for (int64_t iw = iw0; iw < a; ++iw) cr[iw] = scalar_t(0);
          for (int64_t iw = a; iw < b; ++iw) cr[iw] = src[iw * g.sW];
          for (int64_t iw = b; iw < iw1; ++iw) cr[iw] = scalar_t(0);
        }
        p += iw1 - iw0;
      }
    }
  });
}

// channels_last, input pixels [p0, p0 + np): cols[q][g][kh][kw][c] = gy[oh, ow, g*C_out/G + c] (0 outside).
template <typename scalar_t>
void im2col_cl(const ConvT2dGeometry& g, const scalar_t* gy /* [OH, OW, C_out] */, scalar_t* cols, int64_t p0,
               int64_t np) {
  const int64_t Cg = g.cout_g(), kk = g.kH * g.kW;
  at::parallel_for(0, np, grain(g.G * kk * Cg), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t ih = (p0 + q) / g.W, iw = (p0 + q) % g.W;
      scalar_t* c = cols + q * g.G * kk * Cg;
      for (int64_t gi = 0; gi < g.G; ++gi)
        for (int64_t kh = 0; kh < g.kH; ++kh) {
          const int64_t oh = ih * g.sH - g.pH + kh * g.dH;
          for (int64_t kw = 0; kw < g.kW; ++kw, c += Cg) {
            const int64_t ow = iw * g.sW - g.pW + kw * g.dW;
            if (oh < 0 || oh >= g.OH || ow < 0 || ow >= g.OW) {
              std::fill(c, c + Cg, scalar_t(0));
            } else {
              const scalar_t* src = gy + (oh * g.OW + ow) * g.Cout + gi * Cg;
              std::copy(src, src + Cg, c);
            }
          }
        }
    }
  });
}

bool use_cl(const at::Tensor& t) { return channels_last_output(t); }

bool reduced(const at::Tensor& t) { return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16; }

// A bf16 / fp16 operand in fp32, in the layout the fp32 path then follows: the one use_cl gives the
// 16-bit tensor (a plain .to() keeps a channels_last slice's order, which use_cl reads as NCHW).
at::Tensor to_fp32(const at::Tensor& t) { return t.to(at::kFloat, false, false, format_of(use_cl(t))); }

}  // namespace

at::Tensor conv_transpose2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                        at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                        at::IntArrayRef dilation) {
  const char* op = "conv_transpose2d";
  const ConvMatmulPrecision matmul_precision;  // the products at the conv's fp32 precision
  const ConvT2dGeometry g = conv_transpose2d_geometry(op, input.sizes(), weight.sizes(), stride, padding,
                                                      output_padding, groups, dilation);
  check_conv_dtype(op, "input", input);
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), op, ": weight dtype ", weight.scalar_type(),
              " must match input dtype ", input.scalar_type());
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.Cout, op, ": bias must have shape (", g.Cout, "), got ",
                bias->sizes());
    TORCH_CHECK(bias->scalar_type() == input.scalar_type(), op, ": bias dtype must match input dtype");
  }
  const bool cl = use_cl(input);
  if (reduced(input)) {  // bf16/fp16 on the CPU: compute in fp32, round once
    std::optional<at::Tensor> b32;
    if (bias.has_value()) b32 = bias->to(at::kFloat);
    return conv_transpose2d_forward_cpu(to_fp32(input), weight.to(at::kFloat), b32, stride, padding,
                                        output_padding, groups, dilation)
        .to(input.scalar_type());
  }
  at::Tensor output = empty_for_full_write({g.N, g.Cout, g.OH, g.OW}, input.options().memory_format(format_of(cl)));
  if (output.numel() == 0) return output;
  if (conv_gemm_requested(false) && conv_transpose2d_is_gemm(g)) {
    const std::optional<at::Tensor> b =
        bias.has_value() ? std::optional<at::Tensor>(bias->detach().contiguous()) : std::nullopt;
    conv_transpose2d_forward_gemm(input.detach().contiguous(format_of(cl)), weight.detach(), b, g.sH, g.sW, cl,
                                  output, CpuGemm{});
    return output;
  }
  if (conv_transpose2d_forward_direct_cpu(input, weight, bias, groups, stride, padding, dilation, output))
    return output;
  // detach: the GEMMs below are out= calls, which autograd refuses on tensors that require grad
  // (the custom-op layer above owns differentiation).
  const at::Tensor x = input.detach().contiguous(format_of(cl));
  const at::Tensor w = cl ? permute_weight_cl(weight.detach(), g) : weight.detach().contiguous();
  const std::optional<at::Tensor> b =
      bias.has_value() ? std::optional<at::Tensor>(bias->detach().contiguous()) : std::nullopt;
  const auto th = phase_taps(g.kH, g.sH, g.dH);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "conv_transpose2d_forward_cpu", [&] {
    const scalar_t* bp = b.has_value() ? b->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* out = output.data_ptr<scalar_t>();
    const int64_t out_n = g.Cout * g.OH * g.OW;
    at::parallel_for(0, g.N, grain(macs_per_sample(g)), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        if (cl)
          forward_sample_cl<scalar_t>(g, x[n].permute({1, 2, 0}).reshape({g.H * g.W, g.Cin}), w, bp,
                                      out + n * out_n);
        else
          forward_sample_nchw<scalar_t>(g, x[n].view({g.Cin, g.H * g.W}), w, bp, out + n * out_n, th);
      }
    });
  });
  return output;
}

at::Tensor conv_transpose2d_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                               at::IntArrayRef input_size, at::IntArrayRef stride,
                                               at::IntArrayRef padding, at::IntArrayRef output_padding,
                                               int64_t groups, at::IntArrayRef dilation) {
  const char* op = "conv_transpose2d_backward_input";
  const ConvMatmulPrecision matmul_precision;  // the products at the conv's fp32 precision
  const ConvT2dGeometry g = conv_transpose2d_geometry(op, input_size, weight.sizes(), stride, padding,
                                                      output_padding, groups, dilation);
  check_conv_transpose2d_grad_output(op, g, grad_output);
  check_conv_dtype(op, "grad_output", grad_output);
  TORCH_CHECK(weight.scalar_type() == grad_output.scalar_type(), op, ": weight dtype must match grad_output dtype");
  if (reduced(grad_output))
    return conv_transpose2d_backward_input_cpu(to_fp32(grad_output), weight.to(at::kFloat), input_size, stride,
                                               padding, output_padding, groups, dilation)
        .to(grad_output.scalar_type());
  const bool cl = use_cl(grad_output);
  if (g.N > 0 && g.conv_maps_back()) {
    // grad_input is the ordinary convolution of grad_output with this weight read as a conv
    // weight (C_out = C_in of the transposed conv): the conv engine (direct AVX-512 kernel or
    // tiled GEMM), same layout rule (channels_last in -> channels_last out).
    return conv2d_forward_cpu(grad_output.detach(), weight.detach(), std::nullopt, stride, padding, dilation, groups);
  }
  at::Tensor grad_input = empty_for_full_write(input_size, grad_output.options().memory_format(format_of(cl)));
  if (grad_input.numel() == 0) return grad_input;
  if (g.Cout == 0) return grad_input.zero_();
  const at::Tensor gy = grad_output.detach().contiguous(format_of(cl));
  const at::Tensor w = cl ? permute_weight_cl(weight.detach(), g) : weight.detach().contiguous();
  const int64_t HW = g.H * g.W, kk = g.kH * g.kW, Cg = g.cout_g(), M = kk * Cg;
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv_transpose2d_backward_input_cpu", [&] {
    const scalar_t* gp = gy.const_data_ptr<scalar_t>();
    at::parallel_for(0, g.N, grain(macs_per_sample(g)), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const scalar_t* gyn = gp + n * g.Cout * g.OH * g.OW;
        const int64_t P = chunk_pixels(g);
        if (cl) {
          at::Tensor cols = at::empty({P, g.G, M}, gy.options());
          at::Tensor dx = grad_input[n].permute({1, 2, 0}).view({HW, g.Cin});  // channels_last sample
          for (int64_t p0 = 0; p0 < HW; p0 += P) {
            const int64_t np = std::min(P, HW - p0);
            im2col_cl<scalar_t>(g, gyn, cols.data_ptr<scalar_t>(), p0, np);
            for (int64_t gi = 0; gi < g.G; ++gi) {
              at::Tensor o = dx.narrow(0, p0, np).narrow(1, gi * g.cin_g(), g.cin_g());
              at::mm_out(o, cols.narrow(0, 0, np).select(1, gi), w.select(0, gi).t());
            }
          }
        } else {
          at::Tensor buf = at::empty({g.G * M * P}, gy.options());
          at::Tensor dx = grad_input[n].view({g.G, g.cin_g(), HW});
          const at::Tensor wv = w.view({g.G, g.cin_g(), M});
          for (int64_t p0 = 0; p0 < HW; p0 += P) {
            const int64_t np = std::min(P, HW - p0);
            at::Tensor cols = buf.narrow(0, 0, g.G * M * np).view({g.G, M, np});
            im2col_nchw<scalar_t>(g, gyn, cols.data_ptr<scalar_t>(), p0, np);
            for (int64_t gi = 0; gi < g.G; ++gi) {
              at::Tensor o = dx.select(0, gi).narrow(1, p0, np);
              at::mm_out(o, wv.select(0, gi), cols.select(0, gi));
            }
          }
        }
      }
    });
  });
  return grad_input;
}

std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward_weight_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef weight_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
    bool bias_grad) {
  const char* op = "conv_transpose2d_backward_weight";
  const ConvMatmulPrecision matmul_precision;  // the products at the conv's fp32 precision
  const ConvT2dGeometry g = conv_transpose2d_geometry(op, input.sizes(), weight_size, stride, padding,
                                                      output_padding, groups, dilation);
  check_conv_transpose2d_grad_output(op, g, grad_output);
  check_conv_dtype(op, "grad_output", grad_output);
  TORCH_CHECK(input.scalar_type() == grad_output.scalar_type(), op, ": input dtype must match grad_output dtype");
  if (reduced(grad_output)) {
    auto [gw, gb] = conv_transpose2d_backward_weight_cpu(to_fp32(grad_output), to_fp32(input),
                                                         weight_size, stride, padding, output_padding, groups,
                                                         dilation, bias_grad);
    return {gw.to(grad_output.scalar_type()), gb.to(grad_output.scalar_type())};
  }
  at::Tensor grad_weight;
  if (conv_transpose2d_backward_weight_direct_cpu(grad_output.detach(), input.detach(), weight_size, groups, stride,
                                                  padding, dilation, grad_weight)) {
    at::Tensor grad_bias = bias_grad ? grad_output.detach().sum({0, 2, 3}) : at::empty({0}, grad_output.options());
    return {grad_weight, grad_bias};
  }
  // Both operands in channels_last whatever their layout (the result is contiguous either way): the
  // NHWC im2col reads contiguous channel vectors: on the NCHW k4s2p1 64->64 bench row this measured
  // 5.4 ms (conversion of both operands included) against 6.6 ms with the NCHW columns.
  const int64_t HW = g.H * g.W, kk = g.kH * g.kW, Cg = g.cout_g(), M = kk * Cg;
  at::Tensor grad_bias = bias_grad ? grad_output.detach().sum({0, 2, 3}) : at::empty({0}, grad_output.options());
  // one partial per slot; a single slot when the whole reduction is small
  // (one slot when a sample has few pixels: each extra slot costs a weight-sized partial to zero
  // and add, 7 MB on the FCN-32s head, where 2 slots measured 14 vs 11.5 ms)
  const int64_t slots = g.N * macs_per_sample(g) < kGrain || HW < kWgradSlotMinPixels
                            ? std::min<int64_t>(g.N, 1)
                            : std::min<int64_t>(g.N, kWgradSlots);
  // partial[slot] in the GEMM layout (G, C_in/G, kk*C_out/G)
  at::Tensor partial =
      at::zeros({std::max<int64_t>(slots, 1), g.G, g.cin_g(), M}, grad_output.options().requires_grad(false));
  if (slots > 0 && M > 0 && g.cin_g() > 0 && HW > 0) {
    const at::Tensor gy = grad_output.detach().contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor x = input.detach().contiguous(at::MemoryFormat::ChannelsLast);
    AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "conv_transpose2d_backward_weight_cpu", [&] {
      const scalar_t* gp = gy.const_data_ptr<scalar_t>();
      at::parallel_for(0, slots, 1, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) {
          at::Tensor acc = partial[s];
          const int64_t nb = s * g.N / slots, ne = (s + 1) * g.N / slots;
          const int64_t P = chunk_pixels(g);
          at::Tensor buf = at::empty({g.G * M * P}, gy.options());
          for (int64_t n = nb; n < ne; ++n) {
            const scalar_t* gyn = gp + n * g.Cout * g.OH * g.OW;
            for (int64_t p0 = 0; p0 < HW; p0 += P) {
              const int64_t np = std::min(P, HW - p0);
              at::Tensor cols = buf.narrow(0, 0, g.G * M * np).view({np, g.G, M});
              im2col_cl<scalar_t>(g, gyn, cols.data_ptr<scalar_t>(), p0, np);
              const at::Tensor xn = x[n].permute({1, 2, 0}).view({HW, g.Cin}).narrow(0, p0, np);
              for (int64_t gi = 0; gi < g.G; ++gi)
                acc.select(0, gi).addmm_(xn.narrow(1, gi * g.cin_g(), g.cin_g()).t(), cols.select(1, gi));
            }
          }
        }
      });
    });
  }
  at::Tensor sum = partial[0];
  for (int64_t s = 1; s < slots; ++s) sum = sum + partial[s];  // fixed slot order
  grad_weight = sum.view({g.G, g.cin_g(), g.kH, g.kW, Cg}).permute({0, 1, 4, 2, 3}).reshape(weight_size).contiguous();
  return {grad_weight, grad_bias};
}

}  // namespace rnnkern
