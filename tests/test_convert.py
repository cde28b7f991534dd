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
