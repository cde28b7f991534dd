"""How the rnnkern:: operators are registered (csrc/bindings.cpp, csrc/autograd/, rnnkern/ops/):
a kernel per backend, the autograd formula in C++, the fake implementation in Python and found
by torch on its own. Each op's numbers are tested in its own file; this checks the wiring."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import rnnkern.functional as RF
from rnnkern.ops._ext import WITH_CUDA

OPS = ["max_unpool_forward", "max_unpool_backward", "rnn_forward", "rnn_backward", "conv2d_forward",
       "conv2d_backward_input", "conv2d_backward_weight", "conv_transpose2d_forward",
       "conv_transpose2d_backward_input", "conv_transpose2d_backward_weight"]


@pytest.mark.parametrize("op", OPS)
def test_kernels_registered_per_backend(op):
    name = f"rnnkern::{op}"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA") == WITH_CUDA
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "Autograd")
    # as torch.library.custom_op tags its ops: torch.compile trusts them in strict mode too
    assert torch.Tag.pt2_compliant_tag in getattr(torch.ops.rnnkern, op).default.tags


def test_sizes_taken_from_tensors_are_symbolic():
    # the Python custom ops these replaced inferred SymInt[]; compile(dynamic=True) relies on it
    schema = str(torch.ops.rnnkern.conv2d_backward_input.default._schema)
    assert "SymInt[] input_size" in schema and "int[] stride" in schema
    assert "SymInt[] output_size" in str(torch.ops.rnnkern.max_unpool_forward.default._schema)


def test_fake_found_with_only_the_extension_imported():
    # set_python_module tells torch which module holds the fake: a fresh process that imports
    # only rnnkern._C still traces the op with fake tensors (torch imports rnnkern.ops.* itself)
    code = (
        "import torch, rnnkern._C\n"
        "from torch._subclasses.fake_tensor import FakeTensorMode\n"
        "with FakeTensorMode():\n"
        "    x = torch.randn(2, 3, 5, 7)\n"
        "    w = torch.randn(4, 3, 3, 3)\n"
        "    y = torch.ops.rnnkern.conv2d_forward(x, w, None, [1, 1], [2, 2], [2, 2], 1)\n"
        "print(tuple(y.shape))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "(2, 4, 5, 7)"


def test_no_graph_without_grad():
    x = torch.randn(2, 3, 8, 8)
    p, idx = F.max_pool2d(x, 2, return_indices=True)
    assert RF.max_unpool2d(p, idx, 2).grad_fn is None
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    with torch.no_grad():
        assert RF.conv2d(x, w, padding=1).grad_fn is None
    with torch.inference_mode():
        y = RF.conv2d(x, w, padding=1)
    assert y.is_inference() and torch.allclose(y, F.conv2d(x, w.detach(), padding=1), atol=1e-5)


class _OpLog(TorchDispatchMode):
    """Records the rnnkern ops that run (with their bool arguments) while active."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "rnnkern":
            self.calls.append((func.__name__.split(".")[0], [a for a in args if isinstance(a, bool)]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("with_bias", [False, True])
def test_only_needed_gradients_are_computed(with_bias):
    # the C++ formulas read needs_input_grad, whose index counts only the tensors present: with or
    # without a bias before it, asking for one gradient runs only the op that computes it
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True) if with_bias else None
    wanted = {"x": x, "w": w, "b": b}
    expect = {"x": [("conv2d_backward_input", [])], "w": [("conv2d_backward_weight", [False])], "b": []}
    for name in ("x", "w") + (("b",) if with_bias else ()):
        y = RF.conv2d(x, w, b, padding=1)
        with _OpLog() as log:
            (g,) = torch.autograd.grad(y.square().sum(), wanted[name])
        assert log.calls == expect[name], name
        ref = torch.autograd.grad(F.conv2d(x, w, b, padding=1).square().sum(), wanted[name])[0]
        assert torch.allclose(g, ref, rtol=1e-4, atol=1e-4), name


def test_differentiating_rnn_backward_directly_raises():
    # rnn_backward has no formula of its own (double backward goes through an ATen recurrence):
    # differentiating a direct call raises instead of silently returning no gradient
    T, B, H = 3, 2, 4
    x, h0 = torch.randn(T, B, H), torch.randn(B, H)
    w_ih, w_hh = torch.randn(H, H, requires_grad=True), torch.randn(H, H)
    out, hn = torch.ops.rnnkern.rnn_forward(x, h0, w_ih.detach(), w_hh, None, None, None, False)
    grads = torch.ops.rnnkern.rnn_backward(torch.randn_like(out), torch.randn_like(hn), x, h0, w_ih, w_hh, out, None,
                                           False, False)
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(grads[2].sum(), w_ih)
