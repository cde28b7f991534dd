"""Where a persistent RNN step's time goes, on the GPU: runs the issue-4 shapes (T=256) with
RNNKERN_RNN_TRACE=1 and prints, per shape, the kernel that ran and the median nanoseconds of
each phase of a step for the first and the last CTA (csrc/cuda/rnn.cu: trace_stamp).

    python3 scripts/rnn_step_trace.py [--json PATH] [--backward]

Nsight Compute cannot replay these kernels (their barriers need every CTA resident), and the
bench's per-call times hide the split between the step's own work and its barrier: this is the
number the per-step models in bench/NOTES.md are checked against. Clock cycles become ns through
the global timer over the same steps (so the SM's actual clock, not its nominal one)."""
from __future__ import annotations

import argparse
import json
import os
import statistics

PHASES = {  # the stamps each kernel makes after a step's start, in order
    "FMA kernel": ["work (h loads, FMAs, epilogue, stores)", "step barrier"],
    "tensor-core kernel": ["stage h slice", "MMA", "cluster barrier", "reduce + store", "step barrier"],
    # (the W-in-registers forms first: phase_names takes the first prefix that matches)
    "on-chip kernel, one CTA, W in registers": ["z loads issued", "MMA (this warp's quarter of k)",
                                                "first __syncthreads", "epilogue, second __syncthreads, stores"],
    "on-chip kernel, cluster, W in registers": ["z loads issued, cluster wait", "MMA (this warp's quarter of k)",
                                                "__syncthreads",
                                                "epilogue, __syncthreads, h_t to every rank, cluster arrive, stores"],
    "on-chip kernel, one CTA": ["z loads issued", "MMA (this warp's half of k)", "first __syncthreads",
                                "epilogue, second __syncthreads, stores"],
    "on-chip kernel, cluster": ["z loads issued, cluster wait", "MMA (this warp's half of k)", "__syncthreads",
                                "epilogue, __syncthreads, h_t to every rank, cluster arrive, stores"],
}
# RNNKERN_RNN_BARRIER=exchange: the waits move into the loads, and the step ends without a grid barrier
EXCHANGE_PHASES = {
    "FMA kernel": ["work (waits on the exchange words, FMAs, epilogue, stores)", "(no barrier)"],
    "tensor-core kernel": ["stage h slice (waits on the exchange words)", "MMA", "cluster barrier",
                           "reduce + store", "(no barrier: partial sums double-buffered)"],
}


NEXT = "to the next step"


def phase_names(kernel: str) -> list[str]:
    table = EXCHANGE_PHASES if ", exchange," in kernel else PHASES
    for prefix, names in table.items():
        if kernel.startswith(prefix):
            return names
    raise ValueError(f"no phase names for kernel {kernel!r}")


def summarize(kernel: str, stamps) -> list[dict]:
    """Per traced CTA: median step time (ns), the SM clock (GHz) and each phase's median ns.
    stamps: (CTAs, steps, 8) nested lists or a tensor; slot 0 the global timer at the step's start,
    slot 1 the clock there, slot k + 1 the clock at the end of phase k. Step 0 is left out (its
    first phases have no previous state), as is any step without the next one's start."""
    names = phase_names(kernel)
    rows = stamps.tolist() if hasattr(stamps, "tolist") else stamps
    out = []
    for cta, steps in zip(("first", "last"), rows):
        per_phase = {n: [] for n in names + [NEXT]}
        step_ns, ghz = [], []
        for s in range(1, len(steps) - 1):
            cur, nxt = steps[s], steps[s + 1]
            if cur[0] == 0 or nxt[0] == 0 or nxt[0] <= cur[0]:
                continue
            ns, cycles = nxt[0] - cur[0], nxt[1] - cur[1]
            step_ns.append(ns)
            ghz.append(cycles / ns)
            prev = cur[1]
            for k, n in enumerate(names, start=1):
                if cur[k + 1] == 0:  # not stamped this step (e.g. no state to multiply)
                    continue
                per_phase[n].append(cur[k + 1] - prev)
                prev = cur[k + 1]
            per_phase[NEXT].append(nxt[1] - prev)  # from the last phase's end to the next step's start
        if not step_ns:
            continue
        clock = statistics.median(ghz)
        phases = {n: statistics.median(v) / clock for n, v in per_phase.items() if v}
        out.append({"cta": cta, "steps": len(step_ns), "step_ns": statistics.median(step_ns), "ghz": clock,
                    "phases_ns": phases})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the summaries here")
    ap.add_argument("--backward", action="store_true", help="trace the backward's reverse recurrence too")
    args = ap.parse_args()
    os.environ["RNNKERN_RNN_TRACE"] = "1"
    import torch
    from rnnkern.ops import rnn as rnn_ops  # (loads the ops)

    torch.backends.cudnn.allow_tf32 = True  # the bench's setting (tf32 allowed on both sides)
    # the issue-4 shapes with the default choice, and the barriers against each other where the FMA
    # kernel runs (B8 H256) or can be forced to (fp32 B8 H1024, bf16 B8 H512)
    # (the opt-in exchange last: a variant that traps ends the run, the CUDA context being lost)
    fma, fma_exchange = {"RNNKERN_RNN_MATH": "fma"}, {"RNNKERN_RNN_MATH": "fma", "RNNKERN_RNN_BARRIER": "exchange"}
    cases = ([(torch.float32, 8, 256, env) for env in ({}, {"RNNKERN_RNN_BARRIER": "flag"})]
             + [(dt, b, h, {}) for dt in (torch.float32, torch.bfloat16) for b in (8, 64) for h in (512, 1024)]
             + [(torch.float32, 8, 1024, fma), (torch.bfloat16, 8, 512, fma)]
             # the tensor-core kernel in one cluster (H <= 256): forced at B8, the default at B64
             + [(torch.float32, 8, 256, {"RNNKERN_RNN_MATH": "mma"}), (torch.bfloat16, 64, 256, {})]
             # the on-chip kernel (opt-in): one CTA, then clusters of H_pad / 64 CTAs
             + [(dt, 8, 256, {"RNNKERN_RNN_PATH": "cta", "RNNKERN_RNN_CLUSTER": "1"}) for dt in (torch.float32, torch.bfloat16)]
             + [(dt, 8, h, {"RNNKERN_RNN_PATH": "cta", "RNNKERN_RNN_ON_CHIP_W": w})
                for dt, h in ((torch.float32, 256), (torch.float32, 512), (torch.bfloat16, 512), (torch.bfloat16, 1024))
                for w in ("shared", "registers")]
             + [(torch.float32, 8, 256, {"RNNKERN_RNN_BARRIER": "exchange"})]
             + [(torch.float32, 8, 1024, fma_exchange), (torch.bfloat16, 8, 512, fma_exchange)]
             + [(dt, b, 1024, {"RNNKERN_RNN_BARRIER": "exchange"})  # the tensor-core kernel without its flag barrier
                for dt in (torch.float32, torch.bfloat16) for b in (8, 64)])
    results, failed = [], False

    def write():
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results},
                          f, indent=1)

    for dtype, B, H, env in cases:
        for k in ("RNNKERN_RNN_MATH", "RNNKERN_RNN_BARRIER", "RNNKERN_RNN_PATH"):
            os.environ.pop(k, None)
        os.environ.update(env)
        T = 256
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(T, B, H, device="cuda", dtype=dtype, generator=g)
        h0 = torch.zeros(B, H, device="cuda", dtype=dtype)
        w_ih = (torch.randn(H, H, device="cuda", generator=g) / H ** 0.5).to(dtype)
        w_hh = (torch.randn(H, H, device="cuda", generator=g) / H ** 0.5).to(dtype)
        passes = ["forward"] + (["backward"] if args.backward else [])
        for which in passes:
            case = " ".join([f"{str(dtype).removeprefix('torch.')} T{T} B{B} H{H} {which}"]
                            + [f"{k.removeprefix('RNNKERN_RNN_').lower()}={v}" for k, v in env.items()])
            def run():
                if which == "forward":
                    return rnn_ops.rnn_forward(x, h0, w_ih, w_hh, None, None, None, False)
                out, _ = rnn_ops.rnn_forward(x, h0, w_ih, w_hh, None, None, None, False)
                return rnn_ops.rnn_backward(torch.ones_like(out), torch.zeros_like(h0), x, h0, w_ih, w_hh, out,
                                            None, False, False)
            try:
                run()  # warm-up (first-launch set-up, cached queries)
                run()
                torch.cuda.synchronize()
            except RuntimeError as e:  # record it and go on, unless the CUDA context is lost
                print(f"{case}: failed: {e}")
                results.append({"case": case, "error": str(e)[:400]})
                write()
                failed = True
                try:
                    torch.zeros(1, device="cuda").add_(1).item()
                except RuntimeError:
                    raise SystemExit(1)
                continue
            kernel, stamps = rnn_ops.step_trace()
            if not kernel:
                print(f"{case}: no persistent kernel ran (general path)")
                results.append({"case": case, "kernel": ""})
                continue
            summary = summarize(kernel, stamps)
            results.append({"case": case, "kernel": kernel, "ctas": summary})
            write()  # after every case: a run cut short keeps what it traced
            for s in summary:
                phases = ", ".join(f"{n} {v / 1000:.2f}" for n, v in s["phases_ns"].items())
                print(f"{case} | {kernel} | {s['cta']} CTA: step {s['step_ns'] / 1000:.2f} us "
                      f"({s['ghz']:.2f} GHz) = {phases} us")
    write()
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
