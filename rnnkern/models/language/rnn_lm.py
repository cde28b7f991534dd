"""RNN language model on rnnkern.nn.RNN (the fused Elman kernel): embedding (or one-hot) ->
RNN (layers, dropout) -> linear, with optional weight tying."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkern.nn import RNN


class RNNLM(nn.Module):
    """Args:
        vocab_size: V.
        embed_dim: E (ignored with one_hot, where the RNN input is the V-dim one-hot vector).
        hidden_size, num_layers, nonlinearity ("tanh" | "relu"), dropout: as torch.nn.RNN; dropout
            is also applied to the embedding and to the last layer's output.
        tie_weights: share the output matrix with the embedding (needs embed_dim == hidden_size).
        one_hot: feed one-hot vectors (char-level) instead of a learned embedding.

    forward(x: (T, B) int64, h: (num_layers, B, H) or None) -> (logits (T, B, V), h_n).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 128, hidden_size: int = 256, num_layers: int = 1,
                 dropout: float = 0.0, nonlinearity: str = "tanh", tie_weights: bool = False,
                 one_hot: bool = False) -> None:
        super().__init__()
        if tie_weights and one_hot:
            raise ValueError("tie_weights needs a learned embedding; it cannot be combined with one_hot")
        if tie_weights and embed_dim != hidden_size:
            raise ValueError(f"tie_weights needs embed_dim == hidden_size, got {embed_dim} and {hidden_size}")
        self.vocab_size, self.one_hot, self.hidden_size, self.num_layers = vocab_size, one_hot, hidden_size, num_layers
        self.embedding = None if one_hot else nn.Embedding(vocab_size, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.rnn = RNN(vocab_size if one_hot else embed_dim, hidden_size, num_layers=num_layers,
                       nonlinearity=nonlinearity, dropout=dropout if num_layers > 1 else 0.0)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        # small uniform init (as in PyTorch's word_language_model): with the default N(0, 1)
        # embedding a tied decoder starts with logits of std ~sqrt(H) and the loss diverges
        if self.embedding is not None:
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if not tie_weights:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def init_hidden(self, batch_size: int, device=None, dtype=None) -> Tensor:
        p = self.decoder.weight
        return torch.zeros(self.num_layers, batch_size, self.hidden_size,
                           device=device or p.device, dtype=dtype or p.dtype)

    def forward(self, x: Tensor, h: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if self.one_hot:
            e = F.one_hot(x, self.vocab_size).to(self.decoder.weight.dtype)
        else:
            e = self.drop(self.embedding(x))
        if h is None:
            h = self.init_hidden(x.size(1))
        out, h_n = self.rnn(e, h)
        return self.decoder(self.drop(out)), h_n
