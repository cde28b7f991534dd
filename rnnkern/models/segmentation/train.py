"""Training, evaluation and prediction for the segmentation nets (what `rnnkern seg` runs).

Checkpoints are plain dicts of tensors / numbers / strings (loadable with
torch.load(weights_only=True)): {"format", "config", "model_args", "data", "model", "optimizer",
"epoch", "step", "best_miou", "history", "metrics", "rng"}. `last.pt` is written after every
epoch, `best.pt` whenever the val mIoU improves. Under torchrun (WORLD_SIZE > 1) the model is
wrapped in DistributedDataParallel (gloo on CPU, NCCL on CUDA), every rank trains on its shard of
each epoch's permutation, the val confusion matrix is summed over the ranks, and only rank 0
writes files or prints.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from rnnkern.models import TrainingDiverged
from rnnkern.models._resume import resume_settings, take_from_checkpoint
from rnnkern.models.segmentation import build_model
from rnnkern.models.segmentation.data import (IGNORE_INDEX, VOC_PALETTE, DataError, SegData, load_dataset,
                                              read_image, write_label_png, write_png)
from rnnkern.models.segmentation.losses import build_loss
from rnnkern.models.segmentation.metrics import ConfusionMatrix, confusion_matrix, mean_iou

CKPT_FORMAT = "rnnkern.segmentation/1"


class CheckpointError(DataError):
    """A checkpoint that is missing, unreadable, or not an rnnkern segmentation checkpoint."""


@dataclass
class TrainConfig:
    model: str = "unet"
    dataset: str = "fashion"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-3
    lr_schedule: str = "poly"  # "poly" (DeepLab's (1 - progress)^0.9) or "constant"
    weight_decay: float = 1e-4
    loss: str = "ce"
    class_weights: Optional[str] = None  # None | "auto" | "w0,w1,..."
    base_width: int = 16
    aux_loss: bool = False
    device: str = "cpu"
    seed: int = 0
    out: str = "runs/seg"
    train_size: Optional[int] = None
    val_size: Optional[int] = None
    num_classes: Optional[int] = None
    image_size: Optional[int] = None
    time_budget: Optional[float] = None  # seconds of training in all (stops early)
    compile: bool = False
    threads: Optional[int] = None  # torch intra-op threads (1 avoids OpenMP thrashing on a busy machine)
    progress: bool = True
    overlays: int = 6
    resume: Optional[str] = None


# ----------------------------------------------------------------------------------------------
# distributed helpers
def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _setup_device(device: str) -> torch.device:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DataError("--device cuda asked for, but no CUDA device is visible to torch")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise DataError(f"unknown device {device!r}; use cpu or cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda") and dist.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device)


def _log(msg: str) -> None:
    if _dist_info()[0] == 0:
        print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
# pictures
def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8 in the VOC colours."""
    return VOC_PALETTE[np.asarray(labels).astype(np.int64) % 256]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend the label colours over an image ((C, H, W) float in [0, 1], C = 1 or 3); background
    (label 0) stays uncoloured."""
    img = np.asarray(image, dtype=np.float32)
    rgb = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3]
    rgb = np.clip(rgb.transpose(1, 2, 0) * 255.0, 0, 255)
    col = colorize(labels).astype(np.float32)
    m = (np.asarray(labels) != 0)[..., None]
    return np.where(m, (1 - alpha) * rgb + alpha * col, rgb).astype(np.uint8)


def _upscale(a: np.ndarray, k: int) -> np.ndarray:
    return a.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else a


def overlay_grid(images: Tensor, truth: Optional[Tensor], pred: Tensor) -> np.ndarray:
    """Rows of [image | truth overlay | prediction overlay] (truth column left out when None)."""
    k = max(1, 192 // max(images.shape[-2:]))
    rows = []
    for i in range(images.shape[0]):
        img = images[i].cpu().numpy()
        base = overlay(img, np.zeros(img.shape[1:], np.int64))
        cols = [base] + ([overlay(img, truth[i].cpu().numpy())] if truth is not None else [])
        cols.append(overlay(img, pred[i].cpu().numpy()))
        sep = np.full((img.shape[1], 2, 3), 255, np.uint8)
        rows.append(_upscale(np.concatenate([c for col in cols for c in (col, sep)][:-1], axis=1), k))
        rows.append(np.full((2 * k, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def plot_curves(history: dict, path: Path, baseline: Optional[float] = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = history["epoch"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(ep, history["train_loss"], "o-", label="train")
    a.plot(ep, history["val_loss"], "s-", label="val")
    a.set_xlabel("epoch"); a.set_ylabel("loss"); a.legend(); a.grid(alpha=0.3)
    b.plot(ep, history["val_miou"], "o-", label="val mIoU")
    b.plot(ep, history["val_pixel_acc"], "s-", label="val pixel acc")
    if baseline is not None:
        b.axhline(baseline, color="gray", ls="--", label="majority class mIoU")
    b.set_xlabel("epoch"); b.set_ylim(0, 1); b.legend(); b.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# checkpoints
def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """torch.load(weights_only=True) + checks; raises CheckpointError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path} (corrupt, truncated, or not a torch file): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{path} is not an rnnkern segmentation checkpoint (format {CKPT_FORMAT!r})")
    for key in ("model_args", "data", "model", "config"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}")
    return ckpt


def model_from_checkpoint(ckpt: dict, path: str = "checkpoint") -> nn.Module:
    args = dict(ckpt["model_args"])
    model = build_model(args.pop("name"), **args)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model: {str(e).splitlines()[0]}") from e
    return model


# ----------------------------------------------------------------------------------------------
def _class_weights(spec: Optional[str], data: SegData) -> Optional[Tensor]:
    if spec is None:
        return None
    if spec == "auto":  # inverse square-root frequency, mean 1
        m = data.split("train")[1]
        counts = torch.bincount(m[m != IGNORE_INDEX].flatten(), minlength=data.num_classes).double()
        w = (counts / counts.sum()).clamp_min(1e-6).rsqrt()
        return (w / w.mean()).float()
    try:
        w = torch.tensor([float(v) for v in spec.split(",")])
    except ValueError as e:
        raise DataError(f"--class-weights must be 'auto' or comma-separated numbers, got {spec!r}") from e
    if w.numel() != data.num_classes:
        raise DataError(f"--class-weights has {w.numel()} values for {data.num_classes} classes")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not bool((w > 0).any()):
        raise DataError(f"--class-weights must be finite, non-negative and not all zero, got {spec!r}")
    return w


def majority_baseline(data: SegData, split: str = "val") -> float:
    """mIoU of predicting the most frequent training class everywhere."""
    m = data.split("train")[1]
    majority = int(torch.bincount(m[m != IGNORE_INDEX].flatten(), minlength=data.num_classes).argmax())
    t = data.split(split)[1]
    return mean_iou(confusion_matrix(torch.full_like(t, majority), t, data.num_classes))


def _augment(x: Tensor, y: Tensor, g: torch.Generator, vflip: bool) -> tuple[Tensor, Tensor]:
    f = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(f.view(-1, 1, 1, 1), x.flip(-1), x)
    y = torch.where(f.view(-1, 1, 1), y.flip(-1), y)
    if vflip:
        f = torch.rand(x.shape[0], generator=g) < 0.5
        x = torch.where(f.view(-1, 1, 1, 1), x.flip(-2), x)
        y = torch.where(f.view(-1, 1, 1), y.flip(-2), y)
    return x, y


@torch.no_grad()
def evaluate_model(model: nn.Module, data: SegData, split: str, device: torch.device,
                   loss_fn: Optional[nn.Module] = None, batch_size: int = 64, max_items: Optional[int] = None) -> dict:
    """Metrics on one split (sharded over DDP ranks, confusion matrix summed)."""
    images, masks = data.split(split)
    rank, world = _dist_info()
    idx = torch.arange(images.shape[0] if max_items is None else min(max_items, images.shape[0]))[rank::world]
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(data.num_classes)
    loss_sum, n = torch.zeros(2, dtype=torch.float64), 0
    for i in range(0, len(idx), batch_size):
        j = idx[i:i + batch_size]
        x = data.normalize(images[j]).to(device)
        y = masks[j].to(device)
        out = model(x)["out"]
        cm.update(out, y)
        if loss_fn is not None:
            loss_sum[0] += float(loss_fn(out.float(), y)) * len(j)
            loss_sum[1] += len(j)
    cm.sync()
    if world > 1 and loss_fn is not None:
        dist.all_reduce(loss_sum)
    model.train(was_training)
    res = cm.compute()
    res["loss"] = float(loss_sum[0] / loss_sum[1]) if loss_sum[1] > 0 else float("nan")
    res["confusion"] = cm.mat
    return res


def _model_args(cfg: TrainConfig, data: SegData) -> dict:
    return {"name": cfg.model, "num_classes": data.num_classes, "in_channels": data.in_channels,
            "base_width": cfg.base_width, "aux_loss": cfg.aux_loss}


def _data_info(data: SegData) -> dict:
    return {"name": data.name, "num_classes": data.num_classes, "in_channels": data.in_channels,
            "class_names": list(data.class_names), "mean": list(data.mean), "std": list(data.std)}


# what a resumed run keeps from its checkpoint: the model and data always (the weights and the
# training set depend on them), the other run settings unless given again (RESUME_DEFAULTS)
RESUME_FIXED = ("model", "dataset", "base_width", "aux_loss", "seed", "train_size", "num_classes", "image_size")
RESUME_DEFAULTS = ("epochs", "batch_size", "lr", "lr_schedule", "weight_decay", "loss", "class_weights", "val_size",
                   "threads")


def resume_config(path: str, given: dict, log=print) -> TrainConfig:
    """The config that continues the run whose checkpoint is `path`: RESUME_FIXED from the
    checkpoint, RESUME_DEFAULTS from it unless in `given` (the options the user passed), the run
    directory = the checkpoint's folder unless `given` has "out"; the rest (device, threads, time
    budget, ...) from `given` or TrainConfig's defaults. Differences are logged."""
    old = load_checkpoint(path)["config"]
    cfg = TrainConfig(**given)
    cfg.resume = str(path)
    resume_settings(cfg, old, path, given, RESUME_FIXED, RESUME_DEFAULTS, log)
    return cfg


def train(cfg: TrainConfig, data: Optional[SegData] = None) -> dict:
    """Train cfg.model on cfg.dataset; returns {"best_miou", "final", "baseline_miou", "out", ...}."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, data)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, data: Optional[SegData]) -> dict:
    from tqdm.auto import tqdm

    device = _setup_device(cfg.device)
    rank, world = _dist_info()
    out = Path(cfg.out)
    resume_ckpt = None
    if cfg.resume:
        resume_ckpt = load_checkpoint(cfg.resume)
        take_from_checkpoint(cfg, resume_ckpt["config"], RESUME_FIXED, _log)
    torch.manual_seed(cfg.seed)
    if data is None:
        data = load_dataset(cfg.dataset, seed=cfg.seed, train_size=cfg.train_size, val_size=cfg.val_size,
                            num_classes=cfg.num_classes, image_size=cfg.image_size)
    model = build_model(**_model_args(cfg, data)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: dict[str, list] = {k: [] for k in ("epoch", "train_loss", "val_loss", "val_miou", "val_pixel_acc",
                                                "val_dice", "seconds")}
    start_epoch, step, best, elapsed = 1, 0, -1.0, 0.0
    if resume_ckpt is not None:
        model.load_state_dict(resume_ckpt["model"])
        opt.load_state_dict(resume_ckpt["optimizer"])
        history = {k: list(v) for k, v in resume_ckpt["history"].items()}
        start_epoch, step = int(resume_ckpt["epoch"]) + 1, int(resume_ckpt["step"])
        best, elapsed = float(resume_ckpt["best_miou"]), float(resume_ckpt.get("elapsed", 0.0))
        torch.set_rng_state(resume_ckpt["rng"])
        _log(f"resumed from {cfg.resume} at epoch {start_epoch - 1} (best val mIoU {best:.4f})")
    raw_model = model
    if world > 1:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            raw_model = model
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    fwd = torch.compile(model) if cfg.compile else model
    weight = _class_weights(cfg.class_weights, data)
    loss_fn = build_loss(cfg.loss, weight).to(device)
    images, masks = data.split("train")
    n = images.shape[0]
    per_rank = n // world
    if cfg.batch_size < 2:  # BatchNorm in training needs more than one value per channel (pooled branches)
        raise DataError(f"batch size must be >= 2, got {cfg.batch_size}")
    bs = min(cfg.batch_size, per_rank)
    if bs < 2:
        raise DataError(f"training split has {n} images for {world} process(es); need >= 2 per process")
    steps_per_epoch = per_rank // bs
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    baseline = majority_baseline(data)
    vflip = data.name == "nuclei"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _log(f"{cfg.model} ({sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f} M params) on {data.name}: "
             f"{n} train / {data.split('val')[0].shape[0]} val images of {tuple(images.shape[1:])}, "
             f"{data.num_classes} classes, {world} process(es), device {device}; "
             f"majority-class val mIoU {baseline:.4f}")
    t0 = time.perf_counter() - elapsed
    stop = False
    last_metrics: dict = {}
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs + 1):
        g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g)[rank::world][:steps_per_epoch * bs]
        model.train()
        run_loss, seen = 0.0, 0
        # under a time budget the epoch count is only a cap (the demo's 1000): show the budget instead
        desc = (f"epoch {epoch} ({time.perf_counter() - t0:.0f}/{cfg.time_budget:.0f} s)" if cfg.time_budget
                else f"epoch {epoch}/{cfg.epochs}")
        bar = tqdm(range(steps_per_epoch), desc=desc, disable=not cfg.progress or rank != 0,
                   leave=False, file=sys.stderr, dynamic_ncols=True)
        for it in bar:
            frac = step / total_steps
            if cfg.time_budget:
                frac = max(frac, (time.perf_counter() - t0) / cfg.time_budget)
            for group in opt.param_groups:  # poly schedule (DeepLab), by steps or by time
                group["lr"] = cfg.lr * (max(0.0, 1.0 - frac) ** 0.9 if cfg.lr_schedule == "poly" else 1.0)
            j = perm[it * bs:(it + 1) * bs]
            x, y = _augment(images[j], masks[j], g, vflip)
            x, y = data.normalize(x).to(device, non_blocking=True), y.to(device, non_blocking=True)
            res = fwd(x)
            loss = loss_fn(res["out"], y)
            if "aux" in res:
                loss = loss + 0.4 * loss_fn(res["aux"], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            run_loss += float(loss.detach()) * len(j)
            seen += len(j)
            # refresh=False: the bar redraws at its own pace (mininterval), not once a step
            bar.set_postfix(loss=f"{run_loss / seen:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}", refresh=False)
            if cfg.time_budget is not None:
                over = torch.tensor([float(time.perf_counter() - t0 >= cfg.time_budget)])
                if world > 1:
                    dist.all_reduce(over, op=dist.ReduceOp.MAX)
                if over.item() > 0:
                    stop = True
                    break
        bar.close()
        train_loss = torch.tensor([run_loss, float(seen)], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(train_loss)
        # DDP's forward is a collective (buffer broadcast) and the val shards may differ in length:
        # evaluate the plain module on each rank and sum the confusion matrices instead
        metrics = evaluate_model(fwd if world == 1 else raw_model, data, "val", device, loss_fn)
        seconds = time.perf_counter() - t0
        history["epoch"].append(epoch)
        history["train_loss"].append(float(train_loss[0] / max(train_loss[1], 1)))
        history["val_loss"].append(metrics["loss"])
        history["val_miou"].append(metrics["miou"])
        history["val_pixel_acc"].append(metrics["pixel_acc"])
        history["val_dice"].append(metrics["dice"])
        history["seconds"].append(seconds)
        last_metrics = {k: v for k, v in metrics.items() if k != "confusion"}
        improved = metrics["miou"] > best
        best = max(best, metrics["miou"])
        _log(f"epoch {epoch:3d}  train loss {history['train_loss'][-1]:.4f}  val loss {metrics['loss']:.4f}  "
             f"mIoU {metrics['miou']:.4f}  pixel acc {metrics['pixel_acc']:.4f}  dice {metrics['dice']:.4f}  "
             f"({seconds:.0f} s{', best' if improved else ''})")
        if not math.isfinite(history["train_loss"][-1]):  # (on every rank: the loss is all-reduced)
            raise TrainingDiverged(f"training diverged in epoch {epoch} (train loss {history['train_loss'][-1]}, "
                                   f"val loss {metrics['loss']}); lower --lr (now {cfg.lr:g})")
        if rank == 0:
            state = {"format": CKPT_FORMAT, "config": dataclasses.asdict(cfg), "model_args": _model_args(cfg, data),
                     "data": _data_info(data), "model": raw_model.state_dict(), "optimizer": opt.state_dict(),
                     "epoch": epoch, "step": step,
                     "best_miou": best, "history": history, "metrics": last_metrics, "elapsed": seconds,
                     "rng": torch.get_rng_state(), "baseline_miou": baseline}
            save_checkpoint(out / "last.pt", state)
            if improved:
                save_checkpoint(out / "best.pt", state)
                _write_overlays(raw_model, data, device, out / "val_overlay.png", cfg.overlays)
            plot_curves(history, out / "curves.png", baseline)
            (out / "history.json").write_text(json.dumps({"history": history, "baseline_miou": baseline,
                                                          "best_miou": best}, indent=1))
        if stop:
            _log(f"time budget of {cfg.time_budget:.0f} s reached after {step} steps (epoch {epoch})")
            break
    if world > 1:
        dist.barrier()
    return {"best_miou": best, "final": last_metrics, "baseline_miou": baseline, "epochs": epoch, "steps": step,
            "seconds": time.perf_counter() - t0, "out": str(out), "history": history,
            "params": sum(p.numel() for p in raw_model.parameters())}


@torch.no_grad()
def _write_overlays(model: nn.Module, data: SegData, device: torch.device, path: Path, k: int) -> Optional[Path]:
    if k <= 0:
        return None
    images, masks = data.split("val")
    images, masks = images[:k], masks[:k]
    was = model.training
    model.eval()
    pred = model(data.normalize(images).to(device))["out"].argmax(1).cpu()
    model.train(was)
    return write_png(path, overlay_grid(images, masks, pred))


def _data_from_checkpoint(ckpt: dict, dataset: Optional[str]) -> SegData:
    cfg = ckpt["config"]
    spec = dataset or cfg["dataset"]
    data = load_dataset(spec, seed=cfg.get("seed", 0), train_size=cfg.get("train_size"), val_size=cfg.get("val_size"),
                        num_classes=ckpt["data"]["num_classes"], image_size=cfg.get("image_size"))
    if data.in_channels != ckpt["data"]["in_channels"]:
        raise DataError(f"dataset {spec!r} has {data.in_channels}-channel images, the model takes "
                        f"{ckpt['data']['in_channels']}")
    if data.num_classes != ckpt["data"]["num_classes"]:
        raise DataError(f"dataset {spec!r} has {data.num_classes} classes, the model predicts "
                        f"{ckpt['data']['num_classes']}")
    data.mean, data.std = list(ckpt["data"]["mean"]), list(ckpt["data"]["std"])  # the training normalisation
    return data


def evaluate(checkpoint: str, dataset: Optional[str] = None, split: str = "val", device: str = "cpu",
             batch_size: int = 64) -> dict:
    """Metrics of a checkpoint on a split of its dataset (or of another with the same classes)."""
    ckpt = load_checkpoint(checkpoint)
    dev = _setup_device(device)
    model = model_from_checkpoint(ckpt, checkpoint).to(dev)
    data = _data_from_checkpoint(ckpt, dataset)
    res = evaluate_model(model, data, split, dev, build_loss("ce").to(dev), batch_size)
    res["baseline_miou"] = majority_baseline(data, split)
    res["class_names"] = data.class_names
    if split in data.aliases:
        res["note"] = (f"dataset {data.name!r} has no {split} split of its own: these are its "
                       f"{data.aliases[split]} images")
    return res


@torch.no_grad()
def predict(checkpoint: str, image: str, out: Optional[str] = None, device: str = "cpu",
            mask_out: Optional[str] = None) -> dict:
    """Segment one image file; writes [image | prediction overlay] to `out` and the label map as a
    palette PNG to `mask_out`. Returns {"labels": (H, W) int64 tensor, "fractions": {class: share}}."""
    ckpt = load_checkpoint(checkpoint)
    dev = _setup_device(device)
    info = ckpt["data"]
    model = model_from_checkpoint(ckpt, checkpoint).to(dev).eval()
    img = read_image(image).transpose(2, 0, 1)
    want = int(info["in_channels"])
    if img.shape[0] != want:
        if want == 1 and img.shape[0] == 3 and np.allclose(img[0], img[1]) and np.allclose(img[1], img[2]):
            img = img[:1]  # a grey image saved as RGB
        else:
            raise DataError(f"image {image} has {img.shape[0]} channel(s) but the model was trained on "
                            f"{want}-channel images (dataset {info['name']!r})")
    x = torch.from_numpy(np.ascontiguousarray(img))[None]
    mean = torch.tensor(info["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(info["std"]).view(1, -1, 1, 1)
    try:
        labels = model(((x - mean) / std).to(dev))["out"].argmax(1)[0].cpu()
    except ValueError as e:  # the model's input checks: a user error, not a bug
        raise DataError(f"image {image}: {e}") from e
    if out:
        write_png(out, overlay_grid(x, None, labels[None]))
    if mask_out:
        write_label_png(mask_out, labels.numpy())
    counts = torch.bincount(labels.flatten(), minlength=int(info["num_classes"])).double() / labels.numel()
    return {"labels": labels, "fractions": {n: float(c) for n, c in zip(info["class_names"], counts) if c > 0}}


def step_time(name: str, num_classes: int = 11, in_channels: int = 1, base_width: int = 16, batch: int = 16,
              size: int = 64, steps: int = 3, cpu_time: bool = False) -> float:
    """Fastest of `steps` timed forward + backward + AdamW steps (after one warm-up step), in
    seconds; the minimum, not the median, because a shared machine only ever adds time.
    cpu_time=True runs on one thread and counts that thread's CPU time (time.thread_time), which
    other processes competing for the cores do not inflate."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    if cpu_time:
        torch.set_num_threads(1)
    clock = time.thread_time if cpu_time else time.perf_counter
    try:
        model = build_model(name, num_classes, in_channels, base_width)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        x = torch.randn(batch, in_channels, size, size)
        y = torch.randint(0, num_classes, (batch, size, size))
        times = []
        for i in range(steps + 1):
            t = clock()
            loss = nn.functional.cross_entropy(model(x)["out"], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:
                times.append(clock() - t)
    finally:
        torch.set_num_threads(threads)
    return float(min(times))
