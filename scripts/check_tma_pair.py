"""A model check, in plain Python, of the CTA-pair protocol of conv.cu's gather_tma_kernel<T, TN, CM = 2>
(RNNKERN_CONV_TMA_CLUSTER=2: clusters of two CTAs on neighbouring pixel tiles and the same output
channels n0, each loading half of the TN-row weight tile B with a TMA multicast copy into both CTAs'
stages). The hardware steps are modelled from their documentation, not from the kernel; the kernel's
protocol, as conv.cu writes it, is then run through the model under many random interleavings:

- the mbarrier (PTX ISA, "Parallel Synchronization and Communication Instructions: mbarrier":
  contents of the object = current phase, pending arrival count, expected arrival count, tx-count;
  "phase completion": the current phase completes when the pending arrival count reaches zero AND
  the tx-count is zero, then the pending count is reset to the expected count; tx-count range
  -(2^20 - 1) ... +(2^20 - 1), so a complete-tx may run ahead of its expect-tx and leave the count
  transiently negative while an arrival is still pending; mbarrier.arrive.expect_tx = expect-tx
  (tx-count += bytes) followed by one arrive-on; the complete-tx of a copy with
  .mbarrier::complete_tx::bytes decrements the tx-count by the bytes of the whole box once they
  have been written; mbarrier.try_wait.parity p: true once the phase of parity p has completed,
  i.e. while the current phase's parity differs from p). An arrive-on when no arrival is pending in
  the phase (the arrivals are in, only the bytes are missing) is flagged: the documentation leaves
  it undefined. The model also tags every operation with the phase the protocol means it for
  (k-step i of stage i % S: phase i / S) and flags one that lands in another phase.
- cp.async.bulk.tensor ... .multicast::cluster (PTX ISA 9.7.9.27.1.2 cp.async.bulk.tensor): the box
  is written to the same CTA-relative shared offset in every CTA whose bit (its %cluster_ctarank) is
  set in ctaMask, and the complete-tx of the box's bytes is signalled on the mbarrier at the same
  CTA-relative offset in each destination CTA. Each destination is modelled as its own landing
  event: the copies of all CTAs land after arbitrary delays, in any order.
- barrier.cluster.arrive.release + barrier.cluster.wait.acquire (PTX ISA barrier.cluster): every
  thread of every CTA of the cluster arrives before any passes; bar.sync (__syncthreads): every
  thread of the CTA; mapa + ld.shared::cluster / mbarrier.arrive.release.cluster.shared::cluster:
  an access to the partner's shared memory, which must not happen after the partner exited (CUDA C++
  Programming Guide, "Distributed Shared Memory": all distributed shared memory operations must
  happen before the target block exits) nor before it initialised its barriers (fence.mbarrier_init).
- wgmma.mma_async + wgmma.commit_group + wgmma.wait_group N (PTX ISA, "Asynchronous Warpgroup Level
  Matrix Multiply-Accumulate"): the shared-memory operands of a committed group may be read until a
  wait_group lets the group complete; wait_group<1> after committing step i completes step i - 1.
  Each consumer warp is an agent whose read of stage i % S spans from its wgmma issue (after its
  full wait) to the wait_group that completes it (a superset of the warpgroup's real read window).
- the 128-byte swizzle (PTX ISA 5.5.7 Swizzling Modes) and the wgmma K-major SWIZZLE_128B descriptor
  (9.7.15.5.1.2), as check_tma_im2col.py models them (swz128, tma_box_bytes, wgmma_k_major_bytes).

Remote arrivals and the DSMEM read are atomic at the instruction in the model (copies are not).
That is what the PTX memory model gives here: a warp's arrive on the partner's empty[j] precedes in
program order its arrive (.release) on its own empty barrier for step j + 1, which its CTA's producer
acquires (try_wait) before it re-arms the stage that lets the other warps reach step j + S, so the
partner's barrier sees the arrivals of step j before any of step j + S (causality order, one
location). The model still tags and checks the phase of every arrival.

What is run through the model (the kernel's protocol, as conv.cu writes it; the script first checks
that the conv.cu lines it replays are still there, ANCHORS, and fails when one is gone):
two CTAs (ranks 0, 1), each with 12 warp agents: warp 0 (tid 0: barrier init, s_live = 0, the
producer loop), warps 1-3 (idle after the prologue), warps 4-11 (the two consumer warpgroups). The
prologue: s_out written by the warps of tid < BM (guarded as conv.cu guards it: the one fact read
from the source, the enclosing conditions of the s_out stores, rather than assumed),
cluster_sync_all, each warp's atomicOr of its taps into s_live, cluster_sync_all, live_taps = own
s_live | the partner's (DSMEM read); ksteps = popcount(live_taps) * chunks. Producer: for k-step i:
if i >= S wait empty[i % S] parity (i / S - 1) & 1; arrive.expect_tx(full[i % S], own A bytes + the B
halves some rank issues (tma_b_rows)); its A boxes (own CTA only); if its half starts below Nn one
multicast box of TN / 2 rows to both CTAs. Consumer warp: for i: wait full[i % S] parity (i / S) & 1,
issue wgmma on stage i % S, wait_group<1> (completes step i - 1), then at i > 0 arrive on own
empty[(i - 1) % S] and on the partner's; wait_group<0> at the end. Epilogue: __syncthreads, the
consumer warps write the staged tile over the ring, __syncthreads, the stores (which read s_out),
the final cluster_sync_all, exit.

Checks in every run: (a) no deadlock / hang; (b) every consumer read of k-step i sees k-step i's own
A boxes and both B halves of k-step i (the never-written marker only for a half not issued), and no
copy lands in a stage while a warp of its destination CTA still reads another k-step there; (c) no
copy lands in a CTA's ring once its epilogue started writing it; (d) no remote operation (partner's
arrive, multicast landing, DSMEM read of s_live) on a CTA that exited or has not initialised its
barriers, no CTA exits with its copies in flight; (e) mbarrier invariants (arrivals within the
count, tx-count in range and never negative once the arrivals are in, every operation in the phase
meant for it); (f) the epilogue reads only s_out slots written in this launch; (g) every thread's
live_taps is the union of both tiles' taps (both CTAs the same ksteps). Then mutants of the protocol
that the checks must catch; the byte layout of the split B tile; and the host side of a batched
launch (launch_gather_tma_tn's block_end, the kernel's problem search): every cluster inside one
problem, the idle CTA only as rank 1.

    python scripts/check_tma_pair.py

(SEEDS_PER_SET random schedules for each of the 192 parameter sets: ~10 s on one core.) Not run
through the model: tma_stage_probe_kernel's CM = 2 form (one stage, one phase: fill, fence,
cluster_sync_all, expect_tx + copies, wait parity 0, cluster_sync_all; the k-step-0 case of this one).

This checks a protocol against documented semantics, not the hardware: a GPU run of the CM = 2 form
(tests/ops/test_conv.py with RNNKERN_CONV_TMA_CLUSTER=2 on an H100 / H200) is what verifies it."""
import os
import random
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_tma_im2col import BM, ROW, TX_MAX, desc_encode, swz128, tma_box_bytes, wgmma_k_major_bytes  # noqa: E402

CONV_CU = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc", "cuda", "conv.cu")
STAGES = {128: 5, 256: 4}   # TmaTile<TN>::kStages
NAGENTS = 12                # kTmaThreads / 32 warps a CTA
CONSUMER0 = 4               # warps 4-11: warpgroups 1 and 2
HALF_B = 8                  # mem slot of B half h: HALF_B + h (A boxes: 0 ... 7)


# ---------------------------------------------------------------------------------------------
# conv.cu: the anchors of the modelled protocol, and the one fact read from the source

def _norm(s):
    return re.sub(r"\s+", " ", s)


def kernel_source():
    """conv.cu's text."""
    with open(CONV_CU) as f:
        text = f.read()
    return text


def kernel_body(text):
    """gather_tma_kernel's text, from its __global__ declaration to its #else."""
    start = re.search(r"__global__[^;{]*\bgather_tma_kernel\(", text).start()
    return text[start:text.index("#else", start)], text[:start].count("\n") + 1


# (what the model assumes, the code that says so, where: "k" gather_tma_kernel's body, "f" conv.cu)
ANCHORS = [
    ("kStages 5 (TN 128) / 4 (TN 256)", "static constexpr int kStages = TN == 128 ? 5 : 4;", "f"),
    ("full[s]: count 1", "mbar_init(smem_u32(&full[s]), 1);", "k"),
    ("empty[s]: count 8 * CM", "mbar_init(smem_u32(&empty[s]), 8 * CM);", "k"),
    ("barrier init fenced for the cluster, s_live zeroed", "mbar_init_fence(); s_live = 0;", "k"),
    ("cluster_sync_all before the taps are OR-ed", "if constexpr (CM == 1) __syncthreads(); else cluster_sync_all();",
     "k"),
    ("second cluster_sync_all, then the union of the pair's live taps",
     "cluster_sync_all(); // s_live complete in both CTAs", "k"),
    ("the pair runs the union of its live taps",
     "live_taps = s_live | ld_cluster_u64(cluster_map(smem_u32(&s_live), rank ^ 1u));", "k"),
    ("ksteps = popcount(live) * chunks", "const int ksteps = __popcll(live_taps) * chunks;", "k"),
    ("stage bytes: own A + the issued halves", "const uint32_t bytes = tile.stage_bytes(tma_b_rows<TN, CM>(p, n0));",
     "k"),
    ("stage_bytes = (loads * seg + b_rows) * 128", "return static_cast<uint32_t>((loads * seg + b_rows) * 128);", "f"),
    ("producer's empty wait", "if (i >= kTmaStages) mbar_wait(smem_u32(&empty[st]), (i / kTmaStages - 1) & 1);", "k"),
    ("expect_tx, then the copies", "mbar_arrive_expect_tx(bar, bytes); tma_issue_stage<TN, CM>(", "k"),
    ("a half is issued where it starts below Nn", "const int nh = n0 + static_cast<int>(rank) * kHalf; if (nh < p.Nn)",
     "f"),
    ("multicast to both CTAs", "static_cast<uint16_t>((1u << CM) - 1)", "f"),
    ("B half h at BM * 128 + h * TN / 2 * 128", "tma_load_3d_multicast(a + (BM + static_cast<int>(rank) * kHalf) * 128",
     "f"),
    ("tma_b_rows: the halves below Nn", "rows += n0 + h * (TN / CM) < p.Nn ? TN / CM : 0;", "f"),
    ("consumer's full wait", "mbar_wait(smem_u32(&full[st]), (i / kTmaStages) & 1);", "k"),
    ("wgmma_wait<1>, then the release of step i - 1 on own empty and the partner's",
     "wgmma_wait<1>(); // the previous k-step's products are done: its stage can be refilled wgmma_pin(acc); "
     "if (i > 0 && lane == 0) { mbar_arrive(smem_u32(&empty[(i - 1) % kTmaStages])); "
     "if constexpr (CM > 1) mbar_arrive_cluster(partner_empty + (i - 1) % kTmaStages * 8);", "k"),
    ("wgmma_wait<0> after the mainloop", "wgmma_wait<0>();", "k"),
    ("epilogue: __syncthreads, then the staged tile over the ring", "float* Cs = reinterpret_cast<float*>(smem); "
     "__syncthreads(); if (wg > 0) {", "k"),
    ("ring 1024-aligned", "const uint32_t ring = (raw + 1023) & ~1023u;", "k"),
    ("idle second CTA: no A loads", "o.loads = 0;", "f"),
    ("a problem's blocks: whole pairs", "mine = (tiles + CM - 1) / CM * CM;", "f"),
    ("the block's problem: the first block_end above it",
     "while (pi + 1 < batch.count && static_cast<int>(blockIdx.x) >= batch.block_end[pi]) ++pi;", "k"),
]


def check_anchors(text):
    """The anchors missing from conv.cu (the model would then describe another kernel), and whether
    the kernel's last statement is the final cluster_sync_all."""
    body = _norm(kernel_body(text)[0])
    t = _norm(text)
    missing = [what for what, code, where in ANCHORS if _norm(code) not in (body if where == "k" else t)]
    if not re.search(r"if constexpr \(CM > 1\) cluster_sync_all\(\);( //[^\n]*)? $", body):
        missing.append("the final cluster_sync_all as the kernel's last statement")
    return missing


def s_out_guards(text):
    """The enclosing if-conditions of each `s_out[...] =` store in gather_tma_kernel (brace scan),
    with its line: the idle CTA (tile.loads == 0) writes s_out iff some store is not under a
    condition that requires loads > 0."""
    body, line0 = kernel_body(text)
    stores = []
    for m in re.finditer(r"s_out\[[^\]]+\]\s*=(?!=)", body):
        # walk back over the blocks that enclose the store
        conds, depth, i = [], 0, m.start()
        while i > 0:
            i -= 1
            ch = body[i]
            if ch == "}":
                depth += 1
            elif ch == "{":
                if depth == 0:
                    head = body[max(0, body.rfind("\n", 0, body.rfind("\n", 0, i)) ):i]
                    hm = re.search(r"(if\s*\((.*)\)|else)\s*$", head.strip(), re.S)
                    if hm:
                        conds.append(_norm(hm.group(0)))
                else:
                    depth -= 1
        # a store as the single statement of an if without braces
        prev = body[body.rfind(";", 0, m.start()) + 1:m.start()]
        hm = re.search(r"if\s*\((.*)\)\s*$", _norm(prev).strip())
        if hm:
            conds.append(hm.group(0))
        stores.append((line0 + body[:m.start()].count("\n"), conds))
    return stores


def idle_writes_s_out(text):
    """(whether the idle CTA writes s_out, the stores with their conditions)."""
    stores = s_out_guards(text)
    for line, conds in stores:
        if not any(re.search(r"loads\s*>\s*0", c) for c in conds):
            return True, stores
    return False, stores


# ---------------------------------------------------------------------------------------------
# the documented hardware: mbarrier

class Checks:
    """The violations of one run: (check letter, message); a run stops at its first one except (f)."""
    __slots__ = ("found", "stop")

    def __init__(self):
        self.found = []
        self.stop = False

    def err(self, kind, msg):
        self.found.append((kind, msg))
        if kind != "f":
            self.stop = True


class MBar:
    """PTX mbarrier: phase, pending arrival count, tx-count (module docstring)."""
    __slots__ = ("name", "count", "pending", "tx", "phase", "ck", "stats")

    def __init__(self, name, count, ck, stats):
        self.name, self.count, self.pending, self.tx, self.phase = name, count, count, 0, 0
        self.ck, self.stats = ck, stats

    def _tx_range(self):
        if not -TX_MAX <= self.tx <= TX_MAX:
            self.ck.err("e", f"{self.name}: tx-count {self.tx} outside +-(2^20 - 1)")

    def _maybe_complete(self):
        if self.pending == 0 and self.tx == 0:
            self.phase += 1
            self.pending = self.count

    def arrive(self, want, who):
        if want != self.phase:
            self.ck.err("e", f"{who}: arrival meant for phase {want} of {self.name} came in phase {self.phase}")
        if self.pending == 0:
            self.ck.err("e", f"{who}: arrive-on {self.name} beyond its count {self.count} (phase {self.phase}: "
                             f"the arrivals are in, tx-count {self.tx})")
            return
        self.pending -= 1
        if self.pending == 0 and self.tx < 0:
            self.ck.err("e", f"{who}: {self.name} phase {self.phase}: the last arrival finds tx-count {self.tx} < 0 "
                             f"(more bytes completed than expected: the phase can never complete)")
        self._maybe_complete()

    def expect_tx(self, nbytes, want, who):  # mbarrier.arrive.expect_tx
        self.tx += nbytes
        self._tx_range()
        self.arrive(want, who)

    def complete_tx(self, nbytes, want, who):
        if want != self.phase:
            self.ck.err("e", f"{who}: complete-tx meant for phase {want} of {self.name} came in phase {self.phase}")
        self.tx -= nbytes
        self._tx_range()
        if self.tx < 0:
            if self.pending == 0:
                self.ck.err("e", f"{who}: {self.name} phase {self.phase}: tx-count {self.tx} < 0 after all arrivals")
            else:
                self.stats["neg_tx"] += 1
        self._maybe_complete()


# ---------------------------------------------------------------------------------------------
# the kernel's protocol on two CTAs

MUTANTS = {
    "empty_count_8": "empty[s] initialised with 8 arrivals (only one CTA's consumer warps counted)",
    "no_partner_arrive": "consumer warps arrive on their own CTA's empty barrier only",
    "own_taps": "each CTA runs its own live taps, not the pair's union",
    "expect_skipped_half": "expect_tx counts a half that is never issued (TN rows always)",
    "expect_own_half_only": "expect_tx counts its own half of B only, not the partner's",
    "no_final_cluster_sync": "no cluster_sync_all before exit",
    "multicast_self_only": "the multicast's ctaMask holds only the issuing CTA",
    "empty_wait_from_S_plus_1": "the producer's empty wait from i > S (skipped at i == S)",
    "empty_wait_parity_off": "the producer's empty wait with parity (i / S) & 1 (one phase off)",
    "release_before_wgmma_wait": "a consumer releases step i right after issuing its wgmma (no wait_group<1>)",
    "no_cluster_sync_2": "live_taps read without the second cluster_sync_all (s_live may be incomplete)",
    "no_cluster_sync_1": "no first cluster_sync_all (a warp's atomicOr may precede tid 0's s_live = 0)",
    "no_epilogue_syncthreads": "the epilogue writes the ring without the first __syncthreads",
}


class Config:
    __slots__ = ("TN", "S", "chunks", "taps", "masks", "union", "warp_taps", "loads", "seg", "issued", "name")


class Sim:
    def __init__(self, cfg, mut, rng, s_out_idle, stats):
        self.cfg, self.mut, self.rng, self.s_out_idle, self.stats = cfg, mut, rng, s_out_idle, stats
        self.ck = Checks()
        S = cfg.S
        ecount = 8 if "empty_count_8" in mut else 16
        self.full = [[MBar(f"CTA{r}.full[{s}]", 1, self.ck, stats) for s in range(S)] for r in range(2)]
        self.empty = [[MBar(f"CTA{r}.empty[{s}]", ecount, self.ck, stats) for s in range(S)] for r in range(2)]
        self.inited = [False, False]
        self.mem = [[[None] * 10 for _ in range(S)] for _ in range(2)]     # tag of what each box slot holds
        self.readers = [[{} for _ in range(S)] for _ in range(2)]          # warp -> k-step its wgmma reads
        self.inflight = []
        self.issuer_pending = [0, 0]
        self.dst_pending = [0, 0]
        self.epi = [False, False]
        self.exited = [False, False]
        self.s_live = [rng.getrandbits(64), rng.getrandbits(64)]           # stale shared memory
        self.s_out = [[False] * BM, [False] * BM]
        self.cbar = [0, 0, 2 * NAGENTS]                                    # arrived, generation, threads
        self.tbar = [[0, 0, NAGENTS], [0, 0, NAGENTS]]
        self.finished = [0, 0]
        self.in_mainloop = [0, 0]
        self.at_final = [0, 0]
        self.where = [[""] * NAGENTS for _ in range(2)]
        self.f_reported = [False, False]

    # -- helpers -------------------------------------------------------------------------------
    def remote(self, dst, who, what, needs_init=True):
        if self.exited[dst]:
            self.ck.err("d", f"{who}: {what} targets CTA{dst} after it exited")
        elif needs_init and not self.inited[dst]:
            self.ck.err("d", f"{who}: {what} targets CTA{dst} before it initialised its barriers")

    @staticmethod
    def bar_sync(bar):
        g = bar[1]
        bar[0] += 1
        if bar[0] == bar[2]:
            bar[0] = 0
            bar[1] += 1
        yield lambda: bar[1] != g

    def issue(self, r, dsts, st, slot, tag, nbytes, want):
        for d in dsts:
            self.inflight.append((d, st, slot, tag, nbytes, want, r))
            self.issuer_pending[r] += 1
            self.dst_pending[d] += 1

    def land(self, k):
        inf = self.inflight
        copy = inf[k]
        inf[k] = inf[-1]
        inf.pop()
        d, st, slot, tag, nbytes, want, r = copy
        self.issuer_pending[r] -= 1
        self.dst_pending[d] -= 1
        who = f"CTA{r}'s {'A box' if slot < HALF_B else 'B half'} {slot if slot < HALF_B else slot - HALF_B} " \
              f"of k-step {tag[1]} (stage {st})"
        if d != r:
            self.remote(d, who, "a multicast landing")
        if self.exited[d]:
            return
        if self.epi[d]:
            self.ck.err("c", f"{who} lands in CTA{d}'s ring after its epilogue started writing it")
        for w, k in self.readers[d][st].items():
            if k != tag[1]:
                self.ck.err("b", f"{who} lands in CTA{d} while its warp {w}'s wgmma still reads k-step {k} there")
                break
        self.mem[d][st][slot] = tag
        self.full[d][st].complete_tx(nbytes, want, who)

    def expected(self, r, wg, i, step):
        c = self.cfg
        t, ch = step
        a = (r, i, t, ch)
        if c.seg == BM:
            boxes = [0] if c.loads[r] > 0 else []
        else:
            boxes = [j for j in range(4 * wg, 4 * wg + 4) if j < c.loads[r]]
        exp = [(j, a) for j in boxes]
        for h in range(2):
            exp.append((HALF_B + h, (h, i, t, ch) if c.issued[h] else None))
        return exp

    def check_stage(self, r, a, st, i, step, when):
        mem = self.mem[r][st]
        for slot, tag in self.expected(r, (a - CONSUMER0) // 4, i, step):
            if mem[slot] != tag:
                what = f"A box {slot}" if slot < HALF_B else f"B half {slot - HALF_B}"
                self.ck.err("b", f"CTA{r}.warp{a} {when} k-step {i} (tap {step[0]}, chunk {step[1]}) in stage {st}: "
                                 f"{what} holds {mem[slot]}, expected {tag} (tags: issuing rank, k-step, tap, chunk)")
                return

    def epilogue_write(self, r, who):
        if not self.epi[r]:
            if self.dst_pending[r]:
                self.ck.err("c", f"{who}: the epilogue starts writing CTA{r}'s ring with {self.dst_pending[r]} "
                                 f"copies still in flight into it")
            for st, rd in enumerate(self.readers[r]):
                if rd:
                    self.ck.err("c", f"{who}: the epilogue starts writing CTA{r}'s ring while warps {sorted(rd)} "
                                     f"still read stage {st}")
                    break
            self.epi[r] = True
            for st in range(self.cfg.S):
                self.mem[r][st] = ["EPI"] * 10

    def finish(self, r):
        self.finished[r] += 1
        if self.finished[r] == NAGENTS:
            if self.issuer_pending[r]:
                self.ck.err("d", f"CTA{r} exits with {self.issuer_pending[r]} of its copies still in flight")
            self.exited[r] = True

    # -- one warp ------------------------------------------------------------------------------
    def agent(self, r, a):
        c, mut, ck = self.cfg, self.mut, self.ck
        S, TN = c.S, c.TN
        who = f"CTA{r}.warp{a}" if a else f"CTA{r}.producer"
        where = self.where[r]
        # prologue
        if a == 0:
            self.inited[r] = True      # mbar_init of full / empty, fence.mbarrier_init.release.cluster
            self.s_live[r] = 0
            yield None
        if a < BM // 32 and (c.loads[r] > 0 or self.s_out_idle):  # tid < BM (&& tile.loads > 0, as conv.cu)
            for m in range(32 * a, 32 * a + 32):
                self.s_out[r][m] = True
            yield None
        if "no_cluster_sync_1" not in mut:
            where[a] = "cluster_sync_all #1"
            yield from self.bar_sync(self.cbar)
        bits = c.warp_taps[r][a]
        if bits:
            self.s_live[r] |= bits     # atomicOr of the warp's __reduce_or_sync
            yield None
        if "no_cluster_sync_2" not in mut:
            where[a] = "cluster_sync_all #2"
            yield from self.bar_sync(self.cbar)
        live = self.s_live[r]
        yield None
        if "own_taps" not in mut:
            self.remote(r ^ 1, who, "ld.shared::cluster of s_live", needs_init=False)
            live |= self.s_live[r ^ 1]
            yield None
        if live != c.union:
            ck.err("g", f"{who}: live_taps {live:#x}, the pair's union is {c.union:#x} "
                        f"(ksteps {bin(live).count('1') * c.chunks} instead of {bin(c.union).count('1') * c.chunks})")
        seq = [(t, ch) for t in range(64) if live >> t & 1 for ch in range(c.chunks)]
        ks = len(seq)

        if a == 0:   # producer, tid 0
            if "expect_skipped_half" in mut:
                b_rows = TN
            elif "expect_own_half_only" in mut:
                b_rows = TN // 2 if c.issued[r] else 0
            else:
                b_rows = sum(TN // 2 for h in range(2) if c.issued[h])     # tma_b_rows
            nbytes = (c.loads[r] * c.seg + b_rows) * ROW                  # stage_bytes
            dsts = [r] if "multicast_self_only" in mut else [0, 1]
            first_wait = S + 1 if "empty_wait_from_S_plus_1" in mut else S
            poff = 0 if "empty_wait_parity_off" in mut else 1
            for i, (t, ch) in enumerate(seq):
                st = i % S
                if i >= first_wait:
                    eb, par = self.empty[r][st], (i // S - poff) & 1
                    where[a] = f"wait {eb.name} parity {par} (k-step {i})"
                    yield lambda eb=eb, par=par: (eb.phase & 1) != par
                self.full[r][st].expect_tx(nbytes, i // S, who)
                yield None
                tag = (r, i, t, ch)
                for j in range(c.loads[r]):
                    self.issue(r, [r], st, j, tag, c.seg * ROW, i // S)
                    yield None
                if c.issued[r]:
                    self.issue(r, dsts, st, HALF_B + r, tag, TN // 2 * ROW, i // S)
                    yield None
        elif a >= CONSUMER0:
            self.in_mainloop[r] += 1
            early = "release_before_wgmma_wait" in mut
            readers = self.readers[r]
            partner_arrive = "no_partner_arrive" not in mut

            def release(k):
                self.empty[r][k % S].arrive(k // S, who)
                if partner_arrive:
                    self.remote(r ^ 1, who, f"arrive on empty[{k % S}] for k-step {k}")
                    if not self.exited[r ^ 1]:
                        self.empty[r ^ 1][k % S].arrive(k // S, who)

            for i in range(ks):
                st = i % S
                fb, par = self.full[r][st], (i // S) & 1
                where[a] = f"wait {fb.name} parity {par} (k-step {i})"
                yield lambda fb=fb, par=par: (fb.phase & 1) != par
                self.check_stage(r, a, st, i, seq[i], "reads")
                readers[st][a] = i            # wgmma issued, committed: reads stage st until completed
                yield None
                if early and i < ks - 1:
                    release(i)
                    yield None
                if i > 0:                     # wgmma_wait<1>: k-step i - 1 complete
                    pst = (i - 1) % S
                    self.check_stage(r, a, pst, i - 1, seq[i - 1], "still reading")
                    del readers[pst][a]
                    yield None
                    if not early:
                        release(i - 1)
                        yield None
            if ks:                            # wgmma_wait<0>
                pst = (ks - 1) % S
                self.check_stage(r, a, pst, ks - 1, seq[ks - 1], "still reading")
                del readers[pst][a]
                yield None
            self.in_mainloop[r] -= 1
        if ck.stop:
            return
        # epilogue
        if "no_epilogue_syncthreads" not in mut:
            where[a] = "__syncthreads (epilogue)"
            yield from self.bar_sync(self.tbar[r])
        if a >= CONSUMER0:
            self.epilogue_write(r, who)
            yield None
        where[a] = "__syncthreads (stores)"
        yield from self.bar_sync(self.tbar[r])
        if not all(self.s_out[r][m] for m in range(a, BM, NAGENTS)) and not self.f_reported[r]:
            self.f_reported[r] = True
            ck.err("f", f"CTA{r} ({'idle: no A loads' if c.loads[r] == 0 else f'{c.loads[r]} A loads'}): "
                        f"the stores read s_out slots no thread of this launch wrote")
        yield None
        self.at_final[r] += 1
        if self.at_final[r] == NAGENTS and self.in_mainloop[r ^ 1]:
            self.stats["final_barrier_held"] += 1   # this CTA is done; its partner still arrives remotely
        if "no_final_cluster_sync" not in mut:
            where[a] = "cluster_sync_all #3 (final)"
            yield from self.bar_sync(self.cbar)
        self.finish(r)

    # -- the scheduler -------------------------------------------------------------------------
    def run(self, mode, p_land):
        rng = self.rng
        ks = bin(self.cfg.union).count("1") * self.cfg.chunks
        agents = []
        for r in range(2):
            for a in range(NAGENTS):
                slow = {"uniform": False, "cta0_slow": r == 0, "cta1_slow": r == 1, "producers_slow": a == 0,
                        "consumers_slow": a >= CONSUMER0, "one_warp_slow": a == 4 + r * 3,
                        "random_slow": rng.random() < 0.3}[mode]
                agents.append([self.agent(r, a), None, slow, r, a])
        bound = 40000 + 4000 * ks
        steps = 0
        inflight = self.inflight
        while not self.ck.stop:
            ready = [ag for ag in agents if ag[1] is None or ag[1]()]
            nin = len(inflight)
            if not ready:
                if not nin:
                    if agents:
                        at = {}
                        for ag in agents:
                            at.setdefault(self.where[ag[3]][ag[4]].split(" (k-step")[0], []).append(
                                f"CTA{ag[3]}.w{ag[4]}")
                        blocked = "; ".join(f"{', '.join(w[:3])}{' ...' if len(w) > 3 else ''} at {k}"
                                            for k, w in at.items())
                        self.ck.err("a", f"deadlock: no copy in flight, {len(agents)} warps blocked: {blocked}")
                    break
                self.land(rng.randrange(nin))
            elif nin and rng.random() < p_land:
                self.land(rng.randrange(nin))
            else:
                ag = ready[rng.randrange(len(ready))]
                if ag[2] and rng.random() < 0.85:
                    steps += 1
                    continue
                try:
                    ag[1] = next(ag[0])
                except StopIteration:
                    agents.remove(ag)
            steps += 1
            if steps > bound:
                self.ck.err("a", f"hang: no end after {bound} steps")
                break
        if not self.ck.stop:
            while inflight:   # (an exited pair with copies in flight was flagged at its exit)
                self.land(rng.randrange(len(inflight)))
        return self.ck.found


# ---------------------------------------------------------------------------------------------
# parameter combinations

def make_config(rng, TN, ksteps, halves, idle1, loads_kind):
    c = Config()
    c.TN, c.S = TN, STAGES[TN]
    if ksteps == 0:
        c.chunks, npop = rng.choice((1, 2, 4)), 0
    else:
        opts = [ch for ch in (1, 2, 3, 4) if ksteps % ch == 0 and ksteps // ch <= 64]
        c.chunks = rng.choice(opts)
        npop = ksteps // c.chunks
    c.taps = max(npop, rng.choice((9, 25, 49, 64))) if npop <= 49 else 64
    union_bits = rng.sample(range(c.taps), npop)
    m0 = m1 = 0
    for b in union_bits:     # each live tap live in tile 0, tile 1 or both (tile 1 none if idle)
        where = 0 if idle1 else rng.choice((0, 1, 2))
        if where in (0, 2):
            m0 |= 1 << b
        if where in (1, 2):
            m1 |= 1 << b
    c.masks = (m0, m1)
    c.union = m0 | m1
    c.warp_taps = []
    for m in c.masks:        # warps 0-3 (tid < BM) hold the pixels; each OR-s some of the taps
        w = [0] * NAGENTS
        for b in range(64):
            if m >> b & 1:
                for k in rng.sample(range(4), rng.choice((1, 1, 2, 4))):
                    w[k] |= 1 << b
        c.warp_taps.append(w)
    if loads_kind == "row":          # row-order tiles: one 128-pixel box
        c.seg, l0 = BM, 1
    elif loads_kind == "tile8":      # 8 x 16 pixel tiles: eight 16-pixel boxes
        c.seg, l0 = 16, 8
    else:                            # 8 x 16 tiles clipped at Ho
        c.seg, l0 = 16, rng.randint(1, 7)
    l1 = 0 if idle1 else (l0 if rng.random() < 0.5 or c.seg == BM else rng.randint(1, 8))
    c.loads = (l0, l1)
    c.issued = (True, halves == "both")
    c.name = (f"TN {TN} (S {c.S}), ksteps {ksteps} ({npop} taps x {c.chunks}), halves {halves}, "
              f"{'rank 1 idle' if idle1 else 'both active'}, A boxes {c.loads}")
    return c


def config_space(rng):
    out = []
    for TN in (128, 256):
        S = STAGES[TN]
        for ksteps in (0, 1, 2, S - 1, S, S + 1, 3 * S + 2, "rand"):
            for halves in ("both", "rank0_only"):
                for idle1 in (False, True):
                    for loads_kind in ("row", "tile8", "tile_clipped"):
                        k = rng.randint(3, 40) if ksteps == "rand" else ksteps
                        out.append((TN, k, halves, idle1, loads_kind))
    return out


SEEDS_PER_SET = 12   # random schedules a parameter set
MODES = ("uniform", "cta0_slow", "cta1_slow", "producers_slow", "consumers_slow", "one_warp_slow", "random_slow")
P_LAND = (0.03, 0.2, 0.6)


def run_one(seed, params, mut=(), s_out_idle=False, stats=None):
    rng = random.Random(seed)
    cfg = make_config(rng, *params)
    stats = stats if stats is not None else new_stats()
    mode, p_land = rng.choice(MODES), rng.choice(P_LAND)
    sim = Sim(cfg, frozenset(mut), rng, s_out_idle, stats)
    found = sim.run(mode, p_land)
    return cfg, found, f"seed {seed}, schedule {mode}, p_land {p_land}"


def new_stats():
    return {"neg_tx": 0, "final_barrier_held": 0, "ksteps0_done": 0, "idle_done": 0}


# ---------------------------------------------------------------------------------------------
# host side: clusters of a batched launch

def batch_pairs_check(rng, trials=2000):
    """launch_gather_tma_tn's block_end (each problem ceil(tiles / CM) * CM blocks) and the kernel's
    search for its problem (pi: the first with blockIdx.x < block_end[pi]); a cluster of (2, 1, 1)
    holds blocks 2j, 2j + 1 with %cluster_ctarank = blockIdx.x % 2 (CUDA: clusters tile the grid, rank
    x-fastest). Both CTAs of a cluster must be in one problem (same p, n0 tile, ksteps rules), and an
    idle CTA (bx * BM >= Mt) only a rank 1 whose partner has a tile."""
    CM = 2
    for _ in range(trials):
        count = rng.randint(1, 4)
        Mt = [rng.randint(1, 12 * BM) for _ in range(count)]
        block_end, blocks = [], 0
        for m in Mt:
            tiles = (m + BM - 1) // BM
            blocks += (tiles + CM - 1) // CM * CM
            block_end.append(blocks)
        where = []
        for x in range(blocks):
            pi = 0
            while pi + 1 < count and x >= block_end[pi]:
                pi += 1
            bx = x - (block_end[pi - 1] if pi > 0 else 0)
            where.append((pi, bx, bx * BM >= Mt[pi]))
        for j in range(0, blocks, CM):
            (p0, b0, idle0), (p1, b1, idle1) = where[j], where[j + 1]
            if p0 != p1:
                return f"cluster ({j}, {j + 1}) straddles problems {p0} and {p1} (Mt {Mt})"
            if idle0 or (idle1 and b1 % 2 != 1):
                return f"cluster ({j}, {j + 1}) of problem {p0}: an idle CTA at rank 0 (Mt {Mt})"
            if b0 % 2 != 0 or b1 != b0 + 1:
                return f"cluster ({j}, {j + 1}): tiles {b0}, {b1} of problem {p0} not a pair (Mt {Mt})"
    return None


# ---------------------------------------------------------------------------------------------
# the byte layout of the split B tile

def box_bytes(dst, rows, rel):
    """A rows x 128-byte box at dst (1-byte elements) under the 128B swizzle: on the absolute address
    (tma_box_bytes), or (rel) with the 8-row pattern anchored at the box's own destination."""
    if not rel:
        return tma_box_bytes(dst, rows, 1)
    return dst + swz128(np.arange(rows)[:, None] * ROW + np.arange(ROW)[None, :])


def layout_check():
    """B half h written at stage + BM * 128 + h * (TN / 2) * 128 (each a TMA box of TN / 2 rows of 128
    bytes, 128B swizzle on the absolute shared address) equals one TN-row box at stage + BM * 128 byte
    for byte, and wgmma's K-major SWIZZLE_128B read (the kernel's descriptor: LBO 16, SBO 1024) of the
    halves gives the logical TN x 128-byte tile. Also: the ring is 1024-aligned for every 16-aligned
    dynamic shared base and fits the allocation; each box's destination is 128-aligned. Returns
    (problems, the control: a split at 512 bytes agrees only under the absolute-address reading)."""
    problems = []
    for TN in (128, 256):
        S = STAGES[TN]
        stage_bytes = (BM + TN) * ROW
        smem = S * stage_bytes + 1024
        if (TN // 2 * ROW) % 1024 or stage_bytes % 1024 or (BM * ROW) % 1024:
            problems.append(f"TN {TN}: half / stage / A offsets not multiples of 1024")
        for raw in range(0, 8192, 16):
            ring = (raw + 1023) & ~1023
            if ring % 1024 or ring + S * stage_bytes > raw + smem:
                problems.append(f"TN {TN}: ring {ring} from base {raw} misaligned or past the allocation")
                break
        for E in (2, 4):
            logical = np.arange(TN * ROW, dtype=np.int64).reshape(TN, ROW)   # byte b of row n: n * 128 + b
            for st in range(S):
                ring = 3 * 1024
                base = ring + st * stage_bytes
                b = base + BM * ROW
                size = ring + S * stage_bytes
                one = np.full(size, -1, dtype=np.int64)
                one[tma_box_bytes(b, TN, E).reshape(-1)] = logical.reshape(-1)
                two = np.full(size, -1, dtype=np.int64)
                for h in range(2):
                    dst = b + h * (TN // 2) * ROW
                    if dst % 128:
                        problems.append(f"TN {TN}: half {h} destination {dst} not 128-aligned")
                    two[tma_box_bytes(dst, TN // 2, E).reshape(-1)] = logical[h * TN // 2:(h + 1) * TN // 2].reshape(-1)
                if not np.array_equal(one, two):
                    problems.append(f"TN {TN}, E {E}, stage {st}: the two halves' bytes differ from one full box")
                for ks in range(4):   # wgmma_desc_sw128(b + ks * 32): LBO 16, SBO 1024, mode 1
                    desc = desc_encode(b + ks * 32, 16, 1024)
                    addr = wgmma_k_major_bytes(desc, TN, E)
                    got = two[addr]
                    want = logical[:, ks * 32:(ks + 1) * 32].reshape(TN, 32 // E, E)
                    if not np.array_equal(got, want):
                        problems.append(f"TN {TN}, E {E}, stage {st}, k slice {ks}: wgmma reads the halves wrongly")
                        break
    # the same under the other reading of the swizzle (the pattern anchored at each box's destination
    # instead of the absolute address): the halves still agree because TN / 2 * 128 is a multiple of
    # 1024; the control, a split after 4 rows (512 bytes), agrees under the absolute reading only
    def split_equal(rows, split, rel):
        base = 2048
        one = np.full(base + rows * ROW + 1024, -1, dtype=np.int64)
        one[box_bytes(base, rows, rel).reshape(-1)] = np.arange(rows * ROW)
        two = np.full(one.size, -1, dtype=np.int64)
        two[box_bytes(base, split, rel).reshape(-1)] = np.arange(split * ROW)
        two[box_bytes(base + split * ROW, rows - split, rel).reshape(-1)] = np.arange(split * ROW, rows * ROW)
        return np.array_equal(one, two)

    for TN in (128, 256):
        if not split_equal(TN, TN // 2, rel=True):
            problems.append(f"TN {TN}: the halves differ from one box under the destination-anchored swizzle")
    control_differs = split_equal(8, 4, rel=False) and not split_equal(8, 4, rel=True)
    return problems, control_differs


# ---------------------------------------------------------------------------------------------

def main():
    t0 = time.time()
    failures = []

    def fail(msg):
        failures.append(msg)
        print(f"MISMATCH {msg}")

    print("gather_tma_kernel<T, TN, CM = 2>: CTA-pair protocol (multicast B halves, mbarriers, cluster "
          "barriers) model check")
    text = kernel_source()
    missing = check_anchors(text)
    if missing:
        fail(f"conv.cu no longer reads as the modelled protocol; missing: {'; '.join(missing)}")
    else:
        print(f"ok: conv.cu still has the {len(ANCHORS) + 1} protocol lines this model replays")
    s_out_idle, stores = idle_writes_s_out(text)
    print(f"   s_out stores in gather_tma_kernel: " +
          "; ".join(f"conv.cu:{ln} under {' / '.join(cs) or 'no condition'}" for ln, cs in stores) +
          f" -> the idle second CTA {'writes' if s_out_idle else 'does NOT write'} s_out")

    # (5) the split B tile's bytes
    problems, control = layout_check()
    if problems or not control:
        fail("B halves layout: " + "; ".join(problems or ["the control split at 512 bytes was not told apart"]))
    else:
        print("ok: B halves at BM * 128 + h * TN / 2 * 128 (8192 / 16384 bytes: multiples of 1024) land byte for "
              "byte as one TN-row box under the 128B swizzle on absolute addresses, and wgmma's K-major SW128 "
              "read of them is the logical tile (TN 128 / 256, 16- / 32-bit, every stage); the ring base is "
              "1024-aligned and fits for every 16-aligned dynamic base (control: a split at 512 bytes differs)")

    # host side: the pairs of a batched launch
    bad = batch_pairs_check(random.Random(7))
    if bad:
        fail(f"batched launch: {bad}")
    else:
        print("ok: batched launches (launch_gather_tma_tn / the kernel's block_end search): every cluster "
              "(2j, 2j + 1) lies in one problem, rank = blockIdx.x % 2 is the tile parity there, and the only "
              "idle CTA is the rank 1 of its problem's last pair (2000 random batches of 1-4 problems)")

    # the protocol as written, many schedules
    rng = random.Random(1234)
    space = config_space(rng)
    stats = new_stats()
    per_kind = {}
    runs = 0
    f_examples = []
    seeds_per = SEEDS_PER_SET
    seed = 0
    ks_seen = set()
    for params in space:
        for _ in range(seeds_per):
            seed += 1
            cfg, found, sched = run_one(seed, params, (), s_out_idle, stats)
            runs += 1
            ks = bin(cfg.union).count("1") * cfg.chunks
            ks_seen.add(ks)
            if all(k == "f" for k, _ in found):
                stats["ksteps0_done"] += ks == 0
                stats["idle_done"] += cfg.loads[1] == 0
            for kind, msg in found:
                if kind == "f":
                    if len(f_examples) < 1:
                        f_examples.append(f"{cfg.name}; {sched}: {msg}")
                    per_kind.setdefault("f", 0)
                    per_kind["f"] += 1
                else:
                    if kind not in per_kind:
                        fail(f"({kind}) {cfg.name}; {sched}: {msg}")
                    per_kind[kind] = per_kind.get(kind, 0) + 1
    labels = {
        "a": "no deadlock or hang: every warp of both CTAs finishes",
        "b": "every wgmma read of k-step i sees its own A boxes and both B halves of k-step i (the never-written "
             "marker only for a half past Nn); no copy lands in a stage a warp of its destination still reads",
        "c": "no copy lands in a CTA's ring after its epilogue started writing it",
        "d": "no remote arrive / multicast landing / DSMEM read on an exited or uninitialised CTA; no CTA exits "
             "with copies in flight",
        "e": "mbarrier invariants: arrivals within the count, every arrive / complete-tx in the phase meant for "
             "it, tx-count in range and not negative once the arrivals are in",
        "g": "both CTAs (every warp) run the union of the tiles' live taps: the same ksteps",
    }
    for k in "abcdeg":
        if k in per_kind:
            print(f"FAILED ({k}) in {per_kind[k]} of {runs} runs: {labels[k]}")
        else:
            print(f"ok ({k}) {runs} runs: {labels[k]}")
    print(f"   {len(space)} parameter sets x {seeds_per} schedules: TN 128 (S 5) / 256 (S 4); ksteps "
          f"{sorted(ks_seen)}; halves both / rank 0's only; rank 1 active / idle (B only); A boxes 1 (row order), "
          f"8 and 1-7 (8 x 16 tiles); 7 schedule biases x 3 landing rates")
    print(f"   coverage: {stats['neg_tx']} complete-tx ran ahead of their phase's expect_tx (tx-count transiently "
          f"negative, the arrival pending); {stats['final_barrier_held']} times a CTA reached the final cluster "
          f"barrier while its partner's consumers were still in the mainloop (arriving on its barriers); "
          f"{stats['ksteps0_done']} runs with ksteps = 0 (no producer / consumer iteration) and {stats['idle_done']} "
          f"with an idle rank 1 ended with both CTAs through the final barrier")
    if "f" in per_kind:
        fail(f"(f) KERNEL BUG: in {per_kind['f']} of {runs} runs (every run with an idle rank 1) the epilogue's "
             f"stores read s_out that no thread wrote: conv.cu:{stores[0][0]} writes s_out only under "
             f"`{stores[0][1][0]}`, and the idle second CTA of an odd tile count has loads = 0, yet both "
             f"store loops read s_out[m] for every m and store where it is >= 0 (uninitialised shared "
             f"memory -> stray global stores). "
             f"E.g. {f_examples[0]}")
    else:
        print(f"ok (f) {runs} runs: the stores read only s_out slots written in this launch")

    # mutants
    mrng = random.Random(99)
    order = list(space)
    missed = []
    for name, what in MUTANTS.items():
        caught = None
        mseed = 100000
        mrng.shuffle(order)
        tries = 0
        for params in order * 3:
            mseed += 1
            tries += 1
            cfg, found, sched = run_one(mseed, params, (name,), True)
            real = [(k, m) for k, m in found if k != "f"]
            if real:
                caught = (cfg, real[0], sched)
                break
            if tries >= 400:
                break
        if caught:
            cfg, (kind, msg), sched = caught
            print(f"   mutant {name}: caught ({kind}) after {tries} run(s): {msg[:220]}")
        else:
            missed.append(name)
            fail(f"mutant {name} ({what}) not caught in {tries} runs")
    if not missed:
        print(f"ok: all {len(MUTANTS)} mutants caught")

    dt = time.time() - t0
    if failures:
        print(f"{len(failures)} failure(s) ({dt:.1f} s)")
        sys.exit(1)
    print(f"all checks ok ({dt:.1f} s)")


if __name__ == "__main__":
    main()
