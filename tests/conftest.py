import os
import zlib

import pytest
import torch

import rnnkern  # noqa: F401  (registers the ops)
from tests.utils import HAS_CUDA


def pytest_sessionfinish(session, exitstatus):
    # RNNKERN_TEST_UNTRIED=only with no test marked `untried` (every opt-in kernel has run on a
    # GPU): nothing to run is a pass, not pytest's "no tests collected" (5)
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and os.environ.get("RNNKERN_TEST_UNTRIED") == "only":
        session.exitstatus = pytest.ExitCode.OK


def pytest_collection_modifyitems(config, items):
    # RNNKERN_TEST_UNTRIED=skip|only: leave out / keep only the tests marked `untried` (opt-in
    # kernels not yet run on a GPU; scripts/gpu_check.sh runs them in a process of their own: a
    # kernel that faults loses the CUDA context of every test after it in the same process)
    mode = os.environ.get("RNNKERN_TEST_UNTRIED", "")
    if mode not in ("", "skip", "only"):
        raise pytest.UsageError(f"RNNKERN_TEST_UNTRIED must be 'skip' or 'only', got {mode!r}")
    if mode:
        keep, drop = [], []
        for item in items:
            (keep if (item.get_closest_marker("untried") is not None) == (mode == "only") else drop).append(item)
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and rnnkern built with CUDA kernels")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # a different, reproducible seed per test case
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def strict_fp32(monkeypatch):
    """True fp32 on the GPU: torch.backends.cudnn.allow_tf32 (on by default) lets rnnkern's
    convolution and RNN kernels use TF32 tensor cores, as it lets cuDNN's."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@pytest.fixture
def matmul_precision_medium():
    """torch.set_float32_matmul_precision("medium") for one test: matrix products may then run in
    bf16 on the CPU (AMX / AVX512-BF16) and TF32 on the GPU. Every setting it touches is restored."""
    b = torch.backends
    saved = (torch.get_float32_matmul_precision(), b.mkldnn.matmul.fp32_precision, b.cuda.matmul.fp32_precision)
    torch.set_float32_matmul_precision("medium")
    yield
    torch.set_float32_matmul_precision(saved[0])
    b.mkldnn.matmul.fp32_precision, b.cuda.matmul.fp32_precision = saved[1], saved[2]


@pytest.fixture
def matmul_tf32():
    """torch.backends.cuda.matmul.allow_tf32 = True for one test, restored after (monkeypatch
    cannot undo it: the flag is a property of torch's cuBLAS module object, and undo's delattr
    raises there, which also stops every later undo of the test)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
