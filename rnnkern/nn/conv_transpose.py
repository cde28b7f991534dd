"""Drop-in replacements for torch.nn.ConvTranspose1d / ConvTranspose2d, and FCN's bilinear
upsampling initialiser.

The modules subclass torch's own classes, so constructor, parameters (weight layout
(C_in, C_out/groups, *kernel)), init, repr, state_dict and the output_size logic of
forward(input, output_size=...) (torch's `_output_padding`) are torch's; only the computation
runs on rnnkern.functional.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from rnnkern import functional as F
from rnnkern.nn._torchscript import not_scriptable


class ConvTranspose1d(nn.ConvTranspose1d):
    """torch.nn.ConvTranspose1d on rnnkern's kernels: (N, C_in, L) or (C_in, L) -> (N, C_out, L_out)."""
    __prepare_scriptable__ = not_scriptable

    def forward(self, input: Tensor, output_size: Optional[list[int]] = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose1d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 1,
                                              self.dilation)
        return F.conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                  self.groups, self.dilation)


class ConvTranspose2d(nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d on rnnkern's kernels: (N, C_in, H, W) or (C_in, H, W) ->
    (N, C_out, H_out, W_out); channels_last input gives channels_last output."""
    __prepare_scriptable__ = not_scriptable

    def forward(self, input: Tensor, output_size: Optional[list[int]] = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                  self.groups, self.dilation)


def bilinear_upsampling_weight(in_channels: int, out_channels: int, kernel_size: int,
                               dtype: torch.dtype = torch.float32) -> Tensor:
    """FCN's bilinear-interpolation weight for ConvTranspose2d(groups=1), shape
    (in_channels, out_channels, k, k): channel i upsamples into channel i only (cross-channel
    weights zero; channels beyond min(in, out) get zero kernels). With stride f, kernel 2f and
    padding f/2 the layer reproduces F.interpolate(scale_factor=f, mode="bilinear",
    align_corners=False) away from the border."""
    if kernel_size < 1 or in_channels < 0 or out_channels < 0:
        raise ValueError(f"bilinear_upsampling_weight: need kernel_size >= 1 and channel counts >= 0, got "
                         f"in_channels={in_channels}, out_channels={out_channels}, kernel_size={kernel_size}")
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size, dtype=torch.float64)
    n = min(in_channels, out_channels)
    weight[torch.arange(n), torch.arange(n)] = filt
    return weight.to(dtype)


@torch.no_grad()
def bilinear_(weight: Tensor) -> Tensor:
    """Fill a square-kernel ConvTranspose2d weight (in, out, k, k) with bilinear_upsampling_weight
    in place; returns it (the torch.nn.init convention)."""
    if weight.dim() != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"bilinear_: weight must be (in, out, k, k), got shape {tuple(weight.shape)}")
    w = bilinear_upsampling_weight(weight.shape[0], weight.shape[1], weight.shape[2], dtype=weight.dtype)
    return weight.copy_(w)
