// Every kernel entry point rnnkern exports, per backend. bindings.cpp dispatches on device.
#pragma once
#include <ATen/ATen.h>
#include <optional>
#include <string>
#include <tuple>

namespace rnnkern {

// ---- unpooling (csrc/cpu/max_unpool.cpp, csrc/cuda/max_unpool.cu) ----
// mode: how each input element finds its output position inside its window.
enum class UnpoolMode : int64_t {
  kIndices = 0,     // max-unpool: flat per-plane output index read from `indices`
  kBedOfNails = 1,  // implicit index: the window's top-left element
  kNearest = 2,     // every element of the window receives the value
};

// input (N, C, H, W); indices same shape, int64 (kIndices only). Output (N, C, out_h, out_w),
// channels_last when the input is channels_last-contiguous, else contiguous.
// check_indices: raise IndexError on an index outside [0, out_h * out_w) (on CUDA that reads a
// flag back: one host sync); false drops such elements instead (their values go nowhere).
at::Tensor max_unpool_forward_cpu(const at::Tensor& input, const std::optional<at::Tensor>& indices,
                                  int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef output_size, bool check_indices);
at::Tensor max_unpool_backward_cpu(const at::Tensor& grad_output, const std::optional<at::Tensor>& indices,
                                   int64_t mode, at::IntArrayRef input_size, at::IntArrayRef kernel,
                                   at::IntArrayRef stride, at::IntArrayRef padding);
#ifdef WITH_CUDA
at::Tensor max_unpool_forward_cuda(const at::Tensor& input, const std::optional<at::Tensor>& indices,
                                   int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef output_size, bool check_indices);
at::Tensor max_unpool_backward_cuda(const at::Tensor& grad_output, const std::optional<at::Tensor>& indices,
                                    int64_t mode, at::IntArrayRef input_size, at::IntArrayRef kernel,
                                    at::IntArrayRef stride, at::IntArrayRef padding);
#endif

// ---- fused vanilla RNN, one layer, one direction (csrc/cpu/rnn.cpp, csrc/cuda/rnn.cu) ----
// input (T, B, I), hx (B, H), w_ih (H, I), w_hh (H, H), biases (H) or none, lengths: optional
// int64 CPU (B), non-increasing. Returns output (T, B, H) (zero past each length) and h_n (B, H).
std::tuple<at::Tensor, at::Tensor> rnn_forward_cpu(const at::Tensor& input, const at::Tensor& hx,
                                                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                   const std::optional<at::Tensor>& b_ih,
                                                   const std::optional<at::Tensor>& b_hh,
                                                   const std::optional<at::Tensor>& lengths, bool relu);
// Returns grad_input, grad_hx, grad_w_ih, grad_w_hh, grad_bias (the same for b_ih and b_hh).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& grad_hn, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& output,
    const std::optional<at::Tensor>& lengths, bool relu, bool has_bias);
// Which recurrence step the CPU kernels use for float32 here ("avx512 ..." or "general (why)").
std::string rnn_cpu_step();
#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor> rnn_forward_cuda(const at::Tensor& input, const at::Tensor& hx,
                                                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                    const std::optional<at::Tensor>& b_ih,
                                                    const std::optional<at::Tensor>& b_hh,
                                                    const std::optional<at::Tensor>& lengths, bool relu);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_hn, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& output,
    const std::optional<at::Tensor>& lengths, bool relu, bool has_bias);
// The last persistent-kernel launch made with RNNKERN_RNN_TRACE=1: which kernel ran ("" if none
// did) and its step stamps, (2 CTAs, steps, slots) int64 on the CPU (csrc/cuda/rnn.cu, trace_stamp).
std::tuple<std::string, at::Tensor> rnn_step_trace();
// One stage of the TMA convolution form's copies, raw (csrc/cuda/conv.cu, tma_stage_probe_kernel; a
// diagnostic for the tests): the bytes of block (block_x, block_y, group)'s stage for tap `tap` and
// channels c0 ... of a channels_last forward (padding as four entries), its pixel tiles' width
// (0: row order) and tiles a row. cluster 2 or 4: the stages of block_x's cluster of CTAs
// (gather_tma_kernel's CM), one after the other.
std::tuple<at::Tensor, int64_t, int64_t> conv2d_tma_stage_probe_cuda(const at::Tensor& input, const at::Tensor& weight,
                                                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                                                     at::IntArrayRef dilation, int64_t groups,
                                                                     int64_t block_x, int64_t block_y, int64_t group,
                                                                     int64_t tap, int64_t c0, int64_t tile_n,
                                                                     int64_t cluster);
// The TMA grad_weight's MN-major wgmma steps alone (csrc/cuda/conv.cu, wgmma_mn_probe_kernel; a
// diagnostic for the tests): A^T B for bf16 A (64, 64) and B (64, 128 or 256) laid out in shared
// memory as wgrad_tma_kernel's copies leave them, fp32.
at::Tensor wgmma_mn_probe_cuda(const at::Tensor& a, const at::Tensor& b);
#endif

// ---- dilated convolution (csrc/cpu/conv.cpp, csrc/cuda/conv.cu; checks in csrc/conv_common.h) ----
// 2-D convolution with torch's semantics (cross-correlation); 1-D convolutions are views with H = 1.
// These signatures are published (the transposed convolution reuses them): keep them stable.
//   input    (N, C_in, H, W), any strides
//   weight   (C_out, C_in / groups, KH, KW), any strides
//   bias     (C_out) or none
//   stride   {sh, sw} >= 1;  dilation {dh, dw} >= 1;  groups >= 1 dividing C_in and C_out
//   padding  {ph, pw} (symmetric) or {top, left, bottom, right} (asymmetric, e.g. 'same' with an
//            even effective kernel), all >= 0
//   output   (N, C_out, OH, OW), OH = (H + top + bottom - dh * (KH - 1) - 1) / sh + 1 (same for W)
// Layout rule (rnnkern.ops._validate.channels_last_output): the result is channels_last when the
// first tensor argument (input / grad_output) is channels_last-contiguous and not contiguous,
// else contiguous. grad_weight is always contiguous. All results are deterministic.
//
// conv2d_backward_input: grad_input of size input_size (N, C_in, H, W). input_size may exceed the
// smallest input giving grad_output's size as long as the output-size formula above still maps
// it to grad_output's (OH, OW) (a transposed convolution's output_padding); elements no window
// reads get 0.
// conv2d_backward_weight: (grad_weight of size weight_size, grad_bias (C_out)); grad_bias is an
// empty tensor of size (0) when bias_grad is false.
at::Tensor conv2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              int64_t groups);
at::Tensor conv2d_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                     at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups);
std::tuple<at::Tensor, at::Tensor> conv2d_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                                              at::IntArrayRef weight_size, at::IntArrayRef stride,
                                                              at::IntArrayRef padding, at::IntArrayRef dilation,
                                                              int64_t groups, bool bias_grad);
#ifdef WITH_CUDA
at::Tensor conv2d_forward_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups);
at::Tensor conv2d_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                      at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups);
std::tuple<at::Tensor, at::Tensor> conv2d_backward_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                                               at::IntArrayRef weight_size, at::IntArrayRef stride,
                                                               at::IntArrayRef padding, at::IntArrayRef dilation,
                                                               int64_t groups, bool bias_grad);
#endif

// ---- transposed convolution (csrc/cpu/conv_transpose.cpp, csrc/cuda/conv_transpose.cu) ----
// torch's conv_transpose2d semantics; 1-D is the H == 1 view. input (N, C_in, H, W), weight
// (C_in, C_out/groups, kH, kW), bias (C_out) or none; stride/padding/output_padding/dilation {h, w};
// output (N, C_out, OH, OW), OH = (H - 1) sH - 2 pH + dH (kH - 1) + opH + 1. Layout rule as above
// (channels_last result iff the first tensor argument is channels_last and not contiguous);
// grad_weight contiguous; deterministic (no float atomics). backward_weight returns
// (grad_weight, grad_bias), grad_bias of size (0) when bias_grad is false.
struct ConvT2dGeometry {
  int64_t N, Cin, H, W, Cout, G, kH, kW, sH, sW, pH, pW, opH, opW, dH, dW, OH, OW;
  int64_t cin_g() const { return Cin / G; }
  int64_t cout_g() const { return Cout / G; }
  // The convolution with this stride / padding / dilation maps the output size back to the input
  // size exactly, so grad_input / grad_weight are ordinary conv passes (false when
  // output_padding >= stride, which torch allows while it is below the dilation).
  bool conv_maps_back() const {
    return (OH + 2 * pH - dH * (kH - 1) - 1) / sH + 1 == H && (OW + 2 * pW - dW * (kW - 1) - 1) / sW + 1 == W;
  }
};
// Checks sizes and arguments (errors name the op and the argument); defined in the CPU file.
ConvT2dGeometry conv_transpose2d_geometry(const char* op, at::IntArrayRef input_size, at::IntArrayRef weight_size,
                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation);
// grad_output must be (N, C_out, OH, OW) for geometry g; defined in the CPU file.
void check_conv_transpose2d_grad_output(const char* op, const ConvT2dGeometry& g, const at::Tensor& grad_output);
at::Tensor conv_transpose2d_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                        at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                        at::IntArrayRef dilation);
at::Tensor conv_transpose2d_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                               at::IntArrayRef input_size, at::IntArrayRef stride,
                                               at::IntArrayRef padding, at::IntArrayRef output_padding,
                                               int64_t groups, at::IntArrayRef dilation);
std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward_weight_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef weight_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
    bool bias_grad);
#ifdef WITH_CUDA
at::Tensor conv_transpose2d_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                         at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                         at::IntArrayRef dilation);
at::Tensor conv_transpose2d_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                                at::IntArrayRef input_size, at::IntArrayRef stride,
                                                at::IntArrayRef padding, at::IntArrayRef output_padding,
                                                int64_t groups, at::IntArrayRef dilation);
std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward_weight_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef weight_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
    bool bias_grad);
// Defined in csrc/cuda/conv.cu: the transposed convolution's forward as one cuBLAS product where it
// is one (conv_transpose2d_is_gemm, conv_gemm.h) and RNNKERN_CONV_GEMM allows: writes `output`
// (allocated, (N, C_out, OH, OW), dense in the input's layout) and returns true; false (nothing
// written) otherwise.
bool conv_transpose2d_forward_gemm_cuda(const at::Tensor& input, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, const ConvT2dGeometry& g,
                                        at::Tensor& output);
// Defined in csrc/cuda/conv.cu: the transposed convolution's forward on the conv engine's
// implicit-GEMM gather kernel (conv2d's grad_input mapping with `input` as grad_output, output
// pixels enumerated by stride phase so only each phase's real taps are multiplied; tf32 / bf16 /
// fp16 tensor cores like conv2d), bias fused. Writes `output`, already allocated as (N, C_out, OH,
// OW) for geometry g in the layout rule's format; the caller has checked the arguments against g.
void conv_transpose2d_forward_gather_cuda(const at::Tensor& input, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias, const ConvT2dGeometry& g,
                                          at::Tensor& output);
// conv2d (stride 1, dilation 1) whose output channel c' is stored pixel-shuffled by `shuffle` into
// output (N, K / shuffle^2, OH * shuffle, OW * shuffle), in the input's layout; c' = (c, ph, pw)
// for NCHW, (group, ph, pw, c within the group) for channels_last; >= 8 input channels per group
// (the tiled kernel). Defined in csrc/cuda/conv.cu.
void conv2d_forward_shuffled_cuda(const at::Tensor& input, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, at::IntArrayRef padding, int64_t groups,
                                  int64_t shuffle, at::Tensor& output);
#endif

}  // namespace rnnkern
