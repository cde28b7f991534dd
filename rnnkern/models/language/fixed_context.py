"""Fixed-context neural LM (Bengio et al. 2003): the previous K tokens -> embeddings ->
concatenated -> tanh hidden layer -> softmax over the vocabulary. The embedding matrix is the
learned word representation (`word_vectors`)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class FixedContextLM(nn.Module):
    """Args: vocab_size V, context K, embed_dim E, hidden_size H, dropout p.

    forward(context: (N, K) int64, oldest first) -> logits (N, V).
    """

    def __init__(self, vocab_size: int, context: int = 4, embed_dim: int = 64, hidden_size: int = 256,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        self.vocab_size, self.context = vocab_size, context
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.hidden = nn.Linear(context * embed_dim, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, vocab_size)

    @property
    def word_vectors(self) -> Tensor:
        """(V, E) embedding matrix: row i represents token i."""
        return self.embedding.weight

    def forward(self, context: Tensor) -> Tensor:
        e = self.embedding(context).flatten(1)  # (N, K*E)
        return self.out(self.drop(torch.tanh(self.hidden(self.drop(e)))))


def context_windows(ids: Tensor, context: int, pad: int) -> Tensor:
    """(M, K) view: row i holds the K tokens before ids[i] (left-padded with `pad`, e.g. <eos>)."""
    padded = torch.cat([torch.full((context,), pad, dtype=ids.dtype, device=ids.device), ids])
    return padded.unfold(0, context, 1)[: ids.numel()]
