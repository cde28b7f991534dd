"""Swap torch.nn layers in an existing model for rnnkern's, keeping their weights."""
from __future__ import annotations

import warnings

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


def _wanted(m: nn.Module, dilated_only: bool) -> bool:
    """Whether rnnkern has a drop-in for `m` that from_torch should use (exact types only: a
    subclass, e.g. a parametrized module, may change what forward does)."""
    t = type(m)
    if t in (nn.Conv1d, nn.Conv2d):
        return not (dilated_only and all(d == 1 for d in m.dilation))
    return t in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.MaxUnpool1d, nn.MaxUnpool2d) or \
        (t is nn.RNN and not m.proj_size)


def _convert_one(m: nn.Module) -> nn.Module:
    """rnnkern's equivalent of `m` (a module _wanted accepts), holding the same parameters."""
    t = type(m)
    if t is nn.RNN:
        w = m.weight_ih_l0
        new = RNN(m.input_size, m.hidden_size, m.num_layers, m.nonlinearity, m.bias, m.batch_first, m.dropout,
                  m.bidirectional, device=w.device, dtype=w.dtype)
    elif t in (nn.ConvTranspose1d, nn.ConvTranspose2d):
        kw = _conv_kwargs(m)
        kw["output_padding"] = m.output_padding
        new = (ConvTranspose1d if t is nn.ConvTranspose1d else ConvTranspose2d)(**kw)
    elif t in (nn.Conv1d, nn.Conv2d):
        new = (Conv1d if t is nn.Conv1d else Conv2d)(**_conv_kwargs(m))
    else:
        new = (MaxUnpool1d if t is nn.MaxUnpool1d else MaxUnpool2d)(m.kernel_size, m.stride, m.padding)
    # the very Parameter objects (and buffers): requires_grad, .grad, an optimizer built on the
    # model, and parameters tied to other modules all carry over; the names match torch's
    for name, p in m.named_parameters(recurse=False):
        setattr(new, name, p)
    for name, b in m.named_buffers(recurse=False):
        setattr(new, name, b)
    new.train(m.training)
    return new


def _has_hooks(m: nn.Module) -> bool:
    """Forward / backward / state-dict hooks: the converted module would silently drop them (legacy
    weight_norm and spectral_norm are such hooks, recomputing `weight` before each forward)."""
    return any(len(getattr(m, attr, ())) for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                                                      "_backward_pre_hooks", "_state_dict_hooks",
                                                      "_load_state_dict_pre_hooks"))


def from_torch(module: nn.Module, dilated_only: bool = True) -> nn.Module:
    """Replace, in place and recursively, every torch.nn.RNN, ConvTranspose1d/2d, MaxUnpool1d/2d
    and dilated Conv1d/2d (every Conv1d/2d with dilated_only=False) by rnnkern's drop-in. The new
    module holds the same Parameter objects (so requires_grad, gradients, optimizer state and
    weight tying carry over), training mode, device and dtype; a module reached twice is converted
    once and stays shared. Modules with hooks (including legacy weight_norm / spectral_norm) and
    parametrized ones are kept as they are, with a warning for the hooked ones. Returns the module
    (a new one if `module` itself was converted). The state_dict is unchanged, so checkpoints keep
    loading either way."""
    return _from_torch(module, dilated_only, {})


def _from_torch(module: nn.Module, dilated_only: bool, memo: dict[int, nn.Module]) -> nn.Module:
    if id(module) in memo:
        return memo[id(module)]
    wanted = _wanted(module, dilated_only)
    if wanted and _has_hooks(module):
        warnings.warn(f"rnnkern.nn.from_torch: kept {type(module).__name__} as it is: it has hooks (or "
                      "weight_norm / spectral_norm) that a converted module would not run", stacklevel=3)
        wanted = False
    if not wanted:
        memo[id(module)] = module
        # _modules, not named_children(): that lists a child registered under two names once
        for name, child in list(module._modules.items()):
            if child is not None:
                setattr(module, name, _from_torch(child, dilated_only, memo))
        return module
    memo[id(module)] = converted = _convert_one(module)
    return converted
