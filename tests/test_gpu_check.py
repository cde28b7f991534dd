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
