"""`rnnkern seg train | eval | predict | models`: the segmentation command line."""
from __future__ import annotations

import argparse
import json
import sys

from rnnkern._argtypes import (check_output_dir, int_at_least, nonnegative_float, nonnegative_int, positive_float,
                               positive_int)
from rnnkern.models._dist import leave_process_group


_batch_size = int_at_least(2, "BatchNorm needs 2+ images per batch")

# `seg train` options that are TrainConfig fields and default to None, so a resumed run can tell
# which of them the user gave again
_RUN_OPTIONS = ("model", "dataset", "epochs", "batch_size", "lr", "lr_schedule", "weight_decay", "loss",
                "class_weights", "base_width", "seed", "out", "train_size", "val_size", "num_classes", "image_size",
                "time_budget", "threads", "overlays")


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from rnnkern.models.segmentation.train import TrainConfig, resume_config, train
    if args.out:
        check_output_dir(args.parser, "--out", args.out)
    given = {k: getattr(args, k) for k in _RUN_OPTIONS if getattr(args, k) is not None}
    if args.aux_loss:
        given["aux_loss"] = True
    given.update(device=args.device, compile=args.compile, progress=not args.no_progress)
    if args.resume:
        quiet = int(os.environ.get("RANK", "0")) != 0  # under torchrun, rank 0 alone reports
        cfg = resume_config(args.resume, given, log=(lambda *a: None) if quiet else print)
    else:
        cfg = TrainConfig(**given)
        if "out" not in given:
            cfg.out = f"runs/seg-{cfg.model}-{cfg.dataset.rstrip('/').split('/')[-1]}"
    try:
        res = train(cfg)
        import torch.distributed as dist
        if not (dist.is_initialized() and dist.get_rank() != 0):
            print(f"best val mIoU {res['best_miou']:.4f} (majority-class baseline {res['baseline_miou']:.4f}) "
                  f"after {res['steps']} steps / {res['seconds']:.0f} s; checkpoints, curves.png"
                  f"{' and val_overlay.png' if cfg.overlays else ''} in {res['out']}")
    finally:
        leave_process_group()  # under torchrun
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from rnnkern.models.segmentation.train import evaluate
    res = evaluate(args.checkpoint, args.dataset, args.split, args.device, args.batch_size)
    if "note" in res:
        print(f"rnnkern seg eval: note: {res['note']}", file=sys.stderr)
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "confusion"}, indent=1))
        return 0
    print(f"{args.split}: mIoU {res['miou']:.4f}  pixel acc {res['pixel_acc']:.4f}  dice {res['dice']:.4f}  "
          f"loss {res['loss']:.4f}  (majority-class mIoU {res['baseline_miou']:.4f})")
    width = max(len(n) for n in res["class_names"])
    for name, iou in zip(res["class_names"], res["iou"]):
        print(f"  {name:<{width}}  IoU {iou:.4f}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from rnnkern.models.segmentation.train import predict
    res = predict(args.checkpoint, args.image, args.output, args.device, args.mask)
    shares = ", ".join(f"{k} {v:.1%}" for k, v in sorted(res["fractions"].items(), key=lambda kv: -kv[1]))
    print(f"{args.image}: {shares}")
    for label, path in (("overlay", args.output), ("label map", args.mask)):
        if path:
            print(f"{label} written to {path}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import torch

    from rnnkern.models.segmentation import MODELS, build_model
    from rnnkern.models.segmentation.train import step_time
    if args.time:
        how = ("CPU time of one thread (time.thread_time; other load does not inflate it)" if args.cpu_time
               else f"wall clock, {torch.get_num_threads()} threads")
        print(f"step time: forward + backward + AdamW, batch {args.batch_size}, {args.in_channels} x {args.size} "
              f"x {args.size}, fastest of {args.steps}, {how}")
    for name in args.only or MODELS:
        m = build_model(name, args.num_classes, args.in_channels, args.base_width)
        line = f"{name:<14} {sum(p.numel() for p in m.parameters()) / 1e6:7.3f} M params"
        if args.time:
            t = step_time(name, args.num_classes, args.in_channels, args.base_width, args.batch_size, args.size,
                          args.steps, cpu_time=args.cpu_time)
            line += f"  {t * 1e3:8.1f} ms/step"
        print(line, flush=True)
    return 0


def _run(func):
    """Bad input (missing files, unreadable data or checkpoints, wrong channels) -> one clear line."""
    def wrapped(args: argparse.Namespace) -> int:
        from rnnkern.models.segmentation.data import DataError
        from rnnkern.models import TrainingDiverged
        try:
            return func(args)
        except (DataError, FileNotFoundError, TrainingDiverged) as e:  # CheckpointError is a DataError
            print(f"rnnkern seg: error: {e}", file=sys.stderr)
            return 2
    return wrapped


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `seg` on rnnkern's top-level subparsers."""
    from rnnkern.models.segmentation import MODELS
    seg = subparsers.add_parser("seg", help="semantic segmentation: train / eval / predict (FCN, U-Net, SegNet, "
                                            "DeepLab v3/v3+, PSPNet)")
    sub = seg.add_subparsers(dest="seg_command", required=True)

    from rnnkern.models.segmentation.train import TrainConfig
    d = TrainConfig()
    p = sub.add_parser("train", help="train a segmentation net (torchrun for several processes)",
                       description="Train a segmentation net. With --resume, the run's model, data and settings "
                                   "come from its checkpoint and it continues in the checkpoint's folder; options "
                                   "given again (--epochs, --batch-size, --lr, ...) override the settings.")
    p.add_argument("--model", choices=list(MODELS), default=None, help=f"(default: {d.model})")
    p.add_argument("--dataset", default=None, help="fashion (embedded composites), nuclei, or a folder of "
                                                   f"images/ + masks/ (default: {d.dataset})")
    p.add_argument("--epochs", type=positive_int, default=None, help=f"(default: {d.epochs})")
    p.add_argument("--batch-size", type=_batch_size, default=None, help=f"per process (default: {d.batch_size})")
    p.add_argument("--lr", type=positive_float, default=None, help=f"(default: {d.lr})")
    p.add_argument("--lr-schedule", choices=["poly", "constant"], default=None,
                   help="poly: lr (1 - progress)^0.9, progress by steps or by --time-budget "
                        f"(default: {d.lr_schedule})")
    p.add_argument("--weight-decay", type=nonnegative_float, default=None, help=f"(default: {d.weight_decay})")
    p.add_argument("--loss", choices=["ce", "dice", "ce+dice"], default=None, help=f"(default: {d.loss})")
    p.add_argument("--class-weights", default=None, help="'auto' (inverse sqrt frequency) or w0,w1,... "
                                                         "(default: none)")
    p.add_argument("--base-width", type=positive_int, default=None,
                   help=f"encoder width (channels of stage 1) (default: {d.base_width})")
    p.add_argument("--aux-loss", action="store_true", help="add an auxiliary head (loss weight 0.4)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=None, help=f"(default: {d.seed})")
    p.add_argument("--out", default=None, help="run directory (default runs/seg-MODEL-DATASET; with --resume, "
                                               "the checkpoint's folder)")
    p.add_argument("--resume", metavar="CKPT", default=None, help="continue the run of a checkpoint (last.pt)")
    p.add_argument("--train-size", type=positive_int, default=None, help="training images (fashion, nuclei)")
    p.add_argument("--val-size", type=positive_int, default=None, help="val/test images (fashion)")
    p.add_argument("--num-classes", type=positive_int, default=None, help="folder datasets: number of classes")
    p.add_argument("--image-size", type=positive_int, default=None, help="folder datasets: resize to this size")
    p.add_argument("--time-budget", type=positive_float, default=None, metavar="SECONDS",
                   help="stop training once the run (a resumed run's earlier epochs included) took this long")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (1 is much faster when the cores are busy with other work)")
    p.add_argument("--overlays", type=nonnegative_int, default=None,
                   help=f"val images in val_overlay.png (default: {d.overlays})")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.set_defaults(func=_run(_cmd_train), parser=p)

    p = sub.add_parser("eval", help="metrics of a checkpoint on its dataset's val or test split")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's")
    p.add_argument("--split", choices=["train", "val", "test"], default="val")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(_cmd_eval))

    p = sub.add_parser("predict", help="segment an image file and write an overlay PNG")
    p.add_argument("image")
    p.add_argument("--checkpoint", "-c", required=True)
    p.add_argument("-o", "--output", default="overlay.png", help="overlay PNG (default overlay.png)")
    p.add_argument("--mask", default=None, help="also write the label map as a palette PNG")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_run(_cmd_predict))

    p = sub.add_parser("models", help="list the models and their sizes")
    p.add_argument("--num-classes", type=positive_int, default=11)
    p.add_argument("--in-channels", type=positive_int, default=1)
    p.add_argument("--base-width", type=positive_int, default=16)
    p.add_argument("--only", nargs="+", choices=list(MODELS), default=None)
    p.add_argument("--time", action="store_true", help="also time a CPU training step")
    p.add_argument("--batch-size", type=_batch_size, default=16)
    p.add_argument("--size", type=positive_int, default=64)
    p.add_argument("--steps", type=positive_int, default=5)
    p.add_argument("--cpu-time", action="store_true", help="time one thread's CPU time instead of wall clock")
    p.set_defaults(func=_run(_cmd_models))
    return seg
