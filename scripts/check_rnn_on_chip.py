"""Replays, in numpy, csrc/cuda/rnn.cu's on-chip RNN kernels (RNNKERN_RNN_PATH=cta): rnn_on_chip_kernel
<scalar_t, kTiles> (W_hh in shared memory; checks (1)-(12)) and rnn_on_chip_wreg_kernel<scalar_t>
(RNNKERN_RNN_ON_CHIP_W=registers, B <= 8; checks (Ra)-(Rg), last below).

rnn_on_chip_kernel: one thread-block cluster of `ctas` CTAs (1..16; one CTA is a plain launch) of 512
threads (16 warps), CTA `rank` holding rows = 64 kTiles = hpad / ctas rows of W_hh (units u0 = rank *
rows ..; hpad = on_chip_hpad(H)) over all of k, all ranks together over 3-4 steps (1-2 on a few): the W
fill (16-bit: rows x mma_ldk(hpad, 2) elements in mma_k_position's order; fp32: TF32 split into a hi16
plane of rows * hpad / 2 32-bit words and a lo8 plane of rows * hpad / 2 16-bit units, the value pair p
of local row n (unit u0 + n) at unit n * hpad / 2 + on_chip_pair_unit(n, p)), then on_chip_stage_h0 (the
h_s buffers (one, or two alternating by step in a cluster) zeroed, __syncthreads, h_0 placed in buffer 0
of every rank, __syncthreads, a cluster's arrive + wait), each warp's k-half
of the product (n_group = warp % 8, k_half = warp / 8, kTiles tiles a warp, the pipelined k-loop, 8-byte
A loads (h's rows 8..15 only at B > 8, zeros otherwise) and 16-bit W loads, fp32's 32-bit hi + 16-bit lo
loads recombined by __byte_perm; with one tile a warp its even k-steps in acc[0], odd in acc[1], added
after the loop), the upper half's float2 stores into part_s, the lower half's epilogue (acc + part_s; y
into this CTA's own columns of h_next, every step), then on_chip_send (one CTA: __syncthreads; a cluster:
__syncthreads, the all-gather (16-byte pieces of the CTA's columns [u0, u0 + rows) of rows < B into ranks
(rank + q) % ctas, q = 1 .. ctas - 1, by mapa + st.shared::cluster.v4, on all but the last step),
__syncwarp, the arrival), the outputs to seq[t] (fp32 from acc, 16-bit read back from h_next), and
on_chip_wait (a cluster: the wait) before each next step's products and after the loop. Fragment
semantics are PTX's (ISA, "Matrix Fragments for mma.m16n8k8" .tf32 and "... mma.m16n8k16" .bf16 /
.f16; tables imported from scripts/check_rnn_mma.py); __byte_perm(x, y, s): result byte i = byte (s >>
4 i) & 7 of x.b0..b3 (0-3), y.b0..b3 (4-7).

Each rank's shared memory is a byte array (little-endian, writes counted); registers are bit patterns;
a remote store lands in the peer's array at the same offset (mapa keeps it). Within a step the ranks
run one after another (rank 0's whole step, all-gather included, before rank 1 multiplies: a legal
order, as only the cluster barrier orders the ranks), so a store into a buffer still being multiplied
changes what a later rank reads. The barriers are modelled as epochs for the hazard check: a CTA's
__syncthreads, and the cluster barrier's two halves (barrier.cluster.arrive.release at the end of a
step, wait.acquire before the next step's products; an access before a rank's k-th arrival happens
before any access after some rank's k-th wait). Values: W fp32 as random fp32 bit patterns already TF32
on half the cases, with bits 12..8 random too on the others (the product model drops bits 12..0 as the
tensor core does), bf16 / f16 random with a narrow exponent range; h_0, the pre-activations z (and
backward's forward outputs hf) small integers; step_epilogue is modelled as y = (floor(z + sum + hf)
mod 7) - 3, a small integer again, so every product and sum is exact in fp64 and the recurrence is
compared bit for bit (step_epilogue's arithmetic and the fp32 accumulation order are not modelled).
Cases: H in {1, 7, 63, 64, 65, 129, 200, 256, 300, 512, 640, 1000, 1024} x every ctas choose_on_chip
takes on sm_90 (its default hpad / 64, and each RNNKERN_RNN_CLUSTER that fits; sm_80's one CTA is among
them; fp32 H1000 / H1024 fit at none), fp32 (TF32) and bf16 (f16 on a few), B in {1, 3, 8, 16} (all
four to H256, two on H300 / H512, one from H640; B 9 and 12 on a few), live = B, fewer, or 0 on some
steps, forward and backward, with and without h_0. Checks:
 (1) each rank's W fill writes each byte of its planes (fp32) / each (n < rows, position < hpad)
     element (16-bit) exactly once, nothing else; each lane's B registers (fp32: __byte_perm of the hi
     word and the lo unit) equal the PTX B layout of W[u0 + n, k] bit for bit (fp32: bits 31..8); every
     (n tile, k-step) of the rank loaded once over its 16 warps (W is not written after the fill, (6),
     so the loads are replayed once per rank);
 (2) the h_s zero fill writes each byte of the buffers once; h_0 placed in buffer 0 of every rank ==
     state0[b, col] at b * ldh + mma_k_position(col), zero elsewhere (and with no state0); buffer 1 zero;
 (3) a step: the A registers == PTX's A layout of h_{t-1} (the reference, staged); each half
     multiplies k-steps 0 .. half_steps - 1 once in order; acc + part_s == h_{t-1} @ W[u0 .. u0 +
     rows).T (fp64, exact) for all 16 rows and the CTA's units (0 when live is 0); part_s stored once
     per (b < 16, n < rows), read once; z / hf loaded only where the same thread then writes the output;
 (4) over the steps: each (b < B, u < H) output written to seq[t] once a step, by the rank whose rows
     hold u, == the reference recurrence (0 at b >= live); after step s < T - 1 EVERY rank's buffer
     (s + 1) % buffers == a fresh staging of h_t (each (b < B, position < hpad) written once, rows >= B
     and positions >= hpad zero, the other buffer untouched); at the last step each rank writes only its
     own columns (read back for the outputs), no all-gather;
 (5) no bank conflicts in the fp32 hi-plane 32-bit and lo-plane 16-bit loads (a warp), in the 16-bit W
     and the A 8-byte loads (each half-warp), nor in the all-gather's 16-byte loads (each quarter-warp);
     the float2 stores' (and the epilogue's part_s reads') conflicts are reported;
 (6) every access aligned and inside its region (A loads inside the step's buffer, rows' first hpad
     positions; W loads inside their local row), no read of an unwritten byte, no store into W after
     the fill, on_chip_smem == the regions' end, regions 16-byte aligned;
 (7) hazards, from the barrier epochs: no h_s column slab (or part_s) of any rank is written and read,
     or written twice, without a barrier ordering the two (the same CTA: any __syncthreads or the
     cluster barrier; two ranks: an arrival and a wait); so a cluster never stores, during step s, into
     the buffer any rank multiplies at step s (also checked directly), and one CTA writes its single
     buffer only after the first __syncthreads; every rank's arrivals and waits pair up;
 (8) one tile a warp (rows 64): every k-step multiplied exactly once, into acc[k-step % 2]; after the
     add, each half's acc[0] == h @ W.T over its half of k for the CTA's rows;
 (9) the all-gather: every 16-byte piece aligned, inside row b < B's positions [u0, u0 + rows) of the
     next buffer (mma_k_position keeps a rank's units in that run, (10)); each (b, piece) into every other
     rank exactly once, starting with rank + 1;
 (10) on_chip_smem(hpad, ctas, elem) == W + buffers x h_s + part_s as the pointers lay them out for
     every H 1..1024 and every ctas the kernel accepts; choose_on_chip (modelled, sm_80 / sm_90, every
     RNNKERN_RNN_CLUSTER 0..17) takes a ctas exactly where the launch's instance (kTiles = rows / 64) and
     the kernel's guard accept it and on_chip_smem <= sharedMemPerBlockOptin (232448): fp32 H1024 fits at
     no ctas, bf16 H1024 at 16, fp32 H640 at 10;
 (11) mutants of the replay (the old one-CTA ones; rows 8..15 of h loaded only from B 10; u0 missing in
     the fill / z loads / epilogue / outputs / all-gather, the buffer index not alternating, the own
     columns not written, the all-gather from q = 0, acc[1] not added, the all-gather at the last step,
     the first __syncthreads, the one before the all-gather, the step's wait or the start's barrier
     dropped) each caught by the checks it must trip; the pair unit swizzled by the global row is shown
     equivalent (u0 % 8 == 0) and dropped;
 (12) anchors: the source lines of both kernels, the on_chip_* helpers (on_chip_check_cluster,
     on_chip_stage_h0, on_chip_send, on_chip_wait among them), wreg_word, choose_on_chip and
     launch_on_chip the replays model must still be in rnn.cu / tensor_core.cuh (comments and
     whitespace ignored; a few of the registers kernel's take any of the forms tried, which the replay
     models alike: wreg_word's 16-bit word, its zeros past k_steps, the k-loop's body, the part_s
     reads); a missing one is a MISMATCH naming it; each of the source edits (both kernels') must make
     one go missing; a comment-only edit is not flagged.

rnn_on_chip_wreg_kernel: the same cluster shape with 64 rows a CTA (ctas = hpad / 64, rank r's units u0 =
64 r ..; one CTA before sm_90, so H <= 64 there), the same h_s buffers, on_chip_stage_h0 / on_chip_send /
on_chip_wait (the Cluster class replays them for both kernels), but the MMA's operands swapped: A (m16,
row) = W's rows, in registers for the whole sequence (lane (g, t) of warp w: m_tile = w % 4, k_part = w /
4, k_steps = on_chip_wreg_steps = hpad / 4 / kk (kk 8 tf32, 16 16-bit), k_first = k_part * k_steps;
wa[ks][0] = wreg_word(u0 + m_tile * 16 + g, c0 = (k_first + ks) * kk + t * per_word), [1] row + 8, [2] /
[3] at c1 = c0 + 4 per_word; zero for ks >= k_steps; 16-bit words pack columns c (low) and c + 1), B
(n8, col) = h's batch rows 0..7 (B <= 8: one n8 tile), one 8-byte load of h_s (mma_k_position's order)
at word g * ldh_words + 2t + (k_first + ks) * 8 a k-step, k-step ks + 1's issued before k-step ks's
MMA; even k-steps into acc[0], odd into acc[1], summed after; k parts 1..3 store D as float2 into
part_s[((k_part - 1) * 64 + m_tile * 16 + g (+ 8)) * kWregLdp + 2t]; after the __syncthreads the
k_part 0 warps (which loaded z / hf before the wait) add part_s quarters 0, 1, 2 in order (batch rows
b0 = 2t, b0 + 1 of unit g or g + 8: a float2 a quarter, or two floats; the anchors take either, the
replay reads rnn.cu for the width), run the epilogue, write h_t into their own h_next, on_chip_send,
then the outputs. The same value model and reference as above. Cases: H in {1, 7, 64, 65, 129, 200,
300, 512, 640, 1000, 1024} at hpad / 64 CTAs (fp32 to H512: choose_on_chip refuses 640 up, checked in
(Re) only), fp32 and bf16 (f16 on three), B in {1, 3, 8} (all three to H300; B 9 .. 16 the host
refuses, (Re)), live B / fewer / 0, forward and backward, with and without h_0, 1-4 steps. Checks:
 (Ra) without values, each register half's (row, column) is PTX's A (row, col) of the warp's m tile and
     quarter k-step ("mma.m16n8k8" .tf32 a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4);
     "mma.m16n8k16" a0 (g, 2t..2t+1), a1 (g + 8, ..), a2 (g, 2t+8..), a3 (g + 8, 2t+8..)) and the 16 warps
     hold each (row < 64, k < hpad) of the CTA's W once; with values, every wa register == PTX's A
     layout of W bit for bit, zeros past H and for ks >= k_steps;
 (Rb) the prefetching k-loop multiplies k-steps 0 .. k_steps - 1 in order, each with its own k-step's
     load; each B register pair == PTX's B layout of h_(t-1) (b0 (k t / 2t..2t+1, n g), b1 (k t + 4 /
     2t+8.., n g), the warp's k-step); loads 8-byte
     aligned, inside the step's buffer (16 rows' first hpad positions), of written bytes, no half-warp
     bank conflict;
 (Rc) each warp's acc[0] (the chains summed) == h @ W.T over its quarter of k; acc + part_s == h @ W[u0 ..
     u0 + 64).T (0 at live 0); each (b < B, u < H) output written once a step by the owning k_part 0
     lane (the one that loaded its z / hf), == the reference recurrence; the staging as (2), every
     rank's next buffer == a fresh staging of h_t after each non-last step, the all-gather as (9);
 (Rd) part_s: each (quarter 1..3, unit < 64, batch < 8) stored once (float2, aligned,
     inside 3 x 64 x kWregLdp floats), read once by the epilogue (float2 reads aligned), nothing else;
     the stores' and the reads' bank conflicts reported;
 (Re) on_chip_wreg_smem == h_bufs x buffers + part_s as the pointers lay them out for every H the
     kernel takes; choose_on_chip's registers branch (modelled; sm_80 / sm_90, RNNKERN_RNN_CLUSTER unset
     / 1..17, B 1 / 8 / 9 / 16 / 17, H 1..1099) takes exactly where the kernel's __trap guard holds and
     that fits sharedMemPerBlockOptin: B <= 8, fp32 H <= 512, 16-bit H <= 1024 (default ctas), sm_80
     H <= 64;
 (Rf) hazards with the epoch model of (7);
 (Rg) mutants, each caught by the checks it must trip: a2 / a3 at c0, rows g + 8 missing in wa, k_first
     missing, part_s's quarter index k_part (not k_part - 1), the chains not summed, wreg_word's 16-bit
     halves swapped, the first __syncthreads dropped, the registers past k_steps not zero, the prefetch
     of k-step ks instead of ks + 1 (the order of the quarters' sum cannot show in exact values: an
     anchor and a source edit cover it).

    python scripts/check_rnn_on_chip.py

This checks the index arithmetic and the buffer / barrier protocol against the documented PTX layouts,
not the hardware: the CUDA tests in tests/ops/test_rnn.py on a GPU are what verify the kernel."""
import collections
import importlib.util
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_sibling():
    """scripts/check_rnn_mma.py as a module (its main() runs only under __main__; no sys.path change)."""
    path = os.path.join(ROOT, "scripts", "check_rnn_mma.py")
    spec = importlib.util.spec_from_file_location("check_rnn_mma", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_mma = _load_sibling()
_code, _body = _mma._code, _mma._body          # comment / whitespace stripping, a function's body
ptx_tables = _mma.ptx_tables
mma_ldk, mma_k_position = _mma.mma_ldk, _mma.mma_k_position  # anchored (LAYOUT_ANCHORS)
G, T = _mma.G, _mma.T                           # lane // 4, lane % 4
# the report's scaffolding, the k-loop, the fragment product and the float2 stores (see check_rnn_mma.py)
finish, tally, check_lines = _mma.finish, _mma.tally, _mma.check_lines

NTHREADS = 512      # kOnChipThreads
NWARPS = NTHREADS // 32
TILES = 4           # kOnChipMaxTilesPerWarp
MAX_CTAS = 16       # kOnChipMaxCtas = kMaxClusterCtas
MAX_B = 16          # kOnChipMaxBatch
OPTIN = 227 * 1024  # sharedMemPerBlockOptin of an H100 / H200 (232448)
SEL_B0, SEL_B1 = 0x1046, 0x3256
REPORT_ONLY = set()


# ---------------------------------------------------------------------------------------------
# anchors

# rnn_on_chip_wreg_kernel (RNNKERN_RNN_ON_CHIP_W=registers): "wk" its body, "ww" wreg_word's, "co" /
# "lo" choose_on_chip's / launch_on_chip's (its instance: ANCHORS' launch line)
WREG_ANCHORS = [
    ("kWregMaxSteps 16", "constexpr int kWregMaxSteps = 16;", "f"),
    ("kWregLdp 24", "constexpr int kWregLdp = 24;", "f"),
    ("on_chip_wreg_steps: a quarter of hpad in k8 (fp32) / k16 steps",
     "__host__ __device__ constexpr int on_chip_wreg_steps(int hpad, int elem_size) { return hpad / 4 / "
     "(elem_size == 4 ? 8 : 16); }", "f"),
    ("on_chip_wreg_smem: (2 in a cluster, else 1) h_s + 3 x 64 x kWregLdp floats",
     "__host__ __device__ constexpr size_t on_chip_wreg_smem(int hpad, int ctas, int elem_size) { return "
     "on_chip_h_buffers(ctas) * on_chip_h_bytes(hpad, elem_size) + static_cast<size_t>(3) * 64 * kWregLdp * "
     "sizeof(float); }", "f"),
    ("wreg_word: W[u, col] through mma_operand, zero past H",
     "const auto at = [&](int col) { return u < p.H && col < p.H ? mma_operand(p.weight[static_cast<int64_t>(u) * p.H "
     "+ col]) : scalar_t(0); };", "ww"),
    # (the forms of the 16-bit word tried: the halves' bits by .x, of named values or not, or by a cast)
    ("wreg_word: fp32 the value's bits; 16-bit column c in the low half, c + 1 in the high",
     tuple("if constexpr (sizeof(scalar_t) == 4) { return __float_as_uint(at(c)); } else { " + form + " }" for form in (
         "const scalar_t lo = at(c), hi = at(c + 1); return static_cast<uint32_t>(lo.x) | static_cast<uint32_t>(hi.x) "
         "<< 16;",
         "return static_cast<uint32_t>(at(c).x) | static_cast<uint32_t>(at(c + 1).x) << 16;",
         "const scalar_t lo = at(c), hi = at(c + 1); return static_cast<uint32_t>(reinterpret_cast<const "
         "uint16_t&>(lo)) | static_cast<uint32_t>(reinterpret_cast<const uint16_t&>(hi)) << 16;")), "ww"),
    ("wreg: one instance per scalar_t", "template <typename scalar_t> __global__ void "
     "__launch_bounds__(kOnChipThreads, 1) rnn_on_chip_wreg_kernel(PersistentParams<scalar_t> p) {", "f"),
    ("wreg: kTf32, kElem", "constexpr bool kTf32 = std::is_same_v<scalar_t, float>; constexpr int kElem = "
     "sizeof(scalar_t);", "wk"),
    ("wreg: rows 64, kk 8 (tf32) / 16", "constexpr int rows = 64, kk = kTf32 ? 8 : 16;", "wk"),
    ("wreg: hpad; ctas = gridDim.x, rank = blockIdx.x from sm_90, else one CTA",
     "const int hpad = on_chip_hpad(p.H); #if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 const int ctas = "
     "static_cast<int>(gridDim.x), rank = static_cast<int>(blockIdx.x); #else constexpr int ctas = 1, rank = 0; "
     "#endif", "wk"),
    ("wreg: k_steps = on_chip_wreg_steps", "const int k_steps = on_chip_wreg_steps(hpad, kElem);", "wk"),
    ("wreg: the guard (B <= 8)",
     "if (p.B > 8 || blockDim.x != kOnChipThreads || static_cast<int>(gridDim.x) != ctas || hpad != ctas * rows || "
     "k_steps > kWregMaxSteps) __trap(); on_chip_check_cluster(ctas, rank); const int u0 = rank * rows;", "wk"),
    ("wreg: ldh, ldh_words", "const int ldh = mma_ldk(hpad, kElem); const int ldh_words = ldh * kElem / 4;", "wk"),
    ("wreg: h_bufs at byte 0, buffers, part_s after them",
     "scalar_t* h_bufs = reinterpret_cast<scalar_t*>(smem_raw); const int buffers = on_chip_h_buffers(ctas); float* "
     "part_s = reinterpret_cast<float*>(h_bufs + buffers * 16 * ldh);", "wk"),
    ("wreg: warp, lane, g, t; m_tile, k_part; k_first",
     "const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4; const int m_tile = "
     "warp % 4, k_part = warp / 4; const int k_first = k_part * k_steps;", "wk"),
    ("wreg: wa[kWregMaxSteps][4], row u = u0 + m_tile * 16 + g, every ks < kWregMaxSteps",
     "uint32_t wa[kWregMaxSteps][4]; { const int u = u0 + m_tile * 16 + g, per_word = 4 / kElem; #pragma unroll\n "
     "for (int ks = 0; ks < kWregMaxSteps; ++ks) {", "wk"),
    # (either way of zeroing the k-steps past k_steps: `mine ? .. : 0u`, or column H, read as zero)
    ("wreg: c0, c1 = c0 + 4 per_word; wa[ks] = (u, c0), (u + 8, c0), (u, c1), (u + 8, c1), zero past k_steps; then "
     "on_chip_stage_h0",
     ("const int c0 = (k_first + ks) * kk + t * per_word, c1 = c0 + 4 * per_word; const bool mine = ks < k_steps; "
      "wa[ks][0] = mine ? wreg_word(p, u, c0) : 0u; wa[ks][1] = mine ? wreg_word(p, u + 8, c0) : 0u; wa[ks][2] = mine "
      "? wreg_word(p, u, c1) : 0u; wa[ks][3] = mine ? wreg_word(p, u + 8, c1) : 0u; } } on_chip_stage_h0(p, h_bufs, "
      "buffers, ldh, ctas);",
      "const int c0 = ks < k_steps ? (k_first + ks) * kk + t * per_word : p.H, c1 = c0 + 4 * per_word; wa[ks][0] = "
      "wreg_word(p, u, c0); wa[ks][1] = wreg_word(p, u + 8, c0); wa[ks][2] = wreg_word(p, u, c1); wa[ks][3] = "
      "wreg_word(p, u + 8, c1); } } on_chip_stage_h0(p, h_bufs, buffers, ldh, ctas);"), "wk"),
    ("wreg: t_idx, cur, live, h_s = buffer s % buffers, h_next = (s + 1) % buffers",
     "const int t_idx = p.backward ? p.T - 1 - s : s; scalar_t* cur = p.seq + t_idx * step; const int live = p.live ? "
     "p.live[t_idx] : p.B; const scalar_t* h_s = on_chip_h(h_bufs, s, buffers, ldh); scalar_t* h_next = "
     "on_chip_h(h_bufs, s + 1, buffers, ldh);", "wk"),
    ("wreg: z / hf by the first quarter (u = u0 + m_tile * 16 + g + 8 (r / 2), b = 2t + r % 2), then on_chip_wait",
     "const int u = u0 + m_tile * 16 + g + 8 * (r / 2), b = 2 * t + r % 2; z[r] = hf[r] = 0.f; if (k_part == 0 && b "
     "< live && u < p.H) { const int64_t o = static_cast<int64_t>(b) * p.H + u; z[r] = static_cast<float>(cur[o]); "
     "if (p.backward) hf[r] = static_cast<float>(p.act_out[t_idx * step + o]); } } if (s > 0) on_chip_wait(ctas);",
     "wk"),
    ("wreg: two chains; multiply only when live > 0", "float acc[2][4] = {}; if (live > 0) {", "wk"),
    ("wreg: b_row, next = k-step 0's 8-byte load",
     "const uint32_t* b_row = reinterpret_cast<const uint32_t*>(h_s) + g * ldh_words + 2 * t + k_first * 8; uint2 "
     "next = *reinterpret_cast<const uint2*>(b_row);", "wk"),
    ("wreg: k-steps 0 .. k_steps - 1: b = next, k-step ks + 1's load (if any), the MMA into acc[ks % 2]",
     "for (int ks = 0; ks < kWregMaxSteps; ++ks) { if (ks >= k_steps) break; const uint32_t b[2] = {next.x, "
     "next.y}; if (ks + 1 < k_steps) next = *reinterpret_cast<const uint2*>(b_row + (ks + 1) * 8); "
     "mma_tile<Native>(acc[ks % 2], wa[ks], b); }", "wk"),
    ("wreg: the chains summed", "mma_tile<Native>(acc[ks % 2], wa[ks], b); } #pragma unroll\n for (int r = 0; r < 4; "
     "++r) acc[0][r] += acc[1][r]; }", "wk"),
    ("wreg: quarters 1..3 store float2 at ((k_part - 1) * rows + m_tile * 16 + g) * kWregLdp + 2t",
     "if (k_part > 0) { float* out = part_s + ((k_part - 1) * rows + m_tile * 16 + g) * kWregLdp + 2 * t; "
     "*reinterpret_cast<float2*>(out) = make_float2(acc[0][0], acc[0][1]); *reinterpret_cast<float2*>(out + 8 * "
     "kWregLdp) = make_float2(acc[0][2], acc[0][3]); }", "wk"),
    ("wreg: the first __syncthreads, publish, the first quarter's epilogue",
     "__syncthreads(); trace_stamp(p.trace, s, 3); const bool publish = s + 1 < p.T; if (k_part == 0) {", "wk"),
    ("wreg: epilogue (half: ul, u, b0), sum = acc of the unit's two batch rows",
     "for (int half = 0; half < 2; ++half) { const int ul = m_tile * 16 + g + 8 * half, u = u0 + ul, b0 = 2 * t; "
     "float sum[2] = {acc[0][2 * half], acc[0][2 * half + 1]}; #pragma unroll\n for (int q = 0; q < 3; ++q)", "wk"),
    # (either read of part_s: a float2 a quarter, or two floats; WREG_PART_READ: the one in rnn.cu)
    ("wreg: + part_s quarters 0, 1, 2 in order at (q * rows + ul) * kWregLdp + b0 (+ 1)",
     ("for (int q = 0; q < 3; ++q) { const float2 v = *reinterpret_cast<const float2*>(part_s + (q * rows + ul) * "
      "kWregLdp + b0); sum[0] += v.x, sum[1] += v.y; } #pragma unroll\n for (int e = 0; e < 2; ++e) {",
      "for (int q = 0; q < 3; ++q) #pragma unroll\n for (int e = 0; e < 2; ++e) sum[e] += part_s[(q * rows + ul) * "
      "kWregLdp + b0 + e]; #pragma unroll\n for (int e = 0; e < 2; ++e) {"), "wk"),
    ("wreg: r = 2 half + e, b = b0 + e", "for (int e = 0; e < 2; ++e) { const int r = 2 * half + e, b = b0 + e;",
     "wk"),
    ("wreg: y (0 at b >= live, u >= H), acc = y, h_t into h_next (b < B), then on_chip_send",
     "const scalar_t y = static_cast<scalar_t>( b < live && u < p.H ? step_epilogue(z[r] + sum[e], hf[r], "
     "p.relu, p.backward) : 0.f); acc[0][r] = static_cast<float>(y); if (b < p.B) h_next[b * ldh + "
     "mma_k_position(u, kElem)] = mma_operand(y); } } } on_chip_send(h_next, ldh, u0, rows, p.B, ctas, rank, "
     "publish); if (k_part == 0) {", "wk"),
    ("wreg: the outputs (b < B, u < H): fp32 from acc, 16-bit read back from h_next",
     "const int u = u0 + m_tile * 16 + g + 8 * (r / 2), b = 2 * t + r % 2; if (b >= p.B || u >= p.H) "
     "continue; if constexpr (kTf32) cur[static_cast<int64_t>(b) * p.H + u] = acc[0][r]; else "
     "cur[static_cast<int64_t>(b) * p.H + u] = h_next[b * ldh + mma_k_position(u, kElem)];", "wk"),
    ("wreg: on_chip_wait after the loop", "trace_stamp(p.trace, s, 4); } on_chip_wait(ctas); }", "wk"),
    ("host: the registers branch after the shared checks (64 rows a CTA, <= kWregMaxSteps, on_chip_wreg_smem)",
     "(ctas > 1 && slabs / ctas == kOnChipMaxTilesPerWarp)) { c.why = \"RNNKERN_RNN_CLUSTER does not split H_pad into "
     "64-256 rows a CTA (256: one CTA)\"; } else if (env_equals(\"RNNKERN_RNN_ON_CHIP_W\", \"registers\")) { const int "
     "hpad = static_cast<int>(slabs * 64); const size_t smem = on_chip_wreg_smem(hpad, static_cast<int>(ctas), elem); "
     "if (B > 8) c.why = \"W_hh in registers holds batch <= 8\"; else if (slabs != ctas && !clusters) c.why = "
     "\"W_hh in registers above H 64 needs sm_90 clusters\"; else if (slabs != ctas || on_chip_wreg_steps(hpad, "
     "elem) > kWregMaxSteps) c.why =", "co"),
    ("host: registers fits <= sharedMemPerBlockOptin",
     "else if (smem > prop.sharedMemPerBlockOptin) c.why = \"h exceeds shared memory\"; else c = {true, "
     "static_cast<int>(ctas), smem, \"\", true}; }", "co"),
]


# (what the replay assumes, the code that says so, where): "f" rnn.cu, "tc" tensor_core.cuh,
# "k" rnn_on_chip_kernel's body, "co" choose_on_chip's, "lo" launch_on_chip's; first the helpers'
# shared with check_rnn_mma.py (mma_ldk, mma_k_position, pipelined_k_steps), last mma_tile's PTX
ANCHORS = _mma.LAYOUT_ANCHORS + [
    # constants and helpers
    ("kMaxClusterCtas 16", "constexpr int kMaxClusterCtas = 16;", "f"),
    ("kOnChipThreads 512", "constexpr int kOnChipThreads = 512;", "f"),
    ("kOnChipMaxBatch 16", "constexpr int kOnChipMaxBatch = 16;", "f"),
    ("kOnChipMaxTilesPerWarp 4", "constexpr int kOnChipMaxTilesPerWarp = 4;", "f"),
    ("kOnChipMaxCtas = kMaxClusterCtas", "constexpr int kOnChipMaxCtas = kMaxClusterCtas;", "f"),
    ("on_chip_hpad: round up to 64",
     "__host__ __device__ constexpr int on_chip_hpad(int H) { return (H + 63) / 64 * 64; }", "f"),
    ("on_chip_w_bytes: 3 rows hpad (planes) / rows x mma_ldk(hpad, 2) x 2",
     "__host__ __device__ constexpr size_t on_chip_w_bytes(int rows, int hpad, int elem_size) { return elem_size == 4 "
     "? static_cast<size_t>(rows) * hpad * 3 : static_cast<size_t>(rows) * mma_ldk(hpad, 2) * 2; }", "f"),
    ("on_chip_h_bytes: 16 x mma_ldk(hpad, elem) elements",
     "__host__ __device__ constexpr size_t on_chip_h_bytes(int hpad, int elem_size) { return static_cast<size_t>(16) "
     "* mma_ldk(hpad, elem_size) * elem_size; }", "f"),
    ("on_chip_smem: W + (2 in a cluster, else 1) h_s + 16 x (rows + 8) floats",
     "__host__ __device__ constexpr size_t on_chip_smem(int hpad, int ctas, int elem_size) { const int rows = hpad / "
     "ctas; return on_chip_w_bytes(rows, hpad, elem_size) + on_chip_h_buffers(ctas) * on_chip_h_bytes(hpad, "
     "elem_size) + static_cast<size_t>(16) * (rows + 8) * sizeof(float); }", "f"),
    ("on_chip_h_buffers: 2 in a cluster, else 1",
     "__host__ __device__ constexpr int on_chip_h_buffers(int ctas) { return ctas > 1 ? 2 : 1; }", "f"),
    ("on_chip_h: buffer s % buffers",
     "__device__ __forceinline__ scalar_t* on_chip_h(scalar_t* h_bufs, int s, int buffers, int ldh) { return h_bufs + "
     "(s % buffers) * 16 * ldh; }", "f"),
    ("on_chip_pair_unit: XOR swizzle by n % 8",
     "__host__ __device__ constexpr int on_chip_pair_unit(int n, int p) { return p ^ ((n % 8) * 4); }", "f"),
    ("cluster arrive: barrier.cluster.arrive.release",
     '__device__ __forceinline__ void on_chip_cluster_arrive() { #if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 '
     'asm volatile("barrier.cluster.arrive.release.aligned;\\n" ::: "memory");', "f"),
    ("cluster wait: barrier.cluster.wait.acquire",
     '__device__ __forceinline__ void on_chip_cluster_wait() { #if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 '
     'asm volatile("barrier.cluster.wait.acquire.aligned;\\n" ::: "memory");', "f"),
    ("store_peer: mapa then a 16-byte st.shared::cluster.v4.u32",
     '__device__ __forceinline__ void on_chip_store_peer(uint32_t smem_addr, uint32_t rank, const uint4& v) { '
     '#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 uint32_t remote; '
     'asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\\n" : "=r"(remote) : "r"(smem_addr), "r"(rank)); '
     'asm volatile("st.shared::cluster.v4.u32 [%0], {%1, %2, %3, %4};\\n" ::"r"(remote), "r"(v.x), "r"(v.y), '
     '"r"(v.z), "r"(v.w) : "memory");', "f"),
    # choose_on_chip (host)
    ("host: slabs = ceil(H / 64)", "const int64_t slabs = (H + 63) / 64;", "co"),
    ("host: clusters from sm_90", "const bool clusters = prop.major >= 9;", "co"),
    ("host: RNNKERN_RNN_CLUSTER", "const int asked = env_positive_int(\"RNNKERN_RNN_CLUSTER\", 0);", "co"),
    ("host: default ctas = slabs on sm_90, else 1",
     "const int64_t ctas = asked > 0 ? asked : clusters ? slabs : 1;", "co"),
    ("host: sm_80", "} else if (prop.major < 8) {", "co"),
    ("host: B <= 16", "} else if (B > kOnChipMaxBatch) {", "co"),
    ("host: H <= 1024", "} else if (slabs > int64_t{kOnChipMaxCtas}) {", "co"),
    ("host: sm_80 by default only H <= 256",
     "} else if (!clusters && asked == 0 && slabs > kOnChipMaxTilesPerWarp) {", "co"),
    ("host: ctas > 1 needs clusters", "} else if (ctas > 1 && !clusters) {", "co"),
    ("host: ctas divides slabs, <= 4 slabs a CTA, 4 only alone",
     "} else if (ctas > kOnChipMaxCtas || slabs % ctas != 0 || slabs / ctas > kOnChipMaxTilesPerWarp || "
     "(ctas > 1 && slabs / ctas == kOnChipMaxTilesPerWarp)) {", "co"),
    ("host: smem from slabs * 64, ctas",
     "const size_t smem = on_chip_smem(static_cast<int>(slabs * 64), static_cast<int>(ctas), elem);", "co"),
    ("host: fits <= sharedMemPerBlockOptin",
     "if (smem > prop.sharedMemPerBlockOptin) c.why = \"W_hh and h exceed shared memory\"; "
     "else c = {true, static_cast<int>(ctas), smem, \"\"};", "co"),
    ("launch: the instance kTiles = rows / 64 (or rnn_on_chip_wreg_kernel)",
     "const Kernel kernels[] = {rnn_on_chip_kernel<scalar_t, 1>, "
     "rnn_on_chip_kernel<scalar_t, 2>, rnn_on_chip_kernel<scalar_t, 3>, rnn_on_chip_kernel<scalar_t, 4>}; "
     "const Kernel kernel = c.registers ? rnn_on_chip_wreg_kernel<scalar_t> : kernels[on_chip_hpad(params.H) / c.ctas "
     "/ 64 - 1];", "lo"),
    ("launch: a cluster of c.ctas CTAs, c.ctas in all, kOnChipThreads, c.smem",
     "ClusterLaunch launch(c.ctas, c.ctas, c.smem, kOnChipThreads);", "lo"),
    # the kernel: geometry and pointers
    ("kPlanes: fp32", "constexpr bool kPlanes = std::is_same_v<scalar_t, float>;", "k"),
    ("kElem", "constexpr int kElem = sizeof(scalar_t);", "k"),
    ("kTiles: the instance", "template <typename scalar_t, int kTiles> __global__ void __launch_bounds__("
     "kOnChipThreads, 1) rnn_on_chip_kernel(PersistentParams<scalar_t> p) {", "f"),
    ("rows = 64 kTiles", "constexpr int rows = 64 * kTiles;", "k"),
    ("one tile a warp: kTiles == 1", "constexpr bool kOneTile = kTiles == 1;", "k"),
    ("hpad", "const int hpad = on_chip_hpad(p.H);", "k"),
    ("clusters: sm_90, below 4 tiles", "#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 constexpr bool kClusters = "
     "kTiles < 4; #else constexpr bool kClusters = false; #endif", "k"),
    ("ctas = gridDim.x, rank = blockIdx.x (else one CTA)", "const int ctas = kClusters ? static_cast<int>(gridDim.x) "
     ": 1, rank = kClusters ? static_cast<int>(blockIdx.x) : 0;", "k"),
    ("guard", "if (p.B > kOnChipMaxBatch || blockDim.x != kOnChipThreads || static_cast<int>(gridDim.x) != ctas || "
     "hpad != ctas * rows) __trap();", "k"),
    ("the cluster's shape checked, then u0 = rank * rows",
     "__trap(); on_chip_check_cluster(ctas, rank); const int u0 = rank * rows;", "k"),
    ("ldh", "const int ldh = mma_ldk(hpad, kElem);", "k"),
    ("ldh_words", "const int ldh_words = ldh * kElem / 4;", "k"),
    ("ldp = rows + 8", "constexpr int ldp = rows + 8;", "k"),
    ("k_steps", "const int k_steps = hpad * kElem / 32;", "k"),
    ("half_steps", "const int half_steps = k_steps / 2;", "k"),
    ("w_words at byte 0", "uint32_t* w_words = reinterpret_cast<uint32_t*>(smem_raw);", "k"),
    ("h_bufs after W",
     "scalar_t* h_bufs = reinterpret_cast<scalar_t*>(smem_raw + on_chip_w_bytes(rows, hpad, kElem));", "k"),
    ("two buffers in a cluster", "const int buffers = on_chip_h_buffers(ctas);", "k"),
    ("part_s after the buffers", "float* part_s = reinterpret_cast<float*>(h_bufs + buffers * 16 * ldh);", "k"),
    # the W fill, then on_chip_stage_h0
    ("w_lo8 at byte rows * hpad * 2", "uint8_t* w_lo8 = smem_raw + static_cast<size_t>(rows) * hpad * 2;", "k"),
    ("W fill loop", "for (int i = threadIdx.x; i < rows * hpad; i += blockDim.x) {", "k"),
    ("W fill (n, c, u = u0 + n)", "const int n = i / hpad, c = i % hpad, u = u0 + n;", "k"),
    ("W fill value (row u, zero padded)", "const scalar_t v = u < p.H && c < p.H ? "
     "mma_operand(p.weight[static_cast<int64_t>(u) * p.H + c]) : scalar_t(0);", "k"),
    ("W fill position", "const int pos = mma_k_position(c, kElem);", "k"),
    ("fp32 bits", "const uint32_t bits = __float_as_uint(v);", "k"),
    ("fill slot (local row n)",
     "const int slot = (n * hpad / 2 + on_chip_pair_unit(n, pos / 2)) * 2 + pos % 2;", "k"),
    ("hi16 plane store", "reinterpret_cast<uint16_t*>(w_words)[slot] = static_cast<uint16_t>(bits >> 16);", "k"),
    ("lo8 plane store", "w_lo8[slot] = static_cast<uint8_t>(bits >> 8);", "k"),
    ("16-bit W store; the fill done, on_chip_stage_h0",
     "reinterpret_cast<scalar_t*>(w_words)[n * ldh + pos] = v; } } on_chip_stage_h0(p, h_bufs, buffers, ldh, ctas); "
     "const int warp = threadIdx.x / 32", "k"),
    # the warps, the step
    ("warp, lane, g, t",
     "const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;", "k"),
    ("n_group, k_half", "const int n_group = warp % 8, k_half = warp / 8;", "k"),
    ("t_idx", "const int t_idx = p.backward ? p.T - 1 - s : s;", "k"),
    ("cur = seq[t_idx]", "scalar_t* cur = p.seq + t_idx * step;", "k"),
    ("live", "const int live = p.live ? p.live[t_idx] : p.B;", "k"),
    ("h_s = buffer s % buffers", "const scalar_t* h_s = on_chip_h(h_bufs, s, buffers, ldh);", "k"),
    ("h_next = buffer (s + 1) % buffers", "scalar_t* h_next = on_chip_h(h_bufs, s + 1, buffers, ldh);", "k"),
    ("z loads (b, u = u0 + ...)", "const int b = g + 8 * (r / 2), u = u0 + (n_group + 8 * j) * 8 + 2 * t + r % 2;",
     "k"),
    ("z loads: every tile",
     "float z[kTiles][4], hf[kTiles][4]; #pragma unroll\n for (int j = 0; j < kTiles; ++j)", "k"),
    ("z loads: lower half, b < live, u < H", "if (k_half == 0 && b < live && u < p.H) {", "k"),
    ("z, hf at b * H + u", "const int64_t o = static_cast<int64_t>(b) * p.H + u; "
     "z[j][r] = static_cast<float>(cur[o]); "
     "if (p.backward) hf[j][r] = static_cast<float>(p.act_out[t_idx * step + o]);",
     "k"),
    ("on_chip_wait (s > 0) after the z loads, before the products",
     "if (p.backward) hf[j][r] = static_cast<float>(p.act_out[t_idx * step + o]); } } "
     "if (s > 0) on_chip_wait(ctas); trace_stamp(p.trace, s, 1); "
     "float acc[kOneTile ? 2 : kTiles][4] = {}; if (live > 0) {", "k"),
    ("multiply only when live > 0", "if (live > 0) {", "k"),
    ("a_row", "const uint32_t* a_row = reinterpret_cast<const uint32_t*>(h_s) + g * ldh_words + 2 * t + "
     "k_half * half_steps * 8;", "k"),
    ("A lo", "const uint2 lo = *reinterpret_cast<const uint2*>(a_row + ks * 8);", "k"),
    ("rows 8..15 only at B > 8", "const bool upper_rows = p.B > 8;", "k"),
    ("A hi (zeros at B <= 8)", "const uint2 hi = upper_rows ? *reinterpret_cast<const uint2*>(a_row + 8 * ldh_words + "
     "ks * 8) : make_uint2(0u, 0u);", "k"),
    ("a[0] = lo.x, a[2] = lo.y, a[1] = hi.x, a[3] = hi.y (fragment buffer buf)",
     "a[buf][0] = lo.x, a[buf][2] = lo.y, a[buf][1] = hi.x, a[buf][3] = hi.y;", "k"),
    ("kg", "const int kg = k_half * half_steps + ks;", "k"),
    ("B fragments of every tile", "uint32_t a[2][4], b[2][kTiles][2];", "k"),
    ("B local row n of every tile", "for (int j = 0; j < kTiles; ++j) { const int n = (n_group + 8 * j) * 8 + g; "
     "if constexpr (kPlanes) {", "k"),
    ("B plane unit", "const int unit = n * hpad / 2 + on_chip_pair_unit(n, kg * 4 + t);", "k"),
    ("hi word load", "const uint32_t top = w_words[unit];", "k"),
    ("lo unit load", "const uint32_t low = reinterpret_cast<const uint16_t*>(w_lo8)[unit];", "k"),
    ("b0 byte_perm 0x1046", "b[buf][j][0] = __byte_perm(top, low, 0x1046);", "k"),
    ("b1 byte_perm 0x3256", "b[buf][j][1] = __byte_perm(top, low, 0x3256);", "k"),
    ("16-bit B load",
     "const uint2 v = *reinterpret_cast<const uint2*>(w_words + n * ldh_words + kg * 8 + 2 * t);", "k"),
    ("16-bit b0, b1", "b[buf][j][0] = v.x, b[buf][j][1] = v.y;", "k"),
    ("multiply: one tile into acc[buf], else every tile into acc[j]",
     "const auto multiply = [&](auto buf) { if constexpr (kOneTile) { mma_tile<Native>(acc[decltype(buf)::value], "
     "a[buf], b[buf][0]); } else { #pragma unroll\n for (int j = 0; j < kTiles; ++j) mma_tile<Native>(acc[j], a[buf], "
     "b[buf][j]); } };", "k"),
    ("the pipelined k-loop", _mma.pipelined_loop_anchor("half_steps"), "k"),
    ("one tile: acc[0] += acc[1]",
     "if constexpr (kOneTile) #pragma unroll\n for (int r = 0; r < 4; ++r) acc[0][r] += acc[1][r];", "k"),
    # the upper half's stores, the first barrier, the epilogue
    ("upper half stores every tile", "if (k_half == 1) { #pragma unroll\n for (int j = 0; j < kTiles; ++j) { "
     "float* out = part_s + g * ldp + (n_group + 8 * j) * 8 + 2 * t;", "k"),
    ("store c0, c1", "*reinterpret_cast<float2*>(out) = make_float2(acc[j][0], acc[j][1]);", "k"),
    ("store c2, c3 at + 8 ldp", "*reinterpret_cast<float2*>(out + 8 * ldp) = make_float2(acc[j][2], acc[j][3]);", "k"),
    ("the first __syncthreads, then publish = not the last step",
     "__syncthreads(); trace_stamp(p.trace, s, 3); const bool publish = s + 1 < p.T; if (k_half == 0) {", "k"),
    ("epilogue (b, ul, u = u0 + ul) over every tile", "if (k_half == 0) { #pragma unroll\n for (int j = 0; j < kTiles; "
     "++j) { #pragma unroll\n for (int r = 0; r < 4; ++r) { "
     "const int b = g + 8 * (r / 2), ul = (n_group + 8 * j) * 8 + 2 * t + r % 2, u = u0 + ul;", "k"),
    ("epilogue sum", "const float sum = acc[j][r] + part_s[b * ldp + ul];", "k"),
    ("y == 0 for b >= live or u >= H", "const scalar_t y = static_cast<scalar_t>( b < live && u < p.H ? "
     "step_epilogue(z[j][r] + sum, hf[j][r], p.relu, p.backward) : 0.f);", "k"),
    ("acc = y; h_t into its own h_next every step (b < B, every unit of the tile); then on_chip_send",
     "acc[j][r] = static_cast<float>(y); if (b < p.B) h_next[b * ldh + mma_k_position(u, kElem)] = mma_operand(y); "
     "} } } on_chip_send(h_next, ldh, u0, rows, p.B, ctas, rank, publish); if (k_half == 0) {", "k"),
    ("the outputs after the arrival (b < B, u = u0 + ... < H)", "if (k_half == 0) { #pragma unroll\n for (int j = 0; "
     "j < kTiles; ++j) { #pragma unroll\n for (int r = 0; r < 4; ++r) { "
     "const int b = g + 8 * (r / 2), u = u0 + (n_group + 8 * j) * 8 + 2 * t + r % 2; if (b >= p.B || u >= p.H) "
     "continue;", "k"),
    ("outputs: fp32 from acc, 16-bit read back from h_next",
     "if constexpr (kPlanes) cur[static_cast<int64_t>(b) * p.H + u] = acc[j][r]; "
     "else cur[static_cast<int64_t>(b) * p.H + u] = h_next[b * ldh + mma_k_position(u, kElem)];", "k"),
    ("on_chip_wait after the loop", "trace_stamp(p.trace, s, 4); } on_chip_wait(ctas); }", "k"),
    # the helpers both kernels call: "cc" on_chip_check_cluster, "sh" on_chip_stage_h0, "sd" on_chip_send,
    # "wt" on_chip_wait
    ("check_cluster: a cluster's %cluster_nctarank == ctas and %cluster_ctarank == rank (blockIdx.x)",
     'if (ctas > 1) { uint32_t cluster_ctas, cluster_rank; asm volatile("mov.u32 %0, %%cluster_nctarank;\\n" : '
     '"=r"(cluster_ctas)); asm volatile("mov.u32 %0, %%cluster_ctarank;\\n" : "=r"(cluster_rank)); '
     'if (static_cast<int>(cluster_ctas) != ctas || static_cast<int>(cluster_rank) != rank) __trap(); }', "cc"),
    ("stage_h0: every buffer zeroed, __syncthreads",
     "for (int i = threadIdx.x; i < buffers * 16 * ldh; i += blockDim.x) h_bufs[i] = scalar_t(0); __syncthreads();",
     "sh"),
    ("stage_h0: h_0 only with state0, into buffer 0 at mma_k_position; __syncthreads; a cluster: arrive, wait",
     "__syncthreads(); if (p.state0 != nullptr) for (int i = threadIdx.x; i < p.B * p.H; i += blockDim.x) "
     "h_bufs[i / p.H * ldh + mma_k_position(i % p.H, sizeof(scalar_t))] = mma_operand(p.state0[i]); __syncthreads(); "
     "if (ctas > 1) { on_chip_cluster_arrive(); on_chip_cluster_wait(); } }", "sh"),
    ("send: one CTA __syncthreads only; a cluster: __syncthreads, then the all-gather on publishing steps",
     "if (ctas == 1) { __syncthreads(); return; } __syncthreads(); if (publish) {", "sd"),
    ("all-gather: 16-byte pieces of rows < B",
     "const int row_chunks = rows * static_cast<int>(sizeof(scalar_t)) / 16, rank_chunks = B * row_chunks;", "sd"),
    ("all-gather: from h_next",
     "const unsigned char* next_bytes = reinterpret_cast<const unsigned char*>(h_next);", "sd"),
    ("all-gather: i over ctas - 1 ranks' pieces",
     "#pragma unroll 1\n for (int i = threadIdx.x; i < (ctas - 1) * rank_chunks; i += blockDim.x) {", "sd"),
    ("all-gather: q = 1 + ..., b, c",
     "const int q = 1 + i / rank_chunks, b = i % rank_chunks / row_chunks, c = i % row_chunks;", "sd"),
    ("all-gather: offset at position u0 of row b",
     "const int offset = (b * ldh + u0) * static_cast<int>(sizeof(scalar_t)) + c * 16;", "sd"),
    ("all-gather: 16 bytes to rank (rank + q) % ctas at the same offset",
     "on_chip_store_peer(smem_u32(next_bytes + offset), static_cast<uint32_t>((rank + q) % ctas), "
     "*reinterpret_cast<const uint4*>(next_bytes + offset));", "sd"),
    ("send: then __syncwarp, arrive", "} } __syncwarp(); on_chip_cluster_arrive(); }", "sd"),
    ("wait: a cluster only, __syncwarp then wait", "if (ctas == 1) return; __syncwarp(); on_chip_cluster_wait(); }",
     "wt"),
] + WREG_ANCHORS + _mma.PTX_ANCHORS


def check_anchors(rnn, tc):
    """The anchors missing from rnn.cu / tensor_core.cuh; an anchor whose code is a tuple holds where
    any one of its forms is there (two ways of writing what the replay models the same)."""
    scopes = {
        "f": _code(rnn), "tc": _code(tc),
        "k": _code(_body(rnn, "rnn_on_chip_kernel(PersistentParams<scalar_t> p) {")),
        "co": _code(_body(rnn, "OnChipConfig choose_on_chip(")),
        "lo": _code(_body(rnn, "bool launch_on_chip(const OnChipConfig& c,")),
        "cc": _code(_body(rnn, "void on_chip_check_cluster(int ctas, int rank) {")),
        "sh": _code(_body(rnn, "void on_chip_stage_h0(const PersistentParams<scalar_t>& p,")),
        "sd": _code(_body(rnn, "void on_chip_send(const scalar_t* h_next,")),
        "wt": _code(_body(rnn, "void on_chip_wait(int ctas) {")),
        "wk": _code(_body(rnn, "rnn_on_chip_wreg_kernel(PersistentParams<scalar_t> p) {")),
        "ww": _code(_body(rnn, "uint32_t wreg_word(const PersistentParams<scalar_t>& p, int u, int c) {"))}
    return [what for what, code, where in ANCHORS
            if not any(_code(form) in scopes[where] for form in (code if isinstance(code, tuple) else (code,)))]


# edits of rnn.cu the anchors must catch (old, new); and one they must not (comments, layout)
SOURCE_EDITS = {
    "selector 0x1064": ("__byte_perm(top, low, 0x1046)", "__byte_perm(top, low, 0x1064)"),
    "swizzle by (n % 8) * 2": ("p ^ ((n % 8) * 4)", "p ^ ((n % 8) * 2)"),
    "staging unpermuted": ("h_bufs[i / p.H * ldh + mma_k_position(i % p.H, sizeof(scalar_t))]",
                           "h_bufs[i / p.H * ldh + i % p.H]"),
    "A without k_half": ("2 * t + k_half * half_steps * 8;", "2 * t;"),
    "lo plane one row on": ("uint8_t* w_lo8 = smem_raw + static_cast<size_t>(rows) * hpad * 2;",
                            "uint8_t* w_lo8 = smem_raw + static_cast<size_t>(rows) * hpad * 2 + hpad;"),
    "rows 8..15 from B > 9": ("const bool upper_rows = p.B > 8;", "const bool upper_rows = p.B > 9;"),
    "ldp = rows + 4": ("constexpr int ldp = rows + 8;", "constexpr int ldp = rows + 4;"),
    "hpad to 32": ("(H + 63) / 64 * 64", "(H + 31) / 32 * 32"),
    "pair kg * 8 + t": ("on_chip_pair_unit(n, kg * 4 + t)", "on_chip_pair_unit(n, kg * 8 + t)"),
    "fill without u0": ("c = i % hpad, u = u0 + n;", "c = i % hpad, u = n;"),
    "z loads without u0": ("u = u0 + (n_group + 8 * j) * 8 + 2 * t + r % 2;",
                           "u = (n_group + 8 * j) * 8 + 2 * t + r % 2;"),
    "outputs without u0": ("u = u0 + ul;", "u = ul;"),
    "u0 = rank * 64": ("const int u0 = rank * rows;", "const int u0 = rank * 64;"),
    "buffers not alternating": ("on_chip_h(h_bufs, s + 1, buffers, ldh)", "on_chip_h(h_bufs, s, buffers, ldh)"),
    "one buffer in a cluster": ("return ctas > 1 ? 2 : 1;", "return 1;"),
    "smem one buffer": ("on_chip_h_buffers(ctas) * on_chip_h_bytes", "on_chip_h_bytes"),
    "h buffer by step s + 1": ("return h_bufs + (s % buffers) * 16 * ldh;", "return h_bufs + ((s + 1) % buffers) * 16 "
                               "* ldh;"),
    "h_t written only when publishing": ("if (b < p.B) h_next[", "if (publish && b < p.B) h_next["),
    "all-gather from q = 0": ("const int q = 1 + i / rank_chunks", "const int q = i / rank_chunks"),
    "all-gather without u0": ("const int offset = (b * ldh + u0) * static_cast<int>(sizeof(scalar_t)) + c * 16;",
                              "const int offset = b * ldh * static_cast<int>(sizeof(scalar_t)) + c * 16;"),
    "all-gather over all ranks": ("i < (ctas - 1) * rank_chunks", "i < ctas * rank_chunks"),
    "no __syncthreads before the all-gather": ("__syncthreads();  // this CTA's h_t written",
                                               "// this CTA's h_t written"),
    "no wait before the products": ("if (s > 0) on_chip_wait(ctas);  // step s - 1's h_t in every rank's h_s", ""),
    "no wait after the loop": ("  on_chip_wait(ctas);\n}\n", "}\n"),
    "stage_h0 not called": ("  on_chip_stage_h0(p, h_bufs, buffers, ldh, ctas);\n\n  const int warp = threadIdx.x / "
                            "32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;\n  const int n_group",
                            "\n  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, "
                            "t = lane % 4;\n  const int n_group"),
    "no zeroing __syncthreads": ("__syncthreads();  // zeroed before h_0's elements land", ""),
    "send without the arrival": ("  __syncwarp();  // (.aligned)\n  on_chip_cluster_arrive();\n}", "}"),
    "send: one CTA without __syncthreads": ("  if (ctas == 1) {\n    __syncthreads();\n    return;",
                                            "  if (ctas == 1) {\n    return;"),
    "wait in one CTA too": ("  if (ctas == 1) return;\n  __syncwarp();", "  __syncwarp();"),
    "cluster rank unchecked": ("static_cast<int>(cluster_rank) != rank", "false"),
    "acc[1] not added": ("for (int r = 0; r < 4; ++r) acc[0][r] += acc[1][r];", "for (int r = 0; r < 4; ++r) {}"),
    "one tile at 2 tiles": ("constexpr bool kOneTile = kTiles == 1;", "constexpr bool kOneTile = kTiles == 2;"),
    "clusters at 4 tiles too": ("constexpr bool kClusters = kTiles < 4;", "constexpr bool kClusters = kTiles <= 4;"),
    "instance by ctas": ("kernels[on_chip_hpad(params.H) / c.ctas / 64 - 1]", "kernels[c.ctas - 1]"),
    "publish at the last step": ("const bool publish = s + 1 < p.T;", "const bool publish = s < p.T;"),
    "first __syncthreads dropped": ("__syncthreads();  // both halves multiplied", "// both halves multiplied"),
    "part_s rows + 4 in smem": ("static_cast<size_t>(16) * (rows + 8) * sizeof(float)",
                                "static_cast<size_t>(16) * (rows + 4) * sizeof(float)"),
    "16-bit W at n * ldh + c": ("reinterpret_cast<scalar_t*>(w_words)[n * ldh + pos] = v;",
                                "reinterpret_cast<scalar_t*>(w_words)[n * ldh + c] = v;"),
    "host default 1 CTA": ("asked > 0 ? asked : clusters ? slabs : 1;", "asked > 0 ? asked : 1;"),
    "host 8 slabs a CTA": ("slabs / ctas > kOnChipMaxTilesPerWarp ||", "slabs / ctas > 8 ||"),
    # the W-in-registers kernel's
    "wreg: a2 / a3 at c0": ("c1 = c0 + 4 * per_word;", "c1 = c0;"),
    "wreg: a1 from row u": ("wreg_word(p, u + 8, c0)", "wreg_word(p, u, c0)"),
    "wreg: no zeros past k_steps": (("const bool mine = ks < k_steps;", "const bool mine = true;"),
                                    ("ks < k_steps ? (k_first + ks) * kk + t * per_word : p.H",
                                     "(k_first + ks) * kk + t * per_word")),
    "wreg: prefetch at ks": ("*reinterpret_cast<const uint2*>(b_row + (ks + 1) * 8);",
                             "*reinterpret_cast<const uint2*>(b_row + ks * 8);"),
    "wreg: no k_first": ("const int k_first = k_part * k_steps;", "const int k_first = 0;"),
    "wreg: quarter k_part": ("((k_part - 1) * rows + m_tile * 16 + g)", "(k_part * rows + m_tile * 16 + g)"),
    "wreg: chains not summed": ("mma_tile<Native>(acc[ks % 2], wa[ks], b);\n      }\n#pragma unroll\n      for "
                                "(int r = 0; r < 4; ++r) acc[0][r] += acc[1][r];",
                                "mma_tile<Native>(acc[ks % 2], wa[ks], b);\n      }"),
    "wreg: one chain": ("mma_tile<Native>(acc[ks % 2], wa[ks], b);", "mma_tile<Native>(acc[0], wa[ks], b);"),
    "wreg: 16-bit halves swapped": (("const scalar_t lo = at(c), hi = at(c + 1);",
                                     "const scalar_t lo = at(c + 1), hi = at(c);"),
                                    ("static_cast<uint32_t>(at(c).x) | static_cast<uint32_t>(at(c + 1).x) << 16",
                                     "static_cast<uint32_t>(at(c + 1).x) | static_cast<uint32_t>(at(c).x) << 16")),
    "wreg: quarters summed 2, 1, 0": (("(part_s + (q * rows + ul) * kWregLdp + b0)",
                                       "(part_s + ((2 - q) * rows + ul) * kWregLdp + b0)"),
                                      ("part_s[(q * rows + ul) * kWregLdp + b0 + e]",
                                       "part_s[((2 - q) * rows + ul) * kWregLdp + b0 + e]")),
    "wreg: kWregLdp 16": ("constexpr int kWregLdp = 24;", "constexpr int kWregLdp = 16;"),
    "wreg: 32 k-steps a warp": ("constexpr int kWregMaxSteps = 16;", "constexpr int kWregMaxSteps = 32;"),
    "wreg: 16-bit k8 steps": ("return hpad / 4 / (elem_size == 4 ? 8 : 16);", "return hpad / 4 / 8;"),
    "wreg: part_s 2 quarters in smem": ("static_cast<size_t>(3) * 64 * kWregLdp",
                                        "static_cast<size_t>(2) * 64 * kWregLdp"),
    "wreg: z by every quarter": ("if (k_part == 0 && b < live && u < p.H) {", "if (b < live && u < p.H) {"),
    "wreg host: any rows a CTA": ("else if (slabs != ctas || on_chip_wreg_steps", "else if (on_chip_wreg_steps"),
    "wreg: guard B <= 16": ("if (p.B > 8 || blockDim.x", "if (p.B > 16 || blockDim.x"),
    "wreg host: batch <= 16": ("if (B > 8)\n      c.why = \"W_hh in registers holds batch",
                               "if (B > 16)\n      c.why = \"W_hh in registers holds batch"),
    "wreg: wait dropped": ("if (s > 0) on_chip_wait(ctas);  // step s - 1's h_t in every rank's h_s\n    "
                           "trace_stamp(p.trace, s, 1);    //", "trace_stamp(p.trace, s, 1);    //"),
}


def _resolve_edits(edits):
    """An edit given as ((old, new), (old, new), ...) (the forms check_anchors takes as one): the first
    whose old text is in rnn.cu (else the first, which then counts as not caught)."""
    rnn = _mma.read_sources()[0]
    return {name: next((e for e in edit if e[0] in rnn), edit[0]) if isinstance(edit[0], tuple) else edit
            for name, edit in edits.items()}


SOURCE_EDITS = _resolve_edits(SOURCE_EDITS)


def _wreg_part_read():
    """The epilogue's read of part_s in rnn.cu (the anchors take either): 8 (a float2 a quarter, batch
    rows b0, b0 + 1) or 4 (two floats)."""
    body = _code(_body(_mma.read_sources()[0], "rnn_on_chip_wreg_kernel(PersistentParams<scalar_t> p) {"))
    return 8 if _code("*reinterpret_cast<const float2*>(part_s + (q * rows + ul)") in body else 4


WREG_PART_READ = _wreg_part_read()
NEUTRAL_EDIT = ("const int n_group = warp % 8, k_half = warp / 8;",
                "const int n_group = warp % 8,  // the n8 tile group\n      k_half = warp / 8;  /* half of k */")


# ---------------------------------------------------------------------------------------------
# the C++ formulas, as the replay runs them (mut: the names of the mutants in effect)

def on_chip_hpad(H):
    return (H + 63) // 64 * 64


def on_chip_w_bytes(rows, hpad, elem):
    return rows * hpad * 3 if elem == 4 else rows * mma_ldk(hpad, 2) * 2


def on_chip_h_bytes(hpad, elem):
    return 16 * mma_ldk(hpad, elem) * elem


def on_chip_smem(hpad, ctas, elem):
    rows = hpad // ctas
    return on_chip_w_bytes(rows, hpad, elem) + (2 if ctas > 1 else 1) * on_chip_h_bytes(hpad, elem) + \
        16 * (rows + 8) * 4


def on_chip_pair_unit(n, p):
    return p ^ ((n % 8) * 4)


def kernel_accepts(B, H, ctas, major=9):
    """The launch (launch_on_chip: the instance kTiles = hpad / ctas / 64 of 1..4) and the kernel's own
    guard (it __trap()s otherwise): B <= 16, hpad == ctas * 64 kTiles, and ctas == 1 where the instance
    has no clusters (kTiles 4, or before sm_90)."""
    hpad = on_chip_hpad(H)
    if B > MAX_B or not 1 <= ctas <= MAX_CTAS or hpad % ctas or (hpad // ctas) % 64:
        return False
    tiles = hpad // ctas // 64
    clusters = major >= 9 and tiles < TILES
    return 1 <= tiles <= TILES and (ctas == 1 or clusters)


def choose_on_chip(elem, B, H, major, asked, registers=False):
    """choose_on_chip's decision (TF32 allowed, RNNKERN_RNN_MATH unset; registers:
    RNNKERN_RNN_ON_CHIP_W=registers): (use, ctas, smem, why)."""
    slabs = (H + 63) // 64
    clusters = major >= 9
    ctas = asked if asked > 0 else (slabs if clusters else 1)
    if major < 8:
        return False, ctas, 0, "needs sm_80 tensor cores"
    if B > MAX_B:
        return False, ctas, 0, "batch > 16"
    if slabs > MAX_CTAS:
        return False, ctas, 0, "H > 1024"
    if not clusters and asked == 0 and slabs > TILES:
        return False, ctas, 0, "H > 256 needs sm_90 clusters"
    if ctas > 1 and not clusters:
        return False, ctas, 0, "RNNKERN_RNN_CLUSTER > 1 needs sm_90 clusters"
    if ctas > MAX_CTAS or slabs % ctas != 0 or slabs // ctas > TILES or (ctas > 1 and slabs // ctas == TILES):
        return False, ctas, 0, "RNNKERN_RNN_CLUSTER does not split H_pad into 64-256 rows a CTA (256: one CTA)"
    if registers:
        hpad = slabs * 64
        smem = on_chip_wreg_smem(hpad, ctas, elem)
        if B > WREG_MAX_B:
            return False, ctas, 0, "W_hh in registers holds batch <= 8"
        if slabs != ctas and not clusters:
            return False, ctas, 0, "W_hh in registers above H 64 needs sm_90 clusters"
        if slabs != ctas or on_chip_wreg_steps(hpad, elem) > WREG_MAX_STEPS:
            return False, ctas, 0, "W_hh in registers needs 64 rows a CTA and H <= 512 (fp32) / 1024 (16-bit)"
        if smem > OPTIN:
            return False, ctas, smem, "h exceeds shared memory"
        return True, ctas, smem, ""
    smem = on_chip_smem(slabs * 64, ctas, elem)
    if smem > OPTIN:
        return False, ctas, smem, "W_hh and h exceed shared memory"
    return True, ctas, smem, ""


# the W-in-registers kernel's (rnn_on_chip_wreg_kernel)
WREG_MAX_STEPS = 16  # kWregMaxSteps
WREG_LDP = 24        # kWregLdp
WREG_ROWS = 64       # its rows a CTA
WREG_MAX_B = 8       # one n8 tile of batch rows (the guard's p.B > 8)


def on_chip_wreg_steps(hpad, elem):
    return hpad // 4 // (8 if elem == 4 else 16)


def on_chip_wreg_smem(hpad, ctas, elem):
    return (2 if ctas > 1 else 1) * on_chip_h_bytes(hpad, elem) + 3 * 64 * WREG_LDP * 4


def wreg_kernel_accepts(elem, B, H, ctas, major=9):
    """rnn_on_chip_wreg_kernel's guard (it __trap()s otherwise) in a launch of ctas CTAs: B <= 8 (one
    n8 tile of batch rows), gridDim.x == ctas (the kernel's ctas: gridDim.x from sm_90, else 1), hpad ==
    ctas * 64, on_chip_wreg_steps <= kWregMaxSteps."""
    hpad = on_chip_hpad(H)
    kctas = ctas if major >= 9 else 1
    return B <= WREG_MAX_B and ctas == kctas and hpad == kctas * WREG_ROWS and \
        on_chip_wreg_steps(hpad, elem) <= WREG_MAX_STEPS


def staging_position(col, elem, mut=()):
    """Where the h_0 staging puts column col of a row (mma_k_position)."""
    return col if "stage_identity" in mut else mma_k_position(col, elem)


def byte_perm(x, y, s):
    """CUDA __byte_perm: result byte i = byte (s >> 4 i) & 7 of x.b0..b3, y.b0..b3 (x, y: uint32 arrays)."""
    x, y = np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
    src = np.stack([(x >> (8 * i)) & 0xFF for i in range(4)] + [(y >> (8 * i)) & 0xFF for i in range(4)], axis=-1)
    out = np.zeros(x.shape, dtype=np.int64)
    for i in range(4):
        out |= src[..., (s >> (4 * i)) & 7] << (8 * i)
    return out


# ---------------------------------------------------------------------------------------------
# value formats: storage bits, the operand (mma_operand) encoding, the tensor core's reading

FMTS = {"tf32": 4, "bf16": 2, "f16": 2}


def f32_bits(x):
    return np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.int64)


def encode(fmt, x):
    """mma_operand(static_cast<scalar_t>(x)) as bits: fp32 rounded to TF32 (cvt.rna: to nearest, ties
    away), bf16 / f16 rounded to nearest even."""
    x = np.asarray(x, dtype=np.float64)
    if fmt == "tf32":
        return (f32_bits(x) + 0x1000) & 0xFFFFE000
    if fmt == "bf16":
        b = f32_bits(x)
        return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF
    return x.astype(np.float16).view(np.uint16).astype(np.int64)


def decode_mma(fmt, bits):
    """The value the tensor core takes from an element's bits (tf32: bits 12..0 ignored)."""
    bits = np.asarray(bits, dtype=np.int64)
    if fmt == "tf32":
        return (bits & 0xFFFFE000).astype(np.uint32).view(np.float32).astype(np.float64)
    if fmt == "bf16":
        return (bits << 16).astype(np.uint32).view(np.float32).astype(np.float64)
    return bits.astype(np.uint16).view(np.float16).astype(np.float64)


def random_w_bits(fmt, H, rng, low_zero):
    """H x H operand bit patterns with a narrow exponent range (products and sums exact in fp64)."""
    sign = rng.integers(0, 2, size=(H, H)).astype(np.int64)
    if fmt == "tf32":
        mant = rng.integers(0, 1 << 23, size=(H, H)).astype(np.int64) & ~((1 << low_zero) - 1)
        return (sign << 31) | (rng.integers(125, 130, size=(H, H)).astype(np.int64) << 23) | mant
    if fmt == "bf16":
        return (sign << 15) | (rng.integers(125, 130, size=(H, H)).astype(np.int64) << 7) | rng.integers(0, 128, (H, H))
    return (sign << 15) | (rng.integers(13, 18, size=(H, H)).astype(np.int64) << 10) | rng.integers(0, 1024, (H, H))


def epilogue_model(x, hf):
    """The model of step_epilogue: a small integer again (x exact: a multiple of 2^-12 below 2^15)."""
    return np.mod(np.floor(x + hf), 7) - 3


# ---------------------------------------------------------------------------------------------
# the CTA's layout, shared memory, bank conflicts, barrier epochs

class Geometry:
    def __init__(self, elem, H, ctas):
        self.elem, self.H, self.ctas = elem, H, ctas
        self.per_word = 4 // elem
        self.hpad = on_chip_hpad(H)
        self.rows = self.hpad // ctas
        self.ldh = mma_ldk(self.hpad, elem)
        self.ldh_words = self.ldh * elem // 4
        self.ldp = self.rows + 8
        self.k_steps = self.hpad * elem // 32
        self.half_steps = self.k_steps // 2
        self.n_tiles = self.rows // 8
        self.one_tile = self.n_tiles == 8
        self.buffers = 2 if ctas > 1 else 1
        self.w_bytes = on_chip_w_bytes(self.rows, self.hpad, elem)
        self.hi_bytes = self.rows * self.hpad * 2      # the lo8 plane's offset (w_lo8)
        self.h_base = self.w_bytes                     # h_bufs
        self.buf_bytes = 16 * self.ldh * elem          # one buffer (pointer arithmetic: 16 * ldh elements)
        self.part_base = self.h_base + self.buffers * self.buf_bytes
        self.end = self.part_base + 16 * self.ldp * 4
        self.smem = on_chip_smem(self.hpad, ctas, elem)


class WregGeometry:
    """rnn_on_chip_wreg_kernel's CTA: hpad / 64 ranks of 64 rows, h_bufs at byte 0, part_s after them
    (the attributes Cluster reads, as Geometry's)."""

    def __init__(self, elem, H):
        self.elem, self.H = elem, H
        self.per_word = 4 // elem
        self.kk = 8 * self.per_word                    # one mma.sync's k
        self.hpad = on_chip_hpad(H)
        self.rows = WREG_ROWS
        self.ctas = self.hpad // WREG_ROWS
        self.ldh = mma_ldk(self.hpad, elem)
        self.ldh_words = self.ldh * elem // 4
        self.k_steps = on_chip_wreg_steps(self.hpad, elem)  # a warp's
        self.buffers = 2 if self.ctas > 1 else 1
        self.h_base = 0
        self.buf_bytes = 16 * self.ldh * elem
        self.part_base = self.buffers * self.buf_bytes
        self.part_len = 3 * WREG_ROWS * WREG_LDP           # floats
        self.end = self.part_base + 4 * self.part_len
        self.smem = on_chip_wreg_smem(self.hpad, self.ctas, elem)


def staged_image(g, src_bits, B, H):
    """(2)'s expectation: 16 x ldh operand bits with src_bits[b, col] at b, mma_k_position(col)
    (b < B, col < H), zero elsewhere."""
    img = np.zeros((16, g.ldh), dtype=np.int64)
    if src_bits is not None:
        img[np.arange(B)[:, None], mma_k_position(np.arange(H), g.elem)[None, :]] = src_bits[:B, :H]
    return img


class Smem:
    """One CTA's shared memory as bytes; which bytes were written, how often."""

    def __init__(self, size):
        self.size = size
        self.b = np.zeros(size, dtype=np.int64)
        self.init = np.zeros(size, dtype=bool)
        self.count = np.zeros(size, dtype=np.int64)

    def store(self, addr, value, nbytes):
        """Each address (any shape) stores nbytes of value (little-endian); returns the mask inside."""
        addr = np.asarray(addr, dtype=np.int64).ravel()
        value = np.broadcast_to(np.asarray(value, dtype=np.int64), addr.shape).ravel() if np.ndim(value) == 0 else \
            np.asarray(value, dtype=np.int64).ravel()
        idx = addr[:, None] + np.arange(nbytes)[None, :]
        inside = ((idx >= 0) & (idx < self.size)).all(axis=1)
        idx, byt = idx[inside], (value[inside, None] >> (8 * np.arange(nbytes))[None, :]) & 0xFF
        flat = idx.ravel()
        self.b[flat] = byt.ravel()
        self.init[flat] = True
        if flat.size > self.size // 16:
            self.count += np.bincount(flat, minlength=self.size)
        else:
            np.add.at(self.count, flat, 1)
        return inside

    def load8(self, addr):
        """An 8-byte load: (.x, .y, inside, all bytes written) of each address."""
        x, ok_x, w_x = self.load(addr, 4)
        y, ok_y, w_y = self.load(np.asarray(addr, dtype=np.int64) + 4, 4)
        return x, y, ok_x & ok_y, w_x & w_y

    def load(self, addr, nbytes):
        """(value, inside, all bytes written) of each address's nbytes (<= 4, little-endian)."""
        addr = np.asarray(addr, dtype=np.int64)
        idx = addr[..., None] + np.arange(nbytes)
        if addr.size and addr.min() >= 0 and addr.max() + nbytes <= self.size:
            val = (self.b[idx] << (8 * np.arange(nbytes))).sum(axis=-1)
            return val, np.ones(addr.shape, dtype=bool), self.init[idx].all(axis=-1)
        inside = ((idx >= 0) & (idx < self.size)).all(axis=-1)
        cl = np.clip(idx, 0, self.size - 1)
        val = (self.b[cl] << (8 * np.arange(nbytes))).sum(axis=-1)
        return np.where(inside, val, 0), inside, self.init[cl].all(axis=-1)

    def image(self, base, n, elem):
        """n elements of elem bytes from base (their bits)."""
        return self.load(base + np.arange(n) * elem, elem)[0]


def conflict_ways(words):
    """words (..., L): each row the 32-bit words one shared-memory access touches; per row, the most
    distinct words one bank serves (lanes sharing a word do not conflict)."""
    w = np.asarray(words, dtype=np.int64)
    w = w.reshape(-1, w.shape[-1])
    s = np.sort(w, axis=1)
    distinct = np.ones(s.shape, dtype=bool)
    distinct[:, 1:] = s[:, 1:] != s[:, :-1]
    rows = np.broadcast_to(np.arange(len(s))[:, None], s.shape)
    cnt = np.bincount((rows * 32 + s % 32)[distinct], minlength=len(s) * 32).reshape(len(s), 32)
    return cnt.max(axis=1)


def ways_8byte(addr):
    """An 8-byte access per lane (addr: (..., 32) bytes): the worst half-warp's ways per access."""
    a = np.asarray(addr, dtype=np.int64)
    words = np.stack([a // 4, a // 4 + 1], axis=-1).reshape(a.shape[:-1] + (2, 32))  # half-warps of 16 x 2
    return conflict_ways(words).reshape(a.shape[:-1] + (2,)).max(axis=-1)


STD_IDS = dict(stage="2", out="4", gather="9", bank="5", region="6", hazard="7")
SAME_THREAD = {"the epilogue's h_t", "the outputs' read-back"}  # (16-bit: a thread's own elements)


class Epochs:
    """Barrier epochs of each rank: cta[r] its __syncthreads, arr[r] / wait[r] its cluster arrivals and
    completed waits (barrier.cluster.arrive.release / wait.acquire). An access X of rank a happens
    before an access Y of rank b when a wait Y follows completes a phase X precedes the arrival of:
    wait(Y) > arr(X); the same rank also orders them by any __syncthreads between (cta epochs differ)."""

    def __init__(self, ctas):
        self.cta, self.arr, self.wait, self.ev = [0] * ctas, [0] * ctas, [0] * ctas, {}
        self.early = []  # waits of a phase some rank has not arrived at yet (would they deadlock?)

    def syncthreads(self, r):
        self.cta[r] += 1

    def arrive(self, r):
        self.arr[r] += 1

    def wait_(self, r):
        self.wait[r] += 1
        if min(self.arr) < self.wait[r]:
            self.early.append(r)

    def access(self, rw, actor, target, region, what, step):
        self.ev.setdefault((rw, actor, target, region, self.cta[actor], self.arr[actor], self.wait[actor], what,
                            step), None)

    def races(self):
        """The unordered pairs touching one (rank, h_s buffer, column slab) or part_s with a write among
        them; the first few described."""
        by = collections.defaultdict(list)
        for e in self.ev:
            by[(e[2], e[3])].append(e)
        out = []
        for (target, region), evs in by.items():
            for i, e1 in enumerate(evs):
                for e2 in evs[i + 1:]:
                    if e1[0] == "r" and e2[0] == "r":
                        continue
                    if e1[1] == e2[1] and e1[8] == e2[8] and {e1[7], e2[7]} == SAME_THREAD:
                        continue  # each thread reads back only what it wrote
                    ordered = e2[6] > e1[5] or e1[6] > e2[5]
                    if e1[1] == e2[1]:
                        ordered = ordered or e1[4] != e2[4]
                    if not ordered:
                        out.append(f"rank {target}'s {region}: {e1[7]} by rank {e1[1]} (step {e1[8]}) and {e2[7]} by "
                                   f"rank {e2[1]} (step {e2[8]}) with no barrier ordering them")
        return out


def k_schedule(half_steps, mut):
    """The pipelined k-loop's calls (pipelined_k_steps, replayed by _mma.pipelined_k_loop): the k-step of
    each load call, the load index of each multiply in order, and the k-steps multiplied. Load calls
    alternate the fragment buffers first / second (the loop as written), so call i fills buffer i % 2."""
    calls, mults = [], []

    def load(ks):
        calls.append(ks)
        return len(calls) - 1

    def multiply(ks, idx):
        mults.append(idx)

    done = _mma.pipelined_k_loop(half_steps, load, multiply, mut)
    return calls, mults, done


# ---------------------------------------------------------------------------------------------
# what both kernels share: the operands and the reference recurrence, and the cluster's ranks (their
# shared memories, the barrier epochs, on_chip_stage_h0, on_chip_send, on_chip_wait, and the checks of
# a step's outputs and of every rank's next buffer)

Reference = collections.namedtuple("Reference", "Wb Wd s0bits zin act t_of h_ref out_ref sum_ref")


def reference(case, hpad):
    """The case's operands (W as hpad x hpad operand bits, zero padded; h_0's bits; z; backward's hf)
    and the reference recurrence: h_ref[s] the 16 x hpad operand bits step s multiplies, out_ref[s]
    its B x H outputs, sum_ref[s] h_ref[s] @ W.T (fp64, exact)."""
    fmt, H, B, T_ = case.fmt, case.H, case.B, case.T
    rng = np.random.default_rng(case.seed)
    wbits = random_w_bits(fmt, H, rng, case.low_zero)
    Wb = np.zeros((hpad, hpad), dtype=np.int64)
    Wb[:H, :H] = wbits
    Wd = decode_mma(fmt, Wb)
    s0bits = encode(fmt, rng.integers(-3, 4, size=(B, H))) if case.with_state0 else None
    zin = rng.integers(-3, 4, size=(T_, B, H)).astype(np.float64)
    act = rng.integers(-3, 4, size=(T_, B, H)).astype(np.float64) if case.backward else np.zeros((T_, B, H))
    t_of = [T_ - 1 - s if case.backward else s for s in range(T_)]
    h_ref = [np.zeros((16, hpad), dtype=np.int64)]  # h_ref[s]: the operand bits step s multiplies
    if case.with_state0:
        h_ref[0][:B, :H] = s0bits
    out_ref, sum_ref = [], []
    for s in range(T_):
        t, live = t_of[s], case.lives[t_of[s]]
        sm = decode_mma(fmt, h_ref[s]) @ Wd.T  # 16 x hpad, fp64, exact
        y = np.where(np.arange(B)[:, None] < live, epilogue_model(zin[t] + sm[:B, :H], act[t]), 0.0)
        nxt = np.zeros((16, hpad), dtype=np.int64)
        nxt[:B, :H] = encode(fmt, y)
        out_ref.append(y)
        sum_ref.append(sm)
        h_ref.append(nxt)
    return Reference(Wb, Wd, s0bits, zin, act, t_of, h_ref, out_ref, sum_ref)


class Cluster:
    """The ranks of one replay: their shared memories (mems), the barrier epochs (ep), and the pieces
    both kernels run through the same helpers. ids maps what a finding is about to the check it counts
    for: stage (on_chip_stage_h0), out (the outputs, the next buffers), gather (the all-gather's
    pieces), bank (the all-gather's conflicts), region (alignment, bounds, unwritten bytes), hazard."""

    def __init__(self, g, case, s0bits, bad, mut, stats, ids):
        self.g, self.case, self.s0bits, self.bad, self.mut, self.stats, self.ids = g, case, s0bits, bad, mut, stats, ids
        self.B, self.H, self.ctas, self.elem, self.fmt = case.B, case.H, g.ctas, g.elem, case.fmt
        self.mems = [Smem(g.smem) for _ in range(g.ctas)]
        self.ep = Epochs(g.ctas)
        self.row_bytes = g.ldh * g.elem
        # the all-gather's 16-byte pieces: i = threadIdx.x, threadIdx.x + 512, ... < (ctas - 1) * rank_chunks
        self.row_chunks = g.rows * g.elem // 16
        rank_chunks = self.B * self.row_chunks
        self.gi = np.arange((g.ctas - 1) * rank_chunks)
        self.gq = (0 if "gather_q_from_0" in mut else 1) + self.gi // rank_chunks
        self.gb, self.gc = self.gi % rank_chunks // self.row_chunks, self.gi % self.row_chunks

    def buf_base(self, buf):
        return self.g.h_base + buf * self.g.buf_bytes

    def h_image(self, mem, buf):
        return mem.image(self.buf_base(buf), 16 * self.g.ldh, self.elem).reshape(16, self.g.ldh)

    def h_access(self, rw, actor, target, buf, positions, what, step):
        """An access of h_s buffer buf in rank target, region by region: the column slab of each rank
        (positions [o * rows, (o + 1) * rows) of a row), and the rows' padding [hpad, ldh)."""
        g = self.g
        for o in np.unique(np.minimum(np.asarray(positions) % g.ldh, g.hpad) // g.rows):
            self.ep.access(rw, actor, target, f"h_s buffer {buf} {'padding' if o == g.ctas else f'slab {o}'}", what,
                           step)

    def stage_h0(self, r):
        """on_chip_stage_h0 up to its second __syncthreads in rank r: every buffer zeroed, __syncthreads,
        h_0 into buffer 0; checks the zero fill, the placement and the image (ids stage)."""
        g, mem, B, H, elem, bad, chk = self.g, self.mems[r], self.B, self.H, self.elem, self.bad, self.ids["stage"]
        before = mem.count.copy()
        mem.store(g.h_base + np.arange(g.buffers * 16 * g.ldh) * elem, 0, elem)
        for b_ in range(g.buffers):
            self.h_access("w", r, r, b_, np.arange(g.ldh), "the zero fill", -1)
        d = mem.count - before
        if (d[g.h_base:g.part_base] != 1).any() or d.sum() != g.buffers * g.buf_bytes:
            bad(chk, f"rank {r}: the zero fill does not write each byte of the {g.buffers} buffer(s) once (and "
                     f"nothing else)")
        self.ep.syncthreads(r)
        if self.case.with_state0:
            i = np.arange(B * H)
            b_, col = i // H, i % H
            at = b_ * g.ldh + staging_position(col, elem, self.mut)
            before = mem.count.copy()
            mem.store(g.h_base + at * elem, self.s0bits[b_, col], elem)
            self.h_access("w", r, r, 0, at, "the h_0 placement", -1)
            placed = (mem.count - before)[g.h_base:g.h_base + g.buf_bytes].reshape(16 * g.ldh, elem)[:, 0]
            if (mem.count - before).sum() != B * H * elem or placed.max() > 1 or ((at % g.ldh) >= g.hpad).any():
                bad(chk, f"rank {r}: the h_0 placement does not write each (b < B, col < H) once into buffer 0, "
                         f"inside positions < hpad")
        want = staged_image(g, self.s0bits, B, H)
        got = self.h_image(mem, 0)
        if not np.array_equal(got, want):
            bb, cc = np.argwhere(got != want)[0]
            bad(chk, f"rank {r}: h_s buffer 0 [{bb} * ldh + {cc}] = {got[bb, cc]:#x}, expected {want[bb, cc]:#x} "
                     f"(state0[b, col] at mma_k_position(col), zero at rows >= B, columns >= H, positions >= hpad)")
        if g.buffers == 2 and self.h_image(mem, 1).any():
            bad(chk, f"rank {r}: h_s buffer 1 not zero after the start")

    def start_barrier(self):
        """on_chip_stage_h0's end, every rank: __syncthreads; a cluster: arrive, wait (every rank's
        buffers zeroed before any rank writes into them)."""
        nib = "no_init_barrier" in self.mut
        for r in range(self.ctas):
            self.ep.syncthreads(r)
            if self.ctas > 1 and not nib:
                self.ep.arrive(r)
        if self.ctas > 1 and not nib:
            for r in range(self.ctas):
                self.ep.wait_(r)

    def wait(self, r, s):
        """on_chip_wait before step s's products (s > 0)."""
        if self.ctas > 1 and s > 0 and "no_wait" not in self.mut:
            self.ep.wait_(r)

    def send(self, r, s, wbuf, publish):
        """on_chip_send from rank r at step s (its h_t in buffer wbuf): one CTA, __syncthreads; a
        cluster, __syncthreads, on publishing steps the all-gather of columns [u0, u0 + rows) of rows
        < B into every other rank, the arrival."""
        g, mem, mut, bad, ids, elem, stats = self.g, self.mems[r], self.mut, self.bad, self.ids, self.elem, self.stats
        ctas, u0, B, ep = self.ctas, r * g.rows, self.B, self.ep
        if ctas == 1:
            ep.syncthreads(r)
            return
        if "gather_before_sync" not in mut:
            ep.syncthreads(r)
        gi, gb, gc, row_chunks = self.gi, self.gb, self.gc, self.row_chunks
        if publish and len(gi):
            base = self.buf_base(wbuf)
            off = (gb * g.ldh + (0 if "gather_no_u0" in mut else u0)) * elem + gc * 16
            src = base + off
            words, wrote = [], np.ones(len(gi), dtype=bool)
            for k in range(4):
                v_, ok_, w_ = mem.load(src + 4 * k, 4)
                words.append(v_)
                wrote &= w_ & ok_
            if not wrote.all():
                bad(ids["region"], f"rank {r} step {s}: an all-gather load reads bytes never written")
            rel = off - gb * self.row_bytes
            if (src % 16).any() or (gb >= B).any() or (rel < u0 * elem).any() or \
                    (rel + 16 > (u0 + g.rows) * elem).any():
                bad(ids["gather"], f"rank {r} step {s}: an all-gather piece misaligned or outside row b < B's "
                                   f"positions [u0, u0 + rows) of buffer {wbuf}")
            peers = (r + self.gq) % ctas
            cover = np.zeros((ctas, B, row_chunks), dtype=np.int64)
            np.add.at(cover, (peers, gb, gc), 1)
            want_cover = np.ones((ctas, B, row_chunks), dtype=np.int64)
            want_cover[r] = 0
            if not np.array_equal(cover, want_cover) or peers[0] != (r + 1) % ctas:
                bad(ids["gather"], f"rank {r} step {s}: the all-gather does not send each (b < B, piece) to every "
                                   f"other rank once, from rank + 1 (ranks {sorted(set(peers.tolist()))})")
            self.h_access("r", r, r, wbuf, off // elem, "the all-gather's loads", s)
            for peer in range(ctas):
                sel = peers == peer
                if not sel.any():
                    continue
                self.h_access("w", r, peer, wbuf, off[sel] // elem, "the all-gather's stores", s)
                self.mems[peer].store(np.concatenate([src[sel] + 4 * k for k in range(4)]),
                                      np.concatenate([words[k][sel] for k in range(4)]), 4)
            # the 16-byte loads (and stores: the same offsets): each quarter-warp's 8 lanes
            lanes = np.full(-(-len(gi) // 8) * 8, -1, dtype=np.int64)
            lanes[:len(gi)] = src // 4
            qw = lanes.reshape(-1, 8)
            qwords = (qw[:, :, None] + np.arange(4)[None, None, :]).reshape(len(qw), 32)
            qwords = np.where(np.repeat(qw, 4, axis=1) < 0, qwords[:, :1], qwords)  # idle lanes
            gw = conflict_ways(qwords)
            if gw.max() > 1:
                bad(ids["bank"], f"rank {r} step {s}: a {gw.max()}-way bank conflict in the all-gather's 16-byte "
                                 f"loads (a quarter-warp)")
            if stats is not None:
                stats["G16"] = stats.get("G16", 0) + len(qw)
                stats["remote"] = stats.get("remote", 0) + len(gi)
        ep.arrive(r)

    def output_checks(self, s, t, seq_t, out_ref_s, ocount, owriter, reader, z_check):
        """A step's outputs: each (b < B, u < H) written once, by the rank whose rows hold u (ids out), ==
        the reference; z / hf loaded only by the thread that then writes the output (check z_check)."""
        bad, chk, rows = self.bad, self.ids["out"], self.g.rows
        rk = np.arange(self.H)[None, :] // rows
        if (ocount != 1).any():
            bb, uu = np.argwhere(ocount != 1)[0]
            bad(chk, f"step {s}: output (b {bb}, u {uu}) written {ocount[bb, uu]} times (each (b < B, u < H) once)")
        elif (owriter // NTHREADS != rk).any():
            bb, uu = np.argwhere(owriter // NTHREADS != rk)[0]
            bad(chk, f"step {s}: output (b {bb}, u {uu}) written by rank {owriter[bb, uu] // NTHREADS}, its rows are "
                     f"rank {uu // rows}'s")
        if ((reader >= 0) & (reader != owriter)).any():
            bb, uu = np.argwhere((reader >= 0) & (reader != owriter))[0]
            bad(z_check, f"step {s}: z / hf of (b {bb}, u {uu}) loaded by thread {reader[bb, uu]}, the output written "
                         f"by {owriter[bb, uu]} (rank * 512 + thread)")
        if not np.array_equal(seq_t, out_ref_s):
            bb, uu = np.argwhere(seq_t != out_ref_s)[0]
            bad(chk, f"step {s}: seq[{t}][{bb}, {uu}] = {seq_t[bb, uu]}, the reference recurrence gives "
                     f"{out_ref_s[bb, uu]}")

    def next_buffer_checks(self, s, wbuf, h_counts, h_next_ref):
        """After step s (h_counts: each rank's h_s write counts before it): every rank's buffer wbuf == a
        fresh staging of h_t, each (b < B, position < hpad) written once, nothing else; the last step:
        each rank's own columns only (ids out)."""
        g, B, H, elem, bad, chk = self.g, self.B, self.H, self.elem, self.bad, self.ids["out"]
        last = s + 1 >= self.case.T
        for r in range(self.ctas):
            dcount = self.mems[r].count[g.h_base:g.part_base] - h_counts[r]
            want_w = np.zeros((g.buffers, 16, g.ldh), dtype=np.int64)
            want_w[wbuf, :B, :g.hpad] = 1
            if last:  # the last step: its own columns only (read back for the outputs), no all-gather
                want_w[wbuf, :B, :] = 0
                want_w[wbuf, :B, r * g.rows:(r + 1) * g.rows] = 1
            wrote = dcount.reshape(g.buffers, 16, g.ldh, elem)
            if not (wrote == want_w[..., None]).all():
                bb = np.argwhere((wrote != want_w[..., None]).any(axis=-1))[0]
                bad(chk, f"step {s}: rank {r}'s h_s buffer {bb[0]} element ({bb[1]}, {bb[2]}) written "
                         f"{wrote[tuple(bb)].max()} times, expected {want_w[tuple(bb)]} (each (b < B, position < "
                         f"hpad) once, in buffer {wbuf} only)")
            got, fresh = self.h_image(self.mems[r], wbuf), staged_image(g, h_next_ref[:B, :H], B, H)
            if last:
                got, fresh = got[:, r * g.rows:(r + 1) * g.rows], fresh[:, r * g.rows:(r + 1) * g.rows]
            if not np.array_equal(got, fresh):
                bb, cc = np.argwhere(got != fresh)[0]
                bad(chk, f"after step {s} rank {r}'s buffer {wbuf} [{bb} * ldh + {cc + (r * g.rows if last else 0)}] "
                         f"= {got[bb, cc]:#x}, a fresh staging of h_t gives {fresh[bb, cc]:#x}")

    def finish(self):
        """The wait after the loop; the arrivals and waits pair up; the hazards (ids hazard)."""
        chk = self.ids["hazard"]
        if self.ctas > 1:
            for r in range(self.ctas):
                self.ep.wait_(r)
            if len(set(self.ep.arr)) != 1 or self.ep.arr != self.ep.wait:
                self.bad(chk, f"cluster arrivals {self.ep.arr} and waits {self.ep.wait} do not pair up (every rank "
                              f"the same count)")
            if self.ep.early:
                self.bad(chk, f"a wait on a phase not every rank arrives at (ranks {sorted(set(self.ep.early))})")
        races = self.ep.races()
        if races:
            self.bad(chk, f"{len(races)} unordered access pair(s), e.g. {races[0]}")


# ---------------------------------------------------------------------------------------------
# the replay: all ranks of the cluster, T steps

Case = collections.namedtuple("Case", "fmt H ctas B T lives backward seed with_state0 low_zero")


def case_name(c):
    return (f"{c.fmt} H{c.H} ctas{c.ctas} B{c.B} T{c.T} lives{list(c.lives)}{' bwd' if c.backward else ''}"
            f"{'' if c.with_state0 else ' no h_0'}")


def pack_fn(per_word):
    shift = 16 * np.arange(per_word)
    return lambda elems: (np.asarray(elems, dtype=np.int64) << shift).sum(axis=-1), shift


def run(case, mut=frozenset(), stats=None):
    """Replays rnn_on_chip_kernel for case (every rank, every step). Returns findings [(check, msg)]."""
    found = []
    name = case_name(case)

    def bad(check, msg):
        found.append((check, f"{name}: {msg}"))

    fmt, H, ctas, B, T_ = case.fmt, case.H, case.ctas, case.B, case.T
    elem = FMTS[fmt]
    g = Geometry(elem, H, ctas)
    hpad, rows, ldh, ldh_words, ldp = g.hpad, g.rows, g.ldh, g.ldh_words, g.ldp
    per_word, K = g.per_word, 8 * g.per_word
    hs, n_tiles = g.half_steps, g.n_tiles
    tb = ptx_tables(per_word)
    pack, shift = pack_fn(per_word)
    mask16 = 0xFFFFFFFF if per_word == 1 else 0xFFFF

    def elements(regs):  # registers -> the element values the tensor core takes (..., per_word)
        return decode_mma(fmt, (np.asarray(regs)[..., None] >> shift) & mask16)

    # ---- operands and the reference recurrence
    Wb, Wd, s0bits, zin, act, t_of, h_ref, out_ref, sum_ref = reference(case, hpad)
    seq = zin.copy()  # the kernel's seq: z in, y out

    # (6) the regions the pointers use
    if g.smem != g.end or g.buf_bytes != on_chip_h_bytes(hpad, elem) or \
            (elem == 4 and g.hi_bytes * 3 // 2 != g.w_bytes) or g.h_base % 16 or g.part_base % 16 or g.buf_bytes % 16:
        bad("6", f"on_chip_smem {g.smem} != the regions' end {g.end} (W {g.w_bytes}, h_bufs at {g.h_base}, buffer "
                 f"{g.buf_bytes} vs on_chip_h_bytes {on_chip_h_bytes(hpad, elem)}, part_s at {g.part_base}) or a "
                 f"region misaligned")
    cx = Cluster(g, case, s0bits, bad, mut, stats, STD_IDS)
    mems, ep, row_bytes = cx.mems, cx.ep, cx.row_bytes
    buf_base, h_access = cx.buf_base, cx.h_access

    # ---- each rank's start: its rows of W, then on_chip_stage_h0 (h_s zeroed, __syncthreads, h_0 into
    # buffer 0, __syncthreads, a cluster's arrive and wait)
    for r in range(ctas):
        mem, u0 = mems[r], r * rows
        i = np.arange(rows * hpad)
        n, c = i // hpad, i % hpad
        u = n if "fill_no_u0" in mut else u0 + n
        v = Wb[u, c]  # Wb zero padded: u < H and c < H, else 0
        pos = mma_k_position(c, elem)
        before = mem.count.copy()
        if elem == 4:
            unit = pos // 2 if "fill_unswizzled" in mut else on_chip_pair_unit(n, pos // 2)
            hi_at = ((n * hpad // 2 + unit) * 2 + pos % 2) * 2
            lo_at = g.hi_bytes + (n * hpad // 2 + unit) * 2 + pos % 2
            mem.store(hi_at, (v >> 16) & 0xFFFF, 2)
            mem.store(lo_at, (v >> 8) & 0xFF, 1)
            if not (((hi_at >= 0) & (hi_at + 2 <= g.hi_bytes)).all() and
                    ((lo_at >= g.hi_bytes) & (lo_at < g.w_bytes)).all()):
                bad("1", f"rank {r}: the W fill writes outside its plane")
            d = (mem.count - before)
            if (d[:g.w_bytes] != 1).any() or d[g.w_bytes:].any():
                at = int(np.argmax(d != np.r_[np.ones(g.w_bytes, np.int64), np.zeros(g.smem - g.w_bytes, np.int64)]))
                bad("1", f"rank {r}: the planes' byte {at} written {d[at]} times (each byte of the planes once)")
        else:
            mem.store((n * ldh + pos) * 2, v, 2)
            want = np.zeros(g.smem, dtype=np.int64)
            want[((np.arange(rows) * ldh * 2)[:, None] + np.arange(hpad * 2)[None, :]).ravel()] = 1
            if not np.array_equal(mem.count - before, want):
                bad("1", f"rank {r}: the 16-bit W fill does not write each (n < rows, position < hpad) once, nothing "
                         f"else")
        ep.access("w", r, r, "W", "the W fill", -1)
        cx.stage_h0(r)
    cx.start_barrier()
    w_counts = [m.count[:g.w_bytes].copy() for m in mems]

    # ---- the k schedule (the same for every warp), each rank's B fragments (W is not written again)
    calls, mults, done = k_schedule(hs, mut)
    nl = len(calls)
    if done != list(range(hs)):
        bad("3", f"the pipelined loop multiplies {_mma.k_order_text(done)}, not 0 .. half_steps - 1 in order "
                 f"(half_steps {hs})")
    warps = np.arange(NWARPS)
    n_group, k_half = warps % 8, warps // 8
    kg = k_half[:, None] * hs + np.asarray(calls)[None, :]          # (16, nl): k-step of each load
    tiles = n_group[:, None] + 8 * np.arange(TILES)[None, :]        # (16, TILES)
    wi, ji = np.nonzero(tiles < n_tiles)                            # the (warp, j) multiplied
    tt = tiles[wi, ji]
    acc_of_load = np.asarray([i % 2 for i in range(nl)]) if g.one_tile else np.zeros(nl, dtype=np.int64)
    weight = np.zeros((2, nl))
    for idx in mults:
        weight[acc_of_load[idx], idx] += 1
    # (8) / (3): each k-step of a half multiplied once, into one accumulator (one tile: acc[k-step % 2])
    per_ks = np.zeros((2, hs))
    for idx in mults:
        if 0 <= calls[idx] < hs:
            per_ks[acc_of_load[idx], calls[idx]] += 1
    if g.one_tile and ((per_ks.sum(axis=0) != 1).any() or (per_ks[np.arange(hs) % 2, np.arange(hs)] != 1).any()):
        bad("8", f"one tile a warp: k-steps are not each multiplied once into acc[k-step % 2] (counts acc[0] "
                 f"{per_ks[0][:6].astype(int).tolist()}, acc[1] {per_ks[1][:6].astype(int).tolist()} ...)")
    lo_base = g.hi_bytes + (hpad if "lo_base_row" in mut else 0)
    sel0 = 0x1064 if "byte_perm_1064" in mut else SEL_B0
    nn = tt[:, None, None] * 8 + G[None, None, :]                    # (V, 1, 32) local rows
    kgv = kg[wi][:, :, None]                                          # (V, nl, 1)
    b_frag, b_el = [], []
    for r in range(ctas):
        mem, u0 = mems[r], r * rows
        wantr = pack(Wb[u0 + tt[:, None, None, None, None] * 8 + tb["b_n"][None, None],
                        kg[wi][:, :, None, None, None] * K + tb["b_k"][None, None]])
        if elem == 4:
            pair = kgv * 4 + T
            unit = nn * hpad // 2 + (pair if "swizzle_load_only" in mut else on_chip_pair_unit(nn, pair))  # (V, nl, 32)
            top, ok_t, w_t = mem.load(4 * unit, 4)
            low, ok_l, w_l = mem.load(lo_base + 2 * unit, 2)
            regs = np.stack([byte_perm(top, low, sel0), byte_perm(top, low, SEL_B1)], axis=-1)
            wantr = wantr & 0xFFFFFF00
            if (~w_t & ok_t).any() or (~w_l & ok_l).any():
                bad("6", f"rank {r}: a W plane load reads bytes never written")
            if (unit * 4 // (hpad * 2) != nn).any() or (unit < 0).any() or \
                    ((lo_base + 2 * unit - g.hi_bytes) // hpad != nn).any() or \
                    (lo_base + 2 * unit + 2 > g.w_bytes).any():
                bad("6", f"rank {r}: a hi / lo plane load outside its local row of the plane")
            hw = conflict_ways(unit.reshape(-1, 32))
            lw = conflict_ways(((lo_base + 2 * unit) // 4).reshape(-1, 32))
            if hw.max() > 1 or lw.max() > 1:
                bad("5", f"rank {r}: a {max(hw.max(), lw.max())}-way bank conflict in a "
                         f"{'HI' if hw.max() > 1 else 'LO'} "
                         f"plane load (the warp)")
            if stats is not None:
                stats["HI"] = stats.get("HI", 0) + hw.size
                stats["LO"] = stats.get("LO", 0) + lw.size
        else:
            at = 4 * (nn * ldh_words + kgv * 8 + 2 * T)
            vx, vy, ok_v, w_v = mem.load8(at)
            regs = np.stack([vx, vy], axis=-1)
            if (~w_v & ok_v).any():
                bad("6", f"rank {r}: a 16-bit W load reads bytes never written (a row's padding)")
            if (at % 8).any() or (at // row_bytes != nn).any() or (at % row_bytes + 8 > hpad * 2).any() or \
                    (at < 0).any():
                bad("6", f"rank {r}: a 16-bit W load misaligned or outside its local row's first hpad positions")
            ww = ways_8byte(at.reshape(-1, 32))
            if ww.max() > 1:
                bad("5", f"rank {r}: a {ww.max()}-way bank conflict in a 16-bit W load (a half-warp)")
            if stats is not None:
                stats["W8"] = stats.get("W8", 0) + ww.size
        if not np.array_equal(regs, wantr):
            v_, l_ = np.argwhere((regs != wantr).any(axis=(2, 3)))[0]
            bad("1", f"rank {r}: {int((regs != wantr).any(axis=(2, 3)).sum())} B fragment loads differ from PTX's B "
                     f"layout of W[u0 + n] (fp32: bits 31..8), e.g. warp {wi[v_]} tile {tt[v_]} k-step "
                     f"{kg[wi[v_], l_]}")
        loaded = np.zeros((n_tiles, g.k_steps), dtype=np.int64)
        np.add.at(loaded, (np.broadcast_to(tt[:, None], kg[wi].shape), np.clip(kg[wi], 0, g.k_steps - 1)), 1)
        if (loaded != 1).any():
            a_, b_ = np.argwhere(loaded != 1)[0]
            bad("1", f"rank {r}: W's n tile {a_} k-step {b_} loaded {loaded[a_, b_]} times (each once over the 16 "
                     f"warps)")
        b_frag.append(regs)
        el = elements(regs)  # (V, nl, 32, 2, per_word)
        Bm = np.full((len(tt), nl, K, 8), np.nan)
        Bm[:, :, tb["b_k"].ravel(), tb["b_n"].ravel()] = el.reshape(len(tt), nl, -1)
        b_el.append(Bm)

    # the lower half's outputs of each lane: (8 warps, TILES, 32 lanes, 4 registers)
    tl = np.arange(8)[:, None] + 8 * np.arange(TILES)[None, :]
    valid_l = np.broadcast_to((tl < n_tiles)[:, :, None, None], (8, TILES, 32, 4))
    rr = np.arange(4)
    bo = np.broadcast_to(G[None, None, :, None] + 8 * (rr // 2)[None, None, None, :], (8, TILES, 32, 4))
    ulo = tl[:, :, None, None] * 8 + 2 * T[None, None, :, None] + (rr % 2)[None, None, None, :]
    thread = (np.arange(8)[:, None, None, None] * 32 + np.arange(32)[None, None, :, None]) + 0 * bo  # lower threads
    upper_rows = B > (9 if "upper_rows_b_gt_9" in mut else 8)  # h's rows 8..15 hold sequences
    a_off = 4 * (G[None, :] * ldh_words + 2 * T[None, :] +
                 (0 if "a_no_k_half" in mut else 1) * k_half[:, None] * hs * 8)

    # ---- the steps
    for s in range(T_):
        t, live = t_of[s], case.lives[t_of[s]]
        rbuf = 0 if "buffer_fixed" in mut else s % g.buffers
        wbuf = 0 if "buffer_fixed" in mut else (s + 1) % g.buffers
        publish = s + 1 < T_ or "publish_last" in mut
        if ctas > 1 and publish and wbuf == rbuf:
            bad("7", f"step {s}: the ranks write h_t into buffer {wbuf}, the buffer every rank multiplies at this step")
        h_counts = [m.count[g.h_base:g.part_base].copy() for m in mems]
        ocount = np.zeros((B, H), dtype=np.int64)
        owriter = np.full((B, H), -1, dtype=np.int64)
        reader = np.full((B, H), -1, dtype=np.int64)
        sums_all = np.full((16, hpad), np.nan)
        for r in range(ctas):
            mem, u0 = mems[r], r * rows
            tid = r * NTHREADS + thread
            # z / hf loads (the lower half's own outputs), then (a cluster, s > 0) the wait
            uz = ulo if "z_no_u0" in mut else u0 + ulo
            zm = valid_l & (bo < live) & (uz < H)
            z = np.zeros(bo.shape)
            hf = np.zeros(bo.shape)
            z[zm] = seq[t, bo[zm], uz[zm]]
            hf[zm] = act[t, bo[zm], uz[zm]]
            reader[bo[zm], uz[zm]] = tid[zm]
            cx.wait(r, s)
            # both halves' products
            acc = np.zeros((NWARPS, TILES, 32, 4))
            if live > 0:
                h_access("r", r, r, rbuf, np.arange(hpad), "the multiply", s)
                lo_a = buf_base(rbuf) + a_off[:, None, :] + 4 * 8 * np.asarray(calls)[None, :, None]  # (16, nl, 32)
                hi_a = lo_a + 4 * 8 * ldh_words
                lx, ly, ok1, w1 = mem.load8(lo_a)
                loads_a = [lo_a]
                if upper_rows:  # rows 8..15 (zeros at B <= 8: not loaded, make_uint2(0, 0))
                    hx, hy, ok2, w2 = mem.load8(hi_a)
                    loads_a.append(hi_a)
                else:
                    hx, hy, ok2, w2 = np.zeros_like(lx), np.zeros_like(ly), ok1, w1
                if (~w1 & ok1).any() or (~w2 & ok2).any():
                    bad("6", f"rank {r} step {s}: an A load reads bytes never written")
                for a_ in loads_a:
                    rel = a_ - buf_base(rbuf)
                    if (a_ % 8).any():
                        bad("6", f"rank {r} step {s}: an 8-byte A load not 8-byte aligned")
                    if (rel < 0).any() or (rel // row_bytes >= 16).any() or (rel % row_bytes + 8 > hpad * elem).any():
                        bad("6", f"rank {r} step {s}: an A load outside buffer {rbuf}'s 16 rows' first hpad positions")
                aw = ways_8byte(np.concatenate(loads_a).reshape(-1, 32))
                if aw.max() > 1:
                    bad("5", f"rank {r} step {s}: a {aw.max()}-way bank conflict in an A load (a half-warp)")
                if stats is not None:
                    stats["A"] = stats.get("A", 0) + aw.size
                a = np.stack([lx, hx, ly, hy], axis=-1)  # a[0] = lo.x, a[1] = hi.x, a[2] = lo.y, a[3] = hi.y
                want_a = pack(h_ref[s][np.broadcast_to(tb["a_row"], (NWARPS, nl, 32, 4, per_word)),
                                       kg[:, :, None, None, None] * K + tb["a_col"][None, None]])
                if not np.array_equal(a, want_a):
                    w_, l_ = np.argwhere((a != want_a).any(axis=(2, 3)))[0]
                    bad("3", f"rank {r} step {s}: {int((a != want_a).any(axis=(2, 3)).sum())} A fragment loads differ "
                             f"from PTX's A layout of h_(t-1), e.g. warp {w_} k-step {kg[w_, l_]}")
                Am = np.full((NWARPS, nl, 16, K), np.nan)
                Am[:, :, tb["a_row"].ravel(), tb["a_col"].ravel()] = elements(a).reshape(NWARPS, nl, -1)
                C = np.matmul(Am[wi], b_el[r])[:, :, tb["c_row"], tb["c_col"]]  # (V, nl, 32, 4)
                accs = np.einsum("al,vlxr->avxr", weight, C)
                if g.one_tile:
                    acc[wi, 0] = accs[0] + (0 if "acc1_not_added" in mut else accs[1])
                    acc[wi, 1] = accs[1]
                    # (8) each half's acc[0] == h @ W.T over its half of k, this CTA's rows
                    for kh in (0, 1):
                        cols = slice(kh * hs * K, (kh + 1) * hs * K)
                        half = decode_mma(fmt, h_ref[s][:, cols]) @ Wd[u0:u0 + rows, cols].T  # 16 x rows
                        sel = wi // 8 == kh
                        want_c = half[tb["c_row"][None], tt[sel][:, None, None] * 8 + tb["c_col"][None]]
                        if not np.array_equal(acc[wi[sel], 0], want_c):
                            bad("8", f"rank {r} step {s}: k-half {kh}'s acc[0] after the add != h @ W.T over its half "
                                     f"of k (one tile a warp)")
                else:
                    acc[wi, ji] = accs[0]
            # the upper half's float2 stores
            part = np.full(16 * ldp, np.nan)
            pcount = np.zeros(16 * ldp, dtype=np.int64)
            ep.access("w", r, r, "part_s", "the upper half's stores", s)
            stores = []
            for w in range(8, NWARPS):
                for j in range(TILES):
                    tile = w % 8 + 8 * j
                    if tile >= n_tiles:
                        break
                    out = G * ldp + tile * 8 + 2 * T
                    second = out + (8 if "part_hi_plus_8" in mut else 8 * ldp)
                    stores.extend([g.part_base + 4 * out, g.part_base + 4 * second])
                    if ((g.part_base + 4 * out) % 8).any() or ((g.part_base + 4 * second) % 8).any():
                        bad("6", "a float2 store to part_s not 8-byte aligned")
                    if not _mma.store_c(part, pcount, out, second, acc[w, j]):
                        bad("6", f"rank {r}: a float2 store outside part_s (warp {w}, tile {tile})")
            cnt = pcount.reshape(16, ldp)
            if (cnt[:, :rows] != 1).any() or cnt[:, rows:].any():
                bb, n_ = np.argwhere(np.concatenate([cnt[:, :rows] != 1, cnt[:, rows:] != 0], axis=1))[0]
                bad("3", f"rank {r} step {s}: part_s[{bb}, {n_}] stored {cnt[bb, n_]} times (each (b < 16, n < rows) "
                         f"once, nothing else)")
            if "no_first_syncthreads" not in mut:
                ep.syncthreads(r)
            # the lower half: sums, y (acc = y), h_t into this CTA's own next buffer
            ep.access("r", r, r, "part_s", "the epilogue's reads", s)
            pidx = np.where(valid_l, bo * ldp + ulo, 0)
            pread = np.bincount(pidx[valid_l], minlength=16 * ldp)
            if ((pread > 0) & (pcount != 1)).any() or (pread[pcount == 1] != 1).any():
                bad("3", f"rank {r} step {s}: the epilogue reads a part_s element not stored once, or not each once")
            sm = np.where(valid_l, acc[:8] + part[pidx], 0.0)
            sums_all[bo[valid_l], u0 + ulo[valid_l]] = sm[valid_l]
            ue = ulo if "epi_no_u0" in mut else u0 + ulo
            ym = valid_l & (bo < live) & (ue < H)
            y = np.where(ym, epilogue_model(z + sm, hf), 0.0)  # acc[j][r] = y (small integers: exact in scalar_t)
            base = buf_base(wbuf)
            if not (ctas > 1 and "own_write_skipped" in mut):  # every step (the last: for the outputs' read-back)
                hm = valid_l & (bo < B)
                pos = bo[hm] * ldh + (ue[hm] if "h_write_unpermuted" in mut else mma_k_position(ue[hm], elem))
                if (pos % ldh >= hpad).any():
                    bad("6", f"rank {r} step {s}: the epilogue writes h_t outside its rows' first hpad positions")
                h_access("w", r, r, wbuf, pos, "the epilogue's h_t", s)
                mem.store(base + elem * pos, encode(fmt, y[hm]), elem)
            if stats is not None:
                if stores:
                    st = np.stack(stores)
                    ways = ways_8byte(st)
                    stats.setdefault("store_ways", collections.Counter()).update(ways.tolist())
                rd = (g.part_base // 4 + pidx).transpose(0, 1, 3, 2).reshape(-1, 32)
                keep = valid_l.transpose(0, 1, 3, 2).reshape(-1, 32).all(axis=1)
                stats.setdefault("read_ways", collections.Counter()).update(conflict_ways(rd[keep]).tolist())
            cx.send(r, s, wbuf, publish)
            # the outputs to seq[t] (after the arrival): fp32 from acc, 16-bit read back from h_next
            uo = ulo if "out_no_u0" in mut else u0 + ulo
            om = valid_l & (bo < B) & (uo < H)
            if elem == 4:
                seq[t, bo[om], uo[om]] = y[om]
            else:
                pos = bo[om] * ldh + mma_k_position(uo[om], elem)
                h_access("r", r, r, wbuf, pos, "the outputs' read-back", s)
                back, _, w_ = mem.load(base + elem * pos, elem)
                if not w_.all():
                    bad("6", f"rank {r} step {s}: an output read back from h_t reads bytes never written")
                seq[t, bo[om], uo[om]] = decode_mma(fmt, back)
            np.add.at(ocount, (bo[om], uo[om]), 1)
            owriter[bo[om], uo[om]] = tid[om]

        # (3) the sums, (4) the outputs and every rank's next buffer
        want_sum = sum_ref[s] if live > 0 else np.zeros((16, hpad))
        if not np.array_equal(sums_all, want_sum):
            bb, uu = np.argwhere(~(sums_all == want_sum))[0]
            bad("3", f"step {s}: {int((~(sums_all == want_sum)).sum())} of {16 * hpad} sums wrong, e.g. (b {bb}, u "
                     f"{uu}): "
                     f"acc + part_s = {sums_all[bb, uu]}, h @ W.T = {want_sum[bb, uu]}")
        cx.output_checks(s, t, seq[t], out_ref[s], ocount, owriter, reader, "3")
        cx.next_buffer_checks(s, wbuf, h_counts, h_ref[s + 1])
    # (6) nothing stored into W after the fill; (7) the wait after the loop, the barriers, the hazards
    for r in range(ctas):
        if not np.array_equal(mems[r].count[:g.w_bytes], w_counts[r]):
            bad("6", f"rank {r}: a store into W after the fill")
    cx.finish()
    return found


# ---------------------------------------------------------------------------------------------
# the cases, the mutants

H_LIST = [1, 7, 63, 64, 65, 129, 200, 256, 300, 512, 640, 1000, 1024]
B_LIST = [1, 3, 8, 16]



def _lives(rng, B, T_, kind):
    """Live sequences a step: 0 all live, 1 shrinking, 2 one step at 0, 3 random."""
    if kind == 0:
        return [B] * T_
    if kind == 1:
        return sorted(rng.integers(1, B + 1, size=T_).tolist(), reverse=True)
    if kind == 2:
        lives = [B] * T_
        lives[int(rng.integers(0, T_))] = 0
        return lives
    return rng.integers(0, B + 1, size=T_).tolist()

def launchable(elem, H):
    """The ctas choose_on_chip takes on sm_90 for H (its default, and each RNNKERN_RNN_CLUSTER that fits)."""
    return sorted({choose_on_chip(elem, 1, H, 9, asked)[1] for asked in range(0, MAX_CTAS + 1)
                   if choose_on_chip(elem, 1, H, 9, asked)[0]})


def cases():
    """The grid: fp32 and bf16 x every H x its launchable ctas x B (all four on H <= 256, two on H300 / H512,
    one from H640, rotating), a few f16; lives per time step: B, fewer, or 0; T 3 or 4; forward and
    backward; and a few runs of 1-2 steps, B 9 and 12."""
    rng = np.random.default_rng(2025)
    out = []
    seed = 0
    for fmt in ("tf32", "bf16", "f16"):
        elem = FMTS[fmt]
        for H in H_LIST:
            for ctas in launchable(elem, H):
                if fmt == "f16" and (H, ctas) not in ((1, 1), (65, 2), (200, 4), (300, 5), (640, 10)):
                    continue
                bs = B_LIST if (H <= 256 and fmt != "f16") else [B_LIST[(seed + k) % 4] for k in (0, 2)]
                if H >= 640:  # (the costliest: one B each; B 16 at the largest of each format)
                    bs = [16] if (fmt == "tf32" or H == 1024) else bs[:1]
                if fmt == "f16":
                    bs = bs[:1]
                for B in bs:
                    seed += 1
                    T_ = 3 + seed % 2
                    lives = _lives(rng, B, T_, seed % 4)
                    out.append(Case(fmt, H, ctas, B, T_, tuple(int(x) for x in lives), seed % 3 == 2, seed,
                                    seed % 7 != 0, 13 if seed % 2 else 8))
    # one and two steps (no all-gather at all / one): the barriers still pair up; B 9 and 12 (h's rows
    # 8..15 loaded from B 9)
    out += [Case("bf16", 200, 4, 9, 3, (9, 9, 4), False, seed + 5, True, 13),
            Case("tf32", 64, 1, 9, 4, (9, 8, 9, 9), True, seed + 6, True, 8),
            Case("tf32", 300, 5, 12, 3, (12, 12, 12), False, seed + 7, False, 13),
Case("bf16", 65, 2, 3, 1, (3,), False, seed + 1, True, 13),
            Case("tf32", 7, 1, 1, 1, (1,), True, seed + 2, True, 8),
            Case("tf32", 129, 3, 8, 2, (8, 5), True, seed + 3, True, 13),
            Case("f16", 300, 5, 16, 2, (16, 0), False, seed + 4, False, 13)]
    return out


# ---------------------------------------------------------------------------------------------
# the W-in-registers kernel (rnn_on_chip_wreg_kernel): all ranks, T steps

WREG_IDS = dict(stage="Rc", out="Rc", gather="Rc", bank="Rc", region="Rc", hazard="Rf")


def wreg_word(Wp, u, c, elem, mut=()):
    """wreg_word(p, u, c) from W's operand bits Wp (zero past H): fp32 the value's bits; 16-bit
    columns c (the low half) and c + 1 (the high)."""
    if elem == 4:
        return Wp[u, c]
    lo, hi = Wp[u, c], Wp[u, c + 1]
    if "wreg_halves_swapped" in mut:
        lo, hi = hi, lo
    return lo | (hi << 16)


def wreg_b_schedule(k_steps, mut=()):
    """rnn_on_chip_wreg_kernel's prefetching k-loop: next = k-step 0's load; for ks = 0 .. k_steps - 1
    (the break): b = next, k-step ks + 1's load into next (if ks + 1 < k_steps), the MMA on b. Returns
    the k-step of each load and, for each k-step multiplied in order, the load its registers come
    from."""
    loads, uses = [0], []
    nxt = 0
    for ks in range(WREG_MAX_STEPS):
        if ks >= k_steps:
            break
        b = nxt
        if ks + 1 < k_steps:
            loads.append(ks if "wreg_prefetch_same_ks" in mut else ks + 1)
            nxt = len(loads) - 1
        uses.append(b)
    return loads, uses


def run_wreg(case, mut=frozenset(), stats=None):
    """Replays rnn_on_chip_wreg_kernel<scalar_t> for case (every rank of hpad / 64, every step).
    Returns findings [(check, msg)]."""
    found = []
    name = f"registers {case_name(case)}"

    def bad(check, msg):
        found.append((check, f"{name}: {msg}"))

    fmt, H, B, T_ = case.fmt, case.H, case.B, case.T
    elem = FMTS[fmt]
    g = WregGeometry(elem, H)
    ctas, hpad, ldh, ldh_words, rows = g.ctas, g.hpad, g.ldh, g.ldh_words, g.rows
    per_word, K, ksn = g.per_word, g.kk, g.k_steps
    tb = ptx_tables(per_word)
    pack, shift = pack_fn(per_word)
    mask16 = 0xFFFFFFFF if per_word == 1 else 0xFFFF

    def elements(regs):  # registers -> the element values the tensor core takes (..., per_word)
        return decode_mma(fmt, (np.asarray(regs)[..., None] >> shift) & mask16)

    if case.ctas != ctas or not wreg_kernel_accepts(elem, B, H, ctas):
        bad("Re", f"the kernel's guard refuses B {B} at {ctas} CTAs (k-steps {ksn})")
        return found
    Wb, Wd, s0bits, zin, act, t_of, h_ref, out_ref, sum_ref = reference(case, hpad)
    seq = zin.copy()  # the kernel's seq: z in, y out
    if g.smem != g.end or g.part_base % 16 or g.buf_bytes % 16:
        bad("Re", f"on_chip_wreg_smem {g.smem} != the regions' end {g.end} (h_bufs {g.buffers} x {g.buf_bytes}, "
                  f"part_s at {g.part_base}) or a region misaligned")
    cx = Cluster(g, case, s0bits, bad, mut, stats, WREG_IDS)
    mems, ep = cx.mems, cx.ep
    row_bytes = cx.row_bytes

    # ---- the registers' formulas: the row and column wreg_word reads for each (warp, ks, lane, register)
    warps = np.arange(NWARPS)
    m_tile, k_part = warps % 4, warps // 4
    k_true = k_part * ksn                                               # the warp's quarter: its first k-step
    k_first = 0 * k_part if "wreg_no_k_first" in mut else k_true
    KS = np.arange(WREG_MAX_STEPS)
    mine = KS < ksn
    c0 = (k_first[:, None, None] + KS[None, :, None]) * K + T[None, None, :] * per_word  # (16, 16 ks, 32)
    c1 = c0 if "wreg_c1_eq_c0" in mut else c0 + 4 * per_word
    ur = np.broadcast_to((m_tile * 16)[:, None, None] + G[None, None, :], c0.shape)      # local row u - u0
    u8 = ur if "wreg_no_row8" in mut else ur + 8
    held_u = np.stack([ur, u8, ur, u8], axis=-1)                      # (16, 16, 32, 4)
    held_c = np.stack([c0, c0, c1, c1], axis=-1)
    mine4 = np.broadcast_to(mine[None, :, None, None], held_c.shape)
    # (a) without values: each register half holds the (row, column) PTX's A layout puts there for the
    # warp's m tile and k-step, and the 16 warps' halves hold each (row < 64, k < hpad) once
    e = np.arange(per_word)
    half_c = held_c[..., None] + ((1 - e) if "wreg_halves_swapped" in mut and per_word == 2 else e)
    half_u = np.broadcast_to(held_u[..., None], half_c.shape)
    sel = np.broadcast_to(mine4[..., None], half_c.shape)
    ptx_u = np.broadcast_to((m_tile * 16)[:, None, None, None, None] + tb["a_row"][None, None], half_c.shape)
    ptx_c = (k_true[:, None, None, None, None] + KS[None, :, None, None, None]) * K + tb["a_col"][None, None]
    if (half_u != ptx_u)[sel].any() or (half_c != ptx_c)[sel].any():
        w_, k_ = np.argwhere(((half_u != ptx_u) | (half_c != ptx_c)) & sel)[0][:2]
        bad("Ra", f"warp {w_} k-step {k_}: a register half holds W's (row, column) where PTX's A layout of the "
                  f"warp's m tile {m_tile[w_]} / k-step {k_true[w_] + k_} wants another")
    inside = sel & (half_u >= 0) & (half_u < rows) & (half_c >= 0) & (half_c < hpad)
    cover = np.zeros((rows, hpad), dtype=np.int64)
    np.add.at(cover, (half_u[inside], half_c[inside]), 1)
    if (cover != 1).any() or (inside != sel).any():
        n_, k_ = np.argwhere(cover != 1)[0] if (cover != 1).any() else (-1, -1)
        bad("Ra", f"the 16 warps' registers do not hold each (row < 64, k < hpad) of the CTA's W once (e.g. row {n_} "
                  f"k {k_}: {cover[n_, k_] if n_ >= 0 else '-'} times)")
    # past the warp's k-steps the kernel reads column H (or masks by ks < k_steps): zeros either way
    if "wreg_tail_not_zero" not in mut:
        held_c = np.where(mine4, held_c, H)
    Wp = np.zeros((hpad, 2 * hpad + 64), dtype=np.int64)  # (zeros past H, where column H + .. lands too)
    Wp[:, :hpad] = Wb
    cm = np.clip(held_c, 0, Wp.shape[1] - 2)
    pc = np.where(sel, ptx_c, 0)
    a_el = []
    for r in range(ctas):
        u0 = r * rows
        wa = wreg_word(Wp, u0 + held_u, cm, elem, mut)
        want = np.where(mine4, pack(Wb[u0 + ptx_u, pc]), 0)
        if not np.array_equal(wa, want):
            w_, k_, l_, x_ = np.argwhere(wa != want)[0]
            bad("Ra", f"rank {r}: {int((wa != want).sum())} W registers differ from PTX's A layout of W[u0 + "
                      f"m_tile * 16 + row, quarter's k] bit for bit (zeros past H and past k_steps), e.g. warp {w_} "
                      f"wa[{k_}][{x_}] lane {l_}: {wa[w_, k_, l_, x_]:#x}, expected {want[w_, k_, l_, x_]:#x}")
        Am = np.full((NWARPS, ksn, 16, K), np.nan)
        Am[:, :, tb["a_row"].ravel(), tb["a_col"].ravel()] = elements(wa[:, :ksn]).reshape(NWARPS, ksn, -1)
        a_el.append(Am)

    # ---- the lanes' B loads (the same every step but for the buffer), the first quarter's outputs
    kst = np.arange(ksn)
    loads, uses = wreg_b_schedule(ksn, mut)
    if len(uses) != ksn or [loads[i] for i in uses] != list(range(ksn)):
        bad("Rb", f"the prefetching k-loop multiplies k-steps 0 .. {ksn - 1} with the fragments of k-steps "
                  f"{[loads[i] for i in uses][:6]}{'...' if len(uses) > 6 else ''}")
    b_word = (G[None, None, :] * ldh_words + 2 * T[None, None, :] +
              (k_first[:, None, None] + np.asarray(loads)[None, :, None]) * 8)                # (16, loads, 32)
    b_cols = (k_true[:, None, None, None, None] + kst[None, :, None, None, None]) * K + tb["b_k"][None, None]
    b_rows = np.broadcast_to(tb["b_n"][None, None], b_cols.shape)                            # (16, ksn, 32, 2, pw)
    rr = np.arange(4)
    shp = (4, 32, 4)  # the first quarter's warps (m tiles 0..3), lanes, accumulators
    ul = np.broadcast_to((m_tile[:4] * 16)[:, None, None] + G[None, :, None] + 8 * (rr // 2), shp)
    bq = np.broadcast_to(2 * T[None, :, None] + rr % 2, shp)
    tid_l = np.broadcast_to(warps[:4, None, None] * 32 + np.arange(32)[None, :, None], shp)
    # the epilogue's reads of part_s: quarter q, first-quarter warp, half (units g, g + 8), lane (batch
    # rows b0 = 2t, b0 + 1: a float2, or two floats)
    ld_at = (np.arange(3)[:, None, None, None] * rows + (m_tile[:4] * 16)[None, :, None, None] +
             G[None, None, None, :] + 8 * np.arange(2)[None, None, :, None]) * WREG_LDP + 2 * T  # (3, 4, 2, 32)
    qidx = ld_at[:, :, rr // 2, :].transpose(0, 1, 3, 2) + rr % 2                           # (3, 4, 32, 4)
    acc_c_u = (m_tile * 16)[:, None, None] + tb["c_row"][None]                            # (16, 32, 4)
    acc_c_b = np.broadcast_to(tb["c_col"][None], acc_c_u.shape)

    # ---- each rank's start: on_chip_stage_h0 (the registers were loaded before it, from global memory)
    for r in range(ctas):
        cx.stage_h0(r)
    cx.start_barrier()

    # ---- the steps
    for s in range(T_):
        t, live = t_of[s], case.lives[t_of[s]]
        rbuf, wbuf = s % g.buffers, (s + 1) % g.buffers
        publish = s + 1 < T_
        h_counts = [m.count[g.h_base:g.part_base].copy() for m in mems]
        ocount = np.zeros((B, H), dtype=np.int64)
        owriter = np.full((B, H), -1, dtype=np.int64)
        reader = np.full((B, H), -1, dtype=np.int64)
        sums_all = np.full((8, hpad), np.nan)
        if live > 0:  # h by quarters of k, for each warp's sums
            hq = decode_mma(fmt, h_ref[s][:8]).reshape(8, 4, ksn * K)
        for r in range(ctas):
            mem, u0 = mems[r], r * rows
            tid = r * NTHREADS + tid_l
            # z / hf by the first quarter's lanes, then on_chip_wait
            uu = u0 + ul
            zm = (bq < live) & (uu < H)
            z, hf = np.zeros(shp), np.zeros(shp)
            z[zm] = seq[t, bq[zm], uu[zm]]
            hf[zm] = act[t, bq[zm], uu[zm]]
            reader[bq[zm], uu[zm]] = tid[zm]
            cx.wait(r, s)
            acc = np.zeros((NWARPS, 2, 32, 4))  # acc[0]: even k-steps, acc[1]: odd
            if live > 0:
                cx.h_access("r", r, r, rbuf, np.arange(hpad), "the multiply", s)
                at = cx.buf_base(rbuf) + 4 * b_word                                   # (16, loads, 32)
                bx, by, ok, wr = mem.load8(at)
                rel = at - cx.buf_base(rbuf)
                if (at % 8).any():
                    bad("Rb", f"rank {r} step {s}: a B (h) 8-byte load not 8-byte aligned")
                if (rel < 0).any() or (rel // row_bytes >= 16).any() or (rel % row_bytes + 8 > hpad * elem).any():
                    bad("Rb", f"rank {r} step {s}: a B (h) load outside buffer {rbuf}'s 16 rows' first hpad positions")
                if (~wr & ok).any():
                    bad("Rb", f"rank {r} step {s}: a B (h) load reads bytes never written")
                bw = ways_8byte(at.reshape(-1, 32))
                if bw.max() > 1:
                    bad("Rb", f"rank {r} step {s}: a {bw.max()}-way bank conflict in a B (h) load (a half-warp)")
                if stats is not None:
                    stats["WB"] = stats.get("WB", 0) + bw.size
                regs = np.stack([bx, by], axis=-1)[:, uses]                           # (16, ksn, 32, 2)
                want_b = pack(h_ref[s][b_rows, b_cols])
                if not np.array_equal(regs, want_b):
                    w_, k_ = np.argwhere((regs != want_b).any(axis=(2, 3)))[0]
                    bad("Rb", f"rank {r} step {s}: {int((regs != want_b).any(axis=(2, 3)).sum())} B loads differ from "
                              f"PTX's B layout of h_(t-1), e.g. warp {w_} k-step {k_true[w_] + k_}")
                Bm = np.full((NWARPS, ksn, K, 8), np.nan)
                Bm[..., tb["b_k"].ravel(), tb["b_n"].ravel()] = elements(regs).reshape(NWARPS, ksn, -1)
                C = np.matmul(a_el[r], Bm)[..., tb["c_row"], tb["c_col"]]            # (16, ksn, 32, 4)
                for ch in range(2):
                    acc[:, ch] = C[:, kst % 2 == ch].sum(axis=1)
                if "wreg_chains_not_summed" not in mut:
                    acc[:, 0] += acc[:, 1]
                # each warp's acc[0] == its quarter of h @ W.T (rows of its m tile, batch rows 0..7)
                qs = np.einsum("bqk,uqk->qbu", hq, Wd[u0:u0 + rows].reshape(rows, 4, ksn * K))   # (4, 8, 64)
                want_acc = qs[k_part[:, None, None], acc_c_b, acc_c_u]
                if not np.array_equal(acc[:, 0], want_acc):
                    w_ = int(np.argwhere((acc[:, 0] != want_acc).any(axis=(1, 2)))[0][0])
                    bad("Rc", f"rank {r} step {s}: warp {w_}'s acc[0] (chains summed) != h @ W.T over its quarter "
                              f"of k (m tile {m_tile[w_]}, quarter {k_part[w_]})")
            # quarters 1..3: float2 stores into part_s
            part = np.full(g.part_len, np.nan)
            pcount = np.zeros(g.part_len, dtype=np.int64)
            ep.access("w", r, r, "part_s", "the upper quarters' stores", s)
            stores = []
            for w in range(4, NWARPS):
                q = k_part[w] if "wreg_part_k_part" in mut else k_part[w] - 1
                out = (q * rows + m_tile[w] * 16 + G) * WREG_LDP + 2 * T
                second = out + 8 * WREG_LDP
                stores.extend([g.part_base + 4 * out, g.part_base + 4 * second])
                if (out % 2).any() or (second % 2).any():
                    bad("Rd", "a float2 store to part_s not 8-byte aligned")
                if not _mma.store_c(part, pcount, out, second, acc[w, 0]):
                    bad("Rd", f"rank {r}: a float2 store outside part_s (warp {w})")
            cnt = pcount.reshape(3, rows, WREG_LDP)
            want_cnt = np.zeros_like(cnt)
            want_cnt[:, :, :8] = 1
            if not np.array_equal(cnt, want_cnt):
                q_, n_, b_ = np.argwhere(cnt != want_cnt)[0]
                bad("Rd", f"rank {r} step {s}: part_s quarter {q_ + 1} (unit {n_}, batch {b_}) stored "
                          f"{cnt[q_, n_, b_]} times (each (quarter 1..3, unit < 64, batch < 8) once, nothing else)")
            if "wreg_no_first_syncthreads" not in mut:
                ep.syncthreads(r)  # every quarter multiplied, the sums stored
            # the first quarter: acc + part_s quarters 0, 1, 2; y; h_t into this CTA's own h_next
            ep.access("r", r, r, "part_s", "the epilogue's reads", s)
            if WREG_PART_READ == 8 and ((ld_at % 2).any() or ((g.part_base + 4 * ld_at) % 8).any()):
                bad("Rd", "a float2 read of part_s not 8-byte aligned")
            pread = np.bincount(qidx.ravel(), minlength=g.part_len)
            if len(pread) > g.part_len or ((pread > 0) & (pcount != 1)).any() or (pread[pcount == 1] != 1).any():
                bad("Rd", f"rank {r} step {s}: the epilogue reads a part_s element not stored once, or not each once")
            sm = acc[:4, 0] + part[qidx[0]] + part[qidx[1]] + part[qidx[2]]
            sums_all[bq, u0 + ul] = sm
            y = np.where(zm, epilogue_model(z + sm, hf), 0.0)  # acc = y (small integers: exact in scalar_t)
            base = cx.buf_base(wbuf)
            hm = bq < B
            pos = bq[hm] * ldh + mma_k_position(uu[hm], elem)
            if (pos % ldh >= hpad).any():
                bad("Rc", f"rank {r} step {s}: the epilogue writes h_t outside its rows' first hpad positions")
            cx.h_access("w", r, r, wbuf, pos, "the epilogue's h_t", s)
            if not mem.store(base + elem * pos, encode(fmt, y[hm]), elem).all():
                bad("Rc", f"rank {r} step {s}: the epilogue writes h_t outside shared memory")
            if stats is not None:
                stats.setdefault("wreg_store_ways", collections.Counter()).update(
                    ways_8byte(np.stack(stores)).tolist())
                if WREG_PART_READ == 8:  # a float2 a lane: each half-warp
                    ways = ways_8byte((g.part_base + 4 * ld_at).reshape(-1, 32))
                else:  # a float a lane (batch row b0 + e): the warp
                    ways = np.concatenate([conflict_ways((g.part_base // 4 + ld_at + e_).reshape(-1, 32))
                                           for e_ in (0, 1)])
                stats.setdefault("wreg_read_ways", collections.Counter()).update(ways.tolist())
            cx.send(r, s, wbuf, publish)
            # the outputs: fp32 from acc, 16-bit read back from h_next
            om = (bq < B) & (uu < H)
            if elem == 4:
                seq[t, bq[om], uu[om]] = y[om]
            else:
                pos = bq[om] * ldh + mma_k_position(uu[om], elem)
                cx.h_access("r", r, r, wbuf, pos, "the outputs' read-back", s)
                back, _, w_ = mem.load(base + elem * pos, elem)
                if not w_.all():
                    bad("Rc", f"rank {r} step {s}: an output read back from h_t reads bytes never written")
                seq[t, bq[om], uu[om]] = decode_mma(fmt, back)
            np.add.at(ocount, (bq[om], uu[om]), 1)
            owriter[bq[om], uu[om]] = tid[om]

        want_sum = sum_ref[s][:8] if live > 0 else np.zeros((8, hpad))
        if not np.array_equal(sums_all, want_sum):
            bb, uu_ = np.argwhere(~(sums_all == want_sum))[0]
            bad("Rc", f"step {s}: {int((~(sums_all == want_sum)).sum())} of {8 * hpad} sums wrong, e.g. (b {bb}, u "
                      f"{uu_}): acc + part_s = {sums_all[bb, uu_]}, h @ W.T = {want_sum[bb, uu_]}")
        cx.output_checks(s, t, seq[t], out_ref[s], ocount, owriter, reader, "Rc")
        cx.next_buffer_checks(s, wbuf, h_counts, h_ref[s + 1])
    cx.finish()
    return found


WREG_H = [1, 7, 64, 65, 129, 200, 300, 512, 640, 1000, 1024]
WREG_B = [1, 3, 8]  # (B 9 .. 16: declined, (Re))


def wreg_cases():
    """fp32 (where the host takes it: H <= 512) and bf16 over WREG_H at hpad / 64 CTAs, B in WREG_B (all
    three to H300, one above), f16 on three; lives B, fewer or 0 on some steps, forward and backward,
    with and without h_0; and a few of 1-2 steps."""
    rng = np.random.default_rng(2026)
    out = []
    seed = 5000
    for fmt in ("tf32", "bf16", "f16"):
        elem = FMTS[fmt]
        for H in WREG_H:
            use, ctas, _, _ = choose_on_chip(elem, 1, H, 9, 0, registers=True)
            if not use or (fmt == "f16" and H not in (65, 300, 1024)):
                continue
            if fmt == "f16" or H > 300:
                bs = [8 if H in (512, 1024) else WREG_B[seed % 3]]
            else:
                bs = WREG_B
            for B in bs:
                seed += 1
                T_ = 3 + seed % 2
                lives = _lives(rng, B, T_, seed % 4)
                out.append(Case(fmt, H, ctas, B, T_, tuple(int(x) for x in lives), seed % 3 == 2, seed,
                                seed % 7 != 0, 13 if seed % 2 else 8))
    out += [Case("tf32", 65, 2, 5, 1, (5,), True, seed + 1, True, 8),
            Case("bf16", 129, 3, 8, 2, (8, 6), False, seed + 2, True, 13),
            Case("tf32", 64, 1, 3, 2, (3, 3), True, seed + 3, False, 13)]
    return out


WREG_MUTANTS = {
    "wreg_c1_eq_c0": ("wa[ks][2] / [3] at column c0, as [0] / [1] (c1 = c0)", ("Ra", "Rc")),
    "wreg_no_row8": ("rows g + 8 missing in wa: [1] / [3] from row u, not u + 8", ("Ra", "Rc")),
    "wreg_no_k_first": ("k_first = 0 (every k part multiplies quarter 0)", ("Ra", "Rb", "Rc")),
    "wreg_part_k_part": ("the quarters' part_s index k_part, not k_part - 1", ("Rc", "Rd")),
    "wreg_chains_not_summed": ("acc[0] += acc[1] dropped (the odd k-steps lost)", ("Rc",)),
    "wreg_halves_swapped": ("wreg_word's 16-bit halves swapped (column c high, c + 1 low)", ("Ra", "Rc")),
    "wreg_no_first_syncthreads": ("the __syncthreads between the quarters' part_s stores and the epilogue dropped",
                                  ("Rf",)),
    "wreg_tail_not_zero": ("wa past k_steps not zero (W of the next quarter)", ("Ra",)),
    "wreg_prefetch_same_ks": ("the prefetch loads k-step ks again, not ks + 1", ("Rb", "Rc")),
}


def wreg_mutant_applies(mname, c):
    live_any = max(c.lives) > 0
    if mname == "wreg_halves_swapped":
        return FMTS[c.fmt] == 2 and live_any
    if mname == "wreg_chains_not_summed":
        return on_chip_wreg_steps(on_chip_hpad(c.H), FMTS[c.fmt]) >= 2 and c.H > 8 and live_any
    return live_any


def wreg_smem_checks():
    """(Re): on_chip_wreg_smem against the regions for every H 1..1024 the kernel takes; the host's
    registers branch against the kernel's guard; returns (problems, facts, lines)."""
    problems, lines = [], []
    top = (2 * WREG_ROWS + 3 * 16 + 7 + 8) * WREG_LDP + 8  # part_s floats the highest store reaches
    for elem in (4, 2):
        for H in range(1, 1025):
            g = WregGeometry(elem, H)
            if not wreg_kernel_accepts(elem, 1, H, g.ctas):
                continue
            if g.smem != g.end or g.part_base % 16 or g.ldh_words % 32 != 8 or top > g.part_len or \
                    g.k_steps * 4 * g.kk != g.hpad:
                problems.append(f"elem {elem} H {H}: on_chip_wreg_smem {g.smem} vs the regions' end {g.end}, part_s "
                                f"at {g.part_base}, ldh_words {g.ldh_words}, k-steps {g.k_steps}")
        for H in range(1, 1100):
            for major in (8, 9):
                for asked in range(0, MAX_CTAS + 2):
                    for B in (1, 8, 9, 16, 17):
                        use, ctas, smem, why = choose_on_chip(elem, B, H, major, asked, registers=True)
                        dflt = on_chip_hpad(H) // 64 if major >= 9 else 1
                        ok = H <= 1024 and B <= MAX_B and wreg_kernel_accepts(elem, B, H, ctas, major) and \
                            (asked > 0 or ctas == dflt)
                        if use != (ok and on_chip_wreg_smem(on_chip_hpad(H), ctas, elem) <= OPTIN) or \
                                (use and smem != WregGeometry(elem, H).smem):
                            problems.append(f"host registers elem {elem} H {H} sm_{major}0 asked {asked} B {B}: use "
                                            f"{use} (ctas {ctas}, smem {smem}, {why!r})")
    takes = {(elem, major, B): [H for H in range(1, 1100) if choose_on_chip(elem, B, H, major, 0, registers=True)[0]]
             for elem in (4, 2) for major in (8, 9) for B in (8, 9)}
    facts = {("sm_90 fp32: H 1..512", takes[(4, 9, 8)] == list(range(1, 513))),
             ("sm_90 16-bit: H 1..1024", takes[(2, 9, 8)] == list(range(1, 1025))),
             ("sm_80: H 1..64 only", takes[(4, 8, 8)] == takes[(2, 8, 8)] == list(range(1, 65))),
             ("B 9 up: none", not any(takes[(e, m, 9)] for e in (4, 2) for m in (8, 9)))}
    for what, ok in sorted(facts):
        if not ok:
            problems.append(f"expected: registers at {what}")
    for elem, what in ((4, "tf32"), (2, "bf16 / f16")):
        H = max(takes[(elem, 9, 8)])
        g = WregGeometry(elem, H)
        lines.append(f"   registers, {what}: up to H{H} ({g.ctas} CTAs, {g.k_steps} k-steps a warp: on_chip_wreg_smem "
                     f"{g.smem} = {g.buffers} x h_s {g.buf_bytes} + part_s {4 * g.part_len})")
    return problems, facts, lines


MUTANTS = {
    # the one-CTA replay's
    "swizzle_load_only": ("the planes' loads at pair kg * 4 + t without the XOR swizzle (the fill keeps it)", "135"),
    "byte_perm_1064": ("b0 = __byte_perm(top, low, 0x1064) instead of 0x1046", "134"),
    "stage_identity": ("the h_0 staging puts column col at position col (no mma_k_position)", "23"),
    "a_no_k_half": ("a_row without k_half * half_steps * 8", "3"),
    "upper_rows_b_gt_9": ("rows 8..15 of h loaded only from B > 9 (zeros at B 9)", "34"),
    "lo_base_row": ("w_lo8 one row (hpad bytes) past the lo8 plane's start", "136"),
    "fill_unswizzled": ("the fill's unit = pos / 2 (no swizzle; the loads keep it)", "13"),
    "second_load_same_ks": ("load(ks, a[1], b[1]) instead of ks + 1", "13"),
    "part_hi_plus_8": ("c2, c3 stored at out + 8 instead of out + 8 * ldp", "3"),
    "h_write_unpermuted": ("the epilogue writes h_t at b * ldh + u (no mma_k_position)", "4"),
    # the cluster's
    "fill_no_u0": ("the W fill takes row n instead of u0 + n (every rank holds rows 0 .. rows - 1)", "134"),
    "z_no_u0": ("the z / hf loads at unit (tile * 8 + 2t + r % 2) without u0", "34"),
    "epi_no_u0": ("the epilogue's u (y's u < H, the h_t position) without u0", "4"),
    "out_no_u0": ("the outputs' u without u0", "34"),
    "buffer_fixed": ("h_s and h_next both buffer 0 (the index not alternating)", "347"),
    "own_write_skipped": ("a cluster rank's epilogue does not write its own h_t (only the all-gather would)", "4"),
    "gather_q_from_0": ("the all-gather's q = i / rank_chunks (into itself, never rank + ctas - 1)", "49"),
    "gather_no_u0": ("the all-gather's offset without u0 (rank 0's columns sent)", "49"),
    "gather_before_sync": ("the __syncthreads between the epilogue's h_t and the all-gather dropped", "7"),
    "no_wait": ("the cluster wait before the products (s > 0) dropped", "7"),
    "no_init_barrier": ("the cluster arrive / wait after the zero fill and h_0 dropped", "7"),
    "acc1_not_added": ("one tile a warp: acc[0] += acc[1] dropped", "348"),
    "publish_last": ("the all-gather at the last step too (nothing reads it)", "4"),
    "no_first_syncthreads": ("the __syncthreads between the products and the epilogue dropped", "7"),
}
PLANE_MUTANTS = {"swizzle_load_only", "byte_perm_1064", "lo_base_row", "fill_unswizzled"}  # fp32's planes only
CLUSTER_MUTANTS = {"fill_no_u0", "z_no_u0", "epi_no_u0", "out_no_u0", "buffer_fixed", "own_write_skipped",
                   "gather_q_from_0", "gather_no_u0", "gather_before_sync", "no_wait", "publish_last",
                   "no_init_barrier"}


def mutant_applies(mname, c):
    """The cases a mutant can show on (it changes nothing elsewhere)."""
    live_any = max(c.lives) > 0
    if mname in PLANE_MUTANTS:
        return c.fmt == "tf32" and live_any
    if mname in CLUSTER_MUTANTS:
        return c.ctas > 1 and live_any
    if mname == "acc1_not_added":
        return on_chip_hpad(c.H) // c.ctas == 64 and live_any  # one tile a warp
    if mname == "no_first_syncthreads":
        return c.ctas == 1
    if mname == "stage_identity":
        return c.with_state0 and c.H > 1
    return live_any


def smem_checks():
    """(10): the sizes for every H 1..1024 and every ctas the kernel accepts; the host's choice against
    them; returns (problems, lines to print)."""
    problems, lines = [], []
    for elem in (4, 2):
        for H in range(1, 1025):
            for ctas in range(1, MAX_CTAS + 1):
                if not kernel_accepts(1, H, ctas):  # (sm_90 accepts what sm_80 does, and clusters)
                    continue
                g = Geometry(elem, H, ctas)
                w = (g.rows * g.hpad // 2 * 4 + g.rows * g.hpad // 2 * 2) if elem == 4 else g.rows * g.ldh * 2
                regions = w + g.buffers * 16 * g.ldh * elem + 16 * g.ldp * 4
                slab = [np.array_equal(np.sort(mma_k_position(np.arange(r * g.rows, (r + 1) * g.rows), elem)),
                                       np.arange(r * g.rows, (r + 1) * g.rows)) for r in range(ctas)]
                if not all(slab):
                    problems.append(f"elem {elem} H {H} ctas {ctas}: mma_k_position does not keep rank "
                                    f"{slab.index(False)}'s "
                                    f"units in their own positions [u0, u0 + rows) (the all-gather copies that run)")
                if g.smem != regions or g.ldh_words % 32 != 8 or g.ldp % 32 != 8 or g.half_steps * 2 != g.k_steps or \
                        g.n_tiles > 8 * TILES or g.rows % 64 or (g.hpad // 2) % 32:
                    problems.append(f"elem {elem} H {H} ctas {ctas}: smem {g.smem} vs regions {regions}, ldh_words "
                                    f"{g.ldh_words}, ldp {g.ldp}, k_steps {g.k_steps}, n tiles {g.n_tiles}")
        # the host: every H (past 1024 too), sm_80 / sm_90, RNNKERN_RNN_CLUSTER unset or 1..17, B 16 / 17
        for H in range(1, 1100):
            for major in (8, 9):
                for asked in range(0, MAX_CTAS + 2):
                    for B in (16, 17):
                        use, ctas, smem, why = choose_on_chip(elem, B, H, major, asked)
                        ok = H <= 1024 and kernel_accepts(B, H, ctas, major) and \
                            (asked > 0 or ctas == (on_chip_hpad(H) // 64 if major >= 9 else 1))
                        if use != (ok and on_chip_smem(on_chip_hpad(H), ctas, elem) <= OPTIN) or \
                                (use and smem != Geometry(elem, H, ctas).smem):
                            problems.append(f"host elem {elem} H {H} sm_{major}0 asked {asked} B {B}: use {use} "
                                            f"(ctas {ctas}, smem {smem}, {why!r})")
    facts = {("tf32 H1024 fits at no ctas", not any(choose_on_chip(4, 1, 1024, 9, a)[0] for a in range(17))),
             ("bf16 H1024 fits at 16 (the default)", choose_on_chip(2, 1, 1024, 9, 0)[:2] == (True, 16)),
             ("tf32 H640 fits at 10 (the default)", choose_on_chip(4, 1, 640, 9, 0)[:2] == (True, 10)),
             ("tf32 H256 fits at one CTA on sm_80", choose_on_chip(4, 1, 256, 8, 0)[:2] == (True, 1)),
             ("sm_80 refuses H257", not choose_on_chip(2, 1, 257, 8, 0)[0])}
    for what, ok in sorted(facts):
        if not ok:
            problems.append(f"expected: {what}")
    for elem, what in ((4, "tf32"), (2, "bf16 / f16")):
        most = max(H for H in range(1, 1025) if choose_on_chip(elem, 1, H, 9, 0)[0])
        gm = Geometry(elem, most, choose_on_chip(elem, 1, most, 9, 0)[1])
        lines.append(f"   {what}: the default (hpad / 64 CTAs) fits up to H{most} ({gm.ctas} CTAs: on_chip_smem "
                     f"{gm.smem} "
                     f"= W {gm.w_bytes} + {gm.buffers} x h_s {gm.buf_bytes} + part_s {gm.end - gm.part_base}, optin "
                     f"{OPTIN}); launchable ctas at H640 {launchable(elem, 640)}, H1024 {launchable(elem, 1024)}")
    return problems, lines, facts


def main():
    title = ("rnn_on_chip_kernel: all ranks of the cluster (1-16 CTAs) over 3-4 steps (W fill by rows, h_0 staging, "
             "both k-halves' mma.sync fragments, part_s, the epilogue, the all-gather into every rank's next h_s, the "
             "cluster barrier's halves) replayed on PTX fragments")
    t0, failures, fail = _mma.begin(title, ANCHORS, check_anchors, SOURCE_EDITS, NEUTRAL_EDIT, prefix="(12)")
    # __byte_perm: the selectors' nibbles pick bytes (bit 3, prmt's sign-replicate mode, clear)
    if any((s >> (4 * i)) & 8 for s in (SEL_B0, SEL_B1) for i in range(4)) or \
            byte_perm(0x44332211, 0x6655, 0x1046) != 0x22115500 or byte_perm(0x44332211, 0x6655, 0x3256) != 0x44336600:
        fail("__byte_perm model / selectors: not (hi16 << 16) | (lo8 << 8) of the pair's two values")
    else:
        print("ok: __byte_perm(top, low, 0x1046 / 0x3256) = (hi16 << 16) | (lo8 << 8) of the pair's first / second "
              "value (byte model checked on a worked word)")

    # (10) sizes and the host's choice
    problems, lines, facts = smem_checks()
    if problems:
        fail(f"(10) shared memory / choose_on_chip: {problems[0]} ({len(problems)} in all)")
    else:
        print(f"ok (10) on_chip_smem == W + buffers x h_s + part_s as the pointers lay them out for every H 1..1024 "
              f"and ctas the kernel accepts (ldh_words, ldp = 8 mod 32; mma_k_position keeps each rank's units in "
              f"positions "
              f"[u0, u0 + rows), the run the all-gather copies); choose_on_chip (sm_80 / sm_90, "
              f"RNNKERN_RNN_CLUSTER unset / 1..17, B 16 / 17, H 1..1099) fits exactly where that is <= {OPTIN} and the "
              f"kernel's guard holds: {'; '.join(w for w, _ in sorted(facts))}")
    for ln in lines:
        print(ln)

    # the pair unit by the global row: u0 is a multiple of 64, so (u0 + n) % 8 == n % 8 always
    same = all(np.array_equal(on_chip_pair_unit(r * (on_chip_hpad(H) // c) + np.arange(on_chip_hpad(H) // c)[:, None],
                                                np.arange(on_chip_hpad(H) // 2)[None]),
                              on_chip_pair_unit(np.arange(on_chip_hpad(H) // c)[:, None],
                                                np.arange(on_chip_hpad(H) // 2)[None]))
               for H in range(64, 1025, 64) for c in range(1, 17) if kernel_accepts(1, H, c) for r in range(c))
    if same:
        print("   (11) mutant pair_unit_global (on_chip_pair_unit(u0 + n, p) for the local n): equivalent, dropped: "
              "u0 = "
              "rank * rows is a multiple of 64, so (u0 + n) % 8 == n % 8 and every slot (and bank) is the same")
    else:
        fail("(11) on_chip_pair_unit by the global row differs from the local row: a mutant to add")

    labels = {
        "1": "each rank's W fill writes each plane byte / (n < rows, position < hpad) element once; every B register "
             "== PTX's B layout of W[u0 + n] (fp32: bits 31..8 via __byte_perm); each (n tile, k-step) loaded once",
        "2": "the h_s zero fill once; h_0 in buffer 0 of every rank == state0 at mma_k_position (zero elsewhere, and "
             "without state0); buffer 1 zero",
        "3": "A registers == PTX's A layout of h_(t-1); k-steps 0..half_steps-1 in order; acc + part_s == h @ "
             "W[u0..].T (fp64, exact; 0 at live 0); part_s stored / read once per (b < 16, n < rows); z / hf loaded by "
             "the thread "
             "that writes the output",
        "4": "each step: every (b < B, u < H) output written to seq once, by the rank holding u, == the reference "
             "recurrence; after step s < T-1 every rank's buffer (s+1) % buffers == a fresh staging of h_t (each "
             "element "
             "once); the last step writes only each rank's own columns (read back for the outputs), no all-gather",
        "5": "no bank conflicts: hi-plane 32-bit and lo-plane 16-bit loads (warp), 16-bit W and A 8-byte loads "
             "(half-warp), the all-gather's 16-byte loads (quarter-warp)",
        "6": "every access aligned and inside its region / local row / the step's buffer, no unwritten byte read, no "
             "store into W after the fill, on_chip_smem == the regions' end",
        "7": "no h_s slab / part_s written and read (or written twice) without a barrier ordering them (__syncthreads, "
             "or arrive.release -> wait.acquire across ranks): no rank stores during step s into a buffer any rank "
             "multiplies at step s; one CTA writes its buffer only after the first __syncthreads; arrivals and waits "
             "pair up",
        "8": "one tile a warp: each k-step multiplied once into acc[k-step % 2]; each half's acc[0] after the add == h "
             "@ W.T over its half of k",
        "9": "the all-gather: 16-byte pieces aligned, inside row b < B's positions [u0, u0 + rows) of the next buffer; "
             "each (b, piece) into every other rank once, from rank + 1",
    }
    all_cases = cases()
    stats, per_check = {}, {}
    t1 = __import__("time").time()
    for c in all_cases:
        tally(run(c, stats=stats), per_check, fail)
    check_lines(labels, per_check, len(all_cases), unit="runs")
    by_fmt = collections.Counter(c.fmt for c in all_cases)
    combos = sorted({(c.H, c.ctas) for c in all_cases})
    print(f"   {len(all_cases)} runs ({sum(c.ctas * c.T for c in all_cases)} CTA steps, "
          f"{__import__('time').time() - t1:.1f} s): tf32 {by_fmt['tf32']} "
          f"({sum(c.fmt == 'tf32' and c.low_zero == 8 for c in all_cases)} with bits 12..8 random), bf16 "
          f"{by_fmt['bf16']}, f16 {by_fmt['f16']}; (H, ctas) {', '.join(f'{h}/{c}' for h, c in combos)}; B {B_LIST}; "
          f"a step with live < B in {sum(min(c.lives) < c.B for c in all_cases)} runs (0 in "
          f"{sum(min(c.lives) == 0 for c in all_cases)}), backward {sum(c.backward for c in all_cases)}, no state0 "
          f"{sum(not c.with_state0 for c in all_cases)}; one tile a warp in "
          f"{sum(on_chip_hpad(c.H) // c.ctas == 64 for c in all_cases)}")
    print(f"   not launchable, so not replayed: tf32 H1000 / H1024 (W_hh and h exceed shared memory at every ctas); "
          f"loads: {stats.get('A', 0)} A 8-byte, {stats.get('W8', 0)} W 8-byte, {stats.get('HI', 0)} hi-plane 32-bit + "
          f"{stats.get('LO', 0)} lo-plane 16-bit (warp instructions); {stats.get('remote', 0)} all-gather 16-byte "
          f"pieces "
          f"(remote st.shared::cluster.v4)")
    print("   (report) float2 stores to part_s, worst half-warp bank conflict: "
          + ", ".join(f"{w}-way x {n}" for w, n in sorted(stats.get("store_ways", {}).items()))
          + "; the epilogue's 32-bit part_s reads, worst warp conflict: "
          + ", ".join(f"{w}-way x {n}" for w, n in sorted(stats.get("read_ways", {}).items())))

    # (11) mutants: the cases they can show on, smallest first
    order = sorted(all_cases, key=lambda c: (on_chip_hpad(c.H) ** 2 * c.T, c.seed))

    def mutant_cases(mname):
        for c in order:
            if mutant_applies(mname, c):
                yield run(c, mut=frozenset([mname]))

    _mma.mutant_report(MUTANTS, mutant_cases, fail, width=150, prefix="(11)", unit="run(s)", ignore=REPORT_ONLY)

    # ---- rnn_on_chip_wreg_kernel (RNNKERN_RNN_ON_CHIP_W=registers)
    print("rnn_on_chip_wreg_kernel (W_hh in registers as the m16 A operand, h the n8 B operand): all hpad / 64 ranks "
          "over 3-4 steps (the registers, h_0 staging, 4 m tiles x 4 k quarters of mma.sync, part_s, the first "
          "quarter's epilogue, the all-gather, the cluster barrier's halves) replayed on PTX fragments")
    problems, wfacts, wlines = wreg_smem_checks()
    if problems:
        fail(f"(Re) on_chip_wreg_smem / choose_on_chip's registers branch: {problems[0]} ({len(problems)} in all)")
    else:
        print(f"ok (Re) on_chip_wreg_smem == h_bufs x buffers + part_s (3 x 64 x kWregLdp floats, the highest float2 "
              f"store inside) as the pointers lay them out for every H the kernel takes; choose_on_chip's registers "
              f"branch (sm_80 / sm_90, RNNKERN_RNN_CLUSTER unset / 1..17, B 1 / 8 / 9 / 16 / 17, H 1..1099) takes "
              f"exactly where the kernel's guard holds and that fits {OPTIN}: "
              f"{'; '.join(w for w, _ in sorted(wfacts))}")
    for ln in wlines:
        print(ln)
    wlabels = {
        "Ra": "each W register == PTX's A layout of W[u0 + m_tile * 16 + row, the warp's quarter] bit for bit (zeros "
              "past H and past k_steps); each register half's (row, column) is PTX's, and the 16 warps hold each "
              "(row < 64, k < hpad) once",
        "Rb": "the prefetching k-loop multiplies k-steps 0..k_steps-1 in order with their own loads; each B "
              "register pair == PTX's B layout of h_(t-1) (batch rows 0..7, the warp's k-step); 8-byte loads "
              "aligned, inside the step's buffer (rows' first hpad positions), of written bytes, no half-warp bank "
              "conflict",
        "Rc": "each warp's acc[0] (the chains summed) == h @ W.T over its quarter; acc + part_s == h @ W[u0..].T (0 "
              "at live 0); every (b < B, u < H) output written once a step by the owning first-quarter lane (the one "
              "that loaded its z / hf), == the reference recurrence; h_0 staged as (2); every rank's next buffer == a "
              "fresh staging of h_t after each non-last step (the all-gather as (9))",
        "Rd": "part_s: each (quarter 1..3, unit < 64, batch < 8) stored once by a float2 (aligned, inside "
              "3 x 64 x kWregLdp) and read once by the epilogue (float2 reads aligned), nothing else",
        "Re": "the kernel's guard takes the case at hpad / 64 CTAs; on_chip_wreg_smem == the regions' end",
        "Rf": "no h_s slab / part_s written and read (or written twice) without a barrier ordering them (as (7)); "
              "arrivals and waits pair up",
    }
    wcases = wreg_cases()
    wstats, wper = {}, {}
    t2 = __import__("time").time()
    for c in wcases:
        tally(run_wreg(c, stats=wstats), wper, fail)
    check_lines(wlabels, wper, len(wcases), unit="runs")
    wfmt = collections.Counter(c.fmt for c in wcases)
    print(f"   {len(wcases)} runs ({sum(c.ctas * c.T for c in wcases)} CTA steps, {__import__('time').time() - t2:.1f} "
          f"s): tf32 {wfmt['tf32']}, bf16 {wfmt['bf16']}, f16 {wfmt['f16']}; H "
          f"{sorted({c.H for c in wcases})}; B {sorted({c.B for c in wcases})}; a step with live < B in "
          f"{sum(min(c.lives) < c.B for c in wcases)} runs (0 "
          f"in {sum(min(c.lives) == 0 for c in wcases)}), backward {sum(c.backward for c in wcases)}, no state0 "
          f"{sum(not c.with_state0 for c in wcases)}; not taken, so not replayed: tf32 H640 / H1000 / H1024 "
          f"(over 16 k-steps a warp); {wstats.get('WB', 0)} B 8-byte loads (warp "
          f"instructions), {wstats.get('remote', 0)} all-gather pieces")
    print("   (report) float2 stores to part_s, worst half-warp bank conflict: "
          + ", ".join(f"{w}-way x {n}" for w, n in sorted(wstats.get("wreg_store_ways", {}).items()))
          + (f"; the epilogue's {'float2' if WREG_PART_READ == 8 else '32-bit'} part_s reads, worst "
             f"{'half-warp' if WREG_PART_READ == 8 else 'warp'} conflict: ")
          + ", ".join(f"{w}-way x {n}" for w, n in sorted(wstats.get("wreg_read_ways", {}).items())))
    worder = sorted(wcases, key=lambda c: (on_chip_hpad(c.H) ** 2 * c.T, c.seed))

    def wreg_mutant_cases(mname):
        for c in worder:
            if wreg_mutant_applies(mname, c):
                yield run_wreg(c, mut=frozenset([mname]))

    _mma.mutant_report(WREG_MUTANTS, wreg_mutant_cases, fail, what="of the registers replay", width=150,
                       prefix="(Rg)", unit="run(s)")
    finish(failures, t0)


if __name__ == "__main__":
    main()
