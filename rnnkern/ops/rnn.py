"""Fused vanilla-RNN ops: one layer, one direction, all time steps in one call.

`rnnkern::rnn_forward(input (T,B,I), hx (B,H), w_ih, w_hh, b_ih?, b_hh?, lengths?, relu)`
returns (output (T,B,H), h_n (B,H)); `rnnkern::rnn_backward` is the full BPTT. Both are
registered in C++ (csrc/bindings.cpp), with the autograd formula in csrc/autograd/rnn.cpp; their
fake (meta) implementations are here. Only the output sequence is saved for backward (plus the
tensors the caller already holds), nothing per step. Lengths (int64, CPU, non-increasing — PackedSequence order) make finished sequences keep
their state and emit zeros. Non-finite values propagate as in torch (no checks in the loop).

Inside torch.func transforms and forward-mode AD, `fused_rnn` runs the op through the Python
autograd.Function below instead (rnnkern.ops._transforms says why both exist): the fused BPTT for
first derivatives, as in C++, and an ATen recurrence for the rest (jvp, and the derivatives of the
BPTT itself), as C++'s double backward does.
"""
from __future__ import annotations

import torch

from rnnkern.ops import _ext  # loads _C, which registers torch.ops.rnnkern.*
from rnnkern.ops._transforms import (Static, call_below_autograd, fold_vmap_dim, jvp_by_reverse_mode, loop_vmap_dim,
                                     transform_active)


rnn_forward = torch.ops.rnnkern.rnn_forward.default


@torch.library.register_fake("rnnkern::rnn_forward")
def _(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu):
    T, B = input.shape[:2]
    H = w_hh.shape[0]
    return input.new_empty((T, B, H)), hx.new_empty((B, H))


rnn_backward = torch.ops.rnnkern.rnn_backward.default


@torch.library.register_fake("rnnkern::rnn_backward")
def _(grad_output, grad_hn, input, hx, w_ih, w_hh, output, lengths, relu, has_bias):
    # the kernels return fresh contiguous tensors, whatever the inputs' strides
    grad_b = w_hh.new_empty((w_hh.shape[0],) if has_bias else (0,))
    return (input.new_empty(input.shape), hx.new_empty(hx.shape), w_ih.new_empty(w_ih.shape),
            w_hh.new_empty(w_hh.shape), grad_b)


def fused_rnn(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu):
    """rnnkern::rnn_forward; inside torch.func transforms and forward-mode AD through _RnnFunction."""
    if transform_active():
        return _RnnFunction.apply(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, Static(relu))
    return rnn_forward(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu)


def _recurrence_in_aten(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu):
    """The op's forward as ATen ops, one step at a time (csrc/autograd/rnn.cpp's recurrence_in_aten):
    what the derivatives beyond the fused BPTT differentiate. Correct, not fast."""
    pre = input @ w_ih.t()
    if b_ih is not None:
        pre = pre + (b_ih + b_hh)
    live = None  # live[t][b]: step t is within sequence b's length
    if lengths is not None:
        T = input.shape[0]
        live = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2).to(input.device)
    h, outs = hx, []
    for t in range(input.shape[0]):
        z = pre[t] + h @ w_hh.t()
        h_new = torch.relu(z) if relu else torch.tanh(z)
        if live is None:
            h = h_new
            outs.append(h)
        else:  # finished sequences keep their state and emit zeros
            h = torch.where(live[t], h_new, h)
            outs.append(torch.where(live[t], h_new, torch.zeros_like(h_new)))
    out = torch.stack(outs) if outs else input.new_zeros((0, hx.shape[0], hx.shape[1]))
    return out, h


def _over_present(args, fn):
    """The tensors among args (absent biases are None), their positions, and fn as a function of
    just those tensors (the others passed as they are): what torch.func differentiates."""
    present = [i for i, a in enumerate(args) if a is not None]

    def f(*tensors):
        full = list(args)
        for i, t in zip(present, tensors):
            full[i] = t
        return fn(*full)

    return [args[i] for i in present], present, f


def _tangents_for(present, primals, tangents):
    """tangents at the present positions, zeros where forward-mode AD gave none."""
    return [tangents[i] if tangents[i] is not None else torch.zeros_like(p) for i, p in zip(present, primals)]


class _RnnFunction(torch.autograd.Function):
    """rnn_forward(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, *Static(relu))."""
    generate_vmap_rule = True

    @staticmethod
    def forward(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, static):
        return call_below_autograd(rnn_forward, input, hx, w_ih, w_hh, b_ih, b_hh, lengths, *static.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        *tensors, lengths, static = inputs
        # one list for both: vmap's generated rule keeps the batch dims of the last save only
        ctx.save_for_backward(*tensors, lengths, output[0])
        ctx.save_for_forward(*tensors, lengths, output[0])
        ctx.relu, = static.args

    @staticmethod
    def backward(ctx, grad_output, grad_hn):
        input, hx, w_ih, w_hh, b_ih, b_hh, lengths, output = ctx.saved_tensors
        dx, dh, dw_ih, dw_hh, db = _RnnGradFunction.apply(grad_output, grad_hn, input, hx, w_ih, w_hh, b_ih, b_hh,
                                                          output, lengths, Static(ctx.relu))
        if b_ih is None:
            return dx, dh, dw_ih, dw_hh, None, None, None, None
        return dx, dh, dw_ih, dw_hh, db, db.clone(), None, None  # two parameters never share a .grad

    @staticmethod
    def jvp(ctx, *tangents):
        *args, lengths, _ = ctx.saved_tensors
        primals, present, recurrence = _over_present(args, lambda *a: _recurrence_in_aten(*a, lengths, ctx.relu))
        return jvp_by_reverse_mode(recurrence, primals, _tangents_for(present, primals, tangents))


class _RnnGradFunction(torch.autograd.Function):
    """rnn_backward(grad_output, grad_hn, input, hx, w_ih, w_hh, output, lengths, *Static(relu)), with
    b_ih and b_hh as arguments too: the gradients do not read them, but their derivatives depend on them."""
    generate_vmap_rule = True

    @staticmethod
    def forward(grad_output, grad_hn, input, hx, w_ih, w_hh, b_ih, b_hh, output, lengths, static):
        relu, = static.args
        return call_below_autograd(rnn_backward, grad_output.contiguous(), grad_hn.contiguous(), input, hx, w_ih,
                                   w_hh, output, lengths, relu, b_ih is not None)

    @staticmethod
    def setup_context(ctx, inputs, output):
        *tensors, _, lengths, static = inputs  # (output is a function of the others)
        ctx.save_for_backward(*tensors, lengths)
        ctx.save_for_forward(*tensors, lengths)
        ctx.relu, = static.args  # (without biases the bias gradient is an empty placeholder, tangent and all)

    @staticmethod
    def _first_order(ctx):
        """_over_present of the BPTT in ATen ops, over (grad_output, grad_hn, input, hx, w_ih, w_hh,
        b_ih, b_hh)."""
        *args, lengths = ctx.saved_tensors

        def bptt(g_out, g_hn, *params):
            n = 6 if params[4] is not None else 4
            _, vjp_fn = torch.func.vjp(lambda *p: _recurrence_in_aten(*p, *params[n:], lengths, ctx.relu),
                                       *params[:n])
            grads = vjp_fn((g_out, g_hn))
            return (*grads[:4], grads[4] if n == 6 else g_out.new_zeros(0))  # (dx, dh, dw_ih, dw_hh, db)

        return _over_present(args, bptt)

    @staticmethod
    def backward(ctx, *cotangents):
        primals, present, bptt = _RnnGradFunction._first_order(ctx)
        _, vjp_fn = torch.func.vjp(bptt, *primals)
        grads = dict(zip(present, vjp_fn(cotangents)))
        return tuple(grads.get(i) for i in range(8)) + (None, None, None)

    @staticmethod
    def jvp(ctx, *tangents):
        primals, present, bptt = _RnnGradFunction._first_order(ctx)
        return jvp_by_reverse_mode(bptt, primals, _tangents_for(present, primals, tangents))


# vmap. With one set of weights the batch entries are more sequences: folded into B entry-minor,
# (b, entry) -> b * batch + entry, so lengths stay non-increasing. With a weight per entry, once
# per entry. The BPTT returns weight gradients summed over B, so it cannot fold: once per entry.
@torch.library.register_vmap("rnnkern::rnn_forward")
def _(info, in_dims, input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu):
    B = info.batch_size
    if any(d is not None for d in in_dims[2:]):
        return loop_vmap_dim(lambda *a: rnn_forward(*a, relu), B, in_dims[:7],
                             (input, hx, w_ih, w_hh, b_ih, b_hh, lengths))
    x = fold_vmap_dim(input, in_dims[0], B, 1, entry_major=False)
    h = fold_vmap_dim(hx, in_dims[1], B, 0, entry_major=False)
    lens = None if lengths is None else lengths.repeat_interleave(B)
    out, h_n = rnn_forward(x, h, w_ih, w_hh, b_ih, b_hh, lens, relu)
    n = h.shape[0] // B
    return (out.unflatten(1, (n, B)), h_n.unflatten(0, (n, B))), (2, 1)


@torch.library.register_vmap("rnnkern::rnn_backward")
def _(info, in_dims, grad_output, grad_hn, input, hx, w_ih, w_hh, output, lengths, relu, has_bias):
    return loop_vmap_dim(lambda *a: rnn_backward(*a, relu, has_bias), info.batch_size, in_dims[:8],
                         (grad_output, grad_hn, input, hx, w_ih, w_hh, output, lengths))


def cpu_step() -> str:
    """The recurrence step the CPU kernels run for float32 on this machine: "avx512 ..." (the
    register-blocked kernel of csrc/cpu/rnn.cpp) or "general (<why not>)" (MKL GEMM + ATen activation)."""
    return _ext._C.rnn_cpu_step()


def step_trace() -> tuple[str, torch.Tensor]:
    """(kernel, stamps) of the last persistent CUDA RNN launch made with RNNKERN_RNN_TRACE=1: which
    kernel ran ("" if none did: the general path) and its step stamps, a (2, 64, 8) int64 CPU
    tensor ((0, 64, 8) before any traced launch): the first and the last CTA, the first 64 steps;
    per step the global timer (ns) and the SM clock at its start, then the clock where each phase
    ended (csrc/cuda/rnn.cu, trace_stamp). A diagnostic of per-step time
    (scripts/rnn_step_trace.py); CUDA builds only."""
    if not getattr(_ext._C, "with_cuda", False):
        raise RuntimeError("rnnkern.ops.rnn.step_trace: this build has no CUDA kernels")
    return _ext._C.rnn_step_trace()
