"""`python -m rnnkern.demo` and the per-part demos reject budgets that would train nothing."""
import pytest

from rnnkern import demo
from rnnkern.models.language import demo as lm_demo


@pytest.mark.parametrize("argv", [["--lm-seconds", "-1"], ["--seg-seconds", "0"], ["--lm-seconds", "nan"]])
def test_demo_rejects_nonpositive_budgets(capsys, argv):
    with pytest.raises(SystemExit) as e:
        demo.main([*argv, "--skip", "bench"])
    out = capsys.readouterr()
    assert e.value.code == 2 and "must be > 0" in out.err
    assert "rnnkern info" not in out.out  # stopped before the tour started


def test_lm_demo_rejects_nonpositive_seconds(capsys):
    with pytest.raises(SystemExit) as e:
        lm_demo.main(["--seconds", "-5"])
    assert e.value.code == 2 and "argument --seconds: must be > 0" in capsys.readouterr().err
