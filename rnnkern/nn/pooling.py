"""Drop-in replacements for torch.nn.MaxUnpool1d / MaxUnpool2d: subclasses with rnnkern's forward
(constructor, attributes and repr are torch's)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from rnnkern import functional as F


class MaxUnpool1d(nn.MaxUnpool1d):
    """torch.nn.MaxUnpool1d on rnnkern's kernels: (N, C, L) or (C, L) + indices -> (N, C, L_out)."""

    def forward(self, input: Tensor, indices: Tensor, output_size: Optional[list[int]] = None) -> Tensor:
        return F.max_unpool1d(input, indices, self.kernel_size, self.stride, self.padding, output_size)


class MaxUnpool2d(nn.MaxUnpool2d):
    """torch.nn.MaxUnpool2d on rnnkern's kernels: (N, C, H, W) or (C, H, W) + indices."""

    def forward(self, input: Tensor, indices: Tensor, output_size: Optional[list[int]] = None) -> Tensor:
        return F.max_unpool2d(input, indices, self.kernel_size, self.stride, self.padding, output_size)
