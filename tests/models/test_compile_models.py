"""torch.compile / autocast audit of the segmentation losses and models (small sizes, CPU)."""
import pytest
import torch
import torch.nn.functional as F

from rnnkern.models.segmentation import build_model, cross_entropy, soft_dice_loss


@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float16])
def test_seg_losses_under_autocast_are_fp32_like_torch(dt):
    """Inside autocast the model's logits are 16-bit; F.cross_entropy then returns fp32, and so must
    the package's mean cross-entropy (it returned the 16-bit dtype) and soft Dice."""
    torch.manual_seed(0)
    z, t = torch.randn(2, 3, 8, 8).to(dt), torch.randint(0, 3, (2, 8, 8))
    with torch.autocast("cpu", dtype=dt):
        ref = F.cross_entropy(z, t)
        got = cross_entropy(z, t)
        dice = soft_dice_loss(z, t)
        binary = cross_entropy(z[:, :1], t.clamp_max(1))
    assert got.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(got, ref)
    assert dice.dtype == torch.float32 and binary.dtype == torch.float32
    # outside autocast 16-bit logits still give a 16-bit loss, as F.cross_entropy
    assert cross_entropy(z, t).dtype == F.cross_entropy(z, t).dtype == dt
    assert soft_dice_loss(z, t).dtype == dt


def test_fp16_soft_dice_and_binary_ce_do_not_overflow():
    """fp16 per-class sums over ~90k pixels passed 65504: soft Dice and the binary CE mean were NaN."""
    torch.manual_seed(0)
    z, t = torch.randn(2, 2, 300, 300), torch.randint(0, 2, (2, 300, 300))
    zh = z.half().requires_grad_()
    d = soft_dice_loss(zh, t)
    d.backward()
    assert d.dtype == torch.float16 and torch.isfinite(zh.grad).all()
    torch.testing.assert_close(d.float(), soft_dice_loss(z, t), rtol=2e-3, atol=0)
    zb, tb = z[:, :1] * 2, t
    got = cross_entropy(zb.half(), tb)
    assert got.dtype == torch.float16 and torch.isfinite(got)
    torch.testing.assert_close(got.float(), cross_entropy(zb, tb), rtol=2e-3, atol=0)


def test_unet_compiles_fullgraph_without_recompiles():
    """fullgraph capture (aot_eager: no C++ compiler needed) matches eager, forward and backward."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    m = build_model("unet", 3, base_width=4, depth=2).train()
    x, t = torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    import copy
    mc = copy.deepcopy(m)
    cm = torch.compile(mc, fullgraph=True, backend="aot_eager")
    for _ in range(2):
        oe, oc = m(x), cm(x)
        torch.testing.assert_close(oc["out"], oe["out"], rtol=1e-5, atol=1e-6)
        (cross_entropy(oe["out"], t) + soft_dice_loss(oe["out"], t)).backward()
        (cross_entropy(oc["out"], t) + soft_dice_loss(oc["out"], t)).backward()
    for pe, pc in zip(m.parameters(), mc.parameters()):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-6)
    assert sum(counters["graph_break"].values()) == 0
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("channels", [3, 1], ids=["multiclass", "binary"])
def test_seg_losses_compile_fullgraph(channels):
    """The losses compile with fullgraph (a training step compiled whole): their label check is an
    asynchronous assert inside a graph (it branched on the data), same values and gradients as
    eager, and an out-of-range label still raises, naming the valid range."""
    z = torch.randn(2, channels, 8, 8, requires_grad=True)
    t = torch.randint(0, max(channels, 2), (2, 8, 8))
    t[0, 0] = 255
    for loss in (cross_entropy, soft_dice_loss):
        compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
        got, want = compiled(z, t), loss(z, t)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(torch.autograd.grad(got, z)[0], torch.autograd.grad(want, z)[0])
        bad = t.clone()
        bad[1, 1, 1] = 7
        with pytest.raises(RuntimeError, match=r"target labels must be in \[0, "):
            compiled(z, bad)
