// The general fused vanilla-RNN path, shared by csrc/cpu/rnn.cpp and csrc/cuda/rnn.cu:
// the input projection for all T steps as ONE GEMM, then the recurrence in a C++ loop of one
// GEMM + one in-place activation per step (no Python, no per-step autograd nodes); backward
// runs the reverse recurrence the same way and the weight/input gradients as large GEMMs after it.
//
// Everything here is ATen ops, so each backend gets its own BLAS (MKL / cuBLAS) and vectorised
// elementwise kernels. The loops take the per-step recurrence as a Step, so csrc/cpu/rnn.cpp
// plugs in its register-blocked AVX-512 step; csrc/cuda/rnn.cu adds its persistent kernels.
//
// Variable lengths follow PackedSequence's convention: lengths are sorted non-increasing, so
// the sequences still running at step t are the prefix [0, bs[t]) of the batch — step t
// computes only those rows, outputs past a sequence's end are zero and its state stops there.
#pragma once
#include <ATen/ATen.h>
#include <optional>
#include <tuple>
#include <vector>

#include "env.h"

namespace rnnkern {

struct RnnShapes {
  int64_t T, B, I, H;
};

inline RnnShapes check_rnn_args(const char* op, const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                                const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                const std::optional<at::Tensor>& b_hh) {
  TORCH_CHECK(x.dim() == 3, op, ": input must be 3-D (T, B, input_size), got ", x.dim(), "-D");
  const RnnShapes s{x.size(0), x.size(1), x.size(2), w_hh.size(0)};
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(1) == s.H, op, ": weight_hh must be (H, H), got ", w_hh.sizes());
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == s.H && w_ih.size(1) == s.I, op, ": weight_ih must be (",
              s.H, ", ", s.I, "), got ", w_ih.sizes());
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == s.B && h0.size(1) == s.H, op, ": hx must be (", s.B, ", ", s.H,
              "), got ", h0.sizes());
  TORCH_CHECK(b_ih.has_value() == b_hh.has_value(), op, ": give both biases or neither");
  for (const at::Tensor* t : {&h0, &w_ih, &w_hh}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), op, ": all tensors must have the input's dtype ",
                x.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), op, ": all tensors must be on ", x.device(), ", got ", t->device());
  }
  if (b_ih.has_value()) {
    for (const at::Tensor* t : {&*b_ih, &*b_hh}) {
      TORCH_CHECK(t->dim() == 1 && t->size(0) == s.H, op, ": biases must be (", s.H, "), got ", t->sizes());
      TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(), op,
                  ": biases must match the input's dtype and device");
    }
  }
  return s;
}

inline RnnShapes check_rnn_backward_args(const at::Tensor& grad_output, const at::Tensor& grad_hn,
                                         const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                                         const at::Tensor& w_hh, const at::Tensor& out) {
  const RnnShapes s = check_rnn_args("rnn_backward", x, h0, w_ih, w_hh, std::nullopt, std::nullopt);
  TORCH_CHECK(grad_output.sizes() == out.sizes() && out.sizes() == at::IntArrayRef({s.T, s.B, s.H}),
              "rnn_backward: grad_output and output must be (T, B, H)");
  TORCH_CHECK(grad_hn.sizes() == h0.sizes(), "rnn_backward: grad_hn must be (B, H)");
  // (autograd always passes gradients like the outputs; a direct call may not, and the persistent
  // CUDA kernels would read a CPU pointer)
  for (const at::Tensor* t : {&grad_output, &grad_hn, &out})
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                "rnn_backward: grad_output, grad_hn and output must match the input's dtype (", x.scalar_type(),
                ") and device (", x.device(), "), got ", t->scalar_type(), " on ", t->device());
  return s;
}

// bs[t] = number of sequences with length > t. Without lengths every sequence runs all T steps.
inline std::vector<int64_t> batch_sizes(const char* op, const RnnShapes& s, const std::optional<at::Tensor>& lengths) {
  std::vector<int64_t> bs(s.T, s.B);
  if (!lengths.has_value()) return bs;
  TORCH_CHECK(lengths->device().is_cpu() && lengths->scalar_type() == at::kLong && lengths->dim() == 1 &&
                  lengths->size(0) == s.B,
              op, ": lengths must be a 1-D int64 CPU tensor of size B=", s.B);
  const at::Tensor len = lengths->contiguous();
  const int64_t* l = len.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < s.B; ++b) {
    TORCH_CHECK(l[b] >= 0 && l[b] <= s.T, op, ": lengths[", b, "] = ", l[b], " is outside [0, T=", s.T, "]");
    TORCH_CHECK(b == 0 || l[b] <= l[b - 1], op, ": lengths must be sorted in non-increasing order");
  }
  // sorted, so the sequences still running at step t are the first bs[t]: one pass, O(B + T)
  for (int64_t t = 0, b = s.B; t < s.T; ++t) {
    while (b > 0 && l[b - 1] <= t) --b;
    bs[t] = b;
  }
  return bs;
}

inline void activate_(at::Tensor& y, bool relu) { relu ? y.relu_() : y.tanh_(); }

// d <- d * act'(h), written from the activation's OUTPUT h (tanh' = 1 - h^2, relu' = [h > 0]).
inline void activation_grad_(at::Tensor& d, const at::Tensor& h, bool relu) {
  relu ? at::threshold_backward_out(d, d, h, 0) : at::tanh_backward_out(d, d, h);
}

// The driver's matrix products, through ATen (MKL / cuBLAS under torch's matmul flags).
// csrc/cuda/rnn.cu substitutes TF32 cuBLAS products when cudnn.allow_tf32 lets the RNN use TF32.
struct AtenGemm {
  // out = A B (+ add: a (cols) vector broadcast over the rows, or a matrix of out's shape)
  void operator()(at::Tensor& out, const at::Tensor& A, const at::Tensor& B, const at::Tensor& add = {}) const {
    if (add.defined()) {
      at::addmm_out(out, add, A, B);
    } else {
      at::mm_out(out, A, B);
    }
  }
  // out += A B
  void accumulate(at::Tensor& out, const at::Tensor& A, const at::Tensor& B) const { out.addmm_(A, B); }
  // A new tensor A B
  at::Tensor operator()(const at::Tensor& A, const at::Tensor& B) const { return at::mm(A, B); }
};

// The driver's products on one BLAS call C = A B + beta C (`Core`, a blas_plan.h gemm):
// csrc/cuda/rnn.cu's TF32 cuBLAS products, and their emulation in the CPU tests
// (csrc/cpu/blas_emulation.h).
template <class Core>
struct BetaGemm {
  void operator()(at::Tensor& out, const at::Tensor& A, const at::Tensor& B, const at::Tensor& add = {}) const {
    if (add.defined()) out.copy_(add);  // a bias row broadcasts over out's rows
    Core{}(out, A, B, add.defined() ? 1.f : 0.f);
  }
  void accumulate(at::Tensor& out, const at::Tensor& A, const at::Tensor& B) const { Core{}(out, A, B, 1.f); }
  at::Tensor operator()(const at::Tensor& A, const at::Tensor& B) const {
    at::Tensor out = at::empty({A.size(0), B.size(1)}, A.options());
    Core{}(out, A, B, 0.f);
    return out;
  }
};

// out2 (T*B, H) <- x W_ih^T + b_ih + b_hh for every step at once (one GEMM).
template <class Gemm = AtenGemm>
void rnn_input_projection(at::Tensor& out2, const at::Tensor& x, const at::Tensor& w_ih,
                          const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                          const Gemm& gemm = Gemm{}) {
  const at::Tensor x2 = x.reshape({x.size(0) * x.size(1), x.size(2)});
  gemm(out2, x2, w_ih.t(), b_ih.has_value() ? *b_ih + *b_hh : at::Tensor());
}

// h_n[b] = output[len_b - 1, b], or h0[b] for an empty sequence. lengths is on the CPU (batch_sizes
// checked it): the row of each last output and whether there is one are computed there and reach a
// GPU through pinned memory, asynchronously (a pageable copy would wait for the whole recurrence).
inline at::Tensor rnn_last_state(const at::Tensor& out, const at::Tensor& h0, const std::optional<at::Tensor>& lengths) {
  if (!lengths.has_value()) return out.select(0, out.size(0) - 1).clone();
  const int64_t B = out.size(1);
  const at::Tensor len = lengths->contiguous();
  at::Tensor host = at::empty({2, B}, at::TensorOptions().dtype(at::kLong).pinned_memory(out.is_cuda()));
  int64_t* rows = host.data_ptr<int64_t>();  // row 0: the last output's row of out as (T * B, H); row 1: len > 0
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = len.const_data_ptr<int64_t>()[b];
    rows[b] = (n > 0 ? n - 1 : 0) * B + b;
    rows[B + b] = n > 0;
  }
  const at::Tensor sel = host.to(out.device(), /*non_blocking=*/true);
  // (rows as T * B explicitly: a view with -1 cannot infer it when H = 0)
  return at::where(sel[1].gt(0).unsqueeze(1), out.view({out.size(0) * B, out.size(2)}).index_select(0, sel[0]), h0);
}

// The recurrence through ATen: one BLAS GEMM (MKL / cuBLAS) + one in-place activation per step.
// csrc/cpu/rnn.cpp plugs a register-blocked kernel into the same loops. A Step runs a run of
// consecutive steps that all have the same number of live rows (the loops below cut the sequence
// into such runs), so an implementation may keep its threads across the run.
struct AtenRecurrence {
  const at::Tensor& h0;
  const at::Tensor& w_hh;
  bool relu;

  // For t in [t0, t1): out[t, :rows] <- act(out[t, :rows] + h_{t-1}[:rows] W_hh^T), h_{-1} = h0;
  // out[t] holds the step's input projection (+ biases) on entry.
  void forward(at::Tensor& out, int64_t t0, int64_t t1, int64_t rows) const {
    for (int64_t t = t0; t < t1; ++t) {
      at::Tensor y = out.select(0, t).narrow(0, 0, rows);
      y.addmm_((t == 0 ? h0 : out.select(0, t - 1)).narrow(0, 0, rows), w_hh.t());
      activate_(y, relu);
    }
  }

  // For t = t1 - 1 down to t0: dz[t, :rows] <- (grad_out[t, :rows] + dz[t+1, :rows] W_hh) * act'(out[t, :rows])
  void backward(at::Tensor& dz, const at::Tensor& grad_out, const at::Tensor& out, int64_t t0, int64_t t1,
                int64_t rows) const {
    for (int64_t t = t1 - 1; t >= t0; --t) {
      at::Tensor d = dz.select(0, t).narrow(0, 0, rows);
      // beta = 1 reads grad_out into the GEMM: no separate copy
      at::addmm_out(d, grad_out.select(0, t).narrow(0, 0, rows), dz.select(0, t + 1).narrow(0, 0, rows), w_hh);
      activation_grad_(d, out.select(0, t).narrow(0, 0, rows), relu);
    }
  }
};

// Forward over all steps with a recurrence Step (AtenRecurrence's contract). Returns
// (output (T, B, H), h_n (B, H)).
template <class Step, class Gemm = AtenGemm>
std::tuple<at::Tensor, at::Tensor> rnn_forward_loop(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                                                    const std::optional<at::Tensor>& b_ih,
                                                    const std::optional<at::Tensor>& b_hh,
                                                    const std::vector<int64_t>& bs,
                                                    const std::optional<at::Tensor>& lengths, Step& step,
                                                    const Gemm& gemm = Gemm{}) {
  const int64_t T = x.size(0), B = x.size(1), H = w_ih.size(0);
  at::Tensor out = at::empty({T, B, H}, x.options());
  if (T == 0 || B == 0) return {out, h0.clone(at::MemoryFormat::Contiguous)};
  at::Tensor out2 = out.view({T * B, H});
  rnn_input_projection(out2, x, w_ih, b_ih, b_hh, gemm);
  for (int64_t t0 = 0, t1; t0 < T; t0 = t1) {  // runs of steps with the same live rows
    for (t1 = t0 + 1; t1 < T && bs[t1] == bs[t0];) ++t1;
    if (bs[t0] < B) out.narrow(0, t0, t1 - t0).narrow(1, bs[t0], B - bs[t0]).zero_();
    if (bs[t0] > 0) step.forward(out, t0, t1, bs[t0]);
  }
  return {out, rnn_last_state(out, h0, lengths)};
}

template <class Gemm = AtenGemm>
std::tuple<at::Tensor, at::Tensor> rnn_forward_general(const at::Tensor& x, const at::Tensor& h0,
                                                       const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                       const std::optional<at::Tensor>& b_ih,
                                                       const std::optional<at::Tensor>& b_hh,
                                                       const std::vector<int64_t>& bs,
                                                       const std::optional<at::Tensor>& lengths, bool relu,
                                                       const Gemm& gemm = Gemm{}) {
  AtenRecurrence step{h0, w_hh, relu};
  return rnn_forward_loop(x, h0, w_ih, b_ih, b_hh, bs, lengths, step, gemm);
}

// Everything after the reverse recurrence, as large GEMMs: given dz (T, B, H) = dL/d(pre-activation),
// return (grad_input, grad_hx, grad_w_ih, grad_w_hh, grad_bias).
template <class Gemm = AtenGemm>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_grads_from_dz(
    const at::Tensor& dz, const at::Tensor& grad_hn, const at::Tensor& x, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& out, const std::vector<int64_t>& bs,
    bool has_bias, const Gemm& gemm = Gemm{}) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_hh.size(0);
  at::Tensor grad_h0 = grad_hn.clone(at::MemoryFormat::Contiguous);  // an empty sequence passes dL/dh_n straight to h0
  if (T > 0 && bs[0] > 0) {
    at::Tensor g = grad_h0.narrow(0, 0, bs[0]);
    gemm(g, dz.select(0, 0).narrow(0, 0, bs[0]), w_hh);
  }
  const at::Tensor dz2 = dz.view({T * B, H});
  const at::Tensor x2 = x.reshape({T * B, I});
  at::Tensor grad_x = gemm(dz2, w_ih).view({T, B, I});
  at::Tensor grad_w_ih = gemm(dz2.t(), x2);
  // (T = 0: zeros, contiguous as the fake kernel says, whatever w_hh's strides)
  at::Tensor grad_w_hh = T > 0 ? gemm(dz.select(0, 0).t(), h0) : at::zeros(w_hh.sizes(), w_hh.options());
  if (T > 1) {  // explicit sizes: reshape cannot infer -1 when H = 0
    gemm.accumulate(grad_w_hh, dz.narrow(0, 1, T - 1).reshape({(T - 1) * B, H}).t(),
                    out.narrow(0, 0, T - 1).reshape({(T - 1) * B, H}));
  }
  at::Tensor grad_b = has_bias ? dz2.sum(0) : at::empty({0}, x.options());
  return {grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b};
}

// Full BPTT with a recurrence Step (AtenRecurrence's contract). Returns (grad_input, grad_hx,
// grad_w_ih, grad_w_hh, grad_bias); grad_bias is the gradient of both b_ih and b_hh (they enter
// the sum identically); an empty tensor when has_bias is false.
template <class Step, class Gemm = AtenGemm>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_loop(
    const at::Tensor& grad_out, const at::Tensor& grad_hn, const at::Tensor& x, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& out, const std::vector<int64_t>& bs,
    bool relu, bool has_bias, Step& step, const Gemm& gemm = Gemm{}) {
  const int64_t T = x.size(0), B = x.size(1), H = w_hh.size(0);
  // dz[t] = dL/d(pre-activation at step t); rows of finished sequences stay zero.
  at::Tensor dz = at::empty({T, B, H}, x.options());
  // First the rows that do not depend on step t+1, for every t: the sequences whose last step is
  // t (rows [live_next, live): dL/dh_n enters there) and the finished ones (zeros).
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t live = bs[t], live_next = t + 1 < T ? bs[t + 1] : 0;
    at::Tensor d = dz.select(0, t);
    if (live > live_next) {
      at::Tensor d_end = d.narrow(0, live_next, live - live_next);
      at::add_out(d_end, grad_out.select(0, t).narrow(0, live_next, live - live_next),
                  grad_hn.narrow(0, live_next, live - live_next));
      activation_grad_(d_end, out.select(0, t).narrow(0, live_next, live - live_next), relu);
    }
    if (live < B) d.narrow(0, live, B - live).zero_();
  }
  // Then the reverse recurrence on rows [0, bs[t+1]) of step t, in runs with the same row count.
  for (int64_t t1 = T - 1, t0; t1 > 0; t1 = t0) {  // steps t0 <= t < t1
    const int64_t rows = bs[t1];
    for (t0 = t1 - 1; t0 > 0 && bs[t0] == rows;) --t0;
    if (rows > 0) step.backward(dz, grad_out, out, t0, t1, rows);
  }
  return rnn_grads_from_dz(dz, grad_hn, x, h0, w_ih, w_hh, out, bs, has_bias, gemm);
}

template <class Gemm = AtenGemm>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_general(
    const at::Tensor& grad_out, const at::Tensor& grad_hn, const at::Tensor& x, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& out, const std::vector<int64_t>& bs,
    bool relu, bool has_bias, const Gemm& gemm = Gemm{}) {
  AtenRecurrence step{h0, w_hh, relu};
  return rnn_backward_loop(grad_out, grad_hn, x, h0, w_ih, w_hh, out, bs, relu, has_bias, step, gemm);
}

}  // namespace rnnkern
