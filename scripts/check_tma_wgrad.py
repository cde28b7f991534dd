"""Replays, in numpy, the data movement and the MMA of conv.cu's wgrad_tma_kernel (the grad_weight
of a convolution on TMA loads + wgmma, sm_90a; "grad_weight on TMA loads + wgmma") in both its
forms, T = bf16 / fp16 (16-bit channels_last, MN-major operands) and T = float (the TF32 NCHW form,
kNchw: K-major operands, unit column stride), and of its host side launch_wgrad_tma and
wgrad_reduce_kernel, and checks that the kernel's plan gives exactly the convolution's grad_weight

    gw[g Kg + k, c, r, s] = sum over output pixels p = (n, ho, wo) of
                            gy[n, ho, wo, g Kg + k] x[n, ho sh - pt + r dh, wo sw - pl + s dw, g Cg + c]

(zero where the read falls outside x). Every hardware step is modelled from its documentation, not
from the kernel (the doc text is cited by section; PTX ISA 8.x numbering, the wgmma sections are
9.7.16.* in later versions):

- the tiled load of gy (PTX ISA 5.5.3 Tiled Mode; 9.7.9.27.1.2 cp.async.bulk.tensor .2d .tile;
  CUDA driver API cuTensorMapEncodeTiled): gy seen as the rank-2 tensor {K, P} (K channels
  innermost, P = N OH OW pixels, globalStrides {K E}), box {64, 64}: the box at coordinates
  (c0, m) lands as 64 rows (pixels m ... m + 63) of 64 elements (channels c0 ... c0 + 63), i.e.
  boxDim[0] * E = 128 bytes a row; elements outside [0, K) x [0, P) are zero-filled
  (CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE fills zeros).
- the im2col load of x (5.5.4 im2col mode: 5.5.4.1 Bounding Box, 5.5.4.2 Traversal Stride,
  5.5.4.3 Out of Boundary Access; cuTensorMapEncodeIm2col), as check_tma_im2col.tma_im2col
  models it: rank 4 {C, W, H, N}, the bounding box from the corners (innermost first: W, then H),
  pixelsPerColumn 64 base positions walked W fastest, then H, then the next image from the
  instruction's {w, h, n}, each read at base + im2col offsets {off_w, off_h}, traversal strides
  elementStrides {1, sw, sh, 1} stepping the base positions, channelsPerPixel 64 elements from c
  a 128-byte row; pixels outside the tensor, images >= N and channels >= C zero-filled.
- the 128-byte swizzle (5.5.7 Swizzling Modes, 16-byte atomicity): the 16-byte chunk c of the
  128-byte line r of a pattern starting at a 1024-byte boundary is stored at chunk c ^ (r % 8)
  (shared address bits [7:10) XOR-ed into bits [4:7)).
- wgmma's shared-memory operands (9.7.15.5.1.2 Shared Memory Matrix Layout: imm-trans-a = 1 ->
  A is M-major, imm-trans-b = 1 -> B is N-major, 0 -> K-major; 9.7.15.5.1.2.1.1 Leading Dimension
  Byte Offset: MN-major swizzled "offset from the first (swizzle-byte-size / 16) rows to the next
  (swizzle-byte-size / 16) rows" (in 128-bit units: the next 64 16-bit M / N elements); .2 Stride
  Dimension Byte Offset: MN-major swizzled "offset from the first 8 columns to the next 8 columns"
  (the next 8 k); 9.7.15.5.1.2.1.3 Canonical Layouts, T = 128 / bits-per-element = 8:
      MN-major 128B: Swizzle<3,4,3> o ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO))
      K-major 128B:  Swizzle<3,4,3> o ((8,m),(T,2k)):((8T,SBO),(1,T))   (LBO not used)
  strides in elements, LBO / SBO in bytes (the doc's worked MN-major examples: "LBO 256 *
  sizeof(bf16)" is the layout stride 256), the swizzle on the byte address as the TMA's;
  9.7.15.5.1.2.2 Matrix Descriptor Format: start / LBO / SBO as (x & 0x3FFFF) >> 4 in bits 0-13 /
  16-29 / 32-45, base offset bits 49-51 (0 when the pattern starts on a 1024-byte boundary),
  mode bits 62-63, 1 = 128-byte swizzle). The script decodes the 64-bit value the kernel's formula
  (tensor_core.cuh's wgmma_desc_mn_sw128) produces and reads the operand through it. (CUTLASS's
  make_gmma_desc<Major::MN> agrees: swizzled MN-major layouts put the MN repeat stride in LBO and
  the k stride in SBO, the interleaved one the other way round.)
- wgmma.mma_async.m64nNk16 (9.7.15.5): D (64 x N) += A (64 x 16) B (16 x N); the accumulator
  fragment (9.7.15.5.1.1.1 Matrix Fragments for .m64nNk16, Figure 149, accumulator D, .f32: N / 2
  registers): register i of lane l of warp w of the warpgroup holds
  D[16 w + l / 4 + 8 ((i / 2) % 2), 8 (i / 4) + 2 (l % 4) + i % 2].
- the mbarrier (PTX ISA, mbarrier: phase completion when the pending arrivals and the tx-count
  are both zero; expect-tx adds to the tx-count, each copy's complete-tx subtracts its whole box's
  bytes, zero-filled ones included; tx-count range +-(2^20 - 1); test_wait / try_wait .parity:
  true once the phase of that parity has completed, i.e. the current phase's parity differs).
- st.global.v2.f32 (PTX ISA 6.4.1 Addresses as Operands: "The address must be naturally aligned to
  a multiple of the access size", 8 bytes for a float2).
- shared memory per block 227 KB (CUDA C++ Programming Guide, compute capability 9.0), grid.y and
  grid.z <= 65535, grid.x <= 2^31 - 1.

The TF32 NCHW form (wgrad_tma_kernel<float, TN>; a k-step is 32 consecutive output columns, 128
bytes, of one output row: k = (n OH + ho) spr + j, spr = ceil(OW / 32) = OW / 32 (launch_wgrad_tma
takes only output widths of whole 32-column blocks), wo0 = 32 j), modelled from:
- the tiled load of a rank-4 map (PTX ISA 5.5.3 Tiled Mode; 9.7.9.27.1.2 cp.async.bulk.tensor .4d
  .tile; cuTensorMapEncodeTiled): globalDim {d0, d1, d2, d3} innermost first, globalStrides of d1-d3
  in bytes (multiples of 16, below 2^40), boxDim {b0, b1, b2, b3} (each <= 256, b0 E a multiple of 16
  and, with SWIZZLE_128B, <= 128 bytes), signed .s32 box coordinates; the box lands in shared memory
  innermost first (b0 elements a row, then b1, b2, b3), every element whose coordinate is outside
  [0, globalDim) in some dimension (negative or past the end) zero-filled (OOB_FILL_NONE), counted
  by complete-tx all the same. gy is {OW, OH, K, N} (strides OW 4, OH OW 4, K OH OW 4), box
  {32, 1, 128, 1}: 128 rows (output channels) of 32 pixels; x is {W, H, C, N}, box {32, 1, TN, 1}.
- the 128-byte swizzle as above (5.5.7) on those 128-byte rows.
- wgmma's K-major SWIZZLE_128B operand (9.7.15.5.1.2, canonical K-major 128B layout
  Swizzle<3,4,3> o ((8,m),(T,2k)):((8T,SBO),(1,T)), T = 128 / 32 = 4 tf32 elements a 16-byte chunk,
  LBO unused ("assumed 1"); check_tma_im2col.wgmma_k_major_bytes, the forward's model): row i at
  (i % 8) 128 + (i / 8) SBO, k at (k % 4) 4 + (k / 4) 16 bytes from the descriptor's start, the
  swizzle on the absolute address (so a start advanced 32 bytes inside a 128-byte row reads the
  next 8 elements of every row). tensor_core.cuh's wgmma_desc_sw128 (SBO 1024, LBO field 1, mode 1)
  is decoded field by field.
- wgmma.mma_async.m64nNk8.f32.tf32.tf32 (9.7.15.5): D (64 x N) += A (64 x 8) B (8 x N), both K-major
  (tf32 has no transposed form), so D[m][n] = sum_k A(m, k) B(n, k) in the rows TMA wrote; the
  operands are 32-bit containers of which the top 19 bits (tf32) are used; the accumulator fragment
  of .m64nNk8 (9.7.15.5.1.1) is the k16 one above.

What is checked (the 16-bit form: 1-7; the TF32 NCHW form: 8-15):
The 16-bit form loads only the boxes whose 64 channels start inside the group: gy's h < a_boxes =
min(2, ceil((Kg - m0) / 64)) and x's j < b_boxes = min(TN / 64, ceil((Cg - n0) / 64)), per block
tile (m0, n0), and arms each stage's full barrier with expect_tx = (a_boxes + b_boxes) 8192. The
shared memory of a box not loaded keeps stale bytes (modelled as NaN: 0xFF bytes, 0xFFFF being NaN
in bf16 and in fp16); wgmma still reads the whole stage.
1. One stage of the ring, byte by byte (every stage of the ring, a uint8 buffer the size of the
   dynamic allocation, not 1024-aligned at its start, over stale NaN bytes), for each of the
   (a_boxes, b_boxes) the blocks form (TN 128: 4, TN 256: 8, from block tiles of Kg 168 and Cg
   TN + 64 b - 24): the boxes the block loads written through the swizzle, A (per consumer
   warpgroup cw and k16 step ks) and B read back through the decoded descriptors, as element
   indices into the stage's layout (the "composite map"; -1 where no issued copy wrote: stale, NaN
   in the replay). The map must be the same for every stage, the documented slice of every loaded
   box, -1 exactly on the boxes not loaded, and agree with a random tile read back byte by byte
   (the stale elements reading the NaN). A stale element of A row m / B column n feeds only
   accumulator row 64 cw + m / column n (D = A B); these must be rows m0 + 64 cw + m >= Kg /
   columns n0 + n >= Cg, which the epilogue never stores (stale_problem, on every block tile of
   every replayed case too), and expect_tx must equal the issued copies' bytes.
2. End to end, byte by byte, on small cases (a_boxes 1 and 2, b_boxes 1-4): every live k-step of
   every block writes its stage with the boxes the block loads (bf16 / fp16 bit patterns, stage
   i % kStages, each CTA's shared memory starting as stale NaN, a stage keeping its earlier bytes),
   wgmma's operands are read as bytes through the descriptors, the 64 x TN x 16 products of each
   instruction go to the thread registers by the fragment layout, the epilogue's float2 stores to
   the workspace and wgrad_reduce_kernel's ordered split sum follow; the result must equal a
   float64 grad_weight computed from the definition (small integer data: exact; any stale NaN
   reaching a stored output would show) and the composite replay's.
3. The composite replay (the maps of 1, vectorised over k-steps, NaN for the boxes a block does not
   load) on 305 convolutions (55 fixed, 250 random) (N 1-3, H / W 1-40, C / K multiples of 8 up
   to 272, groups 1-3, kernels 1-7, dilation 1-18, symmetric / 'same' / asymmetric padding, strides
   1-3, TN 128 and 256, sms 132 / 114 / 8 / 1 so that splits vary), including the shapes of
   tests/ops/test_conv.py's test_cuda_tma_wgrad: every workspace element written exactly once,
   each float2 store 8-byte aligned and inside its row, the reduced grad_weight equal to float64
   exactly (so no stale NaN reaches it).
4. tma_wgrad_step_dead: over random geometries, brute force, a skipped k-step never holds a pixel
   whose shifted read is real input (and valid_range_dev is exactly that set of rows / columns).
5. expect_tx == the bytes the block's issued copies deliver, on every block tile of every plan
   (plan_problems); the ring's mbarrier protocol (full / empty parities) on random interleavings of
   the producer, the copies a block issues (2-6, each completing its whole box) against its
   expect_tx and the 8 consumer warps, for every (a_boxes, b_boxes) of Kg 136 / Cg 264 at TN 128
   and 256: no stage overwritten while a wgmma reads it, each k-step's wgmma reads that k-step's
   bytes, no deadlock.
6. The host side: launch_wgrad_tma's refusals against the documented limits of the two tensor maps
   and the kernel's own requirements (grid, int32 coordinates, tx-count, shared memory, float2
   alignment), on random shapes around the limits; anything accepted that breaks one is a failure.
   (splits clamped to 65535 / taps as the host does: grid.y.)
7. Deliberate mistakes (the `mut` argument of kernel_plan): each must be caught; among them
   expect_tx_stage_bytes (the former constant kStageBytes with boxes skipped: the consumers never
   wake), expect_tx_tn128 (b_boxes capped at TN 128's 2 in the tx count: a TN 256 stage read while
   written), x_loads_all_tx_reduced (every x box loaded, expect_tx still the reduced count),
   a_boxes_floor ((Kg - m0) / 64 rounded down: a needed gy box left stale) and x_loads_minus1
   (b_boxes capped at TN / 64 - 1: a needed x box left stale).

The TF32 NCHW form (kernel_plan / host_refusal with form='nchw'; data integers in [-8, 8], exact in
tf32 and in fp32 sums):
8. The stage byte by byte (every stage of the ring, TN 128 and 256): gy's box at 0 and x's at 16384
   through the swizzle, A (cw, ks) and B (ks) read back through the decoded K-major descriptors:
   A[m][k] = gy box row 64 cw + m, element 8 ks + k; B[n][k] = x box row n, element 8 ks + k.
9. End to end through shared-memory bytes on 5 small cases (fp32 bit patterns, tf32's top 19 bits,
   m64nTNk8 products to the registers by the fragment layout, epilogue, ordered split sum) and the
   composite replay: equal to float64.
10. The composite replay on 151 convolutions (31 fixed incl. test_cuda_tma_wgrad's shapes the form
   takes, 120 random: N 1-3, H 1-40, W 4-40 multiples of 4 (OW made a multiple of 32 through the
   right padding on most draws), Kg >= 8 any, Cg >= 8 even, groups 1-3, kernels 1-7, dilation 1-18,
   row stride 1-3, column stride 1, symmetric / 'same' / asymmetric padding, TN 128 / 256, sms 132 /
   114 / 8 / 1), every one a shape the host takes (checked; the fixed ones cover groups, Kg / Cg not
   multiples of 8, row strides, asymmetric padding, dilation up to 18, TN 256, up to 4 column blocks
   a row, splits up to 30, taps whose rows / columns read only padding): every workspace element
   written once, grad_weight equal to float64 exactly, and no live k-step without a valid pixel.
   REFUSED_NCHW: shapes the host must refuse, with the reason (a ragged OW, W % 4, odd Cg, sw 2).
11. The dead predicate (the kernel's kNchw dead lambda: the empty-range test, then the row / block
   test) against brute force on 600 random geometries the form takes (unit column stride, OW a
   multiple of 32): exact, it skips a k-step if and only if it holds no pixel reading real input.
   The kernel's rectangle is valid_range_dev in its 64-bit arithmetic (valid_range_dev_i32).
12. The ring protocol with the form's two unequal copies a stage.
13. Deliberate mistakes of the new form (MUTANTS_NCHW, kernel and host): each must be caught; a host
   mutant by a shape it takes that the real host refuses and a requirement forbids.
14. The host: host_refusal(form='nchw') mirrors launch_wgrad_tma's kNchw branch (Cg even, W % 4 and
   OW % 32 == 0, sw == 1, coordinate_fits for rows (OH, sh, pt, KH, dh) and columns (OW, 1, pl, KW,
   dw): (out - 1) stride + (k - 1) dil + 32 <= 2^31 - 1 and pad <= (2^31 - 1) / 2, P < 2^31,
   G <= 65535; launch_wgrad's Kg / Cg >= 8, taps <= 65535, outputs < 2^31); on 3000 random shapes
   (one in 8 a small tensor with strides / dilations / paddings near 2^31: huge_case_nchw)
   everything it takes must meet documented_requirements_nchw (the tiled maps' limits, .s32
   coordinates of every box and of its elements, the kernel's int arithmetic that forms them
   (valid_range_dev's is 64-bit), grid, shared memory, tx-count, float2 alignment, unit column stride,
   whole column blocks). extreme_shapes_nchw: a >= 1 TiB input whose last stride reaches 2^40 (a
   note: the encoder refuses it at run time, the host falls back), shapes past int32 the host must
   refuse, shapes at coordinate_fits' limits it takes (replayed), and shapes it takes whose
   valid_range_dev intermediates pass int32 (replayed: right since conv.cu computes them in 64
   bits; the replay found the int32 form's overflow).
15. NaN written into x wherever the convolution never reads it (row / column gaps between taps and
   strides, trailing rows) must not reach grad_weight in any taken case with such elements: every
   box column is an output column's read or zero fill. The ragged REFUSED_NCHW[0] (OW 4), replayed
   regardless, must leak it (its block's columns past OW read x against gy's zero fill, 0 x NaN):
   why the host refuses ragged widths.

    python scripts/check_tma_wgrad.py          # exit 0: everything agrees; 1: a mismatch (printed)

kernel_plan() (with nchw_parts()) and host_refusal() are the replayed kernel / host formulas (conv.cu's
wgrad_tma_kernel, tma_wgrad_row_step, launch_wgrad_tma, launch_wgrad, wgrad_reduce_kernel): keep them in
step with conv.cu; everything under "the documented hardware" (and check_tma_im2col's swz128,
tma_box_bytes, wgmma_k_major_bytes, tma_im2col) is the documentation's and should not follow the kernel.

This checks arithmetic against the documented semantics, not the hardware: the CUDA test
(tests/ops/test_conv.py::test_cuda_tma_wgrad on an H100 / H200) is what verifies the kernel."""
import os
import sys
import time

# small GEMMs: one BLAS thread (threads busy-waiting on a shared machine cost more than they give)
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # (the repo: tests.ops.test_conv)
from check_tma_im2col import (SMEM_MAX, TX_MAX, im2col_corners, swz128, tma_box_bytes, tma_im2col,  # noqa: E402
                              wgmma_k_major_bytes)

E = 2                     # bytes an element (bf16 / fp16)
T16 = 16 // E             # T of the canonical layouts: elements a 16-byte chunk
BM = 128                  # output channels (k) of a block tile: two consumer warpgroups of 64
PIX = 64                  # kTmaWgradPixels: pixels a k-step
BOX = 64                  # a box: 64 rows (pixels) x 64 elements (channels, 128 bytes)
BOX_BYTES = PIX * 128     # kBoxBytes
ELEMS = BOX * BOX
KSTEPS = PIX // 16        # k16 instructions a k-step
# the TF32 NCHW form (wgrad_tma_kernel<float, TN>)
E4 = 4                    # bytes an fp32 element
RPIX = 32                 # kTmaWgradRowPixels: pixels (output columns) a k-step, 128 bytes
K8 = 8                    # k of a tf32 wgmma instruction (m64nNk8)
KSTEPS8 = RPIX // K8      # k8 instructions a k-step
TF32_MASK = np.uint32(0xFFFFE000)   # tf32: the top 19 bits of the fp32 container (sign, 8 exponent, 10 mantissa)

# ---------------------------------------------------------------------------------------------
# the kernel and its host side (conv.cu), with hooks for deliberate mistakes


def wgmma_desc_mn_sw128(addr, lbo, sbo=1024):
    """tensor_core.cuh's formula (sbo is the constant 1024 there; a mutation may change it)."""
    return (((addr >> 4) & 0x3FFF) | (((lbo >> 4) & 0x3FFF) << 16) | (((sbo >> 4) & 0x3FFF) << 32) | (1 << 62))


def valid_range_dev(t, s, d, p, n_in, n_out):
    """conv.cu's valid_range_dev: output positions [lo, hi) whose read o s + t d - p is in [0, n_in)."""
    off = t * d - p
    cdiv = lambda a, b: (a + b - 1) // b if a >= 0 else -((-a) // b)   # noqa: E731 (C++ integer division)
    lo, hi = cdiv(-off, s), cdiv(n_in - off, s)
    lo = 0 if lo < 0 else min(lo, n_out)
    hi = min(hi, n_out)
    return lo, max(hi, lo)


def wrap32(v):
    """A C++ int result: two's-complement wrap to 32 bits (signed overflow is undefined behaviour in
    C++; the wrap is what the generated integer instructions do in practice)."""
    return (int(v) + 2 ** 31) % 2 ** 32 - 2 ** 31


def valid_range_dev_i32(t, s, d, p, n_in, n_out):
    """valid_range_dev as the device computes it: in 64-bit integers (off = t d - p, cdiv(a, b) =
    a >= 0 ? (a + b - 1) / b : -((-a) / b), C++'s truncating division), exact for every int input, so
    equal to valid_range_dev. (Its int32 form overflowed at H + pt + sh - 1 >= 2^31 on shapes the
    TF32 NCHW host takes; the replay found it, and conv.cu now computes it in 64 bits.)"""
    def tdiv(a, b):
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b > 0) else -q

    def cdiv(a, b):
        return tdiv(a + b - 1, b) if a >= 0 else -tdiv(-a, b)

    off = t * d - p
    lo, hi = cdiv(-off, s), cdiv(n_in - off, s)
    lo = 0 if lo < 0 else min(lo, n_out)
    hi = min(hi, n_out)
    return lo, max(hi, lo)


def tile_n_default(case):
    """launch_wgrad_tma's TN with RNNKERN_CONV_TMA_N unset: 256 where a group has >= 256 input channels."""
    return 256 if case["C"] // case["G"] >= 256 else 128


def wgmma_desc_sw128(addr):
    """tensor_core.cuh's K-major SWIZZLE_128B descriptor (the TF32 NCHW form's A and B): start
    (addr >> 4) & 0x3FFF, LBO field 1 (unused for swizzled K-major, "assumed 1"), SBO 1024, mode 1."""
    return ((addr >> 4) & 0x3FFF) | (1 << 16) | ((1024 >> 4) << 32) | (1 << 62)


def kernel_plan(case, TN, sms, mut=None, form="cl16"):
    """The tensor maps, grid, split sizing, stage layout, the copies a block issues and its
    expect_tx (stage_tx(m0, n0); 16-bit: a_boxes / b_boxes of block_boxes), descriptors, dead-step
    predicate, epilogue and reduction indices as launch_wgrad_tma / wgrad_tma_kernel<T, TN> /
    wgrad_reduce_kernel build them. form 'cl16': T = bf16 / fp16, channels_last (64-pixel k-steps,
    MN-major operands); 'nchw': T = float, the TF32 NCHW form (kNchw: 32-column row k-steps on
    tiled 4-D boxes, K-major operands)."""
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, sh, sw, dh, dw, pt, pl = (case[k] for k in ("KH", "KW", "sh", "sw", "dh", "dw", "pt", "pl"))
    OH, OW = case["OH"], case["OW"]
    Kg, Cg, taps = K // G, C // G, KH * KW
    P, hw = N * OH * OW, OH * OW
    nchw = form == "nchw"
    spr = -(-OW // RPIX)          # (p.OW + 31) / 32: k-steps a row (OW / 32: launch_wgrad_tma takes whole blocks)
    steps = N * OH * spr if nchw else -(-P // PIX)
    tiles_m, tiles_n = -(-Kg // BM), -(-Cg // TN)
    base = tiles_m * tiles_n * taps * G
    splits = max(1, -(-2 * sms // base))
    splits = min(splits, max(1, steps // 8))
    splits = min(splits, max(1, 65535 // taps))          # (grid.y; launch_wgrad: taps <= 65535)
    # (the clamp never binds in practice: splits > 1 only where base >= taps is below 2 sms, so
    # grid.y = taps splits < 4 sms; plan_problems checks the grid)
    stages = 5 if TN == 128 else 4                       # TmaTile<TN>::kStages
    stage_bytes = (BM + TN) * 128                        # TmaTile<TN>::kStageBytes
    cs_h, cs_w = (1, 1) if mut == "corners_unstrided" else (sh, sw)
    lw, uw = im2col_corners(W, OW, pl, cs_w)
    lh, uh = im2col_corners(H, OH, pt, cs_h)
    gymap = dict(dims=(K, P), stride=K * E, box=(BOX, BOX), estride=(1, 1))
    xmap = dict(dims=(C, W, H, N), strides=(C * E, W * C * E, H * W * C * E), lower=(lw, lh), upper=(uw, uh),
                cpp=BOX, ppc=PIX, E=E, tstride=(sw, sh))
    # the maps' swizzle (CU_TENSOR_MAP_SWIZZLE_128B on both)
    gymap["swizzle"], xmap["swizzle"] = 128, (0 if mut == "x_map_no_swizzle" else 128)
    # a stage's layout: every copy a block may issue, in issue order: (operand, index, shared offset
    # in the stage, swizzle); a block issues gy's h < a_boxes and x's j < b_boxes (stage_tx)
    copies = [("gy", h, h * BOX_BYTES, gymap["swizzle"]) for h in range(2)] + \
        [("x", j, (2 + j) * BOX_BYTES, xmap["swizzle"]) for j in range(TN // 64)]

    def cdiv64(v):
        """(v + 63) / 64 in C++ int division (v = Kg - m0 or Cg - n0 >= 1 for every block)."""
        return (v + 63) // 64 if v >= 0 else -((-v - 63) // 64)

    def block_boxes(m0, n0):
        """a_boxes = min(2, (Kg - m0 + 63) / 64), b_boxes = min(TN / 64, (Cg - n0 + 63) / 64): the
        boxes whose 64 channels start inside the group."""
        a = min(2, (Kg - m0) // 64 if mut == "a_boxes_floor" else cdiv64(Kg - m0))
        b = min(TN // 64 - (1 if mut == "x_loads_minus1" else 0), cdiv64(Cg - n0))
        return a, b

    def stage_tx(m0, n0):
        """The block's copies a stage (indices into copies: tma_load_2d for h < a_boxes,
        tma_load_im2col_4d for j < b_boxes) and its expect_tx, (a_boxes + b_boxes) kBoxBytes."""
        a, b = block_boxes(m0, n0)
        nb = TN // 64 if mut == "x_loads_all_tx_reduced" else b
        issued = tuple(i for i, (kind, j, _, _) in enumerate(copies) if j < (a if kind == "gy" else nb))
        if mut == "expect_tx_tn128":           # the x count with TN 128's cap: min(2, (Cg - n0 + 63) / 64)
            tx = (a + min(2, cdiv64(Cg - n0))) * BOX_BYTES
        elif mut == "expect_tx_stage_bytes":   # the former constant kStageBytes with the boxes skipped
            tx = stage_bytes
        else:
            tx = (a + b) * BOX_BYTES
        return issued, tx

    def gy_coords(g, m0, h, m):
        """tma_load_2d(a + h kBoxBytes, &map_gy, bar, g Kg + m0 + 64 h, m)."""
        return (0 if mut == "gy_channel_no_group" else g * Kg) + m0 + 64 * h, m

    def x_coords(g, n0, j, m, r, s):
        """tma_load_im2col_4d(a + (2 + j) kBoxBytes, &map_x, bar, g Cg + n0 + 64 j, wo sw - pl, ho sh - pt, n,
        s dw, r dh) for the k-step's first pixel m = (n, ho, wo)."""
        m = np.asarray(m, np.int64)
        n = m // hw
        rem = m - n * hw
        ho = rem // OW
        wo = rem - ho * OW
        bsh, bsw = (1, 1) if mut == "base_unstrided" else (sh, sw)
        off_w, off_h = (r * dh, s * dw) if mut == "offsets_hw_order" else (s * dw, r * dh)
        c = (0 if mut == "x_channel_no_group" else g * Cg) + n0 + 64 * j
        return c, wo * bsw - pl, ho * bsh - pt, n, off_w, off_h

    lbo, sbo = (1024, 8192) if mut == "lbo_sbo_swapped" else (BOX_BYTES, 1024)
    kstep = 1024 if mut == "ks_1024" else 2048
    a_half = 4096 if mut == "a_half_4096" else BOX_BYTES
    b_off = BOX_BYTES if mut == "b_at_8192" else 2 * BOX_BYTES

    def desc_a(stage, cw):
        """wgmma_desc_mn_sw128(ring + st kStageBytes + cw kBoxBytes + ks 2048, kBoxBytes), ks = 0..3."""
        return [wgmma_desc_mn_sw128(stage + cw * a_half + ks * kstep, lbo, sbo) for ks in range(KSTEPS)]

    def desc_b(stage):
        """wgmma_desc_mn_sw128(ring + st kStageBytes + 2 kBoxBytes + ks 2048, kBoxBytes)."""
        return [wgmma_desc_mn_sw128(stage + b_off + ks * kstep, lbo, sbo) for ks in range(KSTEPS)]

    def block_tile(bx):
        """m0 = blockIdx.x / tiles_n * BM, n0 = blockIdx.x % tiles_n * TN."""
        if mut == "bx_decode_swapped":
            return bx % tiles_n * BM, bx // tiles_n * TN
        return bx // tiles_n * BM, bx % tiles_n * TN

    def block_tap_split(by):
        """t = blockIdx.y % taps, split = blockIdx.y / taps."""
        return by % taps, (by // splits if mut == "by_decode_splits" else by // taps)

    def k_range(sp):
        if mut == "split_range_floor":
            q = steps // splits
            return sp * q, sp * q + q
        return steps * sp // splits, steps * (sp + 1) // splits

    def dead(m, oh0, oh1, ow0, ow1):
        """tma_wgrad_step_dead, vectorised over the k-steps' first pixels m."""
        m = np.asarray(m, np.int64)
        if oh0 >= oh1 or ow0 >= ow1:
            return np.ones(m.shape, bool)
        last = np.minimum(m + PIX, P) - 1
        na, nb = m // hw, last // hw
        ra, rb = m - na * hw, last - nb * hw
        ha, hb = ra // OW, rb // OW
        rows_out = ((hb <= oh0) if mut == "dead_row_off_by_one" else (hb < oh0)) | (ha >= oh1)
        cols_out = (ha == hb) & ((rb - hb * OW < ow0) | (ra - ha * OW >= ow1))
        d = rows_out | cols_out
        return d if mut == "dead_ignores_image" else d & (na == nb)

    def ws_index(sp, g, t, kk, c):
        """ws + ((split G + g) taps + t) Kg Cg + kk Cg + c."""
        sl = (sp * taps + t) * G + g if mut == "ws_g_taps_swapped" else (sp * G + g) * taps + t
        return sl * Kg * Cg + kk * (Kg if mut == "ws_row_kg" else Cg) + c

    def epi_row(warp, lane, h):
        """kk - m0 - 64 cw of the store of registers 4 j + 2 h, + 1: 16 warp + lane / 4 + 8 h."""
        return warp * 16 + lane // 4 + (h if mut == "frag_row_h" else 8 * h)

    def epi_col(j, lane):
        """c - n0 of that store: 8 j + 2 (lane % 4)."""
        return j * 8 + 2 * (lane % 4)

    def gw_index(g, k, c, tap):
        """wgrad_reduce_kernel's store: gw[((g Kg + k) Cg + c) taps + tap]."""
        if mut == "reduce_tap_major":
            return ((g * Kg + k) * taps + tap) * Cg + c
        return ((g * Kg + k) * Cg + c) * taps + tap

    plan = dict(case=case, mut=mut, form=form, TN=TN, N=N, H=H, W=W, C=C, K=K, G=G, Kg=Kg, Cg=Cg, KH=KH, KW=KW,
                sh=sh, sw=sw, dh=dh, dw=dw, pt=pt, pl=pl, OH=OH, OW=OW, taps=taps, P=P, hw=hw, spr=spr, steps=steps,
                tiles_m=tiles_m, tiles_n=tiles_n, splits=splits, grid=(tiles_m * tiles_n, taps * splits, G),
                stages=stages, stage_bytes=stage_bytes, smem_bytes=stages * stage_bytes + 1024,
                static_bytes=2 * stages * 8, block_boxes=block_boxes, stage_tx=stage_tx,
                gymap=gymap, xmap=xmap, copies=copies, gy_coords=gy_coords, x_coords=x_coords,
                desc_a=desc_a, desc_b=desc_b, trans=(0, 0) if mut == "no_trans" else (1, 1),
                block_tile=block_tile, block_tap_split=block_tap_split, k_range=k_range, dead=dead,
                ws_index=ws_index, epi_row=epi_row, epi_col=epi_col, gw_index=gw_index,
                full_parity=lambda i: (i // stages) & 1,
                empty_parity=(lambda i: (i // stages) & 1) if mut == "empty_parity" else
                (lambda i: (i // stages - 1) & 1))
    if nchw:
        plan.update(nchw_parts(plan, mut))
    return plan


def nchw_parts(plan, mut):
    """The TF32 NCHW form's own pieces (wgrad_tma_kernel's `if constexpr (kNchw)` branches, and
    launch_wgrad_tma's kNchw map encoding): the two rank-4 tiled maps, the stage's two copies,
    tma_wgrad_row_step, the boxes' coordinates, the K-major descriptors, the dead predicate."""
    N, H, W, C, K, G, Kg, Cg, TN = (plan[k] for k in ("N", "H", "W", "C", "K", "G", "Kg", "Cg", "TN"))
    sh, dh, dw, pt, pl, OH, OW, spr = (plan[k] for k in ("sh", "dh", "dw", "pt", "pl", "OH", "OW", "spr"))
    gy_rows = 64 if mut == "nchw_gy_box_rows_64" else BM
    # cuTensorMapEncodeTiled(rank 4, FLOAT32, dims / strides / box innermost first, elementStrides 1,
    # INTERLEAVE_NONE, SWIZZLE_128B, OOB_FILL_NONE): gy (OW, OH, K, N), x (W, H, C, N)
    gymap = dict(dims=(OW, OH, K, N), strides=(OW * E4, OH * OW * E4, K * OH * OW * E4), box=(RPIX, 1, gy_rows, 1),
                 estride=(1, 1, 1, 1), E=E4, swizzle=128)
    xmap = dict(dims=(W, H, C, N), strides=(W * E4, H * W * E4, C * H * W * E4), box=(RPIX, 1, TN, 1),
                estride=(1, 1, 1, 1), E=E4, swizzle=128)
    # tma_load_4d(a, &map_gy, ...) at the stage, tma_load_4d(a + BM * 128, &map_x, ...)
    copies = [("gy", 0, 0, 128), ("x", 0, BM * 128, 128)]
    # a_boxes = 2, b_boxes = TN / 64 (kNchw): both copies every block, expect_tx = kStageBytes
    tx = (BM + 128) * 128 if mut == "nchw_expect_tx_tn128" else plan["stage_bytes"]

    def stage_tx(m0, n0):
        return (0, 1), tx
    wstep = 16 if mut == "nchw_wo0_step_16" else RPIX

    def row_step(k):
        """tma_wgrad_row_step(k, OH, spr): (n, ho, wo0), vectorised."""
        k = np.asarray(k, np.int64)
        per_image = (OW if mut == "nchw_row_step_ow" else OH) * spr
        n = k // max(per_image, 1)
        rem = k - n * per_image
        return n, rem // max(spr, 1), rem % max(spr, 1) * wstep

    def gy_coords(g, m0, k):
        """tma_load_4d(a, &map_gy, bar, wo0, ho, g Kg + m0, n)."""
        n, ho, wo0 = row_step(k)
        return wo0, ho, (0 if mut == "nchw_gy_channel_no_group" else g * Kg) + m0 + 0 * n, n

    def x_coords(g, n0, k, r, s):
        """tma_load_4d(a + BM 128, &map_x, bar, wo0 - pl + s dw, ho sh - pt + r dh, g Cg + n0, n)."""
        n, ho, wo0 = row_step(k)
        col = wo0 - (0 if mut == "nchw_x_col_no_pad" else pl) + s * dw
        row = ho * sh - pt + (0 if mut == "nchw_x_row_no_tap" else r * dh)
        if mut == "nchw_x_coords_hw_swapped":
            col, row = row, col
        return col, row, (0 if mut == "nchw_x_channel_no_group" else g * Cg) + n0 + 0 * n, n

    kb = 16 if mut == "nchw_ks16" else 32
    b_off = BOX_BYTES if mut == "nchw_b_at_8192" else 2 * BOX_BYTES

    def desc_a(stage, cw):
        """wgmma_desc_sw128(ring + st kStageBytes + cw kBoxBytes + ks 32), ks = 0..3."""
        return [wgmma_desc_sw128(stage + cw * BOX_BYTES + ks * kb) for ks in range(KSTEPS8)]

    def desc_b(stage):
        """wgmma_desc_sw128(ring + st kStageBytes + 2 kBoxBytes + ks 32)."""
        return [wgmma_desc_sw128(stage + b_off + ks * kb) for ks in range(KSTEPS8)]

    def dead(k, oh0, oh1, ow0, ow1):
        """The kernel's dead lambda, kNchw branch: `if (oh0 >= oh1 || ow0 >= ow1) return true;` (the
        tap reads only padding), then ho < oh0 || ho >= oh1 || wo0 + 32 <= ow0 || wo0 >= ow1."""
        _, ho, wo0 = row_step(k)
        if oh0 >= oh1 or ow0 >= ow1:
            return np.ones(ho.shape, bool)
        rows_out = (ho < oh0) | (ho >= oh1)
        if mut == "nchw_dead_ignores_cols":
            cols_out = np.zeros(ho.shape, bool)
        elif mut == "nchw_dead_cols_last_inclusive":
            cols_out = (wo0 + RPIX - 1 <= ow0) | (wo0 >= ow1)
        else:
            cols_out = (wo0 + RPIX <= ow0) | (wo0 >= ow1)
        return rows_out | cols_out

    return dict(gymap=gymap, xmap=xmap, copies=copies, stage_tx=stage_tx, row_step=row_step, gy_coords=gy_coords,
                x_coords=x_coords, desc_a=desc_a, desc_b=desc_b, trans=(0, 0), dead=dead)


def host_refusal(case, form="cl16", mut=None):
    """Why launch_wgrad / launch_wgrad_tma do not run wgrad_tma_kernel on this shape (None: they do),
    the environment (RNNKERN_CONV_MMA=tma, sm_90, sm_90a build, TF32 allowed, encoders) and pointers
    aside. form 'nchw': fp32 NCHW (launch_wgrad_tma<float>, the kNchw branch)."""
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, sh, sw, dh, dw, pt, pl = (case[k] for k in ("KH", "KW", "sh", "sw", "dh", "dw", "pt", "pl"))
    OH, OW = case["OH"], case["OW"]
    taps, P = KH * KW, N * OH * OW
    if taps > 65535 or G * (K // G) * (C // G) * taps >= 2 ** 31:
        return "launch_wgrad: TORCH_CHECK (taps, outputs)"
    if K // G < 8 or C // G < 8:
        return "launch_wgrad: direct kernel (Kg or Cg < 8)"
    if form == "nchw":
        if (C // G) % 2 and mut != "nchw_host_odd_cg":
            return "odd input channels a group"
        if (W % 4 and mut != "nchw_host_no_w4") or (OW % 32 and mut != "nchw_host_no_ow32"):
            return "rows not 16-byte or widths not whole 32-column blocks (W % 4, OW % 32)"
        big = 2 ** 31 - 1
        coords = ((OH - 1) * sh + (KH - 1) * dh + 32 <= big and pt <= big // 2 and
                  (OW - 1) + (KW - 1) * dw + 32 <= big and pl <= big // 2)
        if (sw != 1 and mut != "nchw_host_any_sw") or (not coords and mut != "nchw_host_no_coords") or P >= 2 ** 31 \
                or G > 65535:
            return "outside the maps' limits"
        return None
    if K % 8 or C % 8:
        return "channel rows not 16-byte"
    if (C // G) % 2:
        return "odd input channels a group"
    ch, cw = im2col_corners(H, OH, pt, sh), im2col_corners(W, OW, pl, sw)
    if (sh > 8 or sw > 8 or dh * (KH - 1) > 255 or dw * (KW - 1) > 255 or min(ch + cw) < -128 or max(ch + cw) > 127
            or P >= 2 ** 31 or G > 65535):
        return "outside the maps' limits"
    return None


# ---------------------------------------------------------------------------------------------
# the documented hardware

def desc_decode(d):
    """PTX 9.7.15.5.1.2.2: the fields of a 64-bit matrix descriptor (byte values)."""
    return dict(start=(d & 0x3FFF) << 4, lbo=((d >> 16) & 0x3FFF) << 4, sbo=((d >> 32) & 0x3FFF) << 4,
                base_offset=(d >> 49) & 7, mode=(d >> 62) & 3)


def operand_bytes(desc, mn, trans):
    """Shared byte addresses (mn, 16, E) of the elements (i, k), i along M (A) or N (B), k < 16, of a
    k16 wgmma operand read through desc: MN-major (trans = 1) or K-major (trans = 0), 128B swizzle."""
    f = desc_decode(desc)
    assert f["mode"] == 1, "the model covers the 128-byte swizzle mode only"
    assert f["base_offset"] == 0, "the model covers patterns starting on 1024-byte boundaries (base offset 0)"
    i = np.arange(mn)[:, None, None]
    k = np.arange(16)[None, :, None]
    b = np.arange(E)[None, None, :]
    if trans:   # ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)), element strides -> bytes
        off = (i % T16) * E + (i // T16 % 8) * 16 + (i // (8 * T16)) * f["lbo"] + (k % 8) * 128 + (k // 8) * f["sbo"]
    else:       # ((8,m),(T,2k)):((8T,SBO),(1,T)), LBO unused
        off = (i % 8) * 128 + (i // 8) * f["sbo"] + (k % T16) * E + (k // T16) * 16
    return swz128(f["start"] + off + b)


_BOX_LIN = (np.arange(BOX)[:, None, None] * 128 + np.arange(BOX)[None, :, None] * E + np.arange(E)).reshape(-1)


def box_bytes(dst, swizzle=128):
    """Shared byte address of every byte (row, element, byte) of a 64 x 128-byte box written at dst
    (scalar or array: one box each) with the 128-byte swizzle (or none: swizzle 0)."""
    assert swizzle in (0, 128), "the model covers SWIZZLE_NONE and SWIZZLE_128B"
    lin = np.asarray(dst, np.int64)[..., None] + _BOX_LIN
    return swz128(lin) if swizzle else lin


def tma_tiled_2d(gmem, gmap, x0, x1):
    """cp.async.bulk.tensor.2d tile: the {box0, box1} box at (x0, x1) as (..., box1 rows, box0
    elements), zeros outside the tensor."""
    K, P = gmap["dims"]
    s1 = gmap["stride"] // E
    b0, b1 = gmap["box"]
    assert gmap["stride"] % 16 == 0 and b0 * E <= 128, "globalStrides multiple of 16; inner box <= the 128B span"
    x0, x1 = np.broadcast_arrays(np.asarray(x0, np.int64), np.asarray(x1, np.int64))
    cc = x0[..., None, None] + np.arange(b0)
    pp = x1[..., None, None] + np.arange(b1)[:, None]
    ok = (cc >= 0) & (cc < K) & (pp >= 0) & (pp < P)
    return np.where(ok, gmem[np.where(ok, cc + pp * s1, 0)], 0)


def tma_tiled_4d(gmem, gmap, x0, x1, x2, x3):
    """cp.async.bulk.tensor.4d tile (PTX 5.5.3 Tiled Mode; cuTensorMapEncodeTiled): the box
    {b0, b1, b2, b3} at the signed coordinates (x0, x1, x2, x3) (innermost first) as (..., rows, b0),
    rows = b1 b2 b3 walked b1 fastest (the box's elements in shared memory innermost first, b0 of them
    a row of b0 * E bytes); an element whose coordinate is outside [0, globalDim) in any dimension
    (negative or past the end) is zero-filled (OOB_FILL_NONE). gmem: the tensor's elements, linear."""
    dims, strides, box, Eb = gmap["dims"], gmap["strides"], gmap["box"], gmap["E"]
    assert all(1 <= d <= 2 ** 32 for d in dims), "globalDim in [1, 2^32]"
    assert all(st % 16 == 0 and st < 2 ** 40 for st in strides), "globalStrides multiples of 16 below 2^40"
    assert all(1 <= b <= 256 for b in box), "boxDim in [1, 256]"
    assert box[0] * Eb % 16 == 0, "boxDim[0] * elementSize a multiple of 16 bytes"
    assert gmap["swizzle"] != 128 or box[0] * Eb <= 128, "SWIZZLE_128B: the inner box dimension <= 128 bytes"
    assert all(e == 1 for e in gmap.get("estride", (1,) * 4)), "the model covers elementStrides 1"
    xs = np.broadcast_arrays(*(np.asarray(v, np.int64) for v in (x0, x1, x2, x3)))
    for v in xs:
        assert v.size == 0 or (v.min() >= -2 ** 31 and v.max() < 2 ** 31), "tensor coordinates are .s32"
    se = (1,) + tuple(st // Eb for st in strides)        # element strides of the four dimensions
    b0, b1, b2, b3 = box
    sh_ = xs[0].shape
    i = [np.arange(b) for b in (b0, b1, b2, b3)]
    # (..., b3, b2, b1, b0): the shared-memory order of the box
    idx = [xs[d].reshape(sh_ + (1, 1, 1, 1)) + i[d].reshape(tuple(box[d] if q == 3 - d else 1 for q in range(4)))
           for d in range(4)]
    ok = np.ones(np.broadcast_shapes(*(a.shape for a in idx)), bool)
    off = np.zeros(ok.shape, np.int64)
    for d in range(4):
        ok &= (idx[d] >= 0) & (idx[d] < dims[d])
        off = off + idx[d] * se[d]
    vals = np.where(ok, gmem[np.where(ok, off, 0)], 0)
    return vals.reshape(sh_ + (b1 * b2 * b3, b0))


def copy_size(plan, kind):
    """Bytes one copy delivers (complete-tx counts its whole box, zero fill included), from its map."""
    m = plan["gymap"] if kind == "gy" else plan["xmap"]
    if "box" in m:
        return int(np.prod(m["box"])) * m.get("E", E)
    return m["ppc"] * m["cpp"] * m["E"]


def copy_bytes(plan, issued):
    """Bytes the copies `issued` (indices into plan['copies']) of one stage deliver."""
    return sum(copy_size(plan, plan["copies"][i][0]) for i in issued)


def block_tiles(plan):
    """(m0, n0) of every block tile of the grid's x dimension."""
    TN = plan["TN"]
    return [(mt * BM, nt * TN) for mt in range(plan["tiles_m"]) for nt in range(plan["tiles_n"])]


def fragment_rc(TN):
    """9.7.15.5.1.1.1: (row, col) of D that register i of warpgroup thread t holds, (128, TN / 2)."""
    t = np.arange(128)[:, None]
    i = np.arange(TN // 2)[None, :]
    warp, lane = t // 32, t % 32
    return 16 * warp + lane // 4 + 8 * ((i // 2) % 2), 8 * (i // 4) + 2 * (lane % 4) + i % 2


def bits_of(v, dtype):
    if dtype == "bf16":
        return (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)   # exact for small integers
    return v.astype(np.float16).view(np.uint16)


def value_of(u, dtype):
    if dtype == "bf16":
        return (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return u.view(np.float16).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# checks on the plan itself

def plan_problems(plan):
    """The stage ring, the barrier's byte count, the grid and the descriptors against the documented
    limits."""
    bad = []
    S, SB = plan["stages"], plan["stage_bytes"]
    for m0, n0 in block_tiles(plan):         # (a block's copies and expect_tx depend on its tile)
        issued, tx = plan["stage_tx"](m0, n0)
        got = copy_bytes(plan, issued)
        if tx != got:
            bad.append(f"expect_tx {tx} bytes but the {len(issued)} copies a stage of the block at (m0 {m0}, n0 {n0}) "
                       f"issues deliver {got} "
                       f"({'the consumers never wake' if tx > got else 'a stage read while written'})")
            break
        if tx > TX_MAX:
            bad.append("expect_tx beyond the mbarrier tx-count range")
            break
    if S * SB + 1023 > plan["smem_bytes"]:
        bad.append("the 1024-aligned ring does not fit the dynamic allocation")
    if plan["smem_bytes"] + plan["static_bytes"] > SMEM_MAX:
        bad.append(f"{plan['smem_bytes'] + plan['static_bytes']} bytes of shared memory a block (sm_90: {SMEM_MAX})")
    if plan["smem_bytes"] + plan["static_bytes"] + 1024 > 1 << 18:
        bad.append("shared addresses past the descriptors' 14-bit start field")
    gx, gy_, gz = plan["grid"]
    if not (gx <= 2 ** 31 - 1 and gy_ <= 65535 and gz <= 65535):
        bad.append(f"grid {plan['grid']} beyond (2^31 - 1, 65535, 65535)")
    return bad


_STAGE_CACHE = {}


def stage_window(plan):
    """(raw, ring, end, size): the dynamic window's start (past the static arrays, not 1024-aligned),
    the ring's 1024-aligned start, the window's end, and a shared-memory size that covers it."""
    raw = -(-plan["static_bytes"] // 16) * 16 + 16
    end = raw + plan["smem_bytes"]
    return raw, (raw + 1023) & ~1023, end, end + 65536


def write_problems(written, base, SB, end):
    """The stage's copies' byte addresses `written` against the stage and the allocation."""
    problems = []
    if written.min() < base or written.max() >= base + SB:
        problems.append("a copy writes outside its stage")
    if written.max() >= end:
        problems.append("a copy writes past the dynamic allocation")
    if np.bincount(written).max() > 1:
        problems.append("two copies of one stage write the same bytes")
    return problems


def operand_elements(owner, rb, base, SB, E, name, problems):
    """(element index or -1, stale): what each operand element of wgmma's byte addresses rb (.., E)
    reads, from owner (the element byte each shared byte holds, -1: no copy wrote it); an element
    read from several elements' bytes, or outside the stage, is a problem."""
    if rb.min() < base or rb.max() >= base + SB:
        problems.append(f"{name}: wgmma reads outside the stage")
    got = owner[np.clip(rb, 0, owner.size - 1)]
    stale = (got == -1).all(-1)
    consistent = (got >= 0).all(-1) & (got == got[..., :1] + np.arange(E)).all(-1) & (got[..., 0] % E == 0)
    if not (consistent | stale).all():
        problems.append(f"{name}: an operand element reads bytes of several elements")
    return np.where(consistent, got[..., 0] // E, -1), stale


def stages_agree(maps, problems):
    """(mapA, mapB) of the first stage; every stage must read the same."""
    if any(not (np.array_equal(a, maps[0][0]) and np.array_equal(b, maps[0][1])) for a, b in maps):
        problems.append("the stages' operand maps differ (a stage's base changes what wgmma reads)")
    return maps[0]


STALE = 0xFF   # the byte the model leaves where no copy of the block wrote: 0xFFFF is NaN in bf16 and in fp16


def stage_model(plan, issued=None):
    """Every stage of the ring byte by byte: the copies `issued` (indices into plan['copies'], a
    block's stage_tx; default every copy of the layout) written through the swizzle over stale
    bytes (STALE: NaN, as a box the block never loads keeps whatever the shared memory held), A (cw,
    ks) and B (ks) read back through the decoded descriptors. Returns dict(mapA (2, 4, 64, 16):
    A[m][k] of warpgroup cw's instruction ks as an element index into the stage's layout (copy
    slot b of plan['copies'], row, element: b * 4096 + row * 64 + element), -1 for bytes no issued
    copy wrote (stale); mapB (4, TN, 16): B[k][n] likewise, indexed [ks, n, k]; problems; logical:
    the maps are the documented slices (A[m][k] = gy box cw, pixel 16 ks + k, channel m; B[k][n] = x
    box n / 64, pixel 16 ks + k, channel n % 64) where that box is issued and -1 (stale) exactly
    where it is not; bytes_ok: random boxes read back byte by byte agree with the maps, and every
    element mapped -1 reads the stale NaN (every stage); stale_rows / stale_cols: the rows 64 cw + m
    of D (A) / columns n (B) an instruction feeds with a stale element)."""
    if plan["form"] == "nchw":
        return stage_model_nchw(plan)
    issued = tuple(range(len(plan["copies"]))) if issued is None else tuple(issued)
    key = (plan["TN"], plan["mut"], issued)
    if key in _STAGE_CACHE:
        return _STAGE_CACHE[key]
    rng = np.random.default_rng(5)
    TN, S, SB, copies = plan["TN"], plan["stages"], plan["stage_bytes"], plan["copies"]
    problems = []
    raw, ring, end, size = stage_window(plan)
    nb = len(copies)
    maps, bytes_ok = [], True
    for st in range(S):
        base = ring + st * SB
        for _, _, off, _ in copies:
            if (base + off) % 1024:
                problems.append("a copy's destination is not on a 1024-byte boundary (descriptor base offset 0 "
                                "assumes the pattern starts there; cp.async.bulk.tensor needs 128)")
        lay = np.concatenate([box_bytes(base + off, swz) for _, _, off, swz in copies])   # the whole layout
        problems += write_problems(lay, base, SB, end)
        # the issued copies only; slot b's bytes carry the element indices b * 4096 + ...
        wa = np.concatenate([box_bytes(base + copies[b][2], copies[b][3]) for b in issued]) if issued else \
            np.zeros(0, np.int64)
        wc = np.concatenate([b * ELEMS * E + np.arange(ELEMS * E) for b in issued]) if issued else np.zeros(0, np.int64)
        owner = np.full(size, -1, np.int64)
        owner[wa] = wc
        # random boxes written byte by byte over the stale bytes, for the read-back check
        data = rng.integers(0, 1 << 16, (nb, BOX, BOX)).astype(np.uint16)
        smem = np.full(size, STALE, np.uint8)
        smem[wa] = data.view(np.uint8).reshape(-1)[wc]
        stage_maps = {}
        for name, descs, mn, trans in (("A", plan["desc_a"](base, 0) + plan["desc_a"](base, 1), 64, plan["trans"][0]),
                                       ("B", plan["desc_b"](base), TN, plan["trans"][1])):
            rb = np.stack([operand_bytes(d, mn, trans) for d in descs])          # (n, mn, 16, E)
            idx, stale = operand_elements(owner, rb, base, SB, E, name, problems)
            stage_maps[name] = idx.reshape(2, KSTEPS, 64, 16) if name == "A" else idx
            op = smem[np.clip(rb, 0, size - 1)].copy().view(np.uint16)[..., 0]          # what wgmma reads
            bytes_ok &= bool(np.array_equal(op[idx >= 0], data.reshape(-1)[idx[idx >= 0]]))
            bytes_ok &= bool((op[stale] == (STALE << 8 | STALE)).all())
        maps.append((stage_maps["A"], stage_maps["B"]))
    mapA, mapB = stages_agree(maps, problems)
    slot = {(kind, j): b for b, (kind, j, _, _) in enumerate(copies)}
    cw, ks, m, k = np.meshgrid(np.arange(2), np.arange(KSTEPS), np.arange(64), np.arange(16), indexing="ij")
    sa = np.array([slot.get(("gy", h), -1) for h in range(2)])[cw]
    expA = np.where(np.isin(sa, issued), sa * ELEMS + (16 * ks + k) * BOX + m, -1)
    ks, n, k = np.meshgrid(np.arange(KSTEPS), np.arange(TN), np.arange(16), indexing="ij")
    sb = np.array([slot.get(("x", j), -1) for j in range(TN // 64)])[n // 64]
    expB = np.where(np.isin(sb, issued), sb * ELEMS + (16 * ks + k) * BOX + n % 64, -1)
    out = dict(mapA=mapA, mapB=mapB, problems=sorted(set(problems), key=problems.index), bytes_ok=bytes_ok,
               logical=bool(np.array_equal(mapA, expA) and np.array_equal(mapB, expB)),
               stale=int((mapA < 0).sum() + (mapB < 0).sum()), ring=ring, raw=raw, size=size,
               stale_rows=np.nonzero((mapA < 0).any(axis=(1, 3)).reshape(-1))[0],
               stale_cols=np.nonzero((mapB < 0).any(axis=(0, 2)))[0])
    _STAGE_CACHE[key] = out
    return out


def stale_problem(plan, sm, m0, n0):
    """A stale element (a box the block at (m0, n0) does not load) feeds D row 64 cw + m (A) or column
    n (B) of every instruction that reads it (D[m][n] = sum_k A[m][k] B[k][n]: nothing else); the
    epilogue stores row m0 + 64 cw + m only below Kg and column n0 + n only below Cg. The message if
    a stale element reaches a stored output, else None."""
    rows = sm["stale_rows"][m0 + sm["stale_rows"] < plan["Kg"]]
    cols = sm["stale_cols"][n0 + sm["stale_cols"] < plan["Cg"]]
    if len(rows) or len(cols):
        what = (f"rows {m0 + rows[0]}..{m0 + rows[-1]} (Kg {plan['Kg']})" if len(rows) else
                f"columns {n0 + cols[0]}..{n0 + cols[-1]} (Cg {plan['Cg']})")
        return (f"the block at (m0 {m0}, n0 {n0}) does not load a box whose stale bytes wgmma reads into stored "
                f"accumulator {what}")
    return None


def copy_rows(plan, kind):
    """128-byte rows a copy writes: its box's b1 b2 b3 (rows of b0 E = 128 bytes)."""
    m = plan["gymap"] if kind == "gy" else plan["xmap"]
    assert m["box"][0] * m["E"] == 128, "the model's rows are 128 bytes (the 128B swizzle span)"
    return int(np.prod(m["box"][1:]))


def stage_model_nchw(plan):
    """The TF32 NCHW form's stage byte by byte, every stage of the ring: gy's box (rows = output
    channels, 32 fp32 pixels a 128-byte row) and x's box (rows = input channels) written through the
    128-byte swizzle (5.5.7) at their offsets, A (warpgroup cw, k8 step ks) and B (ks) read back
    through the decoded K-major SWIZZLE_128B descriptors (9.7.15.5.1.2, check_tma_im2col's
    wgmma_k_major_bytes: row i at (i % 8) 128 + (i / 8) SBO, k at (k % 4) 4 + (k / 4) 16 bytes from
    the start, swizzled on the absolute address). Returns dict(mapA (2, 4, 64, 8): A[m][k] of
    instruction (cw, ks) as an element index into the stage's boxes (gy's rows * 32 elements, then
    x's), -1 where no copy wrote; mapB (4, TN, 8): B's element (n, k) of instruction ks (K-major: D =
    A B^T over k); problems; logical: A[m][k] = gy box row 64 cw + m, element 8 ks + k; B[n][k] = x
    box row n, element 8 ks + k; bytes_ok: random boxes read back byte by byte agree)."""
    key = ("nchw", plan["TN"], plan["mut"])
    if key in _STAGE_CACHE:
        return _STAGE_CACHE[key]
    rng = np.random.default_rng(5)
    TN, S, SB, copies = plan["TN"], plan["stages"], plan["stage_bytes"], plan["copies"]
    problems = []
    raw, ring, end, size = stage_window(plan)
    rows = [copy_rows(plan, kind) for kind, _, _, _ in copies]
    first = np.concatenate([[0], np.cumsum([r * RPIX for r in rows])])     # each copy's first element
    maps, bytes_ok = [], True
    for st in range(S):
        base = ring + st * SB
        for (_, _, off, swz) in copies:
            assert swz == 128, "the model covers SWIZZLE_128B"
            if (base + off) % 1024:
                problems.append("a copy's destination is not on a 1024-byte boundary (descriptor base offset 0)")
        wa = np.concatenate([tma_box_bytes(base + off, r, E4).reshape(-1) for (_, _, off, _), r in zip(copies, rows)])
        wc = np.arange(first[-1] * E4)
        problems += write_problems(wa, base, SB, end)
        owner = np.full(size, -1, np.int64)
        owner[wa] = wc
        data = rng.integers(0, 1 << 32, first[-1], dtype=np.uint64).astype(np.uint32)
        smem = rng.integers(0, 256, size).astype(np.uint8)
        smem[wa] = data.view(np.uint8)[wc]
        stage_maps = {}
        for name, descs, mn in (("A", plan["desc_a"](base, 0) + plan["desc_a"](base, 1), 64),
                                ("B", plan["desc_b"](base), TN)):
            for d in descs:
                f = desc_decode(d)
                if f["sbo"] != 1024 or f["mode"] != 1 or f["base_offset"] != 0:
                    problems.append(f"{name}: descriptor {f} is not K-major SWIZZLE_128B with SBO 1024")
            rb = np.stack([wgmma_k_major_bytes(d, mn, E4) for d in descs])        # (n, mn, 8, 4)
            idx, _ = operand_elements(owner, rb, base, SB, E4, name, problems)
            stage_maps[name] = idx.reshape(2, KSTEPS8, 64, K8) if name == "A" else idx
            op = smem[rb].copy().view(np.uint32)[..., 0]
            bytes_ok &= bool(np.array_equal(op[idx >= 0], data[idx[idx >= 0]]))
        maps.append((stage_maps["A"], stage_maps["B"]))
    mapA, mapB = stages_agree(maps, problems)
    cw, ks, m, k = np.meshgrid(np.arange(2), np.arange(KSTEPS8), np.arange(64), np.arange(K8), indexing="ij")
    expA = (64 * cw + m) * RPIX + K8 * ks + k
    ks, n, k = np.meshgrid(np.arange(KSTEPS8), np.arange(TN), np.arange(K8), indexing="ij")
    expB = BM * RPIX + n * RPIX + K8 * ks + k
    out = dict(mapA=mapA, mapB=mapB, problems=sorted(set(problems), key=problems.index), bytes_ok=bytes_ok,
               logical=bool(np.array_equal(mapA, expA) and np.array_equal(mapB, expB)),
               stale=int((mapA < 0).sum() + (mapB < 0).sum()), ring=ring, raw=raw, size=size, first=first)
    _STAGE_CACHE[key] = out
    return out


# ---------------------------------------------------------------------------------------------
# the reference and the replay

def reference_gw(gy, x, case):
    """float64 grad_weight (K, Cg, KH, KW) from the definition; gy (P, K), x (N, H, W, C)."""
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, sh, sw, dh, dw, pt, pl = (case[k] for k in ("KH", "KW", "sh", "sw", "dh", "dw", "pt", "pl"))
    OH, OW = case["OH"], case["OW"]
    Kg, Cg = K // G, C // G
    gw = np.zeros((K, Cg, KH, KW))
    for r in range(KH):
        hi = np.arange(OH) * sh - pt + r * dh
        for s in range(KW):
            wi = np.arange(OW) * sw - pl + s * dw
            mask = ((hi >= 0) & (hi < H))[:, None] & ((wi >= 0) & (wi < W))[None, :]
            xs = x[:, np.clip(hi, 0, H - 1)][:, :, np.clip(wi, 0, W - 1)] * mask[None, :, :, None]
            xs = xs.reshape(N * OH * OW, C)
            for g in range(G):
                gw[g * Kg:(g + 1) * Kg, :, r, s] = gy[:, g * Kg:(g + 1) * Kg].T @ xs[:, g * Cg:(g + 1) * Cg]
    return gw


def contributing_steps(plan, r, s):
    """Brute force: the k-steps holding a pixel whose read of tap (r, s) is real input, and whether
    valid_range_dev's rectangle is exactly the rows / columns whose read is real input."""
    OH, OW, P, hw = plan["OH"], plan["OW"], plan["P"], plan["hw"]
    rows_ok = (np.arange(OH) * plan["sh"] - plan["pt"] + r * plan["dh"] >= 0) & \
        (np.arange(OH) * plan["sh"] - plan["pt"] + r * plan["dh"] < plan["H"])
    cols_ok = (np.arange(OW) * plan["sw"] - plan["pl"] + s * plan["dw"] >= 0) & \
        (np.arange(OW) * plan["sw"] - plan["pl"] + s * plan["dw"] < plan["W"])
    oh0, oh1 = valid_range_dev(r, plan["sh"], plan["dh"], plan["pt"], plan["H"], plan["OH"])
    ow0, ow1 = valid_range_dev(s, plan["sw"], plan["dw"], plan["pl"], plan["W"], plan["OW"])
    exact = (np.array_equal(rows_ok, (np.arange(OH) >= oh0) & (np.arange(OH) < oh1)) and
             np.array_equal(cols_ok, (np.arange(OW) >= ow0) & (np.arange(OW) < ow1)))
    pix = np.arange(plan["steps"])[:, None] * PIX + np.arange(PIX)
    rem = pix % hw
    contrib = ((pix < P) & rows_ok[rem // OW] & cols_ok[rem % OW]).any(axis=1)
    return contrib, exact, (oh0, oh1, ow0, ow1)


class Replay:
    """State of one case's replay: workspace, store counts, first error."""

    def __init__(self, plan):
        self.plan = plan
        self.ws = np.full(plan["splits"] * plan["G"] * plan["taps"] * plan["Kg"] * plan["Cg"], np.nan)
        self.cnt = np.zeros(self.ws.size, np.int64)
        TN = plan["TN"]
        drow, dcol = fragment_rc(TN)
        t = np.arange(128)[:, None]
        warp, lane = t // 32, t % 32
        j, h = np.meshgrid(np.arange(TN // 8), np.arange(2), indexing="ij")
        j, h = j.reshape(1, -1), h.reshape(1, -1)
        reg0 = np.broadcast_to(4 * j + 2 * h, (128, j.size))
        self.tbl = dict(reg0=reg0, krow=plan["epi_row"](warp, lane, h), kcol=np.broadcast_to(plan["epi_col"](j, lane),
                                                                                              reg0.shape))
        self.drow, self.dcol = drow, dcol

    def regs_of(self, D):
        """D (..., 64, TN) of a warpgroup -> its threads' registers (..., 128, TN / 2)."""
        return D[..., self.drow, self.dcol]

    def epilogue(self, regs, sps, g, t, m0, n0):
        """The consumers' float2 stores of splits sps: regs (len(sps), 2 warpgroups, 128, TN / 2)."""
        p, tb = self.plan, self.tbl
        r0 = tb["reg0"]
        v0 = np.take_along_axis(regs, np.broadcast_to(r0, regs.shape[:-1] + r0.shape[-1:]), -1)
        v1 = np.take_along_axis(regs, np.broadcast_to(r0 + 1, regs.shape[:-1] + r0.shape[-1:]), -1)
        cw = np.arange(2)[:, None, None]
        kk = np.broadcast_to(m0 + 64 * cw + tb["krow"], (2,) + r0.shape)
        c = np.broadcast_to(n0 + tb["kcol"], kk.shape)
        keep = (kk < p["Kg"]) & (c < p["Cg"])
        for q, sp in enumerate(sps):
            idx = p["ws_index"](sp, g, t, kk[keep], c[keep])
            if len(idx) == 0:
                continue
            if (idx % 2).any():
                i = np.argmax(idx % 2)
                return (f"a float2 store at workspace float {idx[i]} (k {kk[keep][i]}, c {c[keep][i]}, split {sp}, "
                        f"g {g}, tap {t}) is not 8-byte aligned (PTX 6.4.1: misaligned access, undefined / fault)")
            if (c[keep] + 1 >= p["Cg"]).any():
                i = np.argmax(c[keep] + 1 >= p["Cg"])
                return (f"a float2 store's second float (k {kk[keep][i]}, c {c[keep][i] + 1}) lies past the row "
                        f"(Cg {p['Cg']}): it writes the next row's first element")
            if idx.min() < 0 or idx.max() + 1 >= self.ws.size:
                return "a store outside the workspace"
            self.ws[idx] = v0[q][keep]
            self.ws[idx + 1] = v1[q][keep]
            np.add.at(self.cnt, idx, 1)
            np.add.at(self.cnt, idx + 1, 1)
        return None

    def finish(self, want):
        """Workspace coverage, wgrad_reduce_kernel, comparison with float64."""
        p = self.plan
        if (self.cnt != 1).any():
            i = int(np.argmax(self.cnt != 1))
            per = p["Kg"] * p["Cg"]
            sl, rem = divmod(i, per)
            return (f"workspace element (slice {sl}, k {rem // p['Cg']}, c {rem % p['Cg']}) stored {self.cnt[i]} "
                    f"times ({int((self.cnt != 1).sum())} of {self.cnt.size} not once)")
        G, taps, Kg, Cg = p["G"], p["taps"], p["Kg"], p["Cg"]
        total = G * taps * Kg * Cg
        i = np.arange(total)
        c = i % Cg
        rr = i // Cg
        k = rr % Kg
        gt = rr // Kg
        tap, g = gt % taps, gt // taps
        acc = np.zeros(total)
        for sp in range(p["splits"]):        # in split order, as the kernel
            acc = acc + self.ws[sp * total + i]
        dst = p["gw_index"](g, k, c, tap)
        if dst.min() < 0 or dst.max() >= total or (np.bincount(dst, minlength=total) != 1).any():
            return "wgrad_reduce_kernel's stores are not a permutation of grad_weight's elements"
        gw = np.empty(total)
        gw[dst] = acc
        want = want.reshape(-1)
        bad = np.nonzero(~(gw == want))[0]
        if len(bad):
            o = int(bad[0])
            kk, rest = divmod(o, Cg * taps)
            cc, tp = divmod(rest, taps)
            return (f"gw[{kk}, {cc}, {tp // p['KW']}, {tp % p['KW']}] replay {gw[o]:g} direct {want[o]:g} "
                    f"({len(bad)} of {want.size} differ)")
        return None


def step_splits(plan):
    """The split each k-step runs in (the kernel's k ranges); error if they do not partition."""
    cover = np.zeros(plan["steps"], np.int64)
    owner = np.full(plan["steps"], -1, np.int64)
    for sp in range(plan["splits"]):
        kb, ke = plan["k_range"](sp)
        cover[kb:ke] += 1
        owner[kb:ke] = sp
    if (cover != 1).any():
        i = int(np.argmax(cover != 1))
        return owner, f"the splits' k ranges run k-step {i} of {plan['steps']} {cover[i]} times"
    return owner, None


def make_data(case, rng):
    P = case["N"] * case["OH"] * case["OW"]
    gy = rng.integers(-2, 3, (P, case["K"])).astype(np.float64)
    x = rng.integers(-2, 3, (case["N"], case["H"], case["W"], case["C"])).astype(np.float64)
    return gy, x


def replay_case(case, TN, sms, mut=None, seed=0, info=None, byte_level=None, form="cl16", x_fill=None):
    """Replays wgrad_tma_kernel + wgrad_reduce_kernel on one convolution; None when grad_weight
    matches float64 exactly, else the first mismatch or broken requirement. byte_level: 'bf16' /
    'fp16' ('tf32' for form 'nchw') runs every k-step through shared-memory bytes (slow: small
    cases), else the composite maps. form 'nchw': the TF32 NCHW form; x_fill (nchw only): a value
    written into x wherever the convolution never reads (the reference is unchanged by it)."""
    try:
        if form == "nchw":
            return _replay_case_nchw(case, TN, sms, mut, seed, {} if info is None else info, byte_level, x_fill)
        return _replay_case(case, TN, sms, mut, seed, {} if info is None else info, byte_level)
    except AssertionError as e:
        return f"breaks a documented requirement: {e}"


def grid_problems(plan):
    """The grid: every (m tile, n tile) once along x, every (tap, split) once along y."""
    TN = plan["TN"]
    gx, gy_, _ = plan["grid"]
    tiles = sorted(plan["block_tile"](bx) for bx in range(gx))
    want_tiles = sorted((mt * BM, nt * TN) for mt in range(plan["tiles_m"]) for nt in range(plan["tiles_n"]))
    if tiles != want_tiles:
        return f"blockIdx.x decodes to the tiles {tiles[:4]}..., not each (m0, n0) of {want_tiles[:4]}... once"
    tsp = sorted(plan["block_tap_split"](by) for by in range(gy_))
    if tsp != [(t, sp) for t in range(plan["taps"]) for sp in range(plan["splits"])]:
        return "blockIdx.y does not decode to each (tap, split) once"
    return None


def plan_checks(plan):
    """The plan's documented-limit problems, its stage models' (one a block tile: the copies it
    issues; 16-bit: no stale element reaching a stored output), its split's and its grid's, as one
    string (None: none), and (the split of each k-step, {(m0, n0): the block's stage model})."""
    bad = plan_problems(plan)
    if bad:
        return "; ".join(bad), (None, None)
    sms = {}
    for m0, n0 in block_tiles(plan):
        sm = stage_model(plan, plan["stage_tx"](m0, n0)[0])
        if sm["problems"]:
            return "; ".join(sm["problems"]), (None, None)
        err = None if plan["form"] == "nchw" else stale_problem(plan, sm, m0, n0)
        if err:
            return err, (None, None)
        sms[m0, n0] = sm
    split_of, err = step_splits(plan)
    return err or grid_problems(plan), (split_of, sms)


def _replay_case(case, TN, sms, mut, seed, info, byte_level):
    plan = kernel_plan(case, TN, sms, mut)
    err, (split_of, sms) = plan_checks(plan)
    if err:
        return err
    # (so the loops below over g, tap, m tile, n tile and split visit exactly the kernel's blocks)
    rng = np.random.default_rng(seed)
    gy, x = make_data(case, rng)
    want = reference_gw(gy, x, case)
    G, KW, taps = plan["G"], plan["KW"], plan["taps"]
    ms = np.arange(plan["steps"], dtype=np.int64) * PIX
    rep = Replay(plan)
    if byte_level:
        src_gy, src_x = bits_of(gy, byte_level).reshape(-1), bits_of(x, byte_level).reshape(-1)
    else:
        src_gy, src_x = gy.reshape(-1), x.reshape(-1)
    nbox = len(plan["copies"])
    for g in range(G):
        gyb = {}
        for mt in range(plan["tiles_m"]):
            for h in range(2):
                gyb[mt, h] = tma_tiled_2d(src_gy, plan["gymap"], *plan["gy_coords"](g, mt * BM, h, ms))
        for t in range(taps):
            r, s = divmod(t, KW)
            contrib, exact, (oh0, oh1, ow0, ow1) = contributing_steps(plan, r, s)
            if not exact:
                return f"valid_range_dev's rectangle for tap ({r}, {s}) is not the set of pixels reading real input"
            dead = plan["dead"](ms, oh0, oh1, ow0, ow1)
            if (dead & contrib).any():
                i = int(np.argmax(dead & contrib))
                return (f"tma_wgrad_step_dead skips k-step {i} (pixels {i * PIX}..) of tap ({r}, {s}), which holds "
                        f"a pixel reading real input (rows [{oh0}, {oh1}) x cols [{ow0}, {ow1}))")
            live = np.nonzero(~dead)[0]
            info["steps"] = info.get("steps", 0) + len(ms)
            info["dead"] = info.get("dead", 0) + int(dead.sum())
            info["skippable"] = info.get("skippable", 0) + int((~contrib).sum())
            for nt in range(plan["tiles_n"]):
                xb = {}
                loaded = {plan["copies"][b] for mt in range(plan["tiles_m"])        # (x boxes: b_boxes of n0)
                          for b in plan["stage_tx"](mt * BM, nt * TN)[0]}
                for kind, j, _, _ in sorted(loaded):
                    if kind != "x":
                        continue
                    cc, w_, h_, n_, ow, oh = plan["x_coords"](g, nt * TN, j, ms[live], r, s)
                    vals, st, _ = tma_im2col(src_x, plan["xmap"], w_, h_, n_, ow, oh, np.int64(cc))
                    xb[j] = vals
                    info["wraps"] = info.get("wraps", 0) + st["crosses_image"]
                    info["past_batch"] = info.get("past_batch", 0) + st["past_batch"]
                for mt in range(plan["tiles_m"]):
                    issued, _ = plan["stage_tx"](mt * BM, nt * TN)
                    sm = sms[mt * BM, nt * TN]
                    mA, mB = sm["mapA"].reshape(-1), sm["mapB"].reshape(-1)
                    # the layout's boxes: the issued ones' values, None (stale) for those not loaded
                    boxes = [(gyb[mt, j][live] if kind == "gy" else xb[j]) if b in issued else None
                             for b, (kind, j, _, _) in enumerate(plan["copies"])]
                    info["blocks_skipping"] = info.get("blocks_skipping", 0) + (len(issued) < nbox)
                    info["blocks_all"] = info.get("blocks_all", 0) + 1
                    info["stale_boxes"] = info.get("stale_boxes", 0) + nbox - len(issued)
                    sp_live = split_of[live]
                    assert (np.diff(sp_live) >= 0).all(), "the splits' k ranges are not increasing"
                    sps = list(range(plan["splits"]))
                    if len(live) == 0:               # every k-step of the tap skipped: the splits store zeros
                        regs = np.zeros((plan["splits"], 2, 128, TN // 2))
                    elif byte_level:
                        regs = byte_level_block(plan, sm, boxes, sp_live, byte_level, rep)
                    else:
                        # stale (a box not loaded, or bytes no copy wrote): NaN
                        stage = np.concatenate([np.full((len(live), ELEMS), np.nan) if b is None else
                                                b.reshape(len(live), -1) for b in boxes] +
                                               [np.full((len(live), 1), np.nan)], axis=1).astype(np.float64)
                        A = stage[:, np.where(mA >= 0, mA, nbox * ELEMS)].reshape(len(live), 2, KSTEPS, 64, 16)
                        B = stage[:, np.where(mB >= 0, mB, nbox * ELEMS)].reshape(len(live), KSTEPS, TN, 16)
                        # D[64 cw + m][n] of a split = sum over its live k-steps s, ks, k of
                        # A[s][cw][ks][m][k] B[s][ks][n][k]: one GEMM over (s, ks, k)
                        A = A.transpose(1, 3, 0, 2, 4).reshape(128, len(live) * PIX)
                        B = B.transpose(0, 1, 3, 2).reshape(len(live) * PIX, TN)
                        D = np.zeros((plan["splits"], 128, TN))
                        for sp in range(plan["splits"]):     # a split's live k-steps are consecutive
                            q = np.nonzero(sp_live == sp)[0]
                            if len(q):
                                with np.errstate(invalid="ignore"):
                                    D[sp] = A[:, q[0] * PIX:(q[-1] + 1) * PIX] @ B[q[0] * PIX:(q[-1] + 1) * PIX]
                        regs = rep.regs_of(D.reshape(plan["splits"], 2, 64, TN))
                    err = rep.epilogue(regs, sps, g, t, mt * BM, nt * TN)
                    if err:
                        return err
                    info["blocks"] = info.get("blocks", 0) + plan["splits"]
    return rep.finish(want)


def byte_level_block(plan, sm, boxes, sp_live, dtype, rep):
    """One (g, tap, m tile, n tile) block column through shared-memory bytes: each split (a CTA) starts
    from a fresh uint8 allocation of stale bytes (STALE: NaN in bf16 and fp16); its live k-steps i =
    0, 1, ... write stage i % kStages with the copies the block issues (boxes: the layout's, None for
    a box not loaded, whose bytes keep what the stage held: here always the stale NaN), wgmma reads
    A and B through the descriptors, the products of each instruction are accumulated into the
    threads' registers by the fragment layout. Returns the registers (splits, 2, 128, TN / 2)."""
    TN, S, SB, ring, size = plan["TN"], plan["stages"], plan["stage_bytes"], sm["ring"], sm["size"]
    regs = np.zeros((plan["splits"], 2, 128, TN // 2))
    for sp in range(plan["splits"]):
        sel = np.nonzero(sp_live == sp)[0]
        smem = np.full(size, STALE, np.uint8)
        for i, q in enumerate(sel):
            base = ring + (i % S) * SB
            for (_, _, off, swz), box in zip(plan["copies"], boxes):
                if box is None:
                    continue
                bits = np.ascontiguousarray(box[q].astype(np.uint16))          # (row, element), little-endian
                smem[box_bytes(base + off, swz)] = bits.view(np.uint8).reshape(-1)
            for cw in range(2):
                for da, db in zip(plan["desc_a"](base, cw), plan["desc_b"](base)):
                    a = value_of(smem[operand_bytes(da, 64, plan["trans"][0])].copy().view(np.uint16)[..., 0], dtype)
                    b = value_of(smem[operand_bytes(db, TN, plan["trans"][1])].copy().view(np.uint16)[..., 0], dtype)
                    with np.errstate(invalid="ignore"):
                        D = a @ b.T                        # (64, TN): sum over the instruction's 16 k
                    regs[sp, cw] += rep.regs_of(D)
    return regs


# ---------------------------------------------------------------------------------------------
# the TF32 NCHW form's replay

def make_data_nchw(case, rng):
    """gy (N, K, OH, OW), x (N, C, H, W): integers in [-8, 8], exact in tf32 (10 mantissa bits) and
    every sum exact in fp32 (|sum| <= 64 P < 2^24)."""
    gy = rng.integers(-8, 9, (case["N"], case["K"], case["OH"], case["OW"])).astype(np.float64)
    x = rng.integers(-8, 9, (case["N"], case["C"], case["H"], case["W"])).astype(np.float64)
    return gy, x


def read_mask_nchw(case):
    """(H, W): the input pixels the convolution reads through some tap and output (any image / channel)."""
    rows = np.zeros(case["H"], bool)
    cols = np.zeros(case["W"], bool)
    for r in range(case["KH"]):
        hi = np.arange(case["OH"]) * case["sh"] - case["pt"] + r * case["dh"]
        rows[hi[(hi >= 0) & (hi < case["H"])]] = True
    for s in range(case["KW"]):
        wi = np.arange(case["OW"]) * case["sw"] - case["pl"] + s * case["dw"]
        cols[wi[(wi >= 0) & (wi < case["W"])]] = True
    return rows[:, None] & cols[None, :]


def contributing_steps_nchw(plan, r, s):
    """Brute force over the row k-steps (n, ho, 32 columns from wo0 = 32 j) of tap (r, s): which hold
    an output pixel whose read is real input; whether the kernel's valid_range_dev rectangle (its int
    arithmetic: valid_range_dev_i32) is exactly those rows / columns; the rectangle."""
    OH, OW, spr = plan["OH"], plan["OW"], -(-plan["OW"] // RPIX)
    hi = np.arange(OH, dtype=np.int64) * plan["sh"] - plan["pt"] + r * plan["dh"]
    wi = np.arange(OW, dtype=np.int64) * plan["sw"] - plan["pl"] + s * plan["dw"]
    rows_ok, cols_ok = (hi >= 0) & (hi < plan["H"]), (wi >= 0) & (wi < plan["W"])
    oh0, oh1 = valid_range_dev_i32(r, plan["sh"], plan["dh"], plan["pt"], plan["H"], OH)
    ow0, ow1 = valid_range_dev_i32(s, plan["sw"], plan["dw"], plan["pl"], plan["W"], OW)
    exact = (np.array_equal(rows_ok, (np.arange(OH) >= oh0) & (np.arange(OH) < oh1)) and
             np.array_equal(cols_ok, (np.arange(OW) >= ow0) & (np.arange(OW) < ow1)))
    cpad = np.concatenate([cols_ok, np.zeros(spr * RPIX - OW, bool)]).reshape(spr, RPIX).any(1)
    contrib = np.broadcast_to(rows_ok[:, None] & cpad[None, :], (plan["N"], OH, spr)).reshape(-1)
    return contrib, exact, (oh0, oh1, ow0, ow1)


def skip_check_nchw(plan, ks, r, s, dead, contrib, ranges):
    """The dead predicate against the brute force: never skips a contributing k-step (a wrong
    result), and skips every k-step holding no contributing pixel (a live one would only add zeros;
    with whole 32-column blocks the predicate, its empty-range test included, is exact). Returns
    (error or None, k-steps left live with nothing to add)."""
    oh0, oh1, ow0, ow1 = ranges
    if (dead & contrib).any():
        i = int(np.argmax(dead & contrib))
        n, ho, wo0 = (int(v) for v in plan["row_step"](ks[i]))
        return (f"the dead predicate skips k-step {int(ks[i])} (image {n}, row {ho}, columns {wo0}..) of tap "
                f"({r}, {s}), which holds a pixel reading real input (rows [{oh0}, {oh1}) x cols [{ow0}, {ow1}))"), 0
    idle = ~dead & ~contrib
    if idle.any():
        i = int(np.argmax(idle))
        n, ho, wo0 = (int(v) for v in plan["row_step"](ks[i]))
        return (f"the dead predicate keeps k-step {int(ks[i])} (image {n}, row {ho}, columns {wo0}..) of tap "
                f"({r}, {s}) live though it holds no pixel of the valid rectangle rows [{oh0}, {oh1}) x cols "
                f"[{ow0}, {ow1})"), 0
    return None, int(idle.sum())


def _replay_case_nchw(case, TN, sms, mut, seed, info, byte_level, x_fill):
    plan = kernel_plan(case, TN, sms, mut, form="nchw")
    err, (split_of, tile_sms) = plan_checks(plan)
    if err:
        return err
    sm = tile_sms[0, 0]          # (the form's blocks all issue both copies: one stage model)
    rng = np.random.default_rng(seed)
    gy, x = make_data_nchw(case, rng)
    N, C, K, G, H, W = (case[k] for k in ("N", "C", "K", "G", "H", "W"))
    want = reference_gw(gy.transpose(0, 2, 3, 1).reshape(-1, K), x.transpose(0, 2, 3, 1), case)
    if x_fill is not None:
        x = np.where(read_mask_nchw(case)[None, None], x, x_fill)
    KW, taps, Kg, Cg = plan["KW"], plan["taps"], plan["Kg"], plan["Cg"]
    ks = np.arange(plan["steps"], dtype=np.int64)
    rep = Replay(plan)
    if byte_level:
        src_gy = gy.astype(np.float32).view(np.uint32).reshape(-1)
        src_x = x.astype(np.float32).view(np.uint32).reshape(-1)
    else:
        src_gy, src_x = gy.reshape(-1), x.reshape(-1)
    mA, mB = sm["mapA"].reshape(-1), sm["mapB"].reshape(-1)
    nel = sm["first"][-1]
    for g in range(G):
        gyb = {mt: tma_tiled_4d(src_gy, plan["gymap"], *plan["gy_coords"](g, mt * BM, ks))
               for mt in range(plan["tiles_m"])}
        for t in range(taps):
            r, s = divmod(t, KW)
            contrib, exact, ranges = contributing_steps_nchw(plan, r, s)
            if not exact:
                rows = valid_range_dev(r, plan["sh"], plan["dh"], plan["pt"], H, plan["OH"])
                cols = valid_range_dev(s, plan["sw"], plan["dw"], plan["pl"], W, plan["OW"])
                return (f"valid_range_dev's rectangle for tap ({r}, {s}) in the kernel's int arithmetic, rows "
                        f"[{ranges[0]}, {ranges[1]}) x cols [{ranges[2]}, {ranges[3]}), is not the set of pixels "
                        f"reading real input (rows [{rows[0]}, {rows[1]}) x cols [{cols[0]}, {cols[1]})): the "
                        f"k-steps outside it are skipped")
            if len(contrib) != len(ks):
                return (f"the kernel enumerates {len(ks)} k-steps, not the {len(contrib)} rows x 32-column blocks "
                        f"(N OH ceil(OW / 32)) the output has")
            dead = plan["dead"](ks, *ranges)
            err, idle = skip_check_nchw(plan, ks, r, s, dead, contrib, ranges)
            if err:
                return err
            live = np.nonzero(~dead)[0]
            info["steps"] = info.get("steps", 0) + len(ks)
            info["dead"] = info.get("dead", 0) + int(dead.sum())
            info["skippable"] = info.get("skippable", 0) + int((~contrib).sum())
            info["idle"] = info.get("idle", 0) + idle
            info["empty_taps"] = info.get("empty_taps", 0) + (ranges[0] >= ranges[1] or ranges[2] >= ranges[3])
            sp_live = split_of[live]
            assert (np.diff(sp_live) >= 0).all(), "the splits' k ranges are not increasing"
            for nt in range(plan["tiles_n"]):
                xb = tma_tiled_4d(src_x, plan["xmap"], *plan["x_coords"](g, nt * TN, ks[live], r, s))
                for mt in range(plan["tiles_m"]):
                    boxes = [gyb[mt][live] if kind == "gy" else xb for kind, _, _, _ in plan["copies"]]
                    if len(live) == 0:               # every k-step of the tap skipped: the splits store zeros
                        regs = np.zeros((plan["splits"], 2, 128, TN // 2))
                    elif byte_level:
                        regs = byte_level_block_nchw(plan, sm, boxes, sp_live, rng, rep)
                    else:
                        L = len(live)
                        stage = np.concatenate([b.reshape(L, -1) for b in boxes] + [np.full((L, 1), np.nan)], axis=1)
                        A = stage[:, np.where(mA >= 0, mA, nel)].reshape(L, 2, KSTEPS8, 64, K8)
                        B = stage[:, np.where(mB >= 0, mB, nel)].reshape(L, KSTEPS8, TN, K8)
                        # K-major A (m, k) and B (n, k): D[64 cw + m][n] = sum over (step, ks, k) A B
                        A = A.transpose(1, 3, 0, 2, 4).reshape(128, L * RPIX)
                        B = B.transpose(0, 1, 3, 2).reshape(L * RPIX, TN)
                        D = np.zeros((plan["splits"], 128, TN))
                        for sp in range(plan["splits"]):
                            q = np.nonzero(sp_live == sp)[0]
                            if len(q):
                                with np.errstate(invalid="ignore"):
                                    D[sp] = A[:, q[0] * RPIX:(q[-1] + 1) * RPIX] @ B[q[0] * RPIX:(q[-1] + 1) * RPIX]
                        regs = rep.regs_of(D.reshape(plan["splits"], 2, 64, TN))
                    err = rep.epilogue(regs, list(range(plan["splits"])), g, t, mt * BM, nt * TN)
                    if err:
                        return err
    return rep.finish(want)


def byte_level_block_nchw(plan, sm, boxes, sp_live, rng, rep):
    """One block column of the TF32 NCHW form through shared-memory bytes: each split's live k-steps
    i = 0, 1, ... write stage i % kStages (stale random bytes first) with their two boxes (fp32 bit
    patterns through the 128B swizzle); wgmma m64nTNk8 reads A and B through the K-major descriptors,
    takes the top 19 bits (tf32) of each 32-bit element, and the 64 x TN products of each instruction
    go to the registers by the fragment layout."""
    TN, S, SB, ring, size = plan["TN"], plan["stages"], plan["stage_bytes"], sm["ring"], sm["size"]
    regs = np.zeros((plan["splits"], 2, 128, TN // 2))
    smem = rng.integers(0, 256, size).astype(np.uint8)
    rows = [copy_rows(plan, kind) for kind, _, _, _ in plan["copies"]]
    wr = [[tma_box_bytes(ring + st * SB + off, r, E4).reshape(-1) for (_, _, off, _), r in zip(plan["copies"], rows)]
          for st in range(S)]
    rd = [([wgmma_k_major_bytes(d, 64, E4) for d in plan["desc_a"](ring + st * SB, 0)],
           [wgmma_k_major_bytes(d, 64, E4) for d in plan["desc_a"](ring + st * SB, 1)],
           [wgmma_k_major_bytes(d, TN, E4) for d in plan["desc_b"](ring + st * SB)]) for st in range(S)]

    def tf32(u):
        return (u & TF32_MASK).view(np.float32).astype(np.float64)

    for sp in range(plan["splits"]):
        sel = np.nonzero(sp_live == sp)[0]
        for i, q in enumerate(sel):
            st = i % S
            base = ring + st * SB
            smem[base:base + SB] = rng.integers(0, 256, SB).astype(np.uint8)
            for addr, box in zip(wr[st], boxes):
                smem[addr] = np.ascontiguousarray(box[q].astype(np.uint32)).view(np.uint8).reshape(-1)
            ra0, ra1, rbs = rd[st]
            for cw, ras in enumerate((ra0, ra1)):
                for ra, rb in zip(ras, rbs):
                    a = tf32(smem[ra].copy().view(np.uint32)[..., 0])      # (64, 8)
                    b = tf32(smem[rb].copy().view(np.uint32)[..., 0])      # (TN, 8)
                    regs[sp, cw] += rep.regs_of(a @ b.T)
    return regs


# ---------------------------------------------------------------------------------------------
# the dead-step predicate, the ring protocol, the host limits

def dead_predicate_check(rng, n, mut=None):
    """Random geometries: tma_wgrad_step_dead never skips a k-step holding a pixel that reads real
    input. Returns (error or None, steps, skipped, skippable)."""
    tot = skipped = skippable = 0
    for _ in range(n):
        case = random_geometry(rng)
        plan = kernel_plan(case, 128, 132, mut)
        ms = np.arange(plan["steps"], dtype=np.int64) * PIX
        for t in range(plan["taps"]):
            r, s = divmod(t, plan["KW"])
            contrib, exact, (oh0, oh1, ow0, ow1) = contributing_steps(plan, r, s)
            if not exact:
                return f"valid_range_dev wrong for tap ({r}, {s}) of {case}", tot, skipped, skippable
            dead = plan["dead"](ms, oh0, oh1, ow0, ow1)
            if (dead & contrib).any():
                i = int(np.argmax(dead & contrib))
                return (f"k-step {i} of tap ({r}, {s}) skipped but holds a contributing pixel, "
                        f"{describe(case)}"), tot, skipped, skippable
            tot += len(ms)
            skipped += int(dead.sum())
            skippable += int((~contrib).sum())
    return None, tot, skipped, skippable


def dead_predicate_check_nchw(rng, n, mut=None):
    """The TF32 NCHW form's dead predicate on random geometries the form takes (unit column stride,
    OW a multiple of 32), brute force (see skip_check_nchw: exact both ways). Returns (error or None,
    steps, skipped, skippable, taps with an empty valid range)."""
    tot = skipped = skippable = empty = 0
    for _ in range(n):
        case = random_geometry(rng, unit_sw=True, whole_blocks=True)
        plan = kernel_plan(case, 128, 132, mut, form="nchw")
        ks = np.arange(plan["steps"], dtype=np.int64)
        for t in range(plan["taps"]):
            r, s = divmod(t, plan["KW"])
            contrib, exact, ranges = contributing_steps_nchw(plan, r, s)
            if not exact:
                err = f"valid_range_dev wrong for tap ({r}, {s}) of {describe(case)}"
                return err, tot, skipped, skippable, empty
            if len(contrib) != len(ks):
                return (f"{len(ks)} k-steps, but {len(contrib)} rows x 32-column blocks in {describe(case)}", tot,
                        skipped, skippable, empty)
            dead = plan["dead"](ks, *ranges)
            err, _ = skip_check_nchw(plan, ks, r, s, dead, contrib, ranges)
            if err:
                return f"{err}, {describe(case)}", tot, skipped, skippable, empty
            tot += len(ks)
            skipped += int(dead.sum())
            skippable += int((~contrib).sum())
            empty += ranges[0] >= ranges[1] or ranges[2] >= ranges[3]
    return None, tot, skipped, skippable, empty


class Mbar:
    """PTX mbarrier: pending arrivals and tx-count of the current phase."""

    def __init__(self, count):
        self.count, self.pending, self.tx, self.phase = count, count, 0, 0

    def _complete(self):
        if self.pending == 0 and self.tx == 0:
            self.phase += 1
            self.pending = self.count

    def arrive(self):
        self.pending -= 1
        assert self.pending >= 0, "more arrivals than the barrier's count in one phase"
        self._complete()

    def expect_tx(self, b):
        self.tx += b
        assert abs(self.tx) <= TX_MAX

    def complete_tx(self, b):
        self.tx -= b
        self._complete()

    def parity_done(self, p):
        return (self.phase & 1) != p


def ring_check(plan, n_live, rng, schedules=40, tile=(0, 0)):
    """The producer thread of the block at tile (m0, n0), the copies it issues (landing at random
    later times; complete-tx: each copy's whole box) against the expect_tx it arms each stage with,
    and the 8 consumer warps (wgmma reads from issue until its wait_group retires it) on random
    interleavings."""
    issued, expect_tx = plan["stage_tx"](*tile)
    S, nbox = plan["stages"], len(issued)
    sizes = [copy_size(plan, plan["copies"][b][0]) for b in issued]
    for _ in range(schedules):
        full, empty = [Mbar(1) for _ in range(S)], [Mbar(8) for _ in range(S)]
        landed = [(-1, 0)] * S               # (k-step, copies landed) a stage holds
        copies = []                          # in flight: (stage, k-step, copy)
        prod = dict(i=0)
        cons = [dict(i=0, inflight=[], done=False) for _ in range(8)]
        while True:
            acts = []
            i = prod["i"]
            if i < n_live and (i < S or empty[i % S].parity_done(plan["empty_parity"](i))):
                acts.append(("p", None))
            acts += [("c", q) for q in range(len(copies))]
            for w, c in enumerate(cons):
                if c["done"]:
                    continue
                if c["i"] >= n_live or full[c["i"] % S].parity_done(plan["full_parity"](c["i"])):
                    acts.append(("w", w))
            if not acts:
                if prod["i"] == n_live and not copies and all(c["done"] for c in cons):
                    break
                return f"deadlock at producer step {prod['i']}, consumers at {[c['i'] for c in cons]}"
            kind, a = acts[rng.integers(len(acts))]
            if kind == "p":
                st = i % S
                full[st].expect_tx(expect_tx)
                full[st].arrive()
                copies += [(st, i, q) for q in range(nbox)]
                prod["i"] += 1
            elif kind == "c":
                st, k, q = copies.pop(a)
                for c in cons:
                    if any(s2 == st and k2 != k for k2, s2 in c["inflight"]):
                        return f"a copy of k-step {k} lands in stage {st} while a wgmma still reads it"
                landed[st] = (k, landed[st][1] + 1 if landed[st][0] == k else 1)
                full[st].complete_tx(sizes[q])
            else:
                c = cons[a]
                if c["i"] >= n_live:            # wgmma_wait<0>
                    c["inflight"], c["done"] = [], True
                    continue
                k, st = c["i"], c["i"] % S
                if landed[st] != (k, nbox):
                    return f"a consumer reads stage {st} for k-step {k} but it holds {landed[st]}"
                c["inflight"].append((k, st))
                c["inflight"] = c["inflight"][-1:]          # wgmma_wait<1>: all but the newest retired
                if k > 0:
                    empty[(k - 1) % S].arrive()
                c["i"] += 1
    return None


def random_pads(rng, th, tw):
    """A padding mode ('symmetric', 'same' or 'asymmetric') and its (pt, pb, pl, pr), each side at
    most the dilated kernel extent th / tw."""
    mode = str(rng.choice(["symmetric", "same", "asymmetric"]))
    if mode == "symmetric":
        ph, pw = int(rng.integers(0, th + 1)), int(rng.integers(0, tw + 1))
        return mode, (ph, ph, pw, pw)
    if mode == "same":
        return mode, (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    pt, pb = int(rng.integers(0, th + 1)), int(rng.integers(0, th + 1))
    pl, pr = int(rng.integers(0, tw + 1)), int(rng.integers(0, tw + 1))
    return mode, (pt, pb, pl, pr)


def runs_on_kernel(case, refused):
    """The shape has an output and launch_wgrad_tma runs it; else counts why not in refused."""
    if case["OH"] < 1 or case["OW"] < 1:
        return False
    why = host_refusal(case)
    if why:
        refused[why] = refused.get(why, 0) + 1
    return not why


def documented_requirements(case, TN, sms):
    """The limits a shape must meet for the kernel to be right: the tensor maps' documented limits
    (cuTensorMapEncodeTiled / Im2col; PTX 5.5), the grid, the int32 coordinates the kernel passes,
    and what the replay found the kernel needs (float2 stores: Cg even). Strings of those broken."""
    bad = []
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, sh, sw, dh, dw, pt, pl = (case[k] for k in ("KH", "KW", "sh", "sw", "dh", "dw", "pt", "pl"))
    OH, OW = case["OH"], case["OW"]
    P, Kg, Cg = N * OH * OW, K // G, C // G
    if C % G or K % G:
        return ["groups do not divide C and K"]
    for name, dims in (("gy", (K, P)), ("x", (C, W, H, N))):
        if not all(1 <= d <= 2 ** 32 for d in dims):
            bad.append(f"{name} globalDim {dims} not in [1, 2^32]")
    for name, st in (("gy", (K * E,)), ("x", (C * E, W * C * E, H * W * C * E))):
        if not all(v % 16 == 0 and v < 2 ** 40 for v in st):
            bad.append(f"{name} globalStrides {st} not multiples of 16 below 2^40")
    for lo, up in (im2col_corners(W, OW, pl, sw), im2col_corners(H, OH, pt, sh)):
        if not (-128 <= lo <= 127 and -128 <= up <= 127):
            bad.append(f"im2col corner ({lo}, {up}) outside [-128, 127] (rank 4)")
    if not (0 <= (KW - 1) * dw <= 255 and 0 <= (KH - 1) * dh <= 255):
        bad.append("im2col offsets outside [0, 255] (rank 4)")
    if not (1 <= sh <= 8 and 1 <= sw <= 8):
        bad.append("traversal strides (elementStrides) outside [1, 8]")
    if (-(-P // PIX) - 1) * PIX > 2 ** 31 - 1:
        bad.append("a k-step's first pixel, gy's int32 coordinate, overflows")
    if Kg < 8 or Cg < 8:
        bad.append("not the TMA kernel's shape (launch_wgrad runs the direct kernel)")
    plan = kernel_plan(case, TN, sms)
    bad += plan_problems(plan)
    if Cg % 2:
        bad.append(f"Cg = {Cg} odd: the epilogue's float2 stores at ws + kk Cg + c are misaligned for odd kk and the "
                   f"pair at c = Cg - 1 writes (kk + 1, 0)")
    return bad


def cross_check_host(rng, n=3000):
    """Shapes around the limits; everything launch_wgrad_tma accepts must meet the requirements."""
    leaks, accepted, refused = [], 0, {}
    for _ in range(n):
        G = int(rng.choice([1, 2, 3, 4, 8, 16]))
        Kg, Cg = (int(rng.integers(1, 40)) if rng.random() < 0.3 else 8 * int(rng.integers(1, 40)) for _ in range(2))
        KH, KW = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        dh, dw = (int(rng.integers(1, 4)) if rng.random() < 0.5 else int(rng.integers(1, 70)) for _ in range(2))
        sh, sw = (int(rng.integers(1, 4)) if rng.random() < 0.8 else int(rng.integers(1, 12)) for _ in range(2))
        pads = [int(rng.integers(0, 8)) if rng.random() < 0.5 else int(rng.integers(0, 300)) for _ in range(4)]
        case = make_case(int(rng.integers(1, 4)), int(rng.integers(1, 300)), int(rng.integers(1, 300)), G * Cg,
                         G * Kg, G, KH, KW, dh, dw, *pads, sh=sh, sw=sw)
        if not runs_on_kernel(case, refused):
            continue
        accepted += 1
        for TN in (128, 256):
            for sms in (132, 1):
                v = documented_requirements(case, TN, sms)
                if v:
                    leaks.append((case, TN, sms, v))
    return accepted, refused, leaks


I32 = (-2 ** 31, 2 ** 31 - 1)


def documented_requirements_nchw(case, TN, sms):
    """The TF32 NCHW form's requirements: the two rank-4 tiled maps' documented limits
    (cuTensorMapEncodeTiled; PTX 5.5.3: globalDim in [1, 2^32], globalStrides multiples of 16 below
    2^40, boxDim in [1, 256], boxDim[0] * 4 a multiple of 16 and, with SWIZZLE_128B, <= 128 bytes),
    the tensor coordinates (.s32) of every box the kernel issues and of the box's elements, the
    kernel's int arithmetic that forms them (valid_range_dev's intermediates included: its rectangle
    decides which k-steps run), the grid / shared memory / tx-count (plan_problems), and the kernel's
    own: unit column stride (the x box's 32 consecutive columns are the 32 outputs' reads only when
    sw == 1), whole 32-column blocks (a ragged block reads x the convolution never reads), Kg, Cg >= 8,
    Cg even (float2 stores). Returns a list of strings, each "what: detail"."""
    bad = []
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, sh, sw, dh, dw, pt, pl = (case[k] for k in ("KH", "KW", "sh", "sw", "dh", "dw", "pt", "pl"))
    OH, OW = case["OH"], case["OW"]
    Kg, Cg = K // G, C // G
    if C % G or K % G:
        return ["groups: do not divide C and K"]
    if Kg < 8 or Cg < 8:
        bad.append("shape: not the TMA kernel's (launch_wgrad runs the direct kernel)")
    plan = kernel_plan(case, TN, sms, form="nchw")
    for name in ("gy", "x"):
        m = plan[name + "map"]
        if not all(1 <= d <= 2 ** 32 for d in m["dims"]):
            bad.append(f"globalDim: {name} {m['dims']} not in [1, 2^32]")
        if not all(v % 16 == 0 for v in m["strides"]):
            bad.append(f"globalStrides: {name} {m['strides']} not multiples of 16")
        if not all(v < 2 ** 40 for v in m["strides"]):
            bad.append(f"globalStrides: {name} {m['strides']} not below 2^40")
        if not all(1 <= b <= 256 for b in m["box"]) or m["box"][0] * E4 % 16 or m["box"][0] * E4 > 128:
            bad.append(f"boxDim: {name} {m['box']} (each in [1, 256], inner 16-byte multiple <= 128 for SWIZZLE_128B)")
    # every coordinate the kernel passes (extremes over its k-steps, taps, tiles and groups), the
    # coordinates of the boxes' elements (x0 .. x0 + 31 along the columns), and the int products /
    # sums that form them, (C++ int: signed overflow is undefined; valid_range_dev computes in 64 bits)
    spr = plan["spr"]
    wo0_max, ho_max = (spr - 1) * RPIX, OH - 1
    ranges = {
        "gy column wo0": (0, wo0_max), "gy row ho": (0, ho_max), "image n": (0, N - 1),
        "gy column box end wo0 + 31": (RPIX - 1, wo0_max + RPIX - 1),
        "gy channel g Kg + m0": (0, (G - 1) * Kg + (plan["tiles_m"] - 1) * BM),
        "x channel g Cg + n0": (0, (G - 1) * Cg + (plan["tiles_n"] - 1) * TN),
        "s dw": (0, (KW - 1) * dw), "r dh": (0, (KH - 1) * dh), "ho sh": (0, ho_max * sh),
        "ho sh - pt": (-pt, ho_max * sh - pt),
        "x column wo0 - pl + s dw": (-pl, wo0_max - pl + (KW - 1) * dw),
        "x column box end wo0 - pl + s dw + 31": (-pl + RPIX - 1, wo0_max - pl + (KW - 1) * dw + RPIX - 1),
        "x row ho sh - pt + r dh": (-pt, ho_max * sh - pt + (KH - 1) * dh),
        # (valid_range_dev's intermediates are 64-bit: no int32 requirement)
        "tma_wgrad_row_step rem": (0, OH * spr - 1),
    }
    for what, (lo, hi) in ranges.items():
        if lo < I32[0] or hi > I32[1]:
            bad.append(f"int32: {what} reaches {lo if lo < I32[0] else hi}")
    if sw != 1:
        bad.append(f"unit column stride: sw = {sw} (the x box reads columns wo0 - pl + s dw + j, j < 32)")
    if OW % RPIX:
        bad.append(f"ragged block: OW % 32 = {OW % RPIX} (its columns past OW read x the convolution never reads, "
                   f"times gy's zero fill: 0 x NaN / Inf reaches grad_weight)")
    bad += [f"plan: {b}" for b in plan_problems(plan)]
    if Cg % 2:
        bad.append(f"float2: Cg = {Cg} odd (the epilogue's float2 stores)")
    return bad


HUGE = (1, 2, 3, 31, 2 ** 20 + 1, 2 ** 29 + 1, 2 ** 30 - 3, 2 ** 30, 2 ** 30 + 7, 2 ** 31 - 40, 2 ** 31 - 1)


def huge_case_nchw(rng):
    """A small tensor (N 1, C = K = 8, H 1-5, W 4-8) whose strides, dilations and paddings reach
    int32's end, the bottom / right padding chosen so that OH is 1-3 and OW 32 or 64 (the shapes
    the host's coordinate_fits judges): every int argument below 2^31, as conv2d_backward_weight's
    to_int checks. None when no such padding exists."""
    H, W = int(rng.integers(1, 6)), 4 * int(rng.integers(1, 3))
    KH, KW = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh = int(rng.choice(HUGE))
    dh, dw = (int(rng.choice(HUGE)) if k > 1 else 1 for k in (KH, KW))
    pt, pl = (int(rng.choice((0, 1, 5) + HUGE[4:])) for _ in range(2))
    oh, ow = int(rng.integers(1, 4)), RPIX * int(rng.integers(1, 3))
    pb = (oh - 1) * sh + dh * (KH - 1) + 1 - H - pt + int(rng.integers(0, min(sh, 4)))
    pr = ow + dw * (KW - 1) - W - pl
    if min(pb, pr) < 0 or max(pb, pr, (KH - 1) * dh, (KW - 1) * dw) >= 2 ** 31:
        return None
    return make_case(1, H, W, 8, 8, 1, KH, KW, dh, dw, pt, pb, pl, pr, sh=sh)


def cross_check_host_nchw(rng, n=3000, mut=None):
    """Random shapes around the limits (W / OW not multiples of 4 or of 32, column strides, odd Cg,
    big paddings and dilations, many groups; one draw in 8 from huge_case_nchw: coordinates near
    2^31): everything host_refusal(form='nchw') accepts must meet documented_requirements_nchw.
    With a host mutant, only shapes the real host refuses count: a leak there is the mutant's.
    Returns (accepted, refused counts, leaks)."""
    leaks, accepted, refused = [], 0, {}
    for _ in range(n):
        if rng.random() < 0.125:
            case = huge_case_nchw(rng)
            if case is not None:
                why = host_refusal(case, "nchw", mut)
                if why:
                    refused[why] = refused.get(why, 0) + 1
                    continue
                accepted += 1
                if mut is None or host_refusal(case, "nchw"):
                    v = documented_requirements_nchw(case, 128, 132)
                    if v:
                        leaks.append((case, 128, 132, v))
            continue
        G = int(rng.choice([1, 2, 3, 4, 8, 16]))
        Kg, Cg = (int(rng.integers(1, 40)) if rng.random() < 0.4 else 8 * int(rng.integers(1, 40)) for _ in range(2))
        KH, KW = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        dh, dw = (int(rng.integers(1, 4)) if rng.random() < 0.5 else int(rng.integers(1, 70)) for _ in range(2))
        sh = int(rng.integers(1, 4)) if rng.random() < 0.8 else int(rng.integers(1, 12))
        sw = 1 if rng.random() < 0.6 else int(rng.integers(1, 4))
        pads = [int(rng.integers(0, 8)) if rng.random() < 0.5 else int(rng.integers(0, 300)) for _ in range(4)]
        W = int(rng.integers(1, 300))
        if rng.random() < 0.6:
            W = 4 * int(rng.integers(1, 75))
        case = make_case(int(rng.integers(1, 4)), int(rng.integers(1, 300)), W, G * Cg, G * Kg, G, KH, KW, dh, dw,
                         *pads, sh=sh, sw=sw)
        if rng.random() < 0.6 and case["OW"] >= 1 and sw == 1:    # often a width the host takes
            case = make_case(case["N"], case["H"], W, G * Cg, G * Kg, G, KH, KW, dh, dw, pads[0], pads[1], pads[2],
                             pads[3] + (-case["OW"]) % RPIX, sh=sh, sw=sw)
        if case["OH"] < 1 or case["OW"] < 1:
            continue
        why = host_refusal(case, "nchw", mut)
        if why:
            refused[why] = refused.get(why, 0) + 1
            continue
        accepted += 1
        if mut is not None and not host_refusal(case, "nchw"):
            continue
        for TN in (128, 256):
            for sms in (132, 1):
                v = documented_requirements_nchw(case, TN, sms)
                if v:
                    leaks.append((case, TN, sms, v))
    return accepted, refused, leaks


def extreme_shapes_nchw():
    """Shapes at int32's and the maps' ends that random draws reach rarely or never: (label, case,
    small: the replay can run it)."""
    mc = make_case
    big = 2 ** 31 - 1
    return [
        # a 1.5 TiB input: C H W 4 >= 2^40 (the x map's last stride); P = 2^30
        ("x stride 2^40", mc(1, 3 * 2 ** 10, 2 ** 20, 128, 8, 1, 1, 1, 1, 1, 0, 0, 0, 0, sh=3), False),
        # a tiny input with a 2^31 - 2 bottom padding and row stride 2^20: OH 2049, the last row's
        # ho sh = 2^31 (and the x row coordinate) past int32: coordinate_fits refuses it
        ("bottom padding 2^31 - 2", mc(1, 4, 4, 8, 8, 1, 1, 1, 1, 1, 0, 2 ** 31 - 2, 0, 28, sh=2 ** 20), True),
        # (KH - 1) dh = 2^31 + 4: r dh past int32 (OH 1 through the paddings)
        ("dilation 2^30 + 2, 3 rows", mc(1, 4, 4, 8, 8, 1, 3, 1, 2 ** 30 + 2, 1, 2 ** 30, 2 ** 30 + 4, 0, 28), True),
        # at coordinate_fits' limit: (OH - 1) sh + (KH - 1) dh + 32 = 2^31 - 1 (OH 2048, sh 2^20), the
        # last row's x coordinate 2^31 - 32
        ("rows at int32's end", mc(1, 4, 4, 8, 8, 1, 2, 1, 2 ** 20 - 33, 1, 0, 2 ** 31 - 36, 0, 28, sh=2 ** 20), True),
        # at the column limit: (OW - 1) + (KW - 1) dw + 32 = 2^31 - 1 (OW 32, dw 2^31 - 64)
        ("columns at int32's end", mc(1, 3, 4, 8, 8, 1, 1, 2, 1, big - 63, 0, 0, 0, big - 35), True),
        # coordinate_fits takes these (one output row, or pt = sh = 2^30 - 1 <= INT_MAX / 2), but
        # valid_range_dev's cdiv, (in - off) + s - 1 = H + pt + sh - 1 - r dh, passes 2^31 for a tap
        # whose rows read real input: the wrapped int gives an empty row range and the kernel skips
        # every k-step of the tap (grad_weight's tap stays 0)
        ("row stride 2^31 - 1", mc(1, 4, 4, 8, 8, 1, 2, 1, 1, 1, 1, 0, 0, 28, sh=big), True),
        ("top padding and row stride 2^30 - 1", mc(1, 4, 4, 8, 8, 1, 1, 1, 1, 1, 2 ** 30 - 1, 0, 0, 28,
                                                    sh=2 ** 30 - 1), True),
    ]


def extreme_caught(mut):
    """A host mutant takes an extreme shape the real host refuses and that breaks a requirement."""
    for label, case, _ in extreme_shapes_nchw():
        if host_refusal(case, "nchw") and not host_refusal(case, "nchw", mut) \
                and documented_requirements_nchw(case, 128, 132):
            return label
    return None


# ---------------------------------------------------------------------------------------------
# cases

def out_size(n, lo, hi, d, k, s):
    return (n + lo + hi - d * (k - 1) - 1) // s + 1


def make_case(N, H, W, C, K, G, KH, KW, dh, dw, pt, pb, pl, pr, mode="given", sh=1, sw=1):
    return dict(N=N, H=H, W=W, C=C, K=K, G=G, KH=KH, KW=KW, dh=dh, dw=dw, pt=pt, pb=pb, pl=pl, pr=pr, sh=sh, sw=sw,
                OH=out_size(H, pt, pb, dh, KH, sh), OW=out_size(W, pl, pr, dw, KW, sw), mode=mode)


def torch_case(xs, ws, stride=1, padding=0, dilation=1, groups=1):
    """A case from conv2d's arguments (padding 'same': total d (k - 1), left total // 2)."""
    N, C, H, W = xs
    K, _, KH, KW = ws
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)   # noqa: E731
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    if padding == "same":
        th, tw = dh * (KH - 1), dw * (KW - 1)
        pt, pb, pl, pr = th // 2, th - th // 2, tw // 2, tw - tw // 2
    else:
        (ph, pw) = pair(padding)
        pt, pb, pl, pr = ph, ph, pw, pw
    return make_case(N, H, W, C, K, groups, KH, KW, dh, dw, pt, pb, pl, pr, "test", sh, sw)


def describe(c):
    return (f"N{c['N']} {c['H']}x{c['W']} C{c['C']} K{c['K']} G{c['G']} k{c['KH']}x{c['KW']} d({c['dh']},{c['dw']}) "
            f"s({c['sh']},{c['sw']}) pad(t{c['pt']} b{c['pb']} l{c['pl']} r{c['pr']}) -> {c['OH']}x{c['OW']}")


def work(case, TN, sms):
    p = kernel_plan(case, TN, sms)
    return p["G"] * p["taps"] * p["tiles_m"] * p["tiles_n"] * p["steps"] * BM * TN * PIX


def random_geometry(rng, unit_sw=False, whole_blocks=False):
    """A random conv geometry for the predicate check (channels irrelevant; unit_sw: sw = 1;
    whole_blocks: the right padding raised to make OW a multiple of 32, as launch_wgrad_tma<float>
    requires)."""
    while True:
        N = int(rng.integers(1, 5))
        H, W = (int(rng.integers(1, 130)) if rng.random() < 0.3 else int(rng.integers(1, 41)) for _ in range(2))
        KH, KW = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        dh, dw = (int(rng.integers(1, 4)) if rng.random() < 0.5 else int(rng.integers(1, 19)) for _ in range(2))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        sw = 1 if unit_sw else sw
        pt, pb = (int(rng.integers(0, dh * (KH - 1) + 3)) for _ in range(2))
        pl, pr = (int(rng.integers(0, dw * (KW - 1) + 3)) for _ in range(2))
        case = make_case(N, H, W, 8, 8, 1, KH, KW, dh, dw, pt, pb, pl, pr, "given", sh, sw)
        if whole_blocks and case["OW"] >= 1:
            case = make_case(N, H, W, 8, 8, 1, KH, KW, dh, dw, pt, pb, pl, pr + (-case["OW"]) % RPIX, "given", sh, sw)
        if case["OH"] >= 1 and case["OW"] >= 1:
            return case


def random_case(rng, cap, refused):
    """A random problem launch_wgrad_tma runs (draws it refuses are counted), work <= cap."""
    while True:
        big = rng.random() < 0.35           # many pixels, a small kernel: several splits
        N, H, W = int(rng.integers(1, 4)), int(rng.integers(1, 41)), int(rng.integers(1, 41))
        if big:
            N, H, W = int(rng.integers(2, 4)), int(rng.integers(24, 41)), int(rng.integers(24, 41))
        G = int(rng.integers(1, 4))
        ks = [k for k in range(8, 273, 8) if k % G == 0 and k // G >= 8]
        C, K = int(rng.choice(ks)), int(rng.choice(ks))
        KH, KW = (int(rng.integers(1, 4 if big else 8)) for _ in range(2))
        small = rng.random() < 0.6
        dh, dw = (int(rng.integers(1, 4 if small else 19)) for _ in range(2))
        sh, sw = (int(rng.integers(1, 4)) if rng.random() < 0.5 else 1 for _ in range(2))
        mode, (pt, pb, pl, pr) = random_pads(rng, dh * (KH - 1), dw * (KW - 1))
        case = make_case(N, H, W, C, K, G, KH, KW, dh, dw, pt, pb, pl, pr, mode, sh, sw)
        if not runs_on_kernel(case, refused):
            continue
        TN = tile_n_default(case) if rng.random() < 0.7 else int(rng.choice([128, 256]))
        sms = int(rng.choice([132, 114, 8, 1]))
        if work(case, TN, sms) <= cap:
            return case, TN, sms


def fixed_cases():
    """(case, TN, sms): edges, and tests/ops/test_conv.py::test_cuda_tma_wgrad's shapes."""
    mc = make_case
    out = [
        (mc(1, 1, 1, 8, 8, 1, 1, 1, 1, 1, 0, 0, 0, 0), 128, 132),            # P = 1: 63 pixels past the batch
        (mc(3, 3, 5, 24, 24, 3, 3, 3, 1, 1, 1, 1, 1, 1), 128, 132),          # Kg = Cg = 8, G = 3, steps cross images
        (mc(2, 9, 11, 80, 144, 2, 3, 2, 2, 3, 1, 3, 2, 0), 128, 132),        # Kg 72, Cg 40, asymmetric, dilated
        (mc(1, 6, 7, 256, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1), 256, 132),         # Cg = 256: TN 256 exactly
        (mc(1, 5, 6, 264, 136, 1, 2, 3, 1, 2, 0, 1, 2, 2), 256, 132),        # Cg 264 (two 256 tiles), Kg 136
        (mc(1, 5, 6, 264, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1), 128, 132),         # Cg 264 on 128-column tiles
        (mc(1, 5, 5, 8, 8, 1, 3, 3, 18, 18, 18, 18, 18, 18), 128, 132),      # taps with no valid row at all
        (mc(2, 33, 35, 16, 24, 1, 3, 3, 18, 18, 18, 18, 18, 18), 128, 132),  # dilation 18 'same': dead k-steps
        (mc(2, 1, 37, 16, 16, 1, 1, 5, 1, 3, 0, 0, 6, 6), 128, 8),           # H = 1
        (mc(3, 40, 1, 16, 16, 1, 7, 1, 2, 1, 6, 6, 0, 0), 128, 132),         # W = 1
        (mc(2, 17, 19, 24, 40, 1, 3, 3, 1, 1, 1, 1, 1, 1, sh=2, sw=2), 128, 132),
        (mc(2, 20, 21, 32, 40, 1, 3, 3, 2, 2, 2, 2, 2, 2, sh=3, sw=3), 128, 132),
        (mc(1, 19, 23, 16, 8 * 3, 1, 2, 4, 3, 2, 0, 3, 5, 1, sh=3, sw=2), 128, 132),
        (mc(3, 23, 23, 16, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1), 128, 132),        # 25 k-steps, 3 splits (ragged)
        (mc(1, 4, 4, 16, 16, 1, 1, 1, 1, 1, 5, 5, 5, 5), 128, 132),          # 1x1 with pads 5: padding ring
    ]
    from tests.ops.test_conv import TMA_WGRAD_CASES as tests  # test_cuda_tma_wgrad's shapes
    for xs, ws, kw in tests:
        case = torch_case(xs, ws, **kw)
        if host_refusal(case) is not None:  # (the kernel never runs it: the test checks the fallback)
            continue
        for TN in sorted({128, 256, tile_n_default(case)}):
            out.append((case, TN, 132))
    return out


BYTE_CASES = [   # (case, TN, sms, dtype): end to end through shared-memory bytes
    (make_case(1, 3, 5, 16, 24, 1, 2, 2, 1, 2, 1, 0, 1, 1), 128, 132, "bf16"),
    (make_case(2, 5, 6, 48, 144, 3, 3, 2, 2, 1, 2, 1, 0, 1), 128, 132, "fp16"),
    (make_case(1, 4, 5, 264, 8, 1, 2, 2, 1, 1, 1, 0, 0, 1, sh=2, sw=1), 256, 132, "bf16"),
    (make_case(3, 5, 9, 16, 16, 1, 1, 2, 1, 4, 0, 0, 2, 2), 128, 132, "bf16"),     # 3 splits
    (make_case(1, 6, 7, 16, 16, 1, 3, 3, 3, 3, 3, 3, 3, 3, sh=2, sw=2), 128, 1, "fp16"),
    # Kg = Cg = 136: m tiles with a_boxes 2 and 1, n tiles with b_boxes 2 and 1 (TN 128) / 3 (TN 256)
    (make_case(1, 3, 4, 136, 136, 1, 2, 1, 1, 1, 0, 0, 0, 0), 128, 132, "fp16"),
    (make_case(1, 3, 4, 136, 136, 1, 1, 2, 1, 1, 0, 0, 1, 0), 256, 132, "bf16"),
]


# deliberate mistakes: each must be caught by some probe (replays, the predicate check, the ring)
MUTANTS = ["lbo_sbo_swapped", "ks_1024", "offsets_hw_order", "b_at_8192", "no_trans", "split_range_floor",
           "dead_row_off_by_one", "dead_ignores_image", "ws_g_taps_swapped", "ws_row_kg", "x_loads_minus1",
           "a_half_4096", "frag_row_h", "gy_channel_no_group", "x_channel_no_group", "reduce_tap_major",
           "base_unstrided", "corners_unstrided", "expect_tx_tn128", "empty_parity", "bx_decode_swapped",
           "by_decode_splits", "x_map_no_swizzle", "expect_tx_stage_bytes", "x_loads_all_tx_reduced", "a_boxes_floor"]


def probes():
    mc = make_case
    return [
        (mc(2, 9, 11, 80, 144, 2, 3, 2, 2, 3, 1, 3, 2, 0), 128, 132),                       # G 2, Kg != Cg
        (mc(3, 23, 23, 16, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1), 128, 132),                       # 3 ragged splits
        (mc(2, 20, 13, 16, 16, 1, 3, 3, 6, 6, 6, 6, 6, 6), 128, 132),                       # dead k-steps
        (mc(2, 17, 19, 24, 40, 1, 3, 3, 1, 1, 1, 1, 1, 1, sh=2, sw=3), 128, 132),           # strided
        (mc(1, 5, 6, 264, 16, 1, 2, 2, 1, 1, 1, 0, 0, 1), 256, 132),                        # TN 256
        (mc(1, 8, 16, 16, 16, 1, 2, 1, 3, 1, 3, 0, 0, 0), 128, 132),                        # a k-step ending on oh0
    ]


def mutant_caught(mut, rng):
    """Which probe sees the deliberate mistake (None: missed)."""
    for i, (case, TN, sms) in enumerate(probes()):
        if replay_case(case, TN, sms, mut=mut, seed=11):
            return f"replay of probe {i}"
    err, *_ = dead_predicate_check(np.random.default_rng(3), 300, mut)
    if err:
        return "the dead-step brute force"
    for TN in (128, 256):
        plan = kernel_plan(probes()[0][0], TN, 132, mut)
        for n in (3, 7, 13):
            if ring_check(plan, n, rng, schedules=20, tile=block_tiles(plan)[0]):
                return "the ring protocol"
    return None


# ---------------------------------------------------------------------------------------------
# the TF32 NCHW form's cases and mutants

def work_nchw(case, TN, sms):
    p = kernel_plan(case, TN, sms, form="nchw")
    return p["G"] * p["taps"] * p["tiles_m"] * p["tiles_n"] * p["steps"] * BM * TN * RPIX


def fixed_cases_nchw():
    """(case, TN, sms) for the TF32 NCHW form: edges, and test_cuda_tma_wgrad's shapes it takes.
    Every one has W a multiple of 4 and OW of 32 (the right padding or W chosen for it): the host
    takes them all (checked)."""
    mc = make_case
    out = [
        (mc(1, 1, 4, 8, 8, 1, 1, 1, 1, 1, 0, 0, 0, 28), 128, 132),            # one k-step, 28 columns of zero fill
        (mc(2, 5, 32, 16, 24, 1, 3, 3, 1, 1, 1, 1, 1, 1), 128, 132),          # Kg 24, Cg 16
        (mc(2, 9, 60, 20, 18, 2, 3, 2, 2, 3, 1, 3, 2, 5), 128, 132),          # G 2, Kg 9 (odd), Cg 10, OW 64: spr 2
        (mc(2, 6, 32, 42, 36, 3, 3, 3, 1, 2, 1, 2, 2, 2), 128, 8),            # G 3, Kg 12, Cg 14
        (mc(1, 6, 32, 256, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1), 256, 132),         # Cg = 256: TN 256 exactly
        (mc(1, 5, 32, 264, 136, 1, 2, 3, 1, 2, 0, 1, 2, 2), 256, 132),        # Cg 264 (two tiles), Kg 136 (two)
        (mc(1, 5, 32, 264, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1), 128, 132),         # Cg 264 on 128-column tiles
        (mc(2, 33, 32, 16, 24, 1, 3, 3, 18, 18, 18, 18, 18, 18), 128, 132),   # dilation 18 'same': dead k-steps
        # rows: taps r = 0, 2 read only padding (empty row ranges); columns: tap 0 reads only left
        # padding (ow0 == ow1 == OW), tap 3 only right padding (ow0 == ow1 == 0), taps 1, 2 output
        # columns 18-21 / 0-3
        (mc(1, 5, 4, 8, 8, 1, 3, 4, 18, 18, 18, 18, 36, 46), 128, 132),
        (mc(2, 1, 64, 16, 16, 1, 1, 5, 1, 3, 0, 0, 6, 6), 128, 8),            # H = 1, OW 64
        (mc(3, 40, 4, 16, 16, 1, 7, 1, 2, 1, 6, 6, 0, 28), 128, 132),         # W = 4: 28 columns of right padding
        (mc(2, 17, 32, 24, 40, 1, 3, 3, 1, 1, 1, 1, 1, 1, sh=2), 128, 132),   # row stride 2
        (mc(2, 20, 32, 32, 40, 1, 3, 3, 2, 2, 2, 2, 2, 2, sh=3), 128, 132),   # row stride 3, dilated
        (mc(1, 19, 24, 16, 24, 1, 2, 4, 3, 2, 0, 3, 5, 9, sh=3), 128, 132),   # asymmetric, row stride 3
        (mc(3, 23, 64, 16, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1), 128, 132),         # 138 k-steps, 17 splits
        (mc(1, 4, 4, 16, 16, 1, 1, 1, 1, 1, 5, 5, 6, 22), 128, 132),          # padding ring: negative coordinates
        (mc(1, 3, 128, 8, 8, 1, 1, 3, 1, 1, 0, 0, 1, 1), 128, 1),             # OW 128: 4 blocks a row
        (mc(1, 2, 8, 8, 8, 1, 1, 1, 1, 1, 40, 40, 40, 48), 128, 132),         # pads 40: blocks 0 and 2 only padding
        (mc(1, 3, 8, 8, 8, 1, 1, 1, 1, 1, 0, 0, 31, 25), 128, 132),           # valid columns 31-38 across two blocks
        # x columns 32-39 and 72-79 and rows 1, 2, 4, 5 never read (section 15's NaN)
        (mc(1, 7, 112, 8, 8, 1, 1, 3, 1, 40, 0, 0, 0, 0, sh=3), 128, 132),
        (mc(2, 9, 36, 8, 8, 1, 2, 3, 4, 17, 0, 0, 2, 28), 128, 132),          # row gaps, dilation 17, pads 2 / 28
    ]
    from tests.ops.test_conv import TMA_WGRAD_CASES as tests
    for xs, ws, kw in tests:
        case = torch_case(xs, ws, **kw)
        if host_refusal(case, "nchw") is not None:
            continue
        for TN in sorted({128, 256, tile_n_default(case)}):
            out.append((case, TN, 132))
    return out


def random_case_nchw(rng, cap, refused):
    """A random problem launch_wgrad_tma<float> runs (refusals counted), work <= cap: N 1-3, H / W
    1-40, any channel counts with Kg >= 8 and Cg even >= 8, groups 1-3, kernels 1-7, dilation 1-18,
    row stride 1-3, column stride 1, symmetric / 'same' / asymmetric padding (the right padding
    raised to make OW a multiple of 32 on most draws), TN 128 / 256, sms 132 / 114 / 8 / 1."""
    while True:
        big = rng.random() < 0.3
        N, H, W = int(rng.integers(1, 4)), int(rng.integers(1, 41)), 4 * int(rng.integers(1, 11))
        if big:
            N, H, W = int(rng.integers(2, 4)), int(rng.integers(24, 41)), 4 * int(rng.integers(8, 11))
        if rng.random() < 0.08:
            W = int(rng.integers(1, 41))
        G = int(rng.integers(1, 4))
        Kg = int(rng.integers(8, 100)) if rng.random() < 0.8 else int(rng.integers(100, 140))
        Cg = 2 * int(rng.integers(4, 50)) if rng.random() < 0.8 else 2 * int(rng.integers(100, 140))
        if rng.random() < 0.05:
            Cg += 1
        KH, KW = (int(rng.integers(1, 4 if big else 8)) for _ in range(2))
        small = rng.random() < 0.6
        dh, dw = (int(rng.integers(1, 4 if small else 19)) for _ in range(2))
        sh = int(rng.integers(1, 4)) if rng.random() < 0.5 else 1
        sw = 1 if rng.random() < 0.95 else 2
        mode, (pt, pb, pl, pr) = random_pads(rng, dh * (KH - 1), dw * (KW - 1))
        ow = out_size(W, pl, pr, dw, KW, sw)
        if rng.random() < 0.9 and ow >= 1:
            pr += (-ow) % RPIX
        case = make_case(N, H, W, G * Cg, G * Kg, G, KH, KW, dh, dw, pt, pb, pl, pr, mode, sh, sw)
        if case["OH"] < 1 or case["OW"] < 1:
            continue
        why = host_refusal(case, "nchw")
        if why:
            refused[why] = refused.get(why, 0) + 1
            continue
        TN = tile_n_default(case) if rng.random() < 0.6 else int(rng.choice([128, 256]))
        sms = int(rng.choice([132, 114, 8, 1]))
        if work_nchw(case, TN, sms) <= cap:
            return case, TN, sms


# shapes launch_wgrad_tma<float> refuses, with the refusal expected (host_refusal(form='nchw'))
REFUSED_NCHW = [
    # OW 4: a ragged block whose columns 4-31 would read x columns 4-17 and 22-35, never read by the
    # convolution, against gy's zero fill (section 15 replays it regardless: a NaN there leaks)
    (make_case(1, 3, 40, 8, 8, 1, 1, 3, 1, 18, 0, 0, 0, 0), "rows not 16-byte or widths not whole 32-column blocks"),
    (make_case(1, 3, 100, 8, 8, 1, 1, 3, 1, 1, 0, 0, 1, 1), "rows not 16-byte or widths not whole 32-column blocks"),
    (make_case(1, 5, 30, 8, 8, 1, 3, 3, 1, 1, 1, 1, 1, 3), "rows not 16-byte or widths not whole 32-column blocks"),
    (make_case(1, 5, 32, 18, 16, 2, 3, 3, 1, 1, 1, 1, 1, 1), "odd input channels a group"),
    (make_case(1, 5, 64, 8, 8, 1, 3, 3, 1, 1, 1, 1, 1, 1, sw=2), "outside the maps' limits"),
]


BYTE_CASES_NCHW = [   # (case, TN, sms): end to end through shared-memory bytes, fp32 bits read as tf32
    (make_case(1, 3, 32, 16, 24, 1, 2, 2, 1, 2, 1, 0, 1, 1), 128, 132),
    (make_case(2, 4, 60, 20, 18, 2, 2, 2, 2, 3, 1, 1, 2, 5), 128, 132),          # G 2, Kg 9, Cg 10, spr 2
    (make_case(1, 4, 4, 264, 8, 1, 2, 1, 1, 1, 1, 0, 0, 28, sh=2), 256, 132),    # TN 256, two n tiles
    (make_case(3, 3, 32, 16, 16, 1, 1, 3, 1, 4, 0, 0, 4, 4), 128, 132),          # 2 splits
    (make_case(1, 6, 12, 16, 136, 1, 3, 1, 3, 1, 3, 3, 0, 20, sh=2), 128, 1),    # Kg 136: two m tiles
]


# (nchw_spr_floor, spr = OW / 32, is gone: equivalent to the kernel's ceiling on the whole blocks
# launch_wgrad_tma<float> takes)
MUTANTS_NCHW = ["nchw_ks16", "nchw_b_at_8192", "nchw_x_row_no_tap", "nchw_x_col_no_pad", "nchw_x_coords_hw_swapped",
                "nchw_gy_box_rows_64", "nchw_wo0_step_16", "nchw_dead_ignores_cols", "nchw_dead_cols_last_inclusive",
                "nchw_row_step_ow", "nchw_gy_channel_no_group", "nchw_x_channel_no_group", "nchw_expect_tx_tn128",
                "nchw_host_no_w4", "nchw_host_no_ow32", "nchw_host_any_sw", "nchw_host_odd_cg", "nchw_host_no_coords"]


def probes_nchw():
    mc = make_case
    return [
        (mc(2, 9, 60, 20, 18, 2, 3, 2, 2, 3, 1, 3, 2, 5), 128, 132),         # G 2, Kg 9, Cg 10, spr 2
        (mc(3, 11, 64, 16, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1), 128, 132),        # 66 k-steps, 8 splits
        (mc(1, 3, 8, 8, 8, 1, 1, 1, 1, 1, 0, 0, 31, 25), 128, 132),          # valid columns 31-38 across two blocks
        (mc(2, 10, 32, 16, 16, 1, 3, 3, 6, 6, 6, 6, 6, 6), 128, 132),        # dead k-steps (rows)
        (mc(1, 5, 32, 264, 16, 1, 2, 2, 1, 1, 1, 0, 1, 0), 256, 132),        # TN 256
        (mc(1, 2, 8, 8, 8, 1, 1, 1, 1, 1, 40, 40, 40, 48), 128, 132),        # blocks 0 and 2 only padding
    ]


def mutant_caught_nchw(mut, rng):
    """Which probe sees a deliberate mistake in the TF32 NCHW form (None: missed). A host mutant:
    a shape it takes, the real host refuses and a requirement forbids (random draws, extreme shapes)."""
    if mut.startswith("nchw_host_"):
        acc, _, leaks = cross_check_host_nchw(np.random.default_rng(4), 400, mut)
        if leaks:
            return f"the host cross-check ({len(leaks)} leaks in {acc} accepted)"
        label = extreme_caught(mut)
        return f"the extreme shape {label}" if label else None
    for i, (case, TN, sms) in enumerate(probes_nchw()):
        if replay_case(case, TN, sms, mut=mut, seed=11, form="nchw"):
            return f"replay of probe {i}"
    err, *_ = dead_predicate_check_nchw(np.random.default_rng(3), 200, mut)
    if err:
        return "the dead-step brute force"
    for TN in (128, 256):
        plan = kernel_plan(probes_nchw()[0][0], TN, 132, mut, form="nchw")
        for n in (3, 7, 13):
            if ring_check(plan, n, rng, schedules=20):
                return "the ring protocol"
    return None


# ---------------------------------------------------------------------------------------------

def check_mutants(label, mutants, caught, probe_cases, form, rng, fail):
    """The probes replay clean, then each deliberate mistake in `mutants` must be caught (caught(mut,
    rng) says how, None if not); failures through fail(), the verdict printed with `label`."""
    clean = [replay_case(c, TN, sms, seed=11, form=form) for c, TN, sms in probe_cases]
    if any(clean):
        fail(f"{label}a mutation probe does not replay clean: {next(e for e in clean if e)}")
    how = {mut: caught(mut, rng) for mut in mutants}
    missed = [m for m, h in how.items() if h is None]
    if missed:
        fail(f"{label}the replay does not detect the deliberate mistake(s) {', '.join(missed)}")
    else:
        print(f"ok: {label}{len(mutants)} deliberate mistakes detected: " + ", ".join(f"{m} ({how[m]})" for m in mutants))


def main():
    t0 = time.time()
    failures = []

    def fail(msg):
        failures.append(msg)
        print(f"MISMATCH {msg}")

    print("wgrad_tma_kernel: tiled TMA (gy) + im2col TMA (x) + 128B swizzle + MN-major wgmma, numpy replay")
    # 1. the stage, byte by byte, for every (a_boxes, b_boxes) a block forms: block tiles of Kg 168
    # (m0 0: a_boxes 2, m0 128: 1) and Cg TN + 64 b - 24 (n0 0: b_boxes TN / 64, n0 TN: b)
    for TN in (128, 256):
        bad, seen = [], {}
        for nb in range(1, TN // 64 + 1):
            plan = kernel_plan(make_case(1, 4, 4, TN + 64 * nb - 24, 168, 1, 1, 1, 1, 1, 0, 0, 0, 0), TN, 132)
            bad += plan_problems(plan)
            for m0, n0 in block_tiles(plan):
                ab = plan["block_boxes"](m0, n0)
                issued, tx = plan["stage_tx"](m0, n0)
                sm = stage_model(plan, issued)
                bad += sm["problems"] + [e for e in [stale_problem(plan, sm, m0, n0)] if e]
                if not sm["logical"] or not sm["bytes_ok"]:
                    bad.append(f"(a_boxes, b_boxes) {ab}: the operands are not the documented slices of the issued "
                               f"boxes, stale (NaN) exactly where a box is not loaded")
                seen[ab] = (tx, len(sm["stale_rows"]), len(sm["stale_cols"]))
        want = {(a, b) for a in (1, 2) for b in range(1, TN // 64 + 1)}
        if set(seen) != want:
            bad.append(f"the blocks form (a_boxes, b_boxes) {sorted(seen)}, not {sorted(want)}")
        if bad:
            fail(f"TN {TN} stage: {'; '.join(dict.fromkeys(bad))}")
        else:
            print(f"ok: TN {TN}: every one of the {plan['stages']} stages byte by byte for each of the {len(seen)} "
                  f"(a_boxes, b_boxes) the blocks form (gy boxes h < a_boxes at 8192 h, x boxes j < b_boxes at "
                  f"16384 + 8192 j, descriptors start + cw 8192 + ks 2048 / + 16384 + ks 2048, LBO 8192, SBO 1024, "
                  f"MN-major SW128): A[m][k] = gy box cw (pixel 16 ks + k, channel m), B[k][n] = x box n / 64 "
                  f"(pixel 16 ks + k, channel n % 64) where that box is loaded, every operand byte from its copy, "
                  f"random tiles read back exactly; a box not loaded reads the stale NaN and feeds only accumulator "
                  f"rows >= Kg / columns >= Cg, never stored (stale rows / columns: "
                  + ", ".join(f"{ab} {r}/{c}" for ab, (_, r, c) in sorted(seen.items()))
                  + f"); expect_tx (a_boxes + b_boxes) 8192 = the issued copies' bytes ("
                  + ", ".join(f"{ab} {tx}" for ab, (tx, _, _) in sorted(seen.items()))
                  + f"); {plan['smem_bytes'] + plan['static_bytes']} bytes of shared memory a block")

    # 2. end to end through bytes, and the composite replay of the same cases
    for case, TN, sms, dtype in BYTE_CASES:
        e1 = replay_case(case, TN, sms, seed=1, byte_level=dtype)
        e2 = replay_case(case, TN, sms, seed=1)
        if e1 or e2:
            fail(f"byte-level {dtype} TN {TN} {describe(case)}: {e1 or e2}")
    if not any("byte-level" in f for f in failures):
        print(f"ok: {len(BYTE_CASES)} convolutions end to end through shared-memory bytes (bf16 / fp16 bit "
              f"patterns, stage i % kStages, shared memory starting as stale NaN, the boxes past Kg / Cg not loaded, "
              f"registers by the fragment layout, float2 stores, ordered split sum) equal the float64 grad_weight, "
              f"as does the composite replay")

    # 3. the composite replay: fixed and random cases
    info, refused = {}, {}
    rng = np.random.default_rng(2025)
    cases = fixed_cases()
    n_fixed = len(cases)
    cases += [random_case(rng, 4e8, refused) for _ in range(250)]
    for i, (case, TN, sms) in enumerate(cases):
        err = replay_case(case, TN, sms, seed=100 + i, info=info)
        if err:
            fail(f"case {i} TN {TN} sms {sms} {describe(case)}: {err}")
            if sum("case " in f for f in failures) >= 3:
                break
    if not any(f.startswith("case ") for f in failures):
        plans = [kernel_plan(c, TN, sms) for c, TN, sms in cases]
        print(f"ok: {len(cases)} convolutions ({n_fixed} fixed incl. test_cuda_tma_wgrad's shapes, "
              f"{len(cases) - n_fixed} random) equal the float64 grad_weight exactly: "
              f"{sum(c['G'] > 1 for c, _, _ in cases)} grouped, {sum(max(c['sh'], c['sw']) > 1 for c, _, _ in cases)} "
              f"strided, {sum(c['pt'] != c['pb'] or c['pl'] != c['pr'] for c, _, _ in cases)} asymmetric pads, "
              f"{sum(t == 256 for _, t, _ in cases)} at TN 256, {sum(p['splits'] > 1 for p in plans)} split "
              f"(up to {max(p['splits'] for p in plans)}), {sum(p['steps'] * PIX > p['P'] for p in plans)} with a "
              f"ragged last k-step; {info['dead']} of {info['steps']} tap k-steps skipped (of {info['skippable']} "
              f"skippable), im2col walks crossing an image {info['wraps']}, past the batch {info['past_batch']}; "
              f"{info['blocks_skipping']} of {info['blocks_all']} (group, tap, tile) blocks leave boxes unloaded "
              f"({info['stale_boxes']} boxes of stale NaN, none reaching grad_weight)"
              + (f"; launch_wgrad_tma refused {sum(refused.values())} draws "
                 f"({', '.join(f'{k}: {v}' for k, v in refused.items())})" if refused else ""))

    # 4. the dead-step predicate
    err, tot, skipped, skippable = dead_predicate_check(np.random.default_rng(77), 1500)
    if err:
        fail(f"tma_wgrad_step_dead: {err}")
    else:
        print(f"ok: tma_wgrad_step_dead over 1500 random geometries: {skipped} of {tot} tap k-steps skipped, none "
              f"holding a contributing pixel ({skippable} hold none: {skipped / max(skippable, 1):.0%} of those "
              f"skipped); valid_range_dev is exactly the rows / columns that read real input")

    # 5. the ring protocol, on blocks of every (a_boxes, b_boxes) of Kg 136 / Cg 264 (fixed case 4)
    rng = np.random.default_rng(8)
    ring_errs, forms = [], set()
    for TN in (128, 256):
        plan = kernel_plan(fixed_cases()[4][0], TN, 132)
        tiles = {plan["block_boxes"](*tl): tl for tl in block_tiles(plan)}
        for ab, tl in sorted(tiles.items()):
            forms.add((TN,) + ab)
            ring_errs += [ring_check(plan, n, rng, schedules=16, tile=tl) for n in (0, 1, 3, 4, 5, 6, 9, 13)]
    if any(ring_errs):
        fail(f"ring protocol: {next(e for e in ring_errs if e)}")
    else:
        print(f"ok: the ring's full / empty mbarrier parities on random interleavings ({len(forms)} blocks: TN 128 / "
              f"256 x (a_boxes, b_boxes) {', '.join(str(f[1:]) for f in sorted(forms))}: 2-6 copies a stage "
              f"against expect_tx (a_boxes + b_boxes) 8192; 5 and 4 stages, 0-13 live k-steps, copies landing "
              f"late, 8 consumer warps): no stage overwritten while read, each wgmma reads its own k-step's bytes, "
              f"no deadlock")

    # 6. deliberate mistakes
    check_mutants("", MUTANTS, mutant_caught, probes(), "cl16", np.random.default_rng(9), fail)

    # 7. the host side
    accepted, ref, leaks = cross_check_host(np.random.default_rng(99))
    if leaks:
        kinds = {}
        for case, TN, sms, v in leaks:
            for s in v:
                kinds.setdefault(s.split(":")[0].split(" = ")[0], (case, TN, sms, s))
        nprob = len({describe(c) for c, _, _, _ in leaks})
        fail(f"launch_wgrad_tma (conv.cu) runs the kernel on {nprob} of {accepted} random accepted shapes that break "
             f"a requirement: " + "; ".join(f"[e.g. {describe(c)}, TN {t}] {s}" for c, t, _, s in kinds.values()))
        if "Cg" in kinds:
            odd = make_case(1, 5, 5, 72, 72, 8, 3, 3, 1, 1, 1, 1, 1, 1)
            print(f"   the replay of {describe(odd)} (Cg = Kg = 9; launch_wgrad_tma takes it): "
                  f"{replay_case(odd, 128, 132)}")
    else:
        print(f"ok: launch_wgrad_tma's refusals imply the documented limits on {accepted} random accepted shapes "
              f"(refused: {', '.join(f'{k}: {v}' for k, v in sorted(ref.items()))})")

    print(f"({time.time() - t0:.1f} s) the TF32 NCHW form (wgrad_tma_kernel<float, TN>): tiled 4-D TMA (gy, x) + 128B "
          f"swizzle + K-major tf32 wgmma")
    main_nchw(fail, failures)

    dt = time.time() - t0
    if failures:
        print(f"verdict: {len(failures)} problem(s) ({dt:.1f} s)")
        return 1
    print(f"verdict: ok, wgrad_tma_kernel's plan agrees with the documented semantics ({dt:.1f} s)")
    return 0


def main_nchw(fail, failures):
    """The TF32 NCHW form's checks (sections 8-15 of the docstring)."""
    # 8. the stage, byte by byte
    for TN in (128, 256):
        plan = kernel_plan(fixed_cases_nchw()[0][0], TN, 132, form="nchw")
        sm = stage_model(plan)
        bad = plan_problems(plan) + sm["problems"]
        if bad or not sm["logical"] or not sm["bytes_ok"] or sm["stale"]:
            fail(f"nchw TN {TN} stage: {'; '.join(bad) or 'the operands are not the documented slices of the boxes'}")
        else:
            print(f"ok: nchw TN {TN}: every one of the {plan['stages']} stages byte by byte (gy's box "
                  f"{{32, 1, 128, 1}} at 0, x's {{32, 1, {TN}, 1}} at 16384, descriptors start + cw 8192 + ks 32 / "
                  f"+ 16384 + ks 32, K-major SW128, SBO 1024): A[m][k] = gy box row 64 cw + m (output channel), "
                  f"element 8 ks + k (pixel); B[n][k] = x box row n, element 8 ks + k; every operand byte from its "
                  f"copy, random boxes read back exactly; expect_tx {plan['stage_tx'](0, 0)[1]} = the copies' bytes")

    # 9. end to end through bytes, and the composite replay of the same cases
    for case, TN, sms in BYTE_CASES_NCHW:
        e1 = replay_case(case, TN, sms, seed=1, byte_level="tf32", form="nchw")
        e2 = replay_case(case, TN, sms, seed=1, form="nchw")
        if e1 or e2:
            fail(f"nchw byte-level TN {TN} {describe(case)}: {e1 or e2}")
    if not any("nchw byte-level" in f for f in failures):
        print(f"ok: nchw: {len(BYTE_CASES_NCHW)} convolutions end to end through shared-memory bytes (fp32 bit "
              f"patterns, tf32's top 19 bits, stage i % kStages, m64nTNk8 registers by the fragment layout, float2 "
              f"stores, ordered split sum) equal the float64 grad_weight, as does the composite replay")

    # 10. the composite replay: fixed and random cases (all of them shapes the host takes), and the
    # host's refusals of REFUSED_NCHW
    info, refused = {}, {}
    rng = np.random.default_rng(2026)
    cases = fixed_cases_nchw()
    for case, _, _ in cases + probes_nchw() + [c[:3] for c in BYTE_CASES_NCHW]:
        if host_refusal(case, "nchw"):
            fail(f"nchw fixed case {describe(case)} refused by the host: {host_refusal(case, 'nchw')}")
    for case, want_why in REFUSED_NCHW:
        why = host_refusal(case, "nchw")
        if not (why or "").startswith(want_why):
            fail(f"nchw: the host should refuse {describe(case)} ({want_why}), says {why}")
    n_fixed = len(cases)
    cases += [random_case_nchw(rng, 1.5e8, refused) for _ in range(120)]
    for i, (case, TN, sms) in enumerate(cases):
        err = replay_case(case, TN, sms, seed=300 + i, info=info, form="nchw")
        if err:
            fail(f"nchw case {i} TN {TN} sms {sms} {describe(case)}: {err}")
            if sum("nchw case " in f for f in failures) >= 3:
                break
    if not any(f.startswith("nchw case ") for f in failures):
        plans = [kernel_plan(c, TN, sms, form="nchw") for c, TN, sms in cases]
        print(f"ok: nchw: {len(cases)} convolutions ({n_fixed} fixed incl. test_cuda_tma_wgrad's shapes the form "
              f"takes, {len(cases) - n_fixed} random; every one taken by the host, OW a multiple of 32) equal the "
              f"float64 grad_weight exactly: "
              f"{sum(c['G'] > 1 for c, _, _ in cases)} grouped, {sum(c['sh'] > 1 for c, _, _ in cases)} row-strided, "
              f"{sum(c['pt'] != c['pb'] or c['pl'] != c['pr'] for c, _, _ in cases)} asymmetric pads, "
              f"{sum(c['dh'] > 3 or c['dw'] > 3 for c, _, _ in cases)} dilated > 3, "
              f"{sum((c['K'] // c['G']) % 8 != 0 or (c['C'] // c['G']) % 8 != 0 for c, _, _ in cases)} with Kg or Cg "
              f"not a multiple of 8, {sum(t == 256 for _, t, _ in cases)} at TN 256, "
              f"{sum(p['splits'] > 1 for p in plans)} split (up to {max(p['splits'] for p in plans)}), "
              f"{sum(p['spr'] > 1 for p in plans)} with several 32-column blocks a row (up to "
              f"{max(p['spr'] for p in plans)}); {info['dead']} of {info['steps']} tap k-steps skipped, exactly those "
              f"holding no valid pixel (no live k-step adds only zeros; {info['empty_taps']} taps with an empty row "
              f"or column range)"
              + (f"; the host refused {sum(refused.values())} draws "
                 f"({', '.join(f'{k}: {v}' for k, v in refused.items())})" if refused else "")
              + f"; and refuses the {len(REFUSED_NCHW)} shapes of REFUSED_NCHW as expected")

    # 11. the dead-step predicate
    err, tot, skipped, skippable, empty = dead_predicate_check_nchw(np.random.default_rng(78), 600)
    if err:
        fail(f"nchw dead predicate: {err}")
    else:
        print(f"ok: nchw: the dead predicate over 600 random geometries the form takes (unit column stride, OW a "
              f"multiple of 32): {skipped} of {tot} tap k-steps skipped, exactly the {skippable} holding no "
              f"contributing pixel ({empty} taps with an empty range, all their k-steps skipped); "
              f"tma_wgrad_row_step enumerates N OH spr rows x 32-column blocks")

    # 12. the ring protocol (two copies of unequal size a stage)
    rng = np.random.default_rng(18)
    ring_errs = [ring_check(kernel_plan(fixed_cases_nchw()[0][0], TN, 132, form="nchw"), n, rng)
                 for TN in (128, 256) for n in (0, 1, 4, 5, 6, 13)]
    if any(ring_errs):
        fail(f"nchw ring protocol: {next(e for e in ring_errs if e)}")
    else:
        print("ok: nchw: the ring's parities on random interleavings (5 / 4 stages, 0-13 live k-steps, a 16384-byte "
              "and a TN x 128-byte copy a stage landing late, 8 consumer warps): no overwrite, no deadlock")

    # 13. deliberate mistakes
    check_mutants("nchw: ", MUTANTS_NCHW, mutant_caught_nchw, probes_nchw(), "nchw", np.random.default_rng(19), fail)

    # 14. the host side
    accepted, ref, leaks = cross_check_host_nchw(np.random.default_rng(98))
    if leaks:
        kinds = {}
        for case, TN, sms, v in leaks:
            for s_ in v:
                kinds.setdefault(s_.split(":")[0], (case, TN, sms, s_))
        fail(f"launch_wgrad_tma<float> (conv.cu) runs the kernel on {len({describe(c) for c, *_ in leaks})} of "
             f"{accepted} random accepted shapes that break a requirement: "
             + "; ".join(f"[e.g. {describe(c)}, TN {t}] {s_}" for c, t, _, s_ in kinds.values()))
    else:
        print(f"ok: nchw: launch_wgrad_tma<float>'s refusals imply the documented limits on {accepted} random accepted "
              f"shapes (refused: {', '.join(f'{k}: {v}' for k, v in sorted(ref.items()))})")
    took, refused_ok = [], []
    for label, case, small in extreme_shapes_nchw():
        why = host_refusal(case, "nchw")
        v = documented_requirements_nchw(case, 128, 132)
        if why:
            refused_ok.append(f"{label} ({why}{'; it breaks ' + v[0] if v else ''})")
            continue
        enc = [b_ for b_ in v if b_.split(":")[0] in ("globalDim", "globalStrides", "boxDim")]
        other = [b_ for b_ in v if b_ not in enc]
        err = replay_case(case, 128, 132, seed=7, form="nchw") if small else None
        if other or err:
            fail(f"nchw: launch_wgrad_tma<float> takes {label} ({describe(case)}) though "
                 + "; ".join(([f"it breaks {'; '.join(other)}"] if other else []) +
                             ([f"the replay (the kernel's int arithmetic) gives: {err}"] if err else [])))
        elif enc:
            print(f"note: nchw: the host's own checks take {label} ({describe(case)}) though it breaks "
                  f"{'; '.join(enc)}: cuTensorMapEncodeTiled refuses it at run time and launch_wgrad_tma falls back "
                  f"('a tensor-map encoder refused')")
        else:
            took.append(label)
    print(f"ok: nchw: extreme shapes: the host refuses {', '.join(refused_ok)}; takes "
          f"{', '.join(took) or 'none of the others'} (every requirement met, the replay exact)")

    # 15. values the convolution never reads: NaN written into x wherever no output reads it must not
    # reach grad_weight in any shape the host takes; the refused ragged shape shows why it refuses
    nan_cases = [(c, t, m) for c, t, m in cases if not read_mask_nchw(c).all()]
    leaks = []
    for i, (case, TN, sms) in enumerate(nan_cases):
        err = replay_case(case, TN, sms, seed=500 + i, form="nchw", x_fill=np.nan)
        if err:
            leaks.append(f"{describe(case)} TN {TN}: {err}")
    ragged = REFUSED_NCHW[0][0]
    shown = replay_case(ragged, 128, 132, seed=5, form="nchw", x_fill=np.nan)
    if leaks:
        fail(f"nchw: NaN in x where the convolution never reads reaches grad_weight in {len(leaks)} of "
             f"{len(nan_cases)} taken case(s), e.g. {leaks[0]}")
    else:
        print(f"ok: nchw: NaN in every x element the convolution never reads ({len(nan_cases)} of the "
              f"{len(cases)} taken cases leave some unread: row / column gaps between taps and strides, trailing "
              f"rows) never reaches grad_weight: every box column is an output column's read or zero fill"
              + (f"; the refused ragged {describe(ragged)} would leak it (its block's columns past OW read x "
                 f"against gy's zero fill: 0 x NaN), as launch_wgrad_tma's comment says" if shown else ""))
    if not shown:
        fail(f"nchw: the ragged {describe(ragged)} (refused) replays without the NaN leak that motivates the "
             f"refusal: the replay no longer models a ragged block's reads")

if __name__ == "__main__":
    sys.exit(main())
