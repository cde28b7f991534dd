"""Drop-in torch.nn.RNN / RNNCell on rnnkern's fused kernels.

Same constructors, parameter names and shapes (weight_ih_l0, weight_hh_l0_reverse, ...),
initialisation, repr and state_dict as torch's, so a torch.nn.RNN state_dict loads unchanged in
both directions; forward runs all time steps of a layer in one fused op.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Optional

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from rnnkern import functional as F
from rnnkern.functional.rnn import host_index_to
from rnnkern.ops._validate import ArgumentDtypeError
from rnnkern.nn._torchscript import not_scriptable


def _packed_positions(batch_sizes: Tensor) -> tuple[Tensor, Tensor]:
    """Flat (t * B + b) row of every packed element, and per-sequence lengths (sorted order)."""
    bs = batch_sizes.tolist()
    B = bs[0]
    rows = torch.cat([torch.arange(n) + t * B for t, n in enumerate(bs)])
    lengths = (batch_sizes.unsqueeze(0) > torch.arange(B).unsqueeze(1)).sum(1)
    return rows, lengths


class RNN(torch.nn.Module):
    r"""Drop-in for torch.nn.RNN: same constructor (positional order included), parameters
    (weight_ih_l0, weight_hh_l0_reverse, ...), initialisation U(-1/sqrt(H), 1/sqrt(H)), repr and
    state_dict, and the same forward contract ``(input, hx=None) -> (output, h_n)`` for
    (L, N, H_in) / batch_first (N, L, H_in) / unbatched (L, H_in) / PackedSequence input.

    Each layer and direction is one fused kernel call (rnnkern::rnn_forward); PackedSequence
    input runs with per-sequence lengths inside the kernel instead of being unpacked per step.
    (It does not subclass torch.nn.RNN: torch.compile refuses anything that is an RNNBase.)"""
    __prepare_scriptable__ = not_scriptable

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, proj_size: int = 0) -> None:
        super().__init__()
        if proj_size != 0:  # (torch.nn.RNN takes it by keyword and refuses it the same way)
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             "element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=2)
        for name, value in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{name} must be greater than zero")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.nonlinearity, self.bias, self.batch_first = nonlinearity, bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        factory = {"device": device, "dtype": dtype}
        dirs = 2 if bidirectional else 1
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            for direction in range(dirs):
                layer_in = input_size if layer == 0 else hidden_size * dirs
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = [("weight_ih", (hidden_size, layer_in)), ("weight_hh", (hidden_size, hidden_size))]
                if bias:
                    shapes += [("bias_ih", (hidden_size,)), ("bias_hh", (hidden_size,))]
                for name, shape in shapes:
                    self.register_parameter(name + suffix, torch.nn.Parameter(torch.empty(shape, **factory)))
                    self._flat_weights_names.append(name + suffix)
        self.reset_parameters()

    # torch.nn.RNN's read-only facts, for code that inspects them
    proj_size = 0

    @property
    def mode(self) -> str:
        return "RNN_RELU" if self.nonlinearity == "relu" else "RNN_TANH"

    def flatten_parameters(self) -> None:
        """A no-op kept for torch.nn.RNN compatibility: cuDNN wants one contiguous weight buffer,
        the fused kernels read each parameter where it is."""

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            torch.nn.init.uniform_(weight, -stdv, stdv)

    @property
    def _flat_weights(self) -> list[Tensor]:
        # Read on every forward, so never stale. A plain parameter is looked up in _parameters, as
        # Module.__getattr__ would after the normal lookup fails (that failure costs ~1 us each);
        # anything else (e.g. a parametrized weight, which is a property) goes through getattr.
        return [self._flat_weight(name) for name in self._flat_weights_names]

    def _flat_weight(self, name: str) -> Tensor:
        params = self._parameters
        return params[name] if name in params else getattr(self, name)

    @property
    def all_weights(self) -> list[list[Tensor]]:
        return self._group_weights(self._flat_weights)

    def _group_weights(self, flat: list[Tensor]) -> list[list[Tensor]]:
        """[w_ih, w_hh(, b_ih, b_hh)] per layer and direction, from the flat list."""
        n = 4 if self.bias else 2
        return [flat[i:i + n] for i in range(0, len(flat), n)]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    # torch.nn.RNNBase's argument checks and helpers, with its names, signatures and messages (code
    # written against torch.nn.RNN calls or overrides them; forward calls them as torch's does)
    def check_input(self, input: Tensor, batch_sizes: Optional[Tensor]) -> None:
        w = self._flat_weight(self._flat_weights_names[0])
        if input.dtype != w.dtype and not torch._C._is_any_autocast_enabled():
            raise ArgumentDtypeError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({w.dtype}). "
                                     f"Convert input: input.to({w.dtype}), or convert model: model.to({input.dtype})")
        expected = 2 if batch_sizes is not None else 3
        if input.dim() != expected:
            raise RuntimeError(f"input must have {expected} dimensions, got {input.dim()}")
        if input.size(-1) != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.size(-1)}")

    def get_expected_hidden_size(self, input: Tensor, batch_sizes: Optional[Tensor]) -> tuple[int, int, int]:
        if batch_sizes is not None:
            mini_batch = int(batch_sizes[0])
        else:
            mini_batch = input.size(0) if self.batch_first else input.size(1)
        return self.num_layers * (2 if self.bidirectional else 1), mini_batch, self.hidden_size

    def check_hidden_size(self, hx: Tensor, expected_hidden_size: tuple[int, int, int],
                          msg: str = "Expected hidden size {}, got {}") -> None:
        if hx.size() != expected_hidden_size:
            raise RuntimeError(msg.format(expected_hidden_size, list(hx.size())))

    def check_forward_args(self, input: Tensor, hidden: Tensor, batch_sizes: Optional[Tensor]) -> None:
        self.check_input(input, batch_sizes)
        self.check_hidden_size(hidden, self.get_expected_hidden_size(input, batch_sizes))

    def permute_hidden(self, hx: Tensor, permutation: Optional[Tensor]) -> Tensor:
        return hx if permutation is None else hx.index_select(1, permutation)

    @property
    def _all_weights(self) -> list[list[str]]:
        """The parameter names per layer and direction, as torch.nn.RNN's _all_weights."""
        return self._group_weights(self._flat_weights_names)

    def forward(self, input, hx: Optional[Tensor] = None):
        dirs = 2 if self.bidirectional else 1
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            B = int(batch_sizes[0])
            hx = data.new_zeros(self.num_layers * dirs, B, self.hidden_size) if hx is None \
                else self.permute_hidden(hx, sorted_indices)
            self.check_forward_args(data, hx, batch_sizes)
            rows, lengths = _packed_positions(batch_sizes)
            T = len(batch_sizes)
            rows = host_index_to(rows, data.device)
            x = data.new_zeros(T * B, data.shape[-1]).index_copy(0, rows, data).view(T, B, -1)
            out, h_n = self._run(x, hx, lengths)
            out = out.reshape(T * B, -1).index_select(0, rows)
            return PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices), \
                self.permute_hidden(h_n, unsorted_indices)
        dim = input.dim()
        if dim not in (2, 3):
            raise ValueError(f"RNN: Expected input to be 2D or 3D, got {dim}D tensor instead")
        batch_dim = 0 if self.batch_first else 1
        if dim == 2:  # unbatched
            input = input.unsqueeze(batch_dim)
            if hx is not None:
                if hx.dim() != 2:
                    raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
                hx = hx.unsqueeze(1)
        elif hx is not None and hx.dim() != 3:
            raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
        if hx is None:
            hx = input.new_zeros(self.num_layers * dirs, input.size(batch_dim), self.hidden_size)
        self.check_forward_args(input, hx, None)
        if input.size(1 - batch_dim) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        out, h_n = self._run(input.transpose(0, 1) if self.batch_first else input, hx, None)
        if self.batch_first:
            out = out.transpose(0, 1)
        if dim == 2:
            return out.squeeze(batch_dim), h_n.squeeze(1)
        return out, h_n

    def _run(self, x: Tensor, hx: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        # the parameters are read once per call (each module getattr costs about a microsecond) and
        # never cached across calls, so .to(), parameter replacement and load_state_dict are seen
        return F.rnn(x, hx, self._group_weights(self._flat_weights), self.nonlinearity, self.num_layers,
                     self.dropout, self.training, self.bidirectional, lengths)


class RNNCell(torch.nn.RNNCell):
    """torch.nn.RNNCell on the fused kernel (T = 1): (input (N, H_in) or (H_in), hx) -> h'."""
    __prepare_scriptable__ = not_scriptable

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
