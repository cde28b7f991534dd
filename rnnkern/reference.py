"""Pure-PyTorch references for every rnnkern op. Tests compare against these (in fp64); they
are never the production path."""
from __future__ import annotations

import torch
from torch import Tensor


def max_unpool2d(input: Tensor, indices: Tensor, output_hw: tuple[int, int]) -> Tensor:
    """Scatter with the documented duplicate rule: the last input element (flat order) wins."""
    n, c = input.shape[:2]
    out = input.new_zeros(n, c, output_hw[0] * output_hw[1])
    src = input.reshape(n, c, -1)
    idx = indices.reshape(n, c, -1)
    for k in range(idx.shape[-1]):  # sequential: later positions overwrite earlier ones
        out.scatter_(2, idx[:, :, k:k + 1], src[:, :, k:k + 1])
    return out.reshape(n, c, *output_hw)


def unpool_nearest2d(input: Tensor, s: int) -> Tensor:
    return input.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)


def bed_of_nails2d(input: Tensor, s: int) -> Tensor:
    n, c, h, w = input.shape
    out = input.new_zeros(n, c, h * s, w * s)
    out[:, :, ::s, ::s] = input
    return out
