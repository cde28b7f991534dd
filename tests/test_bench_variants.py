"""scripts/bench_variants.py pairs each opt-in form's row with its default's and summarises."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_variants", ROOT / "scripts" / "bench_variants.py")
bv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bv)


def _row(case, ms, pass_="fwd", op="conv", env=None):
    r = {"op": op, "case": case, "pass": pass_, "ms": ms, "torch_ms": 1.0, "ratio": 1.0 / ms}
    if env:
        r["env"] = env
    return r


def test_variants_pair_with_the_longest_default_prefix():
    rows = [_row("tf32 NCHW d1", 0.8), _row("tf32 NCHW d1", 0.9, "dgrad"), _row("tf32 NCHW d12", 0.5),
            _row("tf32 NCHW d1 wgmma", 0.4, env={"RNNKERN_CONV_MMA": "wgmma"}),
            _row("tf32 NCHW d1 wgmma", 1.8, "dgrad", env={"RNNKERN_CONV_MMA": "wgmma"}),
            _row("tf32 NCHW d12 via CL", 0.25, env={"RNNKERN_CONV_NCHW": "transpose"}),
            _row("tf32 NCHW d1 vs no-cuDNN", 0.8)]  # ours as the default: not a variant
    got = {(d["case"], v["pass"], label): round(d["ms"] / v["ms"], 3) for d, v, label in bv.pairs(rows)}
    assert got == {("tf32 NCHW d1", "fwd", "CONV_MMA=wgmma"): 2.0, ("tf32 NCHW d1", "dgrad", "CONV_MMA=wgmma"): 0.5,
                   ("tf32 NCHW d12", "fwd", "CONV_NCHW=transpose"): 2.0}
    text = bv.summarize({"rows": rows, "errors": [{"op": "rnn", "case": "x", "pass": "fwd", "error": "boom"}]})
    assert "CONV_MMA=wgmma" in text and "1.00x over  2 rows: 1 faster, 1 slower" in text
    assert "CONV_NCHW=transpose" in text and "2.00x over  1 rows: 1 faster, 0 slower" in text
    assert "FAILED rnn x fwd: boom" in text


def test_files_without_env_pair_by_name():
    rows = [_row("float32 B8 H256", 1.0, op="rnn"), _row("float32 B8 H256 barrier=flag", 1.25, op="rnn"),
            _row("float32 B8 H256 ctas=32", 2.0, op="rnn"), _row("float32 B8 H256 ctas=32 barrier=flag", 1.0, op="rnn")]
    got = {(d["case"], label): round(d["ms"] / v["ms"], 3) for d, v, label in bv.pairs(rows)}
    assert got == {("float32 B8 H256", "barrier=flag"): 0.8, ("float32 B8 H256", "ctas=32"): 0.5,
                   ("float32 B8 H256 ctas=32", "barrier=flag"): 2.0}


def test_markdown_and_cli(tmp_path, capsys):
    import json
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"device": "dev", "torch": "t", "rows": [_row("a", 1.0), _row("a x", 0.5, env={"K": "v"})]}))
    assert bv.main([str(path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| conv | a | fwd | K=v | 1.0000 | 0.5000 | 2.00x |" in out
