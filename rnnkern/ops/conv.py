"""Dilated / strided / grouped convolution (1-D and 2-D; 1-D runs as 2-D with H = 1).

Layers: `rnnkern::conv2d_forward`, `rnnkern::conv2d_backward_input` and
`rnnkern::conv2d_backward_weight` are operators registered in C++ (csrc/bindings.cpp) over the
kernels (csrc/cpu/conv.cpp, csrc/cuda/conv.cu), each given a fake (meta) implementation here, so
torch.compile and torch.export see opaque nodes. Autograd is registered in C++ on all three
(csrc/autograd/conv.cpp): the forward's backward calls the two backward ops, and the backward ops
are linear in each argument, so their own backwards are convolutions again (double backward works).
Inside torch.func transforms and forward-mode AD the same formulas run as Python autograd.Functions
(rnnkern.ops._transforms), which torch.func accepts and which add a jvp.

Padding is always passed to the ops as four entries (top, left, bottom, right), so 'same' with
an even effective kernel (torch pads one extra row/column at the bottom/right) needs no F.pad:
the kernels read the extra padding as zeros.

Layout rule of the ops (rnnkern.ops._validate.channels_last_output): forward output and grad_input
are channels_last when input / grad_output is; grad_weight is contiguous. Through autograd
grad_input takes the input's layout, as torch's (the backward makes grad_output dense in it
first), and the functional forward follows torch's rule for the weight's layout and for
channels_last slices (follow_weight_layout).
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


def out_size(in_size: int, k: int, s: int, d: int, p_lo: int, p_hi: int) -> int:
    """torch's output-size formula; < 1 when the dilated kernel does not fit the padded input."""
    return (in_size + p_lo + p_hi - d * (k - 1) - 1) // s + 1


conv2d_forward = torch.ops.rnnkern.conv2d_forward.default


@torch.library.register_fake("rnnkern::conv2d_forward")
def _(input, weight, bias, stride, padding, dilation, groups):
    pt, pl, pb, pr = _pad4(padding)
    oh = out_size(input.shape[2], weight.shape[2], stride[0], dilation[0], pt, pb)
    ow = out_size(input.shape[3], weight.shape[3], stride[1], dilation[1], pl, pr)
    return empty_like_layout(input, (input.shape[0], weight.shape[0], oh, ow))


conv2d_backward_input = torch.ops.rnnkern.conv2d_backward_input.default


@torch.library.register_fake("rnnkern::conv2d_backward_input")
def _(grad_output, weight, input_size, stride, padding, dilation, groups):
    return empty_like_layout(grad_output, input_size)


conv2d_backward_weight = torch.ops.rnnkern.conv2d_backward_weight.default


@torch.library.register_fake("rnnkern::conv2d_backward_weight")
def _(grad_output, input, weight_size, stride, padding, dilation, groups, bias_grad):
    gw = input.new_empty(weight_size)
    gb = input.new_empty((weight_size[0] if bias_grad else 0,))
    return gw, gb


# The same formulas as Python autograd.Functions, for torch.func transforms and forward-mode AD
# (rnnkern.ops._transforms says why both exist).
conv2d_forward_for_transforms, _, _ = conv_family_functions(
    conv2d_forward, conv2d_backward_input, conv2d_backward_weight)
register_conv_family_vmap("rnnkern::conv2d_forward", "rnnkern::conv2d_backward_input",
                          "rnnkern::conv2d_backward_weight", conv2d_forward, conv2d_backward_input,
                          conv2d_backward_weight)


def _pad4(padding: list[int]) -> list[int]:
    return list(padding) if len(padding) == 4 else [padding[0], padding[1], padding[0], padding[1]]


# ---- validation + torch's argument conventions, used by rnnkern.functional ---------------------

def resolve_padding(op: str, padding, kernel: list[int], stride: list[int], dilation: list[int]) -> list[int]:
    """int / sequence / 'valid' / 'same' -> [lo_0, ..., lo_{nd-1}, hi_0, ..., hi_{nd-1}].

    'same' follows torch: total = d * (k - 1) per dim, lo = total // 2, the odd one extra at the
    end (hi)."""
    nd = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return [0] * (2 * nd)
        if padding != "same":
            raise ArgumentValueError(f"{op}: invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
        if any(s != 1 for s in stride):
            raise ArgumentValueError(f"{op}: padding='same' is not supported for strided convolutions "
                                     f"(stride={stride})")
        total = [dilation[i] * (kernel[i] - 1) for i in range(nd)]
        lo = [t // 2 for t in total]
        return lo + [t - l for t, l in zip(total, lo)]
    p = ntuple(op, "padding", padding, nd)
    if min(p) < 0:
        raise ArgumentValueError(f"{op}: padding must be non-negative, got {padding!r}")
    return p + p


def conv(op: str, input: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation, groups,
         nd: int) -> Tensor:
    """Validate (torch's rules, errors naming the argument), reshape to 4-D, call the op, restore
    the caller's rank. nd = 1 runs as a 2-D convolution with H = 1.

    The argument forms modules pass go to the op unchecked (common_conv_args): the kernels refuse
    everything checked_conv_args does, so its checks, ~15 us a call in Python, run only once the
    kernels have refused, to say which argument is wrong (tests/ops/test_argument_checks.py holds
    the two to the same verdicts)."""
    args = op, input, weight, bias, stride, padding, dilation, groups, nd
    return call_unchecked_first(_run_conv, common_conv_args(*args), checked_conv_args, *args)


def common_conv_args(op: str, input, weight, bias, stride, padding, dilation, groups, nd: int) -> Optional[tuple]:
    """checked_conv_args' result without its checks, for plain tensors and int or int-sequence sizes
    (what modules pass); None for anything else, and under torch.compile and the torch.func
    transforms (whose fakes and rules check nothing)."""
    if type(groups) is not int or not plain_tensors(input, weight, bias) or in_transform():
        return None
    stride, dilation = int_sizes(stride, nd), int_sizes(dilation, nd)
    dim = input.dim()
    if stride is None or dilation is None or weight.dim() != nd + 2 or not nd + 1 <= dim <= nd + 2:
        return None
    if type(padding) is str:
        if padding not in ("valid", "same") or (padding == "same" and stride != [1] * nd):
            return None  # (resolve_padding's refusals, in the checks' order)
        pad = resolve_padding(op, padding, [int(k) for k in weight.shape[2:]], stride, dilation)
    else:
        pad = int_sizes(padding, nd)
        if pad is None:
            return None
        pad = pad + pad
    input, weight, bias = autocast_cast(input, weight, bias)
    return input, weight, bias, stride, pad, dilation, groups, nd, dim == nd + 1


def checked_conv_args(op: str, input: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation,
                      groups, nd: int) -> tuple:
    """Every argument check, with errors naming the argument; returns (input, weight, bias, stride,
    padding [lo..., hi...], dilation, groups, nd, unbatched) for _run_conv."""
    check_tensor(op, "input", input, dims=(nd + 1, nd + 2), floating=True)
    check_tensor(op, "weight", weight, dims=(nd + 2,), floating=True)
    # torch runs convolutions in the autocast dtype; so do we
    input, weight, bias = autocast_cast(input, weight, bias)
    check_same(op, "input", input, "weight", weight)
    if bias is not None:
        check_tensor(op, "bias", bias, dims=(1,), floating=True)
        check_same(op, "input", input, "bias", bias)
    check_supported_device(op, input)
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise ArgumentTypeError(f"{op}: groups must be an int, got {groups!r}")
    if groups < 1:
        raise ArgumentValueError(f"{op}: groups must be a positive integer, got {groups}")
    stride = ntuple(op, "stride", stride, nd)
    if min(stride) < 1:
        raise ArgumentValueError(f"{op}: stride must be positive (non-positive stride is not supported), got {stride}")
    dilation = ntuple(op, "dilation", dilation, nd)
    if min(dilation) < 1:
        raise ArgumentValueError(f"{op}: dilation must be positive (non-positive dilation is not supported), "
                                 f"got {dilation}")

    x_shape, w_shape = input.shape, weight.shape  # each .shape read builds a new torch.Size
    unbatched = len(x_shape) == nd + 1
    c_in = x_shape[0 if unbatched else 1]
    c_out, cg = w_shape[0], w_shape[1]
    kernel = [int(k) for k in w_shape[2:]]  # int(): plain ints even under torch.jit.trace (sizes are traced there)
    if c_out == 0 or min(kernel) < 1 or cg < 1:
        raise ArgumentValueError(f"{op}: weight must have non-zero sizes, got {tuple(weight.shape)}")
    if c_in % groups:
        raise ArgumentValueError(f"{op}: groups={groups} must divide the input channels ({c_in})")
    if c_out % groups:
        raise ArgumentValueError(f"{op}: groups={groups} must divide the output channels, weight.shape[0] ({c_out})")
    if cg * groups != c_in:
        raise ArgumentValueError(f"{op}: channel mismatch: weight of size {tuple(weight.shape)} with groups={groups} "
                                 f"expects input with {cg * groups} channels, but input of size "
                                 f"{tuple(input.shape)} has {c_in}")
    if bias is not None and bias.shape[0] != c_out:
        raise ArgumentValueError(f"{op}: bias must have {c_out} elements (weight.shape[0]), got {tuple(bias.shape)}")
    pad = resolve_padding(op, padding, kernel, stride, dilation)
    spatial = list(x_shape[-nd:])
    if min(spatial) < 1:
        raise ArgumentValueError(f"{op}: input spatial size must be non-zero, got {tuple(input.shape)}")
    for i in range(nd):
        padded = spatial[i] + pad[i] + pad[nd + i]
        eff = dilation[i] * (kernel[i] - 1) + 1
        if eff > padded:
            raise ArgumentValueError(f"{op}: kernel size can't be greater than the padded input size: padded input "
                                     f"{[spatial[j] + pad[j] + pad[nd + j] for j in range(nd)]}, dilated kernel "
                                     f"{[dilation[j] * (kernel[j] - 1) + 1 for j in range(nd)]} (dim {i})")

    return input, weight, bias, stride, pad, dilation, groups, nd, unbatched


def _run_conv(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int], pad: list[int],
              dilation: list[int], groups: int, nd: int, unbatched: bool) -> Tensor:
    x = input.unsqueeze(0) if unbatched else input
    w = weight
    if nd == 1:  # (N, C, L) -> (N, C, 1, L)
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        stride, dilation = [1] + stride, [1] + dilation
        pad4 = [0, pad[0], 0, pad[1]]
    else:
        pad4 = pad  # [top, left, bottom, right]
    x, cl_output = follow_weight_layout(x, w)
    args = (stride, pad4, dilation, groups)
    out = conv2d_forward_for_transforms(x, w, bias, args) if transform_active() else conv2d_forward(x, w, bias, *args)
    if cl_output:
        out = out.contiguous(memory_format=torch.channels_last)
    if nd == 1:
        out = out.squeeze(2)
    return out.squeeze(0) if unbatched else out


def tma_stage_probe(input: Tensor, weight: Tensor, stride: list[int], padding: list[int], dilation: list[int],
                    groups: int, block_x: int, block_y: int, group: int, tap: int, c0: int,
                    tile_n: int = 128, cluster: int = 1) -> tuple[Tensor, int, int]:
    """One stage of the TMA convolution form's copies, raw: the bytes block (block_x, block_y, group)
    of a channels_last forward loads for kernel tap `tap` (r * KW + s) and channels c0 ... (A: 128
    pixel rows of 128 bytes, then B: tile_n weight rows, 128-byte swizzled as wgmma reads them;
    bytes no copy wrote read 0xAB), the pixel tiles' width (0: row order) and tiles a row. A
    diagnostic for the tests (csrc/cuda/conv.cu, tma_stage_probe_kernel): it tells a wrong copy
    from a wrong product. cluster=2 or 4: the stages of block_x's cluster of CTAs
    (RNNKERN_CONV_TMA_CLUSTER: each CTA loads its part of B into all of them), one after the other.
    CUDA builds with sm_90a, on an sm_90 GPU."""
    if not getattr(_ext._C, "with_cuda", False):
        raise RuntimeError("rnnkern.ops.conv.tma_stage_probe: this build has no CUDA kernels")
    return _ext._C.conv2d_tma_stage_probe(input, weight, stride, padding, dilation, groups, block_x, block_y, group,
                                          tap, c0, tile_n, cluster)


def wgmma_mn_probe(a: Tensor, b: Tensor) -> Tensor:
    """a^T b (fp32) for bf16 CUDA tensors a (64, 64) and b (64, 128 or 256), computed by the TMA
    grad_weight's four MN-major wgmma steps on shared memory laid out as its copies leave it (csrc/
    cuda/conv.cu, wgmma_mn_probe_kernel). A diagnostic for the tests: it tells a wrong descriptor
    from a wrong copy. CUDA builds with sm_90a, on an sm_90 GPU."""
    if not getattr(_ext._C, "with_cuda", False):
        raise RuntimeError("rnnkern.ops.conv.wgmma_mn_probe: this build has no CUDA kernels")
    return _ext._C.wgmma_mn_probe(a, b)
