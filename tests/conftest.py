import os
import zlib

import pytest
import torch

import rnnkern  # noqa: F401  (registers the ops)
from tests.utils import HAS_CUDA


def pytest_collection_modifyitems(config, items):
    # RNNKERN_TEST_EXCHANGE=skip|only: leave out / keep only the tests marked `exchange`
    # (scripts/gpu_check.sh runs them in a process of their own: a kernel that traps there loses
    # the CUDA context of every test after it in the same process)
    mode = os.environ.get("RNNKERN_TEST_EXCHANGE", "")
    if mode in ("skip", "only"):
        keep = [item for item in items if ("exchange" in item.keywords) == (mode == "only")]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
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
