"""Swap torch.nn layers in an existing model for rnnkern's, keeping their weights."""
from __future__ import annotations

import torch
from torch import nn

from rnnkern.nn.conv import Conv1d, Conv2d
from rnnkern.nn.conv_transpose import ConvTranspose1d, ConvTranspose2d
from rnnkern.nn.pooling import MaxUnpool1d, MaxUnpool2d
from rnnkern.nn.rnn import RNN


def _conv_kwargs(m: nn.modules.conv._ConvNd) -> dict:
    return dict(in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=m.kernel_size, stride=m.stride,
                padding=m.padding, dilation=m.dilation, groups=m.groups, bias=m.bias is not None,
                padding_mode=m.padding_mode, device=m.weight.device, dtype=m.weight.dtype)


def _convert_one(m: nn.Module, dilated_only: bool) -> nn.Module | None:
    """rnnkern's equivalent of `m` with the same weights, or None to keep `m`."""
    t = type(m)
    new: nn.Module | None = None
    if t is nn.RNN:
        w = m.weight_ih_l0
        new = RNN(m.input_size, m.hidden_size, m.num_layers, m.nonlinearity, m.bias, m.batch_first, m.dropout,
                  m.bidirectional, device=w.device, dtype=w.dtype)
        if m.proj_size:
            return None
    elif t in (nn.ConvTranspose1d, nn.ConvTranspose2d):
        kw = _conv_kwargs(m)
        kw["output_padding"] = m.output_padding
        new = (ConvTranspose1d if t is nn.ConvTranspose1d else ConvTranspose2d)(**kw)
    elif t in (nn.Conv1d, nn.Conv2d):
        if dilated_only and all(d == 1 for d in m.dilation):
            return None
        new = (Conv1d if t is nn.Conv1d else Conv2d)(**_conv_kwargs(m))
    elif t in (nn.MaxUnpool1d, nn.MaxUnpool2d):
        return (MaxUnpool1d if t is nn.MaxUnpool1d else MaxUnpool2d)(m.kernel_size, m.stride, m.padding)
    if new is None:
        return None
    new.load_state_dict(m.state_dict())
    new.train(m.training)
    return new


@torch.no_grad()
def from_torch(module: nn.Module, dilated_only: bool = True) -> nn.Module:
    """Replace, in place and recursively, every torch.nn.RNN, ConvTranspose1d/2d, MaxUnpool1d/2d
    and dilated Conv1d/2d (every Conv1d/2d with dilated_only=False) by rnnkern's drop-in, keeping
    weights, training mode, device and dtype. Returns the module (a new one if `module` itself
    was converted). The state_dict is unchanged, so checkpoints keep loading either way."""
    converted = _convert_one(module, dilated_only)
    if converted is not None:
        return converted
    for name, child in module.named_children():
        setattr(module, name, from_torch(child, dilated_only))
    return module
