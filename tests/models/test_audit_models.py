"""Regression tests from an audit of rnnkern.models: batches without labelled pixels, n-gram
scoring of text longer than the training text, sampling at extreme temperatures, the exact
single-stream RNN score, and LM resume reproducing the uninterrupted run."""
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkern.cli import main as cli_main
from rnnkern.models.language import cli as lm_cli  # noqa: F401  (registers `lm`)
from rnnkern.models.language.ngram import NGramLM
from rnnkern.models.language.rnn_lm import RNNLM
from rnnkern.models.language.sampling import sample_logits
from rnnkern.models.language.train import LMConfig, evaluate, train
from rnnkern.models.segmentation.data import SegData
from rnnkern.models.segmentation.losses import CEDiceLoss, cross_entropy
from rnnkern.models.segmentation.train import TrainConfig, train as seg_train


# ------------------------------------------------------------------------------ segmentation loss
def test_cross_entropy_without_labelled_pixels_is_zero_not_nan():
    torch.manual_seed(0)
    ignored = torch.full((2, 5, 6), 255)
    for logits in (torch.randn(2, 4, 5, 6, dtype=torch.float64), torch.randn(2, 1, 5, 6, dtype=torch.float64)):
        z = logits.clone().requires_grad_()
        loss = cross_entropy(z, ignored)
        loss.backward()
        assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))
        assert CEDiceLoss()(logits, ignored).item() == 1.0  # dice of absent classes is 1, CE adds 0
    # only pixels of a zero-weight class: the weighted mean's denominator is 0 as well
    z = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.zeros(2, 4, 4, dtype=torch.long)
    loss = cross_entropy(z, t, weight=torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    loss.backward()
    assert loss.item() == 0.0 and bool(torch.isfinite(z.grad).all())
    # with labelled pixels it still is F.cross_entropy's mean
    t = torch.randint(0, 3, (2, 4, 4))
    t[0, 0] = 255
    w = torch.rand(3, dtype=torch.float64)
    for weight in (None, w):
        ref = F.cross_entropy(z, t, weight=weight, ignore_index=255)
        assert torch.allclose(cross_entropy(z, t, weight), ref)


def test_training_on_partly_unlabelled_images_does_not_diverge(tmp_path):
    # 4 training images, 3 of them entirely ignore (255) as a folder dataset allows: with batches of
    # 2 one batch per epoch has no labelled pixel, whose NaN mean CE stopped the run as "diverged"
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g)
    m = (x[:, 0] > 0.5).long()
    m[:3] = 255
    xv = torch.rand(2, 1, 8, 8, generator=g)
    mv = (xv[:, 0] > 0.5).long()
    data = SegData("partly-unlabelled", 2, 1, ["bg", "fg"], {"train": (x, m), "val": (xv, mv), "test": (xv, mv)},
                   mean=[0.5], std=[0.3])
    cfg = TrainConfig(model="unet", epochs=2, batch_size=2, base_width=2, out=str(tmp_path / "run"),
                      progress=False, overlays=0, threads=1)
    res = seg_train(cfg, data)
    assert all(math.isfinite(v) for v in res["history"]["train_loss"])


# ------------------------------------------------------------------------------ n-gram
@pytest.mark.parametrize("smoothing", ["kn", "addk"])
def test_ngram_scores_text_longer_than_its_training_text(smoothing, tmp_path):
    # an order with no n-grams in training (train shorter than the order) raised IndexError
    test = [1, 2, 3, 4, 1, 2, 3, 0, 5]
    for train_ids in ([2], [1, 2], [1, 2, 3]):
        lm = NGramLM(5, 7, smoothing).fit(train_ids)
        lp = lm.token_logprobs(test)
        ref = [math.log(lm.distribution(test[max(0, i - 4):i])[t]) for i, t in enumerate(test)]
        assert np.allclose(lp, ref)
    # through the CLI: a 3-char train split, longer val/test lines, order 5
    corpus = tmp_path / "c.txt"
    corpus.write_text("ab\ncdefghijkl\nmnopqrstuvw\n")
    assert cli_main(["lm", "train", "--model", "ngram", "--level", "char", "--order", "5", "--smoothing", smoothing,
                     "--corpus", str(corpus), "--out", str(tmp_path / "run"), "--no-plot"]) == 0


# ------------------------------------------------------------------------------ sampling
def test_sampling_at_extreme_temperatures():
    torch.manual_seed(0)
    logits = torch.randn(10, dtype=torch.float64) * 50
    best = int(logits.argmax())
    g = torch.Generator().manual_seed(0)
    # logits / T overflowed to inf (NaN after subtracting the max) and multinomial raised
    for t in (1e-300, 1e-310, 5e-324):
        assert sample_logits(logits, t, generator=g) == best
    # T = inf with top-k: uniform over the k kept tokens (-inf / inf was NaN)
    kept = set(torch.topk(logits, 3).indices.tolist())
    drawn = {sample_logits(logits, float("inf"), top_k=3, generator=g) for _ in range(200)}
    assert drawn == kept
    with pytest.raises(ValueError, match="temperature"):
        sample_logits(logits, float("nan"))


# ------------------------------------------------------------------------------ RNN evaluation
def test_rnn_eval_with_one_stream_is_the_exact_single_stream_score():
    # the first segment read `burn_in` pad tokens before the split's first token, so even
    # streams=1 was not the score of one stream from the zero state
    torch.manual_seed(0)
    V = 13
    m = RNNLM(V, 8, 24, num_layers=2).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3)  # a long memory, so the pad history shows
    ids = torch.randint(0, V, (300,))
    with torch.no_grad():
        logits, _ = m(ids[:-1].view(-1, 1))
        ref = F.cross_entropy(logits.view(-1, V), ids[1:], reduction="sum").item()
    cfg = LMConfig().resolve()
    for burn_in in (0, 50, 400):
        s, n = evaluate(m, ids, cfg, torch.device("cpu"), streams=1, burn_in=burn_in, chunk=64)
        assert n == 299 and math.isclose(s, ref, rel_tol=1e-6)


# ------------------------------------------------------------------------------ LM resume
@pytest.mark.parametrize("model", ["rnn", "fixed"])
def test_lm_resume_reproduces_the_uninterrupted_run(model, tmp_path):
    rng = random.Random(0)
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join("".join(rng.choice("abcde fgh") for _ in range(rng.randint(5, 30))) + "\n"
                              for _ in range(60)))

    def run(out, steps, resume=None):
        cfg = LMConfig(model=model, level="char", corpus=str(corpus), hidden=16, embed_dim=8, batch_size=4, bptt=8,
                       steps=steps, eval_every=1000, dropout=0.3, progress=False, plot=False, out=str(out), seed=3,
                       threads=1)
        return train(cfg, resume=resume, log=lambda *a: None)

    whole = run(tmp_path / "a", 12)["last_model"].state_dict()
    first = run(tmp_path / "b", 6)
    resumed = run(tmp_path / "b", 12, resume=first["last_ckpt"])["last_model"].state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_lm_resume_on_another_device_reseeds_the_windows(tmp_path):
    """A checkpoint whose window generator lived on another device (trained on CUDA, resumed on the
    CPU) resumes, re-seeding the windows by step as before (a CUDA generator's state does not fit
    a CPU generator)."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcde fgh\n" * 40)
    cfg = dict(model="fixed", level="char", corpus=str(corpus), hidden=16, embed_dim=8, batch_size=4, steps=2,
               eval_every=1000, progress=False, plot=False, out=str(tmp_path / "a"), seed=3, threads=1)
    first = train(LMConfig(**cfg), log=lambda *a: None)
    ck = torch.load(first["last_ckpt"], weights_only=False)
    assert ck["window_rng_device"] == "cpu"
    ck["window_rng"], ck["window_rng_device"] = torch.zeros(16, dtype=torch.uint8), "cuda"
    torch.save(ck, first["last_ckpt"])
    cfg["steps"] = 4
    train(LMConfig(**cfg), resume=first["last_ckpt"], log=lambda *a: None)


def test_cross_entropy_mean_with_negative_weights_and_16_bit_logits():
    """The mean divides by any non-zero weight total (negative ones too, as F.cross_entropy), and
    16-bit logits are summed in fp32 (an fp16 sum of 90000 pixel losses overflows)."""
    from rnnkern.models.segmentation.losses import cross_entropy
    z, t = torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 8, 8))
    w = torch.tensor([-1.0, 0.5, 0.2, 0.1])
    torch.testing.assert_close(cross_entropy(z, t, weight=w), F.cross_entropy(z, t, weight=w))
    z = (torch.randn(1, 3, 300, 300) * 3).half()
    t = torch.randint(0, 3, (1, 300, 300))
    got = cross_entropy(z, t)
    assert got.dtype == torch.float16 and torch.isfinite(got)
    torch.testing.assert_close(got.float(), F.cross_entropy(z.float(), t), rtol=2e-3, atol=0)
