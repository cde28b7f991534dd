// Autograd for rnnkern::conv_transpose2d_forward / _backward_input / _backward_weight. The
// forward's backward calls the two backward ops; those are bilinear in their two tensor
// arguments, so their own backwards are the three ops again (double backward works):
//   backward_input(gy, W) = conv2d(gy, W):  d/dgy = forward(ggx, W),         d/dW = backward_weight(gy, ggx)
//   backward_weight(gy, x) = (gW, gb):       d/dgy = forward(x, ggW, ggb),    d/dx = backward_input(gy, ggW)
#include "../conv_common.h"
#include "autograd_common.h"

namespace rnnkern {
namespace {

// stride / padding / output_padding / groups / dilation, as saved by every formula here.
struct ConvTArgs {
  std::vector<int64_t> stride, padding, output_padding;
  int64_t groups;
  std::vector<int64_t> dilation;
  void save(AutogradContext* ctx) const {
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["output_padding"] = output_padding;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["dilation"] = dilation;
  }
  static ConvTArgs load(AutogradContext* ctx) {
    const auto& d = ctx->saved_data;
    return {d.at("stride").toIntVector(), d.at("padding").toIntVector(), d.at("output_padding").toIntVector(),
            d.at("groups").toInt(), d.at("dilation").toIntVector()};
  }
};

class ConvT2dForward : public torch::autograd::Function<ConvT2dForward> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation) {
    ctx->save_for_backward({input, weight});
    ConvTArgs{stride.vec(), padding.vec(), output_padding.vec(), groups, dilation.vec()}.save(ctx);
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call::conv_transpose2d_forward(input, weight, bias, stride, padding, output_padding, groups, dilation);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1];
    const at::Tensor grad_output = grad_output_in_layout_of(grads[0], input);
    const ConvTArgs a = ConvTArgs::load(ctx);
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const bool need_b = ctx->saved_data.at("has_bias").toBool() && ctx->needs_input_grad(2);
    at::Tensor gx, gw, gb;
    if (need_x)
      gx = grad_input_in_layout_of(call::conv_transpose2d_backward_input(grad_output, weight, input.sym_sizes(),
                                                                         a.stride, a.padding, a.output_padding,
                                                                         a.groups, a.dilation),
                                   input);
    if (need_w || need_b) {
      std::tie(gw, gb) = call::conv_transpose2d_backward_weight(grad_output, input, weight.sym_sizes(), a.stride,
                                                                a.padding, a.output_padding, a.groups, a.dilation,
                                                                need_b);
      if (!need_w) gw = at::Tensor();
      if (!need_b) gb = at::Tensor();
    }
    return {gx, gw, gb, {}, {}, {}, {}, {}};
  }
};

class ConvT2dBackwardInput : public torch::autograd::Function<ConvT2dBackwardInput> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& weight,
                            c10::SymIntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation) {
    ctx->save_for_backward({grad_output, weight});
    ConvTArgs{stride.vec(), padding.vec(), output_padding.vec(), groups, dilation.vec()}.save(ctx);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call::conv_transpose2d_backward_input(grad_output, weight, input_size, stride, padding, output_padding,
                                                 groups, dilation);
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &grad_output = saved[0], &weight = saved[1], &ggx = grads[0];
    const ConvTArgs a = ConvTArgs::load(ctx);
    at::Tensor d_gy, d_w;
    if (ctx->needs_input_grad(0))
      d_gy = call::conv_transpose2d_forward(ggx, weight, std::nullopt, a.stride, a.padding, a.output_padding,
                                            a.groups, a.dilation);
    if (ctx->needs_input_grad(1))
      d_w = std::get<0>(call::conv_transpose2d_backward_weight(grad_output, ggx, weight.sym_sizes(), a.stride,
                                                               a.padding, a.output_padding, a.groups, a.dilation,
                                                               false));
    return {d_gy, d_w, {}, {}, {}, {}, {}, {}};
  }
};

class ConvT2dBackwardWeight : public torch::autograd::Function<ConvT2dBackwardWeight> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& input,
                               c10::SymIntArrayRef weight_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
                               bool bias_grad) {
    ctx->save_for_backward({grad_output, input});
    ConvTArgs{stride.vec(), padding.vec(), output_padding.vec(), groups, dilation.vec()}.save(ctx);
    ctx->saved_data["bias_grad"] = bias_grad;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [gw, gb] = call::conv_transpose2d_backward_weight(grad_output, input, weight_size, stride, padding,
                                                           output_padding, groups, dilation, bias_grad);
    return {gw, gb};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &grad_output = saved[0], &input = saved[1], &ggw = grads[0], &ggb = grads[1];
    const ConvTArgs a = ConvTArgs::load(ctx);
    at::Tensor d_gy, d_x;
    if (ctx->needs_input_grad(0)) {
      const bool with_bias = ctx->saved_data.at("bias_grad").toBool() && ggb.numel() > 0;
      d_gy = call::conv_transpose2d_forward(input, ggw, with_bias ? optional_tensor(ggb) : std::nullopt, a.stride,
                                            a.padding, a.output_padding, a.groups, a.dilation);
    }
    if (ctx->needs_input_grad(1))
      d_x = call::conv_transpose2d_backward_input(grad_output, ggw, input.sym_sizes(), a.stride, a.padding,
                                                  a.output_padding, a.groups, a.dilation);
    return {d_gy, d_x, {}, {}, {}, {}, {}, {}, {}};
  }
};

at::Tensor conv_transpose2d_forward_autograd(const at::Tensor& input, const at::Tensor& weight,
                                             const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                             at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                             at::IntArrayRef dilation) {
  return apply_or_call<ConvT2dForward>(call::conv_transpose2d_forward,
                                       input, weight, bias, stride, padding, output_padding, groups, dilation);
}

at::Tensor conv_transpose2d_backward_input_autograd(const at::Tensor& grad_output, const at::Tensor& weight,
                                                    c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                                    at::IntArrayRef padding, at::IntArrayRef output_padding,
                                                    int64_t groups, at::IntArrayRef dilation) {
  return apply_or_call<ConvT2dBackwardInput>(call::conv_transpose2d_backward_input, grad_output, weight,
                                             input_size, stride, padding, output_padding, groups, dilation);
}

std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward_weight_autograd(
    const at::Tensor& grad_output, const at::Tensor& input, c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
    bool bias_grad) {
  return apply_or_call<ConvT2dBackwardWeight>(call::conv_transpose2d_backward_weight, grad_output, input,
                                              weight_size, stride, padding, output_padding, groups, dilation,
                                              bias_grad);
}

}  // namespace
}  // namespace rnnkern

TORCH_LIBRARY_IMPL(rnnkern, Autograd, m) {
  m.impl("conv_transpose2d_forward", &rnnkern::conv_transpose2d_forward_autograd);
  m.impl("conv_transpose2d_backward_input", &rnnkern::conv_transpose2d_backward_input_autograd);
  m.impl("conv_transpose2d_backward_weight", &rnnkern::conv_transpose2d_backward_weight_autograd);
}
