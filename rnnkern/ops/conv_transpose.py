"""Transposed convolution (1-D and 2-D; 1-D runs as 2-D with H = 1), torch's exact semantics.

Layers: `rnnkern::conv_transpose2d_forward`, `rnnkern::conv_transpose2d_backward_input` and
`rnnkern::conv_transpose2d_backward_weight` are operators registered in C++ (csrc/bindings.cpp)
over the kernels (csrc/cpu/conv_transpose.cpp, csrc/cuda/conv_transpose.cu), each given a fake
(meta) implementation here, so torch.compile and torch.export see opaque nodes. Autograd is
registered in C++ on all three (csrc/autograd/conv_transpose.cpp, which writes out the formulas);
double backward works. Inside torch.func transforms and forward-mode AD the same formulas run as
Python autograd.Functions (rnnkern.ops._transforms), which torch.func accepts and which add a jvp.

Weight layout (C_in, C_out / groups, kH, kW), as torch. Layout rule of the ops
(rnnkern.ops._validate.channels_last_output): the forward output and grad_input are channels_last
when input / grad_output is; grad_weight is contiguous. Through autograd grad_input takes the
input's layout, as torch's (the backward makes grad_output dense in it first), and the functional
forward follows torch's rule for the weight's layout and for channels_last slices
(follow_weight_layout).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from rnnkern.ops import _ext  # noqa: F401  (loads _C, which registers torch.ops.rnnkern.*)
from rnnkern.ops._transforms import conv_family_functions, in_transform, register_conv_family_vmap, transform_active
from rnnkern.ops._validate import (ArgumentTypeError, ArgumentValueError, autocast_cast, call_unchecked_first,
                                   check_same, check_supported_device, check_tensor, empty_like_layout,
                                   follow_weight_layout, int_sizes, ntuple, plain_tensors)


def output_size(in_size: int, k: int, s: int, p: int, op: int, d: int) -> int:
    """torch's transposed-convolution output size along one dimension."""
    return (in_size - 1) * s - 2 * p + d * (k - 1) + op + 1


conv_transpose2d_forward = torch.ops.rnnkern.conv_transpose2d_forward.default


@torch.library.register_fake("rnnkern::conv_transpose2d_forward")
def _(input, weight, bias, stride, padding, output_padding, groups, dilation):
    oh = output_size(input.shape[2], weight.shape[2], stride[0], padding[0], output_padding[0], dilation[0])
    ow = output_size(input.shape[3], weight.shape[3], stride[1], padding[1], output_padding[1], dilation[1])
    return empty_like_layout(input, (input.shape[0], weight.shape[1] * groups, oh, ow))


conv_transpose2d_backward_input = torch.ops.rnnkern.conv_transpose2d_backward_input.default


@torch.library.register_fake("rnnkern::conv_transpose2d_backward_input")
def _(grad_output, weight, input_size, stride, padding, output_padding, groups, dilation):
    return empty_like_layout(grad_output, input_size)


conv_transpose2d_backward_weight = torch.ops.rnnkern.conv_transpose2d_backward_weight.default


@torch.library.register_fake("rnnkern::conv_transpose2d_backward_weight")
def _(grad_output, input, weight_size, stride, padding, output_padding, groups, dilation, bias_grad):
    gw = input.new_empty(weight_size)
    gb = input.new_empty((weight_size[1] * groups if bias_grad else 0,))
    return gw, gb


# The same formulas as Python autograd.Functions, for torch.func transforms and forward-mode AD
# (rnnkern.ops._transforms says why both exist).
conv_transpose2d_forward_for_transforms, _, _ = conv_family_functions(
    conv_transpose2d_forward, conv_transpose2d_backward_input, conv_transpose2d_backward_weight)
register_conv_family_vmap("rnnkern::conv_transpose2d_forward", "rnnkern::conv_transpose2d_backward_input",
                          "rnnkern::conv_transpose2d_backward_weight", conv_transpose2d_forward, conv_transpose2d_backward_input,
                          conv_transpose2d_backward_weight)


# ----------------------------------------------------------------------------------------------
# Validation + shape logic (torch's semantics), used by rnnkern.functional.

def _int(op: str, name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ArgumentTypeError(f"{op}: {name} must be an int, got {v!r}")
    return v


def conv_transpose(op: str, input: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, output_padding,
                   groups, dilation, nd: int) -> Tensor:
    """Validate, reshape to 4-D (N, C, H, W), call the op, restore the caller's rank. As
    rnnkern.ops.conv.conv: the argument forms modules pass go to the op unchecked, and the checks
    run only once the kernels refuse, to name the argument."""
    args = op, input, weight, bias, stride, padding, output_padding, groups, dilation, nd
    return call_unchecked_first(_run_conv_transpose, common_conv_transpose_args(*args), checked_conv_transpose_args,
                                *args)


def common_conv_transpose_args(op: str, input, weight, bias, stride, padding, output_padding, groups, dilation,
                               nd: int) -> Optional[tuple]:
    """checked_conv_transpose_args' result without its checks, for plain tensors and int or
    int-sequence sizes; None for anything else, under torch.compile and in torch.func transforms."""
    if type(groups) is not int or not plain_tensors(input, weight, bias) or in_transform():
        return None
    stride, padding = int_sizes(stride, nd), int_sizes(padding, nd)
    output_padding, dilation = int_sizes(output_padding, nd), int_sizes(dilation, nd)
    dim = input.dim()
    if (stride is None or padding is None or output_padding is None or dilation is None or weight.dim() != nd + 2
            or not nd + 1 <= dim <= nd + 2):
        return None
    input, weight, bias = autocast_cast(input, weight, bias)
    return input, weight, bias, stride, padding, output_padding, groups, dilation, nd, dim == nd + 1


def checked_conv_transpose_args(op: str, input: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding,
                                output_padding, groups, dilation, nd: int) -> tuple:
    """Every argument check, with errors naming the argument; returns (input, weight, bias, stride,
    padding, output_padding, groups, dilation, nd, unbatched) for _run_conv_transpose."""
    check_tensor(op, "input", input, dims=(nd + 1, nd + 2), floating=True)
    check_tensor(op, "weight", weight, dims=(nd + 2,), floating=True)
    check_supported_device(op, input)
    # torch runs transposed convolutions in the autocast dtype; so do we
    input, weight, bias = autocast_cast(input, weight, bias)
    check_same(op, "input", input, "weight", weight)
    if bias is not None:
        check_tensor(op, "bias", bias, dims=(1,), floating=True)
        check_same(op, "input", input, "bias", bias)
    groups = _int(op, "groups", groups)
    if groups < 1:
        raise ArgumentValueError(f"{op}: groups must be >= 1, got {groups}")
    stride = ntuple(op, "stride", stride, nd, minimum=1)
    if isinstance(padding, str):
        raise ArgumentValueError(f"{op}: padding must be an int or a tuple of ints (string padding such as "
                                 f"{padding!r} is not supported by transposed convolutions), got {padding!r}")
    padding = ntuple(op, "padding", padding, nd, minimum=0)
    output_padding = ntuple(op, "output_padding", output_padding, nd, minimum=0)
    dilation = ntuple(op, "dilation", dilation, nd, minimum=1)

    x_shape, w_shape = input.shape, weight.shape  # each .shape read builds a new torch.Size
    c_in = x_shape[-nd - 1]
    if w_shape[0] != c_in:
        raise ArgumentValueError(f"{op}: input has {c_in} channels but weight.size(0) is {weight.shape[0]} "
                                 f"(weight layout is (C_in, C_out/groups, *kernel), input shape {tuple(input.shape)}, "
                                 f"weight shape {tuple(weight.shape)})")
    if c_in % groups != 0:
        raise ArgumentValueError(f"{op}: input channels ({c_in}) must be divisible by groups ({groups})")
    c_out = w_shape[1] * groups
    if bias is not None and bias.shape[0] != c_out:
        raise ArgumentValueError(f"{op}: bias must have {c_out} elements (weight.size(1) * groups), "
                                 f"got {bias.shape[0]}")
    kernel = list(w_shape[2:])
    if min(kernel) < 1:
        raise ArgumentValueError(f"{op}: kernel size must be >= 1, got weight shape {tuple(weight.shape)}")
    if c_in == 0 or c_out == 0:  # (torch: "non-empty weight tensor expected")
        raise ArgumentValueError(f"{op}: weight must have non-zero sizes, got {tuple(weight.shape)}")
    for d in range(nd):
        if not (output_padding[d] < stride[d] or output_padding[d] < dilation[d]):
            raise ArgumentValueError(f"{op}: output_padding must be smaller than either stride or dilation, got "
                                     f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    unbatched = len(x_shape) == nd + 1
    # an empty batch returns an empty result wherever its sizes are not negative, as torch's does
    empty_batch = not unbatched and x_shape[0] == 0
    spatial = list(x_shape[-nd:])
    if min(spatial) < (0 if empty_batch else 1):
        raise ArgumentValueError(f"{op}: input spatial size must be >= 1, got input shape {tuple(input.shape)}")
    out = [output_size(spatial[d], kernel[d], stride[d], padding[d], output_padding[d], dilation[d])
           for d in range(nd)]
    if min(out) < (0 if empty_batch else 1):
        raise ArgumentValueError(f"{op}: computed output size {out} is too small (input {spatial}, kernel {kernel}, "
                                 f"stride {stride}, padding {padding}, dilation {dilation})")

    return input, weight, bias, stride, padding, output_padding, groups, dilation, nd, unbatched


def _run_conv_transpose(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int], padding: list[int],
                        output_padding: list[int], groups: int, dilation: list[int], nd: int,
                        unbatched: bool) -> Tensor:
    x = input.unsqueeze(0) if unbatched else input
    w = weight
    if nd == 1:  # (N, C, L) -> (N, C, 1, L); weight (C_in, C_out/g, k) -> (C_in, C_out/g, 1, k)
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        stride, padding, output_padding, dilation = [1] + stride, [0] + padding, [0] + output_padding, [1] + dilation
    x, cl_output = follow_weight_layout(x, w)
    args = (stride, padding, output_padding, groups, dilation)
    y = (conv_transpose2d_forward_for_transforms(x, w, bias, args) if transform_active()
         else conv_transpose2d_forward(x, w, bias, *args))
    if cl_output:
        y = y.contiguous(memory_format=torch.channels_last)
    if nd == 1:
        y = y.squeeze(2)
    return y.squeeze(0) if unbatched else y
