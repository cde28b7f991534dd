"""`rnnkern.info()` and `rnnkern info`: what the build contains, as a bug report would need it."""
import json

import torch

import rnnkern
from rnnkern.cli import main
from tests.utils import CPU_HAS_AVX512


def test_info_fields():
    info = rnnkern.info()
    assert info["torch"] == torch.__version__
    assert info["ops"] == ["max_unpool", "rnn", "conv", "conv_transpose"]
    assert info["gpu_visible"] == torch.cuda.is_available()
    assert isinstance(info["cuda_kernels_compiled"], bool)


def test_info_reports_cpu_rnn_step(monkeypatch):
    expected = "avx512" if CPU_HAS_AVX512 else "general"
    assert rnnkern.info()["cpu_rnn_step"].startswith(expected)
    monkeypatch.setenv("RNNKERN_RNN_PATH", "general")
    assert rnnkern.info()["cpu_rnn_step"] == "general (RNNKERN_RNN_PATH=general)"


def test_cli_info_json(capsys):
    assert main(["info", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ops"] == rnnkern.info()["ops"]


def test_info_lists_the_switches_set(monkeypatch):
    for k in [k for k in __import__("os").environ if k.startswith("RNNKERN_")]:
        monkeypatch.delenv(k)
    assert rnnkern.info()["overrides"] is None
    monkeypatch.setenv("RNNKERN_CONV_MMA", "wgmma")
    monkeypatch.setenv("RNNKERN_DEBUG", "")  # set but empty: not a switch
    assert rnnkern.info()["overrides"] == {"RNNKERN_CONV_MMA": "wgmma"}
