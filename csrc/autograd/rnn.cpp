// Autograd for rnnkern::rnn_forward: the fused BPTT (rnn_backward) for the usual backward. Only
// the output sequence is saved beyond the tensors the caller already holds, nothing per step.
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>

#include "autograd_common.h"

namespace rnnkern {
namespace {

// The op's forward as ATen ops, one autograd node per step: what a backward run with
// create_graph=True differentiates (double backward). Correct, not fast.
std::tuple<at::Tensor, at::Tensor> recurrence_in_aten(const at::Tensor& input, const at::Tensor& hx,
                                                      const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                      const at::Tensor& b_ih, const at::Tensor& b_hh,
                                                      const at::Tensor& lengths, bool relu) {
  const int64_t T = input.size(0);
  at::Tensor pre = at::matmul(input, w_ih.t());
  if (b_ih.defined()) pre = pre + (b_ih + b_hh);
  at::Tensor live;  // live[t][b]: step t is within sequence b's length
  if (lengths.defined())
    live = at::arange(T, lengths.options()).unsqueeze(1).lt(lengths.unsqueeze(0)).unsqueeze(2).to(input.device());
  at::Tensor h = hx;
  std::vector<at::Tensor> outs;
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor z = pre[t] + at::matmul(h, w_hh.t());
    at::Tensor h_new = relu ? at::relu(z) : at::tanh(z);
    if (!live.defined()) {
      h = h_new;
      outs.push_back(h);
    } else {  // finished sequences keep their state and emit zeros
      h = at::where(live[t], h_new, h);
      outs.push_back(at::where(live[t], h_new, at::zeros_like(h_new)));
    }
  }
  at::Tensor out = outs.empty() ? input.new_zeros({0, hx.size(0), hx.size(1)}) : at::stack(outs);
  return {out, h};
}

class RnnForward : public torch::autograd::Function<RnnForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& hx,
                               const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                               const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& lengths,
                               bool relu) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [output, h_n] = call::rnn_forward(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu);
    const at::Tensor none;
    ctx->save_for_backward({input, hx, w_ih, w_hh, output, lengths.value_or(none), b_ih.value_or(none),
                            b_hh.value_or(none)});
    ctx->saved_data["relu"] = relu;
    return {output, h_n};
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &hx = saved[1], &w_ih = saved[2], &w_hh = saved[3], &output = saved[4],
                     &lengths = saved[5], &b_ih = saved[6], &b_hh = saved[7];
    const bool relu = ctx->saved_data.at("relu").toBool(), has_bias = b_ih.defined();
    const int n_leaves = has_bias ? 6 : 4;  // tensor arguments that take a gradient, in argument order
    if (at::GradMode::is_enabled()) {  // create_graph=True: gradients that are themselves differentiable
      const std::vector<at::Tensor> leaves = {input, hx, w_ih, w_hh, b_ih, b_hh};
      std::vector<at::Tensor> wanted;
      for (int i = 0; i < n_leaves; ++i)
        if (ctx->needs_input_grad(i)) wanted.push_back(leaves[i]);
      auto [out, h_n] = recurrence_in_aten(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu);
      const variable_list got = torch::autograd::grad({out, h_n}, wanted, {grads[0], grads[1]},
                                                      /*retain_graph=*/true, /*create_graph=*/true,
                                                      /*allow_unused=*/true);
      variable_list result(8);
      for (int i = 0, k = 0; i < n_leaves; ++i)
        if (ctx->needs_input_grad(i)) result[i] = got[k++];
      return result;
    }
    auto [dx, dh, dw_ih, dw_hh, db] = call::rnn_backward(grads[0].contiguous(), grads[1].contiguous(), input, hx,
                                                         w_ih, w_hh, output, optional_tensor(lengths), relu,
                                                         has_bias);
    if (!has_bias) return {dx, dh, dw_ih, dw_hh, {}, {}, {}, {}};
    return {dx, dh, dw_ih, dw_hh, db, db.clone(), {}, {}};  // two parameters never share a .grad
  }
};

std::tuple<at::Tensor, at::Tensor> rnn_forward_autograd(const at::Tensor& input, const at::Tensor& hx,
                                                        const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                        const std::optional<at::Tensor>& b_ih,
                                                        const std::optional<at::Tensor>& b_hh,
                                                        const std::optional<at::Tensor>& lengths, bool relu) {
  return apply_or_call<RnnForward>(call::rnn_forward, input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu);
}

}  // namespace
}  // namespace rnnkern

// rnn_backward has no formula of its own (a double backward differentiates recurrence_in_aten
// instead): differentiating a direct call of it raises, rather than silently giving no gradient.
TORCH_LIBRARY_IMPL(rnnkern, Autograd, m) {
  m.impl("rnn_forward", &rnnkern::rnn_forward_autograd);
  m.impl("rnn_backward", torch::autograd::autogradNotImplementedFallback());
}
