"""The segmentation part of `make demo`: a small FCN-8s (or U-Net) trained from scratch on the embedded
Fashion-MNIST composites within a time budget, compared with the majority-class baseline.

    .venv/bin/python -m rnnkern.models.segmentation.demo --seconds 120
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def run_demo(device: str = "cpu", seconds: float = 120.0, out_dir: str = "runs/demo-seg", model: str = "fcn8s",
             base_width: int = 8, train_size: int = 2000, val_size: int = 300, batch_size: int = 8,
             progress: bool = True, threads: int | None = 1) -> dict:
    """Train `model` for about `seconds` (training stops at 85% of it; the rest is evaluation and
    pictures) on `threads` CPU threads (1: OpenMP threads thrash when the cores are busy), print
    val mIoU against the majority-class baseline, write val_overlay.png and curves.png into
    out_dir. Returns {"model", "val_miou", "baseline_miou", "pixel_acc", "dice",
    "steps", "epochs", "seconds", "params", "overlay", "curves"}."""
    from rnnkern.models.segmentation.train import TrainConfig, train

    t0 = time.perf_counter()
    print(f"== segmentation: {model} (base width {base_width}) on Fashion-MNIST composites "
          f"(64x64, 1-3 items, 11 classes), {seconds:.0f} s on {device} ==", flush=True)
    # inverse-sqrt-frequency class weights: 85% of the pixels are background, and without them the
    # first few hundred steps learn little beyond foreground/background (measured: README)
    cfg = TrainConfig(model=model, dataset="fashion", epochs=1000, batch_size=batch_size, lr=3e-3,
                      class_weights="auto", base_width=base_width, threads=threads,
                      device=device, seed=0, out=out_dir, train_size=train_size, val_size=val_size,
                      time_budget=0.85 * seconds, progress=progress, overlays=6)
    res = train(cfg)
    out = Path(out_dir)
    metrics = {"model": model, "val_miou": res["best_miou"], "baseline_miou": res["baseline_miou"],
               "pixel_acc": res["final"].get("pixel_acc"), "dice": res["final"].get("dice"),
               "steps": res["steps"], "epochs": res["epochs"], "seconds": time.perf_counter() - t0,
               "params": res["params"], "overlay": str(out / "val_overlay.png"), "curves": str(out / "curves.png")}
    print(f"segmentation: val mIoU {metrics['val_miou']:.3f} vs majority-class baseline "
          f"{metrics['baseline_miou']:.3f} ({metrics['val_miou'] / max(metrics['baseline_miou'], 1e-9):.1f}x) after "
          f"{metrics['steps']} steps in {metrics['seconds']:.0f} s; overlay: {metrics['overlay']}", flush=True)
    return metrics


def main() -> None:
    from rnnkern.models.segmentation import MODELS
    from rnnkern._argtypes import positive_float, positive_int
    p = argparse.ArgumentParser(prog="python -m rnnkern.models.segmentation.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=positive_float, default=120.0)
    p.add_argument("--model", choices=list(MODELS), default="fcn8s")
    p.add_argument("--base-width", type=positive_int, default=8)
    p.add_argument("--out", default="runs/demo-seg")
    a = p.parse_args()
    run_demo(a.device, a.seconds, a.out, a.model, a.base_width)


if __name__ == "__main__":
    main()
