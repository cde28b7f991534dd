"""Replays, in numpy, the data movement and the MMA of conv.cu's wgrad_tma_kernel (the grad_weight
of a 16-bit channels_last convolution on TMA loads + wgmma, sm_90a; "grad_weight on TMA loads +
wgmma") and of its host side launch_wgrad_tma and wgrad_reduce_kernel, and checks that the
kernel's plan gives exactly the convolution's grad_weight

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

What is checked:
1. One stage of the ring, byte by byte (every stage of the ring, a uint8 buffer the size of the
   dynamic allocation, not 1024-aligned at its start, over random stale bytes): the two gy boxes
   and TN / 64 x boxes written through the swizzle, A (per consumer warpgroup cw and k16 step ks)
   and B read back through the decoded descriptors, as element indices into the boxes (the
   "composite map"; -1 where no copy of the stage wrote: stale, NaN in the replay). The map must be
   the same for every stage and agree with a random tile read back byte by byte.
2. End to end, byte by byte, on small cases: every live k-step of every block writes its stage
   (bf16 / fp16 bit patterns, stage i % kStages), wgmma's operands are read as bytes through the
   descriptors, the 64 x TN x 16 products of each instruction go to the thread registers by the
   fragment layout, the epilogue's float2 stores to the workspace and wgrad_reduce_kernel's ordered
   split sum follow; the result must equal a float64 grad_weight computed from the definition
   (small integer data: exact) and the composite replay's.
3. The composite replay (the maps of 1, vectorised over k-steps) on 293 convolutions (43 fixed,
   250 random) (N 1-3, H / W 1-40, C / K multiples of 8 up to 272, groups 1-3, kernels 1-7,
   dilation 1-18, symmetric / 'same' / asymmetric padding, strides 1-3, TN 128 and 256, sms 132 /
   114 / 8 / 1 so that splits vary), including the shapes of tests/ops/test_conv.py's
   test_cuda_tma_wgrad: every workspace element written exactly once, each float2 store 8-byte
   aligned and inside its row, the reduced grad_weight equal to float64.
4. tma_wgrad_step_dead: over random geometries, brute force, a skipped k-step never holds a pixel
   whose shifted read is real input (and valid_range_dev is exactly that set of rows / columns).
5. expect_tx == the bytes the stage's copies deliver; the ring's mbarrier protocol (full / empty
   parities) on random interleavings of the producer, the copies and the 8 consumer warps: no stage
   overwritten while a wgmma reads it, each k-step's wgmma reads that k-step's bytes, no deadlock.
6. The host side: launch_wgrad_tma's refusals against the documented limits of the two tensor maps
   and the kernel's own requirements (grid, int32 coordinates, tx-count, shared memory, float2
   alignment), on random shapes around the limits; anything accepted that breaks one is a failure.
7. Deliberate mistakes (the `mut` argument of kernel_plan): each must be caught.

    python scripts/check_tma_wgrad.py          # exit 0: everything agrees; 1: a mismatch (printed)

kernel_plan() and host_refusal() are the replayed kernel / host formulas (conv.cu's wgrad_tma_kernel,
launch_wgrad_tma, launch_wgrad, wgrad_reduce_kernel): keep them in step with conv.cu; everything under
"the documented hardware" is the documentation's and should not follow the kernel.

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
from check_tma_im2col import SMEM_MAX, TX_MAX, im2col_corners, swz128, tma_im2col  # noqa: E402

E = 2                     # bytes an element (bf16 / fp16)
T16 = 16 // E             # T of the canonical layouts: elements a 16-byte chunk
BM = 128                  # output channels (k) of a block tile: two consumer warpgroups of 64
PIX = 64                  # kTmaWgradPixels: pixels a k-step
BOX = 64                  # a box: 64 rows (pixels) x 64 elements (channels, 128 bytes)
BOX_BYTES = PIX * 128     # kBoxBytes
ELEMS = BOX * BOX
KSTEPS = PIX // 16        # k16 instructions a k-step

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


def tile_n_default(case):
    """launch_wgrad_tma's TN with RNNKERN_CONV_TMA_N unset: 256 where a group has >= 256 input channels."""
    return 256 if case["C"] // case["G"] >= 256 else 128


def kernel_plan(case, TN, sms, mut=None):
    """The tensor maps, grid, split sizing, stage layout, copies, descriptors, dead-step predicate,
    epilogue and reduction indices as launch_wgrad_tma / wgrad_tma_kernel<T, TN> /
    wgrad_reduce_kernel build them."""
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, sh, sw, dh, dw, pt, pl = (case[k] for k in ("KH", "KW", "sh", "sw", "dh", "dw", "pt", "pl"))
    OH, OW = case["OH"], case["OW"]
    Kg, Cg, taps = K // G, C // G, KH * KW
    P, hw = N * OH * OW, OH * OW
    steps = -(-P // PIX)
    tiles_m, tiles_n = -(-Kg // BM), -(-Cg // TN)
    base = tiles_m * tiles_n * taps * G
    splits = max(1, -(-2 * sms // base))
    splits = min(splits, max(1, steps // 8))
    splits = min(splits, max(1, 65535 // taps))
    stages = 5 if TN == 128 else 4                       # TmaTile<TN>::kStages
    stage_bytes = (BM + TN) * 128                        # TmaTile<TN>::kStageBytes
    cs_h, cs_w = (1, 1) if mut == "corners_unstrided" else (sh, sw)
    lw, uw = im2col_corners(W, OW, pl, cs_w)
    lh, uh = im2col_corners(H, OH, pt, cs_h)
    gymap = dict(dims=(K, P), stride=K * E, box=(BOX, BOX), estride=(1, 1))
    xmap = dict(dims=(C, W, H, N), strides=(C * E, W * C * E, H * W * C * E), lower=(lw, lh), upper=(uw, uh),
                cpp=BOX, ppc=PIX, E=E, tstride=(sw, sh))
    nx = TN // 64 - (1 if mut == "x_loads_minus1" else 0)
    # the maps' swizzle (CU_TENSOR_MAP_SWIZZLE_128B on both)
    gymap["swizzle"], xmap["swizzle"] = 128, (0 if mut == "x_map_no_swizzle" else 128)
    # one stage's copies, in issue order: (operand, index, shared offset in the stage, swizzle)
    copies = [("gy", h, h * BOX_BYTES, gymap["swizzle"]) for h in range(2)] + \
        [("x", j, (2 + j) * BOX_BYTES, xmap["swizzle"]) for j in range(nx)]

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

    return dict(case=case, mut=mut, TN=TN, N=N, H=H, W=W, C=C, K=K, G=G, Kg=Kg, Cg=Cg, KH=KH, KW=KW, sh=sh, sw=sw,
                dh=dh, dw=dw, pt=pt, pl=pl, OH=OH, OW=OW, taps=taps, P=P, hw=hw, steps=steps, tiles_m=tiles_m,
                tiles_n=tiles_n, splits=splits, grid=(tiles_m * tiles_n, taps * splits, G), stages=stages,
                stage_bytes=stage_bytes, smem_bytes=stages * stage_bytes + 1024, static_bytes=2 * stages * 8,
                expect_tx=(BM + 128) * 128 if mut == "expect_tx_tn128" else stage_bytes,
                gymap=gymap, xmap=xmap, copies=copies, gy_coords=gy_coords, x_coords=x_coords,
                desc_a=desc_a, desc_b=desc_b, trans=(0, 0) if mut == "no_trans" else (1, 1),
                block_tile=block_tile, block_tap_split=block_tap_split, k_range=k_range, dead=dead,
                ws_index=ws_index, epi_row=epi_row, epi_col=epi_col, gw_index=gw_index,
                full_parity=lambda i: (i // stages) & 1,
                empty_parity=(lambda i: (i // stages) & 1) if mut == "empty_parity" else
                (lambda i: (i // stages - 1) & 1))


def host_refusal(case):
    """Why launch_wgrad / launch_wgrad_tma do not run wgrad_tma_kernel on this shape (None: they do),
    the environment (RNNKERN_CONV_MMA=tma, sm_90, sm_90a build, encoders) and pointers aside."""
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, sh, sw, dh, dw, pt, pl = (case[k] for k in ("KH", "KW", "sh", "sw", "dh", "dw", "pt", "pl"))
    OH, OW = case["OH"], case["OW"]
    taps, P = KH * KW, N * OH * OW
    if taps > 65535 or G * (K // G) * (C // G) * taps >= 2 ** 31:
        return "launch_wgrad: TORCH_CHECK (taps, outputs)"
    if K // G < 8 or C // G < 8:
        return "launch_wgrad: direct kernel (Kg or Cg < 8)"
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


def copy_bytes(plan):
    """Bytes the copies of one stage deliver (complete-tx counts whole boxes, zero fill included)."""
    by = {"gy": plan["gymap"]["box"][0] * plan["gymap"]["box"][1] * E,
          "x": plan["xmap"]["ppc"] * plan["xmap"]["cpp"] * E}
    return sum(by[kind] for kind, _, _, _ in plan["copies"])


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
    got = copy_bytes(plan)
    if plan["expect_tx"] != got:
        bad.append(f"expect_tx {plan['expect_tx']} bytes but the stage's copies deliver {got} "
                   f"({'the consumers never wake' if plan['expect_tx'] > got else 'a stage read while written'})")
    if plan["expect_tx"] > TX_MAX:
        bad.append("expect_tx beyond the mbarrier tx-count range")
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


def stage_model(plan):
    """Every stage of the ring byte by byte: the plan's copies written through the swizzle, A (cw,
    ks) and B (ks) read back through the decoded descriptors. Returns dict(mapA (2, 4, 64, 16):
    A[m][k] of warpgroup cw's instruction ks as an element index into the stage's boxes (copy b,
    row, element: b * 4096 + row * 64 + element), -1 for bytes no copy of the stage wrote; mapB
    (4, TN, 16): B[k][n] likewise, indexed [ks, n, k]; problems; logical: the maps are the
    documented slices (A[m][k] = gy box cw, pixel 16 ks + k, channel m; B[k][n] = x box n / 64,
    pixel 16 ks + k, channel n % 64); bytes_ok: random boxes read back byte by byte agree with the
    maps (every stage))."""
    key = (plan["TN"], plan["mut"])
    if key in _STAGE_CACHE:
        return _STAGE_CACHE[key]
    rng = np.random.default_rng(5)
    TN, S, SB, copies = plan["TN"], plan["stages"], plan["stage_bytes"], plan["copies"]
    problems = []
    raw = -(-plan["static_bytes"] // 16) * 16 + 16     # the dynamic window: not 1024-aligned
    ring = (raw + 1023) & ~1023
    end = raw + plan["smem_bytes"]
    size = end + 65536
    nb = len(copies)
    maps, bytes_ok = [], True
    for st in range(S):
        base = ring + st * SB
        wa = np.concatenate([box_bytes(base + off, swz) for _, _, off, swz in copies])
        wc = np.arange(nb * ELEMS * E)
        for _, _, off, _ in copies:
            if (base + off) % 1024:
                problems.append("a copy's destination is not on a 1024-byte boundary (descriptor base offset 0 "
                                "assumes the pattern starts there; cp.async.bulk.tensor needs 128)")
        if wa.min() < base or wa.max() >= base + SB:
            problems.append("a copy writes outside its stage")
        if wa.max() >= end:
            problems.append("a copy writes past the dynamic allocation")
        if np.bincount(wa).max() > 1:
            problems.append("two copies of one stage write the same bytes")
        owner = np.full(size, -1, np.int64)
        owner[wa] = wc
        # random boxes written byte by byte over random stale bytes, for the read-back check
        data = rng.integers(0, 1 << 16, (nb, BOX, BOX)).astype(np.uint16)
        smem = rng.integers(0, 256, size).astype(np.uint8)
        smem[wa] = data.view(np.uint8).reshape(-1)[wc]
        stage_maps = {}
        for name, descs, mn, trans in (("A", plan["desc_a"](base, 0) + plan["desc_a"](base, 1), 64, plan["trans"][0]),
                                       ("B", plan["desc_b"](base), TN, plan["trans"][1])):
            rb = np.stack([operand_bytes(d, mn, trans) for d in descs])          # (n, mn, 16, E)
            if rb.min() < base or rb.max() >= base + SB:
                problems.append(f"{name}: wgmma reads outside the stage")
            got = owner[np.clip(rb, 0, size - 1)]
            stale = (got == -1).all(-1)
            consistent = (got >= 0).all(-1) & (got == got[..., :1] + np.arange(E)).all(-1) & (got[..., 0] % E == 0)
            if not (consistent | stale).all():
                problems.append(f"{name}: an operand element reads bytes of several elements")
            idx = np.where(consistent, got[..., 0] // E, -1)
            stage_maps[name] = idx.reshape(2, KSTEPS, 64, 16) if name == "A" else idx
            op = smem[rb].copy().view(np.uint16)[..., 0]          # what wgmma reads, byte by byte
            bytes_ok &= bool(np.array_equal(op[idx >= 0], data.reshape(-1)[idx[idx >= 0]]))
        maps.append((stage_maps["A"], stage_maps["B"]))
    if any(not (np.array_equal(a, maps[0][0]) and np.array_equal(b, maps[0][1])) for a, b in maps):
        problems.append("the stages' operand maps differ (a stage's base changes what wgmma reads)")
    mapA, mapB = maps[0]
    cw, ks, m, k = np.meshgrid(np.arange(2), np.arange(KSTEPS), np.arange(64), np.arange(16), indexing="ij")
    expA = cw * ELEMS + (16 * ks + k) * BOX + m
    ks, n, k = np.meshgrid(np.arange(KSTEPS), np.arange(TN), np.arange(16), indexing="ij")
    expB = (2 + n // 64) * ELEMS + (16 * ks + k) * BOX + n % 64
    out = dict(mapA=mapA, mapB=mapB, problems=sorted(set(problems), key=problems.index), bytes_ok=bytes_ok,
               logical=bool(np.array_equal(mapA, expA) and np.array_equal(mapB, expB)),
               stale=int((mapA < 0).sum() + (mapB < 0).sum()), ring=ring, raw=raw, size=size)
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


def replay_case(case, TN, sms, mut=None, seed=0, info=None, byte_level=None):
    """Replays wgrad_tma_kernel + wgrad_reduce_kernel on one convolution; None when grad_weight
    matches float64 exactly, else the first mismatch or broken requirement. byte_level: 'bf16' /
    'fp16' runs every k-step through shared-memory bytes (slow: small cases), else the composite
    maps."""
    try:
        return _replay_case(case, TN, sms, mut, seed, {} if info is None else info, byte_level)
    except AssertionError as e:
        return f"breaks a documented requirement: {e}"


def _replay_case(case, TN, sms, mut, seed, info, byte_level):
    plan = kernel_plan(case, TN, sms, mut)
    bad = plan_problems(plan)
    if bad:
        return "; ".join(bad)
    sm = stage_model(plan)
    if sm["problems"]:
        return "; ".join(sm["problems"])
    split_of, err = step_splits(plan)
    if err:
        return err
    # the grid: every (m tile, n tile) once along x, every (tap, split) once along y
    gx, gy_, _ = plan["grid"]
    tiles = sorted(plan["block_tile"](bx) for bx in range(gx))
    want_tiles = sorted((mt * BM, nt * TN) for mt in range(plan["tiles_m"]) for nt in range(plan["tiles_n"]))
    if tiles != want_tiles:
        return f"blockIdx.x decodes to the tiles {tiles[:4]}..., not each (m0, n0) of {want_tiles[:4]}... once"
    tsp = sorted(plan["block_tap_split"](by) for by in range(gy_))
    if tsp != [(t, sp) for t in range(plan["taps"]) for sp in range(plan["splits"])]:
        return "blockIdx.y does not decode to each (tap, split) once"
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
    mA = sm["mapA"].reshape(-1)
    mB = sm["mapB"].reshape(-1)
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
                for kind, j, _, _ in plan["copies"]:
                    if kind != "x":
                        continue
                    cc, w_, h_, n_, ow, oh = plan["x_coords"](g, nt * TN, j, ms[live], r, s)
                    vals, st, _ = tma_im2col(src_x, plan["xmap"], w_, h_, n_, ow, oh, np.int64(cc))
                    xb[j] = vals
                    info["wraps"] = info.get("wraps", 0) + st["crosses_image"]
                    info["past_batch"] = info.get("past_batch", 0) + st["past_batch"]
                for mt in range(plan["tiles_m"]):
                    boxes = [gyb[mt, j][live] if kind == "gy" else xb[j] for kind, j, _, _ in plan["copies"]]
                    sp_live = split_of[live]
                    assert (np.diff(sp_live) >= 0).all(), "the splits' k ranges are not increasing"
                    sps = list(range(plan["splits"]))
                    if len(live) == 0:               # every k-step of the tap skipped: the splits store zeros
                        regs = np.zeros((plan["splits"], 2, 128, TN // 2))
                    elif byte_level:
                        regs = byte_level_block(plan, sm, boxes, sp_live, byte_level, rng, rep)
                    else:
                        stage = np.concatenate([b.reshape(len(live), -1) for b in boxes] +
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


def byte_level_block(plan, sm, boxes, sp_live, dtype, rng, rep):
    """One (g, tap, m tile, n tile) block column through shared-memory bytes: for each split, its live
    k-steps i = 0, 1, ... write stage i % kStages of a fresh uint8 allocation over stale random bytes,
    wgmma reads A and B through the descriptors, the products of each instruction are accumulated
    into the threads' registers by the fragment layout. Returns the registers (splits, 2, 128, TN / 2)."""
    TN, S, SB, ring, size = plan["TN"], plan["stages"], plan["stage_bytes"], sm["ring"], sm["size"]
    regs = np.zeros((plan["splits"], 2, 128, TN // 2))
    for sp in range(plan["splits"]):
        sel = np.nonzero(sp_live == sp)[0]
        for i, q in enumerate(sel):
            base = ring + (i % S) * SB
            smem = rng.integers(0, 256, size).astype(np.uint8)
            for (_, _, off, swz), box in zip(plan["copies"], boxes):
                bits = np.ascontiguousarray(box[q].astype(np.uint16))          # (row, element), little-endian
                smem[box_bytes(base + off, swz)] = bits.view(np.uint8).reshape(-1)
            for cw in range(2):
                for da, db in zip(plan["desc_a"](base, cw), plan["desc_b"](base)):
                    a = value_of(smem[operand_bytes(da, 64, plan["trans"][0])].copy().view(np.uint16)[..., 0], dtype)
                    b = value_of(smem[operand_bytes(db, TN, plan["trans"][1])].copy().view(np.uint16)[..., 0], dtype)
                    D = a @ b.T                            # (64, TN): sum over the instruction's 16 k
                    regs[sp, cw] += rep.regs_of(D)
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


def ring_check(plan, n_live, rng, schedules=40):
    """The producer thread, its copies (landing at random later times) and the 8 consumer warps
    (wgmma reads from issue until its wait_group retires it) on random interleavings."""
    S, nbox = plan["stages"], len(plan["copies"])
    per_copy = copy_bytes(plan) // max(nbox, 1)          # complete-tx: each copy's whole box
    for _ in range(schedules):
        full, empty = [Mbar(1) for _ in range(S)], [Mbar(8) for _ in range(S)]
        landed = [(-1, 0)] * S               # (k-step, copies landed) a stage holds
        copies = []                          # in flight: (stage, k-step)
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
                full[st].expect_tx(plan["expect_tx"])
                full[st].arrive()
                copies += [(st, i)] * nbox
                prod["i"] += 1
            elif kind == "c":
                st, k = copies.pop(a)
                for c in cons:
                    if any(s2 == st and k2 != k for k2, s2 in c["inflight"]):
                        return f"a copy of k-step {k} lands in stage {st} while a wgmma still reads it"
                landed[st] = (k, landed[st][1] + 1 if landed[st][0] == k else 1)
                full[st].complete_tx(per_copy)
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


def random_geometry(rng):
    """A random conv geometry for the predicate check (channels irrelevant)."""
    while True:
        N = int(rng.integers(1, 5))
        H, W = (int(rng.integers(1, 130)) if rng.random() < 0.3 else int(rng.integers(1, 41)) for _ in range(2))
        KH, KW = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        dh, dw = (int(rng.integers(1, 4)) if rng.random() < 0.5 else int(rng.integers(1, 19)) for _ in range(2))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        pt, pb = (int(rng.integers(0, dh * (KH - 1) + 3)) for _ in range(2))
        pl, pr = (int(rng.integers(0, dw * (KW - 1) + 3)) for _ in range(2))
        case = make_case(N, H, W, 8, 8, 1, KH, KW, dh, dw, pt, pb, pl, pr, "given", sh, sw)
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
        mode = str(rng.choice(["symmetric", "same", "asymmetric"]))
        th, tw = dh * (KH - 1), dw * (KW - 1)
        if mode == "symmetric":
            ph, pw = int(rng.integers(0, th + 1)), int(rng.integers(0, tw + 1))
            pt, pb, pl, pr = ph, ph, pw, pw
        elif mode == "same":
            pt, pb, pl, pr = th // 2, th - th // 2, tw // 2, tw - tw // 2
        else:
            pt, pb = int(rng.integers(0, th + 1)), int(rng.integers(0, th + 1))
            pl, pr = int(rng.integers(0, tw + 1)), int(rng.integers(0, tw + 1))
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
]


# deliberate mistakes: each must be caught by some probe (replays, the predicate check, the ring)
MUTANTS = ["lbo_sbo_swapped", "ks_1024", "offsets_hw_order", "b_at_8192", "no_trans", "split_range_floor",
           "dead_row_off_by_one", "dead_ignores_image", "ws_g_taps_swapped", "ws_row_kg", "x_loads_minus1",
           "a_half_4096", "frag_row_h", "gy_channel_no_group", "x_channel_no_group", "reduce_tap_major",
           "base_unstrided", "corners_unstrided", "expect_tx_tn128", "empty_parity", "bx_decode_swapped",
           "by_decode_splits", "x_map_no_swizzle"]


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
            if ring_check(plan, n, rng, schedules=20):
                return "the ring protocol"
    return None


# ---------------------------------------------------------------------------------------------

def main():
    t0 = time.time()
    failures = []

    def fail(msg):
        failures.append(msg)
        print(f"MISMATCH {msg}")

    print("wgrad_tma_kernel: tiled TMA (gy) + im2col TMA (x) + 128B swizzle + MN-major wgmma, numpy replay")
    # 1. the stage, byte by byte
    for TN in (128, 256):
        plan = kernel_plan(fixed_cases()[0][0], TN, 132)
        sm = stage_model(plan)
        bad = plan_problems(plan) + sm["problems"]
        if bad or not sm["logical"] or not sm["bytes_ok"] or sm["stale"]:
            fail(f"TN {TN} stage: {'; '.join(bad) or 'the operands are not the documented slices of the boxes'}")
        else:
            print(f"ok: TN {TN}: every one of the {plan['stages']} stages byte by byte (2 gy boxes + {TN // 64} x "
                  f"boxes "
                  f"at 8192 j, descriptors start + cw 8192 + ks 2048 / + 16384 + ks 2048, LBO 8192, SBO 1024, "
                  f"MN-major SW128): A[m][k] = gy box cw (pixel 16 ks + k, channel m), B[k][n] = x box n / 64 "
                  f"(pixel 16 ks + k, channel n % 64), every operand byte from its copy, random tiles read back "
                  f"exactly; expect_tx {plan['expect_tx']} = the copies' bytes; "
                  f"{plan['smem_bytes'] + plan['static_bytes']} bytes of shared memory a block")

    # 2. end to end through bytes, and the composite replay of the same cases
    for case, TN, sms, dtype in BYTE_CASES:
        e1 = replay_case(case, TN, sms, seed=1, byte_level=dtype)
        e2 = replay_case(case, TN, sms, seed=1)
        if e1 or e2:
            fail(f"byte-level {dtype} TN {TN} {describe(case)}: {e1 or e2}")
    if not any("byte-level" in f for f in failures):
        print(f"ok: {len(BYTE_CASES)} convolutions end to end through shared-memory bytes (bf16 / fp16 bit "
              f"patterns, stage i % kStages, registers by the fragment layout, float2 stores, ordered split sum) "
              f"equal the float64 grad_weight, as does the composite replay")

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
              f"skippable), im2col walks crossing an image {info['wraps']}, past the batch {info['past_batch']}"
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

    # 5. the ring protocol
    rng = np.random.default_rng(8)
    ring_errs = [ring_check(kernel_plan(fixed_cases()[0][0], TN, 132), n, rng)
                 for TN in (128, 256) for n in (0, 1, 3, 4, 5, 6, 9, 13)]
    if any(ring_errs):
        fail(f"ring protocol: {next(e for e in ring_errs if e)}")
    else:
        print("ok: the ring's full / empty mbarrier parities on random interleavings (5 and 4 stages, 0-13 live "
              "k-steps, copies landing late, 8 consumer warps): no stage overwritten while read, each wgmma reads "
              "its own k-step's bytes, no deadlock")

    # 6. deliberate mistakes
    rng = np.random.default_rng(9)
    clean = [replay_case(c, TN, sms, seed=11) for c, TN, sms in probes()]
    if any(clean):
        fail(f"a mutation probe does not replay clean: {next(e for e in clean if e)}")
    missed, how = [], {}
    for mut in MUTANTS:
        h = mutant_caught(mut, rng)
        if h is None:
            missed.append(mut)
        how[mut] = h
    if missed:
        fail(f"the replay does not detect the deliberate mistake(s) {', '.join(missed)}")
    else:
        print(f"ok: {len(MUTANTS)} deliberate mistakes detected: "
              + ", ".join(f"{m} ({how[m]})" for m in MUTANTS))

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

    dt = time.time() - t0
    if failures:
        print(f"verdict: {len(failures)} problem(s) ({dt:.1f} s)")
        return 1
    print(f"verdict: ok, wgrad_tma_kernel's plan agrees with the documented semantics ({dt:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
