// Dilated / strided / grouped 2-D convolution on the GPU (implicit GEMM). Work in progress:
// the entry points exist so that the extension links; they raise until the kernels land.
#include <ATen/ATen.h>

#include "../conv_common.h"
#include "../ops.h"

namespace rnnkern {

at::Tensor conv2d_forward_cuda(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                               at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t) {
  TORCH_CHECK(false, "conv2d_forward: CUDA kernel not implemented yet");
}
at::Tensor conv2d_backward_input_cuda(const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                      at::IntArrayRef, at::IntArrayRef, int64_t) {
  TORCH_CHECK(false, "conv2d_backward_input: CUDA kernel not implemented yet");
}
std::tuple<at::Tensor, at::Tensor> conv2d_backward_weight_cuda(const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                                                               at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                                               int64_t, bool) {
  TORCH_CHECK(false, "conv2d_backward_weight: CUDA kernel not implemented yet");
}

}  // namespace rnnkern
