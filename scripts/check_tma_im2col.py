"""Replays, in numpy, the index arithmetic of a Hopper (sm_90a) convolution kernel (conv.cu's
gather_tma_kernel and its host side) that loads A with TMA in im2col mode, B with tiled TMA, both
into 128-byte-swizzled shared memory, and multiplies them with wgmma (two consumer warpgroups,
m64n128 / m64n256, k16 bf16 / k8 tf32, both operands K-major). Every hardware step is modelled from
its documentation, not from the kernel:

- cp.async.bulk.tensor.4d ... .im2col (PTX ISA 5.5.4 "im2col mode": 5.5.4.1 Bounding Box,
  5.5.4.2 Traversal Stride, 5.5.4.3 Out of Boundary Access; 9.7.9.27.1.2 cp.async.bulk.tensor,
  im2colInfo = {i2cOffW, i2cOffH}; CUDA driver API cuTensorMapEncodeIm2col): the filter base
  walks Pixels-per-Column positions of the bounding box in NDHW order (W fastest, then H, then
  the next image) from the instruction's {w, h, n}; the box spans base positions
  [lower, size - 1 + upper] along W and H (corners innermost first, W then H); the pixel read is
  base + im2col offsets; a pixel outside the tensor, an image n >= N (the walk past the batch),
  or a channel >= C is zero-filled; the pixel's channelsPerPixel elements form one 128-byte row.
  A Pixels-per-Column of 16 (the 2-D pixel tiles) walks 16 positions: past the bounding box's last
  column it wraps to the next row's first, past its last row to the next image. Traversal strides
  (5.5.4.2; elementStrides {1, sw, sh, 1}, each in [1, 8]) stride the positions walked along W and
  H (lower, lower + s, ... up to size - 1 + upper) without changing their number (Pixels-per-
  Column); the im2col offsets are added unstrided.
- the tiled load of the weight (5.5.3 Tiled Mode, cuTensorMapEncodeTiled): box {BK, TN, 1},
  innermost first, zero fill outside the tensor, rows of boxDim[0] * E = 128 bytes.
- the 128-byte swizzle (5.5.7 Swizzling Modes, 16-byte atomicity): in a pattern that starts at a
  1024-byte boundary, the 16-byte chunk c of 128-byte line r is stored at chunk c ^ r (r = line
  index mod 8, i.e. shared address bits [7:10) XOR-ed into bits [4:7)). A copy's shared
  destination is 128-byte aligned (cp.async.bulk.tensor).
- wgmma's read through a shared-memory matrix descriptor (9.7.15.5.1.2 Shared Memory Matrix
  Layout: K-major, 128B swizzling, canonical Swizzle<3,4,3> o ((8,m),(T,2k)):((8T,SBO),(1,T)),
  LBO "not used, assumed 1", SBO = offset between 8-row groups; 9.7.15.5.1.2.2 Matrix Descriptor
  Format: start/LBO/SBO >> 4 in 14-bit fields, base offset 0 when the pattern starts on a
  1024-byte boundary, mode 1 = 128-byte swizzle). The swizzle is applied to the absolute shared
  address (that is what the descriptor's base-offset field and the 1024-byte pattern alignment
  mean), so a start address advanced by 32 bytes inside the swizzle atom reads the k-slice the
  TMA put there. The B operand of an n256 instruction is 256 rows, 32 groups of 8 at SBO apart.
- wgmma's accumulator (9.7.15.5.1.1, Matrix Fragments for .m64nNk16 / .m64nNk8, accumulator D):
  register i of lane l of warp w of the warpgroup holds D[16 w + l / 4 + 8 ((i / 2) % 2),
  8 (i / 4) + 2 (l % 4) + i % 2], N / 2 registers a thread.
- the mbarrier's transaction count (PTX mbarrier: tx-count, phase completion): expect-tx adds to
  the phase's tx-count, each copy's complete-tx subtracts the bytes of its whole box, zero-filled
  ones included; the phase completes when the arrivals are in and the tx-count is zero; tx-count
  range +-(2^20 - 1). So the expect_tx of a stage must equal the bytes its copies deliver (more:
  the consumers never wake; fewer: they may read a stage still being written).
- shared memory per block (CUDA C++ Programming Guide, compute capability 9.0: 227 KB).

Shared memory is built byte by byte (a uint8 buffer, E-byte little-endian elements): one stage of
the ring (the last, so the end of the allocation is checked too) with its A copies (one 128-pixel
im2col box, or `loads` 16-pixel boxes at j * 16 * 128 bytes) and its B box, over stale bytes, read
back as wgmma would; the per-case loop then uses the composite index map derived from the same
byte model (checked against the bytes on a random tile). Rows no copy of the stage wrote read as
NaN (stale data) and must not reach a stored output. Each case's outputs (scattered by the
kernel's s_out, every output element stored exactly once) must equal a direct float64 convolution
or, for the transposed mapping, a float64 grad_input (the adjoint of the direct convolution,
checked as such: <conv(x), gy> == <x, grad_input(gy)>); small integer data: exact.

What is replayed from the kernel (conv.cu): the forward (strided ones through the traversal
strides, corners upper = (out - 1) stride - pad - (in - 1), base pixels (wo0 sw - pl, ho0 sh - pt)); grad_input / a transposed convolution's
forward as tma_problems' stride-1 forwards, one a stride phase (at stride 1 one problem: all taps
flipped, padding d (k - 1) - p), the weight's taps sliced and flipped (launch_gather_tma_tn) and the
outputs scattered to the phase's pixels (oy_step, oy0, ...); set_pixel_tiles' 8 x 16 pixel tiles
(eight 16-pixel im2col loads a stage, loads clipped at Ho, expect_tx (loads * 16 + TN) * 128, slot
i stored to (ho0 + i / 16, wo0 + i % 16) only inside the output); the tap list s_live; TN = 128
(5 stages) and TN = 256 (4 stages, B box {BK, 256, 1}, m64n256); the epilogue's staging tile and its
16-byte / scalar store loops (each channel below Nn of each stored slot once, nothing past Nn).
Also checked: the documented host-side limits of the two tensor maps and of the descriptors, that
tma_plan never lets through a problem that breaks them, and that the replay detects deliberately
wrong formulas.

    python scripts/check_tma_im2col.py

host_violations() lists the limits a problem's shape must meet (documented rank-4 corner range
[-128, 127], rank-4 im2col offset range [0, 255] i.e. (K - 1) * dilation <= 255 per dimension,
non-empty bounding box, globalDim / globalStrides / boxDim / channelsPerPixel / pixelsPerColumn
limits, and the kernel's own G == 1 or R % BK == 0, forward stride <= 8, at most kTmaMaxTaps taps a
problem, every stride phase of a transposed mapping reached by a tap). Not expressible from
shapes, so not replayed, but documented too: globalAddress 16-byte aligned (x must be NHWC-dense at
a 16-byte-aligned data_ptr, likewise the permuted weight), the CUtensorMap 64-byte aligned, each
shared tile on a 1024-byte boundary (descriptor base offset 0), descriptor start addresses 16-byte
aligned and below 2^18.

This checks arithmetic against the documented semantics, not the hardware: the CUDA tests on an
H100 / H200 are what verify the kernel (they should include an H != W padding asymmetry: the
driver doc's prose lists the corners as "{D, H, W}" while PTX, CUTLASS and the tensor dims order
are innermost first, W then H; this replay takes innermost first)."""
import sys
import time
from math import gcd

import numpy as np

BM = 128            # pixel slots of a block tile: rows of the A tile
ROW = 128           # bytes a tile row: channelsPerPixel * E = boxDim[0] * E = the 128B swizzle span
KB = 32             # bytes of k each wgmma instruction takes (k16 bf16 / k8 tf32)
BK_OF = {2: 64, 4: 32}
TILE_W = 16         # set_pixel_tiles' kTileW
MAX_TAPS = 64       # kTmaMaxTaps
SMEM_MAX = 227 * 1024       # shared memory a block may use on sm_90 (opt-in)
TX_MAX = (1 << 20) - 1      # mbarrier tx-count range


# ---------------------------------------------------------------------------------------------
# the kernel's host side (conv.cu), with hooks for deliberate mistakes

def im2col_corners(n_in, n_out, pad, stride=1):
    """{lower, upper} of one axis: in - 1 + upper = (out - 1) stride - pad, the last output's base
    pixel, so that the traversal (stride `stride`) visits exactly n_out base positions from -pad."""
    return -pad, (n_out - 1) * stride - pad - (n_in - 1)


def set_pixel_tiles(p):
    """8 x 16 pixel tiles where a tap can read only padding for a whole 16-column tile."""
    p = dict(p, tile_w=0, tiles_h=0, tiles_w=0, Mt=p["M"])
    reach_w = max(p["pl"], p["dw"] * (p["KW"] - 1) - p["pl"])
    if reach_w >= TILE_W and p["Wo"] >= 2 * TILE_W and p["Ho"] >= BM // TILE_W:
        th, tw = -(-p["Ho"] // (BM // TILE_W)), -(-p["Wo"] // TILE_W)
        p.update(tile_w=TILE_W, tiles_h=th, tiles_w=tw, Mt=p["N"] * th * tw * BM)
    return p


def gather_params(case, trans):
    """GatherParams of the forward (x -> y) or of the transposed mapping (gy -> gx)."""
    G, N = case["G"], case["N"]
    if trans:
        p = dict(Cs=case["K"], Hs=case["Ho"], Ws=case["Wo"], Co=case["C"], Ho=case["H"], Wo=case["W"],
                 R=case["K"] // G, Nn=case["C"] // G)
    else:
        p = dict(Cs=case["C"], Hs=case["H"], Ws=case["W"], Co=case["K"], Ho=case["Ho"], Wo=case["Wo"],
                 R=case["C"] // G, Nn=case["K"] // G)
    p.update(N=N, G=G, KH=case["KH"], KW=case["KW"], dh=case["dh"], dw=case["dw"], pt=case["pt"], pl=case["pl"],
             sh=case.get("sh", case.get("stride", 1)), sw=case.get("sw", case.get("stride", 1)))
    p["M"] = N * p["Ho"] * p["Wo"]
    if trans:
        p.update(tile_w=0, tiles_h=0, tiles_w=0,
                 Mt=N * -(-p["Ho"] // p["sh"]) * -(-p["Wo"] // p["sw"]))
        return p
    return set_pixel_tiles(p)


def trans_taps(o, stride, dil, pad, k, step):
    """(count, first): the taps r with (o + pad - r dil) % stride == 0 are first, first + step, ..."""
    res = (o + pad) % stride
    r = 0
    while r < step and r < k and (r * dil) % stride != res:
        r += 1
    return ((k - 1 - r) // step + 1 if (r < step and r < k) else 0), r


def cdiv_trunc(a, b):
    """C++ integer division (toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def phase_axis(phase, stride, dil, pad, k, mut=None, axis="h"):
    """One axis of a transposed mapping's phase: (taps (first, step, count, flipped), e, pad') or None."""
    step = stride // gcd(stride, dil)
    count, first = trans_taps(phase, stride, dil, pad, k, step)
    flipped = not (mut == "no_tap_flip" or (mut == "flip_h_only" and axis == "w"))
    if count == 0:
        return None
    c0 = cdiv_trunc(phase + pad - first * dil, stride)
    e = step * dil // stride        # = dil / gcd(stride, dil): dil itself wherever every phase has a tap
    pad_out = (count - 1) * e - c0
    if mut == "pad_off_by_one" and axis == "h":
        pad_out += 1
    if mut == "pad_w_unflipped" and axis == "w":
        pad_out = pad
    return dict(first=first, step=step, count=count, flipped=flipped), e, pad_out


def tma_problems(q, trans, mut=None):
    """The stride-1 forward problems of a gather: [(p, rows, cols)], [] where a phase has no tap."""
    full = lambda k: dict(first=0, step=1, count=k, flipped=False)
    base = dict(q, oy_step=1, ox_step=1, oy0=0, ox0=0, out_h=q["Ho"], out_w=q["Wo"], pt_in=q["pt"], pl_in=q["pl"])
    if not trans:
        return [(base, full(q["KH"]), full(q["KW"]))]
    out = []
    for ph in range(min(q["sh"], q["Ho"])):
        for pw in range(min(q["sw"], q["Wo"])):
            ah = phase_axis(ph, q["sh"], q["dh"], q["pt"], q["KH"], mut, "h")
            aw = phase_axis(pw, q["sw"], q["dw"], q["pl"], q["KW"], mut, "w")
            if ah is None or aw is None:
                return []
            (rows, dh, pt), (cols, dw, pl) = ah, aw
            p = dict(base, dh=dh, pt=pt, dw=dw, pl=pl, KH=rows["count"], KW=cols["count"], sh=1, sw=1)
            p["Ho"] = (q["Ho"] - ph + q["sh"] - 1) // q["sh"] if mut != "phase_ho_floor" else (q["Ho"] - ph) // q["sh"]
            p["Wo"] = (q["Wo"] - pw + q["sw"] - 1) // q["sw"]
            p["M"] = q["N"] * p["Ho"] * p["Wo"]
            p.update(oy_step=q["sh"], ox_step=q["sw"], oy0=0 if mut == "oy0_zero" else ph, ox0=pw)
            if p["Ho"] < 1 or p["Wo"] < 1:        # (a mutation's empty phase)
                continue
            out.append((set_pixel_tiles(p), rows, cols))
    return out


def tma_plan_refusals(case, E, trans):
    """tma_plan's shape conditions (not the environment, device or alignment): why it says no."""
    q = gather_params(case, trans)
    V, BK, why = 16 // E, 128 // E, []
    if not trans and (q["sh"] > 8 or q["sw"] > 8):
        return ["forward stride > 8 (a traversal stride is at most 8)"]
    if q["Cs"] % V or q["R"] % V or (q["G"] > 1 and q["R"] % BK):
        why.append("channels: Cs, R not multiples of 16 bytes or G > 1 with R % BK")
    probs = tma_problems(q, trans)
    if not probs:
        why.append("a stride phase no tap reaches")
    for p, _, _ in probs:
        if p["KH"] * p["KW"] > MAX_TAPS or p["dh"] * (p["KH"] - 1) > 255 or p["dw"] * (p["KW"] - 1) > 255:
            why.append("taps > 64 or im2col offsets > 255")
        for lo, up in (im2col_corners(p["Hs"], p["Ho"], p["pt"], p["sh"]),
                       im2col_corners(p["Ws"], p["Wo"], p["pl"], p["sw"])):
            if not (-128 <= lo <= 127 and -128 <= up <= 127):
                why.append(f"corner ({lo}, {up}) outside [-128, 127]")
        if -(-p["Mt"] // BM) >= 2 ** 31 - 4 or -(-p["Nn"] // 128) > 65535 or p["G"] > 65535:
            why.append("grid")
    return why


def weight_view(w, case, trans):
    """The callers' (G, KH, KW, R, Nn) view of the (K, C / G, KH, KW) weight."""
    G, K, C, KH, KW = case["G"], case["K"], case["C"], case["KH"], case["KW"]
    v = w.reshape(G, K // G, C // G, KH, KW)
    return v.transpose(0, 3, 4, 1, 2) if trans else v.transpose(0, 3, 4, 2, 1)


def weight_kmajor(wv, rows, cols):
    """launch_gather_tma_tn's (G, taps, Nn, R) copy of a problem's taps, in its order."""
    def taps(v, dim, r):
        sl = [slice(None)] * v.ndim
        sl[dim] = slice(r["first"], r["first"] + (r["count"] - 1) * r["step"] + 1, r["step"])
        s = v[tuple(sl)]
        return np.flip(s, dim) if r["flipped"] else s
    t = taps(taps(wv, 1, rows), 2, cols)
    return np.ascontiguousarray(t.swapaxes(-1, -2)).reshape(-1)


def weight_pack(wv, probs, mut=None):
    """tma_weight_pack_kernel (RNNKERN_CONV_TMA_BATCH=1): every element e of the pack of a call's
    problems from the callers' (G, KH, KW, R, Nn) view, by the kernel's own index arithmetic (part i:
    the first with e < end[i]; e - begin = ((g taps + j) Nn + n) R + r; j = jr cols + jc; the tap
    counted from the last where flipped). It should equal the problems' weight_kmajor copies, one
    after the other."""
    G, KH, KW, R, Nn = wv.shape
    ends = np.cumsum([G * rows["count"] * cols["count"] * Nn * R for _, rows, cols in probs])
    e = np.arange(int(ends[-1]))
    i = np.searchsorted(ends, e, side="right")
    rel = e - np.concatenate([[0], ends[:-1]])[i]
    field = lambda axis, key: np.array([q[axis][key] for q in probs])[i]  # noqa: E731
    nr, nc = field(1, "count"), field(2, "count")
    flipped = field(1, "flipped") if mut != "pack_no_flip" else np.zeros_like(nr, dtype=bool)
    r, rel = rel % R, rel // R
    n, rel = rel % Nn, rel // Nn
    taps = nr * nc
    j, g = rel % taps, rel // taps
    jr, jc = (j % nr, j // nr) if mut == "pack_tap_order" else (j // nc, j % nc)
    kh = field(1, "first") + np.where(flipped, nr - 1 - jr, jr) * field(1, "step")
    kw = field(2, "first") + np.where(flipped, nc - 1 - jc, jc) * field(2, "step")
    if mut == "pack_rn_swapped":
        r, n = n % R, r % Nn
    return wv[g, kh, kw, r, n]


# ---------------------------------------------------------------------------------------------
# documented host-side limits

def host_violations(case, E, trans=False, TN=128):
    """The documented limits the two tensor maps and the kernel's own preconditions put on a
    problem (every stride-1 problem of the gather), as the strings of those it breaks (empty: the
    kernel may run it)."""
    N, C, K, G = case["N"], case["C"], case["K"], case["G"]
    BK, bad = BK_OF[E], []
    if not trans and max(case.get("stride", 1), case.get("sh", 1), case.get("sw", 1)) > 8:
        bad.append("conv stride > 8 (elementStrides, the im2col traversal strides, are at most 8)")
    if C % G or K % G:
        bad.append("groups do not divide C and K")
        return bad
    if case["Ho"] < 1 or case["Wo"] < 1 or N < 1 or case["H"] < 1 or case["W"] < 1:
        bad.append("empty output: the bounding box must have non-zero area (Ho, Wo >= 1)")
        return bad
    probs = tma_problems(gather_params(case, trans), trans)
    if not probs:
        bad.append("a stride phase no tap reaches (not a forward problem)")
    for p, _, _ in probs:
        KH, KW, dh, dw = p["KH"], p["KW"], p["dh"], p["dw"]
        Cs, Hs, Ws, R, Nn = p["Cs"], p["Hs"], p["Ws"], p["R"], p["Nn"]
        (lw, uw), (lh, uh) = im2col_corners(Ws, p["Wo"], p["pl"], p["sw"]), im2col_corners(Hs, p["Ho"], p["pt"], p["sh"])
        lower, upper = (lw, lh), (uw, uh)
        for name, v in (("lower", lower), ("upper", upper)):
            if not all(-128 <= x <= 127 for x in v):
                bad.append(f"{name} corner {v} outside [-128, 127] (rank-4 im2col)")
        if not (0 <= (KW - 1) * dw <= 255 and 0 <= (KH - 1) * dh <= 255):
            bad.append(f"im2col offsets up to ({(KW - 1) * dw}, {(KH - 1) * dh}) outside [0, 255] (rank-4)")
        dims = {"A": (Cs, Ws, Hs, N), "B": (R, Nn, G * KH * KW)}
        strides = {"A": (Cs * E, Ws * Cs * E, Hs * Ws * Cs * E), "B": (R * E, Nn * R * E)}
        for m in "AB":
            if not all(1 <= d <= 2 ** 32 for d in dims[m]):
                bad.append(f"{m} globalDim {dims[m]} not in [1, 2^32]")
            if not all(s % 16 == 0 and s < 2 ** 40 for s in strides[m]):
                bad.append(f"{m} globalStrides {strides[m]} not multiples of 16 below 2^40")
        ppc = p["tile_w"] or BM
        if not (BK <= 256 and BK * E <= 128 and 1 <= ppc <= 1024):
            bad.append("channelsPerPixel / pixelsPerColumn limits (<= 256, * E <= 128 for 128B swizzle, <= 1024)")
        if not (BK * E % 16 == 0 and max(BK, TN, 1) <= 256):
            bad.append("B boxDim limits (<= 256, boxDim[0] * E a multiple of 16)")
        if G > 1 and R % BK:
            bad.append("G > 1 with R % BK != 0 (a chunk would read the next group's channels)")
        if KH * KW > MAX_TAPS:
            bad.append(f"{KH * KW} taps > kTmaMaxTaps (s_live)")
    return sorted(set(bad), key=bad.index)


# ---------------------------------------------------------------------------------------------
# the kernel's formulas (what is being checked), with hooks for deliberate mistakes

def kernel_plan(p, E, TN=128, mut=None):
    """The tensor maps, block prologue (tile pixels, s_out, s_live), coordinates, offsets, stage
    layout and descriptors as gather_tma_kernel<T, TN> / launch_gather_tma_tn build them."""
    N, Cs, Hs, Ws, Ho, Wo = (p[k] for k in ("N", "Cs", "Hs", "Ws", "Ho", "Wo"))
    G, R, Nn, KH, KW, dh, dw, pt, pl = (p[k] for k in ("G", "R", "Nn", "KH", "KW", "dh", "dw", "pt", "pl"))
    BK, taps, M = BK_OF[E], KH * KW, p["M"]
    tile_w = p["tile_w"]
    seg = tile_w if tile_w > 0 else BM
    rows = BM // seg
    sh, sw = p["sh"], p["sw"]              # the im2col map's traversal strides (elementStrides)
    cs_h, cs_w = (1, 1) if mut == "corners_unstrided" else (sh, sw)
    (lw, uw), (lh, uh) = im2col_corners(Ws, Wo, pl, cs_w), im2col_corners(Hs, Ho, pt, cs_h)
    lower, upper = [lw, lh], [uw, uh]
    if mut == "upper+1":
        upper[0] += 1
    if mut == "corners_hw_order":
        lower, upper = lower[::-1], upper[::-1]
    ppc = BM if mut == "ppc_bm" else seg
    amap = dict(dims=(Cs, Ws, Hs, N), strides=(Cs * E, Ws * Cs * E, Hs * Ws * Cs * E), lower=tuple(lower),
                upper=tuple(upper), cpp=BK, ppc=ppc, E=E, tstride=(sw, sh))
    bmap = dict(dims=(R, Nn, G * taps), strides=(R * E, Nn * R * E),
                box=(BK, 128 if mut == "b_box_128" else TN, 1), E=E)

    # the block prologue, vectorised over blockIdx.x
    nbx = -(-p["Mt"] // BM)
    bx, tid, hw = np.arange(nbx), np.arange(BM), Ho * Wo

    def row_order():
        m = (bx * BM)[:, None] + tid
        pn = np.where(m < M, m // hw, -1)
        rem = m % hw
        return pn, rem // Wo, rem % Wo

    if tile_w > 0:
        per = p["tiles_h"] * p["tiles_w"]
        t = bx % per
        img0, ho0, wo0 = bx // per, t // p["tiles_w"] * rows, t % p["tiles_w"] * seg
        pho, pwo = ho0[:, None] + tid // seg, wo0[:, None] + tid % seg
        inside = {"out_no_col_mask": pho < Ho, "out_no_row_mask": pwo < Wo}.get(mut, (pho < Ho) & (pwo < Wo))
        pn = np.where(inside, img0[:, None], -1)
    else:
        m0 = bx * BM
        img0 = m0 // hw
        rem = m0 - img0 * hw
        ho0, wo0 = rem // Wo, rem - rem // Wo * Wo
        pn, pho, pwo = row_order()
    # s_out, in output pixels (the kernel's offset is this times Co)
    s_out = np.where(pn >= 0, (pn * p["out_h"] + pho * p["oy_step"] + p["oy0"]) * p["out_w"]
                     + pwo * p["ox_step"] + p["ox0"], -1)
    # s_live: the taps some slot with pn >= 0 reads real input for
    tpn, tpho, tpwo = row_order() if mut == "taps_row_order" else (pn, pho, pwo)
    tpt, tpl = (p["pt_in"], p["pl_in"]) if mut == "taps_unflipped" else (pt, pl)
    tsh, tsw = (1, 1) if mut == "taps_unstrided" else (sh, sw)
    tp = np.arange(taps)
    hs = tpho[..., None] * tsh - tpt + (tp // KW) * dh
    ws = tpwo[..., None] * tsw - tpl + (tp % KW) * dw
    live = ((tpn[..., None] >= 0) & (hs >= 0) & (hs < Hs) & (ws >= 0) & (ws < Ws)).any(axis=1)   # (nbx, taps)

    loads = np.minimum(rows, Ho - ho0) if tile_w > 0 else np.ones(nbx, np.int64)
    if mut == "loads_unclipped":
        loads = np.full(nbx, rows)

    def tx_bytes(L):                 # the producer's arrive_expect_tx
        Lb = rows if (mut == "bytes_unclipped" and tile_w > 0) else L
        return (Lb * seg + TN) * 128

    def a_dst(j):                    # load j's shared offset in the stage
        return j * seg * (64 if mut == "seg_offset_64" else 128)

    def a_base(j):                   # {wo0 sw - pl, (ho0 + j) sh - pt, img0} of load j, j: (nbx, L)
        z = np.zeros_like(j)
        bsw, bsh = (1, 1) if mut == "base_unstrided" else (sw, sh)
        return (wo0[:, None] * bsw - pl + z, (ho0[:, None] + (z if mut == "base_row_no_j" else j)) * bsh - pt,
                img0[:, None] + z)

    def a_channel(g, chunk):         # the c coordinate
        return (0 if mut == "c_without_group" else g * R) + chunk * BK

    def a_offsets(tap):              # {s * dw, r * dh}
        r, s = tap // KW, tap % KW
        return (r * dh, s * dw) if mut == "offsets_hw_order" else (s * dw, r * dh)

    def b_coords(nb, g, tap, chunk):  # {c0, n0, g * taps + tap}, n0 = blockIdx.y * TN
        z = tap * G + g if mut == "b_z_order" else g * taps + tap
        return chunk * BK, nb * (128 if mut == "n0_128" else TN), z

    step = 16 if mut == "ks16" else 32
    wg_off = 4096 if mut == "wg4096" else 8192
    sbo = 512 if mut == "sbo512" else 1024

    def desc_a(base, wg, ks):        # wgmma_desc_sw128(ring + st * stage + cw * 64 * 128 + ks * 32)
        return desc_encode(base + wg * wg_off + ks * step, 16, sbo)

    def desc_b(base, ks):            # wgmma_desc_sw128(ring + st * stage + BM * 128 + ks * 32)
        return desc_encode(base + ks * step, 16, sbo)

    stages = 5 if (TN == 128 or mut == "stages5") else 4                     # TmaTile<TN>
    stage_bytes = (BM + (128 if mut == "stage_bytes_bn128" else TN)) * 128
    return dict(amap=amap, bmap=bmap, BK=BK, R=R, Nn=Nn, G=G, taps=taps, TN=TN, seg=seg, rows=rows, nbx=nbx,
                wo0=wo0, ho0=ho0, img0=img0, s_out=s_out, live=live, loads=loads, tx_bytes=tx_bytes, a_dst=a_dst,
                a_base=a_base, a_channel=a_channel, a_offsets=a_offsets, b_coords=b_coords, desc_a=desc_a,
                desc_b=desc_b, stages=stages, stage_bytes=stage_bytes, b_off=BM * (64 if mut == "b_off_bm64" else 128),
                smem_bytes=stages * stage_bytes + 1024, static_bytes=2 * stages * 8 + MAX_TAPS * 4 + BM * 8,
                ldc=TN + 8, mut=mut)


def smem_total(TN):
    """TmaTile<TN>::kSmemBytes plus the kernel's static shared arrays."""
    S = 5 if TN == 128 else 4
    return S * (BM + TN) * 128 + 1024 + 2 * S * 8 + MAX_TAPS * 4 + BM * 8


def layout_problems(plan):
    """The stage ring against the documented limits and its own aliasing."""
    S, SB, TN, bad = plan["stages"], plan["stage_bytes"], plan["TN"], []
    if S * SB + 1023 > plan["smem_bytes"]:
        bad.append("the 1024-aligned ring does not fit the dynamic allocation")
    if plan["smem_bytes"] + plan["static_bytes"] > SMEM_MAX:
        bad.append(f"{plan['smem_bytes'] + plan['static_bytes']} bytes of shared memory a block (sm_90: {SMEM_MAX})")
    if BM * plan["ldc"] * 4 > S * SB:
        bad.append("the epilogue's staging tile does not fit the ring it aliases")
    if SB % 1024 or plan["b_off"] % 1024:
        bad.append("a stage or its B tile is not on a 1024-byte boundary (descriptor base offset 0)")
    if plan["tx_bytes"](plan["rows"]) > TX_MAX:
        bad.append("expect_tx beyond the mbarrier tx-count range")
    if plan["static_bytes"] + plan["smem_bytes"] > 1 << 18:
        bad.append("shared addresses past the descriptors' 14-bit start field")
    return bad


# ---------------------------------------------------------------------------------------------
# the documented hardware

def swz128(addr):
    """PTX 5.5.7, 128-byte swizzle, 16-byte atomicity, pattern from a 1024-byte boundary: chunk c of
    line r lands at chunk c ^ r."""
    return addr ^ (((addr >> 7) & 7) << 4)


def desc_encode(start, lbo, sbo, mode=1, base_offset=0):
    """PTX 9.7.15.5.1.2.2: a 64-bit wgmma shared-memory matrix descriptor."""
    enc = lambda x: (x & 0x3FFFF) >> 4
    return enc(start) | enc(lbo) << 16 | enc(sbo) << 32 | (base_offset & 7) << 49 | mode << 62


def wgmma_k_major_bytes(desc, rows, E):
    """Shared byte address of every byte of a K-major rows x (32 bytes of k) operand read through
    desc (128B swizzle): shape (rows, 2T, E), T = 16 / E elements a 16-byte chunk."""
    start, sbo = (desc & 0x3FFF) << 4, ((desc >> 32) & 0x3FFF) << 4
    base_offset, mode = (desc >> 49) & 7, desc >> 62
    assert mode == 1 and base_offset == 0, "model covers the 128B swizzle with patterns on 1024-byte boundaries"
    T = 16 // E
    r = np.arange(rows)[:, None, None]
    k = np.arange(2 * T)[None, :, None]
    b = np.arange(E)[None, None, :]
    # ((8,m),(T,2)):((8T,SBO),(1,T)) in elements -> bytes; LBO unused for swizzled K-major
    return swz128(start + (r % 8) * 128 + (r // 8) * sbo + (k % T) * E + (k // T) * 16 + b)


def tma_box_bytes(dst, rows, E):
    """Shared byte address of every byte of a rows x 128-byte box written at dst with the 128B
    swizzle (row i, element j, byte b)."""
    i = np.arange(rows)[:, None, None]
    j = np.arange(ROW // E)[None, :, None]
    b = np.arange(E)[None, None, :]
    return swz128(dst + i * ROW + j * E + b)


def tma_im2col(gmem, amap, w, h, n, ow, oh, c, issued=None):
    """cp.async.bulk.tensor.4d im2col: the ppc x cpp box each instruction lands. w, h, n, ow, oh
    broadcast to one shape S1 (the instruction's filter base and im2col offsets), c to S2 (its
    channel start); returns S1 + S2 + (ppc, cpp), the walk statistics over the instructions
    `issued` (broadcast to S1) and the in-tensor mask of each walked pixel (S1 + (ppc,))."""
    C, W, H, N = amap["dims"]
    sW, sH, sN = amap["strides"]
    (lw, lh), (uw, uh), ppc, cpp, E = amap["lower"], amap["upper"], amap["ppc"], amap["cpp"], amap["E"]
    tw, th = amap.get("tstride", (1, 1))
    assert sW % E == 0 and sH % E == 0 and sN % E == 0
    assert 1 <= tw <= 8 and 1 <= th <= 8, "elementStrides (traversal strides) in [1, 8]"
    assert W + uw - lw > 0 and H + uh - lh > 0, "empty bounding box"
    bw, bh = -(-(W + uw - lw) // tw), -(-(H + uh - lh) // th)   # filter-base positions along W and H
    w, h, n, ow, oh = np.broadcast_arrays(*(np.asarray(v, np.int64) for v in (w, h, n, ow, oh)))
    iss = np.ones(w.shape, bool) if issued is None else np.broadcast_to(issued, w.shape)
    inbox = (w >= lw) & (w <= W - 1 + uw) & (h >= lh) & (h <= H - 1 + uh)
    assert inbox[iss].all(), "the filter base must be inside the bounding box"
    assert (((w - lw) % tw == 0) & ((h - lh) % th == 0))[iss].all(), \
        "the filter base off the traversal-stride lattice of the bounding box (not modelled)"
    assert ((ow >= 0) & (ow <= 255) & (oh >= 0) & (oh <= 255))[iss].all(), "im2col offsets outside [0, 255]"
    assert ((n >= 0) & (n < N))[iss].all(), "image coordinate outside the tensor"
    pos = ((n * bh + (h - lh) // th) * bw + (w - lw) // tw)[..., None] + np.arange(ppc)   # the NHW walk
    pn, rem = pos // (bh * bw), pos % (bh * bw)
    ph = lh + rem // bw * th + oh[..., None]
    pw = lw + rem % bw * tw + ow[..., None]
    ok_r = (pn < N) & (ph >= 0) & (ph < H) & (pw >= 0) & (pw < W)
    off_r = np.where(ok_r, (pn * sN + ph * sH + pw * sW) // E, 0)
    ch = np.asarray(c, np.int64)[..., None] + np.arange(cpp)
    ok_c = (ch >= 0) & (ch < C)
    off_c = np.where(ok_c, ch, 0)
    s1, s2 = off_r.shape[:-1], off_c.shape[:-1]
    o_r = off_r.reshape(s1 + (1,) * len(s2) + (ppc, 1))
    o_c = off_c.reshape((1,) * len(s1) + s2 + (1, cpp))
    k_r = ok_r.reshape(s1 + (1,) * len(s2) + (ppc, 1))
    k_c = ok_c.reshape((1,) * len(s1) + s2 + (1, cpp))
    vals = np.where(k_r & k_c, gmem[o_r + o_c], 0)
    stats = dict(past_batch=int(((pn >= N).any(axis=-1) & iss).sum()),
                 crosses_image=int(((pn != pn[..., :1]).any(axis=-1) & iss).sum()),
                 wraps_row=int(((rem // bw != (rem // bw)[..., :1]).any(axis=-1) & iss).sum()))
    return vals, stats, ok_r


def tma_tiled(gmem, bmap, c0, n0, z):
    """cp.async.bulk.tensor.3d tile: the {BK, rows, 1} box each instruction lands, (rows, BK)."""
    R, Nn, Z = bmap["dims"]
    s1, s2 = bmap["strides"]
    bk, bn, _ = bmap["box"]
    E = bmap["E"]
    assert s1 % E == 0 and s2 % E == 0
    c0, n0, z = np.broadcast_arrays(*(np.asarray(v, np.int64) for v in (c0, n0, z)))
    cc = c0[..., None, None] + np.arange(bk)
    nn = n0[..., None, None] + np.arange(bn)[:, None]
    zz = z[..., None, None]
    ok = (cc >= 0) & (cc < R) & (nn >= 0) & (nn < Nn) & (zz >= 0) & (zz < Z)
    off = np.where(ok, cc + nn * (s1 // E) + zz * (s2 // E), 0)
    return np.where(ok, gmem[off], 0)


def copy_bytes(amap_or_bmap, tiled):
    """Bytes one copy delivers (complete-tx): its whole box, zero-filled bytes included."""
    if tiled:
        bk, bn, bz = amap_or_bmap["box"]
        return bk * bn * bz * amap_or_bmap["E"]
    return amap_or_bmap["ppc"] * amap_or_bmap["cpp"] * amap_or_bmap["E"]


# ---------------------------------------------------------------------------------------------
# shared memory: byte model of one stage and the composite maps it gives

_STAGE_CACHE = {}


def stage_model(plan, E, L, rng=None):
    """The last stage of the ring byte by byte, L im2col boxes and the B box written over stale
    bytes, read back through the descriptors. Returns dict(mapA (2, nks, 64, 2T): flat index into
    the L loads' (L * ppc, BK) elements, -1 for bytes no copy of the stage wrote (stale);
    mapB (nks, TN, 2T) into the B box's (rows, BK); problems; logical: the maps are the slots'
    slices (slot i = load i // seg, row i % seg); bytes_ok: a random tile read back byte by byte
    agrees with the maps)."""
    key = (E, plan["TN"], plan["seg"], plan["amap"]["ppc"], L, plan["mut"], rng is not None)
    if key in _STAGE_CACHE:
        return _STAGE_CACHE[key]
    BK, TN, seg, ppc = plan["BK"], plan["TN"], plan["seg"], plan["amap"]["ppc"]
    S, SB, boff = plan["stages"], plan["stage_bytes"], plan["b_off"]
    nks, T = ROW // KB, 16 // E
    problems = []
    raw = -(-plan["static_bytes"] // 16) * 16 + 16      # the dynamic window, not 1024-aligned
    ring = (raw + 1023) & ~1023
    base = ring + (S - 1) * SB
    end = raw + plan["smem_bytes"]
    if base + SB > end:
        problems.append("the last stage runs past the dynamic allocation")
    BOFF = 1 << 22
    brows = plan["bmap"]["box"][1]
    waddr, wcode = [], []
    for j in range(L):
        dst = base + plan["a_dst"](j)
        if dst % 128:
            problems.append("an im2col copy's shared destination is not 128-byte aligned")
        waddr.append(tma_box_bytes(dst, ppc, E).reshape(-1))
        wcode.append(j * ppc * ROW + np.arange(ppc * ROW))
    waddr.append(tma_box_bytes(base + boff, brows, E).reshape(-1))
    wcode.append(BOFF + np.arange(brows * ROW))
    wa, wc = np.concatenate(waddr), np.concatenate(wcode)
    if wa.min() < base or wa.max() >= base + SB:
        problems.append("a copy writes outside its stage (into another stage or past the ring)")
    size = max(end, int(wa.max()) + 1) + 4096
    if np.bincount(wa, minlength=size).max() > 1:
        problems.append("two copies of one stage write the same shared bytes (their order is undefined)")
    owner = np.full(size, -1, np.int64)
    owner[wa] = wc
    out = dict(problems=problems)
    exp = {}
    for name, lo, nrows, wgs in (("A", base, BM, 2), ("B", base + boff, TN, 1)):
        rb = np.stack([wgmma_k_major_bytes(plan["desc_a"](base, wg, ks), 64, E) if name == "A"
                       else wgmma_k_major_bytes(plan["desc_b"](base + boff, ks), TN, E)
                       for wg in range(wgs) for ks in range(nks)])
        hi = lo + nrows * ROW
        inside = (rb >= lo) & (rb < hi)
        if not inside.all():
            problems.append(f"{name}: wgmma reads outside the tile")
        counts = np.bincount(rb[inside].reshape(-1) - lo, minlength=hi - lo)
        if not (counts == 1).all():
            problems.append(f"{name}: wgmma does not read each tile byte exactly once per 128-byte chunk")
        got = owner[np.clip(rb, 0, size - 1)]
        mine = (got >= BOFF) if name == "B" else ((got >= 0) & (got < BOFF))
        rel = got - (BOFF if name == "B" else 0)
        stale = (got == -1).all(-1)
        consistent = mine.all(-1) & (rel == rel[..., :1] + np.arange(E)).all(-1) & (rel[..., 0] % E == 0)
        if not (consistent | stale).all():
            problems.append(f"{name}: an operand element reads bytes of another tile or of several elements")
        idx = np.where(consistent, rel[..., 0] // E, -1)
        out["map" + name] = idx.reshape((wgs, nks, 64, 2 * T)) if name == "A" else idx
        rr = np.arange(64 if name == "A" else TN)[None, None, :, None]
        if name == "A":
            slot = 64 * np.arange(2)[:, None, None, None] + rr
            col = np.arange(nks)[None, :, None, None] * 2 * T + np.arange(2 * T)
            exp["A"] = np.where(slot < L * seg, slot * BK + col, -1)
        else:
            col = np.arange(nks)[:, None, None] * 2 * T + np.arange(2 * T)
            exp["B"] = np.where(rr[0] < brows, rr[0] * BK + col, -1)
    out["logical"] = (ppc == seg and np.array_equal(out["mapA"], exp["A"]) and np.array_equal(out["mapB"], exp["B"]))
    if rng is not None:                # a random tile, byte by byte, over random stale bytes
        dt = {2: np.int16, 4: np.int32}[E]
        smem = rng.integers(0, 256, size).astype(np.uint8)
        la = rng.integers(-30000, 30000, L * ppc * BK).astype(dt)
        lb = rng.integers(-30000, 30000, brows * BK).astype(dt)
        data = np.concatenate([la.view(np.uint8), lb.view(np.uint8)])
        code_to_data = np.where(wc >= BOFF, wc - BOFF + la.size * E, wc)
        smem[wa] = data[code_to_data]
        ok = True
        for name, tile in (("A", la), ("B", lb)):
            m = out["map" + name]
            for pos in np.ndindex(m.shape[:-2]):
                d = plan["desc_a"](base, *pos) if name == "A" else plan["desc_b"](base + boff, *pos)
                op = smem[wgmma_k_major_bytes(d, 64 if name == "A" else TN, E)].copy().view(dt)[..., 0]
                mm = m[pos]
                ok &= np.array_equal(op[mm >= 0], tile[mm[mm >= 0]])
        out["bytes_ok"] = bool(ok)
    _STAGE_CACHE[key] = out
    return out


def epilogue_check(TN, mut=None):
    """The consumers' staging of their accumulators into Cs[m][n] (LDC = TN + 8) and the block's
    store loop, against the documented accumulator fragment: each D element staged once, at
    [m][n], and read once by the loop; the staging tile inside the ring it aliases."""
    LDC, nreg = TN + 8, TN // 2
    nj = (128 if mut == "frag_n128" else TN) // 8
    t = np.arange(128, 384)                                   # the consumer warpgroups' threads
    wg, warp, lane = t // 128, t // 32 % 4, t % 32
    i = np.arange(nreg)                                       # documented: acc[i] of (warp, lane)
    d_row = (wg - 1)[:, None] * 64 + 16 * warp[:, None] + lane[:, None] // 4 + 8 * ((i // 2) % 2)
    d_col = 8 * (i // 4) + 2 * (lane[:, None] % 4) + i % 2
    j, h, e = (a.reshape(-1) for a in np.meshgrid(np.arange(nj), np.arange(2), np.arange(2), indexing="ij"))
    reg = 4 * j + 2 * h + e                                   # the kernel's float2 stores
    gq, tq = lane // 4, lane % 4
    row0 = (wg - 1) * 64 + warp * 16 + gq
    addr = (row0[:, None] + (h if mut == "frag_row_h" else 8 * h)) * LDC + j * 8 + 2 * tq[:, None] + e
    val = (d_row * TN + d_col)[:, reg]
    bad = []
    if np.bincount(addr.reshape(-1), minlength=BM * LDC).max() > 1:
        bad.append("two accumulators staged at one Cs element")
    cs = np.full(max(BM * LDC, addr.max() + 1), -1, np.int64)
    cs[addr.reshape(-1)] = val.reshape(-1)
    m, n = np.divmod(np.arange(BM * TN), TN)
    if not np.array_equal(cs[m * LDC + n], m * TN + n):
        bad.append("the store loop reads a Cs element that is not D[m][n]")
    S, SB = (5, (BM + 128) * 128) if TN == 128 else (4, (BM + 256) * 128)
    if (addr.max() + 1) * 4 > S * SB:
        bad.append("the staging tile runs past the ring")
    return bad + store_check(TN, mut)


def store_check(TN, mut=None):
    """The block's store loops: 16-byte runs of VE channels where Co % VE == 0 and Nn % VE == 0
    (and out 16-byte aligned), else one element a thread. For full and ragged column tiles each
    (slot, channel n0 + n < Nn) must be stored exactly once, from Cs[m][n], nothing past Nn, and a
    16-byte store at a 16-byte-aligned element offset o + co."""
    bad = []
    for E in (2, 4):
        VE = 16 // E
        for Nn in (TN, TN + 8, TN + 4, TN + 2, 72):
            G, pixels = 2, 3
            Co = G * Nn
            vec = (Co % VE == 0 and Nn % VE == 0) or mut == "vec_any_nn"
            for nb in range(-(-Nn // TN)):
                n0 = nb * TN
                got = np.zeros((BM, TN + VE), np.int64)
                if vec:
                    idx = np.arange(BM * TN // VE)
                    m = idx // (TN // VE)
                    n = idx % (TN // VE) * (1 if mut == "vec_n_unscaled" else VE)
                    keep = n0 + n < Nn
                    for e in range(VE):
                        np.add.at(got, (m[keep], n[keep] + e), 1)
                    co = (np.arange(G)[:, None] * Nn + n0 + n[keep][None, :])
                    o = (np.arange(pixels) * Co)[:, None, None]
                    if ((o + co[None]) % VE).any():
                        bad.append(f"E {E}, Nn {Nn}: a 16-byte store at an element offset not a multiple of {VE}")
                else:
                    m, n = np.divmod(np.arange(BM * TN), TN)
                    keep = n0 + n < Nn
                    np.add.at(got, (m[keep], n[keep]), 1)
                want = np.zeros_like(got)
                want[:, :TN] = (n0 + np.arange(TN) < Nn)[None, :]
                if not np.array_equal(got, want):
                    bad.append(f"E {E}, Nn {Nn}, n0 {n0}: the {'16-byte' if vec else 'scalar'} store loop does not "
                               f"store each channel below Nn once (and none past it)")
    return sorted(set(bad), key=bad.index)


# ---------------------------------------------------------------------------------------------
# one convolution, end to end

def reference(x, w, case):
    """y[n, ho, wo, g*Nn + k'] = sum_{r,s,c} x[n, ho sh - pt + r dh, wo sw - pl + s dw, g*R + c]
    w[g*Nn + k', c, r, s]."""
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, dh, dw, pt, pl, Ho, Wo = (case[k] for k in ("KH", "KW", "dh", "dw", "pt", "pl", "Ho", "Wo"))
    sh, sw = case.get("sh", 1), case.get("sw", 1)
    R, Nn = C // G, K // G
    y = np.zeros((N * Ho * Wo, K))
    for r in range(KH):
        hi = np.arange(Ho) * sh - pt + r * dh
        for s in range(KW):
            wi = np.arange(Wo) * sw - pl + s * dw
            mask = ((hi >= 0) & (hi < H))[:, None] & ((wi >= 0) & (wi < W))[None, :]
            xs = x[:, np.clip(hi, 0, H - 1)][:, :, np.clip(wi, 0, W - 1)] * mask[None, :, :, None]
            xs = xs.reshape(N * Ho * Wo, C)
            for g in range(G):
                y[:, g * Nn:(g + 1) * Nn] += xs[:, g * R:(g + 1) * R] @ w[g * Nn:(g + 1) * Nn, :, r, s].T
    return y


def grad_input_reference(gy, w, case):
    """gx = d<conv(x, w), gy>/dx: gx[n, o sh - pt + r dh, o' sw - pl + s dw, c] += gy[n, o, o', k] w[k, c, r, s]."""
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, dh, dw, pt, pl, Ho, Wo = (case[k] for k in ("KH", "KW", "dh", "dw", "pt", "pl", "Ho", "Wo"))
    sh, sw = case.get("sh", 1), case.get("sw", 1)
    Cg, Kg = C // G, K // G
    gx = np.zeros((N, H, W, C))
    for r in range(KH):
        hi = np.arange(Ho) * sh - pt + r * dh
        vh = (hi >= 0) & (hi < H)
        for s in range(KW):
            wi = np.arange(Wo) * sw - pl + s * dw
            vw = (wi >= 0) & (wi < W)
            if not vh.any() or not vw.any():
                continue
            gs = gy[:, vh][:, :, vw]
            for g in range(G):
                gx[:, hi[vh][:, None], wi[vw][None, :], g * Cg:(g + 1) * Cg] += \
                    gs[..., g * Kg:(g + 1) * Kg] @ w[g * Kg:(g + 1) * Kg, :, r, s]
    return gx.reshape(N * H * W, C)


def replay_problem(prob, src, wv, E, TN, mut, out, cnt, info):
    """Replays gather_tma_kernel on one stride-1 problem; its stores go to out / cnt (the whole
    output, pixels x channels). Returns None, or what went wrong."""
    p, rows_r, cols_r = prob
    plan = kernel_plan(p, E, TN, mut)
    bad = layout_problems(plan)
    if bad:
        return "; ".join(bad)
    G, R, Nn, taps, BK, seg = plan["G"], plan["R"], plan["Nn"], plan["taps"], plan["BK"], plan["seg"]
    amap, bmap = plan["amap"], plan["bmap"]
    chunks, nbn, nbx, ppc = -(-R // BK), -(-Nn // TN), plan["nbx"], amap["ppc"]
    loads, live, s_out = plan["loads"], plan["live"], plan["s_out"]
    Lmax = int(loads.max())
    issued = np.arange(Lmax)[None, :] < loads[:, None]

    # the full barrier: expect_tx against the bytes the stage's copies deliver
    for L in np.unique(loads):
        got, tx = int(L) * copy_bytes(amap, False) + copy_bytes(bmap, True), plan["tx_bytes"](int(L))
        if tx != got:
            return (f"expect_tx {tx} bytes but the stage's {int(L)} + 1 copies deliver {got} "
                    f"({'the consumers never wake' if tx > got else 'a stage read while written'})")

    # A: every issued im2col copy of every live tap
    jj = np.where(issued, np.arange(Lmax)[None, :], 0)
    bw_, bh_, bn_ = plan["a_base"](jj)                                   # (nbx, Lmax)
    offs = [plan["a_offsets"](t) for t in range(taps)]
    ow = np.array([o[0] for o in offs])[None, None, :]
    oh = np.array([o[1] for o in offs])[None, None, :]
    cch = np.array([[plan["a_channel"](g, ch) for ch in range(chunks)] for g in range(G)])
    A, st, inb = tma_im2col(src, amap, bw_[..., None], bh_[..., None], bn_[..., None], ow, oh, cch,
                            issued=issued[..., None] & live[:, None, :])  # (nbx, Lmax, taps, G, chunks, ppc, BK)
    for k in ("past_batch", "crosses_image", "wraps_row"):
        info[k] = info.get(k, 0) + st[k]
    info["loads"] = info.get("loads", 0) + int((issued[..., None] & live[:, None, :]).sum()) * G * chunks

    # s_live never drops a tap some stored pixel reads real input through
    if ppc == seg:
        sv = (s_out >= 0).reshape(nbx, -1, seg)[:, :Lmax]
        reads = (inb & sv[:, :, None, :] & issued[:, :, None, None]).any(axis=(1, 3))    # (nbx, taps)
        dropped = reads & ~live
        if dropped.any():
            b, t = np.argwhere(dropped)[0]
            return (f"s_live drops tap {t} of block {b} (ho0 {plan['ho0'][b]}, wo0 {plan['wo0'][b]}), which a stored "
                    f"pixel reads real input through")
    info["taps_skipped"] = info.get("taps_skipped", 0) + int((~live).sum())
    info["block_taps"] = info.get("block_taps", 0) + live.size
    if plan["seg"] < BM:
        info["tiles2d"] = info.get("tiles2d", 0) + nbx
        info["stale_rows"] = info.get("stale_rows", 0) + int(((plan["rows"] - loads) * seg).sum())
        info["ragged_cols"] = info.get("ragged_cols", 0) + int((plan["wo0"] + seg > p["Wo"]).sum())

    # B
    co = np.array([[[[plan["b_coords"](j, g, t, ch) for ch in range(chunks)] for g in range(G)]
                    for t in range(taps)] for j in range(nbn)])        # (nbn, taps, G, chunks, 3)
    gmem_b = weight_kmajor(wv, rows_r, cols_r)
    B = tma_tiled(gmem_b, bmap, co[..., 0], co[..., 1], co[..., 2])   # (nbn, taps, G, chunks, rows, BK)

    nks, T2 = ROW // KB, 2 * (16 // E)
    Npix, Co = out.shape
    ncol = np.arange(nbn * TN)
    nn = (ncol // TN) * (plan["b_coords"](1, 0, 0, 0)[1]) + ncol % TN   # n0 + n
    cv = nn < Nn
    sb, stp = np.nonzero(~live)
    A[sb, :, stp] = 0.0                 # skipped taps have no k-steps: they add nothing
    F = Lmax * ppc * BK
    Ag = A.transpose(3, 0, 2, 4, 1, 5, 6).reshape(G, nbx, taps, chunks, F)
    Bg = B.transpose(2, 0, 1, 3, 4, 5).reshape(G, nbn, taps, chunks, -1)
    for L in np.unique(loads):
        sm = stage_model(plan, E, int(L))
        if sm["problems"]:
            return "; ".join(sm["problems"])
        mA, mB = sm["mapA"], sm["mapB"]
        blk = np.nonzero(loads == L)[0]
        nbL = len(blk)
        Af = Ag if nbL == nbx else Ag[:, blk]
        if (mA < 0).any():              # rows no copy of the stage wrote: stale (NaN) in the live taps' k-steps
            fill = np.where(live[blk], np.nan, 0.0)[None, :, :, None, None]
            Af = np.concatenate([Af, np.broadcast_to(fill, Af.shape[:-1] + (1,))], -1)
            mA = np.where(mA >= 0, mA, F)
        Bf = Bg
        if (mB < 0).any():
            Bf = np.concatenate([Bg, np.full(Bg.shape[:-1] + (1,), np.nan)], -1)
            mB = np.where(mB >= 0, mB, Bg.shape[-1])
        so = s_out[blk].reshape(-1)
        rv = so >= 0
        if (so >= Npix).any():
            return f"a slot is stored past the output (pixel {so.max()} of {Npix})"
        for g in range(G):
            opA = Af[g][..., mA]                 # (nbL, taps, chunks, 2, nks, 64, T2)
            opB = Bf[g][..., mB]                 # (nbn, taps, chunks, nks, TN, T2)
            # warpgroup wg's wgmma: D[64 wg + r, n] += sum_k opA[wg, ks][r, k] opB[ks][n, k]
            Ae = opA.transpose(0, 3, 5, 1, 2, 4, 6).reshape(nbL * BM, taps * chunks * nks * T2)
            Be = opB.transpose(0, 4, 1, 2, 3, 5).reshape(nbn * TN, taps * chunks * nks * T2)
            with np.errstate(invalid="ignore"):
                D = Ae @ Be.T
            if seg == BM and ((D[~rv] != 0).any() or (D[:, ~cv] != 0).any()):
                return f"group {g}: rows past the output or columns >= Nn not zero-filled"
            rows_i, cols_i = so[rv], g * Nn + nn[cv]
            out[np.ix_(rows_i, cols_i)] = D[np.ix_(rv, cv)]
            cnt[:, g * Nn:(g + 1) * Nn] += np.outer(np.bincount(rows_i, minlength=Npix),
                                                    np.bincount(cols_i - g * Nn, minlength=Nn)[:Nn])
    return None


def run_case(case, E, rng, mut=None, trans=False, TN=128, info=None):
    """Replays the kernel (every problem of the gather) on one convolution (trans: its grad_input);
    returns None when every output matches, else a description of the first mismatch or broken
    documented requirement."""
    try:
        return _run_case(case, E, rng, mut, trans, TN, {} if info is None else info)
    except AssertionError as e:
        return f"breaks a documented requirement: {e}"


def _run_case(case, E, rng, mut, trans, TN, info):
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, Ho, Wo = case["KH"], case["KW"], case["Ho"], case["Wo"]
    w = rng.integers(-2, 3, (K, C // G, KH, KW)).astype(np.float64)       # OIHW
    x = rng.integers(-2, 3, (N, H, W, C)).astype(np.float64)              # NHWC (channels_last memory)
    if trans:
        gy = rng.integers(-2, 3, (N, Ho, Wo, K)).astype(np.float64)
        want = grad_input_reference(gy, w, case)                         # (N*H*W, C)
        y = reference(x, w, case)
        if (y * gy.reshape(-1, K)).sum() != (x.reshape(-1, C) * want).sum():
            return "the float64 grad_input is not the adjoint of the convolution (reference bug)"
        src = gy.reshape(-1)
    else:
        want = reference(x, w, case)                                     # (N*Ho*Wo, K)
        src = x.reshape(-1)
    q = gather_params(case, trans)
    probs = tma_problems(q, trans, mut)
    if not probs:
        return "no TMA problem (a stride phase no tap reaches)"
    wv = weight_view(w, case, trans)
    out = np.full(want.shape, np.nan)
    cnt = np.zeros(want.shape, np.int64)
    info["problems"] = info.get("problems", 0) + len(probs)
    for prob in probs:
        err = replay_problem(prob, src, wv, E, TN, mut, out, cnt, info)
        if err:
            return err
    OH, OW = q["Ho"], q["Wo"]

    def where(m):
        n_, rem = m // (OH * OW), m % (OH * OW)
        return f"n={n_}, h={rem // OW}, w={rem % OW}"
    if (cnt != 1).any():
        m, c = np.argwhere(cnt != 1)[0]
        return (f"{'gx' if trans else 'y'}[{where(m)}, c={c}] stored {cnt[m, c]} times "
                f"({int((cnt != 1).sum())} elements)")
    bad = np.argwhere(~(out == want))
    if len(bad):
        m, c = bad[0]
        return (f"{'gx' if trans else 'y'}[{where(m)}, c={c}] replay {out[m, c]:g} direct {want[m, c]:g} "
                f"({len(bad)} of {want.size} differ)")
    return None


# ---------------------------------------------------------------------------------------------
# cases

def out_size(n, lo, hi, d, k, s=1):
    return (n + lo + hi - d * (k - 1) - 1) // s + 1


def make_case(N, H, W, C, K, G, KH, KW, dh, dw, pt, pb, pl, pr, mode="given", sh=1, sw=1):
    return dict(N=N, H=H, W=W, C=C, K=K, G=G, KH=KH, KW=KW, dh=dh, dw=dw, pt=pt, pl=pl, pb=pb, pr=pr, sh=sh, sw=sw,
                Ho=out_size(H, pt, pb, dh, KH, sh), Wo=out_size(W, pl, pr, dw, KW, sw), mode=mode)


def work_of(case, E, trans, TN):
    BK, work = BK_OF[E], 0
    for p, _, _ in tma_problems(gather_params(case, trans), trans):
        cpad = p["G"] * -(-p["R"] // BK) * BK
        taps = p["KH"] * p["KW"]
        work += -(-p["Mt"] // BM) * BM * taps * (cpad + 8) + -(-p["Nn"] // TN) * TN * taps * cpad
    return work


def random_case(rng, E, cap, trans=False, TN=128, wide=False, refused=None, strided=False):
    """A random problem the kernel runs (tma_plan says yes and no documented limit breaks); the
    draws tma_plan refuses are counted in refused[reason]."""
    BK = BK_OF[E]
    while True:
        N, H, W = (int(v) for v in (rng.integers(1, 4), rng.integers(1, 41), rng.integers(1, 41)))
        G = int(rng.choice([1, 2]))
        if G == 1:      # a: the reduced channels a group (R), b: the produced ones (Nn) times G
            a, b = 8 * int(rng.integers(1, 25)), 8 * int(rng.integers(17, 60) if wide else rng.integers(1, 33))
        else:
            a, b = 2 * BK * int(rng.integers(1, 4)), 16 * int(rng.integers(9, 30) if wide else rng.integers(1, 21))
        C, K = (b, a) if trans else (a, b)     # grad_input reduces over K, produces C
        KH, KW = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        small = rng.random() < 0.6                     # dilation 1..18, biased small so outputs exist
        dh, dw = (int(rng.integers(1, 4 if small else 19)) for _ in range(2))
        sh = sw = 1
        if (trans and rng.random() < 0.35) or strided:
            sh, sw = (int(rng.integers(1, 4)) if rng.random() < 0.8 else int(rng.integers(1, 9)) for _ in range(2))
        modes = ["symmetric", "same", "asymmetric"] + (["outpad"] if trans else [])
        mode = str(rng.choice(modes))
        if mode == "symmetric":
            ph, pw = int(rng.integers(0, 21)), int(rng.integers(0, 21))
            pt, pb, pl, pr = ph, ph, pw, pw
        elif mode == "same":                            # torch padding='same': left total // 2, right the rest
            th, tw = dh * (KH - 1), dw * (KW - 1)
            pt, pb, pl, pr = th // 2, th - th // 2, tw // 2, tw - tw // 2
        elif mode == "outpad":                          # a transposed convolution with output_padding
            oph, opw = (int(rng.integers(0, max(s, d))) for s, d in ((sh, dh), (sw, dw)))
            pt, pl = int(rng.integers(0, dh * (KH - 1) + 1)), int(rng.integers(0, dw * (KW - 1) + 1))
            pb, pr = pt - oph, pl - opw
        else:
            pt, pb, pl, pr = (int(rng.integers(0, 21)) for _ in range(4))
        case = make_case(N, H, W, C, K, G, KH, KW, dh, dw, pt, pb, pl, pr, mode, sh, sw)
        if case["Ho"] < 1 or case["Wo"] < 1:
            continue
        why = tma_plan_refusals(case, E, trans)
        if why:
            if refused is not None:
                for r in set(why):
                    refused[r] = refused.get(r, 0) + 1
            continue
        if host_violations(case, E, trans, TN):
            continue
        if work_of(case, E, trans, TN) <= cap:
            return case


def fixed_cases(E):
    BK = BK_OF[E]
    return [
        make_case(1, 1, 1, 8, 8, 1, 1, 1, 1, 1, 0, 0, 0, 0),          # M = 1: 127 rows walk past the batch
        make_case(3, 3, 5, 16, 24, 1, 3, 3, 1, 1, 1, 1, 1, 1),        # 45 pixels: one tile spans 3 images
        make_case(2, 16, 8, 40, 136, 1, 2, 2, 1, 1, 0, 1, 0, 1),      # M = 256 exactly, Nn = 136
        make_case(2, 9, 11, 2 * BK, 48, 2, 4, 2, 3, 5, 4, 5, 2, 3),   # 'same', even extents, G = 2
        make_case(1, 7, 1, 24, 16, 1, 5, 1, 2, 1, 4, 4, 0, 0),        # W = 1
        make_case(2, 5, 6, 8, 8, 1, 1, 1, 1, 1, 0, 0, 20, 20),        # 1x1 with pads 20: upper corner +20
        make_case(1, 40, 40, 8, 8, 1, 5, 5, 18, 18, 20, 20, 20, 20),  # dilation 18, K 5 (offset 72)
    ]


def tile2d_cases(E):
    """Forwards that set_pixel_tiles puts on 8 x 16 pixel tiles (ragged rows and columns)."""
    BK = BK_OF[E]
    return [
        make_case(2, 37, 35, 16, 24, 1, 3, 3, 16, 16, 16, 16, 16, 16),     # 3x3 'same' d16, 37 x 35: both ragged
        make_case(1, 32, 32, 24, 40, 1, 3, 3, 18, 18, 18, 18, 18, 18),     # 32x32 d18: 4 of 9 taps a block
        make_case(2, 9, 33, 2 * BK, 32, 2, 2, 2, 5, 33, 2, 3, 16, 17),     # 'same', even extents, G = 2, Ho 9
        make_case(1, 16, 32, 8, 16, 1, 1, 2, 1, 20, 0, 0, 20, 0),          # Wo 32 exact, one-sided pad 20
        make_case(2, 11, 35, 2 * BK, 48, 2, 2, 3, 3, 17, 1, 2, 17, 17),    # the mutation probe
    ]


def strided_cases(E):
    """Forwards at stride > 1: the im2col map's traversal strides (elementStrides {1, sw, sh, 1})."""
    BK = BK_OF[E]
    return [
        make_case(2, 17, 19, 24, 40, 1, 3, 3, 1, 1, 1, 1, 1, 1, sh=2, sw=2),           # 3x3 s2 p1
        make_case(2, 20, 21, 2 * BK, 48, 2, 3, 3, 2, 2, 2, 2, 2, 2, sh=3, sw=3),       # s3 d2, G = 2
        make_case(2, 16, 15, 16, 24, 1, 1, 3, 1, 1, 0, 0, 1, 1, sh=2, sw=2),           # 1 x 3 s2 p(0, 1)
        make_case(1, 33, 40, 8, 16, 1, 1, 1, 1, 1, 0, 0, 0, 0, sh=8, sw=8),            # 1x1 s8
        make_case(1, 32, 32, 8, 24, 1, 7, 7, 1, 1, 3, 3, 3, 3, sh=4, sw=4),            # 7x7 s4 p3
        make_case(2, 20, 40, 16, 24, 1, 3, 3, 18, 18, 18, 18, 18, 18, sh=2, sw=1),     # s (2, 1) on 2-D tiles
        make_case(1, 19, 23, 16, 8, 1, 2, 4, 3, 2, 0, 3, 5, 1, sh=3, sw=5),            # asymmetric everything
    ]


def trans_cases(E):
    """grad_input (and transposed-convolution forwards) of stride-1 and strided convolutions."""
    BK = BK_OF[E]
    return [
        make_case(2, 7, 9, 24, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1),              # 3x3 pad 1
        make_case(2, 9, 11, 48, 2 * BK, 2, 4, 2, 3, 5, 4, 5, 2, 3),         # 'same', even extents, G = 2
        make_case(2, 9, 10, 48, 2 * BK, 2, 3, 2, 2, 3, 1, 3, 2, 0),         # asymmetric, dilation, G = 2
        make_case(1, 13, 12, 16, 24, 1, 3, 3, 2, 2, 2, 1, 2, 1),            # conv_transpose p2 op1 d2 (pb = p - op)
        make_case(2, 10, 40, 16, 24, 1, 3, 3, 2, 17, 2, 2, 17, 17),         # 2-D tiles: d17 'same' along W
        make_case(1, 9, 37, 2 * 16, 2 * BK, 2, 2, 2, 1, 33, 0, 1, 16, 17),  # 2-D tiles, even extent 'same', G = 2
        make_case(1, 1, 1, 8, 8, 1, 1, 1, 1, 1, 0, 0, 0, 0),                # one pixel
        make_case(1, 6, 5, 8, 16, 1, 3, 1, 1, 1, 2, 0, 0, 0),               # pt = d (k - 1): flipped pad 0
        make_case(2, 5, 6, 16, 8, 1, 1, 1, 1, 1, 1, 1, 0, 2),               # 1x1 with padding: flipped pad < 0
        make_case(1, 8, 7, 16, 16, 1, 3, 3, 1, 1, 3, 3, 2, 4),              # pads past the extent: flipped pads < 0
        make_case(2, 17, 19, 24, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1, sh=2, sw=2),      # stride 2: four phases
        make_case(2, 20, 21, 16, 8, 1, 5, 5, 2, 2, 4, 4, 4, 4, sh=3, sw=3),       # stride 3 d2: phases of 1 and 2 taps
        make_case(1, 9, 10, 16, 2 * BK, 2, 4, 4, 1, 1, 1, 1, 1, 1, sh=2, sw=2),   # conv_transpose k4 s2 p1, G = 2
        make_case(1, 40, 41, 8, 16, 1, 3, 3, 3, 18, 3, 3, 18, 18, sh=2, sw=1),    # stride (2, 1), 2-D tiles
    ]


def wide_cases(E):
    """TN = 256 (RNNKERN_CONV_TMA_N=256): forward and transposed mappings past one 256-column tile."""
    BK = BK_OF[E]
    return [
        (make_case(1, 9, 11, 40, 300, 1, 3, 3, 2, 1, 2, 2, 1, 1), False),         # Nn 300: a full and a ragged tile
        (make_case(2, 5, 7, 2 * BK, 512, 2, 3, 2, 1, 2, 1, 1, 1, 1), False),      # G = 2, Nn = 256 exactly
        (make_case(2, 11, 35, 24, 264, 1, 2, 3, 3, 17, 1, 2, 17, 17), False),     # 2-D tiles
        (make_case(1, 8, 9, 264, 16, 1, 3, 3, 1, 2, 1, 1, 2, 2), True),           # grad_input, Nn 264
        (make_case(2, 9, 8, 520, 2 * BK, 2, 3, 3, 1, 1, 1, 1, 1, 1, sh=2, sw=2), True),  # strided, G = 2, Nn 260
    ]


def check_host_limits():
    """The limits themselves: each of these must be refused for the named reason."""
    E, ok = 2, True
    probes = [
        ("empty output", make_case(1, 4, 4, 8, 8, 1, 3, 3, 4, 4, 0, 0, 0, 0), False, "empty output"),
        ("lower corner -129", make_case(1, 4, 4, 8, 8, 1, 1, 1, 1, 1, 0, 0, 129, 0), False, "lower corner"),
        ("upper corner -130", make_case(1, 200, 4, 8, 8, 1, 3, 1, 65, 1, 0, 0, 0, 0), False, "upper corner"),
        ("upper corner +128", make_case(1, 4, 4, 8, 8, 1, 1, 1, 1, 1, 0, 0, 0, 128), False, "upper corner"),
        ("offset 300 with corners in range", make_case(1, 4, 120, 8, 8, 1, 1, 4, 1, 100, 0, 0, 0, 200), False,
         "im2col offsets"),
        ("C * E not a multiple of 16", make_case(1, 4, 4, 4, 8, 1, 1, 1, 1, 1, 0, 0, 0, 0), False, "globalStrides"),
        ("G = 2, R = 32 (bf16)", make_case(1, 4, 4, 64, 8, 2, 1, 1, 1, 1, 0, 0, 0, 0), False, "R % BK"),
        ("stride 9", make_case(1, 20, 20, 8, 8, 1, 1, 1, 1, 1, 0, 0, 0, 0, sh=9, sw=1), False, "stride"),
        ("grad_input, G = 2, K / G = 32 (bf16)", make_case(1, 4, 4, 16, 64, 2, 1, 1, 1, 1, 0, 0, 0, 0), True, "R % BK"),
        ("grad_input, flipped lower corner +129", make_case(1, 140, 4, 8, 8, 1, 1, 1, 1, 1, 129, 0, 0, 0), True,
         "lower corner"),
        ("grad_input, 1 x 3 kernel at stride 2", make_case(1, 8, 8, 8, 8, 1, 1, 3, 1, 1, 0, 0, 1, 1, sh=2, sw=2),
         True, "stride phase"),
        ("grad_input, 9 x 9 kernel (81 taps)", make_case(1, 12, 12, 8, 8, 1, 9, 9, 1, 1, 4, 4, 4, 4), True, "taps"),
    ]
    for name, case, trans, reason in probes:
        v = host_violations(case, E, trans)
        hit = any(reason in s for s in v)
        ok &= hit
        print(f"   host limit, {name}: {'refused' if hit else 'NOT refused'} ({'; '.join(v) or 'no violation'})")
    return ok


def cross_check_tma_plan(rng, n=2000):
    """tma_plan (its shape conditions) against the documented limits: any problem it lets through
    that breaks one is a limit the kernel does not check. Shapes drawn around the limits."""
    leaks, accepted = [], 0
    for _ in range(n):
        E = int(rng.choice([2, 4]))
        trans = bool(rng.random() < 0.6)
        G = int(rng.choice([1, 2, 4]))
        C, K = (8 * G * int(rng.integers(1, 40)) // (2 if rng.random() < 0.1 else 1) for _ in range(2))
        KH, KW = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        dh, dw = (int(rng.integers(1, 4)) if rng.random() < 0.5 else int(rng.integers(1, 70)) for _ in range(2))
        s = (int(rng.integers(1, 5)), int(rng.integers(1, 5))) if trans else \
            tuple(int(rng.integers(1, 10)) if rng.random() < 0.3 else 1 for _ in range(2))
        pads = [int(rng.integers(0, 8)) if rng.random() < 0.5 else int(rng.integers(0, 300)) for _ in range(4)]
        case = make_case(int(rng.integers(1, 4)), int(rng.integers(1, 300)), int(rng.integers(1, 300)), C, K, G,
                         KH, KW, dh, dw, *pads, sh=s[0], sw=s[1])
        if case["Ho"] < 1 or case["Wo"] < 1 or C % G or K % G:
            continue
        if tma_plan_refusals(case, E, trans):
            continue
        accepted += 1
        for TN in (128, 256):
            v = host_violations(case, E, trans, TN)
            if v:
                leaks.append((case, trans, TN, v))
    return accepted, leaks


MUTATIONS = ["upper+1", "corners_hw_order", "offsets_hw_order", "c_without_group", "b_z_order",
             "ks16", "wg4096", "sbo512"]
# new formulas: (mutation, probe kind, TN)
NEW_MUTATIONS = [
    ("pad_off_by_one", "trans", 128), ("pad_w_unflipped", "trans", 128), ("no_tap_flip", "trans", 128),
    ("flip_h_only", "trans", 128), ("oy0_zero", "trans_s", 128),
    ("phase_ho_floor", "trans_s", 128), ("taps_unflipped", "trans2d", 128),
    ("seg_offset_64", "2d", 128), ("bytes_unclipped", "2d", 128), ("loads_unclipped", "2d", 128),
    ("base_row_no_j", "2d", 128), ("ppc_bm", "2d", 128), ("out_no_col_mask", "2d", 128),
    ("out_no_row_mask", "2d", 128), ("taps_row_order", "2d", 128),
    ("b_box_128", "wide", 256), ("stage_bytes_bn128", "wide", 256), ("n0_128", "wide", 256),
    ("b_off_bm64", "wide", 256), ("stages5", "wide", 256),
    ("base_unstrided", "strided", 128), ("corners_unstrided", "strided", 128), ("taps_unstrided", "strided2d", 128),
]


def probes(E):
    BK = BK_OF[E]
    return {
        "fwd": (make_case(2, 7, 9, 2 * BK, 48, 2, 3, 2, 2, 3, 1, 3, 2, 0), False),
        "trans": (make_case(2, 9, 10, 48, 2 * BK, 2, 3, 2, 2, 3, 1, 3, 2, 0), True),
        "trans_s": (make_case(2, 13, 14, 16, 24, 1, 5, 4, 2, 1, 4, 2, 1, 2, sh=3, sw=2), True),
        "trans2d": (make_case(1, 12, 40, 16, 24, 1, 2, 3, 4, 17, 0, 4, 5, 29), True),
        "2d": (make_case(2, 11, 35, 2 * BK, 48, 2, 2, 3, 3, 17, 1, 2, 17, 17), False),
        "wide": (make_case(1, 9, 11, 40, 300, 1, 3, 3, 2, 1, 2, 2, 1, 1), False),
        "strided": (make_case(2, 33, 19, 2 * BK, 48, 2, 3, 3, 1, 2, 1, 1, 2, 2, sh=2, sw=3), False),
        "strided2d": (make_case(2, 20, 40, 16, 24, 1, 3, 3, 18, 18, 18, 18, 18, 18, sh=2, sw=1), False),
    }


def main():
    t0 = time.time()
    rng = np.random.default_rng(2024)
    failures = []

    def fail(msg):
        failures.append(msg)
        print(f"MISMATCH {msg}")

    print("TMA im2col + tiled TMA + 128B swizzle + wgmma K-major descriptors, numpy replay")
    for E in (2, 4):
        BK = BK_OF[E]
        tag = "bf16 (BK 64, k16)" if E == 2 else "tf32 (BK 32, k8)"
        # the stage, byte by byte: row-order tiles, 2-D tiles (8, and fewer loads), TN 128 and 256
        layouts_ok = True
        for TN in (128, 256):
            for tw, Ls in ((0, (1,)), (TILE_W, (8, 3, 1))):
                case = make_case(1, 40, 40, BK, TN, 1, 3, 3, 18, 18, 18, 18, 18, 18)
                p = tma_problems(gather_params(case, False), False)[0][0]
                if not tw:
                    p = dict(p, tile_w=0, Mt=p["M"])
                plan = kernel_plan(p, E, TN)
                for L in Ls:
                    sm = stage_model(plan, E, L, rng)
                    bad = layout_problems(plan) + sm["problems"]
                    if bad or not sm["logical"] or not sm["bytes_ok"]:
                        layouts_ok = False
                        fail(f"{tag}: TN {TN}, {'16' if tw else '128'}-pixel boxes x {L}: "
                             f"{'; '.join(bad) or 'operands are not the slots slices'}")
                if E == 2 and epilogue_check(TN):
                    layouts_ok = False
                    fail(f"TN {TN} epilogue: {'; '.join(epilogue_check(TN))}")
        if layouts_ok:
            print(f"ok: {tag}: one stage byte by byte (A: base + 8192 wg + 32 ks, B: base + 16384 + 32 ks, SBO 1024, "
                  f"LBO 16), TN 128 (m64n128, 5 x 32 KiB stages) and TN 256 (m64n256, B box {{BK, 256, 1}}, "
                  f"4 x 48 KiB stages): one 128-pixel box, or 8 / 3 / 1 16-pixel boxes at j * 2048, every byte "
                  f"written once and read once as its slot's slice, rows no box wrote read as stale; the "
                  f"epilogue stages D[m][n] once and stores each channel below Nn once (16-byte runs where Co and Nn "
                  f"allow, else scalar); {smem_total(128)} / {smem_total(256)} bytes of shared memory a block")

        # the forward, as before (the kernel now puts large-dilation ones on 2-D tiles)
        info = {}
        cases = fixed_cases(E) + [random_case(rng, E, 1_600_000) for _ in range(100 - len(fixed_cases(E)))]
        kinds = dict(symmetric=0, same=0, asymmetric=0, given=0)
        for i, case in enumerate(cases):
            v = host_violations(case, E)
            assert not v, (case, v)
            err = run_case(case, E, rng, info=info)
            if err:
                fail(f"{tag} forward case {i} {case}: {err}")
                break
            kinds[case["mode"]] += 1
        else:
            g2 = sum(c["G"] == 2 for c in cases)
            odd_m = sum(c["N"] * c["Ho"] * c["Wo"] % BM != 0 for c in cases)
            odd_n = sum((c["K"] // c["G"]) % 128 != 0 for c in cases)
            n2d = sum(gather_params(c, False)["tile_w"] > 0 for c in cases)
            print(f"ok: {tag}: {len(cases)} convolutions equal the direct float64 one ({kinds['symmetric']} symmetric, "
                  f"{kinds['same']} 'same', {kinds['asymmetric'] + kinds['given']} asymmetric/edge pads; {g2} with "
                  f"G = 2; {odd_m} with M % 128 != 0; {odd_n} with Nn % 128 != 0; {n2d} on 2-D pixel tiles)")
            print(f"   im2col copies replayed: {info['loads']}; the walk wraps a row in {info['wraps_row']}, crosses "
                  f"into the next image in {info['crosses_image']}, runs past the batch in {info['past_batch']} "
                  f"(zero rows, as documented)")

        # 2-D pixel tiles
        info = {}
        cases = tile2d_cases(E)
        for i, case in enumerate(cases):
            assert gather_params(case, False)["tile_w"] == TILE_W and not host_violations(case, E), case
            err = run_case(case, E, rng, info=info)
            if err:
                fail(f"{tag} 2-D tile case {i} {case}: {err}")
                break
        else:
            print(f"ok: {tag}: {len(cases)} forwards on 8 x 16 pixel tiles equal the direct float64 one: "
                  f"{info['tiles2d']} tiles, {info['ragged_cols']} with columns past Wo (their 16-pixel walks wrap "
                  f"into the next row / image: masked), {info['stale_rows']} slot rows past Ho never loaded "
                  f"(stale NaN, never stored), {info['taps_skipped']} of {info['block_taps']} block taps skipped by "
                  f"s_live (none that a stored pixel reads input through)")

        # strided forwards: the traversal strides
        info = {}
        cases = strided_cases(E) + [random_case(rng, E, 900_000, strided=True) for _ in range(16)]
        for i, case in enumerate(cases):
            v = host_violations(case, E) + tma_plan_refusals(case, E, False)
            assert not v, (case, v)
            err = run_case(case, E, rng, info=info)
            if err:
                fail(f"{tag} strided forward case {i} {case}: {err}")
                break
        else:
            print(f"ok: {tag}: {len(cases)} strided forwards (traversal strides {{1, sw, sh, 1}}, strides up to "
                  f"{max(max(c['sh'], c['sw']) for c in cases)}) equal the direct float64 one: the walk wraps a row "
                  f"in {info['wraps_row']} copies, {info.get('tiles2d', 0)} 2-D tiles")

        # the transposed mapping: grad_input, conv_transpose2d's forward
        info, refused = {}, {}
        cases = trans_cases(E)
        cases += [random_case(rng, E, 900_000, trans=True, refused=refused) for _ in range(36)]
        for i, case in enumerate(cases):
            v = host_violations(case, E, True) + tma_plan_refusals(case, E, True)
            assert not v, (case, v)
            err = run_case(case, E, rng, trans=True, info=info)
            if err:
                fail(f"{tag} grad_input case {i} {case}: {err}")
                break
        else:
            strided = sum(c["sh"] * c["sw"] > 1 for c in cases)
            negpad = sum(any(p["pt"] < 0 or p["pl"] < 0 for p, _, _ in tma_problems(gather_params(c, True), True))
                         for c in cases)
            if E == 2:  # the batched weight pack against the per-problem copies, on the same calls
                packs, caught = 0, set()
                pack_cases = cases + [random_case(rng, E, 900_000, trans=True, strided=True) for _ in range(24)]
                for case in pack_cases:
                    q = gather_params(case, True)
                    probs = tma_problems(q, True)
                    wv = weight_view(rng.standard_normal((case["K"], case["C"] // case["G"], case["KH"], case["KW"])),
                                     case, True)
                    want = np.concatenate([weight_kmajor(wv, rows, cols) for _, rows, cols in probs])
                    if not np.array_equal(weight_pack(wv, probs), want):
                        fail(f"the weight pack differs from the per-problem copies: {case}")
                        break
                    packs += len(probs) > 1
                    for mut in ("pack_no_flip", "pack_tap_order", "pack_rn_swapped"):
                        got = weight_pack(wv, probs, mut)
                        if got.shape != want.shape or not np.array_equal(got, want):
                            caught.add(mut)
                else:
                    missed = {"pack_no_flip", "pack_tap_order", "pack_rn_swapped"} - caught
                    if missed:
                        fail(f"the weight pack replay misses {sorted(missed)}")
                    else:
                        print(f"ok: the batched weight pack (tma_weight_pack_kernel's index arithmetic) equals every "
                              f"problem's K-major copy on {len(pack_cases)} calls ({packs} with several stride phases); "
                              f"3 mutants caught")
            print(f"ok: {tag}: {len(cases)} grad_inputs equal the float64 gradient (the adjoint of the direct "
                  f"convolution): {info['problems']} stride-1 problems of the flipped taps, {strided} strided, "
                  f"{negpad} with a negative problem padding (positive lower corner), "
                  f"{sum(c['mode'] == 'outpad' for c in cases)} transposed convolutions with output padding, "
                  f"{info.get('tiles2d', 0)} 2-D pixel tiles; tma_plan refused {sum(refused.values())} random draws "
                  f"({', '.join(f'{k}: {v}' for k, v in sorted(refused.items()))})")

        # TN = 256
        info = {}
        cases = wide_cases(E)
        cases += [(random_case(rng, E, 1_200_000, trans=bool(k % 2), TN=256, wide=True), bool(k % 2))
                  for k in range(10)]
        for i, (case, trans) in enumerate(cases):
            assert not host_violations(case, E, trans, 256), case
            err = run_case(case, E, rng, trans=trans, TN=256, info=info)
            if err:
                fail(f"{tag} TN 256 case {i} {'grad_input' if trans else 'forward'} {case}: {err}")
                break
        else:
            print(f"ok: {tag}: {len(cases)} problems on 256-column tiles equal float64 "
                  f"({sum(t for _, t in cases)} grad_inputs, {info.get('tiles2d', 0)} 2-D tiles)")

        # the replay must see each of these mistakes
        pr = probes(E)
        for mut in MUTATIONS:
            case, trans = pr["fwd"]
            if not run_case(case, E, np.random.default_rng(7), mut=mut, trans=trans):
                fail(f"{tag}: the replay does not detect the deliberate mistake '{mut}'")
        clean = {}
        for mut, kind, TN in NEW_MUTATIONS:
            case, trans = pr[kind]
            if kind not in clean:     # the probe itself replays clean
                clean[kind] = run_case(case, E, np.random.default_rng(7), trans=trans, TN=TN)
                if clean[kind]:
                    fail(f"{tag}: {kind} probe {case}: {clean[kind]}")
            if not run_case(case, E, np.random.default_rng(7), mut=mut, trans=trans, TN=TN):
                fail(f"{tag}: the replay does not detect the deliberate mistake '{mut}' ({kind} probe)")
        if not any("deliberate" in f and tag in f for f in failures):
            print(f"ok: {tag}: deliberate mistakes detected ({', '.join(MUTATIONS)}; "
                  f"{', '.join(m for m, _, _ in NEW_MUTATIONS)})")

    emuts = ((256, "frag_n128"), (128, "frag_row_h"), (256, "frag_row_h"), (128, "vec_any_nn"), (256, "vec_n_unscaled"))
    for TN, mut in emuts:
        if not epilogue_check(TN, mut):
            fail(f"the epilogue check does not detect '{mut}' at TN {TN}")
    if not any("epilogue check" in f for f in failures):
        print(f"ok: epilogue: deliberate mistakes detected ({', '.join(sorted(set(m for _, m in emuts)))})")
    if not check_host_limits():
        fail("host limits: a documented limit is not enforced by host_violations")
    accepted, leaks = cross_check_tma_plan(np.random.default_rng(99))
    if leaks:
        case, trans, TN, v = leaks[0]
        fail(f"tma_plan accepts {len(leaks)} problem(s) that break a documented limit, e.g. "
             f"{'grad_input' if trans else 'forward'} TN {TN} {case}: {'; '.join(v)}")
    else:
        print(f"ok: tma_plan's shape conditions imply the documented limits on {accepted} random accepted problems "
              f"(extreme pads, dilations, strides; TN 128 and 256)")
    dt = time.time() - t0
    if failures:
        print(f"verdict: {len(failures)} problem(s) ({dt:.1f} s)")
        return 1
    print(f"verdict: ok, the formulas agree with the documented semantics ({dt:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
