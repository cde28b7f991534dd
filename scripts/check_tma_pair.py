"""A model check, in plain Python, of the cluster protocol of conv.cu's gather_tma_kernel<T, TN, CM>
for CM = 2 and CM = 4 (RNNKERN_CONV_TMA_CLUSTER=2|4: clusters of CM CTAs on neighbouring pixel tiles
and the same output channels n0, CTA rank h loading part h of the TN-row weight tile B, rows
h * TN / CM ..., with a TMA multicast copy into every CTA's stage). The hardware steps are modelled
from their documentation, not from the kernel; the kernel's protocol, as conv.cu writes it, is then
run through the model under many random interleavings:

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
  an access to another CTA's shared memory, which must not happen after that CTA exited (CUDA C++
  Programming Guide, "Distributed Shared Memory": all distributed shared memory operations must
  happen before the target block exits) nor before it initialised its barriers (fence.mbarrier_init).
- wgmma.mma_async + wgmma.commit_group + wgmma.wait_group N (PTX ISA, "Asynchronous Warpgroup Level
  Matrix Multiply-Accumulate"): the shared-memory operands of a committed group may be read until a
  wait_group lets the group complete; wait_group<1> after committing step i completes step i - 1.
  Each consumer warp is an agent whose read of stage i % S spans from its wgmma issue (after its
  full wait) to the wait_group that completes it (a superset of the warpgroup's real read window).
- the 128-byte swizzle (PTX ISA 5.5.7 Swizzling Modes) and the wgmma K-major SWIZZLE_128B descriptor
  (9.7.15.5.1.2), as check_tma_im2col.py models them (swz128, tma_box_bytes, wgmma_k_major_bytes).

Remote arrivals and the DSMEM reads are atomic at the instruction in the model (copies are not);
each remote arrive / read is its own step, so other agents interleave between a warp's arrivals on
the CM empty barriers. That is what the PTX memory model gives here: a consumer warp's arrivals
for step j (on every CTA's empty[j % S]) precede in program order its arrive (.release) on its own
empty barrier for step j + 1, which its CTA's producer acquires (try_wait) before it arms step
j + S + 1, which every warp of that CTA waits for (acquire) before it releases step j + S anywhere;
so every CTA's barrier sees all 8 * CM arrivals of step j before any of step j + S (causality
order, one location), whatever the order of a warp's arrivals. The model still tags and checks
the phase of every arrival.

What is run through the model (the kernel's protocol, as conv.cu writes it; the script first checks
that the conv.cu lines it replays are still there, ANCHORS, and fails when one is gone):
CM CTAs (ranks 0 ... CM - 1, blockIdx.x % CM), each with 12 warp agents: warp 0 (tid 0: barrier
init, s_live = 0, the producer loop), warps 1-3 (idle after the prologue), warps 4-11 (the two
consumer warpgroups). The prologue: s_out written by the warps of tid < BM (guarded as conv.cu
guards it: the one fact read from the source, the enclosing conditions of the s_out stores, rather
than assumed), cluster_sync_all, each warp's atomicOr of its taps into s_live, cluster_sync_all,
live_taps = own s_live | the s_live of CTA (rank + r) % CM for r = 1 ... CM - 1 (DSMEM reads, in
that order); ksteps = popcount(live_taps) * chunks. Producer: for k-step i: if i >= S wait
empty[i % S] parity (i / S - 1) & 1; arrive.expect_tx(full[i % S], own A bytes + the rows of every
B part some rank issues (tma_b_rows)); its A boxes (own CTA only); if its part starts below Nn
(n0 + rank * TN / CM < Nn) one box of TN / CM rows multicast with ctaMask (1 << CM) - 1. Consumer
warp: for i: wait full[i % S] parity (i / S) & 1, issue wgmma on stage i % S, wait_group<1>
(completes step i - 1), then at i > 0 arrive on own empty[(i - 1) % S] and then on the empty
barrier of CTA (rank + r) % CM, r = 1 ... CM - 1 (empty count 8 * CM); wait_group<0> at the end.
Epilogue: __syncthreads, the consumer warps write the staged tile over the ring, __syncthreads, the
stores (which read s_out), the final cluster_sync_all, exit. Idle CTAs (a problem's tile count
not a multiple of CM: ranks >= the tiles left in its last cluster, 1 with CM = 2, 1-3 with CM = 4)
have no A loads: they load their part of B, run the cluster's k-steps and store nothing.

Checks in every run: (a) no deadlock / hang; (b) every consumer read of k-step i sees k-step i's own
A boxes and every B part of k-step i (the never-written marker only for a part not issued), and no
copy lands in a stage while a warp of its destination CTA still reads another k-step there; (c) no
copy lands in a CTA's ring once its epilogue started writing it; (d) no remote operation (another
CTA's arrive, multicast landing, DSMEM read of s_live) on a CTA that exited or has not initialised
its barriers, no CTA exits with its copies in flight; (e) mbarrier invariants (arrivals within the
count, tx-count in range and never negative once the arrivals are in, every operation in the phase
meant for it); (f) the epilogue reads only s_out slots written in this launch; (g) every thread's
live_taps is the union of all CM tiles' taps (every CTA the same ksteps). Then mutants of the
protocol that the checks must catch (at CM = 2 and CM = 4: the pair's 13, an idle CTA skipping its
part of B, the remote arrivals / DSMEM reads at rank r instead of (rank + r) % CM; and four that
only CM = 4 tells apart: arrivals on CTA rank ^ 1 only, the union of rank ^ 1's taps only, ctaMask
0b11, empty count 8 * 2); the byte layout of the split B tile (CM parts of TN / CM rows); and the
host side of a batched launch (launch_gather_tma_tn's block_end, the kernel's problem search):
every cluster inside one problem, rank = the tile's position in its cluster, idle CTAs only at the
end of a problem and never rank 0.

    python scripts/check_tma_pair.py

(SEEDS[CM] random schedules for each parameter set: 192 sets at CM = 2, 256 at CM = 4; ~25 s on
one core.) Not run through the model: tma_stage_probe_kernel's CM > 1 form (one stage, one phase:
fill, fence, cluster_sync_all, expect_tx + copies, wait parity 0, cluster_sync_all; the k-step-0
case of this one), nor CM = 1 (no cluster: __syncthreads where the cluster barriers are).

This checks a protocol against documented semantics, not the hardware: a GPU run of the CM = 2 and
CM = 4 forms (tests/ops/test_conv.py with RNNKERN_CONV_TMA_CLUSTER=2 / 4 on an H100 / H200) is what
verifies it."""
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
PART_B = 8                  # mem slot of B part h: PART_B + h (A boxes: 0 ... 7)
CMS = (2, 4)                # the cluster sizes modelled (CM = 1: no cluster, not modelled)


# ---------------------------------------------------------------------------------------------
# conv.cu: the anchors of the modelled protocol, and the one fact read from the source

def _norm(s):
    return re.sub(r"\s+", " ", s)


def _code(s):
    """s without its // comments, whitespace collapsed (the anchors are code, not the comments)."""
    return _norm(re.sub(r"//[^\n]*", " ", s))


def kernel_source():
    """conv.cu's text."""
    with open(CONV_CU) as f:
        text = f.read()
    return text


def kernel_body(text):
    """gather_tma_kernel's text, from its __global__ declaration to its #else."""
    start = re.search(r"__global__[^;{]*\bgather_tma_kernel\(", text).start()
    return text[start:text.index("#else", start)], text[:start].count("\n") + 1


# (what the model assumes, the code that says so, where: "k" gather_tma_kernel's body, "f" conv.cu);
# matched with comments removed and whitespace collapsed
ANCHORS = [
    ("kStages 5 (TN 128) / 4 (TN 256)", "static constexpr int kStages = TN == 128 ? 5 : 4;", "f"),
    ("clusters of 1, 2 or 4 CTAs", "static_assert(CM == 1 || CM == 2 || CM == 4,", "k"),
    ("the host launches CM = 1, 2 or 4 (RNNKERN_CONV_TMA_CLUSTER)",
     "return cm == 4 ? launch_gather_tma_tn<T, TN, 4>(plan, w, stream) : cm == 2 ? "
     "launch_gather_tma_tn<T, TN, 2>(plan, w, stream) : launch_gather_tma_tn<T, TN, 1>(plan, w, stream);", "f"),
    ("clusters of CM CTAs along x", "attr[0].val.clusterDim.x = CM;", "f"),
    ("rank = %cluster_ctarank", "const uint32_t rank = CM > 1 ? cluster_ctarank() : 0;", "k"),
    ("full[s]: count 1", "mbar_init(smem_u32(&full[s]), 1);", "k"),
    ("empty[s]: count 8 * CM", "mbar_init(smem_u32(&empty[s]), 8 * CM);", "k"),
    ("barrier init fenced for the cluster, s_live zeroed", "mbar_init_fence(); s_live = 0;", "k"),
    ("cluster_sync_all before the taps are OR-ed", "if constexpr (CM == 1) __syncthreads(); else cluster_sync_all();",
     "k"),
    ("each warp's taps OR-ed into s_live",
     "if (tid % 32 == 0 && (lo | hi) != 0) atomicOr(&s_live, (static_cast<unsigned long long>(hi) << 32) | lo);", "k"),
    ("second cluster_sync_all, then the union of every CTA's live taps ((rank + r) % CM, r = 1 ... CM - 1)",
     "} else { cluster_sync_all(); live_taps = s_live; #pragma unroll for (uint32_t r = 1; r < CM; ++r) "
     "live_taps |= ld_cluster_u64(cluster_map(smem_u32(&s_live), (rank + r) % CM)); }", "k"),
    ("ksteps = popcount(live) * chunks", "const int ksteps = __popcll(live_taps) * chunks;", "k"),
    ("stage bytes: own A + the issued parts", "const uint32_t bytes = tile.stage_bytes(tma_b_rows<TN, CM>(p, n0));",
     "k"),
    ("stage_bytes = (loads * seg + b_rows) * 128", "return static_cast<uint32_t>((loads * seg + b_rows) * 128);", "f"),
    ("producer's empty wait", "if (i >= kTmaStages) mbar_wait<(CM > 1)>(smem_u32(&empty[st]), (i / kTmaStages - 1) & 1);", "k"),
    ("expect_tx, then the copies", "mbar_arrive_expect_tx(bar, bytes); tma_issue_stage<TN, CM>(p, tile, map_x, "
     "map_w, ring + st * kTmaStageBytes, bar, g, n0, t, c0, rank);", "k"),
    ("part rank (TN / CM rows at BM * 128 + rank * TN / CM * 128) issued where it starts below Nn, multicast "
     "to all CM CTAs",
     "constexpr int kPart = TN / CM; const int np = n0 + static_cast<int>(rank) * kPart; if (np < p.Nn) "
     "tma_load_3d_multicast(a + (BM + static_cast<int>(rank) * kPart) * 128, map_w, bar, c0, np, "
     "g * p.KH * p.KW + t, static_cast<uint16_t>((1u << CM) - 1));", "f"),
    ("the weight's box: TN / CM rows", "const cuuint32_t box[3] = {BK, TN / CM, 1}", "f"),
    ("tma_b_rows: the parts below Nn", "for (int h = 0; h < CM; ++h) rows += n0 + h * (TN / CM) < p.Nn ? TN / CM : 0;",
     "f"),
    ("consumer's full wait", "mbar_wait(smem_u32(&full[st]), (i / kTmaStages) & 1);", "k"),
    ("wgmma_wait<1>, then the release of step i - 1 on own empty, then on CTA (rank + r) % CM's",
     "wgmma_wait<1>(); wgmma_pin(acc); if (i > 0 && lane == 0) { const uint32_t released = "
     "smem_u32(&empty[(i - 1) % kTmaStages]); mbar_arrive(released); #pragma unroll for (uint32_t r = 1; r < CM; "
     "++r) mbar_arrive_cluster(cluster_map(released, (rank + r) % CM)); }", "k"),
    ("wgmma_wait<0> after the mainloop", "wgmma_wait<0>();", "k"),
    ("epilogue: __syncthreads, then the staged tile over the ring", "float* Cs = reinterpret_cast<float*>(smem); "
     "__syncthreads(); if (wg > 0) {", "k"),
    ("ring 1024-aligned", "const uint32_t ring = (raw + 1023) & ~1023u;", "k"),
    ("idle CTA (tile past Mt): no A loads", "if (static_cast<long long>(bx) * BM >= p.Mt) {", "f"),
    ("idle CTA: loads = 0", "o.loads = 0;", "f"),
    ("a problem's blocks: whole clusters", "mine = (tiles + CM - 1) / CM * CM;", "f"),
    ("block_end: the running block count", "batch.block_end[i - first] = static_cast<int>(blocks);", "f"),
    ("the block's problem: the first block_end above it",
     "while (pi + 1 < batch.count && static_cast<int>(blockIdx.x) >= batch.block_end[pi]) ++pi;", "k"),
    ("the block's tile in its problem",
     "const int bx = static_cast<int>(blockIdx.x) - (pi > 0 ? batch.block_end[pi - 1] : 0);", "k"),
    ("the probe's cluster: tiles bx / CM * CM + rank",
     "tma_tile_origin(p, bx / CM * CM + static_cast<int>(rank));", "f"),
]


def check_anchors(text):
    """The anchors missing from conv.cu (the model would then describe another kernel), and whether
    the kernel's last statement is the final cluster_sync_all."""
    body = _code(kernel_body(text)[0])
    t = _code(text)
    missing = [what for what, code, where in ANCHORS if _norm(code) not in (body if where == "k" else t)]
    if not re.search(r"if constexpr \(CM > 1\) cluster_sync_all\(\); ?$", body):
        missing.append("the final cluster_sync_all as the kernel's last statement")
    return missing


def s_out_guards(text):
    """The enclosing if-conditions of each `s_out[...] =` store in gather_tma_kernel (brace scan),
    with its line: an idle CTA (tile.loads == 0) writes s_out iff some store is not under a
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
    """(whether an idle CTA writes s_out, the stores with their conditions)."""
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
# the kernel's protocol on a cluster of CM CTAs

# name: (what the mutant changes, the cluster sizes it is run at)
MUTANTS = {
    "empty_count_8": ("empty[s] initialised with 8 arrivals (only one CTA's consumer warps counted)", CMS),
    "no_partner_arrive": ("consumer warps arrive on their own CTA's empty barrier only", CMS),
    "own_taps": ("each CTA runs its own live taps, not the cluster's union", CMS),
    "expect_skipped_part": ("expect_tx counts the parts that are never issued too (TN rows always)", CMS),
    "expect_own_part_only": ("expect_tx counts its own part of B only, not the other CTAs'", CMS),
    "no_final_cluster_sync": ("no cluster_sync_all before exit", CMS),
    "multicast_self_only": ("the multicast's ctaMask holds only the issuing CTA", CMS),
    "empty_wait_from_S_plus_1": ("the producer's empty wait from i > S (skipped at i == S)", CMS),
    "empty_wait_parity_off": ("the producer's empty wait with parity (i / S) & 1 (one phase off)", CMS),
    "release_before_wgmma_wait": ("a consumer releases step i right after issuing its wgmma (no wait_group<1>)", CMS),
    "no_cluster_sync_2": ("live_taps read without the second cluster_sync_all (s_live may be incomplete)", CMS),
    "no_cluster_sync_1": ("no first cluster_sync_all (a warp's atomicOr may precede tid 0's s_live = 0)", CMS),
    "no_epilogue_syncthreads": ("the epilogue writes the ring without the first __syncthreads", CMS),
    "idle_cta_no_b": ("an idle CTA skips the producer loop (does not load its part of B)", CMS),
    "arrive_map_r": ("the remote arrivals on cluster_map(released, r) instead of (rank + r) % CM", CMS),
    "union_map_r": ("the union's DSMEM reads from cluster_map(&s_live, r) instead of (rank + r) % CM", CMS),
    "arrive_one_partner": ("consumer warps arrive on own empty and CTA rank ^ 1's only (the CM = 2 code)", (4,)),
    "union_one_partner": ("live_taps = own s_live | CTA rank ^ 1's only (the CM = 2 code)", (4,)),
    "multicast_mask_0b11": ("the multicast's ctaMask 0b11 (CTAs 0, 1) instead of (1 << CM) - 1", (4,)),
    "empty_count_16": ("empty[s] initialised with 8 * 2 arrivals at CM = 4", (4,)),
}


class Config:
    __slots__ = ("CM", "TN", "S", "chunks", "taps", "masks", "union", "warp_taps", "loads", "seg", "issued",
                 "nidle", "name")


class Sim:
    def __init__(self, cfg, mut, rng, s_out_idle, stats):
        self.cfg, self.mut, self.rng, self.s_out_idle, self.stats = cfg, mut, rng, s_out_idle, stats
        self.ck = Checks()
        S, CM = cfg.S, cfg.CM
        ecount = 8 if "empty_count_8" in mut else 16 if "empty_count_16" in mut else 8 * CM
        self.full = [[MBar(f"CTA{r}.full[{s}]", 1, self.ck, stats) for s in range(S)] for r in range(CM)]
        self.empty = [[MBar(f"CTA{r}.empty[{s}]", ecount, self.ck, stats) for s in range(S)] for r in range(CM)]
        self.inited = [False] * CM
        self.mem = [[[None] * (PART_B + CM) for _ in range(S)] for _ in range(CM)]  # tag of what each box slot holds
        self.readers = [[{} for _ in range(S)] for _ in range(CM)]                # warp -> k-step its wgmma reads
        self.inflight = []
        self.issuer_pending = [0] * CM
        self.dst_pending = [0] * CM
        self.epi = [False] * CM
        self.exited = [False] * CM
        self.s_live = [rng.getrandbits(64) for _ in range(CM)]                   # stale shared memory
        self.s_out = [[False] * BM for _ in range(CM)]
        self.cbar = [0, 0, CM * NAGENTS]                                          # arrived, generation, threads
        self.tbar = [[0, 0, NAGENTS] for _ in range(CM)]
        self.finished = [0] * CM
        self.in_mainloop = [0] * CM
        self.at_final = [0] * CM
        self.where = [[""] * NAGENTS for _ in range(CM)]
        self.f_reported = [False] * CM

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
        who = f"CTA{r}'s {'A box' if slot < PART_B else 'B part'} {slot if slot < PART_B else slot - PART_B} " \
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
        for h in range(c.CM):
            exp.append((PART_B + h, (h, i, t, ch) if c.issued[h] else None))
        return exp

    def check_stage(self, r, a, st, i, step, when):
        mem = self.mem[r][st]
        for slot, tag in self.expected(r, (a - CONSUMER0) // 4, i, step):
            if mem[slot] != tag:
                what = f"A box {slot}" if slot < PART_B else f"B part {slot - PART_B}"
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
                self.mem[r][st] = ["EPI"] * (PART_B + self.cfg.CM)

    def finish(self, r):
        self.finished[r] += 1
        if self.finished[r] == NAGENTS:
            if self.issuer_pending[r]:
                self.ck.err("d", f"CTA{r} exits with {self.issuer_pending[r]} of its copies still in flight")
            self.exited[r] = True

    # -- one warp ------------------------------------------------------------------------------
    def agent(self, r, a):
        c, mut, ck = self.cfg, self.mut, self.ck
        S, TN, CM = c.S, c.TN, c.CM
        who = f"CTA{r}.warp{a}" if a else f"CTA{r}.producer"
        where = self.where[r]
        others = [(r + k) % CM for k in range(1, CM)]        # (rank + r) % CM, r = 1 ... CM - 1
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
        if "own_taps" in mut:
            srcs = []
        elif "union_one_partner" in mut:
            srcs = [r ^ 1]
        elif "union_map_r" in mut:
            srcs = list(range(1, CM))
        else:
            srcs = others
        for d in srcs:                 # ld.shared::cluster of CTA d's s_live, one read each
            if d != r:
                self.remote(d, who, "ld.shared::cluster of s_live", needs_init=False)
            live |= self.s_live[d]
            yield None
        if live != c.union:
            ck.err("g", f"{who}: live_taps {live:#x}, the cluster's union is {c.union:#x} "
                        f"(ksteps {bin(live).count('1') * c.chunks} instead of {bin(c.union).count('1') * c.chunks})")
        seq = [(t, ch) for t in range(64) if live >> t & 1 for ch in range(c.chunks)]
        ks = len(seq)

        if a == 0:   # producer, tid 0
            part = TN // CM
            if "expect_skipped_part" in mut:
                b_rows = TN
            elif "expect_own_part_only" in mut:
                b_rows = part if c.issued[r] else 0
            else:
                b_rows = sum(part for h in range(CM) if c.issued[h])       # tma_b_rows
            nbytes = (c.loads[r] * c.seg + b_rows) * ROW                  # stage_bytes
            mask = (1 << r if "multicast_self_only" in mut else 0b11 if "multicast_mask_0b11" in mut
                    else (1 << CM) - 1)
            dsts = [d for d in range(CM) if mask >> d & 1]
            first_wait = S + 1 if "empty_wait_from_S_plus_1" in mut else S
            poff = 0 if "empty_wait_parity_off" in mut else 1
            if "idle_cta_no_b" in mut and c.loads[r] == 0:
                seq = []
            for i, (t, ch) in enumerate(seq):
                st = i % S
                if i >= first_wait:
                    eb, par = self.empty[r][st], (i // S - poff) & 1
                    where[a] = f"wait {eb.name} parity {par} (k-step {i})"
                    yield lambda eb=eb, par=par: (eb.phase & 1) != par
                    if any(self.empty[d][st].phase < i // S for d in others):
                        self.stats["ring_skew"] += 1   # another CTA's release of step i - S not complete yet
                self.full[r][st].expect_tx(nbytes, i // S, who)
                yield None
                tag = (r, i, t, ch)
                for j in range(c.loads[r]):
                    self.issue(r, [r], st, j, tag, c.seg * ROW, i // S)
                    yield None
                if c.issued[r]:                                           # n0 + rank * TN / CM < Nn
                    self.issue(r, dsts, st, PART_B + r, tag, part * ROW, i // S)
                    yield None
        elif a >= CONSUMER0:
            self.in_mainloop[r] += 1
            early = "release_before_wgmma_wait" in mut
            readers = self.readers[r]
            if "no_partner_arrive" in mut:
                remote_to = []
            elif "arrive_one_partner" in mut:
                remote_to = [r ^ 1]
            elif "arrive_map_r" in mut:
                remote_to = list(range(1, CM))
            else:
                remote_to = others

            def release(k):             # own empty, then CTA (rank + r) % CM's, one instruction each
                self.empty[r][k % S].arrive(k // S, who)
                for d in remote_to:
                    yield None
                    if d != r:
                        self.remote(d, who, f"arrive on empty[{k % S}] for k-step {k}")
                    if not self.exited[d]:
                        self.empty[d][k % S].arrive(k // S, who)
                yield None

            for i in range(ks):
                st = i % S
                fb, par = self.full[r][st], (i // S) & 1
                where[a] = f"wait {fb.name} parity {par} (k-step {i})"
                yield lambda fb=fb, par=par: (fb.phase & 1) != par
                self.check_stage(r, a, st, i, seq[i], "reads")
                readers[st][a] = i            # wgmma issued, committed: reads stage st until completed
                yield None
                if early and i < ks - 1:
                    yield from release(i)
                if i > 0:                     # wgmma_wait<1>: k-step i - 1 complete
                    pst = (i - 1) % S
                    self.check_stage(r, a, pst, i - 1, seq[i - 1], "still reading")
                    del readers[pst][a]
                    yield None
                    if not early:
                        yield from release(i - 1)
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
        if self.at_final[r] == NAGENTS and any(self.in_mainloop[d] for d in others):
            self.stats["final_barrier_held"] += 1   # this CTA is done; another still arrives remotely
        if "no_final_cluster_sync" not in mut:
            where[a] = "cluster_sync_all #3 (final)"
            yield from self.bar_sync(self.cbar)
        self.finish(r)

    # -- the scheduler -------------------------------------------------------------------------
    def run(self, mode, p_land):
        rng = self.rng
        CM = self.cfg.CM
        ks = bin(self.cfg.union).count("1") * self.cfg.chunks
        slow_cta, slow_warp = rng.randrange(CM), rng.randrange(CONSUMER0, NAGENTS)
        agents = []
        for r in range(CM):
            for a in range(NAGENTS):
                slow = {"uniform": False, "one_cta_slow": r == slow_cta, "one_cta_fast": r != slow_cta,
                        "producers_slow": a == 0, "consumers_slow": a >= CONSUMER0,
                        "one_warp_slow": a == slow_warp and r == slow_cta,
                        "random_slow": rng.random() < 0.3}[mode]
                agents.append([self.agent(r, a), None, slow, r, a])
        bound = (40000 + 4000 * ks) * CM // 2
        steps = 0
        inflight = self.inflight
        randrange, random_ = rng.randrange, rng.random
        while not self.ck.stop:
            nin = len(inflight)
            if nin and random_() < p_land:
                self.land(randrange(nin))
                steps += 1
                continue
            # a ready agent, uniformly: a few rejection tries, then the full list
            n = len(agents)
            ag = None
            for _ in range(6):
                cand = agents[randrange(n)] if n else None
                if cand is not None and (cand[1] is None or cand[1]()):
                    ag = cand
                    break
            if ag is None:
                ready = [g for g in agents if g[1] is None or g[1]()]
                if ready:
                    ag = ready[randrange(len(ready))]
            if ag is None:
                if nin:
                    self.land(randrange(nin))
                else:
                    if agents:
                        at = {}
                        for g in agents:
                            at.setdefault(self.where[g[3]][g[4]].split(" (k-step")[0], []).append(
                                f"CTA{g[3]}.w{g[4]}")
                        blocked = "; ".join(f"{', '.join(w[:3])}{' ...' if len(w) > 3 else ''} at {k}"
                                            for k, w in at.items())
                        self.ck.err("a", f"deadlock: no copy in flight, {len(agents)} warps blocked: {blocked}")
                    break
            elif not (ag[2] and random_() < 0.85):
                try:
                    ag[1] = next(ag[0])
                except StopIteration:
                    agents.remove(ag)
            steps += 1
            if steps > bound:
                self.ck.err("a", f"hang: no end after {bound} steps")
                break
        if not self.ck.stop:
            while inflight:   # (a cluster that exited with copies in flight was flagged at the exit)
                self.land(rng.randrange(len(inflight)))
        return self.ck.found
# ---------------------------------------------------------------------------------------------
# parameter combinations

LOADS_KINDS = ("row", "tile8", "tile_clipped")


def make_config(rng, CM, TN, ksteps, parts, nidle, loads_kind):
    """CM CTAs, the last nidle idle (no pixels, no A loads), B parts 0 ... parts - 1 issued (the
    others start at or past Nn), a union of live taps giving `ksteps` k-steps."""
    c = Config()
    c.CM, c.TN, c.S, c.nidle = CM, TN, STAGES[TN], nidle
    if ksteps == 0:
        c.chunks, npop = rng.choice((1, 2, 4)), 0
    else:
        opts = [ch for ch in (1, 2, 3, 4) if ksteps % ch == 0 and ksteps // ch <= 64]
        c.chunks = rng.choice(opts)
        npop = ksteps // c.chunks
    c.taps = max(npop, rng.choice((9, 25, 49, 64))) if npop <= 49 else 64
    union_bits = rng.sample(range(c.taps), npop)
    active = CM - nidle
    masks = [0] * CM
    for b in union_bits:     # each live tap live in one active tile, in all, or in some of them
        u = rng.random()
        if u < 0.4:
            where = [rng.randrange(active)]
        elif u < 0.6:
            where = list(range(active))
        else:
            where = [k for k in range(active) if rng.random() < 0.5] or [rng.randrange(active)]
        for k in where:
            masks[k] |= 1 << b
    c.masks = tuple(masks)
    c.union = 0
    for m in masks:
        c.union |= m
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
    loads = [l0]
    for k in range(1, CM):
        if k >= active:
            loads.append(0)
        else:
            loads.append(l0 if rng.random() < 0.5 or c.seg == BM else rng.randint(1, 8))
    c.loads = tuple(loads)
    c.issued = tuple(h < parts for h in range(CM))
    c.name = (f"CM {CM}, TN {TN} (S {c.S}), ksteps {ksteps} ({npop} taps x {c.chunks}), B parts issued "
              f"{'all' if parts == CM else f'0-{parts - 1}' if parts > 1 else '0 only'}, "
              f"{f'{nidle} idle CTA(s)' if nidle else 'no idle CTA'}, A boxes {c.loads}")
    return c


def config_space(rng, CM):
    """CM = 2: every combination (TN, ksteps, parts issued 2 / 1, 0 / 1 idle, A-box kind); CM = 4:
    TN x ksteps x parts issued 4 / 3 / 2 / 1 x 0-3 idle, the A-box kind in turn."""
    out = []
    n = 0
    for TN in (128, 256):
        S = STAGES[TN]
        for ksteps in (0, 1, 2, S - 1, S, S + 1, 3 * S + 2, "rand"):
            for parts in range(CM, 0, -1):
                for nidle in range(CM):
                    kinds = LOADS_KINDS if CM == 2 else (LOADS_KINDS[n % 3],)
                    n += 1
                    for loads_kind in kinds:
                        k = rng.randint(3, 40) if ksteps == "rand" else ksteps
                        out.append((CM, TN, k, parts, nidle, loads_kind))
    return out


SEEDS = {2: 12, 4: 6}   # random schedules a parameter set
MODES = ("uniform", "one_cta_slow", "one_cta_fast", "producers_slow", "consumers_slow", "one_warp_slow",
         "random_slow")
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
    return {"neg_tx": 0, "final_barrier_held": 0, "ring_skew": 0, "ksteps0_done": 0, "idle_done": {}}


# ---------------------------------------------------------------------------------------------
# host side: clusters of a batched launch

def batch_clusters_check(rng, CM, trials=2000):
    """launch_gather_tma_tn's block_end (each problem ceil(tiles / CM) * CM blocks) and the kernel's
    search for its problem (pi: the first with blockIdx.x < block_end[pi]); a cluster of (CM, 1, 1)
    holds blocks CM j ... CM j + CM - 1 with %cluster_ctarank = blockIdx.x % CM (CUDA: clusters tile
    the grid, rank x-fastest). Every CTA of a cluster must be in one problem (same p, n0 tile, ksteps
    rules), its tile bx with bx % CM == rank, the tiles of a problem each once; an idle CTA
    (bx * BM >= Mt) only in the problem's last cluster, at ranks >= 1 above every real tile of it;
    the probe's cluster of tile bx (tiles bx / CM * CM + rank) the kernel's. Returns (the first
    violation or None, the idle-CTA counts seen in a cluster)."""
    idle_seen = set()
    for _ in range(trials):
        count = rng.randint(1, 4)
        Mt = [rng.choice((rng.randint(1, 12 * BM), rng.randint(1, 12) * BM)) for _ in range(count)]
        block_end, blocks = [], 0
        for m in Mt:
            tiles = (m + BM - 1) // BM
            blocks += (tiles + CM - 1) // CM * CM
            block_end.append(blocks)
        if blocks % CM:
            return f"grid.x {blocks} not a multiple of CM {CM} (Mt {Mt})", idle_seen
        where = []
        for x in range(blocks):
            pi = 0
            while pi + 1 < count and x >= block_end[pi]:
                pi += 1
            bx = x - (block_end[pi - 1] if pi > 0 else 0)
            where.append((pi, bx, bx * BM >= Mt[pi]))
        seen = [set() for _ in range(count)]
        for j in range(0, blocks, CM):
            cl = where[j:j + CM]
            ps = {p for p, _, _ in cl}
            if len(ps) != 1:
                return f"cluster {j} ... {j + CM - 1} straddles problems {sorted(ps)} (Mt {Mt})", idle_seen
            p = cl[0][0]
            for rank, (_, bx, idle) in enumerate(cl):
                if bx % CM != rank or bx != cl[0][1] + rank:
                    return f"cluster {j}: rank {rank} holds tile {bx} of problem {p} (Mt {Mt})", idle_seen
                if idle:
                    if rank == 0:
                        return f"cluster {j} of problem {p}: an idle CTA at rank 0 (Mt {Mt})", idle_seen
                    if j + CM != block_end[p]:
                        return f"cluster {j} of problem {p}: an idle CTA before its last cluster (Mt {Mt})", idle_seen
                    if not all(cl[k][2] for k in range(rank, CM)):
                        return f"cluster {j} of problem {p}: a real tile above an idle CTA (Mt {Mt})", idle_seen
                else:
                    seen[p].add(bx)
                    # the probe's cluster of tile bx: tma_tile_origin(p, bx / CM * CM + rank)
                    if [bx // CM * CM + k for k in range(CM)] != [b for _, b, _ in cl]:
                        return f"tile {bx}: the probe's cluster differs from the kernel's (Mt {Mt})", idle_seen
            idle_seen.add(sum(idle for _, _, idle in cl))
        for p in range(count):
            if seen[p] != set(range((Mt[p] + BM - 1) // BM)):
                return f"problem {p}: tiles {sorted(seen[p])[:8]} ... not each once (Mt {Mt})", idle_seen
    return None, idle_seen


# ---------------------------------------------------------------------------------------------
# the byte layout of the split B tile

def box_bytes(dst, rows, rel):
    """A rows x 128-byte box at dst (1-byte elements) under the 128B swizzle: on the absolute address
    (tma_box_bytes), or (rel) with the 8-row pattern anchored at the box's own destination."""
    if not rel:
        return tma_box_bytes(dst, rows, 1)
    return dst + swz128(np.arange(rows)[:, None] * ROW + np.arange(ROW)[None, :])


def layout_check():
    """For CM = 2 and 4: B part h written at stage + BM * 128 + h * (TN / CM) * 128 (each a TMA box of
    TN / CM rows of 128 bytes, 128B swizzle on the absolute shared address) equals one TN-row box at
    stage + BM * 128 byte for byte, and wgmma's K-major SWIZZLE_128B read (the kernel's descriptor:
    LBO 16, SBO 1024) of the parts gives the logical TN x 128-byte tile. Also: the ring is
    1024-aligned for every 16-aligned dynamic shared base and fits the allocation; each box's
    destination is 128-aligned. Returns (problems, the control: a split at 512 bytes agrees only
    under the absolute-address reading)."""
    problems = []
    for TN in (128, 256):
        S = STAGES[TN]
        stage_bytes = (BM + TN) * ROW
        smem = S * stage_bytes + 1024
        if stage_bytes % 1024 or (BM * ROW) % 1024:
            problems.append(f"TN {TN}: stage / A offsets not multiples of 1024")
        for raw in range(0, 8192, 16):
            ring = (raw + 1023) & ~1023
            if ring % 1024 or ring + S * stage_bytes > raw + smem:
                problems.append(f"TN {TN}: ring {ring} from base {raw} misaligned or past the allocation")
                break
    for CM in CMS:
        for TN in (128, 256):
            S = STAGES[TN]
            part = TN // CM
            stage_bytes = (BM + TN) * ROW
            if (part * ROW) % 1024:
                problems.append(f"CM {CM}, TN {TN}: a part's {part * ROW} bytes not a multiple of 1024")
            for E in (2, 4):
                logical = np.arange(TN * ROW, dtype=np.int64).reshape(TN, ROW)   # byte b of row n: n * 128 + b
                for st in range(S):
                    ring = 3 * 1024
                    base = ring + st * stage_bytes
                    b = base + BM * ROW
                    size = ring + S * stage_bytes
                    one = np.full(size, -1, dtype=np.int64)
                    one[tma_box_bytes(b, TN, E).reshape(-1)] = logical.reshape(-1)
                    split = np.full(size, -1, dtype=np.int64)
                    for h in range(CM):
                        dst = b + h * part * ROW
                        if dst % 128:
                            problems.append(f"CM {CM}, TN {TN}: part {h} destination {dst} not 128-aligned")
                        split[tma_box_bytes(dst, part, E).reshape(-1)] = logical[h * part:(h + 1) * part].reshape(-1)
                    if not np.array_equal(one, split):
                        problems.append(f"CM {CM}, TN {TN}, E {E}, stage {st}: the parts' bytes differ from one "
                                        f"full box")
                    for ks in range(4):   # wgmma_desc_sw128(b + ks * 32): LBO 16, SBO 1024, mode 1
                        desc = desc_encode(b + ks * 32, 16, 1024)
                        addr = wgmma_k_major_bytes(desc, TN, E)
                        got = split[addr]
                        want = logical[:, ks * 32:(ks + 1) * 32].reshape(TN, 32 // E, E)
                        if not np.array_equal(got, want):
                            problems.append(f"CM {CM}, TN {TN}, E {E}, stage {st}, k slice {ks}: wgmma reads the "
                                            f"parts wrongly")
                            break

    # the same under the other reading of the swizzle (the pattern anchored at each box's destination
    # instead of the absolute address): the parts still agree because TN / CM * 128 is a multiple of
    # 1024; the control, a split after 4 rows (512 bytes), agrees under the absolute reading only
    def split_equal(rows, cuts, rel):
        base = 2048
        one = np.full(base + rows * ROW + 1024, -1, dtype=np.int64)
        one[box_bytes(base, rows, rel).reshape(-1)] = np.arange(rows * ROW)
        two = np.full(one.size, -1, dtype=np.int64)
        edges = [0] + list(cuts) + [rows]
        for lo, hi in zip(edges, edges[1:]):
            two[box_bytes(base + lo * ROW, hi - lo, rel).reshape(-1)] = np.arange(lo * ROW, hi * ROW)
        return np.array_equal(one, two)

    for CM in CMS:
        for TN in (128, 256):
            if not split_equal(TN, range(TN // CM, TN, TN // CM), rel=True):
                problems.append(f"CM {CM}, TN {TN}: the parts differ from one box under the destination-anchored "
                                f"swizzle")
    control_differs = split_equal(8, (4,), rel=False) and not split_equal(8, (4,), rel=True)
    return problems, control_differs


# ---------------------------------------------------------------------------------------------

def main():
    t0 = time.time()
    failures = []

    def fail(msg):
        failures.append(msg)
        print(f"MISMATCH {msg}")

    print("gather_tma_kernel<T, TN, CM = 2 | 4>: cluster protocol (multicast B parts, mbarriers, cluster "
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
          f" -> an idle CTA {'writes' if s_out_idle else 'does NOT write'} s_out")

    # (5) the split B tile's bytes
    problems, control = layout_check()
    if problems or not control:
        fail("B parts layout: " + "; ".join(problems or ["the control split at 512 bytes was not told apart"]))
    else:
        print("ok: B parts at BM * 128 + h * TN / CM * 128 (CM 2: 8192 / 16384 bytes, CM 4: 4096 / 8192 bytes a "
              "part: multiples of 1024) land byte for byte as one TN-row box under the 128B swizzle on absolute "
              "addresses, and wgmma's K-major SW128 read of them is the logical tile (CM 2 / 4, TN 128 / 256, "
              "16- / 32-bit, every stage); the ring base is 1024-aligned and fits for every 16-aligned dynamic "
              "base (control: a split at 512 bytes differs)")

    # host side: the clusters of a batched launch
    for CM in CMS:
        bad, idle_seen = batch_clusters_check(random.Random(7 + CM), CM)
        if bad:
            fail(f"batched launch, CM {CM}: {bad}")
        elif idle_seen != set(range(CM)):
            fail(f"batched launch, CM {CM}: clusters with {sorted(set(range(CM)) - idle_seen)} idle CTAs never drawn")
        else:
            print(f"ok: batched launches, CM {CM} (launch_gather_tma_tn's block_end / the kernel's search): every "
                  f"cluster of blocks {CM}j ... {CM}j + {CM - 1} lies in one problem, rank = blockIdx.x % {CM} is the "
                  f"tile's position in its cluster, every tile once, idle CTAs (0-{CM - 1} a cluster seen) only in a "
                  f"problem's last cluster at ranks >= 1, the probe's clusters the same (2000 random batches of 1-4 "
                  f"problems)")

    # the protocol as written, many schedules
    labels = {
        "a": "no deadlock or hang: every warp of every CTA finishes",
        "b": "every wgmma read of k-step i sees its own A boxes and every B part of k-step i (the never-written "
             "marker only for a part past Nn); no copy lands in a stage a warp of its destination still reads",
        "c": "no copy lands in a CTA's ring after its epilogue started writing it",
        "d": "no remote arrive / multicast landing / DSMEM read on an exited or uninitialised CTA; no CTA exits "
             "with copies in flight",
        "e": "mbarrier invariants: arrivals within the count, every arrive / complete-tx in the phase meant for "
             "it, tx-count in range and not negative once the arrivals are in",
        "g": "every CTA (every warp) runs the union of the cluster's live taps: the same ksteps",
    }
    spaces = {}
    seed = 0
    f_examples = []
    f_runs = 0
    total_runs = 0
    for CM in CMS:
        rng = random.Random(1234 + CM)
        space = spaces[CM] = config_space(rng, CM)
        stats = new_stats()
        per_kind = {}
        runs = 0
        ks_seen = set()
        for params in space:
            for _ in range(SEEDS[CM]):
                seed += 1
                cfg, found, sched = run_one(seed, params, (), s_out_idle, stats)
                runs += 1
                ks = bin(cfg.union).count("1") * cfg.chunks
                ks_seen.add(ks)
                if all(k == "f" for k, _ in found):
                    stats["ksteps0_done"] += ks == 0
                    if cfg.nidle:
                        stats["idle_done"][cfg.nidle] = stats["idle_done"].get(cfg.nidle, 0) + 1
                for kind, msg in found:
                    if kind == "f":
                        if len(f_examples) < 1:
                            f_examples.append(f"{cfg.name}; {sched}: {msg}")
                        f_runs += 1
                        per_kind["f"] = per_kind.get("f", 0) + 1
                    else:
                        if kind not in per_kind:
                            fail(f"(kernel protocol, CM {CM}) ({kind}) {cfg.name}; {sched}: {msg}")
                        per_kind[kind] = per_kind.get(kind, 0) + 1
        total_runs += runs
        for k in "abcdeg":
            if k in per_kind:
                print(f"FAILED ({k}) CM {CM}: in {per_kind[k]} of {runs} runs: {labels[k]}")
            else:
                print(f"ok ({k}) CM {CM}, {runs} runs: {labels[k]}")
        if "f" not in per_kind:
            print(f"ok (f) CM {CM}, {runs} runs: the stores read only s_out slots written in this launch")
        parts = "2 (both) / 1 (rank 0's only)" if CM == 2 else "4 / 3 / 2 (ranks 0-1) / 1 (rank 0 only)"
        print(f"   CM {CM}: {len(space)} parameter sets x {SEEDS[CM]} schedules: TN 128 (S 5, parts of "
              f"{128 // CM} rows) / 256 (S 4, {256 // CM} rows); ksteps {sorted(ks_seen)}; B parts issued {parts}; "
              f"0-{CM - 1} idle CTAs; A boxes 1 (row order), 8 and 1-7 (8 x 16 tiles); {len(MODES)} schedule biases "
              f"x {len(P_LAND)} landing rates")
        print(f"   CM {CM} coverage: {stats['neg_tx']} complete-tx ran ahead of their phase's expect_tx (tx-count "
              f"transiently negative, the arrival pending); {stats['final_barrier_held']} times a CTA reached the "
              f"final cluster barrier while another CTA's consumers were still in the mainloop (arriving on its "
              f"barriers); {stats['ring_skew']} times a producer re-armed a stage while another CTA's empty "
              f"barrier had not yet seen every release of the stage's previous k-step; {stats['ksteps0_done']} runs "
              f"with ksteps = 0 (no producer / consumer iteration) and "
              + ", ".join(f"{n} with {k} idle CTA(s)" for k, n in sorted(stats["idle_done"].items()))
              + " ended with every CTA through the final barrier")
    if f_runs:
        fail(f"(f) KERNEL BUG: in {f_runs} of {total_runs} runs (every run with an idle CTA) the epilogue's "
             f"stores read s_out that no thread wrote: conv.cu:{stores[0][0]} writes s_out only under "
             f"`{' / '.join(stores[0][1])}`, and an idle CTA of a cluster (tile count not a multiple of CM) has "
             f"loads = 0, yet both store loops read s_out[m] for every m and store where it is >= 0 "
             f"(uninitialised shared memory -> stray global stores). E.g. {f_examples[0]}")

    # mutants
    mrng = random.Random(99)
    missed = []
    caught_n = 0
    for name, (what, cms) in MUTANTS.items():
        for CM in cms:
            order = list(spaces[CM])
            mrng.shuffle(order)
            caught = None
            mseed = 100000 + 1000 * CM
            tries = 0
            for params in order:
                mseed += 1
                tries += 1
                cfg, found, sched = run_one(mseed, params, (name,), True)
                real = [(k, m) for k, m in found if k != "f"]
                if real:
                    caught = (cfg, real[0], sched)
                    break
                if tries >= 300:
                    break
            if caught:
                caught_n += 1
                cfg, (kind, msg), sched = caught
                print(f"   mutant {name}, CM {CM}: caught ({kind}) after {tries} run(s): {msg[:200]}")
            else:
                missed.append(f"{name} (CM {CM})")
                fail(f"mutant {name} at CM {CM} ({what}) not caught in {tries} runs")
    if not missed:
        pairs = sum(len(c) for _, c in MUTANTS.values())
        print(f"ok: all {caught_n} mutant runs caught ({len(MUTANTS)} mutants; {pairs} mutant x CM pairs: CM 2 and 4, "
              f"four at CM 4 only)")

    dt = time.time() - t0
    if failures:
        print(f"{len(failures)} failure(s) ({dt:.1f} s)")
        sys.exit(1)
    print(f"all checks ok ({dt:.1f} s)")


if __name__ == "__main__":
    main()
