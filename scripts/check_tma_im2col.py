"""Replays, in numpy, the index arithmetic of a Hopper (sm_90a) convolution forward that loads A
with TMA in im2col mode, B with tiled TMA, both into 128-byte-swizzled shared memory, and
multiplies them with wgmma (two consumer warpgroups, m64n128k16 bf16 / m64n128k8 tf32, both
operands K-major). Every hardware step is modelled from its documentation, not from the kernel:

- cp.async.bulk.tensor.4d ... .im2col (PTX ISA 5.5.4 "im2col mode": 5.5.4.1 Bounding Box,
  5.5.4.2 Traversal Stride, 5.5.4.3 Out of Boundary Access; 9.7.9.27.1.2 cp.async.bulk.tensor,
  im2colInfo = {i2cOffW, i2cOffH}; CUDA driver API cuTensorMapEncodeIm2col): the filter base
  walks Pixels-per-Column positions of the bounding box in NDHW order (W fastest, then H, then
  the next image) from the instruction's {w, h, n}; the box spans base positions
  [lower, size - 1 + upper] along W and H (corners innermost first, W then H); the pixel read is
  base + im2col offsets; a pixel outside the tensor, an image n >= N (the walk past the batch),
  or a channel >= C is zero-filled; the pixel's channelsPerPixel elements form one 128-byte row.
- the tiled load of the weight (5.5.3 Tiled Mode, cuTensorMapEncodeTiled): box {BK, 128, 1},
  innermost first, zero fill outside the tensor, rows of boxDim[0] * E = 128 bytes.
- the 128-byte swizzle (5.5.7 Swizzling Modes, 16-byte atomicity): in a pattern that starts at a
  1024-byte boundary, the 16-byte chunk c of 128-byte line r is stored at chunk c ^ r (r = line
  index mod 8, i.e. shared address bits [7:10) XOR-ed into bits [4:7)).
- wgmma's read through a shared-memory matrix descriptor (9.7.15.5.1.2 Shared Memory Matrix
  Layout: K-major, 128B swizzling, canonical Swizzle<3,4,3> o ((8,m),(T,2k)):((8T,SBO),(1,T)),
  LBO "not used, assumed 1", SBO = offset between 8-row groups; 9.7.15.5.1.2.2 Matrix Descriptor
  Format: start/LBO/SBO >> 4 in 14-bit fields, base offset 0 when the pattern starts on a
  1024-byte boundary, mode 1 = 128-byte swizzle). The swizzle is applied to the absolute shared
  address (that is what the descriptor's base-offset field and the 1024-byte pattern alignment
  mean), so a start address advanced by 32 bytes inside the swizzle atom reads the k-slice the
  TMA put there.

Shared memory is built byte by byte (a uint8 buffer, E-byte little-endian elements) and read back
as wgmma would; the per-case loop then uses the composite index map derived from the same byte
model (checked equal on a random tile). Each case's accumulators must equal a direct float64
convolution (small integer data: exact). Also checked: the documented host-side limits of the
two tensor maps and of the descriptors, and that the replay detects deliberately wrong formulas.

    python scripts/check_tma_im2col.py

host_violations() lists the limits a problem's shape must meet (documented rank-4 corner range
[-128, 127], rank-4 im2col offset range [0, 255] i.e. (K - 1) * dilation <= 255 per dimension,
non-empty bounding box, globalDim / globalStrides / boxDim / channelsPerPixel limits, and the
kernel's own G == 1 or R % BK == 0, stride 1). Not expressible from shapes, so not replayed, but
documented too: globalAddress 16-byte aligned (x must be NHWC-dense at a 16-byte-aligned
data_ptr, likewise the permuted weight), the CUtensorMap 64-byte aligned, each shared tile on a
1024-byte boundary (descriptor base offset 0), descriptor start addresses 16-byte aligned and
below 2^18. The epilogue must mask rows m >= M and columns >= Nn (the loads zero-fill them).

This checks arithmetic against the documented semantics, not the hardware: the CUDA tests on an
H100 / H200 are what verify the kernel (they should include an H != W padding asymmetry: the
driver doc's prose lists the corners as "{D, H, W}" while PTX, CUTLASS and the tensor dims order
are innermost first, W then H; this replay takes innermost first)."""
import sys
import time

import numpy as np

BM = 128            # pixelsPerColumn: rows of the A tile
BN = 128            # rows of the B tile (output channels), wgmma n128
ROW = 128           # bytes a tile row: channelsPerPixel * E = boxDim[0] * E = the 128B swizzle span
KB = 32             # bytes of k each wgmma instruction takes (k16 bf16 / k8 tf32)
TILE = BM * ROW     # 16 KiB a tile
BK_OF = {2: 64, 4: 32}
POISON = 1 << 20    # what a read outside the tile returns in the model


# ---------------------------------------------------------------------------------------------
# documented host-side limits

def host_violations(case, E):
    """The documented limits the two tensor maps and the kernel's own preconditions put on a
    problem, as the strings of those it breaks (empty: the kernel may run it)."""
    N, H, W, C, K, G = case["N"], case["H"], case["W"], case["C"], case["K"], case["G"]
    KH, KW, dh, dw = case["KH"], case["KW"], case["dh"], case["dw"]
    pt, pl, Ho, Wo = case["pt"], case["pl"], case["Ho"], case["Wo"]
    BK, bad = BK_OF[E], []
    if case.get("stride", 1) != 1:
        bad.append("conv stride != 1 (the im2col walk is over output pixels at stride 1)")
    if C % G or K % G:
        bad.append("groups do not divide C and K")
        return bad
    R, Nn = C // G, K // G
    if Ho < 1 or Wo < 1 or N < 1:
        bad.append("empty output: the bounding box must have non-zero area (Ho, Wo >= 1)")
        return bad
    lower, upper = (-pl, -pt), (Wo - pl - W, Ho - pt - H)
    for name, v in (("lower", lower), ("upper", upper)):
        if not all(-128 <= x <= 127 for x in v):
            bad.append(f"{name} corner {v} outside [-128, 127] (rank-4 im2col)")
    if not (0 <= (KW - 1) * dw <= 255 and 0 <= (KH - 1) * dh <= 255):
        bad.append(f"im2col offsets up to ({(KW - 1) * dw}, {(KH - 1) * dh}) outside [0, 255] (rank-4)")
    dims = {"A": (C, W, H, N), "B": (R, Nn, G * KH * KW)}
    strides = {"A": (C * E, W * C * E, H * W * C * E), "B": (R * E, Nn * R * E)}
    for m in "AB":
        if not all(1 <= d <= 2 ** 32 for d in dims[m]):
            bad.append(f"{m} globalDim {dims[m]} not in [1, 2^32]")
        if not all(s % 16 == 0 and s < 2 ** 40 for s in strides[m]):
            bad.append(f"{m} globalStrides {strides[m]} not multiples of 16 below 2^40")
    if not (BK <= 256 and BK * E <= 128 and BM <= 1024):
        bad.append("channelsPerPixel / pixelsPerColumn limits (<= 256, * E <= 128 for 128B swizzle, <= 1024)")
    if not (BK * E % 16 == 0 and max(BK, BN, 1) <= 256):
        bad.append("B boxDim limits (<= 256, boxDim[0] * E a multiple of 16)")
    if G > 1 and R % BK:
        bad.append("G > 1 with R % BK != 0 (a chunk would read the next group's channels)")
    return bad


# ---------------------------------------------------------------------------------------------
# the kernel's formulas (what is being checked), with hooks for deliberate mistakes

def kernel_plan(case, E, mut=None):
    """The tensor maps, coordinates, offsets and descriptors as the kernel builds them."""
    N, H, W, C, K, G = case["N"], case["H"], case["W"], case["C"], case["K"], case["G"]
    KH, KW, dh, dw, pt, pl, Ho, Wo = (case[k] for k in ("KH", "KW", "dh", "dw", "pt", "pl", "Ho", "Wo"))
    BK, R, Nn, taps = BK_OF[E], C // G, K // G, KH * KW
    lower, upper = [-pl, -pt], [Wo - pl - W, Ho - pt - H]
    if mut == "upper+1":
        upper[0] += 1
    if mut == "corners_hw_order":
        lower, upper = lower[::-1], upper[::-1]
    amap = dict(dims=(C, W, H, N), strides=(C * E, W * C * E, H * W * C * E), lower=tuple(lower),
                upper=tuple(upper), cpp=BK, ppc=BM, E=E)
    bmap = dict(dims=(R, Nn, G * taps), strides=(R * E, Nn * R * E), box=(BK, BN, 1), E=E)

    def a_base(mb):                  # {wo0 - pl, ho0 - pt, n0} of the block tile starting at m0
        m0 = mb * BM
        n0, rem = m0 // (Ho * Wo), m0 % (Ho * Wo)
        return rem % Wo - pl, rem // Wo - pt, n0

    def a_channel(g, chunk):         # the c coordinate
        return (0 if mut == "c_without_group" else g * R) + chunk * BK

    def a_offsets(tap):              # {s * dw, r * dh}
        r, s = tap // KW, tap % KW
        return (r * dh, s * dw) if mut == "offsets_hw_order" else (s * dw, r * dh)

    def b_coords(nb, g, tap, chunk):  # {c0, n0, g * taps + tap}
        z = tap * G + g if mut == "b_z_order" else g * taps + tap
        return chunk * BK, nb * BN, z

    step = 16 if mut == "ks16" else 32
    wg_off = 4096 if mut == "wg4096" else 8192
    sbo = 512 if mut == "sbo512" else 1024

    def desc_a(base, wg, ks):
        return desc_encode(base + wg * wg_off + ks * step, 16, sbo)

    def desc_b(base, ks):
        return desc_encode(base + ks * step, 16, sbo)

    return dict(amap=amap, bmap=bmap, a_base=a_base, a_channel=a_channel, a_offsets=a_offsets,
                b_coords=b_coords, desc_a=desc_a, desc_b=desc_b, BK=BK, R=R, Nn=Nn, taps=taps)


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


def tma_tile_bytes(dst, E):
    """Shared byte address of every byte of a 128-row x 128-byte box written at dst with the 128B
    swizzle (row i, element j, byte b)."""
    i = np.arange(BM)[:, None, None]
    j = np.arange(ROW // E)[None, :, None]
    b = np.arange(E)[None, None, :]
    return swz128(dst + i * ROW + j * E + b)


def tma_im2col(gmem, amap, w, h, n, ow, oh, c):
    """cp.async.bulk.tensor.4d im2col: the ppc x cpp box each instruction lands. w, h, n, ow, oh
    broadcast to one shape S1 (the instruction's filter base and im2col offsets), c to S2 (its
    channel start); returns S1 + S2 + (ppc, cpp) and per-instruction walk statistics."""
    C, W, H, N = amap["dims"]
    sW, sH, sN = amap["strides"]
    (lw, lh), (uw, uh), ppc, cpp, E = amap["lower"], amap["upper"], amap["ppc"], amap["cpp"], amap["E"]
    assert sW % E == 0 and sH % E == 0 and sN % E == 0
    bw, bh = W + uw - lw, H + uh - lh          # filter-base positions along W and H
    assert bw > 0 and bh > 0, "empty bounding box"
    w, h, n, ow, oh = np.broadcast_arrays(*(np.asarray(v, np.int64) for v in (w, h, n, ow, oh)))
    assert ((w >= lw) & (w <= W - 1 + uw) & (h >= lh) & (h <= H - 1 + uh)).all(), \
        "the filter base must be inside the bounding box"
    assert ((ow >= 0) & (ow <= 255) & (oh >= 0) & (oh <= 255)).all(), "im2col offsets outside [0, 255]"
    assert ((n >= 0) & (n < N)).all()
    pos = ((n * bh + (h - lh)) * bw + (w - lw))[..., None] + np.arange(ppc)   # the NHW walk
    pn, rem = pos // (bh * bw), pos % (bh * bw)
    ph = lh + rem // bw + oh[..., None]
    pw = lw + rem % bw + ow[..., None]
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
    stats = dict(past_batch=int((pn >= N).any(axis=-1).sum()),
                 crosses_image=int((pn != pn[..., :1]).any(axis=-1).sum()),
                 wraps_row=int((rem // bw != (rem // bw)[..., :1]).any(axis=-1).sum()))
    return vals, stats


def tma_tiled(gmem, bmap, c0, n0, z):
    """cp.async.bulk.tensor.3d tile: the {BK, 128, 1} box each instruction lands, (128, BK)."""
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


# ---------------------------------------------------------------------------------------------
# shared memory: byte model and the composite map it gives

def roundtrip_maps(plan, E, base_a, base_b):
    """For each operand element wgmma reads (A: (wg, ks, row, k), B: (ks, row, k)), the flat
    index (row * BK + j) of the TMA tile element whose bytes it reads, -1 for bytes no TMA wrote
    or an element whose bytes come from different tile elements; plus the problems found."""
    BK, problems, maps = plan["BK"], [], {}
    nks = ROW // KB
    for name, base, wgs in (("A", base_a, 2), ("B", base_b, 1)):
        assert base % 1024 == 0, "tile bases must be 1024-byte aligned (descriptor base offset 0)"
        wbytes = tma_tile_bytes(base, E).reshape(-1) - base
        if not (np.sort(wbytes) == np.arange(TILE)).all():
            problems.append(f"{name}: the TMA box does not fill its 16 KiB exactly once")
        owner = np.full(TILE, -1, np.int64)               # tile byte index (i*128 + j*E + b) at each smem byte
        owner[wbytes[(wbytes >= 0) & (wbytes < TILE)]] = np.arange(TILE)[(wbytes >= 0) & (wbytes < TILE)]
        reads = []
        for wg in range(wgs):
            for ks in range(nks):
                d = plan["desc_a"](base, wg, ks) if name == "A" else plan["desc_b"](base, ks)
                reads.append(wgmma_k_major_bytes(d, 64 if name == "A" else BN, E) - base)
        rb = np.stack(reads)                               # (wgs*nks, rows, 2T, E)
        inside = (rb >= 0) & (rb < TILE)
        got = np.where(inside, owner[np.clip(rb, 0, TILE - 1)], -1)
        elem = got[..., 0] // E
        consistent = (got >= 0).all(-1) & (got == (got[..., :1] - got[..., :1] % E + np.arange(E))).all(-1) \
            & (got[..., 0] % E == 0)
        if not inside.all():
            problems.append(f"{name}: wgmma reads outside the tile")
        counts = np.bincount(rb[inside].reshape(-1), minlength=TILE)
        if not (counts == 1).all():
            problems.append(f"{name}: wgmma does not read each tile byte exactly once per BK chunk")
        idx = np.where(consistent, (elem // (ROW // E)) * BK + elem % (ROW // E), -1)
        maps[name] = idx.reshape((wgs, nks) + idx.shape[1:]) if name == "A" else idx
    return maps, problems


def byte_level_check(plan, E, rng):
    """One random A and B tile written byte by byte into a uint8 shared memory as the TMA would,
    read back byte by byte as wgmma would; the operands must be the logical slices, and the
    composite maps must say the same."""
    BK, nks, T = plan["BK"], ROW // KB, 16 // E
    dt = {2: np.int16, 4: np.int32}[E]
    smem = np.zeros(3 * TILE + 4096, np.uint8)
    base_a, base_b = 1024, 1024 + TILE                   # 1024-byte aligned, as the kernel allocates
    maps, problems = roundtrip_maps(plan, E, base_a, base_b)
    ok = not problems
    for name, base in (("A", base_a), ("B", base_b)):
        tile = rng.integers(-30000, 30000, (BM, BK)).astype(dt)
        src = tile.view(np.uint8).reshape(BM, ROW // E, E)   # little-endian bytes of each element
        smem[tma_tile_bytes(base, E)] = src
        wgs = 2 if name == "A" else 1
        for wg in range(wgs):
            for ks in range(nks):
                d = plan["desc_a"](base, wg, ks) if name == "A" else plan["desc_b"](base, ks)
                rows = 64 if name == "A" else BN
                addrs = wgmma_k_major_bytes(d, rows, E)
                if addrs.min() < 0 or addrs.max() >= len(smem):
                    ok = False
                    continue
                op = smem[addrs].copy().view(dt)[..., 0]     # (rows, 2T)
                want = tile[wg * 64: wg * 64 + rows, ks * 2 * T: (ks + 1) * 2 * T]
                ok &= np.array_equal(op, want)
                m = maps[name][wg, ks] if name == "A" else maps[name][ks]
                flat = np.append(tile.reshape(-1), dt(0))
                ok &= np.array_equal(np.where(m >= 0, flat[m], 0), op) if (m >= 0).all() else False
    return ok, maps, problems


# ---------------------------------------------------------------------------------------------
# one convolution, end to end

def reference(x, w, case):
    """y[n, ho, wo, g*Nn + k'] = sum_{r,s,c} x[n, ho - pt + r*dh, wo - pl + s*dw, g*R + c] w[g*Nn + k', c, r, s]."""
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, dh, dw, pt, pl, Ho, Wo = (case[k] for k in ("KH", "KW", "dh", "dw", "pt", "pl", "Ho", "Wo"))
    R, Nn = C // G, K // G
    y = np.zeros((N * Ho * Wo, K))
    for r in range(KH):
        hi = np.arange(Ho) - pt + r * dh
        for s in range(KW):
            wi = np.arange(Wo) - pl + s * dw
            mask = ((hi >= 0) & (hi < H))[:, None] & ((wi >= 0) & (wi < W))[None, :]
            xs = x[:, np.clip(hi, 0, H - 1)][:, :, np.clip(wi, 0, W - 1)] * mask[None, :, :, None]
            xs = xs.reshape(N * Ho * Wo, C)
            for g in range(G):
                y[:, g * Nn:(g + 1) * Nn] += xs[:, g * R:(g + 1) * R] @ w[g * Nn:(g + 1) * Nn, :, r, s].T
    return y


def run_case(case, E, rng, mut=None, maps=None):
    """Replays the kernel on one problem; returns (None, stats) when every accumulator matches,
    else (a description of the first mismatch or broken documented requirement, stats)."""
    try:
        return _run_case(case, E, rng, mut, maps)
    except AssertionError as e:
        return f"breaks a documented requirement: {e}", {}


def _run_case(case, E, rng, mut, maps):
    plan = kernel_plan(case, E, mut)
    if maps is None or mut is not None:
        maps, problems = roundtrip_maps(plan, E, 4096, 4096 + 2 * TILE)
        if problems:
            return "; ".join(problems), {}
    N, H, W, C, K, G = (case[k] for k in ("N", "H", "W", "C", "K", "G"))
    KH, KW, Ho, Wo = case["KH"], case["KW"], case["Ho"], case["Wo"]
    BK, R, Nn, taps = plan["BK"], plan["R"], plan["Nn"], plan["taps"]
    M, chunks = N * Ho * Wo, -(-R // BK)
    mblk, nblk = -(-M // BM), -(-Nn // BN)
    x = rng.integers(-2, 3, (N, H, W, C)).astype(np.float64)       # NHWC (channels_last memory)
    w = rng.integers(-2, 3, (K, R, KH, KW)).astype(np.float64)     # OIHW
    gmem_a = x.reshape(-1)
    gmem_b = w.reshape(G, Nn, R, KH, KW).transpose(0, 3, 4, 1, 2).reshape(-1)  # (G, taps, Nn, R)
    y = reference(x, w, case)                                      # (M, K), m over (n, ho, wo)

    mb = np.arange(mblk)[:, None]                                  # x taps: (mblk, taps) instructions
    bw_, bh_, bn_ = plan["a_base"](mb)
    offs = [plan["a_offsets"](t) for t in range(taps)]
    ow, oh = np.array([o[0] for o in offs])[None, :], np.array([o[1] for o in offs])[None, :]
    cch = np.array([[plan["a_channel"](g, ch) for ch in range(chunks)] for g in range(G)])
    A, stats = tma_im2col(gmem_a, plan["amap"], bw_, bh_, bn_, ow, oh, cch)   # (mblk, taps, G, chunks, BM, BK)
    co = np.array([[[[plan["b_coords"](j, g, t, ch) for ch in range(chunks)] for g in range(G)]
                    for t in range(taps)] for j in range(nblk)])     # (nblk, taps, G, chunks, 3)
    B = tma_tiled(gmem_b, plan["bmap"], co[..., 0], co[..., 1], co[..., 2])  # (nblk, taps, G, chunks, BN, BK)

    nks, T2 = ROW // KB, 2 * (16 // E)
    mA, mB = maps["A"], maps["B"]
    for g in range(G):
        Af = A[:, :, g].reshape(mblk, taps, chunks, BM * BK)
        Bf = B[:, :, g].reshape(nblk, taps, chunks, BN * BK)
        if (mA < 0).any() or (mB < 0).any():
            Af = np.concatenate([Af, np.full(Af.shape[:-1] + (1,), POISON)], -1)
            Bf = np.concatenate([Bf, np.full(Bf.shape[:-1] + (1,), POISON)], -1)
        opA = Af[..., np.where(mA >= 0, mA, BM * BK)]     # (mblk, taps, chunks, 2, nks, 64, T2)
        opB = Bf[..., np.where(mB >= 0, mB, BN * BK)]     # (nblk, taps, chunks, nks, BN, T2)
        # warpgroup wg's wgmma: D[64 wg + r, n] += sum_k opA[wg, ks][r, k] opB[ks][n, k]
        Ae = opA.transpose(0, 3, 5, 1, 2, 4, 6).reshape(mblk * BM, taps * chunks * nks * T2)
        Be = opB.transpose(0, 4, 1, 2, 3, 5).reshape(nblk * BN, taps * chunks * nks * T2)
        D = Ae @ Be.T
        want = y[:, g * Nn:(g + 1) * Nn]
        bad = np.argwhere(D[:M, :Nn] != want)
        if len(bad):
            m, k = bad[0]
            n_, rem = m // (Ho * Wo), m % (Ho * Wo)
            return (f"group {g}: y[n={n_}, ho={rem // Wo}, wo={rem % Wo}, k={g * Nn + k}] replay {D[m, k]:g} "
                    f"direct {want[m, k]:g} ({len(bad)} of {M * Nn} differ)"), stats
        if (D[M:] != 0).any() or (D[:, Nn:] != 0).any():
            return f"group {g}: rows >= M or columns >= Nn not zero-filled", stats
    return None, stats


# ---------------------------------------------------------------------------------------------
# cases

def out_size(n, lo, hi, d, k):
    return n + lo + hi - d * (k - 1)


def make_case(N, H, W, C, K, G, KH, KW, dh, dw, pt, pb, pl, pr, mode="given"):
    return dict(N=N, H=H, W=W, C=C, K=K, G=G, KH=KH, KW=KW, dh=dh, dw=dw, pt=pt, pl=pl, pb=pb, pr=pr,
                Ho=out_size(H, pt, pb, dh, KH), Wo=out_size(W, pl, pr, dw, KW), mode=mode)


def random_case(rng, E, cap):
    BK = BK_OF[E]
    while True:
        N, H, W = (int(v) for v in (rng.integers(1, 4), rng.integers(1, 41), rng.integers(1, 41)))
        G = int(rng.choice([1, 2]))
        if G == 1:
            C, K = 8 * int(rng.integers(1, 25)), 8 * int(rng.integers(1, 33))
        else:
            C, K = 2 * BK * int(rng.integers(1, 4)), 2 * 8 * int(rng.integers(1, 21))
        KH, KW = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        small = rng.random() < 0.6                     # dilation 1..18, biased small so outputs exist
        dh, dw = (int(rng.integers(1, 4 if small else 19)) for _ in range(2))
        mode = rng.choice(["symmetric", "same", "asymmetric"])
        if mode == "symmetric":
            ph, pw = int(rng.integers(0, 21)), int(rng.integers(0, 21))
            pt, pb, pl, pr = ph, ph, pw, pw
        elif mode == "same":                            # torch padding='same': left total // 2, right the rest
            th, tw = dh * (KH - 1), dw * (KW - 1)
            pt, pb, pl, pr = th // 2, th - th // 2, tw // 2, tw - tw // 2
        else:
            pt, pb, pl, pr = (int(rng.integers(0, 21)) for _ in range(4))
        case = make_case(N, H, W, C, K, G, KH, KW, dh, dw, pt, pb, pl, pr, str(mode))
        if case["Ho"] < 1 or case["Wo"] < 1 or host_violations(case, E):
            continue
        M = N * case["Ho"] * case["Wo"]
        cpad = G * -(-(C // G) // BK) * BK
        work = (-(-M // BM) * BM) * KH * KW * (cpad + 8) + (-(-(K // G) // BN) * BN) * KH * KW * cpad
        if work <= cap:
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


def check_host_limits():
    """The limits themselves: each of these must be refused for the named reason."""
    E, ok = 2, True
    probes = [
        ("empty output", make_case(1, 4, 4, 8, 8, 1, 3, 3, 4, 4, 0, 0, 0, 0), "empty output"),
        ("lower corner -129", make_case(1, 4, 4, 8, 8, 1, 1, 1, 1, 1, 0, 0, 129, 0), "lower corner"),
        ("upper corner -130", make_case(1, 200, 4, 8, 8, 1, 3, 1, 65, 1, 0, 0, 0, 0), "upper corner"),
        ("upper corner +128", make_case(1, 4, 4, 8, 8, 1, 1, 1, 1, 1, 0, 0, 0, 128), "upper corner"),
        ("offset 300 with corners in range", make_case(1, 4, 120, 8, 8, 1, 1, 4, 1, 100, 0, 0, 0, 200),
         "im2col offsets"),
        ("C * E not a multiple of 16", make_case(1, 4, 4, 4, 8, 1, 1, 1, 1, 1, 0, 0, 0, 0), "globalStrides"),
        ("G = 2, R = 32 (bf16)", make_case(1, 4, 4, 64, 8, 2, 1, 1, 1, 1, 0, 0, 0, 0), "R % BK"),
        ("stride 2", dict(make_case(1, 4, 4, 8, 8, 1, 1, 1, 1, 1, 0, 0, 0, 0), stride=2), "stride"),
    ]
    for name, case, reason in probes:
        v = host_violations(case, E)
        hit = any(reason in s for s in v)
        ok &= hit
        print(f"   host limit, {name}: {'refused' if hit else 'NOT refused'} ({'; '.join(v) or 'no violation'})")
    return ok


MUTATIONS = ["upper+1", "corners_hw_order", "offsets_hw_order", "c_without_group", "b_z_order",
             "ks16", "wg4096", "sbo512"]


def main():
    t0 = time.time()
    rng = np.random.default_rng(2024)
    failures = []
    print("TMA im2col + tiled TMA + 128B swizzle + wgmma K-major descriptors, numpy replay")
    for E in (2, 4):
        plan = kernel_plan(fixed_cases(E)[0], E)
        ok_bytes, maps, problems = byte_level_check(plan, E, rng)
        tag = "bf16 (BK 64, m64n128k16)" if E == 2 else "tf32 (BK 32, m64n128k8)"
        if not ok_bytes:
            failures.append(f"{tag}: byte-level tile round trip: {'; '.join(problems) or 'operands differ'}")
            print(f"MISMATCH {failures[-1]}")
            continue
        print(f"ok: {tag}: TMA box -> 128B-swizzled smem -> wgmma descriptors (A: base + 8192 wg + 32 ks, "
              f"B: base + 32 ks, SBO 1024, LBO 16): every byte written once, read once, as the logical slice")
        cases = fixed_cases(E) + [random_case(rng, E, 1_600_000) for _ in range(100 - len(fixed_cases(E)))]
        tot = dict(past_batch=0, crosses_image=0, wraps_row=0, tiles=0)
        kinds = dict(symmetric=0, same=0, asymmetric=0, given=0)
        for i, case in enumerate(cases):
            v = host_violations(case, E)
            assert not v, (case, v)
            err, st = run_case(case, E, rng, maps=maps)
            if err:
                failures.append(f"{tag} case {i} {case}: {err}")
                print(f"MISMATCH {failures[-1]}")
                break
            for k in ("past_batch", "crosses_image", "wraps_row"):
                tot[k] += st[k]
            tot["tiles"] += -(-case["N"] * case["Ho"] * case["Wo"] // BM) * case["KH"] * case["KW"]
            kinds[case["mode"]] += 1
        else:
            g2 = sum(c["G"] == 2 for c in cases)
            odd_m = sum(c["N"] * c["Ho"] * c["Wo"] % BM != 0 for c in cases)
            odd_n = sum((c["K"] // c["G"]) % BN != 0 for c in cases)
            print(f"ok: {tag}: {len(cases)} convolutions equal the direct float64 one ({kinds['symmetric']} symmetric, "
                  f"{kinds['same']} 'same', {kinds['asymmetric'] + kinds['given']} asymmetric/edge pads; {g2} with G = 2; "
                  f"{odd_m} with M % 128 != 0; {odd_n} with Nn % 128 != 0)")
            print(f"   A loads replayed: {tot['tiles']}; the 128-pixel walk wraps a row in {tot['wraps_row']}, "
                  f"crosses into the next image in {tot['crosses_image']}, runs past the batch in {tot['past_batch']} "
                  f"(zero rows, as documented)")
        # the replay must see each of these mistakes
        probe = make_case(2, 7, 9, 2 * BK_OF[E], 48, 2, 3, 2, 2, 3, 1, 3, 2, 0)
        for mut in MUTATIONS:
            err, _ = run_case(probe, E, np.random.default_rng(7), mut=mut)
            if not err:
                failures.append(f"{tag}: the replay does not detect the deliberate mistake '{mut}'")
                print(f"MISMATCH {failures[-1]}")
        if not any("deliberate" in f for f in failures):
            print(f"ok: {tag}: deliberate mistakes detected ({', '.join(MUTATIONS)})")
    if not check_host_limits():
        failures.append("host limits: a documented limit is not enforced by host_violations")
        print(f"MISMATCH {failures[-1]}")
    dt = time.time() - t0
    if failures:
        print(f"verdict: {len(failures)} problem(s) ({dt:.1f} s)")
        return 1
    print(f"verdict: ok, the formulas agree with the documented semantics ({dt:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
