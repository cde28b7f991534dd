"""The lecture's hand-wired RNNs with binary-threshold units: parity, summation and comparison.

These are worked examples of what a recurrent net can compute with set (not learned) weights,
written with plain torch ops and a step activation step(z) = [z > 0] (the fused kernel only has
tanh/relu).

Parity as an Elman net h_t = step(W_ih x_t + W_hh h_{t-1} + b) with two hidden units:
    h1_t = step(x_t + p_{t-1} - 0.5)   x OR p      with p_{t-1} = h1_{t-1} - h2_{t-1}
    h2_t = step(x_t + p_{t-1} - 1.5)   x AND p
so W_ih = [[1], [1]], W_hh = [[1, -1], [1, -1]], b = [-0.5, -1.5], h_0 = 0, and the read-out
y_t = step(h1_t - h2_t - 0.5) = x_t XOR p_{t-1} is the parity of x_1..x_t. The hidden state
stays in {(0,0), (1,0), (1,1)} and p = h1 - h2 is exactly the running parity, for any length.
"""
from __future__ import annotations

import torch
from torch import Tensor


def step(z: Tensor) -> Tensor:
    """Binary threshold unit: 1 where z > 0, else 0."""
    return (z > 0).to(z.dtype)


class ParityRNN:
    """forward(bits: (B, T) of 0/1) -> (B, T): y[:, t] = parity of bits[:, :t+1]."""

    def __init__(self, dtype=torch.float32) -> None:
        self.W_ih = torch.tensor([[1.0], [1.0]], dtype=dtype)
        self.W_hh = torch.tensor([[1.0, -1.0], [1.0, -1.0]], dtype=dtype)
        self.b = torch.tensor([-0.5, -1.5], dtype=dtype)
        self.W_ho = torch.tensor([[1.0, -1.0]], dtype=dtype)
        self.b_o = torch.tensor([-0.5], dtype=dtype)

    def __call__(self, bits: Tensor) -> Tensor:
        x = bits.to(self.W_ih.dtype)
        B, T = x.shape
        h = torch.zeros(B, 2, dtype=x.dtype, device=x.device)
        ys = []
        for t in range(T):
            h = step(x[:, t:t + 1] @ self.W_ih.T + h @ self.W_hh.T + self.b)
            ys.append(step(h @ self.W_ho.T + self.b_o))
        return torch.cat(ys, 1) if ys else x.new_zeros(B, 0)


class SummationRNN:
    """A single linear unit with self-loop weight 1 and input weight 1: h_t = h_{t-1} + x_t,
    so forward(x: (B, T)) -> (B, T) running sums."""

    def __init__(self, dtype=torch.float64) -> None:
        self.w_ih, self.w_hh, self.dtype = 1.0, 1.0, dtype

    def __call__(self, x: Tensor) -> Tensor:
        x = x.to(self.dtype)
        h = x.new_zeros(x.size(0))
        ys = []
        for t in range(x.size(1)):
            h = self.w_hh * h + self.w_ih * x[:, t]
            ys.append(h)
        return torch.stack(ys, 1) if ys else x.new_zeros(x.size(0), 0)


class ComparisonRNN:
    """Is the running sum of the first input larger than that of the second?
    Linear hidden unit h_t = h_{t-1} + x_t[0] - x_t[1] (input weights +1, -1, self-loop 1),
    threshold read-out y_t = step(h_t). forward(x: (B, T, 2)) -> (B, T) in {0, 1}."""

    def __init__(self, dtype=torch.float64) -> None:
        self.w_ih = torch.tensor([1.0, -1.0], dtype=dtype)
        self.w_hh = 1.0

    def __call__(self, x: Tensor) -> Tensor:
        x = x.to(self.w_ih.dtype)
        h = x.new_zeros(x.size(0))
        ys = []
        for t in range(x.size(1)):
            h = self.w_hh * h + x[:, t] @ self.w_ih
            ys.append(step(h))
        return torch.stack(ys, 1) if ys else x.new_zeros(x.size(0), 0)
