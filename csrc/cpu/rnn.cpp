// Fused vanilla RNN (Elman) on the CPU: the whole time loop in C++ over MKL GEMMs and ATen's
// vectorised activations (see csrc/rnn_driver.h for the algorithm).
#include "../ops.h"
#include "../rnn_driver.h"

namespace rnnkern {

std::tuple<at::Tensor, at::Tensor> rnn_forward_cpu(const at::Tensor& input, const at::Tensor& hx,
                                                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                   const std::optional<at::Tensor>& b_ih,
                                                   const std::optional<at::Tensor>& b_hh,
                                                   const std::optional<at::Tensor>& lengths, bool relu) {
  const RnnShapes s = check_rnn_args("rnn_forward", input, hx, w_ih, w_hh, b_ih, b_hh);
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "rnn_forward: CPU kernels support float32 and float64, got ", input.scalar_type());
  return rnn_forward_general(input, hx, w_ih, w_hh, b_ih, b_hh, batch_sizes("rnn_forward", s, lengths), lengths,
                             relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& grad_hn, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& output,
    const std::optional<at::Tensor>& lengths, bool relu, bool has_bias) {
  const RnnShapes s = check_rnn_backward_args(grad_output, grad_hn, input, hx, w_ih, w_hh, output);
  return rnn_backward_general(grad_output, grad_hn, input, hx, w_ih, w_hh, output,
                              batch_sizes("rnn_backward", s, lengths), relu, has_bias);
}

}  // namespace rnnkern
