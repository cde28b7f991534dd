"""Sampling from the LMs one token at a time, each fed back: temperature, top-k, priming, seed,
greedy."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from rnnkern.models.language.fixed_context import FixedContextLM
from rnnkern.models.language.ngram import NGramLM
from rnnkern.models.language.rnn_lm import RNNLM


def sample_logits(logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                  generator: Optional[torch.Generator] = None) -> int:
    """One token id from (V,) logits. temperature == 0 -> argmax (greedy); small temperatures
    approach greedy (the softmax, computed in fp64 after subtracting the max, collapses onto the
    argmax); top_k keeps the k largest logits."""
    if not temperature >= 0:  # (NaN too)
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    logits = logits.detach().double().cpu().reshape(-1)
    if temperature == 0:
        return int(logits.argmax())
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_k < logits.numel():
            kth = torch.topk(logits, top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
    # subtract the max before dividing: logits / T overflows to inf (inf - inf = NaN) for tiny T;
    # tokens masked to -inf stay -inf (-inf / inf would be NaN)
    z = torch.where(logits == float("-inf"), logits, (logits - logits.max()) / temperature)
    probs = torch.softmax(z, dim=0)
    return int(torch.multinomial(probs, 1, generator=generator))


class RNNStepper:
    """Feeds tokens through an RNNLM keeping the hidden state; returns next-token logits."""

    def __init__(self, model: RNNLM, device="cpu") -> None:
        self.model, self.device, self.h = model, torch.device(device), None

    @torch.no_grad()
    def feed(self, ids: Sequence[int]) -> Tensor:
        x = torch.tensor(list(ids), dtype=torch.long, device=self.device).view(-1, 1)
        logits, self.h = self.model(x, self.h)
        return logits[-1, 0]


class FixedStepper:
    """Keeps the last K tokens (<eos>-padded) for a FixedContextLM."""

    def __init__(self, model: FixedContextLM, pad: int, device="cpu") -> None:
        self.model, self.device = model, torch.device(device)
        self.window = [pad] * model.context

    @torch.no_grad()
    def feed(self, ids: Sequence[int]) -> Tensor:
        self.window = (self.window + list(ids))[-self.model.context:]
        ctx = torch.tensor(self.window, dtype=torch.long, device=self.device).view(1, -1)
        return self.model(ctx)[0]


class NGramStepper:
    """Keeps the last order-1 tokens for an NGramLM; logits are log-probabilities."""

    def __init__(self, model: NGramLM) -> None:
        self.model, self.history = model, []

    def feed(self, ids: Sequence[int]) -> Tensor:
        self.history = (self.history + list(ids))[-(self.model.order - 1):] if self.model.order > 1 else []
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(self.model.distribution(self.history)))


def generate(stepper, prime: Sequence[int], length: int, temperature: float = 1.0,
             top_k: Optional[int] = None, seed: Optional[int] = None, greedy: bool = False,
             start: int = 1) -> list[int]:
    """Feed `prime` (or the single token `start`, <eos> = start of a line, if prime is empty),
    then sample `length` tokens, feeding each back. Returns the sampled ids (without the prime).
    The same seed gives the same sample."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    logits = stepper.feed(list(prime) if len(prime) else [start])
    out: list[int] = []
    for _ in range(length):
        t = sample_logits(logits, 0.0 if greedy else temperature, top_k, gen)
        out.append(t)
        logits = stepper.feed([t])
    return out
