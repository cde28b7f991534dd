"""Fused vanilla-RNN ops: one layer, one direction, all time steps in one call.

`rnnkern::rnn_forward(input (T,B,I), hx (B,H), w_ih, w_hh, b_ih?, b_hh?, lengths?, relu)`
returns (output (T,B,H), h_n (B,H)); `rnnkern::rnn_backward` is the full BPTT. Both are
registered in C++ (csrc/bindings.cpp), with the autograd formula in csrc/autograd/rnn.cpp; their
fake (meta) implementations are here. Only the output sequence is saved for backward (plus the
tensors the caller already holds), nothing per step. Lengths (int64, CPU, non-increasing — PackedSequence order) make finished sequences keep
their state and emit zeros. Non-finite values propagate as in torch (no checks in the loop).
"""
from __future__ import annotations

import torch

from rnnkern.ops import _ext  # loads _C, which registers torch.ops.rnnkern.*


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
