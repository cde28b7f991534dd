"""Vanilla RNN, functional form: multi-layer, bidirectional, variable lengths, on the fused op."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from rnnkern.ops import rnn as _ops
from rnnkern.ops._validate import (ArgumentDtypeError, ArgumentValueError, autocast_cast, autocast_dtype, check_same,
                                   check_supported_device)

_NONLINEARITIES = ("tanh", "relu")


def host_index_to(t: Tensor, device: torch.device) -> Tensor:
    """A CPU index tensor (lengths, packed positions) on `device` without a host sync: on a GPU it
    is staged in pinned memory and copied asynchronously (a copy from pageable memory waits for
    everything queued before it, here the whole recurrence)."""
    if device.type != "cuda" or torch.compiler.is_compiling():
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _reverse_within_lengths(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """Reverse time (dim 0) of each sequence inside its own length; padding stays in place."""
    if lengths is None:
        return x.flip(0)
    T, B = x.shape[:2]
    t = torch.arange(T, device=x.device).unsqueeze(1)
    lens = host_index_to(lengths, x.device).unsqueeze(0)
    idx = torch.where(t < lens, lens - 1 - t, t)  # (T, B)
    return x.gather(0, idx.unsqueeze(-1).expand_as(x))


def rnn_layer(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
              b_hh: Optional[Tensor] = None, nonlinearity: str = "tanh", lengths: Optional[Tensor] = None,
              reverse: bool = False) -> tuple[Tensor, Tensor]:
    """One layer, one direction. input (T, B, I) time-major, hx (B, H); lengths int64 (B,) on
    the CPU, non-increasing. Returns output (T, B, H) (zeros past each length) and h_n (B, H)."""
    if nonlinearity not in _NONLINEARITIES:
        raise ArgumentValueError(f"rnn: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    check_supported_device("rnn", input)
    for name, t in (("hx", hx), ("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh)):
        check_same("rnn", "input", input, name, t, dtype=False)  # (the op's dtype checks name them too)
    if lengths is not None and not (lengths.is_cpu or lengths.is_meta):
        raise ArgumentValueError(f"rnn: lengths must be a CPU tensor (as PackedSequence's batch sizes), "
                                 f"got one on {lengths.device}")
    if autocast_dtype(input) is not None:  # as rnn and rnn_cell (a no-op for what they already cast)
        input, hx, w_ih, w_hh, b_ih, b_hh = autocast_cast(input, hx, w_ih, w_hh, b_ih, b_hh)
    relu = nonlinearity == "relu"
    if reverse:
        input = _reverse_within_lengths(input, lengths)
    out, h_n = _ops.fused_rnn(input, hx, w_ih, w_hh, b_ih, b_hh, lengths, relu)
    if reverse:
        out = _reverse_within_lengths(out, lengths)
    return out, h_n


def _check_dtypes(x: Tensor, hx: Tensor, w: Tensor) -> None:
    if x.dtype != w.dtype or hx.dtype != w.dtype:
        raise ArgumentDtypeError(f"RNN: input ({x.dtype}), hx ({hx.dtype}) and parameters ({w.dtype}) must share one "
                                 "dtype; convert the module with .to(dtype) or the input")
    if x.device != w.device or hx.device != w.device:
        raise RuntimeError(f"RNN: input ({x.device}), hx ({hx.device}) and parameters ({w.device}) must be "
                           "on one device")


def rnn(input: Tensor, hx: Tensor, weights: Sequence[Sequence[Tensor]], nonlinearity: str = "tanh",
        num_layers: int = 1, dropout: float = 0.0, training: bool = False, bidirectional: bool = False,
        lengths: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Multi-layer (bidirectional) Elman RNN over the fused kernel.

    input (T, B, I) time-major; hx (num_layers * num_directions, B, H); weights: per layer and
    direction (layer-major, forward first) a tuple (w_ih, w_hh) or (w_ih, w_hh, b_ih, b_hh), as
    torch.nn.RNN orders its parameters. Returns output (T, B, num_directions * H) and
    h_n (num_layers * num_directions, B, H)."""
    dirs = 2 if bidirectional else 1
    if len(weights) != num_layers * dirs:
        raise ArgumentValueError(f"rnn: expected {num_layers * dirs} weight groups, got {len(weights)}")
    for k, group in enumerate(weights):
        if len(group) not in (2, 4):
            raise ArgumentValueError(f"rnn: weight group {k} must be (w_ih, w_hh) or (w_ih, w_hh, b_ih, b_hh), "
                                     f"got {len(group)} tensors")
    if autocast_dtype(input) is not None:  # torch runs RNNs in the autocast dtype (float64 stays); so do we
        input, hx = autocast_cast(input, hx)
        weights = [list(autocast_cast(*group)) for group in weights]
    _check_dtypes(input, hx, weights[0][0])
    layer_input = input
    h_n = []
    for layer in range(num_layers):
        if layer > 0 and dropout > 0.0 and training:
            layer_input = torch.nn.functional.dropout(layer_input, dropout, training=True)
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            w = weights[k]
            b_ih, b_hh = (w[2], w[3]) if len(w) == 4 else (None, None)
            out, h = rnn_layer(layer_input, hx[k], w[0], w[1], b_ih, b_hh, nonlinearity, lengths, reverse=d == 1)
            outs.append(out)
            h_n.append(h)
        layer_input = outs[0] if dirs == 1 else torch.cat(outs, dim=2)
    # (one state: a view, not a ~5 us stack; a language model's sampling step is one such call)
    return layer_input, h_n[0].unsqueeze(0) if len(h_n) == 1 else torch.stack(h_n, 0)


def rnn_cell(input: Tensor, hx: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
             b_hh: Optional[Tensor] = None, nonlinearity: str = "tanh") -> Tensor:
    """One step: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh). input (B, I) or (I,), hx (B, H) or (H,)."""
    input, hx, w_ih, w_hh, b_ih, b_hh = autocast_cast(input, hx, w_ih, w_hh, b_ih, b_hh)  # as torch's cell
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    if hx is None:
        hx = x.new_zeros(x.shape[0], w_hh.shape[0])
    elif unbatched:
        hx = hx.unsqueeze(0)
    _, h = rnn_layer(x.unsqueeze(0), hx, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    return h.squeeze(0) if unbatched else h
