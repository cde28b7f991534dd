"""Drop-in replacements for torch.nn.Conv1d / Conv2d on rnnkern's dilated convolution.

They subclass torch.nn.modules.conv._ConvNd (torch's shared base, not Conv1d/Conv2d), so the
constructor, parameters, initialisation, repr and state_dict are torch's own; the forward calls
rnnkern.functional. padding_mode other than 'zeros' pads with torch.nn.functional.pad first,
exactly as torch's modules do.
"""
from __future__ import annotations

from typing import Optional, Union

import torch.nn.functional as torch_F
from torch import Tensor
from torch.nn.common_types import _size_1_t, _size_2_t
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.utils import _pair, _single

from rnnkern import functional as F


class Conv1d(_ConvNd):
    """torch.nn.Conv1d on rnnkern's kernels: (N, C_in, L) or (C_in, L) -> (N, C_out, L_out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _size_1_t, stride: _size_1_t = 1,
                 padding: Union[str, _size_1_t] = 0, dilation: _size_1_t = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device=None, dtype=None) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__(in_channels, out_channels, _single(kernel_size), _single(stride),
                         padding if isinstance(padding, str) else _single(padding), _single(dilation),
                         False, _single(0), groups, bias, padding_mode, **factory_kwargs)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode != "zeros":
            return F.conv1d(torch_F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                            weight, bias, self.stride, _single(0), self.dilation, self.groups)
        return F.conv1d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, self.weight, self.bias)


class Conv2d(_ConvNd):
    """torch.nn.Conv2d on rnnkern's kernels: (N, C_in, H, W) or (C_in, H, W) -> (N, C_out, H_out, W_out).
    channels_last in -> channels_last out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _size_2_t, stride: _size_2_t = 1,
                 padding: Union[str, _size_2_t] = 0, dilation: _size_2_t = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device=None, dtype=None) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__(in_channels, out_channels, _pair(kernel_size), _pair(stride),
                         padding if isinstance(padding, str) else _pair(padding), _pair(dilation),
                         False, _pair(0), groups, bias, padding_mode, **factory_kwargs)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode != "zeros":
            return F.conv2d(torch_F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                            weight, bias, self.stride, _pair(0), self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, self.weight, self.bias)
