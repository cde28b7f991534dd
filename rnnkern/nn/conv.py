"""Drop-in replacements for torch.nn.Conv1d / Conv2d on rnnkern's dilated convolution.

They subclass torch.nn.Conv1d / Conv2d, so the constructor, parameters, initialisation, repr,
state_dict and isinstance checks are torch's own; _conv_forward (which torch's forward calls)
calls rnnkern.functional. padding_mode other than 'zeros' pads with torch.nn.functional.pad first,
exactly as torch's modules do. torch.jit.script refuses them with an error that says so.
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as torch_F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair, _single

from rnnkern import functional as F
from rnnkern.nn._torchscript import not_scriptable


class Conv1d(nn.Conv1d):
    """torch.nn.Conv1d on rnnkern's kernels: (N, C_in, L) or (C_in, L) -> (N, C_out, L_out)."""
    __prepare_scriptable__ = not_scriptable

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode != "zeros":
            return F.conv1d(torch_F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                            weight, bias, self.stride, _single(0), self.dilation, self.groups)
        return F.conv1d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2d(nn.Conv2d):
    """torch.nn.Conv2d on rnnkern's kernels: (N, C_in, H, W) or (C_in, H, W) -> (N, C_out, H_out, W_out).
    channels_last in -> channels_last out."""
    __prepare_scriptable__ = not_scriptable

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode != "zeros":
            return F.conv2d(torch_F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                            weight, bias, self.stride, _pair(0), self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
