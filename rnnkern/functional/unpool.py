"""Unpooling: F.max_unpool1d/2d signatures, plus nearest and bed-of-nails unpooling."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor

from rnnkern.ops import max_unpool as _unpool

_size_any = Union[int, Sequence[int]]


def max_unpool1d(input: Tensor, indices: Tensor, kernel_size: _size_any, stride: Optional[_size_any] = None,
                 padding: _size_any = 0, output_size: Optional[Sequence[int]] = None, *,
                 check_indices: bool = True) -> Tensor:
    """Partial inverse of max_pool1d. input/indices (N, C, L) or (C, L); indices int64 from
    max_pool1d(return_indices=True). Returns (N, C, L_out). check_indices: see max_unpool2d."""
    return _unpool.max_unpool("max_unpool1d", input, indices, _unpool.MODE_INDICES, kernel_size, stride,
                              padding, output_size, nd=1, check_indices=check_indices)


def max_unpool2d(input: Tensor, indices: Tensor, kernel_size: _size_any, stride: Optional[_size_any] = None,
                 padding: _size_any = 0, output_size: Optional[Sequence[int]] = None, *,
                 check_indices: bool = True) -> Tensor:
    """Partial inverse of max_pool2d. input/indices (N, C, H, W) or (C, H, W), any layout
    (channels_last in -> channels_last out). Returns (N, C, H_out, W_out).

    check_indices (keyword-only, not in torch's signature): True raises IndexError on an index
    outside the output plane, which on CUDA reads a flag back (one host sync a call). False keeps
    the call asynchronous and drops such elements instead; indices straight from max_pool2d are
    always in range, so callers that pass them on (SegNet) need no check."""
    return _unpool.max_unpool("max_unpool2d", input, indices, _unpool.MODE_INDICES, kernel_size, stride,
                              padding, output_size, nd=2, check_indices=check_indices)


def unpool_nearest2d(input: Tensor, scale_factor: _size_any = 2) -> Tensor:
    """Nearest-neighbour unpooling: each value fills its scale x scale window.
    (N, C, H, W) -> (N, C, H * s, W * s). Same result as F.interpolate(mode="nearest")."""
    return _unpool.max_unpool("unpool_nearest2d", input, None, _unpool.MODE_NEAREST, scale_factor, None, 0,
                              None, nd=2)


def bed_of_nails2d(input: Tensor, scale_factor: _size_any = 2) -> Tensor:
    """"Bed of nails" unpooling: each value goes to the top-left of its scale x scale window,
    zeros elsewhere (max-unpool with implicit indices; no index tensor is read)."""
    return _unpool.max_unpool("bed_of_nails2d", input, None, _unpool.MODE_BED_OF_NAILS, scale_factor, None, 0,
                              None, nd=2)
