"""Character- and word-level vocabularies: <unk> with a size/frequency cutoff, <eos> per line.

A vocabulary is saved inside a checkpoint as plain lists/dicts (`to_dict`), so checkpoints load
with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Optional

UNK = "<unk>"
EOS = "<eos>"

# a word is a run of word characters (with an inner apostrophe: "LORD's"), or one punctuation mark
_WORD_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def tokenize_line(line: str, level: str, lower: bool = False) -> list[str]:
    """Split one line (no newline) into tokens; the caller appends <eos>."""
    if lower:
        line = line.lower()
    if level == "char":
        return list(line)
    if level == "word":
        return _WORD_RE.findall(line)
    raise ValueError(f"vocabulary level must be 'char' or 'word', got {level!r}")


def tokenize(text: str, level: str, lower: bool = False) -> list[str]:
    """Tokens of a whole text: each line's tokens followed by <eos>.

    A final line without a newline still gets its <eos>; an empty text gives no tokens.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out: list[str] = []
    for line in lines:
        out.extend(tokenize_line(line.rstrip("\r"), level, lower))
        out.append(EOS)
    return out


class Vocab:
    """Token <-> id map. Ids: 0 = <unk>, 1 = <eos>, then tokens by falling frequency (ties by text).

    Args:
        level: "char" or "word".
        tokens: training tokens to count (from `tokenize`).
        min_freq: tokens seen fewer times become <unk>.
        max_size: keep at most this many entries, <unk> and <eos> included (None: no limit).
        lower: lower-case text before tokenizing (stored, applied by `encode_text`).
    """

    def __init__(self, level: str, itos: list[str], lower: bool = False) -> None:
        if level not in ("char", "word"):
            raise ValueError(f"vocabulary level must be 'char' or 'word', got {level!r}")
        if itos[:2] != [UNK, EOS]:
            raise ValueError("a vocabulary starts with <unk>, <eos>")
        if len(set(itos)) != len(itos):
            raise ValueError("vocabulary has duplicate entries")
        self.level = level
        self.lower = lower
        self.itos = list(itos)
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    @classmethod
    def build(cls, tokens: Iterable[str], level: str, min_freq: int = 1,
              max_size: Optional[int] = None, lower: bool = False) -> "Vocab":
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < 2:
            raise ValueError(f"max_size must be >= 2 (<unk> and <eos>), got {max_size}")
        counts = Counter(t for t in tokens if t not in (UNK, EOS))
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max_size - 2]
        return cls(level, [UNK, EOS] + kept, lower)

    @classmethod
    def from_text(cls, text: str, level: str, **kw) -> "Vocab":
        return cls.build(tokenize(text, level, kw.get("lower", False)), level, **kw)

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def unk(self) -> int:
        return 0

    @property
    def eos(self) -> int:
        return 1

    def encode(self, tokens: Iterable[str]) -> list[int]:
        get = self.stoi.get
        return [get(t, 0) for t in tokens]

    def encode_text(self, text: str, eos: bool = True) -> list[int]:
        """Ids of a text. eos=False: no <eos> after a last line that has no newline (for priming)."""
        toks = tokenize(text, self.level, self.lower)
        if not eos and toks and not text.endswith("\n"):
            toks.pop()
        return self.encode(toks)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids: <eos> becomes a newline; words are joined by spaces."""
        if self.level == "char":
            # one character per id: <unk> shows as U+FFFD
            return "".join("\n" if i == 1 else "\ufffd" if i == 0 else self.itos[i] for i in ids)
        out: list[str] = []
        for i in ids:
            if i == 1:
                out.append("\n")
            else:
                if out and out[-1] != "\n":
                    out.append(" ")
                out.append(self.itos[i])
        return "".join(out)

    def to_dict(self) -> dict:
        return {"level": self.level, "lower": self.lower, "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        return cls(d["level"], list(d["itos"]), bool(d["lower"]))

    def __repr__(self) -> str:
        return f"Vocab(level={self.level!r}, size={len(self)}, lower={self.lower})"
