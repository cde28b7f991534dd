// Every kernel entry point rnnkern exports, per backend. bindings.cpp dispatches on device.
#pragma once
#include <ATen/ATen.h>
#include <optional>

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
at::Tensor max_unpool_forward_cpu(const at::Tensor& input, const std::optional<at::Tensor>& indices,
                                  int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef output_size);
at::Tensor max_unpool_backward_cpu(const at::Tensor& grad_output, const std::optional<at::Tensor>& indices,
                                   int64_t mode, at::IntArrayRef input_size, at::IntArrayRef kernel,
                                   at::IntArrayRef stride, at::IntArrayRef padding);
#ifdef WITH_CUDA
at::Tensor max_unpool_forward_cuda(const at::Tensor& input, const std::optional<at::Tensor>& indices,
                                   int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef output_size);
at::Tensor max_unpool_backward_cuda(const at::Tensor& grad_output, const std::optional<at::Tensor>& indices,
                                    int64_t mode, at::IntArrayRef input_size, at::IntArrayRef kernel,
                                    at::IntArrayRef stride, at::IntArrayRef padding);
#endif

}  // namespace rnnkern
