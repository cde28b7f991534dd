"""A model check, in plain Python, of the cluster protocols of two conv.cu kernels for CM = 2 and CM = 4
(RNNKERN_CONV_TMA_CLUSTER=2|4):
- gather_tma_kernel<T, TN, CM>: clusters of CM CTAs on neighbouring pixel tiles and the same output
  channels n0, CTA rank h loading part h of the TN-row weight tile B, rows h * TN / CM ..., with a
  TMA multicast copy into every CTA's stage;
- wgrad_tma_kernel<T, TN, CM> (16-bit channels_last; "the wgrad protocol" below): clusters of CM CTAs
  on neighbouring output-channel tiles m0 of the same input-channel tile n0, tap and split, rank
  j % CM loading x box j (64 pixels x 64 input channels) with a multicast copy into every CTA's
  stage, each CTA its own gy boxes.
The hardware steps are modelled from their documentation, not from the kernels; each kernel's
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

What is run through the model for gather_tma_kernel (the kernel's protocol, as conv.cu writes it;
the script first checks that the conv.cu lines it replays are still there, ANCHORS, and fails when
one is gone):
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

The wgrad protocol (wgrad_tma_kernel, CM > 1; its own anchors, W_ANCHORS, in the kernel's body and
launch_wgrad_tma): CM CTAs of 12 warps, blocks x0 ... x0 + CM - 1 of a grid of tiles_m x tiles_n
blocks along x (m tile = blockIdx.x % tiles_m, n tile = blockIdx.x / tiles_m; tiles_m a multiple of
CM, as the host's choice guarantees), rank = blockIdx.x % CM. Prologue: tid 0 initialises full[s]
(count 1) and empty[s] (count 8 * CM) and fences, cluster_sync_all. Each CTA's a_boxes =
min(2, (Kg - m0 + 63) / 64) (1 or 2: the last m tile may have fewer, so they differ within a
cluster), b_boxes = min(TN / 64, (Cg - n0 + 63) / 64) (1 ... TN / 64; with b_boxes < CM some ranks
issue no x box). The live k-steps: k in [k_begin, k_end) of the split, not dead(k), the same in
every CTA (a taint pass over the kernel's declarations shows that k_begin, k_end and the dead(k)
lambda depend on nothing computed from blockIdx.x, threadIdx.x or %cluster_ctarank; six edits of the
kernel that break it are flagged). Producer (tid 0): for live k-step i: if i >= S wait empty[i % S]
parity (i / S - 1) & 1 (acquire.cluster); arrive.expect_tx(full[i % S], (a_boxes + b_boxes) * 8192);
its gy boxes h < a_boxes (own CTA only); the x boxes j < b_boxes with j % CM == rank, multicast with
ctaMask (1 << CM) - 1. Warps 1-3: nothing. Consumer warps (warpgroup cw = 1, 2 reads gy box cw - 1
and every x box): full wait, wgmma, wait_group<1>, then lane 0's release of step i - 1 on own empty
and on CTA (rank + q) % CM's, q = 1 ... CM - 1; wait_group<0>; the epilogue stores the accumulators
to global memory (no shared memory: checked on the source); the final cluster_sync_all, exit. Its
checks: (a), (b) (a warp's read of k-step i sees its own CTA's gy boxes of k-step i, the never-
written marker for its gy box past a_boxes and the x boxes past b_boxes, and all b_boxes x boxes of
k-step i tagged with its own n0; no landing in a stage a warp of its destination still reads),
(d), (e) as above; (g) every CTA the same live k-steps; (h) the cluster's CTAs share n0 (hence
b_boxes), tap and split, on CM different m tiles. The host side: launch_wgrad_tma's cm (asked where
tiles_m % asked == 0, else 2 where tiles_m is even, else 1) divides tiles_m, and the kernel's tile
decomposition gives every cluster one n0 and every tile once (control: the m-major decomposition
does not). Mutants (all caught, at CM = 2 and 4): empty count 8, no remote arrivals, every rank
issuing every x box, expect_tx counting only the x boxes a rank issues, no final cluster_sync_all,
an m-major blockIdx.x decomposition, __syncthreads instead of the first cluster_sync_all, expect_tx
counting two gy boxes always, ctaMask of the issuer only, the empty wait one phase off, the release
before wait_group<1>, remote arrivals at rank q instead of (rank + q) % CM; box j issued by rank j
only (CM = 2; at CM = 4 it is the protocol).

(SEEDS[CM] random schedules for each parameter set of the gather protocol: 192 sets at CM = 2, 256
at CM = 4; W_SEEDS[CM] for the wgrad protocol's 96 sets at each CM; ~27 s on one core.) Not run
through the model: tma_stage_probe_kernel's CM > 1 form (one stage, one phase:
fill, fence, cluster_sync_all, expect_tx + copies, wait parity 0, cluster_sync_all; the k-step-0
case of this one), nor CM = 1 (no cluster: __syncthreads where the cluster barriers are).

This checks a protocol against documented semantics, not the hardware: a GPU run of the CM = 2 and
CM = 4 forms of both kernels (tests/ops/test_conv.py with RNNKERN_CONV_TMA_CLUSTER=2 / 4 on an H100 /
H200) is what verifies them."""
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
     "return launch_gather_tma_tn<T, decltype(tn)::value, decltype(cm_c)::value>(plan, w, stream);", "f"),
    ("with_cluster_size: CM = 4", "if (cm == 4) return f(std::integral_constant<int, 4>{});", "f"),
    ("with_cluster_size: CM = 2", "if (cm == 2) return f(std::integral_constant<int, 2>{});", "f"),
    ("clusters of CM CTAs along x", "ClusterLaunch launch(grid, CM, smem, threads, stream);", "f"),
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
        who = f"CTA{r}'s {self.slot_desc(slot)} of k-step {self.tag_step(tag)} (stage {st})"
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

    @staticmethod
    def slot_desc(slot):
        return f"A box {slot}" if slot < PART_B else f"B part {slot - PART_B}"

    @staticmethod
    def tag_step(tag):
        return tag[1]

    def nsteps(self):
        return bin(self.cfg.union).count("1") * self.cfg.chunks

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

            yield from self.consumer_mainloop(r, a, who, ks, seq, remote_to, early)
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

    def consumer_mainloop(self, r, a, who, ks, seq, remote_to, early):
        """A consumer warp of CTA r over its ks k-steps (both protocols): wait full, read the stage
        until the next wgmma_wait completes it, then release it on its own empty barrier and on
        remote_to's (early: released before the wait, a mutant)."""
        S, where, readers = self.cfg.S, self.where[r], self.readers[r]

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

    # -- the scheduler -------------------------------------------------------------------------
    def run(self, mode, p_land):
        rng = self.rng
        CM = self.cfg.CM
        ks = self.nsteps()
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


# =============================================================================================
# wgrad_tma_kernel<T, TN, CM = 2 | 4> (16-bit channels_last): the grad_weight's clusters

W_BOX = 64 * ROW            # one box: 64 pixels x 64 channels (kTmaWgradPixels * 128 bytes)
W_X0 = 2                    # mem slot of x box j: W_X0 + j (gy boxes: 0, 1)


def wgrad_body(text):
    """wgrad_tma_kernel's text, from its __global__ declaration to its #else."""
    start = re.search(r"__global__[^;{]*\bwgrad_tma_kernel\(", text).start()
    return text[start:text.index("#else", start)]


def launch_wgrad_tma_body(text):
    """launch_wgrad_tma's text (its definition, up to the next `template <typename T>`)."""
    start = re.search(r"\bbool launch_wgrad_tma\(WgradParams p", text).start()
    return text[start:text.index("template <typename T>", start)]


# (what the model assumes, the code that says so, where: "w" wgrad_tma_kernel's body, "h"
# launch_wgrad_tma, "f" conv.cu); comments removed, whitespace collapsed
W_ANCHORS = [
    ("kStages 5 (TN 128) / 4 (TN 256)", "static constexpr int kStages = TN == 128 ? 5 : 4;", "f"),
    ("kStageBytes = (BM + TN) * 128", "static constexpr int kStageBytes = (BM + TN) * 128;", "f"),
    ("384 threads: 12 warps", "constexpr int kTmaThreads = 384;", "f"),
    ("k-steps of 64 pixels", "constexpr int kTmaWgradPixels = 64;", "f"),
    ("clusters: 16-bit channels_last, of 2 or 4",
     "static_assert(CM == 1 || (!kNchw && (CM == 2 || CM == 4)),", "w"),
    ("the ring and its boxes", "constexpr int kStages = TmaTile<TN>::kStages, kStageBytes = TmaTile<TN>::kStageBytes; "
     "constexpr int kBoxBytes = kTmaWgradPixels * 128;", "w"),
    ("a stage: gy's two boxes, then x's TN / 64", "static_assert(kStageBytes == 2 * kBoxBytes + TN / 64 * kBoxBytes,",
     "w"),
    ("tap and split from blockIdx.y (the same in a cluster along x)",
     "const int t = static_cast<int>(blockIdx.y) % taps, split = static_cast<int>(blockIdx.y) / taps;", "w"),
    ("tiles_m as the host's", "const int tiles_m = (p.Kg + BM - 1) / BM;", "w"),
    ("CM > 1: m tile = blockIdx.x % tiles_m",
     "const int m0 = (CM == 1 ? static_cast<int>(blockIdx.x) / p.tiles_n : static_cast<int>(blockIdx.x) % tiles_m) "
     "* BM;", "w"),
    ("CM > 1: n tile = blockIdx.x / tiles_m",
     "const int n0 = (CM == 1 ? static_cast<int>(blockIdx.x) % p.tiles_n : static_cast<int>(blockIdx.x) / tiles_m) "
     "* TN;", "w"),
    ("rank = %cluster_ctarank", "const uint32_t rank = CM > 1 ? cluster_ctarank() : 0;", "w"),
    ("the split's k range",
     "const long long k_begin = steps * split / p.splits, k_end = steps * (split + 1) / p.splits;", "w"),
    ("full[st]: count 1, empty[st]: count 8 * CM, fenced",
     "if (tid == 0) { for (int st = 0; st < kStages; ++st) { mbar_init(smem_u32(&full[st]), 1); "
     "mbar_init(smem_u32(&empty[st]), 8 * CM); } mbar_init_fence();", "w"),
    ("cluster_sync_all after the barrier init",
     "if constexpr (CM == 1) __syncthreads(); else cluster_sync_all();", "w"),
    ("warpgroups: wg 0 (warps 0-3) produces, 1 and 2 (warps 4-11) consume",
     "const int wg = tid / 128, warp = tid / 32 % 4, lane = tid % 32;", "w"),
    ("a_boxes: gy boxes starting below Kg (1 or 2)",
     "const int a_boxes = kNchw ? 2 : min(2, (p.Kg - m0 + 63) / 64);", "w"),
    ("b_boxes: x boxes starting below Cg", "const int b_boxes = kNchw ? TN / 64 : min(TN / 64, (p.Cg - n0 + 63) / 64);",
     "w"),
    ("expect_tx: own gy boxes + every x box", "const uint32_t stage_bytes = static_cast<uint32_t>((a_boxes + b_boxes) "
     "* kBoxBytes);", "w"),
    ("the producer: tid 0 of warpgroup 0, over the live k-steps, empty wait (acquire.cluster), then expect_tx",
     "if (wg == 0) { if (tid == 0) { int i = 0; for (long long k = k_begin; k < k_end; ++k) { if (dead(k)) continue; "
     "const int st = i % kStages; if (i >= kStages) mbar_wait<(CM > 1)>(smem_u32(&empty[st]), (i / kStages - 1) & 1); "
     "const uint32_t bar = smem_u32(&full[st]), a = ring + st * kStageBytes; mbar_arrive_expect_tx(bar, stage_bytes);",
     "w"),
    ("own gy boxes h < a_boxes at h * 8192",
     "for (int h = 0; h < a_boxes; ++h) tma_load_2d(a + h * kBoxBytes, &map_gy, bar, g * p.Kg + m0 + 64 * h, "
     "static_cast<int>(m));", "w"),
    ("x box j < b_boxes at (2 + j) * 8192", "for (int j = 0; j < b_boxes; ++j) { const uint32_t dst = a + (2 + j) * "
     "kBoxBytes;", "w"),
    ("x box j by rank j % CM, multicast to all CM CTAs",
     "if constexpr (CM == 1) tma_load_im2col_4d(dst, &map_x, bar, c, w, h, n, ow, oh); else if (j % CM == "
     "static_cast<int>(rank)) tma_load_im2col_4d_multicast(dst, &map_x, bar, c, w, h, n, ow, oh, "
     "static_cast<uint16_t>((1u << CM) - 1));", "w"),
    ("i counts the live k-steps; warpgroup 0 then leaves", "++i; } } __syncwarp(); } else {", "w"),
    ("consumer: the same live k-steps, full wait",
     "int i = 0; for (long long k = k_begin; k < k_end; ++k) { if (dead(k)) continue; const int st = i % kStages; "
     "mbar_wait(smem_u32(&full[st]), (i / kStages) & 1);", "w"),
    ("warpgroup cw reads gy box cw and every x box",
     "const uint32_t a = ring + st * kStageBytes + cw * kBoxBytes, b = ring + st * kStageBytes + 2 * kBoxBytes;", "w"),
    ("wgmma_wait<1>, release of step i - 1: own empty, then CTA (rank + q) % CM's",
     "wgmma_commit(); wgmma_wait<1>(); wgmma_pin(acc); if (i > 0 && lane == 0) { const uint32_t released = "
     "smem_u32(&empty[(i - 1) % kStages]); mbar_arrive(released); #pragma unroll for (uint32_t q = 1; q < CM; ++q) "
     "mbar_arrive_cluster(cluster_map(released, (rank + q) % CM)); } ++i; } wgmma_wait<0>();", "w"),
    ("the host: tiles_m, the cluster asked (16-bit)",
     "const int tiles_m = (p.Kg + BM - 1) / BM, asked = kNchw ? 1 : tma_cluster();", "h"),
    ("the host's cluster: asked where tiles_m % asked == 0, else 2 where even, else 1",
     "const int cm = tiles_m % asked == 0 ? asked : asked > 1 && tiles_m % 2 == 0 ? 2 : 1;", "h"),
    ("the host's tiles_n", "p.tiles_n = (p.Cg + tn - 1) / tn;", "h"),
    ("grid.x = tiles_m * tiles_n, grid.y = taps * splits",
     "const dim3 grid(static_cast<unsigned>(tiles_m * p.tiles_n), static_cast<unsigned>(taps * splits), "
     "static_cast<unsigned>(p.G));", "h"),
    ("launched in clusters of CM along x",
     "launch_in_clusters<CM>(kernel, grid, kTmaThreads, bytes, stream, p, map_gy, map_x);", "h"),
    ("the 16-bit form's CM is cm", "return with_cluster_size(cm, [&](auto cm_c) { return run(tn_c, cm_c); });", "h"),
    ("clusters of CM CTAs along x", "ClusterLaunch launch(grid, CM, smem, threads, stream);", "f"),
]


def _split_top(s, sep):
    """s split at `sep` outside (), [], {}."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


_IDENT = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_W_SOURCES = {"blockIdx.x", "threadIdx.x", "cluster_ctarank"}   # what differs between the CTAs / threads


def wgrad_uniform_steps(text):
    """Whether the k-steps (the loops' k_begin / k_end and the dead(k) lambda) depend only on what
    every thread of a cluster shares (no blockIdx.x, threadIdx.x, cluster_ctarank, nor anything
    computed from them): a taint pass over the kernel's declarations before its barrier init.
    Returns (problems, the names found to differ between CTAs / threads, the lambda's free names)."""
    body = _code(wgrad_body(text))
    problems = []
    lam = re.search(r"const auto dead = \[&\]\(long long k\) \{", body)
    init = body.find("if (tid == 0) { for (int st = 0;")
    if not lam or init < 0:
        return ["the dead(k) lambda or the barrier init not found"], set(), set()
    depth, i = 0, lam.end() - 1
    while True:
        if body[i] == "{":
            depth += 1
        elif body[i] == "}":
            depth -= 1
            if depth == 0:
                break
        i += 1
    lam_body = body[lam.end():i]
    prefix = body[:lam.start()]
    prefix = prefix[prefix.index("{") + 1:]       # after the signature
    tainted = set()
    for stmt in _split_top(prefix, ";"):
        stmt = re.sub(r"#\w+(?: [A-Z_0-9]+)?", " ", stmt).strip()     # (#if RNNKERN_HAS_WGMMA)
        if not stmt or stmt.startswith("static_assert") or stmt.startswith("__shared__") or stmt.startswith("extern"):
            continue
        m = re.match(r"(\w+)\((.*)\)$", stmt)
        if m and "=" not in stmt:                  # a call: its &outputs depend on its other arguments
            args = _split_top(m.group(2), ",")
            outs = [a.strip()[1:] for a in args if a.strip().startswith("&")]
            deps = set(_IDENT.findall(" ".join(a for a in args if not a.strip().startswith("&"))))
            if deps & (tainted | _W_SOURCES):
                tainted.update(outs)
            continue
        for part in _split_top(stmt, ","):
            m = re.search(r"(\w+)\s*=(?!=)(.*)$", part, re.S)
            if not m:
                continue
            deps = set(_IDENT.findall(m.group(2)))
            if any(d in _W_SOURCES or d.split(".")[0] in tainted for d in deps) or \
                    any(src in m.group(2) for src in _W_SOURCES):
                tainted.add(m.group(1))
    for need in ("m0", "n0", "rank", "tid"):
        if need not in tainted:
            problems.append(f"the taint pass missed {need} (it should differ between CTAs / threads)")
    lam_free = {d.split(".")[0] for d in _IDENT.findall(lam_body)} - {"k", "if", "constexpr", "return", "true",
                                                                        "false", "else", "const"}
    bad = sorted((lam_free | {"k_begin", "k_end"}) & tainted)
    if bad:
        problems.append(f"the k-steps depend on {bad}, which differ between the CTAs of a cluster / its threads")
    rest = body[i:]
    if "return" in rest or "return" in prefix:
        problems.append("a return outside the dead(k) lambda (a thread could skip the final cluster_sync_all)")
    if body.count("__syncthreads") != 1:
        problems.append("a __syncthreads besides the CM == 1 one after the barrier init")
    # the epilogue: from wgmma_wait<0> on, no shared memory (the accumulators straight to global)
    epi = body[body.rindex("wgmma_wait<0>();"):]
    for word in ("ring", "tma_smem_raw", "smem_u32", "full[", "empty[", "__syncthreads", "mbar_"):
        if word in epi:
            problems.append(f"the epilogue touches {word!r} (the model has it write global memory only)")
    if not re.search(r"if constexpr \(CM > 1\) cluster_sync_all\(\); ?$", body):
        problems.append("the final cluster_sync_all is not the kernel's last statement")
    return problems, tainted, lam_free


def check_w_anchors(text):
    body = _code(wgrad_body(text))
    host = _code(launch_wgrad_tma_body(text))
    t = _code(text)
    src = {"w": body, "h": host, "f": t}
    return [what for what, code, where in W_ANCHORS if _norm(code) not in src[where]]


def wgrad_tile(x, tiles_m, tiles_n, CM, m_major=False):
    """wgrad_tma_kernel's (m tile, n tile) of blockIdx.x: CM == 1 (or the m-major mutant) x / tiles_n,
    x % tiles_n; CM > 1 x % tiles_m, x / tiles_m."""
    if CM == 1 or m_major:
        return x // tiles_n, x % tiles_n
    return x % tiles_m, x // tiles_m


def host_cluster(tiles_m, asked):
    """launch_wgrad_tma's cm."""
    return asked if tiles_m % asked == 0 else 2 if asked > 1 and tiles_m % 2 == 0 else 1


def wgrad_host_check(rng):
    """launch_wgrad_tma's cluster choice and the kernel's tile of each block: for tiles_m 1 ... 40,
    tiles_n 1 ... 5, RNNKERN_CONV_TMA_CLUSTER 1 / 2 / 4 and random Kg / Cg / TN: cm divides tiles_m
    (so grid.x = tiles_m * tiles_n is whole clusters), cm = asked where tiles_m % asked == 0, else 2
    where tiles_m is even, else 1; every cluster (blocks cm j ... cm j + cm - 1, rank = blockIdx.x %
    cm) has one n tile (n0), hence one b_boxes, and cm different m tiles; every (m, n) tile once.
    Returns (the first violation or None, the control: the m-major decomposition puts some cluster
    across two n tiles)."""
    control = False
    for tiles_m in range(1, 41):
        for tiles_n in range(1, 6):
            for asked in (1, 2, 4):
                cm = host_cluster(tiles_m, asked)
                if tiles_m % cm or cm > asked or (tiles_m % asked == 0 and cm != asked) or \
                        (asked == 4 and tiles_m % 4 and tiles_m % 2 == 0 and cm != 2):
                    return f"tiles_m {tiles_m}, asked {asked}: cm {cm}", control
                TN = rng.choice((128, 256))
                Kg = (tiles_m - 1) * BM + rng.randint(1, BM)
                Cg = (tiles_n - 1) * TN + 2 * rng.randint(1, TN // 2)
                blocks = tiles_m * tiles_n
                if blocks % cm:
                    return f"grid.x {blocks} not whole clusters of {cm}", control
                seen = set()
                for j in range(0, blocks, cm):
                    tiles = [wgrad_tile(x, tiles_m, tiles_n, cm) for x in range(j, j + cm)]
                    if len({n for _, n in tiles}) != 1:
                        return f"tiles_m {tiles_m}, tiles_n {tiles_n}, cm {cm}: cluster {j} spans n tiles " \
                               f"{sorted({n for _, n in tiles})}", control
                    if len({m for m, _ in tiles}) != cm:
                        return f"tiles_m {tiles_m}, tiles_n {tiles_n}, cm {cm}: cluster {j} repeats an m tile", control
                    bb = {min(TN // 64, (Cg - n * TN + 63) // 64) for _, n in tiles}
                    ab = [min(2, (Kg - m * BM + 63) // 64) for m, _ in tiles]
                    if len(bb) != 1 or min(bb) < 1 or min(ab) < 1:
                        return f"cluster {j}: b_boxes {bb}, a_boxes {ab}", control
                    seen.update(tiles)
                    if cm > 1 and len({n for _, n in (wgrad_tile(x, tiles_m, tiles_n, cm, True)
                                                      for x in range(j, j + cm))}) > 1:
                        control = True
                if seen != {(m, n) for m in range(tiles_m) for n in range(tiles_n)}:
                    return f"tiles_m {tiles_m}, tiles_n {tiles_n}, cm {cm}: not every tile once", control
    return None, control


# name: (what the mutant changes, the cluster sizes it is run at)
W_MUTANTS = {
    "w_empty_count_8": ("empty[s] initialised with 8 arrivals (one CTA's consumer warps)", CMS),
    "w_no_remote_arrive": ("consumer warps arrive on their own CTA's empty barrier only", CMS),
    "w_x_every_rank": ("every rank issues every x box (j % CM == rank ignored: CM complete-tx a box)", CMS),
    "w_expect_own_x_only": ("expect_tx counts only the x boxes this rank issues", CMS),
    "w_no_final_cluster_sync": ("no cluster_sync_all at the end of the kernel", CMS),
    "w_m_major": ("blockIdx.x decomposed m-major (the CM == 1 form: m = x / tiles_n, n = x % tiles_n)", CMS),
    "w_init_syncthreads": ("__syncthreads after the barrier init instead of cluster_sync_all", CMS),
    "w_expect_two_gy": ("expect_tx counts two gy boxes always (not a_boxes)", CMS),
    "w_multicast_self_only": ("the x boxes' ctaMask holds only the issuing CTA", CMS),
    "w_empty_wait_parity_off": ("the producer's empty wait with parity (i / S) & 1", CMS),
    "w_release_before_wgmma_wait": ("a consumer releases step i right after issuing its wgmma", CMS),
    "w_x_rank_j": ("x box j issued by rank j only (none past CM - 1: j == rank, not j % CM == rank)", (2,)),
    "w_arrive_map_q": ("the remote arrivals on cluster_map(released, q) instead of (rank + q) % CM", CMS),
}


class WConfig:
    __slots__ = ("CM", "TN", "S", "nx", "Kg", "Cg", "tiles_m", "tiles_n", "x0", "by", "taps", "splits", "steps",
                 "live", "m0", "n0", "a_boxes", "b_boxes", "tsplit", "seqs", "ks", "name")


def make_wconfig(rng, CM, TN, ksteps, bb, a_last, mut=()):
    """A cluster of CM CTAs (blocks x0 ... x0 + CM - 1 of a grid of tiles_m x tiles_n, tiles_m a
    multiple of CM as the host guarantees) whose n tile has bb x boxes (the last n tile where bb <
    TN / 64) and, where it holds the last m tile (mostly), a last tile of a_last gy boxes; a tap and
    split (blockIdx.y) whose k range holds `ksteps` live k-steps among dead ones."""
    c = WConfig()
    c.CM, c.TN, c.S, c.nx = CM, TN, STAGES[TN], TN // 64
    c.tiles_m = CM * rng.choice((1, 1, 2))
    c.Kg = (c.tiles_m - 1) * BM + (rng.randint(1, 64) if a_last == 1 else rng.randint(65, BM))
    c.tiles_n = rng.choice((1, 2, 2, 3))
    nt = c.tiles_n - 1 if bb < c.nx or rng.random() < 0.5 else rng.randrange(c.tiles_n)
    if nt == c.tiles_n - 1:
        rem = 2 * rng.randint((bb - 1) * 32 + 1, bb * 32)
    else:
        rem = 2 * rng.randint(1, TN // 2)
    c.Cg = (c.tiles_n - 1) * TN + rem
    groups = c.tiles_m // CM
    mg = groups - 1 if rng.random() < 0.7 else rng.randrange(groups)
    c.x0 = nt * c.tiles_m + mg * CM
    c.taps, c.splits = rng.choice((1, 9)), rng.choice((1, 2, 3))
    t, split = rng.randrange(c.taps), rng.randrange(c.splits)
    c.by = t + split * c.taps
    c.steps = c.splits * (ksteps + rng.randint(0, 6)) + rng.randrange(c.splits)
    # dead(k): a function of (tap, k) (wgrad_uniform_steps: nothing else); the chosen tap's live
    # steps in the split's range: `ksteps` of them
    kb, ke = c.steps * split // c.splits, c.steps * (split + 1) // c.splits
    c.live = {}
    for tt in range(c.taps):
        c.live[tt] = {k for k in range(c.steps) if rng.random() < 0.5}
    c.live[t] = (c.live[t] - set(range(kb, ke))) | set(rng.sample(range(kb, ke), ksteps))
    m_major = "w_m_major" in mut
    c.m0, c.n0, c.a_boxes, c.b_boxes, c.tsplit, c.seqs = [], [], [], [], [], []
    for r in range(CM):
        mt, ntile = wgrad_tile(c.x0 + r, c.tiles_m, c.tiles_n, CM, m_major)
        m0, n0 = mt * BM, ntile * TN
        c.m0.append(m0)
        c.n0.append(n0)
        c.a_boxes.append(min(2, (c.Kg - m0 + 63) // 64))
        c.b_boxes.append(min(c.nx, (c.Cg - n0 + 63) // 64))
        tr, sp = c.by % c.taps, c.by // c.taps                   # (every CTA of the cluster: the same blockIdx.y)
        c.tsplit.append((tr, sp))
        kb, ke = c.steps * sp // c.splits, c.steps * (sp + 1) // c.splits
        c.seqs.append([k for k in range(kb, ke) if k in c.live[tr]])
    c.ks = len(c.seqs[0])
    c.name = (f"CM {CM}, TN {TN} (S {c.S}), ksteps {c.ks} (of {ke - kb} in split {split} of {c.splits}), "
              f"Kg {c.Kg} (tiles_m {c.tiles_m}), Cg {c.Cg} (tiles_n {c.tiles_n}), blocks {c.x0}-{c.x0 + CM - 1}: "
              f"m0 {c.m0}, n0 {c.n0}, gy boxes {c.a_boxes}, x boxes {c.b_boxes}")
    return c


class WSim(Sim):
    """wgrad_tma_kernel's protocol on a cluster of CM CTAs (the model of Sim: mbarriers, copies,
    cluster barriers, the scheduler)."""

    def __init__(self, cfg, mut, rng, stats):
        self.cfg, self.mut, self.rng, self.stats = cfg, mut, rng, stats
        self.ck = Checks()
        S, CM = cfg.S, cfg.CM
        ecount = 8 if "w_empty_count_8" in mut else 8 * CM
        self.full = [[MBar(f"CTA{r}.full[{s}]", 1, self.ck, stats) for s in range(S)] for r in range(CM)]
        self.empty = [[MBar(f"CTA{r}.empty[{s}]", ecount, self.ck, stats) for s in range(S)] for r in range(CM)]
        self.inited = [False] * CM
        self.mem = [[[None] * (W_X0 + cfg.nx) for _ in range(S)] for _ in range(CM)]
        self.readers = [[{} for _ in range(S)] for _ in range(CM)]
        self.inflight = []
        self.issuer_pending = [0] * CM
        self.dst_pending = [0] * CM
        self.epi = [False] * CM            # (no epilogue in shared memory: never set)
        self.exited = [False] * CM
        self.cbar = [0, 0, CM * NAGENTS]
        self.tbar = [[0, 0, NAGENTS] for _ in range(CM)]
        self.finished = [0] * CM
        self.in_mainloop = [0] * CM
        self.at_final = [0] * CM
        self.where = [[""] * NAGENTS for _ in range(CM)]

    @staticmethod
    def slot_desc(slot):
        return f"gy box {slot}" if slot < W_X0 else f"x box {slot - W_X0}"

    @staticmethod
    def tag_step(tag):
        return f"k {tag[3]}"

    def nsteps(self):
        return self.cfg.ks

    def check_stage(self, r, a, st, i, k, when):
        c = self.cfg
        mem = self.mem[r][st]
        cw = (a - CONSUMER0) // 4
        exp = [(cw, ("gy", c.m0[r], cw, k) if cw < c.a_boxes[r] else None)]
        exp += [(W_X0 + j, ("x", c.n0[r], j, k) if j < c.b_boxes[r] else None) for j in range(c.nx)]
        for slot, tag in exp:
            if mem[slot] != tag:
                self.ck.err("b", f"CTA{r}.warp{a} {when} k-step {i} (k {k}) in stage {st}: {self.slot_desc(slot)} "
                                 f"holds {mem[slot]}, expected {tag} (tags: operand, m0 / n0, box, k)")
                return

    def agent(self, r, a):
        c, mut, ck = self.cfg, self.mut, self.ck
        S, CM = c.S, c.CM
        who = f"CTA{r}.warp{a}" if a else f"CTA{r}.producer"
        where = self.where[r]
        others = [(r + q) % CM for q in range(1, CM)]
        if a == 0:
            self.inited[r] = True      # tid 0: mbar_init of full / empty, fence.mbarrier_init.release.cluster
            yield None
        if "w_init_syncthreads" in mut:
            where[a] = "__syncthreads (after the init)"
            yield from self.bar_sync(self.tbar[r])
        else:
            where[a] = "cluster_sync_all #1 (after the init)"
            yield from self.bar_sync(self.cbar)
        seq = c.seqs[r]                # k in [k_begin, k_end) of its split, not dead(k)
        if seq != c.seqs[0]:
            ck.err("g", f"{who}: its live k-steps {seq[:6]} ... differ from rank 0's {c.seqs[0][:6]} ...")
        ks = len(seq)
        if a == 0:                     # producer, tid 0
            if "w_expect_own_x_only" in mut:
                nxb = sum(1 for j in range(c.b_boxes[r]) if j % CM == r)
            else:
                nxb = c.b_boxes[r]
            nbytes = ((2 if "w_expect_two_gy" in mut else c.a_boxes[r]) + nxb) * W_BOX   # stage_bytes
            dsts = [r] if "w_multicast_self_only" in mut else list(range(CM))
            poff = 0 if "w_empty_wait_parity_off" in mut else 1
            for i, k in enumerate(seq):
                st = i % S
                if i >= S:
                    eb, par = self.empty[r][st], (i // S - poff) & 1
                    where[a] = f"wait {eb.name} parity {par} (k-step {i})"
                    yield lambda eb=eb, par=par: (eb.phase & 1) != par
                    if any(self.empty[d][st].phase < i // S for d in others):
                        self.stats["ring_skew"] += 1
                self.full[r][st].expect_tx(nbytes, i // S, who)
                yield None
                for h in range(c.a_boxes[r]):
                    self.issue(r, [r], st, h, ("gy", c.m0[r], h, k), W_BOX, i // S)
                    yield None
                for j in range(c.b_boxes[r]):
                    mine = j == r if "w_x_rank_j" in mut else True if "w_x_every_rank" in mut else j % CM == r
                    if mine:
                        self.issue(r, dsts, st, W_X0 + j, ("x", c.n0[r], j, k), W_BOX, i // S)
                        yield None
        elif a >= CONSUMER0:
            self.in_mainloop[r] += 1
            early = "w_release_before_wgmma_wait" in mut
            readers = self.readers[r]
            if "w_no_remote_arrive" in mut:
                remote_to = []
            elif "w_arrive_map_q" in mut:
                remote_to = list(range(1, CM))
            else:
                remote_to = others

            yield from self.consumer_mainloop(r, a, who, ks, seq, remote_to, early)
            self.in_mainloop[r] -= 1
            yield None                        # the epilogue: the accumulators to global memory
        if ck.stop:
            return
        self.at_final[r] += 1
        if self.at_final[r] == NAGENTS and any(self.in_mainloop[d] for d in others):
            self.stats["final_barrier_held"] += 1
        if "w_no_final_cluster_sync" not in mut:
            where[a] = "cluster_sync_all #2 (final)"
            yield from self.bar_sync(self.cbar)
        self.finish(r)


def wgrad_cluster_check(cfg):
    """(h): the CTAs of the cluster share n0 (so b_boxes and the x boxes), the tap and split
    (blockIdx.y), and hold CM different m tiles."""
    if len(set(cfg.n0)) != 1 or len(set(cfg.b_boxes)) != 1:
        return f"the cluster's CTAs have n0 {cfg.n0} (x boxes {cfg.b_boxes}): they would multicast different x boxes"
    if len(set(cfg.m0)) != cfg.CM:
        return f"the cluster's CTAs repeat an m tile: m0 {cfg.m0}"
    if len(set(cfg.tsplit)) != 1:
        return f"the cluster's CTAs have (tap, split) {cfg.tsplit}"
    return None


def w_config_space(rng, CM):
    """TN 128 / 256 x ksteps x x boxes 1 ... TN / 64 x the last m tile's gy boxes 1 / 2."""
    out = []
    for TN in (128, 256):
        S = STAGES[TN]
        for ksteps in (0, 1, 2, S - 1, S, S + 1, 3 * S + 2, "rand"):
            for bb in range(1, TN // 64 + 1):
                for a_last in (1, 2):
                    k = rng.randint(3, 30) if ksteps == "rand" else ksteps
                    out.append((CM, TN, k, bb, a_last))
    return out


W_SEEDS = {2: 5, 4: 3}


def w_run_one(seed, params, mut=(), stats=None):
    rng = random.Random(seed)
    cfg = make_wconfig(rng, *params, mut=mut)
    stats = stats if stats is not None else new_stats()
    mode, p_land = rng.choice(MODES), rng.choice(P_LAND)
    sched = f"seed {seed}, schedule {mode}, p_land {p_land}"
    bad = wgrad_cluster_check(cfg)
    if bad:
        return cfg, [("h", bad)], sched
    sim = WSim(cfg, frozenset(mut), rng, stats)
    return cfg, sim.run(mode, p_land), sched


def wgrad_main(fail, text):
    """The wgrad protocol's checks (anchors, the k-steps' uniformity, the host's clusters, the
    model runs, the mutants); failures through fail()."""
    print("wgrad_tma_kernel<T 16-bit, TN, CM = 2 | 4>: cluster protocol (multicast x boxes, mbarriers, cluster "
          "barriers) model check")
    missing = check_w_anchors(text)
    if missing:
        fail(f"(wgrad) conv.cu no longer reads as the modelled protocol; missing: {'; '.join(missing)}")
    else:
        print(f"ok: conv.cu still has the {len(W_ANCHORS)} wgrad protocol lines this model replays")
    problems, tainted, lam_free = wgrad_uniform_steps(text)
    if problems:
        fail("(wgrad) " + "; ".join(problems))
    else:
        print(f"ok: the k-steps are the cluster's (k_begin / k_end and dead(k), free names {sorted(lam_free)}, "
              f"depend on none of {sorted(tainted)}: blockIdx.x / threadIdx.x / %cluster_ctarank and what is "
              f"computed from them); no return, no __syncthreads but CM == 1's, an epilogue without shared "
              f"memory, the final cluster_sync_all last")
    # the pass must tell these edits of the kernel apart (each a real hazard)
    src_mutants = {
        "k_begin from blockIdx.x": ("const long long k_begin = steps * split / p.splits,",
                                    "const long long k_begin = steps * split / p.splits + blockIdx.x % 2,"),
        "dead(k) reading m0": ("if (oh0 >= oh1 || ow0 >= ow1) return true;",
                               "if (oh0 >= oh1 || ow0 >= ow1 || m0 > p.Kg) return true;"),
        "a tap from the rank": ("const int r = t / p.KW, s = t - r * p.KW;",
                                "const int r = (t + rank) % p.KH, s = t - r * p.KW;"),
        "an early return": ("const int wg = tid / 128,", "if (m0 >= p.Kg) return; const int wg = tid / 128,"),
        "a __syncthreads in the epilogue": ("wgmma_wait<0>();", "wgmma_wait<0>(); __syncthreads();"),
        "no final cluster_sync_all": ("if constexpr (CM > 1) cluster_sync_all();  // the other CTAs' copies",
                                      "// the other CTAs' copies"),
    }
    body_w = wgrad_body(text)
    uncaught = []
    for name, (a, b) in src_mutants.items():
        if a not in body_w:
            uncaught.append(f"{name} (its line is gone)")
            continue
        mutated = text.replace(body_w, body_w.replace(a, b, 1))
        if not wgrad_uniform_steps(mutated)[0]:
            uncaught.append(name)
    if uncaught:
        fail(f"(wgrad) the source pass misses: {'; '.join(uncaught)}")
    else:
        print(f"ok: the source pass flags each of {len(src_mutants)} edits of the kernel ("
              f"{', '.join(src_mutants)})")
    bad, control = wgrad_host_check(random.Random(5))
    if bad or not control:
        fail(f"(wgrad) host clusters: {bad or 'the m-major control was not told apart'}")
    else:
        print("ok: launch_wgrad_tma's cm (RNNKERN_CONV_TMA_CLUSTER 1 / 2 / 4, tiles_m 1-40, tiles_n 1-5) divides "
              "tiles_m (4 -> 2 -> 1), and the kernel's CM > 1 tile (x % tiles_m, x / tiles_m) gives every cluster "
              "one n0 (one b_boxes) and CM different m tiles, every tile once (control: m-major splits clusters "
              "across n tiles)")
    labels = {
        "a": "no deadlock or hang: every warp of every CTA finishes",
        "b": "every wgmma read of k-step i sees its CTA's own gy boxes and all b_boxes x boxes of k-step i (the "
             "never-written marker for a box not loaded); no copy lands in a stage a warp of its destination "
             "still reads",
        "d": "no remote arrive / multicast landing on an exited or uninitialised CTA; no CTA exits with copies "
             "in flight",
        "e": "mbarrier invariants: arrivals within the count, every arrive / complete-tx in the phase meant for "
             "it, tx-count in range and not negative once the arrivals are in",
        "g": "every CTA runs the same live k-steps",
        "h": "the cluster's CTAs share n0 (one b_boxes), tap and split, on CM different m tiles",
    }
    spaces = {}
    seed = 500000
    for CM in CMS:
        rng = random.Random(4321 + CM)
        space = spaces[CM] = w_config_space(rng, CM)
        stats = new_stats()
        per_kind = {}
        runs = 0
        ks_seen, ab_seen, bb_seen = set(), set(), set()
        for params in space:
            for _ in range(W_SEEDS[CM]):
                seed += 1
                cfg, found, sched = w_run_one(seed, params, (), stats)
                runs += 1
                ks_seen.add(cfg.ks)
                if cfg.ks and cfg.b_boxes[0] < CM and not found:
                    stats["silent_ranks"] = stats.get("silent_ranks", 0) + 1
                ab_seen.add(tuple(cfg.a_boxes))
                bb_seen.add(cfg.b_boxes[0])
                if not found:
                    stats["ksteps0_done"] += cfg.ks == 0
                for kind, msg in found:
                    if kind not in per_kind:
                        fail(f"(wgrad protocol, CM {CM}) ({kind}) {cfg.name}; {sched}: {msg}")
                    per_kind[kind] = per_kind.get(kind, 0) + 1
        for k in "abdegh":
            if k in per_kind:
                print(f"FAILED ({k}) wgrad CM {CM}: in {per_kind[k]} of {runs} runs: {labels[k]}")
            else:
                print(f"ok ({k}) wgrad CM {CM}, {runs} runs: {labels[k]}")
        print(f"   wgrad CM {CM}: {len(space)} parameter sets x {W_SEEDS[CM]} schedules: TN 128 (S 5) / 256 (S 4); "
              f"ksteps {sorted(ks_seen)}; x boxes {sorted(bb_seen)} (rank j % {CM} issues box j); gy boxes a CTA "
              f"{sorted(ab_seen)} by rank (the last m tile's 1 beside 2s); {len(MODES)} schedule biases x "
              f"{len(P_LAND)} landing rates")
        print(f"   wgrad CM {CM} coverage: {stats['neg_tx']} complete-tx ran ahead of their phase's expect_tx; "
              f"{stats['final_barrier_held']} times a CTA reached the final cluster barrier while another CTA's "
              f"consumers were still in the mainloop; {stats['ring_skew']} times a producer re-armed a stage while "
              f"another CTA's empty barrier had not yet seen every release of its previous k-step; "
              f"{stats['ksteps0_done']} runs with ksteps = 0 and {stats.get('silent_ranks', 0)} with ranks that "
              f"issue no x box (b_boxes < {CM}) ended cleanly")

    caught_n, missed = catch_mutants(W_MUTANTS, spaces, lambda seed, params, name: w_run_one(seed, params, (name,))[1],
                                     700000, random.Random(98), fail, "wgrad ")
    if not missed:
        pairs = sum(len(c) for _, c in W_MUTANTS.values())
        print(f"ok: all {caught_n} wgrad mutant runs caught ({len(W_MUTANTS)} mutants; {pairs} mutant x CM pairs: "
              f"CM 2 and 4, w_x_rank_j at CM 2 only (at CM 4 box j < TN / 64 <= 4 is rank j's: the protocol))")


# ---------------------------------------------------------------------------------------------

def catch_mutants(mutants, spaces, run, seed0, rng, fail, label=""):
    """Each mutant at each of its cluster sizes, on the parameter sets in a random order (cycled),
    until a check catches it, 300 runs at most. run(seed, params, name) -> the findings [(check,
    message)] that count. Returns (the mutant x CM pairs caught, those missed)."""
    missed, caught_n = [], 0
    for name, (what, cms) in mutants.items():
        for CM in cms:
            order = list(spaces[CM])
            rng.shuffle(order)
            found, tries = [], 0
            while not found and tries < 300:
                params = order[tries % len(order)]
                tries += 1
                found = run(seed0 + 1000 * CM + tries, params, name)
            if found:
                caught_n += 1
                kind, msg = found[0]
                print(f"   mutant {name}, CM {CM}: caught ({kind}) after {tries} run(s): {msg[:200]}")
            else:
                missed.append(f"{name} (CM {CM})")
                fail(f"{label}mutant {name} at CM {CM} ({what}) not caught in {tries} runs")
    return caught_n, missed


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
    # (with the idle CTAs' s_out writes as fixed in conv.cu, so that (f) cannot stand in for a mutant's catch)
    caught_n, missed = catch_mutants(
        MUTANTS, spaces, lambda seed, params, name: [(k, m) for k, m in run_one(seed, params, (name,), True)[1] if k != "f"],
        100000, random.Random(99), fail)
    if not missed:
        pairs = sum(len(c) for _, c in MUTANTS.values())
        print(f"ok: all {caught_n} mutant runs caught ({len(MUTANTS)} mutants; {pairs} mutant x CM pairs: CM 2 and 4, "
              f"four at CM 4 only)")

    wgrad_main(fail, text)

    dt = time.time() - t0
    if failures:
        print(f"{len(failures)} failure(s) ({dt:.1f} s)")
        sys.exit(1)
    print(f"all checks ok ({dt:.1f} s)")


if __name__ == "__main__":
    main()
