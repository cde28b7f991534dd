"""Fused vanilla-RNN ops: one layer, one direction, all time steps in one call.

`rnnkern::rnn_forward(input (T,B,I), hx (B,H), w_ih, w_hh, b_ih?, b_hh?, lengths?, relu)`
returns (output (T,B,H), h_n (B,H)); `rnnkern::rnn_backward` is the full BPTT. Only the
output sequence is saved for backward (plus the tensors the caller already holds), nothing per
step. Lengths (int64, CPU, non-increasing — PackedSequence order) make finished sequences keep
their state and emit zeros. Non-finite values propagate as in torch (no checks in the loop).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from rnnkern.ops._ext import _C


@torch.library.custom_op("rnnkern::rnn_forward", mutates_args=())
def rnn_forward(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                b_hh: Optional[Tensor], lengths: Optional[Tensor], relu: bool) -> tuple[Tensor, Tensor]:
    return tuple(_C.rnn_forward(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu))


@rnn_forward.register_fake
def _(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu):
    T, B = input.shape[:2]
    H = w_hh.shape[0]
    return input.new_empty((T, B, H)), hx.new_empty((B, H))


@torch.library.custom_op("rnnkern::rnn_backward", mutates_args=())
def rnn_backward(grad_output: Tensor, grad_hn: Tensor, input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor,
                 output: Tensor, lengths: Optional[Tensor], relu: bool,
                 has_bias: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return tuple(_C.rnn_backward(grad_output, grad_hn, input, hx, w_ih, w_hh, output, lengths, relu, has_bias))


@rnn_backward.register_fake
def _(grad_output, grad_hn, input, hx, w_ih, w_hh, output, lengths, relu, has_bias):
    # the kernels return fresh contiguous tensors, whatever the inputs' strides
    grad_b = w_hh.new_empty((w_hh.shape[0],) if has_bias else (0,))
    return (input.new_empty(input.shape), hx.new_empty(hx.shape), w_ih.new_empty(w_ih.shape),
            w_hh.new_empty(w_hh.shape), grad_b)


def _setup_context(ctx, inputs, output):
    input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu = inputs
    ctx.save_for_backward(input, hx, w_ih, w_hh, output[0], lengths, b_ih, b_hh)
    ctx.relu = relu
    ctx.has_bias = b_ih is not None


def _recurrence_in_aten(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu):
    """The op's forward as ATen ops, one autograd node per step: what double backward (a
    backward run with create_graph=True) differentiates. Correct, not fast."""
    act = torch.relu if relu else torch.tanh
    pre = input @ w_ih.t()
    if b_ih is not None:
        pre = pre + (b_ih + b_hh)
    live = None if lengths is None else \
        torch.arange(input.shape[0]).unsqueeze(1).lt(lengths.unsqueeze(0)).unsqueeze(2).to(input.device)
    h, outs = hx, []
    for t in range(input.shape[0]):
        h_new = act(pre[t] + h @ w_hh.t())
        if live is None:
            h = h_new
            outs.append(h)
        else:  # finished sequences keep their state and emit zeros
            h = torch.where(live[t], h_new, h)
            outs.append(torch.where(live[t], h_new, torch.zeros_like(h_new)))
    return (torch.stack(outs) if outs else input.new_zeros(0, *hx.shape)), h


def _backward(ctx, grad_output, grad_hn):
    input, hx, w_ih, w_hh, output, lengths, b_ih, b_hh = ctx.saved_tensors
    if grad_output is None:
        grad_output = torch.zeros_like(output)
    if grad_hn is None:
        grad_hn = torch.zeros_like(hx)
    if torch.is_grad_enabled():  # create_graph=True: gradients that are themselves differentiable
        with torch.enable_grad():
            leaves = (input, hx, w_ih, w_hh) + ((b_ih, b_hh) if ctx.has_bias else ())
            wanted = [t for t, need in zip(leaves, ctx.needs_input_grad) if need]
            out, h_n = _recurrence_in_aten(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, ctx.relu)
            got = iter(torch.autograd.grad((out, h_n), wanted, (grad_output, grad_hn), create_graph=True,
                                           allow_unused=True))
            grads = [next(got) if need else None for need in ctx.needs_input_grad[:len(leaves)]]
        return (*grads, *([None] * (8 - len(grads))))
    dx, dh, dw_ih, dw_hh, db = rnn_backward(grad_output.contiguous(), grad_hn.contiguous(), input, hx, w_ih, w_hh,
                                            output, lengths, ctx.relu, ctx.has_bias)
    if not ctx.has_bias:
        return dx, dh, dw_ih, dw_hh, None, None, None, None
    return dx, dh, dw_ih, dw_hh, db, db.clone(), None, None  # two parameters never share a .grad


torch.library.register_autograd("rnnkern::rnn_forward", _backward, setup_context=_setup_context)


def cpu_step() -> str:
    """The recurrence step the CPU kernels run for float32 on this machine: "avx512 ..." (the
    register-blocked kernel of csrc/cpu/rnn.cpp) or "general (<why not>)" (MKL GEMM + ATen activation)."""
    return _C.rnn_cpu_step()
