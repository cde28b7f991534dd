"""scripts/gpu_check.sh's racecheck processes cover every family of scripts/sanitize_driver.py."""
import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_racecheck_processes_cover_every_sanitizer_family():
    tree = ast.parse((ROOT / "scripts" / "sanitize_driver.py").read_text())
    checks = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "CHECKS" for t in node.targets))
    families = [elt.id for elt in checks.elts]
    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    lists = re.findall(r"step (racecheck\w*) .*sanitize_driver\.py ([a-z_ ]+?) &", script)
    assert [name for name, _ in lists] == ["racecheck", "racecheck_untried"]
    named = [f for _, fams in lists for f in fams.split()]
    assert sorted(named) == sorted(families) and len(named) == len(set(named)), (named, families)
    untried = lists[1][1].split()
    assert families[-len(untried):] == untried  # the untried families are CHECKS' last ones


def test_sanitizer_families_run_on_cpu():
    """Every family of scripts/sanitize_driver.py runs its Python on the CPU ops (same calls, CPU
    kernels), so a mistake in the driver shows here rather than in a device run's sanitizer step;
    each family leaves the RNNKERN_* switches it sets as it found them."""
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location("sanitize_driver", ROOT / "scripts" / "sanitize_driver.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    import torch
    tf32 = torch.backends.cudnn.allow_tf32
    try:
        for check in driver.CHECKS:
            before = {k: v for k, v in os.environ.items() if k.startswith("RNNKERN_")}
            check("cpu")
            assert {k: v for k, v in os.environ.items() if k.startswith("RNNKERN_")} == before, check.__name__
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def test_profile_cases_run_on_cpu():
    """Every Nsight case of scripts/profile_driver.py builds and runs its calls (dry run on the
    CPU ops at small sizes), so a broken case shows here rather than in a device run's profile."""
    import importlib.util
    import os
    import sys

    spec = importlib.util.spec_from_file_location("profile_driver", ROOT / "scripts" / "profile_driver.py")
    driver = importlib.util.module_from_spec(spec)
    sys.modules["profile_driver"] = driver  # (its dataclasses look their module up)
    small = {"rnn": dict(B=3, H=16, T=4), "conv": dict(n=1, cin=8, cout=8, hw=8),
             "conv_transpose": dict(n=1, hw=2, cin=4, cout=4), "max_unpool": dict(n=1, c=2, h=4, w=4)}
    saved = dict(os.environ)
    try:
        spec.loader.exec_module(driver)
        for name, case in driver.CASES.items():
            driver.run(name, device="cpu", overrides=small[case.setup.__name__])
    finally:  # run() drops RNNKERN_* and sets the case's own
        os.environ.clear()
        os.environ.update(saved)
        sys.modules.pop("profile_driver", None)
