"""Segmentation nets, losses, metrics, data, checkpoints and the `rnnkern seg` CLI."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rnnkern.nn as rnn
from rnnkern.cli import main as cli_main
from rnnkern.models.segmentation import MODELS, build_model
from rnnkern.models.segmentation import data as D
from rnnkern.models.segmentation.fcn import _bilinear_upsampler
from rnnkern.models.segmentation.losses import CEDiceLoss, cross_entropy, soft_dice_loss
from rnnkern.models.segmentation.metrics import (confusion_matrix, dice_per_class, iou_per_class, mean_dice,
                                                 mean_iou, pixel_accuracy)
from rnnkern.models.segmentation.train import CheckpointError, load_checkpoint

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- models
def _rnnkern_layers(model):
    kinds = set()
    for m in model.modules():
        if isinstance(m, rnn.ConvTranspose2d):
            kinds.add("convT")
        elif isinstance(m, rnn.Conv2d) and max(m.dilation) > 1:
            kinds.add("dilated")
        elif isinstance(m, rnn.MaxUnpool2d):
            kinds.add("unpool")
        # no torch.nn layer may stand in for ours
        assert type(m) is not torch.nn.ConvTranspose2d, type(model).__name__
        assert type(m) is not torch.nn.MaxUnpool2d
        assert not (type(m) is torch.nn.Conv2d and max(m.dilation) > 1)
    return kinds


EXPECTED_LAYERS = {"fcn32s": {"convT"}, "fcn16s": {"convT"}, "fcn8s": {"convT"}, "unet": {"convT"},
                   "segnet": {"unpool"}, "deeplabv3": {"dilated"}, "deeplabv3plus": {"dilated"},
                   "pspnet": {"dilated"}}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_forward_backward_odd_sizes(name):
    in_ch, classes = 3, 5
    model = build_model(name, classes, in_channels=in_ch, base_width=4, aux_loss=True)
    assert _rnnkern_layers(model) == EXPECTED_LAYERS[name]
    h, w = int(torch.randint(33, 50, ()) | 1), int(torch.randint(33, 50, ()) | 1)
    x = torch.randn(2, in_ch, h, w, requires_grad=True)
    out = model(x)
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == (2, classes, h, w) and out["aux"].shape == (2, classes, h, w)
    y = torch.randint(0, classes, (2, h, w))
    loss = F.cross_entropy(out["out"], y) + 0.4 * F.cross_entropy(out["aux"], y)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # eval mode, batch 1, another odd size, no aux head
    model = build_model(name, classes, in_channels=1, base_width=4).eval()
    h, w = 65, 37
    with torch.no_grad():
        out = model(torch.randn(1, 1, h, w))
    assert set(out) == {"out"} and out["out"].shape == (1, classes, h, w)


@pytest.mark.parametrize("name", ["unet", "segnet"])
def test_pooling_nets_take_small_sizes(name):
    # U-Net pools 4 times, SegNet 5: below 16 / 32 px a pooled map used to reach size 0
    model = build_model(name, 3, in_channels=1, base_width=4, aux_loss=True)
    for h, w in [(1, 1), (7, 5), (15, 64), (31, 33), (2, 40)]:
        x = torch.randn(2, 1, h, w, requires_grad=True)
        out = model(x)
        assert out["out"].shape == (2, 3, h, w) and out["aux"].shape == (2, 3, h, w), (h, w)
        out["out"].sum().backward()
        assert torch.isfinite(x.grad).all()
    # the padding is zeros at the bottom/right, cropped off again: same as padding by hand
    model.eval()
    m = 2 ** (4 if name == "unet" else 5)
    x = torch.randn(1, 1, 13, 21)
    with torch.no_grad():
        got = model(x)["out"]
        want = model(F.pad(x, (0, m - 21 % m, 0, m - 13 % m)))["out"][:, :, :13, :21]
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["unet", "fcn8s"])
def test_model_rejects_wrong_channels(name):
    model = build_model(name, 4, in_channels=3, base_width=4)
    with pytest.raises(ValueError, match="3 input channel"):
        model(torch.randn(1, 1, 33, 33))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(torch.randn(3, 33, 33))
    with pytest.raises(ValueError, match="unknown segmentation model"):
        build_model("unet3000", 4)


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_fcn_upsampler_is_bilinear(factor):
    layer = _bilinear_upsampler(3, factor)
    assert isinstance(layer, rnn.ConvTranspose2d)
    x = torch.randn(2, 3, 7, 9)
    y = layer(x)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert y.shape == ref.shape
    f = factor  # the border differs: zero padding vs clamping
    torch.testing.assert_close(y[..., f:-f, f:-f], ref[..., f:-f, f:-f], atol=1e-5, rtol=1e-5)


def test_models_deterministic_state_dict_roundtrip():
    torch.manual_seed(3)
    a = build_model("deeplabv3plus", 3, 1, base_width=4).eval()
    b = build_model("deeplabv3plus", 3, 1, base_width=4).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 41, 35)
    with torch.no_grad():
        torch.testing.assert_close(a(x)["out"], b(x)["out"])


# ---------------------------------------------------------------------------------------------- losses
def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_cross_entropy_hand_computed_with_weights_and_ignore():
    # 1 x 3 classes x 1 x 3 pixels; the last pixel is ignored
    z = [[1.0, -0.5, 2.0], [0.3, 0.3, -1.0], [-2.0, 1.5, 0.0]]  # per pixel: logits of classes 0..2
    y = [2, 0, 255]
    logits = torch.tensor(z).t().reshape(1, 3, 1, 3)
    target = torch.tensor(y).reshape(1, 1, 3)
    w = [0.5, 1.0, 2.0]
    nll = [-math.log(_softmax(z[i])[y[i]]) for i in range(2)]
    ref = (w[2] * nll[0] + w[0] * nll[1]) / (w[2] + w[0])
    got = cross_entropy(logits, target, weight=torch.tensor(w))
    assert abs(got.item() - ref) < 1e-6
    assert abs(cross_entropy(logits, target).item() - sum(nll) / 2) < 1e-6


def test_soft_dice_multiclass_hand_computed():
    z = [[2.0, 0.0], [0.5, 1.0], [-1.0, 3.0], [0.2, 0.1]]  # 4 pixels, 2 classes
    y = [0, 1, 1, 255]
    logits = torch.tensor(z).t().reshape(1, 2, 2, 2)
    target = torch.tensor(y).reshape(1, 2, 2)
    p = [_softmax(v) for v in z[:3]]  # the ignored pixel drops out
    yy = [[1.0 if y[i] == c else 0.0 for c in range(2)] for i in range(3)]
    per_class = []
    for c in range(2):
        inter = sum(yy[i][c] * p[i][c] for i in range(3))
        den = sum(yy[i][c] ** 2 for i in range(3)) + sum(p[i][c] ** 2 for i in range(3))
        per_class.append(1 - 2 * inter / den)
    ref = sum(per_class) / 2
    got = soft_dice_loss(logits, target)
    assert abs(got.item() - ref) < 1e-6
    # ignored pixels: same as leaving them out
    got2 = soft_dice_loss(logits.reshape(1, 2, 1, 4)[..., :3], target.reshape(1, 1, 4)[..., :3])
    assert abs(got2.item() - ref) < 1e-6


def test_soft_dice_binary_hand_computed_and_grad():
    z = [1.2, -0.4, 2.5, -3.0, 0.7]
    y = [1, 0, 1, 0, 255]
    logits = torch.tensor(z).reshape(1, 1, 1, 5).requires_grad_()
    target = torch.tensor(y).reshape(1, 1, 5)
    p = [1 / (1 + math.exp(-v)) for v in z[:4]]
    inter = sum(p[i] for i in range(4) if y[i] == 1)
    den = sum(1 for i in range(4) if y[i] == 1) + sum(v * v for v in p)
    ref = 1 - 2 * inter / den
    got = soft_dice_loss(logits, target)
    assert abs(got.item() - ref) < 1e-6
    got.backward()
    assert logits.grad[0, 0, 0, 4] == 0 and logits.grad[0, 0, 0, :4].abs().min() > 0
    # (N, H, W) logits are binary too
    assert abs(soft_dice_loss(logits.detach()[:, 0], target).item() - ref) < 1e-6


def test_soft_dice_perfect_and_ce_dice_sum():
    target = torch.randint(0, 4, (2, 9, 11))
    perfect = 50.0 * F.one_hot(target, 4).movedim(-1, 1).float()
    assert soft_dice_loss(perfect, target).item() < 1e-6
    logits = torch.randn(2, 4, 9, 11)
    w = torch.rand(4) + 0.5
    combo = CEDiceLoss(weight=w, ce_weight=0.7, dice_weight=1.3)(logits, target)
    ref = 0.7 * F.cross_entropy(logits, target, weight=w) + 1.3 * soft_dice_loss(logits, target)
    assert abs(combo.item() - ref.item()) < 1e-6


def test_losses_reject_bad_labels():
    logits = torch.randn(1, 3, 4, 4)
    bad = torch.randint(0, 3, (1, 4, 4))
    bad[0, 1, 2] = 7
    for fn in (cross_entropy, soft_dice_loss):
        with pytest.raises(ValueError, match=r"\[0, 3\)"):
            fn(logits, bad)
    with pytest.raises(ValueError, match="do not match"):
        cross_entropy(logits, torch.zeros(1, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        soft_dice_loss(logits, torch.zeros(1, 4, 4))


# ---------------------------------------------------------------------------------------------- metrics
def test_metrics_hand_made_case():
    # 4 classes, class 3 in neither target nor prediction; one ignored pixel
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
    preds = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = confusion_matrix(preds[None], target[None], 4)
    expected = torch.tensor([[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(cm, expected)
    # IoU: class 0 tp=2 fp=1 fn=1 -> 2/4; class 1 tp=2 fp=1 fn=0 -> 2/3; class 2 tp=1 fp=0 fn=1 -> 1/2
    torch.testing.assert_close(iou_per_class(cm), torch.tensor([0.5, 2 / 3, 0.5, 0.0], dtype=torch.float64))
    assert abs(mean_iou(cm) - (0.5 + 2 / 3 + 0.5) / 3) < 1e-12  # class 3 (absent everywhere) not averaged
    assert abs(pixel_accuracy(cm) - 5 / 7) < 1e-12
    torch.testing.assert_close(dice_per_class(cm), torch.tensor([4 / 6, 4 / 5, 2 / 3, 0.0], dtype=torch.float64))
    assert abs(mean_dice(cm) - (4 / 6 + 4 / 5 + 2 / 3) / 3) < 1e-12
    # logits give the argmax's matrix
    logits = F.one_hot(preds, 4).movedim(-1, 0)[None].float() * 3 + 0.1 * torch.randn(1, 4, 2, 4)
    assert torch.equal(confusion_matrix(logits, target[None], 4), expected)


def test_metrics_random_vs_set_definitions():
    c = 5
    target = torch.randint(0, c, (3, 13, 17))
    target[target == 4] = 255  # class 4 only predicted, never a target: IoU 0, counted in the mean
    preds = torch.randint(0, c, (3, 13, 17))
    cm = confusion_matrix(preds, target, c)
    valid = target != 255
    ious, dices = [], []
    for k in range(c):
        t, p = (target == k) & valid, (preds == k) & valid
        inter, union = (t & p).sum().item(), (t | p).sum().item()
        ious.append(inter / union if union else None)
        dices.append(2 * inter / (t.sum() + p.sum()).item() if union else None)
    present = [v for v in ious if v is not None]
    assert abs(mean_iou(cm) - sum(present) / len(present)) < 1e-12
    assert abs(mean_dice(cm) - sum(d for d in dices if d is not None) / len(present)) < 1e-12
    assert abs(pixel_accuracy(cm) - ((preds == target) & valid).sum().item() / valid.sum().item()) < 1e-12
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        confusion_matrix(preds, torch.full_like(target, 9), c)


# ---------------------------------------------------------------------------------------------- data
def test_fashion_composites_deterministic_by_seed():
    a = D.fashion_composites(seed=5, train_size=24, val_size=8, test_size=8)
    b = D.fashion_composites(seed=5, train_size=24, val_size=8, test_size=8)
    c = D.fashion_composites(seed=6, train_size=24, val_size=8, test_size=8)
    for s in ("train", "val", "test"):
        assert torch.equal(a.splits[s][0], b.splits[s][0]) and torch.equal(a.splits[s][1], b.splits[s][1])
        assert not torch.equal(a.splits[s][1], c.splits[s][1])
    x, y = a.split("train")
    assert x.shape == (24, 1, 64, 64) and y.shape == (24, 64, 64) and x.dtype == torch.float32
    assert a.num_classes == 11 and int(y.max()) <= 10 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert all(1 <= len(set(m.unique().tolist()) - {0}) <= 3 for m in y)  # 1..3 items per canvas
    assert not torch.equal(a.splits["train"][0][:8], a.splits["val"][0])


def test_nuclei_tiles():
    a, b = D.nuclei(seed=1, train_size=16), D.nuclei(seed=1, train_size=16)
    assert torch.equal(a.split("train")[0], b.split("train")[0])
    assert not torch.equal(a.split("train")[0], D.nuclei(seed=2, train_size=16).split("train")[0])
    for s in ("train", "val", "test"):
        x, y = a.split(s)
        assert x.shape[1:] == (1, 64, 64) and set(y.unique().tolist()) == {0, 1}


def _write_folder(root: Path, n: int = 5, size: int = 24, label_max: int = 2) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    g = np.random.default_rng(0)
    for i in range(n):
        D.write_png(root / "images" / f"im{i}.png", g.integers(0, 256, (size, size, 3), dtype=np.uint8))
        m = g.integers(0, label_max + 1, (size, size))
        m[0, :3] = 255
        D.write_label_png(root / "masks" / f"im{i}.png", m)


def test_image_folder_and_bad_inputs(tmp_path, monkeypatch):
    _write_folder(tmp_path / "ds")
    data = D.image_folder(tmp_path / "ds")
    assert data.num_classes == 3 and data.in_channels == 3
    x, y = data.split("train")
    assert x.shape == (4, 3, 24, 24) and data.split("val")[0].shape[0] == 1
    assert (y[:, 0, :3] == 255).all()
    # RGB masks in the VOC colours read the same as palette masks, with Pillow or matplotlib
    m = D.read_mask(tmp_path / "ds" / "masks" / "im0.png")
    D.write_png(tmp_path / "rgb.png", D.VOC_PALETTE[m])
    assert np.array_equal(D.read_mask(tmp_path / "rgb.png"), m)
    img = D.read_image(tmp_path / "ds" / "images" / "im0.png")
    monkeypatch.setattr(D, "_have_pil", lambda: False)
    assert np.array_equal(D.read_mask(tmp_path / "rgb.png"), m)
    np.testing.assert_allclose(D.read_image(tmp_path / "ds" / "images" / "im0.png"), img, atol=1e-6)
    monkeypatch.undo()
    with pytest.raises(D.DataError, match=r"im\d.png: labels \[2\]"):
        D.image_folder(tmp_path / "ds", num_classes=2)
    with pytest.raises(D.DataError, match="not found"):
        D.load_dataset(str(tmp_path / "nope"))
    (tmp_path / "ds" / "masks" / "im3.png").unlink()
    with pytest.raises(D.DataError, match="has no mask"):
        D.image_folder(tmp_path / "ds")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(D.DataError, match="cannot read image"):
        D.read_image(tmp_path / "junk.png")


# ---------------------------------------------------------------------------------------------- CLI
def _cli(capsys, *argv):
    rc = cli_main(["seg", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


TINY = ["--model", "unet", "--base-width", "4", "--train-size", "16", "--val-size", "8", "--batch-size", "8",
        "--no-progress", "--overlays", "2"]


def test_cli_train_eval_predict_resume(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = [*TINY, "--lr-schedule", "constant"]  # same schedule whatever --epochs is: resume can be exact
    rc, out, _ = _cli(capsys, "train", *tiny, "--epochs", "1", "--out", str(run))
    assert rc == 0 and "best val mIoU" in out
    for f in ("best.pt", "last.pt", "curves.png", "val_overlay.png", "history.json"):
        assert (run / f).is_file(), f
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["config"]["model"] == "unet" and ckpt["data"]["num_classes"] == 11

    # resuming for a second epoch gives exactly the weights of an uninterrupted 2-epoch run
    rc, _, _ = _cli(capsys, "train", *tiny, "--epochs", "2", "--out", str(run), "--resume", str(run / "last.pt"))
    assert rc == 0
    rc, _, _ = _cli(capsys, "train", *tiny, "--epochs", "2", "--out", str(tmp_path / "straight"))
    assert rc == 0
    resumed = torch.load(run / "last.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    assert resumed["epoch"] == 2 and len(resumed["history"]["epoch"]) == 2
    for k, v in straight["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=0, atol=0, msg=k)

    rc, out, _ = _cli(capsys, "eval", str(run / "best.pt"), "--split", "test")
    assert rc == 0 and "mIoU" in out and "ankle boot" in out

    x, _ = D.fashion_composites(seed=9, train_size=2, val_size=2, test_size=2).split("test")
    D.write_png(tmp_path / "img.png", (x[0, 0].numpy() * 255).astype(np.uint8))
    rc, out, _ = _cli(capsys, "predict", str(tmp_path / "img.png"), "-c", str(run / "best.pt"), "-o",
                      str(tmp_path / "ov.png"), "--mask", str(tmp_path / "mask.png"))
    assert rc == 0 and (tmp_path / "ov.png").is_file()
    labels = D.read_mask(tmp_path / "mask.png")
    assert labels.shape == (64, 64) and labels.max() <= 10
    # an image smaller than U-Net's 16 px of pooling still segments (no traceback)
    D.write_png(tmp_path / "small.png", (x[0, 0, :7, :5].numpy() * 255).astype(np.uint8))
    rc, out, err = _cli(capsys, "predict", str(tmp_path / "small.png"), "-c", str(run / "best.pt"), "-o",
                        str(tmp_path / "ov_small.png"), "--mask", str(tmp_path / "mask_small.png"))
    assert rc == 0 and "Traceback" not in err
    assert D.read_mask(tmp_path / "mask_small.png").shape == (7, 5)

    # bad inputs -> one clear line, exit code 2
    D.write_png(tmp_path / "rgb.png", np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    rc, _, err = _cli(capsys, "predict", str(tmp_path / "rgb.png"), "-c", str(run / "best.pt"))
    assert rc == 2 and "3 channel(s)" in err and "1-channel" in err
    rc, _, err = _cli(capsys, "predict", str(tmp_path / "missing.png"), "-c", str(run / "best.pt"))
    assert rc == 2 and "image not found" in err
    blob = (run / "best.pt").read_bytes()
    (tmp_path / "corrupt.pt").write_bytes(blob[: len(blob) // 2])
    rc, _, err = _cli(capsys, "eval", str(tmp_path / "corrupt.pt"))
    assert rc == 2 and "cannot read checkpoint" in err
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an rnnkern segmentation checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    rc, _, err = _cli(capsys, "eval", str(tmp_path / "nothing.pt"))
    assert rc == 2 and "checkpoint not found" in err


def test_cli_resume_keeps_the_runs_settings_and_folder(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    rc, _, _ = _cli(capsys, "train", *TINY, "--class-weights", "auto", "--epochs", "1", "--out", str(run))
    assert rc == 0
    first = torch.load(run / "last.pt", weights_only=True)["config"]
    # resumed from another directory with nothing but --epochs: TINY's batch size 8 (default 16),
    # class weights and val size 8 (default: all 500) carry over, and the run stays in its folder
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    rc, out, _ = _cli(capsys, "train", "--resume", str(run / "last.pt"), "--epochs", "2", "--no-progress",
                      "--threads", "1")
    assert rc == 0 and str(run) in out and "8 val images" in out
    assert not (tmp_path / "elsewhere" / "runs").exists()
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["epoch"] == 2 and ck["history"]["epoch"] == [1, 2]
    for key in ("model", "batch_size", "class_weights", "val_size", "lr", "loss", "base_width", "train_size"):
        assert ck["config"][key] == first[key], key
    assert ck["config"]["batch_size"] == 8 and ck["config"]["class_weights"] == "auto"
    # an option given again overrides the run's setting, and says so; the model cannot change
    rc, out, _ = _cli(capsys, "train", "--resume", str(run / "last.pt"), "--epochs", "3", "--batch-size", "4",
                      "--model", "fcn8s", "--no-progress", "--threads", "1")
    assert rc == 0 and "batch_size=4 instead of the run's 8" in out and "taking model='unet'" in out
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["epoch"] == 3 and ck["config"]["batch_size"] == 4 and ck["config"]["model"] == "unet"


@pytest.mark.parametrize("argv, message", [
    (["--lr", "-1"], "argument --lr: must be > 0"),
    (["--weight-decay", "-1"], "argument --weight-decay: must be >= 0"),
    (["--batch-size", "1"], "argument --batch-size: must be >= 2"),
    (["--time-budget", "-5"], "argument --time-budget: must be > 0"),
    (["--time-budget", "0"], "argument --time-budget: must be > 0"),
    (["--overlays", "-3"], "argument --overlays: must be >= 0"),
])
def test_cli_train_rejects_bad_numbers(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cli_main(["seg", "train", *TINY, "--out", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_cli_dataset_errors(tmp_path, capsys):
    rc, _, err = _cli(capsys, "train", *TINY, "--dataset", str(tmp_path / "absent"), "--out", str(tmp_path / "r"))
    assert rc == 2 and "dataset folder not found" in err
    _write_folder(tmp_path / "ds", label_max=4)
    rc, _, err = _cli(capsys, "train", *TINY, "--dataset", str(tmp_path / "ds"), "--num-classes", "3",
                      "--out", str(tmp_path / "r"))
    assert rc == 2 and "outside [0, 3)" in err


def test_cli_refuses_unusable_class_weights_and_out(tmp_path, capsys):
    """Class weights that would make the loss NaN or reward errors, and a run directory that is a
    file, are refused before training (one line or a usage error, no traceback)."""
    for weights in ("0,0,0,0,0,0,0,0,0,0,0", "1,-5,1,1,1,1,1,1,1,1,1", "1,nan,1,1,1,1,1,1,1,1,1"):
        rc, _, err = _cli(capsys, "train", *TINY, "--epochs", "1", "--class-weights", weights,
                          "--out", str(tmp_path / "r"))
        assert rc == 2 and "--class-weights must be finite, non-negative and not all zero" in err, err
    (tmp_path / "afile").write_text("x")
    for out in ("afile", "afile/sub"):
        with pytest.raises(SystemExit) as e:
            cli_main(["seg", "train", *TINY, "--epochs", "1", "--out", str(tmp_path / out)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "is a file, not a directory" in err and "Traceback" not in err


def test_cli_diverging_run_stops_with_an_error(tmp_path, capsys):
    """A NaN training loss stops the run after the epoch's report with one error line (exit 2)."""
    rc, out, err = _cli(capsys, "train", *TINY, "--epochs", "3", "--lr", "1e30", "--threads", "1",
                        "--out", str(tmp_path / "r"))
    assert rc == 2 and "training diverged in epoch 1" in err and "lower --lr" in err
    assert "epoch   2" not in out


def test_cli_resume_takes_threads_and_eval_names_an_aliased_split(tmp_path, capsys):
    """--resume keeps the run's --threads (bits and speed depend on it); a folder dataset without
    test/ evaluates its val images for --split test and says so."""
    _write_folder(tmp_path / "ds")
    run = tmp_path / "run"
    small = ["--model", "unet", "--base-width", "4", "--batch-size", "2", "--no-progress", "--overlays", "0",
             "--dataset", str(tmp_path / "ds")]
    assert _cli(capsys, "train", *small, "--epochs", "1", "--threads", "1", "--out", str(run))[0] == 0
    assert _cli(capsys, "train", "--resume", str(run / "last.pt"), "--epochs", "2", "--no-progress")[0] == 0
    assert torch.load(run / "last.pt", weights_only=True)["config"]["threads"] == 1
    rc, out, err = _cli(capsys, "eval", str(run / "last.pt"), "--split", "test")
    assert rc == 0 and "test: mIoU" in out and "has no test split of its own: these are its val images" in err
    rc, out, err = _cli(capsys, "eval", str(run / "last.pt"), "--split", "val")
    assert rc == 0 and "note" not in err


def test_ddp_two_cpu_processes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "rnnkern.cli", "seg", "train", *TINY, "--epochs", "1", "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best val mIoU") == 1  # rank 0 alone reports
    ckpt = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert ckpt["step"] == 1  # 16 images, 2 ranks x batch 8 -> one step per epoch


def test_demo_runs_within_budget(tmp_path, capsys):
    import time

    from rnnkern.models.segmentation.demo import run_demo
    t = time.perf_counter()
    res = run_demo(seconds=4.0, out_dir=str(tmp_path / "demo"), train_size=64, val_size=16, progress=True)
    assert time.perf_counter() - t < 60
    assert res["steps"] >= 1 and 0.0 <= res["val_miou"] <= 1.0 and 0.0 < res["baseline_miou"] < 1.0
    assert Path(res["overlay"]).is_file() and Path(res["curves"]).is_file()
    out = capsys.readouterr()
    assert "majority-class baseline" in out.out
    # the bar shows the time budget, not the demo's nominal 1000 epochs
    assert "epoch 1 (" in out.err and "/1000" not in out.err
