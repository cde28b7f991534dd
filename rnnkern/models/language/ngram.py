"""N-gram language model of any order: add-k smoothing and interpolated Kneser-Ney.

Counts are kept as sorted numpy arrays, never as dense V^n tables: an n-gram gets an integer id
by hashing (id of its (n-1)-gram prefix) * V + (last token) and taking `np.unique` of those keys,
so each order holds exactly the distinct n-grams of the training text. Lookups are
`np.searchsorted` on the sorted keys. On the full KJV (0.9M words) a 5-gram model holds ~2M
distinct n-grams over all orders (tens of MB).

Interpolated Kneser-Ney (Chen & Goodman 1998, one discount per order):
    P_n(w | h) = max(c_n(h w) - D_n, 0) / c_n(h .)  +  D_n N1+(h .) / c_n(h .) * P_{n-1}(w | h')
where c_n is the raw count at the highest order and the continuation count N1+(. h w) (the
number of distinct tokens seen before h w) at lower orders; h' drops the oldest token of h.
An unseen context (c_n(h .) = 0) falls back to P_{n-1}. The unigram level interpolates the
continuation distribution with the uniform 1/V, so every token, <unk> included, has mass.
D_n = n1 / (n1 + 2 n2) from the count-of-counts of c_n, unless a discount is given.

Add-k: P(w | h) = (c(h w) + k) / (c(h .) + k V), uniform 1/V for an unseen context; the first
tokens of a stream (history shorter than order-1) use the add-k model of their history length.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch


class NGramLM:
    """N-gram LM over token ids 0..V-1.

    Args:
        order: n (1 = unigram).
        vocab_size: V.
        smoothing: "kn" (interpolated Kneser-Ney) or "addk".
        k: add-k constant.
        discount: fixed KN discount in (0, 1] for every order; None estimates one per order.
    """

    def __init__(self, order: int, vocab_size: int, smoothing: str = "kn", k: float = 0.01,
                 discount: Optional[float] = None) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if smoothing not in ("kn", "addk"):
            raise ValueError(f"smoothing must be 'kn' or 'addk', got {smoothing!r}")
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        if discount is not None and not 0 < discount <= 1:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        self.order, self.V, self.smoothing, self.k, self.fixed_discount = order, vocab_size, smoothing, k, discount
        # per order n (index n-1): sorted keys, raw counts, continuation counts (n < order)
        self.keys: list[np.ndarray] = []
        self.count: list[np.ndarray] = []
        self.cont: list[np.ndarray] = []
        self.num_tokens = 0

    # ----------------------------------------------------------------------------- fitting
    def fit(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> "NGramLM":
        tok = _as_np(ids)
        if tok.size and (tok.min() < 0 or tok.max() >= self.V):
            raise ValueError(f"token ids must lie in [0, {self.V})")
        M, V = tok.size, self.V
        self.num_tokens = M
        self.keys = [np.arange(V, dtype=np.int64)]
        self.count = [np.bincount(tok, minlength=V).astype(np.int64)]
        ids_prev = tok.copy()  # id of the (n-1)-gram ending at each position, -1 if none
        suffix_of: list[np.ndarray] = []  # per order n >= 2: (n-1)-gram id of each n-gram's suffix
        for n in range(2, self.order + 1):
            pos = np.arange(n - 1, M)
            key = ids_prev[pos - 1] * V + tok[pos]
            keys, first, inv, cnt = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
            ids_n = np.full(M, -1, dtype=np.int64)
            ids_n[pos] = inv
            suffix_of.append(ids_prev[pos[first]])
            self.keys.append(keys)
            self.count.append(cnt.astype(np.int64))
            ids_prev = ids_n
        # N1+(. g): distinct left extensions of each lower-order n-gram
        self.cont = [np.bincount(suffix_of[n - 1], minlength=self.keys[n - 1].size).astype(np.int64)
                     for n in range(1, self.order)]
        self._derive()
        return self

    def _derive(self) -> None:
        """Per-context totals and follower counts, and the KN discounts, from the stored counts."""
        N, V = self.order, self.V
        self.c_kn = [self.cont[n - 1] if n < N else self.count[n - 1] for n in range(1, N + 1)]
        self.tot_kn, self.nf_kn, self.tot_raw = [None], [None], [None]
        for n in range(2, N + 1):
            prefix = self.keys[n - 1] // V
            m = self.keys[n - 2].size
            c = self.c_kn[n - 1]
            self.tot_kn.append(np.bincount(prefix, weights=c, minlength=m))
            self.nf_kn.append(np.bincount(prefix, weights=(c > 0), minlength=m))
            self.tot_raw.append(np.bincount(prefix, weights=self.count[n - 1], minlength=m))
        self.D = []
        for n in range(1, N + 1):
            if self.fixed_discount is not None:
                self.D.append(float(self.fixed_discount))
                continue
            c = self.c_kn[n - 1]
            n1, n2 = int((c == 1).sum()), int((c == 2).sum())
            self.D.append(n1 / (n1 + 2 * n2) if n1 > 0 and n2 > 0 else 0.75)
        c1 = self.c_kn[0]
        self.tot1 = float(c1.sum())
        if self.tot1 > 0:
            D = self.D[0]
            self.p1 = np.maximum(c1 - D, 0) / self.tot1 + D * float((c1 > 0).sum()) / self.tot1 / V
        else:
            self.p1 = np.full(V, 1.0 / V)

    # ----------------------------------------------------------------------------- lookups
    def _lookup(self, n: int, prefix: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Id of the n-gram (prefix id, w) at order n >= 2, -1 where absent or prefix < 0."""
        keys = self.keys[n - 1]
        key = prefix * self.V + w
        j = np.searchsorted(keys, key)
        j = np.minimum(j, keys.size - 1) if keys.size else j
        ok = (prefix >= 0) & (keys.size > 0)
        if keys.size:
            ok &= keys[j] == key
        return np.where(ok, j, -1)

    def _stream_ids(self, tok: np.ndarray) -> list[np.ndarray]:
        """ids[n-1][i] = id of the n-gram ending at position i, -1 where unseen or too early."""
        out = [tok.copy()]
        M = tok.size
        for n in range(2, self.order + 1):
            g = np.full(M, -1, dtype=np.int64)
            if M >= n:
                g[n - 1:] = self._lookup(n, out[-1][n - 2:M - 1], tok[n - 1:])
            out.append(g)
        return out

    def _context_id(self, context: Sequence[int], m: int) -> int:
        """Id of the m-gram made of the last m tokens of `context` (-1 if unseen)."""
        toks = [int(t) for t in context[len(context) - m:]]
        g = toks[0]
        for j in range(1, m):
            g = int(self._lookup(j + 1, np.array([g]), np.array([toks[j]]))[0])
            if g < 0:
                return -1
        return g

    def _followers(self, n: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """(last tokens, slice indices) of the n-grams whose prefix is the (n-1)-gram h."""
        keys = self.keys[n - 1]
        lo, hi = np.searchsorted(keys, [h * self.V, (h + 1) * self.V])
        return keys[lo:hi] % self.V, np.arange(lo, hi)

    # ----------------------------------------------------------------------------- probabilities
    def distribution(self, context: Sequence[int] = ()) -> np.ndarray:
        """P(. | context) over the whole vocabulary, float64 (V,), sums to 1."""
        V, N = self.V, self.order
        if self.smoothing == "addk":
            n = min(N, len(context) + 1)
            if n == 1:
                c = self.count[0]
                return (c + self.k) / (c.sum() + self.k * V)
            h = self._context_id(context, n - 1)
            tot = self.tot_raw[n - 1][h] if h >= 0 else 0.0
            p = np.full(V, self.k / (tot + self.k * V))
            if tot > 0:
                ws, j = self._followers(n, h)
                p[ws] += self.count[n - 1][j] / (tot + self.k * V)
            return p
        p = self.p1.copy()
        for n in range(2, min(N, len(context) + 1) + 1):
            h = self._context_id(context, n - 1)
            if h < 0 or self.tot_kn[n - 1][h] <= 0:
                continue
            tot, nf, D = self.tot_kn[n - 1][h], self.nf_kn[n - 1][h], self.D[n - 1]
            ws, j = self._followers(n, h)
            p = p * (D * nf / tot)
            p[ws] += np.maximum(self.c_kn[n - 1][j] - D, 0) / tot
        return p

    def token_logprobs(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        """Natural log P(ids[i] | ids[:i]) for every position i (history cut to order-1), (M,)."""
        tok = _as_np(ids)
        M, N = tok.size, self.order
        g = self._stream_ids(tok)
        if self.smoothing == "addk":
            V, k = self.V, self.k
            c1 = self.count[0]
            p = (c1[tok] + k) / (c1.sum() + k * V)
            for n in range(2, N + 1):
                i = np.arange(n - 1, M)
                h = g[n - 2][i - 1]
                tot = _at(self.tot_raw[n - 1], h)
                c = _at(self.count[n - 1], g[n - 1][i])
                p[i] = (c + k) / (tot + k * V)
            return np.log(p)
        p = self.p1[tok]
        for n in range(2, N + 1):
            i = np.arange(n - 1, M)
            h = g[n - 2][i - 1]
            tot = _at(self.tot_kn[n - 1], h)
            use = tot > 0
            tot_safe = np.where(use, tot, 1.0)
            c = _at(self.c_kn[n - 1], g[n - 1][i])
            D = self.D[n - 1]
            pn = np.maximum(c - D, 0) / tot_safe + D * _at(self.nf_kn[n - 1], h) / tot_safe * p[i]
            p[i] = np.where(use, pn, p[i])
        return np.log(p)

    def nll(self, ids) -> tuple[float, int]:
        """(sum of -log P, count) over ids[1:] — every token but the first, like the neural LMs."""
        lp = self.token_logprobs(ids)
        return float(-lp[1:].sum()), max(lp.size - 1, 0)

    def perplexity(self, ids) -> float:
        s, n = self.nll(ids)
        return math.exp(s / n)

    def num_ngrams(self) -> list[int]:
        return [int((c > 0).sum()) for c in self.count]

    # ----------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        return {"order": self.order, "vocab_size": self.V, "smoothing": self.smoothing, "k": self.k,
                "discount": self.fixed_discount, "num_tokens": self.num_tokens,
                "keys": [torch.from_numpy(a) for a in self.keys],
                "count": [torch.from_numpy(a) for a in self.count],
                "cont": [torch.from_numpy(a) for a in self.cont]}

    @classmethod
    def from_state_dict(cls, sd: dict) -> "NGramLM":
        lm = cls(sd["order"], sd["vocab_size"], sd["smoothing"], sd["k"], sd["discount"])
        lm.num_tokens = sd["num_tokens"]
        lm.keys = [t.numpy() for t in sd["keys"]]
        lm.count = [t.numpy() for t in sd["count"]]
        lm.cont = [t.numpy() for t in sd["cont"]]
        lm._derive()
        return lm

    def __repr__(self) -> str:
        s = f"k={self.k}" if self.smoothing == "addk" else f"D={[round(d, 3) for d in getattr(self, 'D', [])]}"
        return f"NGramLM(order={self.order}, V={self.V}, smoothing={self.smoothing!r}, {s})"


def _at(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[idx] where idx >= 0, 0 where idx = -1 (unseen). `a` may be empty: a training text shorter
    than the order has no n-grams of the top orders (then every idx is -1)."""
    out = np.zeros(idx.shape, dtype=a.dtype)
    ok = idx >= 0
    out[ok] = a[idx[ok]]
    return out


def _as_np(ids) -> np.ndarray:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    return np.asarray(ids, dtype=np.int64).reshape(-1)
