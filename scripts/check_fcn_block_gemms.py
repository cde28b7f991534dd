"""Replays csrc/cuda/conv_transpose.cu's three FCN block GEMMs in numpy.

grad_input (fcn_dgrad_block_kernel + fcn_dgrad_finish_kernel): every thread's 16-byte copies into
the shared tiles (offsets, zero-filled rows, the k-step decomposition into (co, ph, pw)), every
warp's tf32 fragment reads, the partial-tile epilogue, the host's split-K bookkeeping
(fcn_block_dgrad_cuda) and the finishing sum over splits and Jh x Jw overlaps.
forward (fcn_forward_block_kernel): the block's k tables, its run of tiles over one wave of
blocks (A reloaded where a run crosses row tiles), the 4-byte copies of x (zero off the image and
past K), the 16-byte runs of w, the fragments of [k][m] A and [k][c] B tiles, the column tables
and the float2 stores with the bias.
grad_weight (fcn_wgrad_block_kernel + fcn_wgrad_finish_kernel): the q tables, the copies of x and
grad_output, the fragments of a [q][m] A tile, the split choice and the finishing sum in order.
Fragments follow the mma.sync m16n8k8 tf32 layouts (PTX ISA, "Matrix Fragments for mma.m16n8k8").
Results must equal torch's F.conv_transpose2d (and its grad_input) in float64; every output must
be written. No GPU needed; the CUDA tests on a GPU are what verify the kernels.

    python scripts/check_fcn_block_gemms.py
"""
import numpy as np
import torch
import torch.nn.functional as F

BM, BQ, BK, THREADS, LD = 128, 96, 32, 256, 32 + 4


def split_over_wave(slots, tiles, steps, min_steps):
    """The host's split_over_wave: (steps a split, splits); slots = SMs x resident blocks an SM."""
    want = max(1, min(slots // tiles, steps // min_steps))
    per = -(-steps // want)
    return per, -(-steps // per)


def block_of(m, Hb, Wb):
    """FcnGeometry::block: output block m -> (n, I, J)."""
    n, r = divmod(m, Hb * Wb)
    return (n, *divmod(r, Wb))


def tap_of(q, J, Cin):
    """FcnGeometry::tap: q -> (jr, jc, ci)."""
    t, ci = divmod(q, Cin)
    return (*divmod(t, J), ci)


def column_of(c, s):
    """FcnGeometry::column: c -> (co, ph, pw)."""
    co, rem = divmod(c, s * s)
    return (co, *divmod(rem, s))


def assert_matches(label, got, ref):
    err = np.abs(got - ref).max() / np.abs(ref).max()
    print(f"{label}: max rel err {err:.2e}")
    assert err < 1e-12, label


def mma_m16n8k8(a_regs, b_regs, c_regs):
    """a_regs[lane][4], b_regs[lane][2], c_regs[lane][4] (floats): D = A B + C with the PTX layouts."""
    A, B = np.zeros((16, 8)), np.zeros((8, 8))
    for lane in range(32):
        g, t = lane // 4, lane % 4
        A[g, t], A[g + 8, t], A[g, t + 4], A[g + 8, t + 4] = a_regs[lane]
        B[t, g], B[t + 4, g] = b_regs[lane]
    D = A @ B
    out = []
    for lane in range(32):
        g, t = lane // 4, lane % 4
        c = c_regs[lane]
        out.append([c[0] + D[g, 2 * t], c[1] + D[g, 2 * t + 1], c[2] + D[g + 8, 2 * t], c[3] + D[g + 8, 2 * t + 1]])
    return out


def warp_mma(acc, nj, bk, a_at, b_at):
    """warp_mma_tf32 for all 8 warps of a block: a_at(row, k) / b_at(col, k) read the shared tiles;
    acc[tid][i][j] are the lanes' accumulator registers of the 2 x nj mma tiles."""
    for warp in range(8):
        wm, wn = warp // 2, warp % 2
        for kk in range(0, bk, 8):
            a_regs, b_regs = [], []
            for i in range(2):
                r0s = [wm * 32 + i * 16 + lane // 4 for lane in range(32)]
                a_regs.append([[a_at(r0, kk + lane % 4), a_at(r0 + 8, kk + lane % 4), a_at(r0, kk + lane % 4 + 4),
                                a_at(r0 + 8, kk + lane % 4 + 4)] for lane, r0 in enumerate(r0s)])
            for j in range(nj):
                b_regs.append([[b_at(wn * 8 * nj + j * 8 + lane // 4, kk + lane % 4),
                                b_at(wn * 8 * nj + j * 8 + lane // 4, kk + lane % 4 + 4)] for lane in range(32)])
            for i in range(2):
                for j in range(nj):
                    c = [acc[warp * 32 + lane][i][j] for lane in range(32)]
                    d = mma_m16n8k8(a_regs[i], b_regs[j], c)
                    for lane in range(32):
                        acc[warp * 32 + lane][i][j] = d[lane]


def accumulator_cells(acc, nj):
    """(row, col, value) of every accumulator register of a block, by the c-fragment layout."""
    for tid in range(THREADS):
        warp, lane = tid // 32, tid % 32
        wm, wn, g, t = warp // 2, warp % 2, lane // 4, lane % 4
        for i in range(2):
            for h in range(2):
                for j in range(nj):
                    for e in range(2):
                        yield wm * 32 + i * 16 + g + 8 * h, wn * 8 * nj + j * 8 + 2 * t + e, acc[tid][i][j][2 * h + e]


def replay(gy, w, N, Cin, Cout, H, W, s, J, slots):
    kH = kW = J * s
    OW = (W + J - 1) * s
    Hb, Wb = H + J - 1, W + J - 1
    M, Q, K = N * Hb * Wb, J * J * Cin, Cout * s * s
    per, splits = split_over_wave(slots, -(-M // BM) * -(-Q // BQ), K // BK, 8)
    gy_flat, w_flat = gy.reshape(-1), w.reshape(-1)
    gy_n, gy_c = Cout * gy.shape[2] * gy.shape[3], gy.shape[2] * gy.shape[3]
    ws = np.full((splits, M, Q), np.nan)
    for bz in range(splits):
        for bx in range(-(-M // BM)):
            for by in range(-(-Q // BQ)):
                m0, q0, step0 = bx * BM, by * BQ, bz * per
                steps = min(K // BK, step0 + per) - step0
                acc = [[[[0.0] * 4 for _ in range(6)] for _ in range(2)] for _ in range(THREADS)]
                for step in range(steps):
                    smem = np.full(((BM + BQ), LD), np.nan)  # padding columns must never be read
                    for tid in range(THREADS):
                        ch, row = tid % 8, tid // 8
                        k = (step0 + step) * BK + 4 * ch
                        co, ph, pw = column_of(k, s)
                        ak, bk = co * gy_c + ph * OW + pw, co * kH * kW + ph * kW + pw
                        for i in range(4):
                            m = m0 + row + 32 * i
                            if m < M:
                                n, I, Jj = block_of(m, Hb, Wb)
                                off = n * gy_n + I * s * OW + Jj * s
                                smem[row + 32 * i, 4 * ch:4 * ch + 4] = gy_flat[off + ak:off + ak + 4]
                            else:
                                smem[row + 32 * i, 4 * ch:4 * ch + 4] = 0
                        for i in range(3):
                            q = q0 + row + 32 * i
                            if q < Q:
                                jr, jc, ci = tap_of(q, J, Cin)
                                off = ci * Cout * kH * kW + jr * s * kW + jc * s
                                smem[BM + row + 32 * i, 4 * ch:4 * ch + 4] = w_flat[off + bk:off + bk + 4]
                            else:
                                smem[BM + row + 32 * i, 4 * ch:4 * ch + 4] = 0
                    warp_mma(acc, 6, BK, lambda r, k: smem[r, k], lambda n, k: smem[BM + n, k])
                for r, c, v in accumulator_cells(acc, 6):
                    if m0 + r < M and q0 + c < Q:
                        ws[bz, m0 + r, q0 + c] = v
    assert not np.isnan(ws).any(), "a partial was never written"
    gx = np.zeros((N, Cin, H, W))
    for n in range(N):
        for ci in range(Cin):
            for i in range(H):
                for j in range(W):
                    v = 0.0
                    for jr in range(J):
                        for jc in range(J):
                            at_m, at_q = (n * Hb + i + jr) * Wb + j + jc, (jr * J + jc) * Cin + ci
                            for sp in range(splits):
                                v += ws[sp, at_m, at_q]
                    gx[n, ci, i, j] = v
    return gx, splits


FM, FN, FKMAX = 128, 128, 96


def replay_forward(x, w, b, N, Cin, Cout, H, W, s, J, blocks):
    """fcn_forward_block_kernel on `blocks` blocks (the host's one wave): the block's k tables,
    its run of (row tile, column tile) units, A reloaded where a run crosses into the next row
    tile, the column tables and the float2 stores."""
    kH = kW = J * s
    OH, OW = (H + J - 1) * s, (W + J - 1) * s
    Hb, Wb = H + J - 1, W + J - 1
    M, Ncols, K = N * Hb * Wb, Cout * s * s, J * J * Cin
    Kp = -(-K // 8) * 8
    assert Kp <= FKMAX
    x_flat, w_flat = x.reshape(-1), w.reshape(-1)
    xs = (Cin * H * W, H * W, W, 1)
    y = np.full(N * Cout * OH * OW, np.nan)
    col_tiles = -(-Ncols // FN)
    units = -(-M // FM) * col_tiles
    blocks = min(units, blocks)
    for bx in range(blocks):
        u_begin, u_end = units * bx // blocks, units * (bx + 1) // blocks
        # k tables (x_k, w_k, tap_k)
        x_k, w_k, tap_k = [], [], []
        for k in range(Kp):
            jr, jc, ci = tap_of(k, J, Cin)
            ok = k < K
            x_k.append(ci * xs[1] if ok else 0)
            w_k.append((ci * Cout * kH + jr * s) * kW + jc * s if ok else -1)
            tap_k.append((jr << 16) | jc if ok else -1)
        A = np.full((Kp, FM), np.nan)  # [k][m]

        def load_a(mt):
            for tid in range(THREADS):
                am = tid % FM
                m = mt * FM + am
                n, I, Jj = block_of(m, Hb, Wb)
                for k in range(tid // FM, Kp, THREADS // FM):
                    tap = tap_k[k]
                    ih, iw = I - (tap >> 16), Jj - (tap & 0xFFFF)
                    ok = m < M and tap >= 0 and 0 <= ih < H and 0 <= iw < W
                    A[k, am] = x_flat[n * xs[0] + x_k[k] + ih * xs[2] + iw * xs[3]] if ok else 0.0

        def load_b(ct):
            B = np.full((Kp, FN), np.nan)  # [k][c]
            for tid in range(THREADS):
                c = ct * FN + 4 * (tid % 32)
                co, ph, pw = column_of(c, s)
                w_c = (co * kH + ph) * kW + pw
                for k in range(tid // 32, Kp, THREADS // 32):
                    ok = c < Ncols and w_k[k] >= 0
                    B[k, 4 * (tid % 32):4 * (tid % 32) + 4] = w_flat[w_c + w_k[k]:w_c + w_k[k] + 4] if ok else 0.0
            return B

        def columns(ct):
            off, bias = [], []
            for tid in range(FN):
                c = ct * FN + tid
                co, ph, pw = column_of(c, s)
                ok = c < Ncols
                off.append((co * OH + ph) * OW + pw if ok else -1)
                bias.append(b[co] if ok and b is not None else 0.0)
            return off, bias

        def rows(mt):
            out = {}
            for tid in range(THREADS):
                warp, lane = tid // 32, tid % 32
                wm, g = warp // 2, lane // 4
                for i in range(2):
                    for h in range(2):
                        m = mt * FM + wm * 32 + i * 16 + g + 8 * h
                        n, I, Jj = block_of(m, Hb, Wb)
                        out[tid, i, h] = (n * Cout * OH + I * s) * OW + Jj * s if m < M else -1
            return out

        if u_begin >= u_end:
            continue
        mt = u_begin // col_tiles
        load_a(mt)
        B = load_b(u_begin % col_tiles)
        y_row = rows(mt)
        for u in range(u_begin, u_end):
            off, bias = columns(u % col_tiles)
            more = u + 1 < u_end
            next_mt = (u + 1) // col_tiles if more else mt
            acc = [[[[0.0] * 4 for _ in range(8)] for _ in range(2)] for _ in range(THREADS)]
            warp_mma(acc, 8, Kp, lambda r, k: A[k, r], lambda n, k: B[k, n])
            for tid in range(THREADS):
                warp, lane = tid // 32, tid % 32
                wn, t = warp % 2, lane % 4
                for j in range(8):
                    col = wn * 64 + j * 8 + 2 * t
                    if off[col] < 0:
                        continue
                    for i in range(2):
                        for h in range(2):
                            if y_row[tid, i, h] < 0:
                                continue
                            at = y_row[tid, i, h] + off[col]
                            assert at % 2 == 0, "float2 store misaligned"
                            y[at] = acc[tid][i][j][2 * h] + bias[col]
                            y[at + 1] = acc[tid][i][j][2 * h + 1] + bias[col]
            if more:
                if next_mt != mt:
                    mt = next_mt
                    load_a(mt)
                    y_row = rows(mt)
                B = load_b((u + 1) % col_tiles)
    assert not np.isnan(y).any(), "an output was never written"
    return y.reshape(N, Cout, OH, OW)


WQ, WN, WK, WLDA, WLDB = 128, 128, 32, 32 + 4, 128 + 8


def replay_wgrad(x, gy, N, Cin, Cout, H, W, s, J, slots):
    """fcn_wgrad_block_kernel + fcn_wgrad_finish_kernel: the q tables, the copies of x (lane = m,
    q = warp + 8 i) into a [q][m] tile and of grad_output (16-byte runs) into an [m][c] tile, the
    fragments (A read [r][k]), the partial sums in the workspace and the finishing sum in split
    order; the host's split choice with `slots` = SMs x resident blocks."""
    kH = kW = J * s
    OH, OW = (H + J - 1) * s, (W + J - 1) * s
    Hb, Wb = H + J - 1, W + J - 1
    M, Q, Ncols = N * Hb * Wb, J * J * Cin, Cout * s * s
    assert Q <= WQ
    x_flat, gy_flat = x.reshape(-1), gy.reshape(-1)
    xs = (Cin * H * W, H * W, W, 1)
    gy_n, gy_c = Cout * OH * OW, OH * OW
    col_tiles, m_steps = -(-Ncols // WN), -(-M // WK)
    per, splits = split_over_wave(slots, col_tiles, m_steps, 4)
    ws = np.full((splits, Q, Ncols), np.nan)
    x_q, tap_q = [], []
    for q in range(WQ):
        jr, jc, ci = tap_of(q, J, Cin)
        x_q.append(ci * xs[1] if q < Q else 0)
        tap_q.append((jr << 16) | jc if q < Q else -1)
    for bx in range(col_tiles):
        c0 = bx * WN
        for split in range(splits):
            step0 = split * per
            steps = min(m_steps, step0 + per) - step0
            acc = [[[[0.0] * 4 for _ in range(8)] for _ in range(2)] for _ in range(THREADS)]
            for step in range(steps):
                A = np.full((WQ, WLDA), np.nan)  # [q][m]
                G = np.full((WK, WLDB), np.nan)  # [m][c]
                mb = (step0 + step) * WK
                for tid in range(THREADS):
                    lane, warp = tid % 32, tid // 32
                    m = mb + lane
                    n, I, Jj = block_of(m, Hb, Wb)
                    for q in range(warp, WQ, THREADS // 32):
                        tap = tap_q[q]
                        ih, iw = I - (tap >> 16), Jj - (tap & 0xFFFF)
                        ok = m < M and tap >= 0 and 0 <= ih < H and 0 <= iw < W
                        A[q, lane] = x_flat[n * xs[0] + x_q[q] + ih * xs[2] + iw * xs[3]] if ok else 0.0
                    gm, gq = tid // 8, tid % 8
                    m = mb + gm
                    n, I, Jj = block_of(m, Hb, Wb)
                    for j in range(4):
                        c = c0 + 4 * (gq + 8 * j)
                        co, ph, pw = column_of(c, s)
                        ok = m < M and c < Ncols
                        off = n * gy_n + I * s * OW + Jj * s + co * gy_c + ph * OW + pw
                        G[gm, 4 * (gq + 8 * j):4 * (gq + 8 * j) + 4] = gy_flat[off:off + 4] if ok else 0.0
                for warp in range(8):  # warps whose rows are all past Q skip the arithmetic
                    if (warp // 2) * 32 >= Q:
                        for lane in range(32):
                            acc[warp * 32 + lane] = [[[np.nan] * 4 for _ in range(8)] for _ in range(2)]
                warp_mma(acc, 8, WK, lambda r, k: A[r, k], lambda n_, k: G[k, n_])
            for q, c, v in accumulator_cells(acc, 8):
                cc = c0 + c
                if q < Q and cc < Ncols:
                    ws[split, q, cc] = v
    gw = np.full(Cin * Cout * kH * kW, np.nan)
    for q in range(Q):
        jr, jc, ci = tap_of(q, J, Cin)
        for c in range(Ncols):
            co, ph, pw = column_of(c, s)
            v = 0.0
            for sp in range(splits):
                v += ws[sp, q, c]
            gw[((ci * Cout + co) * kH + jr * s + ph) * kW + jc * s + pw] = v
    assert not np.isnan(gw).any(), "a grad_weight element was never written"
    return gw.reshape(Cin, Cout, kH, kW), splits


def main():
    rng = np.random.default_rng(0)
    # (N, Cin, Cout, H, W, s, J, SMs): several M tiles, Q past one tile, several splits, J = 1..3
    for N, Cin, Cout, H, W, s, J, slots in [(2, 5, 3, 3, 2, 8, 2, 4), (1, 3, 1, 2, 3, 8, 3, 1),
                                          (1, 50, 1, 1, 1, 8, 2, 132), (2, 3, 1, 8, 9, 8, 2, 2),
                                          (3, 4, 2, 5, 6, 16, 2, 8), (1, 3, 22, 2, 2, 8, 2, 132)]:
        x = torch.from_numpy(rng.standard_normal((N, Cin, H, W))).requires_grad_()
        w = torch.from_numpy(rng.standard_normal((Cin, Cout, J * s, J * s)))
        y = F.conv_transpose2d(x, w, None, s)
        gy = torch.from_numpy(rng.standard_normal(tuple(y.shape)))
        (ref,) = torch.autograd.grad(y, x, gy)
        got, splits = replay(gy.numpy(), w.numpy(), N, Cin, Cout, H, W, s, J, slots)
        assert_matches(f"N{N} Cin{Cin} Cout{Cout} {H}x{W} s{s} J{J}: {splits} splits", got, ref.numpy())
    print("fcn_dgrad_block replay: all cases match F.conv_transpose2d's grad_input")
    # forward: several row tiles with runs that cross them (few blocks: A reloads), a partial
    # column tile (C_out s^2 = 192), K not a multiple of 8 (36, 4: zero rows), K = 96, J = 1 and 3,
    # bias and none, more blocks than tiles
    for N, Cin, Cout, H, W, s, J, bias, blocks in [(2, 9, 3, 4, 5, 8, 2, True, 3), (1, 4, 1, 2, 3, 8, 3, False, 132),
                                                  (3, 5, 3, 8, 9, 8, 1, True, 2), (1, 21, 1, 2, 2, 16, 2, True, 2),
                                                  (2, 3, 5, 3, 4, 4, 3, True, 4), (1, 24, 1, 9, 7, 8, 2, False, 5)]:
        x = torch.from_numpy(rng.standard_normal((N, Cin, H, W)))
        w = torch.from_numpy(rng.standard_normal((Cin, Cout, J * s, J * s)))
        b = torch.from_numpy(rng.standard_normal(Cout)) if bias else None
        ref = F.conv_transpose2d(x, w, b, s).numpy()
        got = replay_forward(x.numpy(), w.numpy(), None if b is None else b.numpy(), N, Cin, Cout, H, W, s, J,
                             blocks)
        assert_matches(f"forward N{N} Cin{Cin} Cout{Cout} {H}x{W} s{s} J{J} bias={bias} blocks={blocks}", got, ref)
    print("fcn_forward_block replay: all cases match F.conv_transpose2d")
    # grad_weight: several column tiles (C_out s^2 = 192, 320) with a partial last one, m over
    # several steps and splits with a partial last step, Q = 9 .. 96, J = 1..3
    for N, Cin, Cout, H, W, s, J, slots in [(3, 4, 2, 8, 8, 8, 2, 8), (1, 3, 5, 7, 6, 8, 3, 132),
                                          (2, 24, 1, 4, 5, 16, 2, 2), (2, 3, 1, 12, 11, 4, 3, 30)]:
        x = torch.from_numpy(rng.standard_normal((N, Cin, H, W)))
        w = torch.from_numpy(rng.standard_normal((Cin, Cout, J * s, J * s))).requires_grad_()
        y = F.conv_transpose2d(x, w, None, s)
        gy = torch.from_numpy(rng.standard_normal(tuple(y.shape)))
        (ref,) = torch.autograd.grad(y, w, gy)
        got, splits = replay_wgrad(x.numpy(), gy.numpy(), N, Cin, Cout, H, W, s, J, slots)
        assert_matches(f"wgrad N{N} Cin{Cin} Cout{Cout} {H}x{W} s{s} J{J}: {splits} splits", got, ref.numpy())
    print("fcn_wgrad_block replay: all cases match F.conv_transpose2d's grad_weight")


if __name__ == "__main__":
    main()
