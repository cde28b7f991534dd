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
