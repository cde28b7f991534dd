"""The benchmarks time what they say: in every bench case, rnnkern's callable and torch's compute
the same thing (a closure bound to the wrong case's arguments would time other work)."""
import pytest
import torch

from bench import conv, conv_transpose, max_unpool, rnn
from tests.utils import rel_err


def _result(value):
    """The tensor a callable produced: the first tensor of a tuple (torch's convolution_backward
    with a one-pass mask, autograd.grad, an RNN's (output, h_n)); None for fwd+bwd runs."""
    if isinstance(value, (tuple, list)):
        value = next((v for v in value if isinstance(v, torch.Tensor)), None)
    return value


@pytest.mark.parametrize("module", [conv, conv_transpose, max_unpool, rnn], ids=lambda m: m.__name__)
def test_bench_cases_compare_like_with_like(module):
    benches = module.cases("cpu", quick=True)
    assert benches
    for b in benches:
        ours, theirs = _result(b.ours()), _result(b.theirs())
        if ours is None and theirs is None:  # e.g. fwd+bwd: nothing returned to compare
            continue
        assert ours.shape == theirs.shape, (b.case, b.pass_)
        assert rel_err(ours, theirs) < 1e-4, (b.case, b.pass_)
