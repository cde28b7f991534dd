"""How the rnnkern:: operators are registered (csrc/bindings.cpp, csrc/autograd/, rnnkern/ops/):
a kernel per backend, the autograd formula in C++, the fake implementation in Python and found
by torch on its own. Each op's numbers are tested in its own file; this checks the wiring."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import rnnkern.functional as RF
from rnnkern.ops._ext import WITH_CUDA

OPS = ["max_unpool_forward", "max_unpool_backward", "rnn_forward", "rnn_backward", "conv2d_forward",
       "conv2d_backward_input", "conv2d_backward_weight", "conv_transpose2d_forward",
       "conv_transpose2d_backward_input", "conv_transpose2d_backward_weight"]
# rnn_backward has no formula: its double backward differentiates an ATen recurrence instead
WITH_AUTOGRAD = [op for op in OPS if op != "rnn_backward"]


@pytest.mark.parametrize("op", OPS)
def test_kernels_registered_per_backend(op):
    name = f"rnnkern::{op}"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA") == WITH_CUDA
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "Autograd") == (op in WITH_AUTOGRAD)


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


def test_only_needed_gradients_are_computed():
    # the C++ formulas read needs_input_grad: asking for grad_weight alone leaves the input's
    # gradient uncomputed, with or without a bias argument before it
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    for b in (None, torch.randn(4, requires_grad=True)):
        y = RF.conv2d(x, w, b, padding=1)
        (gw,) = torch.autograd.grad(y.square().sum(), w)
        ref = torch.autograd.grad(F.conv2d(x, w, b, padding=1).square().sum(), w)[0]
        assert torch.allclose(gw, ref, rtol=1e-4, atol=1e-4)
        assert x.grad is None


def test_autograd_refuses_functorch_clearly():
    # C++ autograd Functions are not functorch-transformable; torch says so (no silent wrong grad)
    with pytest.raises(RuntimeError, match="functorch"):
        torch.func.grad(lambda x: RF.conv2d(x, torch.ones(1, 1, 3, 3)).sum())(torch.randn(1, 1, 5, 5))
