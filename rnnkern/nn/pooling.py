"""Drop-in replacements for torch.nn.MaxUnpool1d / MaxUnpool2d: subclasses with rnnkern's forward
(constructor, attributes and repr are torch's, plus the keyword-only check_indices of
rnnkern.functional.max_unpool2d)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from rnnkern import functional as F
from rnnkern.nn._torchscript import not_scriptable


class _CheckIndices:
    """check_indices=False: no host sync on CUDA, out-of-range indices dropped (see max_unpool2d)."""
    check_indices: bool = True  # (also what a module pickled before the argument existed reads)
    __prepare_scriptable__ = not_scriptable

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.check_indices else ", check_indices=False")


class MaxUnpool1d(_CheckIndices, nn.MaxUnpool1d):
    """torch.nn.MaxUnpool1d on rnnkern's kernels: (N, C, L) or (C, L) + indices -> (N, C, L_out)."""

    def __init__(self, kernel_size, stride=None, padding=0, *, check_indices: bool = True) -> None:
        super().__init__(kernel_size, stride, padding)
        self.check_indices = check_indices

    def forward(self, input: Tensor, indices: Tensor, output_size: Optional[list[int]] = None) -> Tensor:
        return F.max_unpool1d(input, indices, self.kernel_size, self.stride, self.padding, output_size,
                              check_indices=self.check_indices)


class MaxUnpool2d(_CheckIndices, nn.MaxUnpool2d):
    """torch.nn.MaxUnpool2d on rnnkern's kernels: (N, C, H, W) or (C, H, W) + indices."""

    def __init__(self, kernel_size, stride=None, padding=0, *, check_indices: bool = True) -> None:
        super().__init__(kernel_size, stride, padding)
        self.check_indices = check_indices

    def forward(self, input: Tensor, indices: Tensor, output_size: Optional[list[int]] = None) -> Tensor:
        return F.max_unpool2d(input, indices, self.kernel_size, self.stride, self.padding, output_size,
                              check_indices=self.check_indices)
