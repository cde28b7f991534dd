"""setup.py's CUDA arch list: sm_90 becomes sm_90a, archs below sm_80 are refused with a clear
message (the tensor-core kernels trap there, and PTX for such an arch would run that arch's code
on a newer GPU)."""
import ast
import os
import pathlib
import sys
import types

import pytest
import torch

SETUP = pathlib.Path(__file__).resolve().parents[1] / "setup.py"


@pytest.fixture
def cuda_arch_list(monkeypatch):
    """setup.py's cuda_arch_list alone (importing setup.py would run setup())."""
    tree = ast.parse(SETUP.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "cuda_arch_list")
    module = types.ModuleType("setup_archs")
    module.__dict__.update(os=os, sys=sys, torch=torch)
    exec(compile(ast.Module([fn], type_ignores=[]), str(SETUP), "exec"), module.__dict__)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def run(archs):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", archs)
        return module.cuda_arch_list()
    return run


@pytest.mark.parametrize("archs,expected", [
    ("", ("8.0;9.0a", [])),
    ("8.0;9.0", ("8.0;9.0a", [])),
    ("90", ("9.0a", [])),
    ("8.6 9.0+PTX", ("8.6;9.0a", ["-gencode=arch=compute_90,code=compute_90"])),
    ("8.9+PTX", ("8.9+PTX", [])),
])
def test_arch_list_normalised(cuda_arch_list, archs, expected):
    assert cuda_arch_list(archs) == expected


@pytest.mark.parametrize("archs", ["7.5", "7.5+PTX", "8.0;7.0", "60"])
def test_archs_below_sm80_refused(cuda_arch_list, archs):
    with pytest.raises(SystemExit, match="need compute capability 8.0 or newer"):
        cuda_arch_list(archs)
