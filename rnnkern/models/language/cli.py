"""`rnnkern lm train | sample | eval` (registered on rnnkern.cli's subparsers by add_parser)."""
from __future__ import annotations

import argparse
import json
import sys

from rnnkern._argtypes import (check_output_dir, check_output_file, nonnegative_float, nonnegative_int, positive_float,
                               positive_int, require_visible_device)
from rnnkern.models._dist import leave_process_group
from rnnkern.models.language.data import CorpusError


_DEFAULTS = None


def _defaults():
    global _DEFAULTS
    if _DEFAULTS is None:
        from rnnkern.models.language.train import LMConfig
        _DEFAULTS = LMConfig()
    return _DEFAULTS


def _add_train_args(p: argparse.ArgumentParser) -> None:
    # Every option defaults to None here, so a resumed run can tell what the user passed from what
    # it should take from the checkpoint; the help states LMConfig's defaults.
    d = _defaults()

    def dflt(name: str, text: str = "") -> str:
        return f"{text} (default: {getattr(d, name)})".strip()

    g = p.add_argument_group("model and data")
    g.add_argument("--model", choices=["ngram", "fixed", "rnn"], default=None, help=dflt("model"))
    g.add_argument("--level", choices=["char", "word"], default=None, help=dflt("level"))
    g.add_argument("--corpus", default=None, metavar="PATH",
                   help="UTF-8 text file (.xz/.gz decompressed) (default: the embedded King James Bible)")
    g.add_argument("--replace-bad-bytes", action="store_true", default=None,
                   help="replace bytes that are not UTF-8 with U+FFFD instead of stopping")
    g.add_argument("--split", type=nonnegative_float, nargs=3, default=None, metavar=("TRAIN", "VAL", "TEST"),
                   help="contiguous split fractions by line (default: 0.9 0.05 0.05)")
    g.add_argument("--lower", action="store_true", default=None, help="lower-case the text")
    g.add_argument("--min-freq", type=positive_int, default=None,
                   help="rarer tokens become <unk> (default: char 1, word 2)")
    g.add_argument("--max-vocab", type=positive_int, default=None,
                   help="vocabulary size cap, <unk>/<eos> included (default: none)")
    g = p.add_argument_group("n-gram")
    g.add_argument("--order", type=positive_int, default=None, help=dflt("order"))
    g.add_argument("--smoothing", choices=["kn", "addk"], default=None, help=dflt("smoothing"))
    g.add_argument("--k", type=positive_float, default=None, help="add-k constant (default: best of a grid on val)")
    g.add_argument("--discount", type=float, default=None, help="fixed KN discount (default: n1/(n1+2 n2) per order)")
    g = p.add_argument_group("neural models (with --resume the architecture comes from the checkpoint)")
    g.add_argument("--context", type=positive_int, default=None, help=dflt("context", "fixed-context window K"))
    g.add_argument("--embed-dim", type=positive_int, default=None,
                   help="(default: char 32, word 128, = hidden when tied)")
    g.add_argument("--hidden", type=positive_int, default=None, help=dflt("hidden"))
    g.add_argument("--layers", type=positive_int, default=None, help=dflt("layers"))
    g.add_argument("--dropout", type=nonnegative_float, default=None, help=dflt("dropout"))
    g.add_argument("--nonlinearity", choices=["tanh", "relu"], default=None, help=dflt("nonlinearity"))
    g.add_argument("--tie-weights", action="store_true", default=None)
    g.add_argument("--one-hot", action="store_true", default=None, help="one-hot RNN input instead of an embedding")
    g = p.add_argument_group("training (with --resume, the checkpoint's settings unless given)")
    g.add_argument("--batch-size", type=positive_int, default=None,
                   help=dflt("batch_size", "RNN: number of streams; fixed: windows"))
    g.add_argument("--bptt", type=positive_int, default=None, help=dflt("bptt", "truncated-BPTT chunk length"))
    g.add_argument("--lr", type=positive_float, default=None, help=dflt("lr"))
    g.add_argument("--clip", type=nonnegative_float, default=None, help=dflt("clip", "gradient-norm clip (0: off)"))
    g.add_argument("--weight-decay", type=nonnegative_float, default=None, help=dflt("weight_decay"))
    g.add_argument("--steps", type=positive_int, default=None, help="stop after this many steps in all")
    g.add_argument("--epochs", type=positive_float, default=None, help="default 1 when no --steps/--time-budget")
    g.add_argument("--time-budget", type=positive_float, default=None, metavar="SECONDS",
                   help="stop after this long (this invocation)")
    g.add_argument("--eval-every", type=positive_int, default=None, metavar="STEPS", help=dflt("eval_every"))
    g.add_argument("--eval-seconds", type=positive_float, default=None, help="also evaluate this often (wall clock)")
    g.add_argument("--eval-tokens", type=nonnegative_int, default=None,
                   help=dflt("eval_tokens", "val tokens for periodic evaluation (the final one uses all); 0: all"))
    g.add_argument("--seed", type=int, default=None, help=dflt("seed"))
    g.add_argument("--device", choices=["cpu", "cuda"], default=None, help=dflt("device"))
    g.add_argument("--threads", type=positive_int, default=None, help="CPU threads (torch.set_num_threads)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    g.add_argument("--out", default=None,
                   help=f"checkpoint / plot directory (default: {d.out}; with --resume, the checkpoint's folder)")
    g.add_argument("--resume", metavar="CKPT", default=None,
                   help="continue the run of a checkpoint: its architecture, vocabulary and settings")
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    g.add_argument("--no-plot", action="store_true", help="no loss-curve PNG")
    g.add_argument("--json", metavar="PATH", help="write the final metrics as JSON")


# options of `lm train` that map one to one onto LMConfig fields
_CONFIG_OPTIONS = ("model", "level", "corpus", "replace_bad_bytes", "split", "lower", "min_freq", "max_vocab",
                   "order", "smoothing", "k", "discount", "context", "embed_dim", "hidden", "layers", "dropout",
                   "nonlinearity", "tie_weights", "one_hot", "batch_size", "bptt", "lr", "clip", "weight_decay",
                   "steps", "epochs", "time_budget", "eval_every", "eval_seconds", "seed", "device", "threads",
                   "out")


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from rnnkern.models.language.train import LMConfig, resume_config, train
    require_visible_device(args.parser, args.device)
    if args.json:
        check_output_file(args.parser, "--json", args.json)
    if args.out:
        check_output_dir(args.parser, "--out", args.out)
    given = {k: getattr(args, k) for k in _CONFIG_OPTIONS if getattr(args, k) is not None}
    if "split" in given:
        given["split"] = list(given["split"])
    if args.eval_tokens is not None:
        given["eval_tokens"] = args.eval_tokens or None  # 0: all
    given.update(compile=args.compile, progress=not args.no_progress, plot=not args.no_plot)
    try:
        try:
            if args.resume:
                quiet = int(os.environ.get("RANK", "0")) != 0  # under torchrun, rank 0 alone reports
                cfg = resume_config(args.resume, given, log=(lambda *a: None) if quiet else print)
            else:
                cfg = LMConfig(**given)
            res = train(cfg, resume=args.resume)
        except (CorpusError, ValueError, FileNotFoundError) as e:
            print(f"rnnkern lm train: error: {e}", file=sys.stderr)
            return 2
        if args.json and res.get("vocab") is not None and "val_loss" in res:
            from rnnkern.models.language.train import dist_info
            if dist_info()[0] == 0:
                with open(args.json, "w") as f:
                    json.dump({k: v for k, v in res.items() if k not in ("model_obj", "last_model", "vocab")}, f,
                              indent=1)
        return 0
    finally:
        leave_process_group()  # under torchrun


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch
    from rnnkern.models.language.sampling import FixedStepper, NGramStepper, RNNStepper, generate
    from rnnkern.models.language.train import load_checkpoint
    require_visible_device(args.parser, args.device)
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
    require_visible_device(args.parser, args.device)
    if args.json:
        check_output_file(args.parser, "--json", args.json)
    try:
        cfg, vocab, model, _ = load_checkpoint(args.ckpt, args.device)
        if args.replace_bad_bytes:
            cfg.replace_bad_bytes = True
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

    p = sub.add_parser("train", help="train an n-gram, fixed-context or RNN LM")
    _add_train_args(p)
    p.set_defaults(func=_cmd_train, parser=p)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("ckpt", metavar="CKPT")
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument("--temperature", type=nonnegative_float, default=1.0, help="0 = greedy (default: 1.0)")
    p.add_argument("--top-k", type=positive_int, default=None, help="sample from the k likeliest tokens only")
    p.add_argument("--length", type=nonnegative_int, default=500, help="tokens to generate (default: 500)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.set_defaults(func=_cmd_sample, parser=p)

    p = sub.add_parser("eval", help="perplexity (and bits/char) of a checkpoint on its val/test split")
    p.add_argument("ckpt", metavar="CKPT")
    p.add_argument("--splits", nargs="+", choices=["train", "val", "test"], default=["val", "test"])
    p.add_argument("--corpus", default=None, metavar="PATH", help="another corpus, split the same way")
    p.add_argument("--replace-bad-bytes", action="store_true",
                   help="read a corpus that is not valid UTF-8 with U+FFFD for its bad bytes")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", metavar="PATH")
    p.set_defaults(func=_cmd_eval, parser=p)
