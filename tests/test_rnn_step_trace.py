"""scripts/rnn_step_trace.py's arithmetic on made-up stamps (the stamps themselves come from the
GPU kernels; tests/ops/test_rnn.py checks that a traced CUDA launch fills them)."""
import importlib.util
import pathlib

import pytest

_path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "rnn_step_trace.py"
_spec = importlib.util.spec_from_file_location("rnn_step_trace", _path)
rnn_step_trace = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rnn_step_trace)


def fake_stamps(phase_cycles, steps=64, ctas=2, ghz=2.0, step_ns=1000):
    """Stamps of a kernel whose steps take step_ns at ghz, phase k ending phase_cycles[k] cycles in."""
    out = []
    for c in range(ctas):
        rows = []
        for s in range(steps):
            t0, c0 = 10_000 + s * step_ns + 7 * c, 5_000 + int(s * step_ns * ghz)
            rows.append([t0, c0] + [c0 + p for p in phase_cycles] + [0] * (6 - len(phase_cycles)))
        out.append(rows)
    return out


def test_fma_kernel_phases_in_ns():
    got = rnn_step_trace.summarize("FMA kernel, grid, batch tile 1, 132 CTAs", fake_stamps([600, 1900]))
    assert [s["cta"] for s in got] == ["first", "last"]
    for s in got:
        assert s["steps"] == 62 and s["step_ns"] == 1000 and s["ghz"] == pytest.approx(2.0)
        assert s["phases_ns"] == pytest.approx({"work (h loads, FMAs, epilogue, stores)": 300, "step barrier": 650,
                                                "to the next step": 50})


def test_tensor_core_kernel_and_unstamped_steps():
    stamps = fake_stamps([100, 300, 700, 900, 1800])
    stamps[0][10] = [0] * 8  # a step that was never stamped: it and the one before are left out
    got = rnn_step_trace.summarize("tensor-core kernel, flag, 128 CTAs", stamps)
    assert got[0]["steps"] == 60 and got[1]["steps"] == 62
    assert got[0]["phases_ns"] == pytest.approx({"stage h slice": 50, "MMA": 100, "cluster barrier": 200,
                                                 "reduce + store": 100, "step barrier": 450, "to the next step": 100})


def test_exchange_kernels_name_their_phases():
    got = rnn_step_trace.summarize("FMA kernel, exchange, batch tile 1, 132 CTAs", fake_stamps([600, 610]))
    assert set(got[0]["phases_ns"]) == {"work (waits on the exchange words, FMAs, epilogue, stores)", "(no barrier)",
                                        "to the next step"}
    names = rnn_step_trace.phase_names("tensor-core kernel, exchange, 128 CTAs")
    assert names[0] == "stage h slice (waits on the exchange words)" and names[-1] == "(no barrier: partial sums double-buffered)"


def test_unknown_kernel_is_an_error():
    with pytest.raises(ValueError, match="no phase names"):
        rnn_step_trace.summarize("some other kernel", fake_stamps([1]))
