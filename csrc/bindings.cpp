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
  m.def("max_unpool_backward", &rnnkern::max_unpool_backward, "unpool backward (gather)",
        py::arg("grad_output"), py::arg("indices"), py::arg("mode"), py::arg("input_size"),
        py::arg("kernel"), py::arg("stride"), py::arg("padding"));
}
