// Autograd for rnnkern::conv2d_forward / conv2d_backward_input / conv2d_backward_weight. The
// forward's backward calls the two backward ops; those are linear in each tensor argument, so
// their own backwards are the three ops again (double backward works):
//   backward_input(gy, W) = D(gy, W):   d/dgy = forward(ggx, W),        d/dW = backward_weight(gy, ggx)
//   backward_weight(gy, x) = (gW, gb):  d/dgy = forward(x, ggW) + ggb,  d/dx = backward_input(gy, ggW)
#include "../conv_common.h"
#include "autograd_common.h"

namespace rnnkern {
namespace {

// stride / padding / dilation / groups, as saved by every conv formula.
struct ConvArgs {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
  void save(AutogradContext* ctx) const {
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
  }
  static ConvArgs load(AutogradContext* ctx) {
    const auto& d = ctx->saved_data;
    return {d.at("stride").toIntVector(), d.at("padding").toIntVector(), d.at("dilation").toIntVector(),
            d.at("groups").toInt()};
  }
};

class Conv2dForward : public torch::autograd::Function<Conv2dForward> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups) {
    ctx->save_for_backward({input, weight});
    ConvArgs{stride.vec(), padding.vec(), dilation.vec(), groups}.save(ctx);
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call::conv2d_forward(input, weight, bias, stride, padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1];
    const at::Tensor grad_output = grad_output_in_layout_of(grads[0], input);
    const ConvArgs a = ConvArgs::load(ctx);
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const bool need_b = ctx->saved_data.at("has_bias").toBool() && ctx->needs_input_grad(2);
    at::Tensor gx, gw, gb;
    if (need_x)
      gx = grad_input_in_layout_of(call::conv2d_backward_input(grad_output, weight, input.sym_sizes(), a.stride,
                                                               a.padding, a.dilation, a.groups),
                                   input);
    if (need_w) {
      std::tie(gw, gb) = call::conv2d_backward_weight(grad_output, input, weight.sym_sizes(), a.stride, a.padding,
                                                      a.dilation, a.groups, need_b);
      if (!need_b) gb = at::Tensor();
    } else if (need_b) {
      gb = grad_output.sum({0, 2, 3});
    }
    return {gx, gw, gb, {}, {}, {}, {}};
  }
};

class Conv2dBackwardInput : public torch::autograd::Function<Conv2dBackwardInput> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& weight,
                            c10::SymIntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups) {
    ctx->save_for_backward({grad_output, weight});
    ConvArgs{stride.vec(), padding.vec(), dilation.vec(), groups}.save(ctx);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call::conv2d_backward_input(grad_output, weight, input_size, stride, padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &grad_output = saved[0], &weight = saved[1], &gg_input = grads[0];
    const ConvArgs a = ConvArgs::load(ctx);
    at::Tensor g_gy, g_w;
    if (ctx->needs_input_grad(0))
      g_gy = call::conv2d_forward(gg_input, weight, std::nullopt, a.stride, a.padding, a.dilation, a.groups);
    if (ctx->needs_input_grad(1))
      g_w = std::get<0>(call::conv2d_backward_weight(grad_output, gg_input, weight.sym_sizes(), a.stride, a.padding,
                                                     a.dilation, a.groups, false));
    return {g_gy, g_w, {}, {}, {}, {}, {}};
  }
};

class Conv2dBackwardWeight : public torch::autograd::Function<Conv2dBackwardWeight> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& input,
                               c10::SymIntArrayRef weight_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups, bool bias_grad) {
    ctx->save_for_backward({grad_output, input});
    ConvArgs{stride.vec(), padding.vec(), dilation.vec(), groups}.save(ctx);
    ctx->saved_data["bias_grad"] = bias_grad;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [gw, gb] = call::conv2d_backward_weight(grad_output, input, weight_size, stride, padding, dilation, groups,
                                                 bias_grad);
    return {gw, gb};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &grad_output = saved[0], &input = saved[1], &gg_weight = grads[0], &gg_bias = grads[1];
    const ConvArgs a = ConvArgs::load(ctx);
    at::Tensor g_gy, g_x;
    if (ctx->needs_input_grad(0)) {
      g_gy = call::conv2d_forward(input, gg_weight, std::nullopt, a.stride, a.padding, a.dilation, a.groups);
      if (ctx->saved_data.at("bias_grad").toBool() && gg_bias.numel() > 0) g_gy = g_gy + gg_bias.view({1, -1, 1, 1});
    }
    if (ctx->needs_input_grad(1))
      g_x = call::conv2d_backward_input(grad_output, gg_weight, input.sym_sizes(), a.stride, a.padding, a.dilation,
                                        a.groups);
    return {g_gy, g_x, {}, {}, {}, {}, {}, {}};
  }
};

at::Tensor conv2d_forward_autograd(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return apply_or_call<Conv2dForward>(call::conv2d_forward, input, weight, bias, stride, padding, dilation, groups);
}

at::Tensor conv2d_backward_input_autograd(const at::Tensor& grad_output, const at::Tensor& weight,
                                          c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return apply_or_call<Conv2dBackwardInput>(call::conv2d_backward_input,
                                            grad_output, weight, input_size, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor> conv2d_backward_weight_autograd(const at::Tensor& grad_output,
                                                                   const at::Tensor& input,
                                                                   c10::SymIntArrayRef weight_size,
                                                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                                                   at::IntArrayRef dilation, int64_t groups,
                                                                   bool bias_grad) {
  return apply_or_call<Conv2dBackwardWeight>(call::conv2d_backward_weight, grad_output, input, weight_size, stride,
                                             padding, dilation, groups, bias_grad);
}

}  // namespace
}  // namespace rnnkern

TORCH_LIBRARY_IMPL(rnnkern, Autograd, m) {
  m.impl("conv2d_forward", &rnnkern::conv2d_forward_autograd);
  m.impl("conv2d_backward_input", &rnnkern::conv2d_backward_input_autograd);
  m.impl("conv2d_backward_weight", &rnnkern::conv2d_backward_weight_autograd);
}
