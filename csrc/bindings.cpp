// The one place that lists every kernel rnnkern exports. Each entry dispatches on the device of
// its first tensor argument to csrc/cpu/<op>.cpp or csrc/cuda/<op>.cu.
#include <torch/extension.h>

#include "ops.h"

namespace rnnkern {
namespace {

#ifdef WITH_CUDA
#define RNNKERN_CUDA_BRANCH(name, ...) return name##_cuda(__VA_ARGS__);
#else
#define RNNKERN_CUDA_BRANCH(name, ...) \
  TORCH_CHECK(false, #name ": rnnkern was built without CUDA kernels (see `rnnkern info`)");
#endif
// Route to the CPU or CUDA kernel by the device of `t`.
#define RNNKERN_DISPATCH(name, t, ...)                                                     \
  [&]() {                                                                                \
    if ((t).is_cuda()) { RNNKERN_CUDA_BRANCH(name, __VA_ARGS__) }                        \
    TORCH_CHECK((t).is_cpu(), #name ": unsupported device ", (t).device());              \
    return name##_cpu(__VA_ARGS__);                                                      \
  }()

at::Tensor max_unpool_forward(const at::Tensor& input, const std::optional<at::Tensor>& indices, int64_t mode,
                              std::vector<int64_t> kernel, std::vector<int64_t> stride,
                              std::vector<int64_t> padding, std::vector<int64_t> output_size) {
  return RNNKERN_DISPATCH(max_unpool_forward, input, input, indices, mode, kernel, stride, padding, output_size);
}

at::Tensor max_unpool_backward(const at::Tensor& grad_output, const std::optional<at::Tensor>& indices,
                               int64_t mode, std::vector<int64_t> input_size, std::vector<int64_t> kernel,
                               std::vector<int64_t> stride, std::vector<int64_t> padding) {
  return RNNKERN_DISPATCH(max_unpool_backward, grad_output, grad_output, indices, mode, input_size, kernel,
                          stride, padding);
}

std::tuple<at::Tensor, at::Tensor> rnn_forward(const at::Tensor& input, const at::Tensor& hx, const at::Tensor& w_ih,
                                               const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                               const std::optional<at::Tensor>& b_hh,
                                               const std::optional<at::Tensor>& lengths, bool relu) {
  return RNNKERN_DISPATCH(rnn_forward, input, input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_hn, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& output,
    const std::optional<at::Tensor>& lengths, bool relu, bool has_bias) {
  return RNNKERN_DISPATCH(rnn_backward, input, grad_output, grad_hn, input, hx, w_ih, w_hh, output, lengths, relu,
                          has_bias);
}

at::Tensor conv2d_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                          int64_t groups) {
  return RNNKERN_DISPATCH(conv2d_forward, input, input, weight, bias, stride, padding, dilation, groups);
}

at::Tensor conv2d_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                 std::vector<int64_t> input_size, std::vector<int64_t> stride,
                                 std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups) {
  return RNNKERN_DISPATCH(conv2d_backward_input, grad_output, grad_output, weight, input_size, stride, padding,
                          dilation, groups);
}

std::tuple<at::Tensor, at::Tensor> conv2d_backward_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                                          std::vector<int64_t> weight_size,
                                                          std::vector<int64_t> stride, std::vector<int64_t> padding,
                                                          std::vector<int64_t> dilation, int64_t groups,
                                                          bool bias_grad) {
  return RNNKERN_DISPATCH(conv2d_backward_weight, grad_output, grad_output, input, weight_size, stride, padding,
                          dilation, groups, bias_grad);
}

at::Tensor conv_transpose2d_forward(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, std::vector<int64_t> stride,
                                    std::vector<int64_t> padding, std::vector<int64_t> output_padding, int64_t groups,
                                    std::vector<int64_t> dilation) {
  return RNNKERN_DISPATCH(conv_transpose2d_forward, input, input, weight, bias, stride, padding, output_padding,
                          groups, dilation);
}

at::Tensor conv_transpose2d_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                           std::vector<int64_t> input_size, std::vector<int64_t> stride,
                                           std::vector<int64_t> padding, std::vector<int64_t> output_padding,
                                           int64_t groups, std::vector<int64_t> dilation) {
  return RNNKERN_DISPATCH(conv_transpose2d_backward_input, grad_output, grad_output, weight, input_size, stride,
                          padding, output_padding, groups, dilation);
}

std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward_weight(
    const at::Tensor& grad_output, const at::Tensor& input, std::vector<int64_t> weight_size,
    std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> output_padding, int64_t groups,
    std::vector<int64_t> dilation, bool bias_grad) {
  return RNNKERN_DISPATCH(conv_transpose2d_backward_weight, grad_output, grad_output, input, weight_size, stride,
                          padding, output_padding, groups, dilation, bias_grad);
}

}  // namespace
}  // namespace rnnkern

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rnnkern kernels (CPU + CUDA); use rnnkern.ops, not this module directly";
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("max_unpool_forward", &rnnkern::max_unpool_forward, "max/nearest/bed-of-nails unpool, forward",
        py::arg("input"), py::arg("indices"), py::arg("mode"), py::arg("kernel"), py::arg("stride"),
        py::arg("padding"), py::arg("output_size"));
  m.def("rnn_forward", &rnnkern::rnn_forward, "fused vanilla RNN over all steps: (output, h_n)",
        py::arg("input"), py::arg("hx"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"),
        py::arg("lengths"), py::arg("relu"));
  m.def("rnn_backward", &rnnkern::rnn_backward, "fused BPTT: (dinput, dhx, dw_ih, dw_hh, dbias)",
        py::arg("grad_output"), py::arg("grad_hn"), py::arg("input"), py::arg("hx"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("output"), py::arg("lengths"), py::arg("relu"), py::arg("has_bias"));
  m.def("rnn_cpu_step", &rnnkern::rnn_cpu_step, "the CPU recurrence step float32 runs on (for rnnkern info)");
  m.def("max_unpool_backward", &rnnkern::max_unpool_backward, "unpool backward (gather)",
        py::arg("grad_output"), py::arg("indices"), py::arg("mode"), py::arg("input_size"),
        py::arg("kernel"), py::arg("stride"), py::arg("padding"));
  m.def("conv2d_forward", &rnnkern::conv2d_forward, "dilated/grouped 2-D convolution, forward",
        py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("groups"));
  m.def("conv2d_backward_input", &rnnkern::conv2d_backward_input, "2-D convolution, grad of the input",
        py::arg("grad_output"), py::arg("weight"), py::arg("input_size"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("groups"));
  m.def("conv2d_backward_weight", &rnnkern::conv2d_backward_weight,
        "2-D convolution, grad of the weight (and bias)", py::arg("grad_output"), py::arg("input"),
        py::arg("weight_size"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        py::arg("bias_grad"));
  m.def("conv_transpose2d_forward", &rnnkern::conv_transpose2d_forward, "transposed 2-D convolution, forward",
        py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("stride"), py::arg("padding"),
        py::arg("output_padding"), py::arg("groups"), py::arg("dilation"));
  m.def("conv_transpose2d_backward_input", &rnnkern::conv_transpose2d_backward_input,
        "transposed 2-D convolution, grad of the input", py::arg("grad_output"), py::arg("weight"),
        py::arg("input_size"), py::arg("stride"), py::arg("padding"), py::arg("output_padding"), py::arg("groups"),
        py::arg("dilation"));
  m.def("conv_transpose2d_backward_weight", &rnnkern::conv_transpose2d_backward_weight,
        "transposed 2-D convolution, grad of the weight (and bias)", py::arg("grad_output"), py::arg("input"),
        py::arg("weight_size"), py::arg("stride"), py::arg("padding"), py::arg("output_padding"),
        py::arg("groups"), py::arg("dilation"), py::arg("bias_grad"));
}
