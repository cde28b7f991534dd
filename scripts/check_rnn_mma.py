"""Replays, in numpy, the MMA phase of csrc/cuda/rnn.cu's tensor-core RNN kernel
(rnn_persistent_mma_kernel) for one CTA of one step: the w_s fill, the h_s staging, and
mma_partial_sums / mma_tile_block (8 warps of 32 lanes, its software-pipelined k-loop, its 8-byte
shared loads and float2 stores), with the fragment semantics of mma.sync (PTX ISA, "Matrix
Fragments for mma.m16n8k8" .tf32 and "Matrix Fragments for mma.m16n8k16" .bf16 / .f16: groupID
g = lane >> 2, threadID_in_group t = lane % 4; A a0 (g, k t | 2t..2t+1), a1 (g + 8, same k), a2
(g, k t + 4 | 2t + 8..2t + 9), a3 (g + 8, same k); B b0 (k t | 2t..2t+1, n g), b1 (k t + 4 |
2t + 8..2t + 9, n g); C c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1); a 16-bit
register holds two consecutive-k elements, the lower k in the low half).

Shared memory is modelled as 32-bit words (a 16-bit word: two element slots, low half = the lower
element address); unwritten words hold NaN. Each register is decoded back to (row, k) elements
through the PTX layout, the m16 x k and k x n8 operands are rebuilt from the 32 lanes' registers,
multiplied, and scattered back to the lanes' accumulators; the stores then place them in part_s.
Checks, for every case (one CTA: a cluster q, a rank, from mma_partition's shapes, fp32 as tf32
and 16-bit, B 1-256, live <= B):
 (1) part[b, n] (b < m16, n < units) == h[b, k0 : k0 + kslice] . W[u0 + n, k0 : k0 + kslice] (fp64,
     integer values: exact), h's rows >= live and columns >= H zero, W's rows / columns >= H zero;
     and, on some cases, the reduce's sum over the 8 ranks (parts[c][b * ldu + n]) == h @ W.T;
 (2) every part element (b < m16, n < units) written exactly once over the 8 warps x 32 lanes,
     nothing at rows >= m16, columns >= units or outside the round_up16(B) x ldu buffer; float2
     stores 8-byte aligned;
 (3) every 8-byte load 8-byte aligned, inside w_s / the staged rows (< m16) of h_s, and inside its
     row's first kslice positions (never the padding);
 (4) each 8-byte shared load is conflict-free: lanes 0-15 and lanes 16-31 each touch 32 different
     banks (word % 32); the float2 stores' conflicts are reported, not failed;
 (5) mma_k_position maps [0, kslice) one to one onto a row's first kslice positions, ldk_words % 32
     == 8, ldk_words >= the slice's words, k_steps * 8 words == the slice (nothing truncated), and the
     partial-sum buffers' offsets keep float2 alignment and fit mma_partition's smem;
 (6) the w_s fill and the h_s staging (each thread's (b, c) walk as the kernel steps it) write each
     (row, c < kslice) once, at row * ldk + mma_k_position(c), with W's / h's value, and nothing
     else; mma_k_position is the order the loads expect (derived from the a / b register
     assignment and the PTX layout, not from the formula);
 (7) each tile block multiplies k-steps 0 ... k_steps - 1 once each, in increasing order (even and
     odd k_steps, through the pipelined loop as written);
 (8) one cluster (most == 1: u0 = 0; every one-cluster H of the cases and more, H 1-512, several B,
     forward (live shrinks) and backward (live grows, from 0 too), with and without h_-1), over 4
     steps of the 8 ranks: h_s zeroed once, staged from global memory at step 0 only (staged_rows),
     then each step's reduce (write_output over the early and the other outputs, as the threads
     walk them) writes y into the h_s of rank u / kslice at b * ldk + mma_k_position(u % kslice):
     (8a) every (b < B, u < H) written once a step, into the rank whose k-slice holds u, never at a
     row >= B or a padding position; (8b) the written h_s == the staging of h_t from global memory
     (as stored) on rows < live(next), positions of c < kslice; (8c) rows [B, round_up16(B)),
     columns >= H and the padding stay zero; (8d) the next step's partial sums (summed over the
     ranks) from the written h_s == from a freshly staged one on rows < live(next) (rows past it may
     differ: forward, a finished sequence's last output stays where staging wrote a zero; only
     partial sums no output reads see it; the count is reported), read as mma_partial_sums reads
     h_s ((1), (3), (6)) and, on a few runs, replayed on the PTX fragments from both h_s. Values are
     small integers there, exact in every format: the conversions (static_cast<scalar_t>, then
     mma_operand, the same on both paths and anchored) are not modelled.
(4)'s store conflicts are reported: part_s's row stride ldu = units + 4 (4 or 20 mod 32) gives the
float2 stores 2-way conflicts. Also reported: storing both operands in the plain order 0 1 2 ... 7
gives the same product (a k-permutation shared by A and B), so only (6) catches that mutant.
Then mutants of the replay (a wrong in-group order, a[1] / a[2] swapped, ldk without its pad, ...;
for (8): y written into rank u / own, or at u % kslice without mma_k_position, or h_s not zeroed)
that the checks must catch, and edits of rnn.cu that the anchors must catch (a comment-only edit
must not be). The anchors (ANCHORS) tie the replay to rnn.cu and tensor_core.cuh: each formula the
replay reproduces must still be in the source (// and /* */ comments and all whitespace removed);
a missing one is a MISMATCH that names it.

    python scripts/check_rnn_mma.py

This checks the index arithmetic against the documented PTX layouts, not the hardware: the CUDA
tests in tests/ops/test_rnn.py on an sm_90 GPU are what verify the kernel.

scripts/check_rnn_on_chip.py loads this file (main() runs only as a script) for what the two replays
share: LAYOUT_ANCHORS / PTX_ANCHORS, pipelined_loop_anchor, mma_ldk / mma_k_position,
the PTX tables and fragment_product, pipelined_k_loop, store_c, and the report's scaffolding
(begin, anchor_report, tally, check_lines, mutant_report, finish)."""
import os
import re
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNN_CU = os.path.join(ROOT, "csrc", "cuda", "rnn.cu")
TC_CUH = os.path.join(ROOT, "csrc", "cuda", "tensor_core.cuh")

NTHREADS = 256           # kPersistThreads (blockDim.x)
NWARPS = NTHREADS // 32  # nwarps = blockDim.x / 32, also mma_tile_block's n_stride
WARP_M, WARP_N = 4, 2    # kMmaWarpM, kMmaWarpN
CLUSTER = 8              # kMmaClusterCtas
KSTAGE = 16              # the staging loop's kStage
OPTIN = 227 * 1024       # sharedMemPerBlockOptin of an H100 / H200
ONE_CLUSTER_MAX_H = 256  # kMmaOneClusterMaxH
REPORT_ONLY = {"4s"}     # store bank conflicts: reported, not failed


# ---------------------------------------------------------------------------------------------
# anchors: the source lines the replay reproduces

def _code(s):
    """s without its comments and without any whitespace (the anchors are code, not layout)."""
    s = re.sub(r"/\*.*?\*/", " ", s, flags=re.S)
    s = re.sub(r"//[^\n]*", " ", s)
    return re.sub(r"\s+", "", s)


def _body(text, head):
    """The text of the function whose definition starts with `head`, to its matching brace."""
    start = text.find(head)
    if start < 0:
        return ""
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[start:j + 1]
    return text[start:]


def missing_anchors(anchors, scopes):
    """The names of the anchors [(what, code, where)] whose code, comments and whitespace removed, is
    not in scopes[where] (a text already through _code)."""
    return [what for what, code, where in anchors if _code(code) not in scopes[where]]


def pipelined_loop_anchor(steps):
    """The anchor code of a kernel's call of rnn.cu's pipelined_k_steps (its loop: LAYOUT_ANCHORS;
    replayed by pipelined_k_loop) over `steps` k-steps."""
    return f"pipelined_k_steps({steps}, load, multiply);"


# anchors shared with scripts/check_rnn_on_chip.py (where "f" rnn.cu, "tc" tensor_core.cuh): the
# k-permutation and row pad of rnn.cu's helpers, and mma_tile's PTX instructions and register order
LAYOUT_ANCHORS = [
    ("mma_ldk: the slice's words", "const int words = kslice * elem_size / 4;", "f"),
    ("mma_ldk: padded to 8 (mod 32) words", "return (words + (40 - words % 32) % 32) * 4 / elem_size;", "f"),
    ("mma_k_position: per_word, word, place in group",
     "const int per_word = 4 / elem_size, w = c / per_word, j = w % 8;", "f"),
    ("mma_k_position: group order 0 4 1 5 2 6 3 7",
     "return ((w - j) + (j % 4) * 2 + j / 4) * per_word + c % per_word;", "f"),
    ("pipelined_k_steps: the pipelined k-loop, fragment buffers 0 and 1",
     "const std::integral_constant<int, 0> first; const std::integral_constant<int, 1> second; load(0, first); "
     "int ks = 0; for (; ks + 2 <= k_steps; ks += 2) { load(ks + 1, second); multiply(first); if (ks + 2 < k_steps) "
     "load(ks + 2, first); multiply(second); } if (ks < k_steps) multiply(first);", "f"),
]
PTX_ANCHORS = [
    ("tf32 m16n8k8", "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", "tc"),
    ("bf16 m16n8k16", "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", "tc"),
    ("f16 m16n8k16", "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", "tc"),
    ("operands a[0..3], b[0..1] in order",
     ': "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));', "tc"),
]

# (what the replay assumes, the code that says so, where): where = "f" rnn.cu, "tc" tensor_core.cuh,
# "tb" mma_tile_block, "ps" mma_partial_sums, "k" rnn_persistent_mma_kernel, "mp" mma_partition,
# "wo" the kernel's write_output (the reduce's per-output store)
ANCHORS = LAYOUT_ANCHORS + [
    ("mma_ldu = units + 4", "constexpr int mma_ldu(int units) { return units + 4; }", "f"),
    ("round_up16", "constexpr int round_up16(int n) { return (n + 15) / 16 * 16; }", "f"),
    ("kMmaWarpM 4, kMmaWarpN 2", "constexpr int kMmaWarpM = 4, kMmaWarpN = 2;", "f"),
    ("kPersistThreads 256", "constexpr int kPersistThreads = 256;", "f"),
    ("launched with kPersistThreads a CTA", "ClusterLaunch launch(grid, kMmaClusterCtas, m.smem, kPersistThreads);",
     "f"),
    # mma_tile_block
    ("lane (g, t)", "const int g = lane / 4, t = lane % 4;", "tb"),
    ("a_row", "const uint32_t* a_row = h + (m_first * 16 + g) * ldk_words + 2 * t;", "tb"),
    ("b_row", "const uint32_t* b_row = w + (n_first * 8 + g) * ldk_words + 2 * t;", "tb"),
    ("lo: row g of m tile i, k-step ks",
     "const uint2 lo = *reinterpret_cast<const uint2*>(a_row + i * 16 * ldk_words + ks * 8);", "tb"),
    ("hi: row g + 8", "const uint2 hi = *reinterpret_cast<const uint2*>(a_row + (i * 16 + 8) * ldk_words + ks * 8);",
     "tb"),
    ("a[0] = lo.x, a[2] = lo.y, a[1] = hi.x, a[3] = hi.y",
     "a_ks[i][0] = lo.x, a_ks[i][2] = lo.y, a_ks[i][1] = hi.x, a_ks[i][3] = hi.y;", "tb"),
    ("v: W's row of n tile n_first + j * n_stride",
     "const uint2 v = *reinterpret_cast<const uint2*>(b_row + j * n_stride * 8 * ldk_words + ks * 8);", "tb"),
    ("b[0] = v.x, b[1] = v.y", "b_ks[j][0] = v.x, b_ks[j][1] = v.y;", "tb"),
    ("multiply: every (i, j) tile", "for (int i = 0; i < kM; ++i) #pragma unroll for (int j = 0; j < kN; ++j) "
     "mma_tile<Native>(acc[i][j], a[buf][i], b[buf][j]);", "tb"),
    ("load(ks, buf) fills fragment buffer buf", "uint32_t(&a_ks)[kM][4] = a[buf]; uint32_t(&b_ks)[kN][2] = b[buf];",
     "tb"),
    ("the pipelined k-loop", pipelined_loop_anchor("k_steps"), "tb"),
    ("out offset", "float* out = part + ((m_first + i) * 16 + g) * ldu + (n_first + j * n_stride) * 8 + 2 * t;", "tb"),
    ("store c0, c1 at out", "*reinterpret_cast<float2*>(out) = make_float2(acc[i][j][0], acc[i][j][1]);", "tb"),
    ("store c2, c3 at out + 8 * ldu",
     "*reinterpret_cast<float2*>(out + 8 * ldu) = make_float2(acc[i][j][2], acc[i][j][3]);", "tb"),
    # mma_partial_sums
    ("n_first loop", "for (int n_first = warp; n_first < n_tiles; n_first += kMmaWarpN * nwarps) {", "ps"),
    ("two_n", "const bool two_n = n_first + nwarps < n_tiles;", "ps"),
    ("m_first loop", "for (int m_first = 0; m_first < m_tiles; m_first += kMmaWarpM) {", "ps"),
    ("the block's arguments (n_stride = nwarps)",
     "h, w, part, m_first, n_first, nwarps, k_steps, ldk_words, ldu, lane);", "ps"),
    ("dispatch on m_tiles - m_first", "switch (m_tiles - m_first) {", "ps"),
    ("case 1", "case 1: two_n ? block(One{}, Two{}) : block(One{}, One{}); break;", "ps"),
    ("case 2", "case 2: two_n ? block(Two{}, Two{}) : block(Two{}, One{}); break;", "ps"),
    ("case 3", "case 3: two_n ? block(std::integral_constant<int, 3>{}, Two{}) : "
     "block(std::integral_constant<int, 3>{}, One{}); break;", "ps"),
    ("default: 4", "default: two_n ? block(std::integral_constant<int, 4>{}, Two{}) : "
     "block(std::integral_constant<int, 4>{}, One{}); break;", "ps"),
    # the kernel
    ("ldk, ldu", "const int ldk = mma_ldk(p.kslice, sizeof(scalar_t)), ldu = mma_ldu(p.units);", "k"),
    ("w_s at the start of shared memory", "scalar_t* w_s = reinterpret_cast<scalar_t*>(smem_raw);", "k"),
    ("h_s after units rows of w_s", "scalar_t* h_s = w_s + p.units * ldk;", "k"),
    ("part_s after round_up16(B) rows of h_s", "float* part_s = reinterpret_cast<float*>(h_s + round_up16(p.B) * ldk);",
     "k"),
    ("part_elems", "const int part_elems = round_up16(p.B) * ldu;", "k"),
    ("part_offset", "const int part_offset = kExchange ? (s % 2) * part_elems : 0;", "k"),
    ("w_s fill loop", "for (int i = threadIdx.x; i < p.units * p.kslice; i += blockDim.x) {", "k"),
    ("w_s fill (n, c)", "const int n = i / p.kslice, c = i % p.kslice, u = u0 + n, k = k0 + c;", "k"),
    ("w_s store index", "w_s[n * ldk + mma_k_position(c, sizeof(scalar_t))] = u < p.H && k < p.H ? "
     "mma_operand(p.weight[static_cast<int64_t>(u) * p.H + k]) : scalar_t(0);", "k"),
    ("u0, k0", "const int u0 = static_cast<int>(blockIdx.x) / kMmaClusterCtas * p.units; "
     "const int k0 = rank * p.kslice;", "k"),
    ("warp, nwarps", "const int warp = threadIdx.x / 32, nwarps = blockDim.x / 32;", "k"),
    ("staging walk start", "const int b_first = threadIdx.x / p.kslice, c_first = threadIdx.x % p.kslice;", "k"),
    ("staging walk step", "const int step_b = blockDim.x / p.kslice, step_c = blockDim.x % p.kslice;", "k"),
    ("stage_step", "b += step_b; c += step_c; if (c >= p.kslice) { c -= p.kslice; ++b; }", "k"),
    ("m16", "const int m16 = round_up16(live);", "k"),
    ("kStage 16", "constexpr int kStage = 16;", "k"),
    ("h_s zero fill", "for (int i = threadIdx.x; i < round_up16(p.B) * ldk; i += blockDim.x) h_s[i] = scalar_t(0);",
     "k"),
    ("staged_rows: one cluster stages at step 0 only", "const int staged_rows = kOneCluster && s > 0 ? 0 : m16;", "k"),
    ("staging loop", "for (int b = b_first, c = c_first; b < staged_rows;) {", "k"),
    ("staged value (loads)", "v[u] = bl < live && k0 + cl < p.H ? load_cg(prev + static_cast<int64_t>(bl) * p.H + k0 + "
     "cl) : scalar_t(0);", "k"),
    ("staged value (exchange words)", "at[u] = bl < live && k0 + cl < p.H ? static_cast<int64_t>(bl) * p.H + k0 + cl "
     ": -1;", "k"),
    ("h_s store index", "if (b < staged_rows) h_s[b * ldk + mma_k_position(c, sizeof(scalar_t))] = mma_operand(v[u]);",
     "k"),
    ("the call: m_tiles, n_tiles, k_steps, ldk_words, ldu, lane",
     "mma_partial_sums<Native>(reinterpret_cast<const uint32_t*>(h_s), reinterpret_cast<const uint32_t*>(w_s), "
     "part_s + part_offset, m16 / 16, p.units / 8, p.kslice * sizeof(scalar_t) / 32, ldk * sizeof(scalar_t) / 4, "
     "ldu, warp, nwarps, threadIdx.x % 32);", "k"),
    ("own", "const int own = p.units / kMmaClusterCtas;", "k"),
    ("the reduce's (b, n)", "const int b = i / own, n = rank * own + i % own;", "k"),
    ("the reduce reads rows b < live, units u0 + n < H",
     "if (has_prev && i < outputs && b < live && u0 + n < p.H) {", "k"),
    ("the reduce's read", "for (int c = 0; c < kMmaClusterCtas; ++c) sum += parts[c][part_offset + b * ldu + n];", "k"),
    ("outputs", "const int outputs = p.B * own;", "k"),
    ("kEarly 8", "constexpr int kEarly = 8;", "k"),
    ("the early outputs: tid + e * blockDim.x, e < kEarly",
     "for (int e = 0; e < kEarly; ++e) { const int i = threadIdx.x + e * blockDim.x; if (i < outputs) y_early[e] = "
     "write_output(i, z_early[e], h_early[e], sum_early[e], !kOneCluster); }", "k"),
    ("the other outputs", "for (int i = threadIdx.x + kEarly * blockDim.x; i < outputs; i += blockDim.x) {", "k"),
    ("the other outputs' write", "write_output(i, z, h, partial_sum(i), true);", "k"),
    ("the closing barrier before the next step reads h_s", "if constexpr (kOneCluster) { cluster.sync();", "k"),
    # the reduce's write_output
    ("write_output's (b, u)", "const int b = i / own, u = u0 + rank * own + i % own;", "wo"),
    ("write_output: nothing for u >= H", "if (u >= p.H) return 0.f;", "wo"),
    ("write_output: y == 0 for b >= live",
     "const float y = b < live ? step_epilogue(z + sum, h, p.relu, p.backward) : 0.f;", "wo"),
    ("write_output: one cluster writes y into rank u / kslice's h_s",
     "if constexpr (kOneCluster) cluster.map_shared_rank(h_s, u / p.kslice)[b * ldk + mma_k_position(u % p.kslice, "
     "sizeof(scalar_t))] = mma_operand(static_cast<scalar_t>(y));", "wo"),
    ("one cluster: the one-cluster kernel when clusters == 1",
     "exchanged ? clusters_exchange : m.clusters > 1 ? clusters : one_cluster, params)", "f"),
    # mma_partition / choose_mma
    ("elem, fk", "const int elem = dtype == at::kFloat ? 4 : 2, fk = dtype == at::kFloat ? 8 : 16;", "mp"),
    ("per_rank", "const int64_t per_rank = (H + kMmaClusterCtas - 1) / kMmaClusterCtas;", "mp"),
    ("kslice", "const int kslice = static_cast<int>((per_rank + fk - 1) / fk * fk);", "mp"),
    ("units", "const int units = round_up16(static_cast<int>((H + most - 1) / most));", "mp"),
    ("clusters", "const int clusters = static_cast<int>((H + units - 1) / units);", "mp"),
    ("smem_for", "return static_cast<size_t>(units + b16) * mma_ldk(kslice, elem) * elem + "
     "static_cast<size_t>(buffers) * b16 * mma_ldu(units) * sizeof(float);", "mp"),
    ("part buffers", "int part_buffers = clusters > 1 && mma_exchange_wanted() ? 2 : 1;", "mp"),
    ("most", "const int64_t most = H <= kMmaOneClusterMaxH || !prop.cooperativeLaunch ? 1 : std::max(1, "
     "prop.multiProcessorCount / kMmaClusterCtas);", "f"),
    ("kMmaOneClusterMaxH 256", "constexpr int64_t kMmaOneClusterMaxH = 256;", "f"),
] + PTX_ANCHORS


def anchor_scopes(rnn, tc):
    return {"f": _code(rnn), "tc": _code(tc),
            "tb": _code(_body(rnn, "__device__ __forceinline__ void mma_tile_block(")),
            "ps": _code(_body(rnn, "__device__ __forceinline__ void mma_partial_sums(")),
            "k": _code(_body(rnn, "rnn_persistent_mma_kernel(MmaParams<scalar_t> p) {")),
            "mp": _code(_body(rnn, "MmaConfig mma_partition(")),
            "wo": _code(_body(rnn, "const auto write_output = [&]("))}


def check_anchors(rnn, tc):
    return missing_anchors(ANCHORS, anchor_scopes(rnn, tc))


# ---------------------------------------------------------------------------------------------
# the C++ formulas, as the replay runs them (mut: the names of the mutants in effect)

def mma_ldk(kslice, elem, mut=()):
    words = kslice * elem // 4
    if "ldk_no_pad" in mut:
        return words * 4 // elem
    if "ldk_16_mod_32" in mut:
        return (words + (48 - words % 32) % 32) * 4 // elem
    return (words + (40 - words % 32) % 32) * 4 // elem


def mma_k_position(c, elem, mut=()):
    """c: an int or an integer array. A group's words in order 0 4 1 5 2 6 3 7."""
    if "order_identity" in mut:
        return c
    per_word = 4 // elem
    w = c // per_word
    j = w % 8
    return ((w - j) + (j % 4) * 2 + j // 4) * per_word + c % per_word


def mma_ldu(units):
    return units + 4


def round_up16(n):
    return (n + 15) // 16 * 16


def mma_partition(elem, B, H, most):
    """mma_partition's shapes: (units, kslice, clusters, part buffers, smem bytes); the exchange is
    the default (two buffers across clusters where they fit, else one)."""
    fk = 8 if elem == 4 else 16
    per_rank = (H + CLUSTER - 1) // CLUSTER
    kslice = (per_rank + fk - 1) // fk * fk
    units = round_up16((H + most - 1) // most)
    clusters = (H + units - 1) // units
    b16 = round_up16(B)

    def smem_for(buffers):
        return (units + b16) * mma_ldk(kslice, elem) * elem + buffers * b16 * mma_ldu(units) * 4

    buffers = 2 if clusters > 1 else 1
    if buffers == 2 and smem_for(2) > OPTIN:
        buffers = 1
    return units, kslice, clusters, buffers, smem_for(buffers)


# ---------------------------------------------------------------------------------------------
# PTX fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k8" (.tf32) and "... mma.m16n8k16"
# (.bf16 / .f16)): for each (lane, register, half) the element it holds

LANES = np.arange(32)
G, T = LANES // 4, LANES % 4


def ptx_tables(per_word):
    """A: (row, col) of shape (32, 4, per_word); B: (k, n) of shape (32, 2, per_word); C: (row, col)
    of shape (32, 4). per_word 1: m16n8k8 tf32, 2: m16n8k16 16-bit."""
    g, t = G[:, None, None], T[:, None, None]
    r4, r2, e = np.arange(4)[None, :, None], np.arange(2)[None, :, None], np.arange(per_word)[None, None, :]
    if per_word == 1:
        a_col = t + 4 * (r4 // 2) + 0 * e
        b_k = t + 4 * r2 + 0 * e
    else:
        a_col = 2 * t + e + 8 * (r4 // 2)
        b_k = 2 * t + e + 8 * r2
    a_row = g + 8 * (r4 % 2) + 0 * e
    b_n = g + 0 * r2 + 0 * e
    c_row = G[:, None] + 8 * (np.arange(4)[None, :] // 2)
    c_col = 2 * T[:, None] + np.arange(4)[None, :] % 2
    full = lambda x, shape: np.broadcast_to(x, shape).copy()  # noqa: E731
    return dict(a_row=full(a_row, (32, 4, per_word)), a_col=full(a_col, (32, 4, per_word)),
                b_k=full(b_k, (32, 2, per_word)), b_n=full(b_n, (32, 2, per_word)), c_row=c_row, c_col=c_col)


def ptx_tables_ok():
    """Each table covers its tile once: A 16 x K, B K x 8, C 16 x 8."""
    bad = []
    for per_word in (1, 2):
        K = 8 * per_word
        tb = ptx_tables(per_word)
        for name, (r, c, R, C) in {"A": (tb["a_row"], tb["a_col"], 16, K), "B": (tb["b_k"], tb["b_n"], K, 8),
                                   "C": (tb["c_row"], tb["c_col"], 16, 8)}.items():
            cells = sorted(zip(r.ravel().tolist(), c.ravel().tolist()))
            if cells != [(i, j) for i in range(R) for j in range(C)]:
                bad.append(f"{name} (k{K})")
    return bad


# the C++ register assignment from the 8-byte loads: a[r] <- (load, component), b[r] <- component
A_FROM = {0: ("lo", 0), 2: ("lo", 1), 1: ("hi", 0), 3: ("hi", 1)}
A_FROM_SWAPPED = {0: ("lo", 0), 1: ("lo", 1), 2: ("hi", 0), 3: ("hi", 1)}  # mutant a1_a2_swapped
B_FROM = {0: 0, 1: 1}


def expected_order(per_word, mut=()):
    """(6): the in-group element order the loads expect, derived from the register assignment and the
    PTX layout (lane t's 8-byte load: group words 2t (.x) and 2t + 1 (.y)): {col: position} within a
    k-step's 8 * per_word element slots, and the inconsistencies found."""
    tb = ptx_tables(per_word)
    a_from = A_FROM_SWAPPED if "a1_a2_swapped" in mut else A_FROM
    where, bad = {}, []

    def put(col, pos, what):
        if where.setdefault(col, pos) != pos:
            bad.append(f"{what}: k {col} expected at slot {where[col]} and {pos}")

    for lane in range(32):
        t = lane % 4
        for r, (ld, comp) in a_from.items():
            for e in range(per_word):
                row_off = tb["a_row"][lane, r, e] - lane // 4
                if row_off != (8 if ld == "hi" else 0):
                    bad.append(f"A reg {r} of lane {lane}: PTX row g + {row_off}, loaded from row g + "
                               f"{8 if ld == 'hi' else 0}")
                put(int(tb["a_col"][lane, r, e]), (2 * t + comp) * per_word + e, f"A reg {r}")
        for r, comp in B_FROM.items():
            for e in range(per_word):
                put(int(tb["b_k"][lane, r, e]), (2 * t + comp) * per_word + e, f"B reg {r}")
    return where, bad


def fragment_product(tb, a, b):
    """mma.sync on the PTX layouts tb (ptx_tables): a (kM, 32, 4, per_word) and b (kN, 32, 2, per_word),
    the element values of the 32 lanes' A and B registers of kM m16 tiles and kN n8 tiles; the
    operands are rebuilt from the registers, multiplied, and returned as the lanes' accumulators
    c0 .. c3, (kM, kN, 32, 4)."""
    K = tb["a_col"].shape[-1] * 8
    A = np.full((len(a), 16, K), np.nan)
    A[:, tb["a_row"].ravel(), tb["a_col"].ravel()] = a.reshape(len(a), -1)
    Bm = np.full((len(b), K, 8), np.nan)
    Bm[:, tb["b_k"].ravel(), tb["b_n"].ravel()] = b.reshape(len(b), -1)
    return np.einsum("imk,jkn->ijmn", A, Bm)[:, :, tb["c_row"], tb["c_col"]]


def pipelined_k_loop(steps, load, multiply, mut=()):
    """The kernels' software-pipelined k-loop over k-steps 0 .. steps - 1 as written (two a pass, the
    next k-step's fragments loaded before this one's MMAs; pipelined_loop_anchor): load(ks) returns
    k-step ks's fragments, multiply(ks, fragments) uses them. Mutants: second_load_same_ks (load(ks)
    for ks + 1), prefetch_unguarded (load(ks + 2) unguarded), odd_tail_dropped. Returns the k-steps in
    the order multiplied."""
    done = []

    def mul(frag):
        done.append(frag[0])
        multiply(*frag)

    frag = [(0, load(0)), None]
    ks = 0
    while ks + 2 <= steps:
        k1 = ks if "second_load_same_ks" in mut else ks + 1
        frag[1] = (k1, load(k1))
        mul(frag[0])
        if ks + 2 < steps or "prefetch_unguarded" in mut:
            frag[0] = (ks + 2, load(ks + 2))
        mul(frag[1])
        ks += 2
    if ks + (1 if "odd_tail_dropped" in mut else 0) < steps:
        mul(frag[0])
    return done


def k_order_text(done):
    """The first k-steps of `done` (pipelined_k_loop's order) for a message."""
    return f"k-steps {done[:6]}{'...' if len(done) > 6 else ''}"


def store_c(part, count, out, second, acc):
    """A tile's two float2 stores: c0, c1 (acc[:, 0:2]) at part[out], c2, c3 (acc[:, 2:4]) at
    part[second] (out, second: the 32 lanes' element offsets); count[x] += 1 for each element x
    written. Returns whether every store fell inside part."""
    inside_all = True
    for at, vals in ((out, acc[:, 0:2]), (second, acc[:, 2:4])):
        for d in (0, 1):
            x = at + d
            inside = (x >= 0) & (x < len(part))
            np.add.at(count, x[inside], 1)
            part[x[inside]] = vals[inside, d]
            inside_all &= bool(inside.all())
    return inside_all


# ---------------------------------------------------------------------------------------------
# one CTA's step, replayed

class Case:
    def __init__(self, elem, H, B, live, most, q, rank):
        self.elem, self.H, self.B, self.live, self.most, self.q, self.rank = elem, H, B, live, most, q, rank
        self.units, self.kslice, self.clusters, self.buffers, self.smem = mma_partition(elem, B, H, most)

    @property
    def name(self):
        dt = "tf32" if self.elem == 4 else "16-bit"
        return (f"{dt} H{self.H} B{self.B} live{self.live} most{self.most} (units {self.units}, kslice "
                f"{self.kslice}, k_steps {self.kslice * self.elem // 32}) cluster {self.q}/{self.clusters} "
                f"rank {self.rank}")


def operands(case, seed):
    """The global weight (H x H) and h_{t-1} (B x H): small integers (products exact in fp64)."""
    rng = np.random.default_rng(seed)
    W = rng.integers(-3, 4, size=(case.H, case.H)).astype(np.float64)
    prev = rng.integers(-3, 4, size=(case.B, case.H)).astype(np.float64)
    return W, prev


def replay(case, W, prev, mut=frozenset(), stats=None, h_mem=None):
    """Runs one CTA (cluster case.q, rank case.rank) of one step. Returns (findings [(check, msg)],
    the part buffer (round_up16(B) * ldu floats)). h_mem: h_s's round_up16(B) * ldk elements as they
    are (check (8): written by the previous step's reduce) instead of staged from prev; the product
    (1) is then checked against h_s's rows < m16 read at mma_k_position(c), c < kslice."""
    found = []

    def bad(check, msg):
        found.append((check, f"{case.name}: {msg}"))

    elem, H, B, live = case.elem, case.H, case.B, case.live
    units, kslice = case.units, case.kslice
    per_word = 4 // elem
    ldk = mma_ldk(kslice, elem, mut)
    ldu = mma_ldu(units)
    B16, m16 = round_up16(B), round_up16(live)
    u0, k0 = case.q * units, case.rank * kslice
    # the call's arguments
    m_tiles, n_tiles = m16 // 16, units // 8
    k_steps = kslice // 8 if "k_steps_over_8" in mut else kslice * elem // 32
    ldk_words = ldk * elem // 4
    kslice_words = kslice * elem // 4

    # (5) the layout
    pos = mma_k_position(np.arange(kslice), elem, mut)
    if sorted(pos.tolist()) != list(range(kslice)):
        bad("5", "mma_k_position is not a bijection of [0, kslice) onto the row's first kslice positions")
    if ldk * elem % 4 or ldk_words % 32 != 8 or ldk_words < kslice_words:
        bad("5", f"ldk_words {ldk_words} (ldk {ldk}): not 8 (mod 32) or below the slice's {kslice_words} words")
    if kslice * elem % 32 or k_steps * 8 != kslice_words:
        bad("5", f"k_steps {k_steps} x 8 words != the slice's {kslice_words} words")
    part_base_bytes = (units + B16) * ldk * elem
    part_elems = B16 * ldu
    if part_base_bytes % 8 or part_elems % 2 or part_base_bytes + case.buffers * part_elems * 4 > case.smem:
        bad("5", f"part_s at byte {part_base_bytes}, {case.buffers} buffer(s) of {part_elems} floats: misaligned or "
                 f"past mma_partition's {case.smem} bytes")
    order, order_bad = expected_order(per_word, mut)
    group = 8 * per_word
    want = np.array([(c // group) * group + order.get(c % group, -1) for c in range(kslice)])
    if order_bad or not np.array_equal(pos, want):
        bad("6", "the loads expect another in-group order than mma_k_position stores: "
                 + ("; ".join(order_bad[:2]) or f"expected {want[:group].tolist()}, stored {pos[:group].tolist()}"))

    # shared memory (elements): w_s units x ldk, then h_s B16 x ldk
    n_el = (units + B16) * ldk
    mem = np.full(n_el, np.nan)
    wrote = np.zeros(n_el, dtype=np.int64)
    h_el = units * ldk
    # logical operands of this CTA
    W_log = np.zeros((units, kslice))
    ur, kc = np.arange(u0, min(u0 + units, H)), np.arange(k0, min(k0 + kslice, H))
    W_log[:len(ur), :len(kc)] = W[np.ix_(ur, kc)]
    if h_mem is None:
        h_log = np.zeros((m16, kslice))
        h_log[:live, :len(kc)] = prev[:live][:, kc]
    else:
        h_log = np.asarray(h_mem).reshape(B16, ldk)[:m16, pos]

    # the w_s fill: i = tid, tid + blockDim.x, ... < units * kslice (every i once: a plain range)
    i = np.arange(units * kslice)
    n, c = i // kslice, i % kslice
    u, k = u0 + n, k0 + c
    val = np.where((u < H) & (k < H), W[np.minimum(u, H - 1), np.minimum(k, H - 1)], 0.0)
    idx = n * ldk + (c if "fill_unpermuted" in mut else mma_k_position(c, elem, mut))
    ok = (idx >= 0) & (idx < h_el)
    if not ok.all():
        bad("6", "the w_s fill writes outside w_s")
    np.add.at(wrote, idx[ok], 1)
    mem[idx[ok]] = val[ok]
    expect_w = (np.arange(units)[:, None] * ldk + pos[None, :]).ravel()
    if not (wrote[expect_w] == 1).all() or wrote[:h_el].sum() != units * kslice:
        bad("6", "the w_s fill does not write each (n, position < kslice) exactly once")
    elif not np.array_equal(mem[expect_w].reshape(units, kslice), W_log):
        bad("6", "w_s[n * ldk + mma_k_position(c)] != W[u0 + n, k0 + c]")

    if h_mem is not None:  # h_s as given (nothing staged)
        mem[h_el:] = h_mem
    else:
        # the h_s staging: each thread walks (b, c) from (tid / kslice, tid % kslice) by blockDim.x elements
        tid = np.arange(NTHREADS)
        step_b, step_c = NTHREADS // kslice, NTHREADS % kslice

        def stage_step(b, c):
            b, c = b + step_b, c + step_c
            wrap = c >= kslice
            return np.where(wrap, b + 1, b), np.where(wrap, c - kslice, c)

        b, c = tid // kslice, tid % kslice
        hw = np.zeros(n_el, dtype=np.int64)
        mismatched_source = 0
        while True:
            active = b < m16
            if not active.any():
                break
            bl, cl = b.copy(), c.copy()
            v = []
            for _ in range(KSTAGE):
                take = (bl < live) & (k0 + cl < H)
                v.append((np.where(take, prev[np.minimum(bl, B - 1), np.minimum(k0 + cl, H - 1)], 0.0), bl, cl))
                bl, cl = stage_step(bl, cl)
            for uu in range(KSTAGE):
                st = active & (b < m16)
                val, sb, sc = v[uu]
                mismatched_source += int((st & ((sb != b) | (sc != c))).sum())
                idx = h_el + b * ldk + (c if "stage_unpermuted" in mut else mma_k_position(c, elem, mut))
                inside = st & (idx >= h_el) & (idx < n_el)
                if (st & ~inside).any():
                    bad("6", "the h_s staging writes outside h_s")
                np.add.at(hw, idx[inside], 1)
                mem[idx[inside]] = val[inside]
                b, c = stage_step(b, c)
        expect_h = (h_el + np.arange(m16)[:, None] * ldk + pos[None, :]).ravel()
        if mismatched_source:
            bad("6", f"{mismatched_source} staged values from another (b, c) than the one stored")
        if not (hw[expect_h] == 1).all() or hw.sum() != m16 * kslice:
            bad("6", "the h_s staging does not write each (b < m16, position < kslice) exactly once")
        elif not np.array_equal(mem[expect_h].reshape(m16, kslice), h_log):
            bad("6", "h_s[b * ldk + mma_k_position(c)] != h_{t-1}[b, k0 + c] (zero for b >= live, k >= H)")

    # the MMA phase on 32-bit words
    words = mem.reshape(-1, per_word)  # word w: elements w * per_word + e, e = 0 in the low half
    n_words = len(words)
    h_base, w_base = units * ldk_words, 0  # word offsets of h_s and w_s in shared memory
    tb = ptx_tables(per_word)
    a_from = A_FROM_SWAPPED if "a1_a2_swapped" in mut else A_FROM
    part = np.full(part_elems, np.nan)
    pcount = np.zeros(part_elems, dtype=np.int64)
    part_word0 = part_base_bytes // 4
    loads = {"h": [], "w": []}  # word addresses relative to the region (32 lanes a load)
    stores = []                 # word addresses of the float2 stores, relative to part
    k_orders_bad = []

    def load8(region, rel):
        """An 8-byte load of each lane at word rel (relative to h / w): the two words' contents."""
        loads[region].append(rel)
        a = rel + (h_base if region == "h" else w_base)
        out = []
        for d in (0, 1):
            x = a + d
            inside = (x >= 0) & (x < n_words)
            got = words[np.clip(x, 0, n_words - 1)].copy()
            got[~inside] = np.nan
            out.append(got)  # (32, per_word)
        return out

    def tile_block(m_first, n_first, kM, kN, n_stride):
        acc = np.zeros((kM, kN, 32, 4))
        a_row = (m_first * 16 + G) * ldk_words + 2 * T
        b_row = (n_first * 8 + G) * ldk_words + 2 * T
        if "b_no_n_stride" in mut:
            n_stride = 1

        def load(ks):
            a_ks = np.empty((kM, 32, 4, per_word))
            for ii in range(kM):
                got = {"lo": load8("h", a_row + ii * 16 * ldk_words + ks * 8),
                       "hi": load8("h", a_row + (ii * 16 + 8) * ldk_words + ks * 8)}
                for r, (ld, comp) in a_from.items():
                    a_ks[ii, :, r] = got[ld][comp]
            b_ks = np.empty((kN, 32, 2, per_word))
            for j in range(kN):
                vv = load8("w", b_row + j * n_stride * 8 * ldk_words + ks * 8)
                for r, comp in B_FROM.items():
                    b_ks[j, :, r] = vv[comp]
            return a_ks, b_ks

        def multiply(ks, frag):  # the operands rebuilt from the 32 lanes' registers (PTX layout)
            acc[...] += fragment_product(tb, *frag)

        done = pipelined_k_loop(k_steps, load, multiply, mut)
        if done != list(range(k_steps)):
            k_orders_bad.append(f"tile block m_first {m_first} n_first {n_first}: {k_order_text(done)} multiplied "
                                f"(k_steps {k_steps})")
        # accumulators (g, 2t..2t+1) and (g + 8, 2t..2t+1) of each tile
        for ii in range(kM):
            for j in range(kN):
                out = ((m_first + ii) * 16 + G) * ldu + (n_first + j * n_stride) * 8 + 2 * T
                second = out + (8 if "store_hi_plus_8" in mut else 8 * ldu)
                stores.extend([out, second])
                if not store_c(part, pcount, out, second, acc[ii, j]):
                    bad("2", f"a float2 store past the {B16} x {ldu} part buffer (m_first {m_first}, "
                             f"n_first {n_first})")

    for warp in range(NWARPS):
        for n_first in range(warp, n_tiles, WARP_N * NWARPS):
            two_n = (n_first + NWARPS <= n_tiles) if "two_n_le" in mut else (n_first + NWARPS < n_tiles)
            for m_first in range(0, m_tiles, WARP_M):
                kM = WARP_M if "m_count_unclipped" in mut else min(WARP_M, m_tiles - m_first)
                tile_block(m_first, n_first, kM, 2 if two_n else 1, NWARPS)

    # (7)
    if k_orders_bad:
        bad("7", f"{len(k_orders_bad)} tile block(s) multiply other k-steps than 0 ... k_steps - 1 in order: "
                 f"{k_orders_bad[0]}")
    # (3) the loads
    for region, rows, size in (("h", m16, B16 * ldk_words), ("w", units, units * ldk_words)):
        if not loads[region]:
            continue
        rel = np.stack(loads[region])
        base = h_base if region == "h" else w_base
        if ((rel + base) % 2).any():
            bad("3", f"an 8-byte load from {region}_s not 8-byte aligned")
        row, col = rel // ldk_words, rel % ldk_words
        out_rows = (rel < 0) | (rel + 1 >= size) | (row >= rows)
        if out_rows.any():
            bad("3", f"a load outside {region}_s's {'staged ' if region == 'h' else ''}{rows} rows "
                     f"(word {int(rel[out_rows][0])})")
        if (col + 1 >= kslice_words).any():
            bad("3", f"a load from {region}_s reads a row's padding (position >= kslice: word {int(col.max()) + 1} of "
                     f"{kslice_words})")
    # (4) bank conflicts: each half-warp of an 8-byte load, 32 different banks
    n_loads = 0
    for region in ("h", "w"):
        if not loads[region]:
            continue
        a = np.stack(loads[region]) + (h_base if region == "h" else w_base)  # (L, 32)
        n_loads += len(a)
        banks = np.stack([a, a + 1], axis=-1).reshape(len(a), 2, 32) % 32  # half-warp x its 16 lanes' 2 words
        banks.sort(axis=-1)
        if (np.diff(banks, axis=-1) == 0).any():
            bad("4", f"a bank conflict in an 8-byte load from {region}_s (a half-warp with fewer than 32 banks)")
    if stores and stats is not None:
        a = np.stack(stores) + part_word0  # float2 stores
        w2 = np.stack([a, a + 1], axis=-1).reshape(len(a), 2, 32)
        ways = 1
        for half in w2.reshape(-1, 32):
            cnt = np.bincount(np.unique(half) % 32, minlength=32)
            ways = max(ways, int(cnt.max()))
        stats.setdefault("store_ways", {}).setdefault(ways, 0)
        stats["store_ways"][ways] += 1
    if stats is not None:
        stats["loads"] = stats.get("loads", 0) + n_loads
        stats["stores"] = stats.get("stores", 0) + len(stores)
    # (2) the writes
    cnt = pcount.reshape(B16, ldu)
    if (cnt[:m16, :units] != 1).any():
        b_, n_ = np.argwhere(cnt[:m16, :units] != 1)[0]
        bad("2", f"part[{b_}, {n_}] written {cnt[b_, n_]} times (every (b < m16, n < units) once)")
    if cnt[m16:].any() or cnt[:, units:].any():
        bad("2", "part written at rows >= m16 or columns >= units")
    # (1) the product
    got = part.reshape(B16, ldu)[:m16, :units]
    want = h_log @ W_log.T
    if not np.array_equal(got, want):
        wrong = ~(got == want)
        b_, n_ = np.argwhere(wrong)[0]
        bad("1", f"{int(wrong.sum())} of {m16 * units} partial sums wrong, e.g. part[{b_}, {n_}] = {got[b_, n_]}, "
                 f"h . W = {want[b_, n_]}")
    return found, part


# ---------------------------------------------------------------------------------------------
# the cases

def cases():
    """CTAs from mma_partition's shapes (only those that fit shared memory), tf32 and 16-bit."""
    rng = np.random.default_rng(2024)
    out = []
    Hs = [7, 100, 256, 300, 512, 1024, 2048] + [int(x) for x in rng.integers(1, 2100, size=4)]
    for elem in (4, 2):
        for H in Hs:
            mosts = [1] if H <= ONE_CLUSTER_MAX_H else [16, 7] + ([1] if H <= 512 else [])
            for most in mosts:
                B = int(rng.integers(1, 257))
                while mma_partition(elem, B, H, most)[4] > OPTIN and B > 1:
                    B = max(1, B // 2)
                if mma_partition(elem, B, H, most)[4] > OPTIN:
                    continue
                live = int(rng.choice([B, int(rng.integers(1, B + 1))]))
                clusters = mma_partition(elem, B, H, most)[2]
                # a random CTA and the last one (the zero-padded rows and columns)
                for q, rank in {(int(rng.integers(clusters)), int(rng.integers(CLUSTER))), (clusters - 1, CLUSTER - 1)}:
                    out.append(Case(elem, H, B, live, most, q, rank))
    # fixed corners: live 1 in a full buffer, a B16 > m16, 16-bit odd k_steps with two n tiles a warp
    for elem, H, B, live, most in ((4, 300, 256, 1, 16), (2, 300, 40, 17, 1), (4, 1024, 48, 33, 7),
                                   (2, 1500, 100, 64, 16), (4, 256, 256, 256, 1), (2, 2048, 64, 50, 16)):
        c = Case(elem, H, B, live, most, 0, 0)
        if c.smem <= OPTIN:
            out.append(c)
    return out


# ---------------------------------------------------------------------------------------------
# (8) one cluster (mma_partition's most == 1: u0 = 0, clusters == 1): h_s is zeroed once, staged
# from global memory only at step 0, and from then on written by the reduce, each output y of step s
# into the h_s of rank u / kslice at b * ldk + mma_k_position(u % kslice): the next step multiplies
# h_t from there. Values are small integers (W, h_{-1}, seq's pre-activations; a clip to [-3, 3]
# stands in for the epilogue), exact in every format, so static_cast<scalar_t> and mma_operand (the
# same chain on both paths, anchored) are identities here.

def one_cluster_lives(B, T, rng, kind):
    """live[t], t = 0 .. T - 1, for sorted lengths (live[t] = #sequences longer than t): 'full' every
    sequence T long; 'ragged' lengths 1 .. T; 'dies' lengths 0 .. T - 1 (live[T - 1] == 0: backward
    starts with no live row)."""
    if kind == "full":
        return [B] * T
    lengths = np.sort(rng.integers(0, T, size=B) if kind == "dies" else rng.integers(1, T + 1, size=B))[::-1].copy()
    lengths[0] = max(lengths[0], 1) if kind == "dies" else T  # step 0 (forward) has a live row
    return [int((lengths > t).sum()) for t in range(T)]


def one_cluster_run(elem, H, B, lives, backward, with_state0, seed, mut=frozenset(), frag_steps=(), stats=None):
    """T = len(lives) steps of the one-cluster kernel's h_s bookkeeping over the 8 ranks: the zero
    fill, step 0's staging, each step's partial sums from h_s (rows < m16, mma_k_position(c), c <
    kslice: what (1), (3), (6) show mma_partial_sums reads) and its reduce writing y into the ranks'
    h_s. frag_steps: steps s > 0 whose partial sums are also replayed on the PTX fragments (replay,
    h_s as written and as freshly staged), 8 ranks each. Returns findings [(check, msg)]."""
    found = []
    T = len(lives)
    units, kslice, clusters, _, _ = mma_partition(elem, B, H, 1)
    name = (f"{'tf32' if elem == 4 else '16-bit'} H{H} B{B} {'backward' if backward else 'forward'} live "
            f"{[lives[T - 1 - s] if backward else lives[s] for s in range(T)]} by step"
            f"{'' if with_state0 else ', no h_-1'} (units {units}, kslice {kslice})")

    def bad(check, msg):
        found.append((check, f"{name}: {msg}"))

    if clusters != 1 or units % CLUSTER:
        bad("8a", f"{clusters} clusters with most == 1")
        return found
    own = units // CLUSTER                     # const int own = p.units / kMmaClusterCtas;
    outputs = B * own                          # const int outputs = p.B * own;
    ldk = mma_ldk(kslice, elem)
    B16 = round_up16(B)
    pos = mma_k_position(np.arange(kslice), elem)
    rng = np.random.default_rng(seed)
    W = rng.integers(-3, 4, size=(H, H)).astype(np.float64)
    state0 = rng.integers(-3, 4, size=(B, H)).astype(np.float64) if with_state0 else None
    Z = rng.integers(-3, 4, size=(T, B, H)).astype(np.float64)  # seq[t]'s pre-activations (load_inputs' z)
    W_log = np.zeros((CLUSTER, units, kslice))
    for r in range(CLUSTER):
        kk = np.arange(r * kslice, min((r + 1) * kslice, H))
        W_log[r, :min(units, H), :len(kk)] = W[:min(units, H)][:, kk]
    is_pad_col = np.ones(ldk, dtype=bool)
    is_pad_col[pos] = False                    # positions >= kslice: the row's padding

    # the zero fill: for (i = threadIdx.x; i < round_up16(B) * ldk; i += blockDim.x) h_s[i] = 0, every CTA
    hs = np.full((CLUSTER, B16 * ldk), np.nan)  # unwritten shared memory: NaN
    if "zero_fill_dropped" not in mut:
        i = (np.arange(NTHREADS)[:, None] + NTHREADS * np.arange(-(-B16 * ldk // NTHREADS))[None, :]).ravel()
        hs[:, i[i < B16 * ldk]] = 0.0

    def staged(rank, src, live, img):
        """img with the staging of rows < m16(live) from src (global, as stored): src[b, k0 + c] for
        b < live, k0 + c < H, zero elsewhere, at b * ldk + mma_k_position(c)."""
        m16, kk = round_up16(live), rank * kslice + np.arange(kslice)
        vals = np.zeros((m16, kslice))
        if src is not None:
            vals[:live, kk < H] = src[:live][:, kk[kk < H]]
        img.reshape(B16, ldk)[:m16, pos] = vals
        return img

    def partials(img, rank, m16):
        return img.reshape(B16, ldk)[:m16, pos] @ W_log[rank].T  # m16 x units

    seq = {}
    t_prev = None
    for s in range(T):
        t = T - 1 - s if backward else s
        live = lives[t]
        m16 = round_up16(live)
        src = state0 if s == 0 else seq[t_prev]
        has_prev = src is not None and live > 0
        if has_prev and s == 0:  # staged_rows = kOneCluster && s > 0 ? 0 : m16
            for r in range(CLUSTER):
                staged(r, src, live, hs[r])
        if s > 0:  # nothing staged: h_s as the last reduce left it, against a fresh staging of h_{t-1}
            fresh = [staged(r, src, live, np.zeros(B16 * ldk)) for r in range(CLUSTER)]
            for r in range(CLUSTER):
                got, want = hs[r].reshape(B16, ldk)[:live, pos], fresh[r].reshape(B16, ldk)[:live, pos]
                if not np.array_equal(got, want):
                    b_, c_ = np.argwhere(~(got == want))[0]
                    bad("8b", f"step {s}: rank {r}'s h_s[{b_} * ldk + mma_k_position({c_})] = {got[b_, c_]}, staging "
                              f"h_(t-1)[{b_}, {r * kslice + c_}] from global memory gives {want[b_, c_]}")
                    break
            if has_prev:
                pw = [partials(hs[r], r, m16) for r in range(CLUSTER)]
                pf = [partials(fresh[r], r, m16) for r in range(CLUSTER)]
                zw, zf = sum(pw), sum(pf)
                if not np.array_equal(zw[:live], zf[:live]):
                    b_, n_ = np.argwhere(~(zw[:live] == zf[:live]))[0]
                    bad("8d", f"step {s}: the partial sums' sum over the ranks at (b {b_}, n {n_}) = {zw[b_, n_]} from "
                              f"the written h_s, {zf[b_, n_]} from a staged one")
                elif stats is not None:
                    stats["rows_past_live_differ"] = stats.get("rows_past_live_differ", 0) + int(
                        (~(zw[live:] == zf[live:])).any(axis=1).sum())
                if s in frag_steps:
                    for r in range(CLUSTER):
                        case = Case(elem, H, B, live, 1, 0, r)
                        fw, part_w = replay(case, W, None, h_mem=hs[r])
                        ff, part_f = replay(case, W, None, h_mem=fresh[r])
                        for check, msg in fw + ff:
                            bad("8d", f"step {s}, fragment replay: ({check}) {msg}")
                        pw_, pf_ = part_w.reshape(B16, -1)[:live, :units], part_f.reshape(B16, -1)[:live, :units]
                        if not np.array_equal(pw_, pf_):
                            bad("8d", f"step {s}, rank {r}: the fragment replay's partial sums differ on rows < live")
                        if stats is not None:
                            stats["frag_ctas"] = stats.get("frag_ctas", 0) + 2
        parts = [partials(hs[r], r, m16) for r in range(CLUSTER)] if has_prev else None
        # the reduce: rank r's threads, outputs tid + e * blockDim.x (e < kEarly), then the rest
        cover = np.zeros((B, H), dtype=np.int64)
        cnt = np.zeros((CLUSTER, B16 * ldk), dtype=np.int64)
        out = np.zeros((B, H))
        tid = np.arange(NTHREADS)
        early = (tid[None, :] + NTHREADS * np.arange(8)[:, None]).ravel()  # kEarly = 8
        late = (tid[None, :] + NTHREADS * (8 + np.arange(max(0, -(-(outputs - 8 * NTHREADS) // NTHREADS))))[:, None]
                ).ravel()
        i_all = np.concatenate([early[early < outputs], late[late < outputs]])
        for r in range(CLUSTER):
            b, u = i_all // own, 0 + r * own + i_all % own  # u0 = 0
            keep = u < H                                     # if (u >= p.H) return
            b, u = b[keep], u[keep]
            n = u                                            # n = rank * own + i % own, u0 = 0
            sm = np.zeros(len(b))
            if has_prev:
                sel = b < live
                for c in range(CLUSTER):                     # rank order
                    sm[sel] += parts[c][b[sel], n[sel]]
            y = np.where(b < live, np.clip(Z[t][b, u] + sm, -3, 3), 0.0)
            out[b, u] = y                                    # seq[t] (now, or after the closing barrier)
            np.add.at(cover, (b, u), 1)
            dst = u // own if "h_rank_by_own" in mut else u // kslice
            p_ = u % kslice if "h_position_unpermuted" in mut else mma_k_position(u % kslice, elem)
            idx = b * ldk + p_
            wrong_rank = (dst < 0) | (dst >= CLUSTER) | (dst * kslice > u) | (u >= (dst + 1) * kslice)
            if wrong_rank.any():
                j = int(np.argmax(wrong_rank))
                bad("8a", f"step {s}: rank {r} writes output (b {b[j]}, u {u[j]}) into rank {dst[j]}'s h_s, whose "
                          f"k-slice is [{dst[j] * kslice}, {(dst[j] + 1) * kslice})")
            if ((idx // ldk) >= B).any() or is_pad_col[idx % ldk].any() or (idx < 0).any():
                bad("8a", f"step {s}: rank {r} writes h_s at a row >= B or a padding position (>= kslice's)")
            ok = (dst >= 0) & (dst < CLUSTER) & (idx >= 0) & (idx < B16 * ldk)
            np.add.at(cnt, (dst[ok], idx[ok]), 1)
            hs[dst[ok], idx[ok]] = y[ok]                     # mma_operand(static_cast<scalar_t>(y))
        if (cover != 1).any():
            b_, u_ = np.argwhere(cover != 1)[0]
            bad("8a", f"step {s}: output (b {b_}, u {u_}) written {cover[b_, u_]} times (each (b < B, u < H) once)")
        if (cnt > 1).any() or cnt.sum() != B * H:
            bad("8a", f"step {s}: {int((cnt > 1).sum())} h_s elements written twice, {int(cnt.sum())} writes for "
                      f"{B * H} outputs")
        seq[t] = out
        t_prev = t
        # (c) rows past B, columns past H (and the padding) stay as the zero fill left them
        for r in range(CLUSTER):
            img = hs[r].reshape(B16, ldk)
            kk = r * kslice + np.arange(kslice)
            if not (img[B:] == 0).all() or not (img[:, pos[kk >= H]] == 0).all() or not (img[:, is_pad_col] == 0).all():
                bad("8c", f"after step {s}: rank {r}'s h_s not zero at rows >= B ({B}), columns >= H or the padding")
                break
    if stats is not None:
        stats["steps"] = stats.get("steps", 0) + T
        stats["transitions"] = stats.get("transitions", 0) + T - 1
    return found


def one_cluster_runs(all_cases):
    """(elem, H, B, lives, backward, with_state0): every one-cluster H of cases() and a few more, two
    batch sizes each (that fit mma_partition's smem), forward (live shrinks) and backward (grows)."""
    rng = np.random.default_rng(88)
    Hs = sorted({1, 7, 8, 17, 64, 100, 129, 200, 255, 256} | {c.H for c in all_cases if c.most == 1})
    out = []
    T = 4
    for elem in (4, 2):
        for H in Hs:
            for B in rng.choice([1, 5, 16, 17, 23, 40, 64, 100, 256], size=2, replace=False):
                B = int(B)
                while mma_partition(elem, B, H, 1)[4] > OPTIN and B > 1:
                    B = max(1, B // 2)
                if mma_partition(elem, B, H, 1)[4] > OPTIN:
                    continue
                for backward in (False, True):
                    kind = str(rng.choice(["ragged", "ragged", "full", "dies"]))
                    out.append((elem, H, B, one_cluster_lives(B, T, rng, kind), backward, bool(rng.random() < 0.85)))
    # fixed: live crossing 16-row tiles both ways, live 0 at the start of backward, no h_-1
    out += [(4, 100, 40, [40, 33, 17, 3], False, True), (4, 100, 40, [40, 33, 17, 3], True, True),
            (2, 256, 100, [100, 64, 63, 1], True, True), (2, 17, 23, [23, 23, 16, 0], True, False),
            (4, 200, 17, [17, 16, 15, 15], False, False)]
    return out


# the replay's mutants: (what they break, the checks that must each catch it on some case: the
# fragment product (1) for every mutant that changes which element meets which, so that the PTX
# model itself, not only the bookkeeping around it, tells them apart)
MUTANTS = {
    # (an equivalent mutant for the product: the same in-group order in A and B permutes k in both,
    # so only (6), the order PTX's k expects, tells it apart; see the report in main)
    "order_identity": ("group words stored in order 0 1 2 3 4 5 6 7 (mma_k_position = c)", "6"),
    "a1_a2_swapped": ("a[1] = lo.y, a[2] = hi.x", "16"),
    "ldk_no_pad": ("ldk = the slice's words (no pad to 8 mod 32)", "45"),
    "ldk_16_mod_32": ("ldk padded to 16 (mod 32) words", "45"),
    "b_no_n_stride": ("b row of tile j at j * 8 * ldk_words (n_stride missing)", "12"),
    "second_load_same_ks": ("load(ks, a[1], b[1]) instead of ks + 1 (k-steps off by one)", "17"),
    "odd_tail_dropped": ("an odd k_steps' last k-step not multiplied", "17"),
    "prefetch_unguarded": ("load(ks + 2) without its ks + 2 < k_steps guard", "3"),
    "k_steps_over_8": ("k_steps = kslice / 8 (elements, not 32-byte groups)", "35"),
    "fill_unpermuted": ("the w_s fill at n * ldk + c", "16"),
    "stage_unpermuted": ("the h_s staging at b * ldk + c", "16"),
    "store_hi_plus_8": ("c2, c3 stored at out + 8 instead of out + 8 * ldu", "12"),
    "two_n_le": ("two_n = n_first + nwarps <= n_tiles", "23"),
    "m_count_unclipped": ("kM = 4 whatever m_tiles - m_first", "23"),
}

# (8)'s mutants of the one-cluster h_s write: (what they break, the sub-checks 8a ... 8d that must
# each catch it on some run)
MUTANTS8 = {
    "h_rank_by_own": ("y written into rank u // own (the reducing rank's units) instead of u // kslice", "abd"),
    "h_position_unpermuted": ("y written at b * ldk + u % kslice, without mma_k_position", "bd"),
    "zero_fill_dropped": ("h_s not zeroed at the start (rows past B, columns past H never written)", "cd"),
}

# edits of rnn.cu the anchors must catch (old, new); and one they must not (comments, layout)
SOURCE_EDITS = {
    "pad to 16 (mod 32)": ("(40 - words % 32) % 32", "(48 - words % 32) % 32"),
    "group order": ("(j % 4) * 2 + j / 4", "(j % 4) + j / 4 * 4"),
    "a[1] / a[2]": ("a_ks[i][2] = lo.y, a_ks[i][1] = hi.x", "a_ks[i][1] = lo.y, a_ks[i][2] = hi.x"),
    "n_stride dropped": ("b_row + j * n_stride * 8 * ldk_words", "b_row + j * 8 * ldk_words"),
    "k_steps in elements": ("p.kslice * sizeof(scalar_t) / 32", "p.kslice / 8"),
    "w_s unpermuted": ("w_s[n * ldk + mma_k_position(c, sizeof(scalar_t))]", "w_s[n * ldk + c]"),
    "out row": ("((m_first + i) * 16 + g) * ldu", "((m_first + i) * 16 + g) * ldk_words"),
    "h_s write rank": ("map_shared_rank(h_s, u / p.kslice)", "map_shared_rank(h_s, u / own)"),
    "h_s write unpermuted": ("mma_k_position(u % p.kslice, sizeof(scalar_t))", "u % p.kslice"),
    "one cluster restages": ("kOneCluster && s > 0 ? 0 : m16", "m16"),
    "no zero fill": ("i += blockDim.x) h_s[i] = scalar_t(0);", "i += blockDim.x) {}"),
}
NEUTRAL_EDIT = ("const int g = lane / 4, t = lane % 4;",
                "const int g = lane / 4,  // groupID\n      t = lane % 4;  /* threadID_in_group */")


# ---------------------------------------------------------------------------------------------
# the report's scaffolding (also scripts/check_rnn_on_chip.py's): "ok ..." lines, "MISMATCH ..."
# lines through fail(), exit status 1 on any MISMATCH

def _ok(prefix):
    """An 'ok' line's start: 'ok (8)' with a prefix '(8)', else 'ok:'."""
    return f"ok {prefix}" if prefix else "ok:"


def failure_log():
    """(failures, fail): fail(msg) appends msg to the list failures and prints 'MISMATCH msg'."""
    failures = []

    def fail(msg):
        failures.append(msg)
        print(f"MISMATCH {msg}")

    return failures, fail


def finish(failures, t0):
    """The last line: with failures, their count, and exit status 1; else 'all checks ok'; with the
    seconds since t0."""
    dt = time.time() - t0
    if failures:
        print(f"{len(failures)} failure(s) ({dt:.1f} s)")
        sys.exit(1)
    print(f"all checks ok ({dt:.1f} s)")


def read_sources():
    """(rnn.cu, tensor_core.cuh) as text."""
    with open(RNN_CU) as f:
        rnn = f.read()
    with open(TC_CUH) as f:
        tc = f.read()
    return rnn, tc


def anchor_report(rnn, tc, anchors, check_anchors, source_edits, neutral_edit, fail, prefix=""):
    """The anchors, then their self-test. check_anchors(rnn, tc): the names of the missing ones among
    `anchors`; a missing one is a MISMATCH naming it. Each edit of source_edits {name: (old, new)},
    applied to rnn, must make some anchor go missing (and its old text must be in rnn); neutral_edit
    (old, new: comments / line breaks only) must change nothing. Prints an 'ok' line for each part or
    fail()s; prefix (e.g. '(8)') tags the lines. Returns the missing anchors."""
    tag = f"{prefix} " if prefix else ""
    missing = check_anchors(rnn, tc)
    if missing:
        fail(f"{tag}rnn.cu / tensor_core.cuh no longer read as the replayed code; missing anchors: "
             f"{'; '.join(missing)}")
    else:
        print(f"{_ok(prefix)} rnn.cu / tensor_core.cuh still have the {len(anchors)} lines this replay reproduces")
    uncaught = [name for name, (a, b) in source_edits.items()
                if a not in rnn or not set(check_anchors(rnn.replace(a, b), tc)) - set(missing)]
    neutral = neutral_edit[0] in rnn and check_anchors(rnn.replace(*neutral_edit), tc) == missing
    if uncaught or not neutral:
        fail(f"{tag}the anchors miss source edits: {uncaught}" if uncaught else
             f"{tag}the anchors flag a comment / whitespace-only edit")
    else:
        print(f"{_ok(prefix)} the anchors flag each of {len(source_edits)} edits of rnn.cu ({', '.join(source_edits)})"
              f" and not a comment / line-break edit")
    return missing


def ptx_tables_report(fail):
    """ptx_tables_ok() as an 'ok' line or a MISMATCH."""
    bad = ptx_tables_ok()
    if bad:
        fail(f"the PTX fragment tables do not cover their tiles once: {bad}")
    else:
        print("ok: the PTX fragment tables (m16n8k8 tf32, m16n8k16 16-bit: A, B, C) each cover their tile once")


def begin(title, anchors, check_anchors, source_edits, neutral_edit, prefix=""):
    """A replay's first lines: its title, its anchors against rnn.cu / tensor_core.cuh and their
    self-test (anchor_report, tagged prefix), the PTX tables (ptx_tables_report). Returns (the start
    time, the failures, fail) for the rest of the report."""
    t0 = time.time()
    failures, fail = failure_log()
    print(title)
    rnn, tc = read_sources()
    anchor_report(rnn, tc, anchors, check_anchors, source_edits, neutral_edit, fail, prefix)
    ptx_tables_report(fail)
    return t0, failures, fail


def tally(found, per_check, fail):
    """One case's findings [(check, msg)]: the first message of each check (over all the cases) is a
    MISMATCH; per_check[check] counts the cases that trip the check."""
    for check, msg in found:
        if check not in per_check:
            fail(f"({check}) {msg}")
            per_check[check] = 0
    for check in {c for c, _ in found}:
        per_check[check] += 1


def check_lines(labels, per_check, n, unit="cases"):
    """A line for each check of labels {check: what it verifies}: 'ok (check) n unit: ...', or
    'FAILED (check) in k of n unit: ...' for one tally() counted (its first finding already a
    MISMATCH)."""
    for check, label in labels.items():
        if check in per_check:
            print(f"FAILED ({check}) in {per_check[check]} of {n} {unit}: {label}")
        else:
            print(f"ok ({check}) {n} {unit}: {label}")


def mutant_report(mutants, findings_of, fail, what="of the replay", unit="case(s)", width=140, prefix="",
                  ignore=frozenset()):
    """The mutants {name: (what it breaks, the checks that must each catch it)}: findings_of(name)
    yields the findings [(check, msg)] of one case after another with the mutant in effect, and is
    read until every needed check has been seen (checks in ignore do not count). Prints a line for
    each mutant caught, fail()s one that a needed check never catches, and prints an 'ok' line when
    all are caught; prefix (e.g. '(7)') tags the MISMATCH and ok lines. Returns the number caught."""
    tag = f"{prefix} " if prefix else ""
    caught = 0
    for name, (broken, need) in mutants.items():
        seen, first, tries = {}, None, 0
        for found in findings_of(name):
            tries += 1
            found = [f for f in found if f[0] not in ignore]
            for check, msg in found:
                seen.setdefault(check, msg)
            first = first or (found[0] if found else None)
            if set(need) <= set(seen):
                break
        if first and set(need) <= set(seen):
            caught += 1
            print(f"   mutant {name} ({broken}): caught by ({', '.join(sorted(seen))}) in {tries} {unit}, e.g. "
                  f"({first[0]}) {first[1][:width]}")
        else:
            fail(f"{tag}mutant {name} ({broken}) not caught by check(s) {sorted(set(need) - set(seen))} on any of "
                 f"{tries} {unit}")
    if caught == len(mutants):
        print(f"{_ok(prefix)} all {caught} mutants {what} caught, each by every check it must trip")
    return caught


def main():
    t0, failures, fail = begin("rnn_persistent_mma_kernel: the MMA phase (w_s fill, h_s staging, mma_partial_sums "
                               "/ mma_tile_block) replayed on PTX mma.sync fragments",
                               ANCHORS, check_anchors, SOURCE_EDITS, NEUTRAL_EDIT)

    labels = {
        "1": "part[b, n] == h[b, slice] . W[u0 + n, slice] for b < m16, n < units (fp64, exact)",
        "2": "every part element (b < m16, n < units) written exactly once, nothing else, inside the buffer",
        "3": "every 8-byte load aligned, inside w_s / h_s's staged rows, within its row's first kslice positions",
        "4": "every 8-byte shared load conflict-free (each half-warp: 32 different banks)",
        "5": "mma_k_position a bijection onto [0, kslice); ldk_words = 8 (mod 32) >= the slice; k_steps * 8 words "
             "= the slice; part buffers aligned and within smem",
        "6": "the w_s fill and h_s staging write each (row, c < kslice) once, at mma_k_position(c), with the right "
             "value; that order is the one the loads + PTX layout expect",
        "7": "each tile block multiplies k-steps 0 ... k_steps - 1 once, in increasing order",
    }
    all_cases = cases()
    stats = {}
    per_check = {}
    shapes = set()
    seed = 0
    for case in all_cases:
        seed += 1
        W, prev = operands(case, seed)
        found, _ = replay(case, W, prev, stats=stats)
        shapes.add((case.elem, case.kslice * case.elem // 32, case.units // 8, round_up16(case.live) // 16))
        tally(found, per_check, fail)
    check_lines(labels, per_check, len(all_cases))
    ks = sorted({s[1] for s in shapes})
    nt = sorted({s[2] for s in shapes})
    mt = sorted({s[3] for s in shapes})
    print(f"   {len(all_cases)} CTAs: H {sorted({c.H for c in all_cases})}, tf32 and 16-bit; k_steps {ks}; "
          f"n tiles {nt}; m tiles {mt}; {stats.get('loads', 0)} 8-byte load instructions, "
          f"{stats.get('stores', 0)} float2 stores")
    ways = stats.get("store_ways", {})
    print(f"   (report) float2 stores to part_s, worst half-warp bank conflict per case: "
          + ", ".join(f"{w}-way in {n} case(s)" for w, n in sorted(ways.items())))

    # the reduce: the 8 ranks' partial sums, added as the kernel reads them, are h @ W.T
    red_cases = [Case(4, 300, 40, 29, 16, 1, 0), Case(2, 7, 20, 20, 1, 0, 0), Case(2, 300, 100, 61, 7, 2, 0),
                 Case(4, 100, 33, 33, 1, 0, 0)]
    red_bad = []
    for case in red_cases:
        seed += 1
        W, prev = operands(case, seed)
        parts = []
        for rank in range(CLUSTER):
            c = Case(case.elem, case.H, case.B, case.live, case.most, case.q, rank)
            found, part = replay(c, W, prev)
            red_bad += [m for _, m in found]
            parts.append(part)
        own = case.units // CLUSTER
        ldu = mma_ldu(case.units)
        u0 = case.q * case.units
        i = np.arange(case.B * own)
        wrong = 0
        for r in range(CLUSTER):  # the CTA of rank r reduces units r * own ...
            b, n = i // own, r * own + i % own
            sel = (b < case.live) & (u0 + n < case.H)
            b, n = b[sel], n[sel]
            z = sum(parts[c][b * ldu + n] for c in range(CLUSTER))
            wrong += int((z != (prev[b] * W[u0 + n]).sum(axis=1)).sum())
        if wrong:
            red_bad.append(f"{case.name}: {wrong} reduced outputs != h @ W.T")
    if red_bad:
        fail(f"(1) the reduce over 8 ranks: {red_bad[0]}")
    else:
        print(f"ok (1) {len(red_cases)} clusters x 8 ranks: the reduce's sum of parts[c][b * ldu + n] over the ranks "
              f"== h_(t-1)[b] . W[u0 + n] for b < live, u0 + n < H")

    # (8) one cluster: the reduce leaves h_t in the ranks' h_s, which the next step multiplies
    runs = one_cluster_runs(all_cases)
    labels8 = {
        "8a": "each step's reduce writes every (b < B, u < H) once over the 8 ranks' threads, into rank u // "
              "kslice, at rows < B and positions < kslice only (never the padding)",
        "8b": "the written h_s == the staging of h_t from global memory (as stored) on rows < live(next), "
              "positions mma_k_position(c), c < kslice",
        "8c": "h_s's rows [B, round_up16(B)), columns >= H and padding stay as the zero fill left them",
        "8d": "the next step's partial sums (summed over the ranks) from the written h_s == from a freshly staged "
              "h_s on rows < live(next)",
    }
    frag_runs = {j for j, r in enumerate(runs) if r[1] <= 100 and r[2] <= 40}
    frag_runs = set(sorted(frag_runs)[::max(1, len(frag_runs) // 3)][:3])
    st8, per8 = {}, {}
    for j, (elem, H, B, lives, backward, with_state0) in enumerate(runs):
        found = one_cluster_run(elem, H, B, lives, backward, with_state0, 3 * 10 ** 6 + j,
                                frag_steps=(1, 2, 3) if j in frag_runs else (), stats=st8)
        tally(found, per8, fail)
    check_lines(labels8, per8, len(runs), "one-cluster runs")
    print(f"   {len(runs)} one-cluster runs x 8 ranks, {st8.get('steps', 0)} steps ({st8.get('transitions', 0)} "
          f"step-to-step hand-overs through h_s): H {sorted({r[1] for r in runs})}, B {sorted({r[2] for r in runs})}, "
          f"tf32 and 16-bit, forward and backward; {st8.get('frag_ctas', 0)} CTAs' partial sums also replayed on "
          f"the PTX fragments from the written / the staged h_s")
    print(f"   (report) rows >= live(next) whose partial sums differ between the written and a staged h_s "
          f"(finished sequences' last outputs, forward; allowed: no output reads them): "
          f"{st8.get('rows_past_live_differ', 0)}")
    mutant_report({name: (what, {"8" + x for x in need}) for name, (what, need) in MUTANTS8.items()},
                  lambda name: (one_cluster_run(*run, 4 * 10 ** 6 + j, mut=frozenset([name]))
                                for j, run in enumerate(runs)),
                  fail, what="of the one-cluster h_s write (checks 8a-8d)", unit="one-cluster run(s)", width=160)

    # (report) the in-group order only has to agree between h_s and w_s for the product
    same = 0
    live_cases = [c for c in all_cases if c.rank * c.kslice < c.H and c.q * c.units < c.H][:20]  # nonzero products
    for n_try, case in enumerate(live_cases, 1):
        W, prev = operands(case, 2 * 10 ** 6 + n_try)
        found = replay(case, W, prev, mut=frozenset(["order_identity"]))[0]
        same += not [f for f in found if f[0] in "123457"]
    print(f"   (report) with both h_s and w_s stored in order 0 1 2 3 4 5 6 7 instead, the product is unchanged "
          f"(checks 1-5, 7 pass) on {same} of {len(live_cases)} cases: one in-group order in both operands permutes "
          f"k alike; 0 4 1 5 2 6 3 7 is the order that makes PTX's k the row's k (check 6)")

    # mutants: each must be caught, by each of its checks on some case
    def mutant_cases(name):
        for n_try, case in enumerate(all_cases, 1):
            yield replay(case, *operands(case, 10 ** 6 + n_try), mut=frozenset([name]))[0]

    mutant_report(MUTANTS, mutant_cases, fail, ignore=REPORT_ONLY)
    finish(failures, t0)


if __name__ == "__main__":
    main()
