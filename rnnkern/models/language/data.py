"""Corpus loading, the contiguous train/val/test split, and truncated-BPTT batch streams."""
from __future__ import annotations

import gzip
import lzma
import os
from dataclasses import dataclass
from importlib import resources
from typing import Iterator, Optional, Sequence

import torch

from rnnkern.models.language.vocab import Vocab, tokenize

EMBEDDED = "embedded"
DEFAULT_SPLIT = (0.9, 0.05, 0.05)


class CorpusError(ValueError):
    """A corpus that cannot be read or decoded; the message says which file and why."""


def embedded_corpus_path():
    """The King James Bible shipped as package data (rnnkern/data/kjv.txt.xz)."""
    return resources.files("rnnkern") / "data" / "kjv.txt.xz"


def _decode(raw: bytes, name: str, errors: str) -> str:
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise CorpusError(
            f"corpus {name} is not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} "
            f"(line {line}) {e.reason}; convert it to UTF-8, or pass --replace-bad-bytes "
            f"(errors='replace') to substitute U+FFFD for undecodable bytes") from None


def load_text(path: Optional[str] = None, errors: str = "strict") -> str:
    """Read a UTF-8 corpus: None or "embedded" -> the shipped KJV; .xz/.gz files are decompressed.

    Args:
        errors: "strict" raises CorpusError on bad bytes; "replace" substitutes U+FFFD.
    Raises:
        CorpusError: missing/unreadable file, bad compression, non-UTF-8 bytes, empty text.
    """
    if errors not in ("strict", "replace"):
        raise ValueError(f"errors must be 'strict' or 'replace', got {errors!r}")
    if path is None or path == EMBEDDED:
        with resources.as_file(embedded_corpus_path()) as p:
            return _decode(lzma.decompress(p.read_bytes()), "(embedded kjv.txt.xz)", errors)
    name = os.fspath(path)
    try:
        if os.path.isdir(name):
            raise IsADirectoryError(21, "Is a directory", name)
        with open(name, "rb") as f:
            raw = f.read()
        if name.endswith(".xz"):
            raw = lzma.decompress(raw)
        elif name.endswith(".gz"):
            raw = gzip.decompress(raw)
    except (OSError, lzma.LZMAError, EOFError) as e:
        raise CorpusError(f"cannot read corpus {name}: {e}") from None
    text = _decode(raw, name, errors)
    if not text.strip():
        raise CorpusError(f"corpus {name} is empty")
    return text


def split_text(text: str, fractions: Sequence[float] = DEFAULT_SPLIT) -> tuple[str, str, str]:
    """Contiguous train/val/test split at line boundaries: the first fractions[0] of the lines
    train, the next fractions[1] validate, the rest test. Each part is non-empty."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    lines = text.splitlines(keepends=True)
    n = len(lines)
    if n < 3:
        raise CorpusError(f"corpus has {n} line(s); a train/val/test split needs at least 3")
    a = min(max(1, round(n * fractions[0])), n - 2)
    b = min(max(a + 1, round(n * (fractions[0] + fractions[1]))), n - 1)
    return "".join(lines[:a]), "".join(lines[a:b]), "".join(lines[b:])


@dataclass
class Corpus:
    """A split corpus encoded with a vocabulary built on its train part."""
    vocab: Vocab
    train: torch.Tensor  # int64 ids, 1-D
    val: torch.Tensor
    test: torch.Tensor

    def split(self, name: str) -> torch.Tensor:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {name!r}")
        return getattr(self, name)


def build_corpus(text: str, level: str, fractions: Sequence[float] = DEFAULT_SPLIT,
                 vocab: Optional[Vocab] = None, min_freq: int = 1, max_size: Optional[int] = None,
                 lower: bool = False) -> Corpus:
    """Split `text`, build (or reuse) the vocabulary on train, and encode the three parts."""
    parts = split_text(text, fractions)
    if vocab is None:
        vocab = Vocab.build(tokenize(parts[0], level, lower), level, min_freq, max_size, lower)
    enc = [torch.tensor(vocab.encode(tokenize(p, vocab.level, vocab.lower)), dtype=torch.long)
           for p in parts]
    return Corpus(vocab, *enc)


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D id stream into `batch_size` contiguous streams: (L, B), column b holds
    ids[b*L:(b+1)*L]. The remainder that does not fill a column is dropped."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    L = ids.numel() // batch_size
    if L < 2:
        raise ValueError(f"{ids.numel()} tokens are too few for {batch_size} streams of length >= 2")
    return ids[: L * batch_size].view(batch_size, L).t().contiguous()


def bptt_chunks(streams: torch.Tensor, bptt: int, start: int = 0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Consecutive truncated-BPTT chunks of (L, B) streams: yields (offset, x, y), x = streams[i:i+T],
    y = streams[i+1:i+1+T] (teacher forcing: the target is the next token). Chunk k+1 begins where
    chunk k ended, so a hidden state carried between them continues each stream."""
    if bptt < 1:
        raise ValueError(f"bptt must be >= 1, got {bptt}")
    L = streams.size(0)
    for i in range(start, L - 1, bptt):
        T = min(bptt, L - 1 - i)
        yield i, streams[i:i + T], streams[i + 1:i + 1 + T]
