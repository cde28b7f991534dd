"""Shared test helpers: devices, tolerances, error measure."""
import pytest
import torch

from rnnkern.ops._ext import WITH_CUDA

HAS_CUDA = torch.cuda.is_available() and WITH_CUDA


def _cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f " in f.read().replace("\n", " ")
    except OSError:
        return False


# csrc/cpu/rnn.cpp runs its register-blocked float32 step on such CPUs (its ATen step elsewhere)
CPU_HAS_AVX512 = _cpu_has_avx512()
# parametrize over these; CUDA cases carry the `cuda` mark and are skipped without a GPU
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

# DESIGN.md: fp32 vs fp64 reference by relative norm error
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
TOL_TF32 = 5e-3


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, computed in fp64 on out's device (the reference may live elsewhere)."""
    ref = ref.detach().double().to(out.device)
    den = ref.norm().item()
    num = (out.double() - ref).norm().item()
    return num / den if den > 0 else num
