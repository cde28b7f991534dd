#!/usr/bin/env python3
"""The bench's opt-in forms against the default, from one `rnnkern bench --json` file: which
switches (RNNKERN_CONV_MMA=wgmma, RNNKERN_RNN_BARRIER=exchange, ...) win, and where.

    python3 scripts/bench_variants.py bench.json [--markdown]

A variant row (one whose `env` is set; in files written before rows carried it, one whose case
name extends another row's) is paired with the default row of the same op and pass whose case
name is the longest prefix of its own ("tf32 NCHW N8 256->256 64x64 d1 wgmma" with
"tf32 NCHW N8 256->256 64x64 d1"), timed in the same process. speedup = default ms / variant ms
(> 1: the variant is faster). Then, per variant, the geometric mean speedup over its rows and
how many it wins by more than 5%, and the rows that failed (the file's `errors`).
Needs only the standard library.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict


def label_of(env: dict) -> str:
    return " ".join(f"{k.removeprefix('RNNKERN_')}={v}" for k, v in sorted(env.items()))


def pairs(rows: list[dict]) -> list[tuple[dict, dict, str]]:
    """(default row, variant row, variant label) for every variant row that has a default."""
    defaults = defaultdict(list)  # (op, pass) -> rows without env
    for r in rows:
        if not r.get("env"):
            defaults[r["op"], r["pass"]].append(r)
    out = []
    tagged = any(r.get("env") for r in rows)  # (files from before rows carried env: by name alone)
    for r in rows:
        if tagged and not r.get("env"):
            continue
        cands = [d for d in defaults[r["op"], r["pass"]]
                 if d is not r and r["case"].startswith(d["case"] + " ")]
        if not cands:
            continue
        base = max(cands, key=lambda d: len(d["case"]))
        label = label_of(r["env"]) if r.get("env") else r["case"][len(base["case"]):].strip()
        out.append((base, r, label))
    return out


def summarize(result: dict, markdown: bool = False) -> str:
    ps = pairs(result["rows"])
    lines = []
    head = ["op", "case", "pass", "variant", "default ms", "variant ms", "speedup"]
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    else:
        lines.append(f"{'op':<15}{'case':<46}{'pass':<8}{'variant':<38}{'default ms':>11}{'variant ms':>11}{'speedup':>9}")
    by_variant = defaultdict(list)
    for d, v, label in ps:
        sp = d["ms"] / v["ms"] if v["ms"] > 0 else float("inf")
        by_variant[label].append(sp)
        cells = [d["op"], d["case"], d["pass"], label, f"{d['ms']:.4f}", f"{v['ms']:.4f}", f"{sp:.2f}x"]
        if markdown:
            lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append(f"{cells[0]:<15}{cells[1]:<46}{cells[2]:<8}{cells[3]:<38}{cells[4]:>11}{cells[5]:>11}"
                         f"{cells[6]:>9}")
    lines.append("")
    lines.append("per variant: geometric mean speedup over its rows, rows faster / slower by more than 5%")
    means = {label: math.prod(sps) ** (1 / len(sps)) for label, sps in by_variant.items()}
    for label in sorted(means, key=means.get, reverse=True):
        sps, gm = by_variant[label], means[label]
        win, lose = sum(s > 1.05 for s in sps), sum(s < 1 / 1.05 for s in sps)
        lines.append(f"  {label:<44} {gm:5.2f}x over {len(sps):>2} rows: {win} faster, {lose} slower")
    paired = {id(v) for _, v, _ in ps}
    for r in result["rows"]:
        if r.get("env") and id(r) not in paired:
            lines.append(f"  no default row for {r['op']} {r['case']} {r['pass']} (failed, or not benched)")
    for e in result.get("errors", []):
        lines.append(f"FAILED {e['op']} {e['case']} {e['pass']}: {e['error'][:160]}")
    if "incomplete" in result:
        lines.append(f"INCOMPLETE: {result['incomplete']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", help="a `rnnkern bench --json` file")
    ap.add_argument("--markdown", action="store_true", help="the pairs as a markdown table")
    args = ap.parse_args(argv)
    with open(args.json) as f:
        result = json.load(f)
    print(f"{result.get('device', '?')}  torch {result.get('torch', '?')}")
    print(summarize(result, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
