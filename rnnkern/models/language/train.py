"""Training, evaluation and checkpoints for the language models.

Neural LMs train with Adam and gradient clipping. The RNN LM uses truncated BPTT: the training
ids are cut into `batch_size` contiguous streams, read in chunks of `bptt` steps; the hidden state
is carried from one chunk to the next and detached, so gradients stop at the chunk boundary while
the forward state keeps the whole history. The fixed-context LM trains on random windows.

Under torchrun (WORLD_SIZE > 1) training runs with DistributedDataParallel: each rank takes its
share of the streams (RNN) or its own random windows (fixed), evaluation is sharded and summed,
and rank 0 writes checkpoints and logs.

Every model is scored the same way: -log P of every token of a split except its first, given all
earlier tokens of that split (an n-gram sees the last order-1 of them, the fixed LM the last K,
the RNN all of them). Perplexity = exp(mean nll); bits/char = mean nll / ln 2 for char models.

Checkpoints are plain dicts (config, vocabulary as lists, state_dict, optimizer, history) that
load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import copy
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from rnnkern.models.language.data import Corpus, EMBEDDED, batchify, bptt_chunks, build_corpus, load_text
from rnnkern.models.language.fixed_context import FixedContextLM, context_windows
from rnnkern.models.language.ngram import NGramLM
from rnnkern.models.language.rnn_lm import RNNLM
from rnnkern.models.language.vocab import Vocab
from rnnkern.models import TrainingDiverged
from rnnkern.models._resume import resume_settings, take_from_checkpoint

CKPT_FORMAT = "rnnkern-lm/1"
LN2 = math.log(2.0)


@dataclass
class LMConfig:
    """Everything a run needs; stored in the checkpoint. None fields take level-dependent defaults
    (see `resolve`)."""
    model: str = "rnn"              # ngram | fixed | rnn
    level: str = "char"             # char | word
    corpus: str = EMBEDDED          # "embedded" or a path to a UTF-8 text file (.xz/.gz ok)
    replace_bad_bytes: bool = False
    split: list = field(default_factory=lambda: [0.9, 0.05, 0.05])
    lower: bool = False
    min_freq: Optional[int] = None  # char: 1, word: 2
    max_vocab: Optional[int] = None
    # n-gram
    order: int = 3
    smoothing: str = "kn"           # kn | addk
    k: Optional[float] = None       # add-k constant; None: the best of a grid on val
    discount: Optional[float] = None
    # neural
    context: int = 5                # fixed-context window K
    embed_dim: Optional[int] = None
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.0
    nonlinearity: str = "tanh"
    tie_weights: bool = False
    one_hot: bool = False
    batch_size: int = 32
    bptt: int = 64
    lr: float = 2e-3
    clip: float = 1.0
    weight_decay: float = 0.0
    steps: Optional[int] = None
    epochs: Optional[float] = None
    time_budget: Optional[float] = None  # seconds of training (periodic evals included)
    eval_every: int = 500           # steps
    eval_seconds: Optional[float] = None  # also evaluate this often (wall clock)
    eval_tokens: Optional[int] = 50000    # val tokens for the periodic evals (final: all)
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = None   # torch.set_num_threads (None: leave torch's default)
    compile: bool = False
    out: str = "runs/lm"
    progress: bool = True
    plot: bool = True

    def resolve(self) -> "LMConfig":
        c = copy.deepcopy(self)
        for name, allowed in (("model", ("ngram", "fixed", "rnn")), ("level", ("char", "word")),
                              ("smoothing", ("kn", "addk")), ("nonlinearity", ("tanh", "relu")),
                              ("device", ("cpu", "cuda"))):
            if getattr(c, name) not in allowed:
                raise ValueError(f"{name} must be one of {'|'.join(allowed)}, got {getattr(c, name)!r}")
        if c.min_freq is None:
            c.min_freq = 1 if c.level == "char" else 2
        if c.embed_dim is None:
            c.embed_dim = c.hidden if c.tie_weights else (32 if c.level == "char" else 128)
        c.split = [float(f) for f in c.split]
        for name in ("batch_size", "bptt", "eval_every", "steps", "epochs", "time_budget"):
            v = getattr(c, name)
            if v is not None and not v > 0:  # 0 would divide by zero; negative budgets "train" 0 steps
                raise ValueError(f"{name} must be > 0, got {v}")
        if c.model != "ngram" and c.steps is None and c.epochs is None and c.time_budget is None:
            c.epochs = 1.0
        return c

    @classmethod
    def from_dict(cls, d: dict) -> "LMConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------------- distributed
def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def maybe_init_distributed(device: str) -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return True


def _device(cfg: LMConfig) -> torch.device:
    if cfg.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is visible")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


# --------------------------------------------------------------------------------- models
def build_model(cfg: LMConfig, vocab_size: int) -> nn.Module:
    if cfg.model == "fixed":
        return FixedContextLM(vocab_size, cfg.context, cfg.embed_dim, cfg.hidden, cfg.dropout)
    if cfg.model == "rnn":
        return RNNLM(vocab_size, cfg.embed_dim, cfg.hidden, cfg.layers, cfg.dropout, cfg.nonlinearity,
                     cfg.tie_weights, cfg.one_hot)
    raise ValueError(f"no neural model called {cfg.model!r}")


def load_corpus(cfg: LMConfig, vocab: Optional[Vocab] = None, corpus: Optional[str] = None) -> Corpus:
    text = load_text(corpus or cfg.corpus, "replace" if cfg.replace_bad_bytes else "strict")
    return build_corpus(text, cfg.level, cfg.split, vocab, cfg.min_freq, cfg.max_vocab, cfg.lower)


def _rnn_nll(model: RNNLM, ids: Tensor, streams: int, burn_in: int, chunk: int, rank: int = 0,
             world: int = 1) -> Tensor:
    """Sum of -log P(ids[t] | ids[:t]) over t >= 1, computed in `streams` parallel segments.

    A single left-to-right stream is the exact score but runs one token per kernel step; instead
    the targets are cut into `streams` contiguous segments and each segment first reads the
    `burn_in` tokens before it (scored by its neighbour, not here) to warm its hidden state up,
    so every target is scored exactly once with at least `burn_in` tokens of real history (the
    first segment has the true start). With burn_in >= the RNN's effective memory this equals the
    single-stream score; `streams=1` gives it exactly. With world > 1 this rank scores segments
    rank, rank + world, ... (the sum over ranks is the single-process score)."""
    n = ids.numel() - 1  # targets ids[1..n]
    S = max(1, min(streams, n // max(1, 4 * burn_in) or 1))
    L = math.ceil(n / S)
    starts = [s * L for s in range(S)]  # target block s covers targets starts[s]+1 .. starts[s]+L
    W = burn_in
    total_len = W + L
    pad = 1
    X = torch.full((total_len, S), pad, dtype=torch.long, device=ids.device)
    Y = torch.full((total_len, S), -100, dtype=torch.long, device=ids.device)  # -100: not scored
    for s, a in enumerate(starts):
        lo = max(0, a - W)  # burn-in inputs ids[lo:a], then scored inputs ids[a:a+L]
        b = min(a + L, n)
        seg_x = ids[lo:b]
        off = W - (a - lo)
        X[off:off + seg_x.numel(), s] = seg_x
        Y[W:W + (b - a), s] = ids[a + 1:b + 1]
    X, Y = X[:, rank::world], Y[:, rank::world]
    total = torch.zeros((), dtype=torch.float64, device=ids.device)
    if X.size(1) == 0:
        return total
    h = None
    for lo_, hi_ in ((0, W), (W, total_len)):  # burn-in, then the scored steps
        for i in range(lo_, hi_, chunk):
            j = min(i + chunk, hi_)
            logits, h = model(X[i:j], h)
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), Y[i:j].reshape(-1),
                                     ignore_index=-100, reduction="sum").double()
        if lo_ == 0 and rank == 0 and h is not None:
            # segment 0 has no history: it read only pad tokens, so reset it to the zero state a
            # single stream starts from (else streams=1 is not the exact single-stream score)
            h = h.clone()
            h[:, 0] = 0
    return total


@torch.no_grad()
def evaluate(model: nn.Module, ids: Tensor, cfg: LMConfig, device: torch.device, max_tokens: Optional[int] = None,
             distributed: bool = False, batch: int = 4096, streams: int = 32, burn_in: int = 200,
             chunk: int = 512) -> tuple[float, int]:
    """(sum of -log P over ids[1:], count) for a neural LM. With `distributed`, each rank scores
    its share of the targets (RNN: of the segments, see `_rnn_nll`; fixed: a contiguous range) and
    the sums are all-reduced, giving the single-process result. RNN LMs are scored in `streams`
    segments with `burn_in` tokens of warm-up history each."""
    model = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    if max_tokens is not None:
        ids = ids[:max_tokens + 1]
    rank, world = dist_info() if distributed else (0, 1)
    ids = ids.to(device)
    n = ids.numel()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = max(n - 1, 0)
    if count:
        if isinstance(model, RNNLM):
            total += _rnn_nll(model, ids, streams, burn_in, chunk, rank, world)
        else:
            win = context_windows(ids, model.context, pad=1)
            lo, hi = 1 + rank * (n - 1) // world, 1 + (rank + 1) * (n - 1) // world
            for i in range(lo, hi, batch):
                j = min(i + batch, hi)
                logits = model(win[i:j])
                total += F.cross_entropy(logits.float(), ids[i:j], reduction="sum").double()
    if distributed and world > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return float(total), count


def metrics(nll_sum: float, count: int, level: str, prefix: str) -> dict:
    loss = nll_sum / max(count, 1)
    m = {f"{prefix}_loss": loss, f"{prefix}_ppl": math.exp(min(loss, 700.0)), f"{prefix}_tokens": count}
    if level == "char":
        m[f"{prefix}_bpc"] = loss / LN2
    return m


def fmt_metrics(m: dict, prefix: str) -> str:
    def num(v: float, digits: int) -> str:  # fixed point, or 3 significant digits once it grows long
        return f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.3g}"
    s = f"{prefix} loss {num(m[prefix + '_loss'], 4)} ppl {num(m[prefix + '_ppl'], 2)}"
    if prefix + "_bpc" in m:
        s += f" bpc {num(m[prefix + '_bpc'], 3)}"
    return s


# --------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, cfg: LMConfig, vocab: Vocab, state: dict, **extra) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"format": CKPT_FORMAT, "config": asdict(cfg), "vocab": vocab.to_dict(), **state, **extra}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """The checkpoint's dict, checked to be an LM checkpoint; FileNotFoundError or ValueError
    (unreadable, not a torch file, another kind of checkpoint) with the reason otherwise."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch.load raises anything from UnpicklingError to KeyError on junk
        raise ValueError(f"cannot read checkpoint {path} (corrupt, truncated, or not a torch file): "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not an rnnkern language-model checkpoint (format {CKPT_FORMAT!r})")
    for key in ("config", "vocab"):
        if key not in ckpt:
            raise ValueError(f"checkpoint {path} lacks {key!r}")
    return ckpt


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """-> (cfg, vocab, model, ckpt). `model` is an NGramLM or an nn.Module in eval mode."""
    ckpt = read_checkpoint(path, device)
    cfg = LMConfig.from_dict(ckpt["config"])
    vocab = Vocab.from_dict(ckpt["vocab"])
    try:
        if cfg.model == "ngram":
            model = NGramLM.from_state_dict(ckpt["ngram"])
        else:
            model = build_model(cfg, len(vocab)).to(device)
            model.load_state_dict(ckpt["model"])
            model.eval()
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"checkpoint {path}: weights do not fit its config: "
                         f"{type(e).__name__}: {str(e).splitlines()[0]}") from e
    return cfg, vocab, model, ckpt


# What `--resume` keeps from the checkpoint: the architecture and vocabulary always (the weights
# depend on them), the other run settings unless given again (RESUME_DEFAULTS); the stopping
# rule (steps / epochs / time budget) as a whole unless any of them is given.
RESUME_FIXED = ("model", "level", "lower", "min_freq", "max_vocab", "order", "smoothing", "context", "embed_dim",
                "hidden", "layers", "nonlinearity", "tie_weights", "one_hot")
RESUME_DEFAULTS = ("corpus", "replace_bad_bytes", "split", "k", "discount", "dropout", "batch_size", "bptt", "lr",
                   "clip", "weight_decay", "eval_every", "eval_seconds", "eval_tokens", "seed", "threads")
RESUME_STOP = ("steps", "epochs", "time_budget")


def resume_config(path: str, given: dict, log=print) -> LMConfig:
    """The config that continues the run of checkpoint `path`, `given` being the options the user
    passed: RESUME_FIXED from the checkpoint, RESUME_DEFAULTS and RESUME_STOP from it unless
    given, the output folder = the checkpoint's folder unless given; device, threads etc. from
    `given` or LMConfig's defaults. Differences are logged."""
    old = read_checkpoint(path)["config"]
    cfg = LMConfig(**given)
    resume_settings(cfg, old, path, given, RESUME_FIXED, RESUME_DEFAULTS, log)
    if not any(k in given for k in RESUME_STOP):
        for key in RESUME_STOP:
            setattr(cfg, key, old.get(key))
    return cfg


def plot_history(history: list[dict], path: str | Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(steps, [h["val_loss"] for h in history], "s-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------- n-gram
def train_ngram(cfg: LMConfig, corpus: Corpus, log=print) -> dict:
    t0 = time.perf_counter()
    V = len(corpus.vocab)
    k = cfg.k
    if cfg.smoothing == "addk" and k is None:
        # choose k on val: add-k has no other way to trade seen against unseen n-grams
        best = None
        for kk in (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001):
            lm = NGramLM(cfg.order, V, "addk", kk).fit(corpus.train)
            s, n = lm.nll(corpus.val)
            if best is None or s < best[0]:
                best = (s, kk)
        k = best[1]
        log(f"add-k: k = {k} (best of a grid on val)")
    lm = NGramLM(cfg.order, V, cfg.smoothing, k if k is not None else 0.01, cfg.discount).fit(corpus.train)
    fit_s = time.perf_counter() - t0
    res = {"model": "ngram", "order": cfg.order, "smoothing": cfg.smoothing, "k": lm.k, "seconds": fit_s,
           "num_ngrams": lm.num_ngrams()}
    if cfg.smoothing == "kn":
        res["discounts"] = list(lm.D)
    for split in ("train", "val", "test"):
        res.update(metrics(*lm.nll(corpus.split(split)), cfg.level, split))
    cfg_saved = copy.deepcopy(cfg)
    cfg_saved.k = lm.k
    name = f"ngram{cfg.order}-{cfg.smoothing}-{cfg.level}-best-val{res['val_loss']:.4f}.pt"
    path = save_checkpoint(Path(cfg.out) / name, cfg_saved, corpus.vocab, {"ngram": lm.state_dict()},
                           metrics={k_: v for k_, v in res.items() if isinstance(v, (int, float))})
    res["best_ckpt"] = str(path)
    log(f"{cfg.order}-gram {cfg.smoothing} ({cfg.level}, V={V}) fitted in {fit_s:.1f}s | "
        + " | ".join(fmt_metrics(res, s) for s in ("train", "val", "test")))
    log(f"saved {path}")
    return res


# --------------------------------------------------------------------------------- neural
class _Interrupt:
    """Turns the first SIGINT into a flag (checked between steps); a second one raises."""

    def __init__(self) -> None:
        self.hit = False
        self.prev = None

    def __enter__(self):
        try:
            self.prev = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self.prev = None
        return self

    def _handler(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)
        return False


def train_neural(cfg: LMConfig, corpus: Corpus, resume: Optional[str] = None, log=print) -> dict:
    rank, world = dist_info()
    device = _device(cfg)
    vocab, V = corpus.vocab, len(corpus.vocab)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, V).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"step": 0, "epoch": 0, "offset": 0, "tokens": 0, "seconds": 0.0, "history": [], "best_val": None}
    hidden = None
    if resume:
        rcfg, rvocab, _, ck = load_checkpoint(resume, device)
        if rvocab.itos != vocab.itos or rcfg.model != cfg.model:
            raise ValueError(f"--resume {resume}: checkpoint was trained with a different model or vocabulary")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        for k_ in state:
            if k_ in ck:
                state[k_] = ck[k_]
        if world == 1 and isinstance(ck.get("hidden"), Tensor):
            hidden = ck["hidden"].to(device)
        if rank == 0:
            log(f"resumed from {resume} at step {state['step']} (epoch {state['epoch']}, offset {state['offset']})")
    torch.manual_seed(cfg.seed * 1000 + rank + state["step"])  # dropout / window draws, per rank
    if resume and world == 1 and isinstance(ck.get("rng"), Tensor):
        # the random state the run stopped with: the resumed run draws the same dropout masks
        # (and windows, below) as an uninterrupted one would, not a fresh stream seeded by the step
        torch.set_rng_state(ck["rng"].cpu())
        if device.type == "cuda" and isinstance(ck.get("cuda_rng"), Tensor):
            torch.cuda.set_rng_state(ck["cuda_rng"].cpu(), device)
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    # ---- data plan
    is_rnn = cfg.model == "rnn"
    if is_rnn:
        if cfg.batch_size % world:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
        streams = batchify(corpus.train, cfg.batch_size)[:, rank::world].contiguous().to(device)
        steps_per_epoch = math.ceil((streams.size(0) - 1) / cfg.bptt)
    else:
        train_ids = corpus.train.to(device)
        windows = context_windows(train_ids, cfg.context, pad=vocab.eos)
        steps_per_epoch = max(1, (train_ids.numel() - 1) // cfg.batch_size)
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 7919 + rank * 104729 + state["step"])
        if resume and world == 1 and isinstance(ck.get("window_rng"), Tensor) \
                and ck.get("window_rng_device") == gen.device.type:  # (a run resumed on another device re-seeds)
            gen.set_state(ck["window_rng"].cpu())
    max_steps = cfg.steps
    if cfg.epochs is not None:
        e_steps = math.ceil(cfg.epochs * steps_per_epoch)
        max_steps = e_steps if max_steps is None else min(max_steps, e_steps)

    out = Path(cfg.out)
    tag = f"{cfg.model}-{cfg.level}"
    best_path: Optional[Path] = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in model.parameters())
        log(f"{tag}: V={V}, {n_params / 1e6:.2f}M parameters, train {corpus.train.numel()} tokens, "
            f"{steps_per_epoch} steps/epoch, device {device}" + (f", {world} processes (DDP)" if world > 1 else "")
            + (f"; periodic val on its first {cfg.eval_tokens} tokens, final on all" if cfg.eval_tokens else ""))
        old = sorted(out.glob(f"{tag}-best-val*.pt"))
        if resume and old:
            best_path = old[0]
    best_state = copy.deepcopy(model.state_dict())

    def ckpt_state(hidden_now) -> dict:
        s = dict(state)
        s["model"] = model.state_dict()
        s["optimizer"] = opt.state_dict()
        if hidden_now is not None and world == 1:
            s["hidden"] = hidden_now.detach()
        if world == 1:  # (DDP ranks each have their own streams: they re-seed by step instead)
            s["rng"] = torch.get_rng_state()
            if device.type == "cuda":
                s["cuda_rng"] = torch.cuda.get_rng_state(device)
            if not is_rnn:
                s["window_rng"], s["window_rng_device"] = gen.get_state(), gen.device.type
        return s

    def sync_flags(stop: bool, ev: bool) -> tuple[bool, bool]:
        # rank 0 decides (time budget, Ctrl-C); all ranks must take the same branch
        if world == 1:
            return stop, ev
        t = torch.tensor([float(stop), float(ev)], device=device)
        dist.broadcast(t, 0)
        return bool(t[0]), bool(t[1])

    run_loss = torch.zeros((), dtype=torch.float64, device=device)
    run_tok = 0
    t_start = time.perf_counter() - state["seconds"]
    t_budget0 = time.perf_counter()
    step0 = state["step"]
    last_eval_t = time.perf_counter()
    interrupted = False
    pbar = None
    if rank == 0 and cfg.progress:
        if max_steps is None and cfg.time_budget:
            # a bar over the budget's seconds: its rate (seconds a second) says nothing, steps/s is in the postfix
            pbar = tqdm(total=int(cfg.time_budget), unit="s", desc=f"train {tag}", dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]")
        else:
            pbar = tqdm(total=max_steps, initial=state["step"], unit="step", desc=f"train {tag}", dynamic_ncols=True)
    logw = (lambda s: tqdm.write(s)) if pbar is not None else log

    def do_eval(final_step=False):
        nonlocal best_path, best_state, run_loss, run_tok, last_eval_t
        tr = float(run_loss) / max(run_tok, 1)
        if world > 1:
            buf = torch.tensor([float(run_loss), float(run_tok)], dtype=torch.float64, device=device)
            dist.all_reduce(buf)
            tr = float(buf[0] / buf[1].clamp_min(1))
        vs, vn = evaluate(model, corpus.val, cfg, device, cfg.eval_tokens, distributed=world > 1)
        vl = vs / max(vn, 1)
        epoch = (state["epoch"] + state["offset"] / (streams.size(0) - 1)) if is_rnn else state["step"] / steps_per_epoch
        rec = {"step": state["step"], "epoch": epoch, "tokens": state["tokens"],
               "seconds": time.perf_counter() - t_start, "train_loss": tr, "val_loss": vl}
        state["history"].append(rec)
        run_loss, run_tok = torch.zeros_like(run_loss), 0
        last_eval_t = time.perf_counter()
        if not math.isfinite(tr):  # (on every rank: the loss is all-reduced)
            raise TrainingDiverged(f"training diverged by step {state['step']} (train loss {tr}, val loss {vl}); "
                                   f"lower --lr (now {cfg.lr:g}) or clip gradients (--clip)")
        if rank != 0:
            return
        msg = (f"step {state['step']:>6} | epoch {rec['epoch']:.3f} | {rec['seconds']:7.1f}s | "
               + fmt_metrics(metrics(tr * 1, 1, cfg.level, "train"), "train") + " | "
               + fmt_metrics(metrics(vl, 1, cfg.level, "val"), "val")
               + f" | {state['tokens'] / max(rec['seconds'], 1e-9):,.0f} tok/s")
        logw(msg)
        if state["best_val"] is None or vl < state["best_val"]:
            state["best_val"] = vl
            best_state = copy.deepcopy(model.state_dict())
            new = out / f"{tag}-best-val{vl:.4f}.pt"
            save_checkpoint(new, cfg, vocab, ckpt_state(hidden))
            if best_path is not None and best_path != new and best_path.exists():
                best_path.unlink()
            best_path = new
        if cfg.plot and len(state["history"]) >= 1:
            plot_history(state["history"], out / f"{tag}-loss.png", f"{tag} ({cfg.corpus if cfg.corpus != EMBEDDED else 'KJV'})")

    model.train()
    with _Interrupt() as intr:
        try:
            while True:
                now = time.perf_counter()
                stop = (max_steps is not None and state["step"] >= max_steps) or \
                       (cfg.time_budget is not None and now - t_budget0 >= cfg.time_budget) or intr.hit
                ev = state["step"] > 0 and run_tok > 0 and (
                    state["step"] % cfg.eval_every == 0
                    or (cfg.eval_seconds is not None and now - last_eval_t >= cfg.eval_seconds))
                stop, ev = sync_flags(stop, ev)
                if ev and not stop:
                    do_eval()
                if stop:
                    interrupted = intr.hit
                    break
                # ---- one optimisation step
                if is_rnn:
                    if state["offset"] >= streams.size(0) - 1:
                        state["epoch"] += 1
                        state["offset"] = 0
                        hidden = None  # a new pass over the streams starts from a zero state
                    i = state["offset"]
                    T = min(cfg.bptt, streams.size(0) - 1 - i)
                    x, y = streams[i:i + T], streams[i + 1:i + 1 + T]
                    if hidden is not None:
                        hidden = hidden.detach()  # truncate BPTT: keep the state, drop its graph
                    logits, hidden = train_model(x, hidden)
                    loss = F.cross_entropy(logits.reshape(-1, V).float(), y.reshape(-1))
                    state["offset"] = i + T
                    ntok = y.numel()
                else:
                    pos = torch.randint(1, train_ids.numel(), (cfg.batch_size,), device=device, generator=gen)
                    logits = train_model(windows[pos])
                    loss = F.cross_entropy(logits.float(), train_ids[pos])
                    ntok = cfg.batch_size
                    state["epoch"] = state["step"] // steps_per_epoch
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip and cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                opt.step()
                state["step"] += 1
                state["tokens"] += ntok * world
                run_loss += loss.detach().double() * ntok
                run_tok += ntok
                if pbar is not None:
                    if max_steps is None and cfg.time_budget:
                        # whole seconds through update(), which redraws at the bar's own pace (a
                        # refresh() a step wrote ~70 redraws a second into a piped log)
                        pbar.update(min(int(time.perf_counter() - t_budget0), int(cfg.time_budget)) - pbar.n)
                    else:
                        pbar.update(1)
                    if state["step"] % 10 == 0:
                        rate = (state["step"] - step0) / max(time.perf_counter() - t_budget0, 1e-9)
                        pbar.set_postfix(loss=f"{loss.item():.3f}", step=state["step"], steps_s=f"{rate:.0f}",
                                         refresh=False)
        except KeyboardInterrupt:
            interrupted = True
    if pbar is not None:
        pbar.close()
    state["seconds"] = time.perf_counter() - t_start
    dist_ok = world > 1 and not interrupted
    if run_tok > 0 and not interrupted:
        do_eval()
    elif run_tok > 0 and rank == 0 and interrupted:
        # after Ctrl-C the other ranks may be gone: evaluate on rank 0 alone
        vs, vn = evaluate(model, corpus.val, cfg, device, cfg.eval_tokens)
        state["history"].append({"step": state["step"], "epoch": state["epoch"], "tokens": state["tokens"],
                                 "seconds": state["seconds"], "train_loss": float(run_loss) / run_tok,
                                 "val_loss": vs / max(vn, 1)})
        if state["best_val"] is None or vs / max(vn, 1) < state["best_val"]:
            state["best_val"] = vs / max(vn, 1)
            best_state = copy.deepcopy(model.state_dict())
            new = out / f"{tag}-best-val{state['best_val']:.4f}.pt"
            save_checkpoint(new, cfg, vocab, ckpt_state(hidden))
            if best_path is not None and best_path != new and best_path.exists():
                best_path.unlink()
            best_path = new
    res = {"model": cfg.model, "level": cfg.level, "steps": state["step"], "tokens": state["tokens"],
           "seconds": state["seconds"], "interrupted": interrupted, "history": state["history"],
           "device": str(device), "world_size": world, "threads": torch.get_num_threads()}
    if rank == 0:
        last = save_checkpoint(out / f"{tag}-last.pt", cfg, vocab, ckpt_state(hidden), interrupted=interrupted)
        res["last_ckpt"] = str(last)
        res["best_ckpt"] = str(best_path) if best_path else str(last)
        if interrupted:
            logw(f"interrupted at step {state['step']}: saved {last}; evaluating the best weights")
    # final evaluation of the best weights on the full val and test splits
    final = copy.deepcopy(model)
    final.load_state_dict(best_state if rank == 0 or not dist_ok else model.state_dict())
    if dist_ok:
        for p in final.state_dict().values():
            dist.broadcast(p, 0)
    for split in ("val", "test"):
        res.update(metrics(*evaluate(final, corpus.split(split), cfg, device, distributed=dist_ok), cfg.level, split))
    if state["history"]:
        res["train_loss"] = state["history"][-1]["train_loss"]
    if rank == 0:
        logw(f"final (best by val) | {fmt_metrics(res, 'val')} | {fmt_metrics(res, 'test')} | "
             f"{state['step']} steps, {state['tokens']:,} tokens, {state['seconds']:.0f}s on {device}")
    res["model_obj"] = final  # best by val
    res["last_model"] = model  # the weights training ended with
    return res


def train(cfg: LMConfig, resume: Optional[str] = None, log=print) -> dict:
    """Train one model as `cfg` says; returns metrics (and `model_obj`, `vocab`)."""
    cfg = cfg.resolve()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    maybe_init_distributed(cfg.device)
    rank, _ = dist_info()
    if rank != 0:
        log = lambda *a, **k: None  # noqa: E731
    vocab = None
    if resume:
        ck = read_checkpoint(resume)
        # the architecture from the checkpoint: the CLI's resume_config did this already, API callers need it
        take_from_checkpoint(cfg, ck["config"], RESUME_FIXED, log)
        vocab = Vocab.from_dict(ck["vocab"])
    corpus = load_corpus(cfg, vocab)
    if cfg.model == "ngram":
        res = train_ngram(cfg, corpus, log) if rank == 0 else {}
    else:
        res = train_neural(cfg, corpus, resume, log)
    res["vocab"] = corpus.vocab
    return res
