"""Unpooling ops: max-unpool (indices), bed-of-nails (implicit top-left index), nearest.

Layers: `rnnkern::max_unpool_forward` / `rnnkern::max_unpool_backward` are operators registered
in C++ (csrc/bindings.cpp) over the kernels, each given a fake (meta) implementation here, so
torch.compile and torch.export see opaque nodes. Their autograd formulas are in C++
(csrc/autograd/max_unpool.cpp); the backward op has one too, so double backward works (unpooling
is linear: the backward of the backward is the forward). Inside torch.func transforms and
forward-mode AD the same formulas run as the Python autograd.Functions below
(rnnkern.ops._transforms says why both exist); being linear, each op's jvp is the op itself.

Duplicate indices (several inputs pointing at one output element, impossible for indices from
max_pool with kernel <= stride): the input element with the highest flat position in its (n, c)
plane wins, on CPU and CUDA alike, deterministically. As in torch, the backward gathers
grad_output at every index, duplicates included.

check_indices (forward op, default True): an index outside the output plane raises IndexError
(through rnnkern.functional an ArgumentIndexError, also a RuntimeError as torch's error there).
On CUDA that costs reading a flag back (one host sync a call); False keeps the call asynchronous
and drops such elements instead, on both backends. Indices straight from max_pool need no check.
"""
from __future__ import annotations

import operator
from typing import Optional

import torch
from torch import Tensor

from rnnkern.ops import _ext  # noqa: F401  (loads _C, which registers torch.ops.rnnkern.*)
from rnnkern.ops._transforms import Static, call_below_autograd, fold_vmap_dim, in_transform, transform_active
from rnnkern.ops._validate import (ArgumentIndexError, ArgumentTypeError, ArgumentValueError, call_unchecked_first,
                                   check_same, check_supported_device, check_tensor, empty_like_layout, int_sizes,
                                   ntuple, plain_tensors)

MODE_INDICES, MODE_BED_OF_NAILS, MODE_NEAREST = 0, 1, 2


max_unpool_forward = torch.ops.rnnkern.max_unpool_forward.default
max_unpool_backward = torch.ops.rnnkern.max_unpool_backward.default


@torch.library.register_fake("rnnkern::max_unpool_forward")
def _(input, indices, mode, kernel, stride, padding, output_size, check_indices=True):
    n, c = input.shape[:2]
    return empty_like_layout(input, (n, c, *output_size))


@torch.library.register_fake("rnnkern::max_unpool_backward")
def _(grad_output, indices, mode, input_size, kernel, stride, padding):
    return empty_like_layout(grad_output, input_size)


class _UnpoolFunction(torch.autograd.Function):
    """max_unpool_forward(input, indices, *Static(mode, kernel, stride, padding, output_size, check_indices))."""
    generate_vmap_rule = True

    @staticmethod
    def forward(input, indices, static):
        return call_below_autograd(max_unpool_forward, input, indices, *static.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, indices, static = inputs
        ctx.save_for_backward(indices)
        ctx.save_for_forward(indices)
        ctx.args, ctx.input_size = static.args, list(input.shape)

    @staticmethod
    def backward(ctx, grad_output):
        mode, kernel, stride, padding, _, _ = ctx.args
        indices, = ctx.saved_tensors
        return _UnpoolGradFunction.apply(grad_output, indices,
                                         Static(mode, ctx.input_size, kernel, stride, padding)), None, None

    @staticmethod
    def jvp(ctx, d_input, _, __):
        indices, = ctx.saved_tensors
        return _UnpoolFunction.apply(d_input, indices, Static(*ctx.args))


class _UnpoolGradFunction(torch.autograd.Function):
    """max_unpool_backward(grad_output, indices, *Static(mode, input_size, kernel, stride, padding))."""
    generate_vmap_rule = True

    @staticmethod
    def forward(grad_output, indices, static):
        return call_below_autograd(max_unpool_backward, grad_output, indices, *static.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, indices, static = inputs
        ctx.save_for_backward(indices)
        ctx.save_for_forward(indices)
        ctx.args, ctx.output_size = static.args, list(grad_output.shape[2:])

    @staticmethod
    def backward(ctx, grad_grad_input):
        mode, _, kernel, stride, padding = ctx.args
        indices, = ctx.saved_tensors
        # unchecked: the adjoint of a gather that reads out-of-range indices as zero drops them
        return _UnpoolFunction.apply(grad_grad_input, indices,
                                     Static(mode, kernel, stride, padding, ctx.output_size, False)), None, None

    @staticmethod
    def jvp(ctx, d_grad_output, _, __):
        indices, = ctx.saved_tensors
        return _UnpoolGradFunction.apply(d_grad_output, indices, Static(*ctx.args))


# vmap: the batch entries are more images (values and indices folded into N)
@torch.library.register_vmap("rnnkern::max_unpool_forward")
def _(info, in_dims, input, indices, mode, kernel, stride, padding, output_size, check_indices=True):
    B, (xd, id_) = info.batch_size, in_dims[:2]
    x = fold_vmap_dim(input, xd, B, 0)
    idx = None if indices is None else fold_vmap_dim(indices, id_, B, 0)
    out = max_unpool_forward(x, idx, mode, kernel, stride, padding, output_size, check_indices)
    return out.unflatten(0, (B, x.shape[0] // B)), 0


@torch.library.register_vmap("rnnkern::max_unpool_backward")
def _(info, in_dims, grad_output, indices, mode, input_size, kernel, stride, padding):
    B, (gd, id_) = info.batch_size, in_dims[:2]
    idx = None if indices is None else fold_vmap_dim(indices, id_, B, 0)
    size = [B * input_size[0], *input_size[1:]]
    gx = max_unpool_backward(fold_vmap_dim(grad_output, gd, B, 0), idx, mode, size, kernel, stride, padding)
    return gx.unflatten(0, (B, input_size[0])), 0


# ----------------------------------------------------------------------------------------------
# Validation + shape logic (torch's semantics), used by rnnkern.functional.

def unpool_output_size(op: str, input: Tensor, kernel: list[int], stride: list[int], padding: list[int],
                       output_size) -> list[int]:
    """torch.nn.functional's rule: default (in - 1) * s - 2p + k; a given size must lie strictly
    within (default - s, default + s)."""
    nd = len(kernel)
    spatial = input.shape[-nd:]  # read once: each .shape read builds a new torch.Size
    default = [(spatial[d] - 1) * stride[d] + kernel[d] - 2 * padding[d] for d in range(nd)]
    if output_size is None:
        size = default
    else:
        # (SymInts as they are: int() would specialise a dynamic batch dim torch.export keeps symbolic)
        size = [s if isinstance(s, (int, torch.SymInt)) else operator.index(s)
                for s in (output_size if not isinstance(output_size, int) else [output_size])]
        if len(size) == nd + 2:
            size = size[2:]
        elif len(size) == nd + 1 and input.dim() == nd + 1:
            size = size[1:]
        if len(size) != nd:
            raise ArgumentValueError(f"{op}: output_size should be a sequence containing {nd} or {nd + 2} elements, "
                                     f"but it has a length of '{len(size)}'")
        for d in range(nd):
            lo, hi = default[d] - stride[d], default[d] + stride[d]
            if not lo < size[d] < hi:
                raise ArgumentValueError(f'{op}: invalid output_size "{list(size)}" '
                                         f'(dim {d} must be between {lo} and {hi})')
    if min(size) < 0:
        raise ArgumentValueError(f"{op}: output_size must contain non-negative spatial dimensions, got {size}")
    return size


def max_unpool(op: str, input: Tensor, indices: Optional[Tensor], mode: int, kernel_size, stride, padding,
               output_size, nd: int, check_indices: bool = True) -> Tensor:
    """Validate, reshape to 4-D (N, C, H, W), call the op, restore the caller's rank. As
    rnnkern.ops.conv.conv: the argument forms modules pass go to the op unchecked, and the checks
    run only once the kernels refuse, to name the argument."""
    args = op, input, indices, mode, kernel_size, stride, padding, output_size, nd, check_indices
    return call_unchecked_first(_run_max_unpool, common_max_unpool_args(*args), checked_max_unpool_args, *args)


def _cpu_autocast_to_fp32(input: Tensor) -> bool:
    """torch's CPU autocast runs max-unpooling of 16-bit values in fp32 (its CUDA autocast does not)."""
    return input.dtype in (torch.float16, torch.bfloat16) and input.is_cpu and torch.is_autocast_enabled("cpu")


def common_max_unpool_args(op: str, input, indices, mode: int, kernel_size, stride, padding, output_size, nd: int,
                           check_indices) -> Optional[tuple]:
    """checked_max_unpool_args' result without the checks the kernels repeat, for plain tensors and
    int or int-sequence sizes; None for anything else, under torch.compile and in torch.func
    transforms. The output size (torch's rule for a given one, which the kernels do not know) is
    computed as the checks do."""
    if type(check_indices) is not bool or not plain_tensors(input, indices) or in_transform():
        return None
    kernel, padding = int_sizes(kernel_size, nd), int_sizes(padding, nd)
    stride = kernel if stride is None else int_sizes(stride, nd)
    dim = input.dim()
    if kernel is None or stride is None or padding is None or not nd + 1 <= dim <= nd + 2:
        return None
    if _cpu_autocast_to_fp32(input):
        return None
    try:
        size = unpool_output_size(op, input, kernel, stride, padding, output_size)
    except Exception:  # noqa: BLE001  (the checks, in their order, say what is wrong)
        return None
    return input, indices, mode, kernel, stride, padding, size, nd, check_indices, dim == nd + 1


def checked_max_unpool_args(op: str, input: Tensor, indices: Optional[Tensor], mode: int, kernel_size, stride,
                            padding, output_size, nd: int, check_indices) -> tuple:
    """Every argument check, with errors naming the argument; returns (input, indices, mode, kernel,
    stride, padding, output size, nd, check_indices, unbatched) for _run_max_unpool."""
    if not isinstance(check_indices, bool):
        raise ArgumentTypeError(f"{op}: check_indices must be a bool, got {type(check_indices).__name__}")
    check_tensor(op, "input", input, dims=(nd + 1, nd + 2), floating=True)
    check_supported_device(op, input)
    if _cpu_autocast_to_fp32(input):
        input = input.float()
    kernel = ntuple(op, "kernel_size", kernel_size, nd, minimum=1)
    stride = kernel if stride is None else ntuple(op, "stride", stride, nd, minimum=1)
    padding = ntuple(op, "padding", padding, nd, minimum=0)
    if indices is not None:
        check_tensor(op, "indices", indices)
        if indices.dtype != torch.int64:
            raise ArgumentTypeError(f"{op}: indices must be int64 (as returned by max_pool{nd}d), got {indices.dtype}")
        if indices.shape != input.shape:
            raise ArgumentValueError(f"{op}: indices shape {tuple(indices.shape)} must equal input shape "
                                     f"{tuple(input.shape)}")
        check_same(op, "input", input, "indices", indices, dtype=False)
    size = unpool_output_size(op, input, kernel, stride, padding, output_size)
    return input, indices, mode, kernel, stride, padding, size, nd, check_indices, input.dim() == nd + 1


def _run_max_unpool(input: Tensor, indices: Optional[Tensor], mode: int, kernel: list[int], stride: list[int],
                    padding: list[int], size: list[int], nd: int, check_indices: bool, unbatched: bool) -> Tensor:
    x, idx = (input.unsqueeze(0), None if indices is None else indices.unsqueeze(0)) if unbatched else (input, indices)
    if nd == 1:  # (N, C, L) -> (N, C, 1, L)
        x = x.unsqueeze(2)
        idx = None if idx is None else idx.unsqueeze(2)
        kernel, stride, padding, size = [1] + kernel, [1] + stride, [0] + padding, [1] + size
    args = (mode, kernel, stride, padding, size, check_indices)
    try:
        out = _UnpoolFunction.apply(x, idx, Static(*args)) if transform_active() else max_unpool_forward(x, idx, *args)
    except IndexError as error:  # an index outside its plane: also a RuntimeError, which torch raises there
        raise ArgumentIndexError(str(error)) from None
    if nd == 1:
        out = out.squeeze(2)
    return out.squeeze(0) if unbatched else out
