"""`rnnkern lm train | sample | eval` (registered on rnnkern.cli's subparsers by add_parser)."""
from __future__ import annotations

import argparse
import json
import sys

from rnnkern.models.language.data import EMBEDDED, CorpusError

_DEFAULTS = None


def _defaults():
    global _DEFAULTS
    if _DEFAULTS is None:
        from rnnkern.models.language.train import LMConfig
        _DEFAULTS = LMConfig()
    return _DEFAULTS


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = _defaults()
    g = p.add_argument_group("model and data")
    g.add_argument("--model", choices=["ngram", "fixed", "rnn"], default=d.model)
    g.add_argument("--level", choices=["char", "word"], default=d.level)
    g.add_argument("--corpus", default=EMBEDDED, metavar="PATH",
                   help="UTF-8 text file (.xz/.gz decompressed); default: the embedded King James Bible")
    g.add_argument("--replace-bad-bytes", action="store_true",
                   help="replace bytes that are not UTF-8 with U+FFFD instead of stopping")
    g.add_argument("--split", type=float, nargs=3, default=d.split, metavar=("TRAIN", "VAL", "TEST"),
                   help="contiguous split fractions by line (default: 0.9 0.05 0.05)")
    g.add_argument("--lower", action="store_true", help="lower-case the text")
    g.add_argument("--min-freq", type=int, default=None, help="rarer tokens become <unk> (default: char 1, word 2)")
    g.add_argument("--max-vocab", type=int, default=None, help="vocabulary size cap, <unk>/<eos> included")
    g = p.add_argument_group("n-gram")
    g.add_argument("--order", type=int, default=d.order)
    g.add_argument("--smoothing", choices=["kn", "addk"], default=d.smoothing)
    g.add_argument("--k", type=float, default=None, help="add-k constant (default: best of a grid on val)")
    g.add_argument("--discount", type=float, default=None, help="fixed KN discount (default: n1/(n1+2 n2) per order)")
    g = p.add_argument_group("neural models")
    g.add_argument("--context", type=int, default=d.context, help="fixed-context window K")
    g.add_argument("--embed-dim", type=int, default=None, help="default: char 32, word 128 (= hidden when tied)")
    g.add_argument("--hidden", type=int, default=d.hidden)
    g.add_argument("--layers", type=int, default=d.layers)
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--nonlinearity", choices=["tanh", "relu"], default=d.nonlinearity)
    g.add_argument("--tie-weights", action="store_true")
    g.add_argument("--one-hot", action="store_true", help="one-hot RNN input instead of an embedding")
    g = p.add_argument_group("training")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="RNN: number of streams; fixed: windows")
    g.add_argument("--bptt", type=int, default=d.bptt, help="truncated-BPTT chunk length")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--clip", type=float, default=d.clip, help="gradient-norm clip (0: off)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--epochs", type=float, default=None, help="default 1 when no --steps/--time-budget")
    g.add_argument("--time-budget", type=float, default=None, metavar="SECONDS")
    g.add_argument("--eval-every", type=int, default=d.eval_every, metavar="STEPS")
    g.add_argument("--eval-seconds", type=float, default=None, help="also evaluate this often (wall clock)")
    g.add_argument("--eval-tokens", type=int, default=d.eval_tokens,
                   help="val tokens for periodic evaluation (the final one uses all); 0: all")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", choices=["cpu", "cuda"], default=d.device)
    g.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    g.add_argument("--out", default=d.out, help="checkpoint / plot directory")
    g.add_argument("--resume", metavar="CKPT", default=None, help="continue from a checkpoint")
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    g.add_argument("--no-plot", action="store_true", help="no loss-curve PNG")
    g.add_argument("--json", metavar="PATH", help="write the final metrics as JSON")


def _cmd_train(args: argparse.Namespace) -> int:
    from rnnkern.models.language.train import LMConfig, train
    cfg = LMConfig(model=args.model, level=args.level, corpus=args.corpus, replace_bad_bytes=args.replace_bad_bytes,
                   split=list(args.split), lower=args.lower, min_freq=args.min_freq, max_vocab=args.max_vocab,
                   order=args.order, smoothing=args.smoothing, k=args.k, discount=args.discount,
                   context=args.context, embed_dim=args.embed_dim, hidden=args.hidden, layers=args.layers,
                   dropout=args.dropout, nonlinearity=args.nonlinearity, tie_weights=args.tie_weights,
                   one_hot=args.one_hot, batch_size=args.batch_size, bptt=args.bptt, lr=args.lr, clip=args.clip,
                   weight_decay=args.weight_decay, steps=args.steps, epochs=args.epochs,
                   time_budget=args.time_budget, eval_every=args.eval_every, eval_seconds=args.eval_seconds,
                   eval_tokens=args.eval_tokens or None, seed=args.seed, device=args.device, threads=args.threads,
                   compile=args.compile,
                   out=args.out, progress=not args.no_progress, plot=not args.no_plot)
    try:
        res = train(cfg, resume=args.resume)
    except (CorpusError, ValueError, FileNotFoundError) as e:
        print(f"rnnkern lm train: error: {e}", file=sys.stderr)
        return 2
    if args.json and res.get("vocab") is not None and "val_loss" in res:
        from rnnkern.models.language.train import dist_info
        if dist_info()[0] == 0:
            with open(args.json, "w") as f:
                json.dump({k: v for k, v in res.items() if k not in ("model_obj", "last_model", "vocab")}, f, indent=1)
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch
    from rnnkern.models.language.sampling import FixedStepper, NGramStepper, RNNStepper, generate
    from rnnkern.models.language.train import load_checkpoint
    device = "cuda" if args.device == "cuda" else "cpu"
    try:
        cfg, vocab, model, _ = load_checkpoint(args.ckpt, device)
    except (FileNotFoundError, ValueError) as e:
        print(f"rnnkern lm sample: error: {e}", file=sys.stderr)
        return 2
    if cfg.model == "ngram":
        stepper = NGramStepper(model)
    elif cfg.model == "fixed":
        stepper = FixedStepper(model, vocab.eos, device)
    else:
        stepper = RNNStepper(model, device)
    prime = vocab.encode_text(args.prime, eos=False) if args.prime else []
    if args.seed is not None:
        torch.manual_seed(args.seed)
    ids = generate(stepper, prime, args.length, args.temperature, args.top_k, args.seed, args.greedy)
    sep = "" if vocab.level == "char" or not args.prime or args.prime.endswith((" ", "\n")) else " "
    print(args.prime + sep + vocab.decode(ids))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import math
    from rnnkern.models.language.train import evaluate, fmt_metrics, load_checkpoint, load_corpus, metrics, _device
    try:
        cfg, vocab, model, _ = load_checkpoint(args.ckpt, args.device)
        corpus = load_corpus(cfg, vocab, args.corpus)
    except (FileNotFoundError, ValueError, CorpusError) as e:
        print(f"rnnkern lm eval: error: {e}", file=sys.stderr)
        return 2
    res = {}
    for split in args.splits:
        ids = corpus.split(split)
        if cfg.model == "ngram":
            s, n = model.nll(ids)
        else:
            cfg.device = args.device
            s, n = evaluate(model, ids, cfg, _device(cfg))
        res.update(metrics(s, n, cfg.level, split))
        print(f"{cfg.model}-{cfg.level} {args.ckpt}: {fmt_metrics(res, split)} ({n} tokens)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if all(math.isfinite(v) for v in res.values()) else 1


def add_parser(subparsers) -> None:
    """Register `lm` (train | sample | eval) on rnnkern.cli's subparsers."""
    lm = subparsers.add_parser("lm", help="language models: n-gram, fixed-context, RNN (train | sample | eval)",
                               description="Language models on the embedded King James Bible or any UTF-8 text.")
    sub = lm.add_subparsers(dest="lm_command", required=True)

    p = sub.add_parser("train", help="train an n-gram, fixed-context or RNN LM",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_train_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("ckpt", metavar="CKPT")
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--length", type=int, default=500, help="tokens to generate")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("eval", help="perplexity (and bits/char) of a checkpoint on its val/test split")
    p.add_argument("ckpt", metavar="CKPT")
    p.add_argument("--splits", nargs="+", choices=["train", "val", "test"], default=["val", "test"])
    p.add_argument("--corpus", default=None, metavar="PATH", help="another corpus, split the same way")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", metavar="PATH")
    p.set_defaults(func=_cmd_eval)
