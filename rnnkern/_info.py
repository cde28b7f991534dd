"""What this build of rnnkern contains, for `rnnkern info` and bug reports."""
from __future__ import annotations

import os
import platform

import torch


def info() -> dict:
    """Versions, what was compiled (CPU/CUDA, archs), whether a GPU is visible, which ops exist."""
    from rnnkern import ops
    from rnnkern.ops._ext import WITH_CUDA
    try:
        from rnnkern import _build_info as b
        archs, cuda_home, built_with = b.CUDA_ARCHS, b.CUDA_HOME, b.BUILT_WITH_TORCH
    except ImportError:
        archs = cuda_home = built_with = None
    gpu = torch.cuda.is_available()
    return {
        "rnnkern": __import__("rnnkern").__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "built_with_torch": built_with,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_kernels_compiled": WITH_CUDA,
        "cuda_archs": archs,
        "cuda_home": cuda_home,
        "gpu_visible": gpu,
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "cpu_threads": torch.get_num_threads(),
        "cpu_rnn_step": ops.rnn.cpu_step(),
        "ops": list(ops.OPS),
        # the RNNKERN_* switches set in this process (paths forced, opt-in forms: README), since
        # they change which kernels run
        "overrides": {k: v for k, v in sorted(os.environ.items()) if k.startswith("RNNKERN_") and v} or None,
    }
