"""rnnkern.nn's modules as drop-ins for torch.nn's, in what a torch user does with a module
besides calling it (more in test_conv.py, test_conv_transpose.py, test_max_unpool.py and
test_rnn_module.py)."""
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import rnnkern

SCRIPT_REFUSED = [("Conv1d", (3, 4, 3)), ("Conv2d", (3, 4, 3)), ("ConvTranspose1d", (3, 4, 3)),
                  ("ConvTranspose2d", (3, 4, 3)), ("MaxUnpool1d", (2,)), ("MaxUnpool2d", (2,)),
                  ("RNN", (3, 4)), ("RNNCell", (3, 4))]


@pytest.mark.parametrize("name,args", SCRIPT_REFUSED, ids=[n for n, _ in SCRIPT_REFUSED])
def test_jit_script_is_refused_with_a_clear_error(name, args):
    """torch.jit.script cannot compile the modules' Python forward: it says so, naming the module
    and what to use instead, whether the module is scripted itself, inside a container or
    parametrized (was: an AssertionError / ValueError about an annotation deep inside
    rnnkern.functional)."""
    match = rf"torch\.jit\.script.*rnnkern\.nn\.{name}\b.*torch\.compile.*torch\.nn\.{name}"
    module = getattr(rnnkern.nn, name)(*args)
    with pytest.raises(RuntimeError, match=match):
        torch.jit.script(module)
    with pytest.raises(RuntimeError, match=match):
        torch.jit.script(nn.Sequential(nn.Identity(), getattr(rnnkern.nn, name)(*args)))
    if name.startswith("Conv"):
        parametrizations.weight_norm(module)
        with pytest.raises(RuntimeError, match=match):
            torch.jit.script(module)


def test_rnn_has_torch_rnn_helpers():
    """The argument checks and helpers torch.nn.RNN exposes (check_forward_args, check_input,
    get_expected_hidden_size, check_hidden_size, permute_hidden, _all_weights), with its results
    and messages, and forward calls them as torch's does (a subclass may override them)."""
    kw = dict(num_layers=2, bidirectional=True, batch_first=True)
    ours, ref = rnnkern.nn.RNN(3, 4, **kw), nn.RNN(3, 4, **kw)
    assert ours._all_weights == ref._all_weights
    x, hx = torch.randn(5, 7, 3), torch.randn(4, 5, 4)
    assert ours.get_expected_hidden_size(x, None) == ref.get_expected_hidden_size(x, None) == (4, 5, 4)
    bs = torch.tensor([3, 2, 1])
    assert ours.get_expected_hidden_size(x[0], bs) == ref.get_expected_hidden_size(x[0], bs)
    perm = torch.tensor([2, 0, 1, 4, 3])
    torch.testing.assert_close(ours.permute_hidden(hx, perm), ref.permute_hidden(hx, perm))
    assert ours.permute_hidden(hx, None) is hx
    for bad_x, bad_hx in ((x, torch.randn(4, 5, 5)), (x[..., :2], hx), (x[0], hx)):
        with pytest.raises(RuntimeError) as want:
            ref.check_forward_args(bad_x, bad_hx, None)
        with pytest.raises(RuntimeError, match=re.escape(str(want.value))):
            ours.check_forward_args(bad_x, bad_hx, None)

    class Checked(rnnkern.nn.RNN):
        calls = 0

        def check_forward_args(self, input, hidden, batch_sizes):
            Checked.calls += 1
            super().check_forward_args(input, hidden, batch_sizes)

    Checked(3, 4)(torch.randn(6, 2, 3))
    assert Checked.calls == 1


def test_rnn_check_input_refuses_another_dtype_first_as_torch():
    """check_input's first check is torch's: an input of another dtype than the weights (autocast
    off) raises ValueError with torch's message, before the size checks."""
    ours, ref = rnnkern.nn.RNN(3, 4), nn.RNN(3, 4)
    x = torch.randn(5, 2, 2, dtype=torch.float64)  # wrong dtype and wrong feature size
    with pytest.raises(ValueError) as want:
        ref.check_input(x, None)
    with pytest.raises(ValueError, match=re.escape(str(want.value))):
        ours.check_input(x, None)
    with pytest.raises(ValueError, match=re.escape(str(want.value))):
        ours(x)
