// Fused vanilla RNN (Elman) on CUDA.
//
// General path (any H, B, dtype): csrc/rnn_driver.h — one cuBLAS GEMM for the input projection
// of all steps, then per step one cuBLAS GEMM + one in-place activation on the current stream;
// backward likewise, with the weight/input gradients as large GEMMs at the end. Deterministic
// (no atomics). rnn_path() is the one place that will route shapes to persistent kernels.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "../ops.h"
#include "../rnn_driver.h"

namespace rnnkern {

std::tuple<at::Tensor, at::Tensor> rnn_forward_cuda(const at::Tensor& input, const at::Tensor& hx,
                                                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                    const std::optional<at::Tensor>& b_ih,
                                                    const std::optional<at::Tensor>& b_hh,
                                                    const std::optional<at::Tensor>& lengths, bool relu) {
  const RnnShapes s = check_rnn_args("rnn_forward", input, hx, w_ih, w_hh, b_ih, b_hh);
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  return rnn_forward_general(input, hx, w_ih, w_hh, b_ih, b_hh, batch_sizes("rnn_forward", s, lengths), lengths,
                             relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_hn, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& output,
    const std::optional<at::Tensor>& lengths, bool relu, bool has_bias) {
  const RnnShapes s = check_rnn_args("rnn_backward", input, hx, w_ih, w_hh, std::nullopt, std::nullopt);
  TORCH_CHECK(grad_output.sizes() == output.sizes() && output.sizes() == at::IntArrayRef({s.T, s.B, s.H}),
              "rnn_backward: grad_output and output must be (T, B, H)");
  TORCH_CHECK(grad_hn.sizes() == hx.sizes(), "rnn_backward: grad_hn must be (B, H)");
  const at::cuda::OptionalCUDAGuard guard(device_of(input));
  return rnn_backward_general(grad_output, grad_hn, input, hx, w_ih, w_hh, output,
                              batch_sizes("rnn_backward", s, lengths), relu, has_bias);
}

}  // namespace rnnkern
