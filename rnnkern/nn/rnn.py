"""Drop-in torch.nn.RNN / RNNCell on rnnkern's fused kernels.

They subclass torch's modules for the constructor, parameters (weight_ih_l0, weight_hh_l0_reverse,
...), initialisation, repr and state_dict, so a torch.nn.RNN state_dict loads unchanged in both
directions; only forward differs: all time steps of a layer run in one fused op.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from rnnkern import functional as F


def _packed_positions(batch_sizes: Tensor) -> tuple[Tensor, Tensor]:
    """Flat (t * B + b) row of every packed element, and per-sequence lengths (sorted order)."""
    bs = batch_sizes.tolist()
    B = bs[0]
    rows = torch.cat([torch.arange(n) + t * B for t, n in enumerate(bs)])
    lengths = (batch_sizes.unsqueeze(0) > torch.arange(B).unsqueeze(1)).sum(1)
    return rows, lengths


class RNN(torch.nn.RNN):
    r"""torch.nn.RNN with the same constructor, parameters and forward contract:
    ``(input, hx=None) -> (output, h_n)``, for (L, N, H_in) / (N, L, H_in) with batch_first /
    unbatched (L, H_in) / PackedSequence input. Each layer and direction is one fused kernel
    call (rnnkern::rnn_forward); PackedSequence input runs with per-sequence lengths inside the
    kernel instead of being unpacked per step."""

    def forward(self, input, hx: Optional[Tensor] = None):  # noqa: C901  (torch's contract)
        self._update_flat_weights()
        dirs = 2 if self.bidirectional else 1
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            B = int(batch_sizes[0])
            if hx is None:
                hx = data.new_zeros(self.num_layers * dirs, B, self.hidden_size)
            else:
                hx = self.permute_hidden(hx, sorted_indices)
            self.check_forward_args(data, hx, batch_sizes)
            rows, lengths = _packed_positions(batch_sizes)
            T = len(batch_sizes)
            x = data.new_zeros(T * B, data.shape[-1]).index_copy(0, rows.to(data.device), data).view(T, B, -1)
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
            batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not batched:
                input = input.unsqueeze(batch_dim)
                if hx is not None:
                    if hx.dim() != 2:
                        raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
                    hx = hx.unsqueeze(1)
            elif hx is not None and hx.dim() != 3:
                raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
            B = input.size(batch_dim)
            if hx is None:
                hx = input.new_zeros(self.num_layers * dirs, B, self.hidden_size)
            self.check_forward_args(input, hx, None)
            x = input.transpose(0, 1) if self.batch_first else input
            lengths = None
        self._check_dtypes(x, hx)
        n = 4 if self.bias else 2
        weights = [self._flat_weights[i:i + n] for i in range(0, len(self._flat_weights), n)]
        out, h_n = F.rnn(x, hx, weights, self.nonlinearity, self.num_layers, self.dropout, self.training,
                         self.bidirectional, lengths)
        if packed:
            out = out.reshape(T * B, -1).index_select(0, rows.to(out.device))
            return PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices), \
                self.permute_hidden(h_n, unsorted_indices)
        if self.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(batch_dim)
            h_n = h_n.squeeze(1)
        return out, h_n

    def _check_dtypes(self, x: Tensor, hx: Tensor) -> None:
        w = self._flat_weights[0]
        if x.dtype != w.dtype or hx.dtype != w.dtype:
            raise TypeError(f"RNN: input ({x.dtype}), hx ({hx.dtype}) and parameters ({w.dtype}) must share one "
                            "dtype; convert the module with .to(dtype) or the input")
        if x.device != w.device or hx.device != w.device:
            raise RuntimeError(f"RNN: input ({x.device}), hx ({hx.device}) and parameters ({w.device}) must be "
                               "on one device")


class RNNCell(torch.nn.RNNCell):
    """torch.nn.RNNCell on the fused kernel (T = 1): (input (N, H_in) or (H_in), hx) -> h'."""

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        if input.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"RNNCell: input has inconsistent input_size: got {input.shape[-1]} "
                               f"expected {self.input_size}")
        if hx is not None and (hx.shape[-1] != self.hidden_size or hx.dim() != input.dim()
                               or (input.dim() == 2 and hx.shape[0] != input.shape[0])):
            raise RuntimeError(f"RNNCell: hx shape {tuple(hx.shape)} does not match input shape "
                               f"{tuple(input.shape)} and hidden_size {self.hidden_size}")
        return F.rnn_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)
