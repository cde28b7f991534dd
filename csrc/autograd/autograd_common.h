// Shared by the Autograd kernels in csrc/autograd/<op>.cpp.
//
// Why autograd is in C++: the GPU benchmark times a call from the host, and a Python autograd
// formula (torch.library.register_autograd) costs ~10 us on every call, grad or not, and ~30 us
// more when a graph is recorded (bench/NOTES.md, host overhead). Each formula here calls the ops
// through the dispatcher (`call::<op>`), never a kernel directly: a backward run with
// create_graph=True then records these calls too, which is what makes double backward work.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <type_traits>

namespace rnnkern {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// An undefined tensor (an absent optional argument, an unneeded gradient) as nullopt.
inline std::optional<at::Tensor> optional_tensor(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// Whether a call must go through its autograd Function: grad mode is on and a tensor argument
// requires grad, or an argument carries a forward-mode tangent (which the C++ Function then
// refuses with a clear error, as before). Arguments that are not tensors are ignored.
inline const at::Tensor* defined_or_null(const at::Tensor& t) { return t.defined() ? &t : nullptr; }
inline const at::Tensor* defined_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? defined_or_null(*t) : nullptr;
}
template <typename T>
const at::Tensor* defined_or_null(const T&) {  // sizes, flags, modes
  return nullptr;
}
template <typename... Args>
bool records_graph(const Args&... args) {
  const at::Tensor* ts[] = {defined_or_null(args)...};
  const bool grad_mode = at::GradMode::is_enabled();
  for (const at::Tensor* t : ts)
    if (t != nullptr && ((grad_mode && t->requires_grad()) || t->_fw_grad(/*level=*/0).defined())) return true;
  return false;
}

// The body of every Autograd kernel: Function::apply (the op's autograd Function) when the call
// records a graph, else `op` itself below the Autograd key, since Function::apply would still
// build a node and fill its saved data (~2-3 us of a ~7 us call). A two-output Function's
// variable_list becomes the op's tuple.
template <typename Function, typename Op, typename... Args>
auto apply_or_call(Op op, const Args&... args) -> decltype(op(args...)) {
  if (!records_graph(args...)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op(args...);
  }
  if constexpr (std::is_same_v<decltype(op(args...)), at::Tensor>) {
    return Function::apply(args...);
  } else {
    const variable_list out = Function::apply(args...);
    return {out[0], out[1]};
  }
}

// Note on `ctx->needs_input_grad(i)`: i counts only the tensor arguments that were present (an
// absent optional tensor has no edge), so the formulas index past an absent bias accordingly.

namespace call {

// The registered operator `rnnkern::<name>` with the C++ signature F (the schema's, SymInt kept).
template <typename F>
c10::TypedOperatorHandle<F> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<F>();
}

inline at::Tensor max_unpool_forward(const at::Tensor& input, const std::optional<at::Tensor>& indices, int64_t mode,
                                     at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                                     c10::SymIntArrayRef output_size, bool check_indices) {
  static const auto h = op<decltype(max_unpool_forward)>("rnnkern::max_unpool_forward");
  return h.call(input, indices, mode, kernel, stride, padding, output_size, check_indices);
}

inline at::Tensor max_unpool_backward(const at::Tensor& grad_output, const std::optional<at::Tensor>& indices,
                                      int64_t mode, c10::SymIntArrayRef input_size, at::IntArrayRef kernel,
                                      at::IntArrayRef stride, at::IntArrayRef padding) {
  static const auto h = op<decltype(max_unpool_backward)>("rnnkern::max_unpool_backward");
  return h.call(grad_output, indices, mode, input_size, kernel, stride, padding);
}

inline std::tuple<at::Tensor, at::Tensor> rnn_forward(const at::Tensor& input, const at::Tensor& hx,
                                                      const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                      const std::optional<at::Tensor>& b_ih,
                                                      const std::optional<at::Tensor>& b_hh,
                                                      const std::optional<at::Tensor>& lengths, bool relu) {
  static const auto h = op<decltype(rnn_forward)>("rnnkern::rnn_forward");
  return h.call(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_hn, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& output,
    const std::optional<at::Tensor>& lengths, bool relu, bool has_bias) {
  static const auto h = op<decltype(rnn_backward)>("rnnkern::rnn_backward");
  return h.call(grad_output, grad_hn, input, hx, w_ih, w_hh, output, lengths, relu, has_bias);
}

inline at::Tensor conv2d_forward(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  static const auto h = op<decltype(conv2d_forward)>("rnnkern::conv2d_forward");
  return h.call(input, weight, bias, stride, padding, dilation, groups);
}

inline at::Tensor conv2d_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                        c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  static const auto h = op<decltype(conv2d_backward_input)>("rnnkern::conv2d_backward_input");
  return h.call(grad_output, weight, input_size, stride, padding, dilation, groups);
}

inline std::tuple<at::Tensor, at::Tensor> conv2d_backward_weight(const at::Tensor& grad_output,
                                                                 const at::Tensor& input,
                                                                 c10::SymIntArrayRef weight_size,
                                                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                                                 at::IntArrayRef dilation, int64_t groups,
                                                                 bool bias_grad) {
  static const auto h = op<decltype(conv2d_backward_weight)>("rnnkern::conv2d_backward_weight");
  return h.call(grad_output, input, weight_size, stride, padding, dilation, groups, bias_grad);
}

inline at::Tensor conv_transpose2d_forward(const at::Tensor& input, const at::Tensor& weight,
                                           const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                           at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                           at::IntArrayRef dilation) {
  static const auto h = op<decltype(conv_transpose2d_forward)>("rnnkern::conv_transpose2d_forward");
  return h.call(input, weight, bias, stride, padding, output_padding, groups, dilation);
}

inline at::Tensor conv_transpose2d_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                                  c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                                  at::IntArrayRef padding, at::IntArrayRef output_padding,
                                                  int64_t groups, at::IntArrayRef dilation) {
  static const auto h = op<decltype(conv_transpose2d_backward_input)>("rnnkern::conv_transpose2d_backward_input");
  return h.call(grad_output, weight, input_size, stride, padding, output_padding, groups, dilation);
}

inline std::tuple<at::Tensor, at::Tensor> conv_transpose2d_backward_weight(
    const at::Tensor& grad_output, const at::Tensor& input, c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
    bool bias_grad) {
  static const auto h = op<decltype(conv_transpose2d_backward_weight)>("rnnkern::conv_transpose2d_backward_weight");
  return h.call(grad_output, input, weight_size, stride, padding, output_padding, groups, dilation, bias_grad);
}

}  // namespace call
}  // namespace rnnkern
