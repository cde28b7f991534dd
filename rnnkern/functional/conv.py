"""Convolution: F.conv1d / F.conv2d signatures on rnnkern's dilated convolution kernels."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor

from rnnkern.ops import conv as _conv

_size_any = Union[int, Sequence[int]]


def conv1d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: _size_any = 1,
           padding: Union[str, _size_any] = 0, dilation: _size_any = 1, groups: int = 1) -> Tensor:
    """torch.nn.functional.conv1d. input (N, C_in, L) or (C_in, L); weight (C_out, C_in / groups, k);
    bias (C_out) or None; padding an int, a 1-tuple, 'valid' or 'same' (stride 1 only).
    Returns (N, C_out, L_out), L_out = (L + 2p - d (k - 1) - 1) // s + 1. Floating dtypes
    (CPU: fp32/fp64 natively, bf16/fp16 computed in fp32; CUDA: fp32/tf32, fp64, bf16, fp16)."""
    return _conv.conv("conv1d", input, weight, bias, stride, padding, dilation, groups, nd=1)


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: _size_any = 1,
           padding: Union[str, _size_any] = 0, dilation: _size_any = 1, groups: int = 1) -> Tensor:
    """torch.nn.functional.conv2d. input (N, C_in, H, W) or (C_in, H, W), any layout
    (channels_last in -> channels_last out); weight (C_out, C_in / groups, KH, KW); bias (C_out)
    or None; padding an int, a pair, 'valid' or 'same' (stride 1 only; an even effective kernel
    pads one extra at the bottom/right, as torch does). Returns (N, C_out, H_out, W_out)."""
    return _conv.conv("conv2d", input, weight, bias, stride, padding, dilation, groups, nd=2)
