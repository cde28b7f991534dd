"""Replays csrc/cuda/conv_transpose.cu's FCN grad_input block GEMM (fcn_dgrad_block_kernel and
fcn_dgrad_finish_kernel) in numpy: every thread's 16-byte copies into the shared tiles (offsets,
zero-filled rows, the k-step decomposition into (co, ph, pw)), every warp's tf32 fragment reads and
the mma.sync m16n8k8 fragment semantics (PTX ISA, "Matrix Fragments for mma.m16n8k8"), the
partial-tile epilogue, the split-K bookkeeping of the host (fcn_block_dgrad_cuda) and the finishing
sum over splits and Jh x Jw overlaps. The result must equal torch's grad_input of
F.conv_transpose2d in float64. No GPU needed; the CUDA tests on a GPU are what verify the kernel.

    python scripts/check_fcn_dgrad_block.py
"""
import numpy as np
import torch
import torch.nn.functional as F

BM, BQ, BK, THREADS, LD = 128, 96, 32, 256, 32 + 4


def host_splits(M, Q, K, sms):
    tiles = -(-M // BM) * -(-Q // BQ)
    k_steps = K // BK
    want = max(1, min(-(-2 * sms // tiles), k_steps // 8))
    per = -(-k_steps // want)
    return per, -(-k_steps // per)


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


def replay(gy, w, N, Cin, Cout, H, W, s, J, sms):
    kH = kW = J * s
    OW = (W + J - 1) * s
    Hb, Wb = H + J - 1, W + J - 1
    M, Q, K = N * Hb * Wb, J * J * Cin, Cout * s * s
    per, splits = host_splits(M, Q, K, sms)
    gy_flat, w_flat = gy.reshape(-1), w.reshape(-1)
    gy_n, gy_c = Cout * gy.shape[2] * gy.shape[3], gy.shape[2] * gy.shape[3]
    ws = np.full((splits, M, Q), np.nan)
    plane = Hb * Wb
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
                        co, rem = divmod(k, s * s)
                        ph, pw = divmod(rem, s)
                        ak, bk = co * gy_c + ph * OW + pw, co * kH * kW + ph * kW + pw
                        for i in range(4):
                            m = m0 + row + 32 * i
                            if m < M:
                                n, r = divmod(m, plane)
                                I, Jj = divmod(r, Wb)
                                off = n * gy_n + I * s * OW + Jj * s
                                smem[row + 32 * i, 4 * ch:4 * ch + 4] = gy_flat[off + ak:off + ak + 4]
                            else:
                                smem[row + 32 * i, 4 * ch:4 * ch + 4] = 0
                        for i in range(3):
                            q = q0 + row + 32 * i
                            if q < Q:
                                tap, ci = divmod(q, Cin)
                                jr, jc = divmod(tap, J)
                                off = ci * Cout * kH * kW + jr * s * kW + jc * s
                                smem[BM + row + 32 * i, 4 * ch:4 * ch + 4] = w_flat[off + bk:off + bk + 4]
                            else:
                                smem[BM + row + 32 * i, 4 * ch:4 * ch + 4] = 0
                    for warp in range(8):
                        wm, wn = warp // 2, warp % 2
                        for kk in range(0, BK, 8):
                            a_regs = [[None] * 4 for _ in range(2)]
                            b_regs = [[None] * 2 for _ in range(6)]
                            for i in range(2):
                                a_regs[i] = []
                                for lane in range(32):
                                    g, t = lane // 4, lane % 4
                                    r0 = wm * 32 + i * 16 + g
                                    a_regs[i].append([smem[r0, kk + t], smem[r0 + 8, kk + t], smem[r0, kk + t + 4],
                                                      smem[r0 + 8, kk + t + 4]])
                            for j in range(6):
                                b_regs[j] = []
                                for lane in range(32):
                                    g, t = lane // 4, lane % 4
                                    c0 = BM + wn * 48 + j * 8 + g
                                    b_regs[j].append([smem[c0, kk + t], smem[c0, kk + t + 4]])
                            for i in range(2):
                                for j in range(6):
                                    c = [acc[warp * 32 + lane][i][j] for lane in range(32)]
                                    d = mma_m16n8k8(a_regs[i], b_regs[j], c)
                                    for lane in range(32):
                                        acc[warp * 32 + lane][i][j] = d[lane]
                for tid in range(THREADS):
                    warp, lane = tid // 32, tid % 32
                    wm, wn, g, t = warp // 2, warp % 2, lane // 4, lane % 4
                    for i in range(2):
                        for h in range(2):
                            m = m0 + wm * 32 + i * 16 + g + 8 * h
                            if m >= M:
                                continue
                            for j in range(6):
                                for e in range(2):
                                    q = q0 + wn * 48 + j * 8 + 2 * t + e
                                    if q < Q:
                                        ws[bz, m, q] = acc[tid][i][j][2 * h + e]
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


def main():
    rng = np.random.default_rng(0)
    # (N, Cin, Cout, H, W, s, J, SMs): several M tiles, Q past one tile, several splits, J = 1..3
    for N, Cin, Cout, H, W, s, J, sms in [(2, 5, 3, 3, 2, 8, 2, 4), (1, 3, 1, 2, 3, 8, 3, 1),
                                          (1, 50, 1, 1, 1, 8, 2, 132), (2, 3, 1, 8, 9, 8, 2, 2),
                                          (3, 4, 2, 5, 6, 16, 2, 8), (1, 3, 22, 2, 2, 8, 2, 132)]:
        x = torch.from_numpy(rng.standard_normal((N, Cin, H, W))).requires_grad_()
        w = torch.from_numpy(rng.standard_normal((Cin, Cout, J * s, J * s)))
        y = F.conv_transpose2d(x, w, None, s)
        gy = torch.from_numpy(rng.standard_normal(tuple(y.shape)))
        (ref,) = torch.autograd.grad(y, x, gy)
        got, splits = replay(gy.numpy(), w.numpy(), N, Cin, Cout, H, W, s, J, sms)
        err = np.abs(got - ref.numpy()).max() / np.abs(ref.numpy()).max()
        print(f"N{N} Cin{Cin} Cout{Cout} {H}x{W} s{s} J{J}: {splits} splits, max rel err {err:.2e}")
        assert err < 1e-12, (N, Cin, Cout, H, W, s, J)
    print("fcn_dgrad_block replay: all cases match F.conv_transpose2d's grad_input")


if __name__ == "__main__":
    main()
