"""The benchmarks time what they say: in every bench case, rnnkern's callable and torch's compute
the same thing (a closure bound to the wrong case's arguments would time other work)."""
import pytest
import torch

from bench import conv, conv_transpose, max_unpool, rnn
from tests.utils import rel_err


def _result(value):
    """The tensor a callable produced: the first tensor of a tuple (torch's convolution_backward
    with a one-pass mask, autograd.grad, an RNN's (output, h_n)); None for fwd+bwd runs."""
    if isinstance(value, (tuple, list)):
        value = next((v for v in value if isinstance(v, torch.Tensor)), None)
    return value


@pytest.mark.parametrize("module", [conv, conv_transpose, max_unpool, rnn], ids=lambda m: m.__name__)
def test_bench_cases_compare_like_with_like(module):
    benches = module.cases("cpu", quick=True)
    assert benches
    for b in benches:
        ours, theirs = _result(b.ours()), _result(b.theirs())
        if ours is None and theirs is None:  # e.g. fwd+bwd: nothing returned to compare
            continue
        assert ours.shape == theirs.shape, (b.case, b.pass_)
        assert rel_err(ours, theirs) < 1e-4, (b.case, b.pass_)


# ---------------------------------------------------------------------------------- `rnnkern bench` CLI
def _bench_cli(capsys, monkeypatch, *argv):
    """Run `rnnkern bench` with the timing replaced by a stub; returns (the stub's kwargs or None, rc,
    stderr). Threads set by --threads are restored."""
    from bench import harness
    from rnnkern.cli import main as cli_main
    seen = {}
    monkeypatch.setattr(harness, "run", lambda **kw: seen.update(kw) or 0)
    threads = torch.get_num_threads()
    try:
        rc = cli_main(["bench", *argv])
    except SystemExit as e:
        rc = e.code
    finally:
        torch.set_num_threads(threads)
    return seen or None, rc, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--ops", "foo"], "invalid choice: 'foo' (choose from 'max_unpool', 'rnn', 'conv_transpose', 'conv')"),
    (["--threads", "0"], "argument --threads: must be >= 1"),
    (["--threads", "-1"], "argument --threads: must be >= 1"),
    (["--json", "/nonexistent-dir/x.json"], "x.json: directory /nonexistent-dir does not exist"),
    (["--plot", "."], "--plot .: is a directory"),
])
def test_bench_cli_rejects_bad_options_before_timing(capsys, monkeypatch, argv, message):
    ran, rc, err = _bench_cli(capsys, monkeypatch, "--device", "cpu", *argv)
    assert rc == 2 and message in err and "Traceback" not in err
    assert ran is None  # nothing was timed


def test_bench_cli_json_auto_is_in_the_repository_from_any_directory(tmp_path, capsys, monkeypatch):
    import time

    from bench import harness
    results = tmp_path / "repo-results"
    results.mkdir()
    monkeypatch.setattr(harness, "RESULTS", results)  # not the real bench/results: it holds today's files
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    ran, rc, _ = _bench_cli(capsys, monkeypatch, "--device", "cpu", "--threads", "1", "--ops", "rnn", "conv",
                            "--json", "auto")
    assert rc == 0 and ran["ops"] == ["rnn", "conv"] and ran["device"] == "cpu"
    assert ran["json_path"] == str(results / f"cpu-1t-{time.strftime('%Y%m%d')}.json")


def test_bench_harness_checks_ops_and_prints_a_legend(capsys):
    from bench import harness
    assert harness.run(ops=["foo"], device="cpu") == 2
    assert "unknown op(s) foo; choose from max_unpool, rnn" in capsys.readouterr().err
    row = {"op": "rnn", "case": "c", "pass": "fwd", "ms": 1.0, "torch_ms": 2.0, "ratio": 2.0, "metric": "us/step",
           "value": 3.0}
    harness.print_table({"device": "CPU", "torch": "x", "cudnn": None, "rows": [row]})
    assert "ratio = torch ms / rnnkern ms (> 1: rnnkern is faster)" in capsys.readouterr().out


def test_minor_faults_counts_first_touches():
    """The harness's page-fault count per call (CPU rows' faults / torch_faults): first touches of
    a fresh 8 MB anonymous mapping fault, writes into memory already touched do not."""
    import mmap

    from bench import harness
    pytest.importorskip("resource")  # (Unix)
    buf = mmap.mmap(-1, 8 << 20)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        buf.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KB pages whatever the THP setting

    def touch():
        for off in range(0, 8 << 20, 4096):
            buf[off] = 1
    first, again = harness.minor_faults(touch), harness.minor_faults(touch)
    assert first >= 1000 and again < 100, (first, again)


def test_a_failing_case_is_recorded_and_the_rest_measured(tmp_path, monkeypatch, capsys):
    """A row that raises (an opt-in form that fails) does not cost the others: it goes to "errors",
    the measured rows stay in "rows" (the JSON is rewritten after every row), rc is 1; rows of forms
    not yet run on a GPU (harness.UNTRIED) run after all the others; once the CUDA context is
    unusable the run stops and says how many rows it left out."""
    import json
    import sys
    import types

    from bench import harness

    def boom():
        raise RuntimeError("variant X is broken")

    def bench(case, fn=lambda: torch.ones(4), **env):
        return harness.Bench("fake", case, "fwd", harness.with_env(fn, **env), lambda: torch.ones(4), "GB/s", 16.0)

    fake = types.ModuleType("bench.fake")
    fake.cases = lambda device, quick: [bench("untried", RNNKERN_RNN_BARRIER="exchange"), bench("good"),
                                        bench("bad", boom), bench("untried conv", RNNKERN_CONV_MMA="wgmma"),
                                        bench("good too")]
    monkeypatch.setitem(sys.modules, "bench.fake", fake)
    monkeypatch.setattr(harness, "OPS", ["fake"])
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    assert harness.run(device="cpu", quick=True, json_path=str(out), plot_path=str(png)) == 1
    result = json.loads(out.read_text())
    # untried forms last, the RNN exchange (which may trap by design) after the others
    assert [r["case"] for r in result["rows"]] == ["good", "good too", "untried conv", "untried"]
    assert result["errors"] == [{"op": "fake", "case": "bad", "pass": "fwd", "error": "RuntimeError: variant X is broken"}]
    assert "incomplete" not in result and png.exists() and not (tmp_path / "b.json.tmp").exists()
    captured = capsys.readouterr()
    assert "FAILED fake bad fwd: RuntimeError: variant X is broken" in captured.out and "fake bad fwd failed" in captured.err

    # a run stopped from outside (a timeout) leaves a file that says it is incomplete
    written = []
    monkeypatch.setattr(harness, "_write_json", lambda result, path: written.append(json.loads(json.dumps(result))))
    harness.run(device="cpu", quick=True, json_path=str(out))
    assert all("incomplete" in w for w in written[:-1]) and "incomplete" not in written[-1]
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "bench.fake", fake)
    monkeypatch.setattr(harness, "OPS", ["fake"])

    monkeypatch.setattr(harness, "_context_usable", lambda device: False)  # as after a kernel fault on a GPU
    assert harness.run(device="cpu", quick=True, json_path=str(out)) == 1
    result = json.loads(out.read_text())
    assert [r["case"] for r in result["rows"]] == ["good"]
    assert result["incomplete"] == "the CUDA context broke at this row; 3 rows not run"
