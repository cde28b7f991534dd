"""scripts/check_ptxas_report.py, the gate `make cuda-check` runs over nvcc's -Xptxas=-v output."""
import pathlib
import runpy
import shutil
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "check_ptxas_report.py"

# The shape of ptxas's report (CUDA 13.0), trimmed from a real build of conv.cu for sm_90a.
CLEAN = """\
ptxas info    : Compiling entry function '_Z6kernelILi1EEvv' for 'sm_90a'
ptxas info    : Function properties for _Z6kernelILi1EEvv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 70 registers, used 1 barriers, 2048 bytes smem
"""
SERIALISED = """\
ptxas info    : (C7518) Potential Performance Loss: wgmma.mma_async instructions are serialized due to \
program dependence on compiler-inserted WG.DP in divergent path in the function '_Z6kernelILi2EEvv'
ptxas info    : Compiling entry function '_Z6kernelILi2EEvv' for 'sm_90a'
ptxas info    : Function properties for _Z6kernelILi2EEvv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
"""
SERIALISED_C7515 = """\
ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized due to \
non wgmma instructions defining accumulator registers of a wgmma between start and end of the pipeline \
stage in the function '_Z6kernelILi4EEvv'
ptxas info    : Compiling entry function '_Z6kernelILi4EEvv' for 'sm_90a'
"""
SPILLING = """\
ptxas info    : Compiling entry function '_Z6kernelILi3EEvv' for 'sm_80'
ptxas info    : Function properties for _Z6kernelILi3EEvv
    48 bytes stack frame, 40 bytes spill stores, 40 bytes spill loads
"""


def run(tmp_path, monkeypatch, capsys, text):
    log = tmp_path / "build.log"
    log.write_text(text)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), str(log)])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    return e.value.code, capsys.readouterr().out


def test_clean_report_passes(tmp_path, monkeypatch, capsys):
    code, out = run(tmp_path, monkeypatch, capsys, "other build output\n" + CLEAN)
    assert code == 0, out
    assert "1 kernel compilations, 0 with serialised wgmma, 0 with spills" in out


@pytest.mark.parametrize("text, what", [(SERIALISED, "serialises wgmma (C7518: program dependence"),
                                        (SERIALISED_C7515, "serialises wgmma (C7515: non wgmma instructions"),
                                        (SPILLING, "register spills (40 B")])
def test_lost_pipelining_or_spills_fail(tmp_path, monkeypatch, capsys, text, what):
    code, out = run(tmp_path, monkeypatch, capsys, CLEAN + text)
    assert code == 1
    assert what in out, out
    assert "kernel<" in out or shutil.which("c++filt") is None, out  # names demangled where c++filt exists


def test_a_log_without_a_report_fails(tmp_path, monkeypatch, capsys):
    code, out = run(tmp_path, monkeypatch, capsys, "building rnnkern\n")
    assert code == 1 and "no ptxas report" in out
