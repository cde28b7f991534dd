// Autograd for rnnkern::max_unpool_forward / max_unpool_backward. Unpooling is linear in its
// values: the backward of the forward is the gather (max_unpool_backward), and the backward of
// that gather is the forward again, so double backward works.
#include "autograd_common.h"

namespace rnnkern {
namespace {

// mode / kernel / stride / padding, as saved by both formulas.
struct UnpoolArgs {
  int64_t mode;
  std::vector<int64_t> kernel, stride, padding;
  void save(AutogradContext* ctx) const {
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
  }
  static UnpoolArgs load(AutogradContext* ctx) {
    const auto& d = ctx->saved_data;
    return {d.at("mode").toInt(), d.at("kernel").toIntVector(), d.at("stride").toIntVector(),
            d.at("padding").toIntVector()};
  }
};

class MaxUnpoolForward : public torch::autograd::Function<MaxUnpoolForward> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const std::optional<at::Tensor>& indices,
                            int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                            c10::SymIntArrayRef output_size, bool check_indices) {
    ctx->save_for_backward({indices.value_or(at::Tensor())});
    UnpoolArgs{mode, kernel.vec(), stride.vec(), padding.vec()}.save(ctx);
    ctx->saved_data["input_size"] = input.sym_sizes().vec();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call::max_unpool_forward(input, indices, mode, kernel, stride, padding, output_size, check_indices);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const UnpoolArgs a = UnpoolArgs::load(ctx);
    const at::Tensor grad_input =
        call::max_unpool_backward(grads[0], optional_tensor(ctx->get_saved_variables()[0]), a.mode,
                                  ctx->saved_data.at("input_size").toSymIntVector(), a.kernel, a.stride, a.padding);
    return {grad_input, {}, {}, {}, {}, {}, {}, {}};
  }
};

class MaxUnpoolBackward : public torch::autograd::Function<MaxUnpoolBackward> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output,
                            const std::optional<at::Tensor>& indices, int64_t mode, c10::SymIntArrayRef input_size,
                            at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding) {
    ctx->save_for_backward({indices.value_or(at::Tensor())});
    UnpoolArgs{mode, kernel.vec(), stride.vec(), padding.vec()}.save(ctx);
    ctx->saved_data["output_size"] = grad_output.sym_sizes().slice(2).vec();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call::max_unpool_backward(grad_output, indices, mode, input_size, kernel, stride, padding);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const UnpoolArgs a = UnpoolArgs::load(ctx);
    // unchecked: the adjoint of a gather that reads out-of-range indices as zero drops them
    const at::Tensor grad_grad_output =
        call::max_unpool_forward(grads[0], optional_tensor(ctx->get_saved_variables()[0]), a.mode, a.kernel, a.stride,
                                 a.padding, ctx->saved_data.at("output_size").toSymIntVector(),
                                 /*check_indices=*/false);
    return {grad_grad_output, {}, {}, {}, {}, {}, {}};
  }
};

at::Tensor max_unpool_forward_autograd(const at::Tensor& input, const std::optional<at::Tensor>& indices,
                                       int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride,
                                       at::IntArrayRef padding, c10::SymIntArrayRef output_size, bool check_indices) {
  return apply_or_call<MaxUnpoolForward>(call::max_unpool_forward, input, indices, mode, kernel, stride, padding,
                                         output_size, check_indices);
}

at::Tensor max_unpool_backward_autograd(const at::Tensor& grad_output, const std::optional<at::Tensor>& indices,
                                        int64_t mode, c10::SymIntArrayRef input_size, at::IntArrayRef kernel,
                                        at::IntArrayRef stride, at::IntArrayRef padding) {
  return apply_or_call<MaxUnpoolBackward>(call::max_unpool_backward,
                                          grad_output, indices, mode, input_size, kernel, stride, padding);
}

}  // namespace
}  // namespace rnnkern

TORCH_LIBRARY_IMPL(rnnkern, Autograd, m) {
  m.impl("max_unpool_forward", &rnnkern::max_unpool_forward_autograd);
  m.impl("max_unpool_backward", &rnnkern::max_unpool_backward_autograd);
}
