import warnings

import pytest
import torch
from torch import nn

import rnnkern


def test_from_torch_swaps_layers_keeps_weights_and_outputs():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=2, dilation=2),   # dilated: swapped
        nn.Conv2d(4, 4, 1),                          # plain: kept by default
        nn.ConvTranspose2d(4, 2, 4, 2, 1),
        nn.Sequential(nn.ConvTranspose1d(2, 2, 3)),  # nested
    ).double()
    x = torch.randn(2, 3, 9, 7, dtype=torch.double)
    ref = model[:3](x)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    out = rnnkern.nn.from_torch(model)
    assert type(out[0]) is rnnkern.nn.Conv2d
    assert type(out[1]) is nn.Conv2d
    assert type(out[2]) is rnnkern.nn.ConvTranspose2d
    assert type(out[3][0]) is rnnkern.nn.ConvTranspose1d
    assert torch.allclose(out[:3](x), ref, rtol=1e-12, atol=1e-12)
    assert all(torch.equal(out.state_dict()[k], v) for k, v in sd.items())
    assert type(rnnkern.nn.from_torch(nn.Conv2d(2, 2, 1), dilated_only=False)) is rnnkern.nn.Conv2d


@pytest.mark.parametrize("train", [True, False])
def test_from_torch_rnn_and_unpool(train):
    rnn = nn.RNN(3, 5, 2, nonlinearity="relu", bidirectional=True, batch_first=True).double().train(train)
    x = torch.randn(4, 6, 3, dtype=torch.double)
    ref = rnn.eval()(x)[0]
    ours = rnnkern.nn.from_torch(rnn.train(train))
    assert type(ours) is rnnkern.nn.RNN and ours.training == train
    assert torch.allclose(ours.eval()(x)[0], ref, rtol=1e-12, atol=1e-12)
    unpool = rnnkern.nn.from_torch(nn.MaxUnpool2d(3, 2, 1))
    assert type(unpool) is rnnkern.nn.MaxUnpool2d and unpool.kernel_size == (3, 3) and unpool.padding == (1, 1)


def test_from_torch_keeps_parameter_objects_and_sharing():
    """The converted modules hold the very Parameters: frozen stays frozen, an optimizer built
    before the conversion still updates the model, and a module used twice stays one module."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
            self.b = self.a
            self.up = nn.ConvTranspose2d(4, 4, 2, 2)

        def forward(self, x):
            return self.up(self.b(self.a(x)))

    model = Tied()
    model.up.weight.requires_grad_(False)
    params = {n: p for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.a.weight.detach().clone()
    out = rnnkern.nn.from_torch(model)
    assert type(out.a) is rnnkern.nn.Conv2d and out.a is out.b
    assert type(out.up) is rnnkern.nn.ConvTranspose2d
    assert {n: p for n, p in out.named_parameters()} == params  # same objects, same names
    assert not out.up.weight.requires_grad
    out(torch.randn(2, 4, 8, 8)).sum().backward()
    opt.step()
    assert not torch.equal(out.a.weight, before) and out.up.weight.grad is None


def test_from_torch_keeps_hooked_modules():
    """A module with hooks (legacy weight_norm is one) would lose them: it stays torch's, with a
    warning; its un-hooked neighbours are still converted."""
    calls = []
    hooked = nn.Conv2d(3, 3, 3, padding=2, dilation=2)
    hooked.register_forward_hook(lambda *args: calls.append(1))
    with warnings.catch_warnings():  # torch deprecates the hook form of weight_norm, which is the point here
        warnings.simplefilter("ignore", FutureWarning)
        normed = nn.utils.weight_norm(nn.ConvTranspose2d(3, 3, 2, 2))
    model = nn.Sequential(hooked, normed, nn.ConvTranspose2d(3, 3, 2, 2))
    with pytest.warns(UserWarning, match="from_torch: kept"):
        out = rnnkern.nn.from_torch(model)
    assert out[0] is hooked and out[1] is normed and type(out[2]) is rnnkern.nn.ConvTranspose2d
    out(torch.randn(1, 3, 5, 5))
    assert calls == [1]


def test_drop_ins_are_instances_of_torch_classes():
    """Code that walks a model with isinstance(m, nn.Conv2d) (weight init, surgery) sees rnnkern's
    layers as torch's, with torch's repr and state_dict keys."""
    for name, args in [("Conv1d", (2, 3, 3, 1, 2, 2)), ("Conv2d", (2, 3, 3, 1, 2, 2)), ("ConvTranspose1d", (2, 3, 3, 2)),
                       ("ConvTranspose2d", (2, 3, 3, 2, 1)), ("MaxUnpool1d", (2,)), ("MaxUnpool2d", (2, 2, 1)),
                       ("RNNCell", (2, 3))]:
        ours, theirs = getattr(rnnkern.nn, name)(*args), getattr(nn, name)(*args)
        assert isinstance(ours, type(theirs)), name
        assert repr(ours) == repr(theirs) and list(ours.state_dict()) == list(theirs.state_dict()), name
    # rnnkern.nn.RNN is the exception: torch.compile refuses anything that is an RNNBase
    assert not isinstance(rnnkern.nn.RNN(2, 3), nn.RNNBase)


@pytest.mark.parametrize("name, args", [("Conv2d", (4, 6, 3, 1, 2, 2)), ("ConvTranspose2d", (4, 6, 3, 2))])
def test_channels_last_module_gives_channels_last_output(name, args):
    """A module moved to channels_last gives a channels_last result for an NCHW input, as torch's
    does (cuDNN's and oneDNN's rule: either operand channels_last), with the same values."""
    ours = getattr(rnnkern.nn, name)(*args).to(memory_format=torch.channels_last)
    theirs = getattr(nn, name)(*args).to(memory_format=torch.channels_last)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 9, 9)
    y, want = ours(x), theirs(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and want.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, want)


def test_from_torch_keeps_output_padding():
    """A transposed convolution's output_padding carries over (it sets the output size)."""
    for m, x in [(nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=(1, 0)), torch.randn(2, 3, 4, 5)),
                 (nn.ConvTranspose1d(3, 2, 3, stride=3, output_padding=2), torch.randn(2, 3, 6))]:
        m = m.double()
        x = x.double()
        ref = m(x)
        ours = rnnkern.nn.from_torch(m)
        assert ours.output_padding == m.output_padding
        out = ours(x)
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
