"""`make demo`, language part: a char-RNN (rnnkern.nn.RNN) on the embedded King James Bible,
trained for a wall-clock budget, with the loss (and bits/char) printed as it falls and a primed
sample at the end. Also runnable alone: `python -m rnnkern.models.language.demo --seconds 60`."""
from __future__ import annotations

import argparse
import time

import torch

from rnnkern.models.language.sampling import RNNStepper, generate
from rnnkern.models.language.train import LMConfig, train

PRIME = "And God said"


def run_demo(device: str = "cpu", seconds: float = 150.0, out_dir: str = "runs/demo-lm",
             threads: int | None = 1, prime: str = PRIME, sample_length: int = 400) -> dict:
    """Train a 1-layer tanh char-RNN (H=256, 32-dim embedding; 32 streams x 64-step truncated
    BPTT, Adam 2e-3, clip 1.0) for `seconds`, evaluating on val ~5 times along the way.

    threads: CPU threads for torch; 1 by default because on a 2-core machine that is busy with
        anything else, 2 OpenMP threads per process made these small per-step ops ~50x slower
        (measured: 2-3 s vs 0.05 s per training step), while 1 thread loses little when idle.
    Returns the final metrics (val/test loss, perplexity, bits/char, steps, tokens, seconds) and
    the sample.
    """
    t0 = time.perf_counter()
    cfg = LMConfig(model="rnn", level="char", hidden=256, embed_dim=32, batch_size=32, bptt=64, lr=2e-3, clip=1.0,
                   time_budget=seconds, eval_every=10**9, eval_seconds=max(seconds / 5, 1.0), eval_tokens=20000,
                   device=device, threads=threads if device == "cpu" else None, out=out_dir, seed=0)
    res = train(cfg)
    model = res["model_obj"]
    vocab = res["vocab"]
    ids = generate(RNNStepper(model, res["device"]), vocab.encode_text(prime, eos=False), sample_length,
                   temperature=0.8, seed=0)
    sample = prime + vocab.decode(ids)
    print(f"\nsample (temperature 0.8, primed with {prime!r}):\n{sample}\n")
    hist = res["history"]
    if len(hist) >= 2:
        print(f"val bits/char fell from {hist[0]['val_loss'] / 0.6931471805599453:.3f} (step {hist[0]['step']}) to "
              f"{hist[-1]['val_loss'] / 0.6931471805599453:.3f} (step {hist[-1]['step']}); "
              f"loss curve: {out_dir}/rnn-char-loss.png; checkpoint: {res.get('best_ckpt')}")
    out = {k: v for k, v in res.items() if k not in ("model_obj", "last_model", "vocab")}
    out["sample"] = sample
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnnkern.models.language.demo", description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    from rnnkern._argtypes import positive_float, positive_int
    p.add_argument("--seconds", type=positive_float, default=150.0)
    p.add_argument("--out", default="runs/demo-lm")
    p.add_argument("--threads", type=positive_int, default=1)
    a = p.parse_args(argv)
    run_demo(a.device, a.seconds, a.out, a.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
