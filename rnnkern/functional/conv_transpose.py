"""Transposed convolution: F.conv_transpose1d / conv_transpose2d signatures on rnnkern's kernels."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor

from rnnkern.ops import conv_transpose as _ct

_size_any = Union[int, Sequence[int]]


def conv_transpose1d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: _size_any = 1,
                     padding: _size_any = 0, output_padding: _size_any = 0, groups: int = 1,
                     dilation: _size_any = 1) -> Tensor:
    """Transposed 1-D convolution. input (N, C_in, L) or (C_in, L); weight (C_in, C_out/groups, k);
    bias (C_out). Returns (N, C_out, L_out), L_out = (L - 1) s - 2 p + d (k - 1) + output_padding + 1.
    fp32/fp64 (CPU and CUDA), bf16/fp16 (CUDA; CPU computes them in fp32)."""
    return _ct.conv_transpose("conv_transpose1d", input, weight, bias, stride, padding, output_padding, groups,
                              dilation, nd=1)


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: _size_any = 1,
                     padding: _size_any = 0, output_padding: _size_any = 0, groups: int = 1,
                     dilation: _size_any = 1) -> Tensor:
    """Transposed 2-D convolution. input (N, C_in, H, W) or (C_in, H, W), NCHW or channels_last
    (channels_last in -> channels_last out); weight (C_in, C_out/groups, kH, kW); bias (C_out).
    Returns (N, C_out, H_out, W_out), H_out = (H - 1) sH - 2 pH + dH (kH - 1) + opH + 1."""
    return _ct.conv_transpose("conv_transpose2d", input, weight, bias, stride, padding, output_padding, groups,
                              dilation, nd=2)
