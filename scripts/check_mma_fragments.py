"""Replays csrc/cuda/conv.cu's MmaSyncMma::step in numpy: its shared-memory addresses, the PTX
semantics of ldmatrix(.trans) and of the mma.sync m16n8k16 / m16n8k8 fragments (PTX ISA, "Matrix
Fragments for mma.m16n8k16 / mma.m16n8k8" and "ldmatrix"), and the accumulator layout its
epilogue writes back, for all four shared-tile layouts (A as [m][k] or [k][m], B as [k][n] or
[n][k]) and both element sizes. Each block tile's result must equal the plain product of the
logical A (BM x BK) and B (BK x BN). No GPU needed; a mismatch names the case.

    python scripts/check_mma_fragments.py

This checks the index arithmetic against the documented fragment layouts, not the hardware: the
CUDA tests on a GPU are what verify the kernels."""
import itertools

import numpy as np

BM, BN, BK, WARPS = 128, 64, 32, 8


def ldmatrix_x4(mem, lane_addr, trans, elem_words):
    """mem: shared memory as a flat array of 16-bit units; lane_addr(l) -> unit address of the row
    lane l supplies. Returns regs[lane][4], each a tuple of the 16-bit units it holds (2 units)."""
    regs = [[None] * 4 for _ in range(32)]
    for piece in range(4):
        rows = [mem[lane_addr(8 * piece + r):lane_addr(8 * piece + r) + 8] for r in range(8)]  # 8 x 8 units
        for lane in range(32):
            if not trans:
                r, c = lane // 4, 2 * (lane % 4)
                regs[lane][piece] = (rows[r][c], rows[r][c + 1])
            else:
                assert elem_words == 1, "ldmatrix .trans only on 16-bit elements"
                r, c = 2 * (lane % 4), lane // 4
                regs[lane][piece] = (rows[r][c], rows[r + 1][c])
    return regs


def check(tf32, a_mk, b_kn, rng):
    units = 2 if tf32 else 1          # 16-bit units per element
    fk = 8 if tf32 else 16
    pad = 16 // (4 if tf32 else 2)    # Cfg::PAD
    pad_k = 8 if tf32 else pad        # Cfg::PAD_K
    # tile shapes and leading dimensions as the kernels declare them (SmemTile<R, C, PAD>)
    lda = (BK + pad) if a_mk else (BM + pad_k)
    ldb = (BN + pad_k) if b_kn else (BK + pad)
    a_rows = BM if a_mk else BK
    b_rows = BK if b_kn else BN
    A = rng.integers(-4, 5, size=(BM, BK)).astype(np.int64)
    B = rng.integers(-4, 5, size=(BK, BN)).astype(np.int64)
    # shared memory in elements, then split into 16-bit units: unit 0 of an element holds its value
    # (the emulation only tracks which element lands where), unit 1 a marker
    a_sm = np.full(a_rows * lda, 10 ** 6, dtype=np.int64)
    b_sm = np.full(b_rows * ldb, 10 ** 6, dtype=np.int64)
    for m, k in itertools.product(range(BM), range(BK)):
        a_sm[m * lda + k if a_mk else k * lda + m] = A[m, k]
    for k, n in itertools.product(range(BK), range(BN)):
        b_sm[k * ldb + n if b_kn else n * ldb + k] = B[k, n]

    def as_units(sm):
        if not tf32:
            return sm
        out = np.empty(2 * len(sm), dtype=np.int64)
        out[0::2], out[1::2] = sm, -(10 ** 9)
        return out

    a_u, b_u = as_units(a_sm), as_units(b_sm)

    def elem(reg_units):  # one 32-bit register -> its elements
        return [reg_units[0]] if tf32 else list(reg_units)

    C = np.zeros((BM, BN), dtype=np.int64)
    for warp in range(WARPS):
        wm, wn = warp // 2, warp % 2
        acc = np.zeros((32, 2, 4, 4), dtype=np.int64)
        for kk in range(0, BK, fk):
            a = [[None] * 2 for _ in range(32)]
            b = [[None] * 4 for _ in range(32)]
            for i in range(2):
                m0 = wm * 32 + i * 16
                if a_mk:
                    regs = ldmatrix_x4(a_u, lambda l: ((m0 + l % 16) * lda + kk + l // 16 * (fk // 2)) * units,
                                       False, units)
                elif not tf32:
                    regs = ldmatrix_x4(a_u, lambda l: ((kk + l % 8 + l // 16 * 8) * lda + m0 + l // 8 % 2 * 8) * units,
                                       True, units)
                else:
                    regs = []
                    for l in range(32):
                        g, t = l // 4, l % 4
                        regs.append([(a_sm[(kk + t) * lda + m0 + g],), (a_sm[(kk + t) * lda + m0 + g + 8],),
                                     (a_sm[(kk + t + 4) * lda + m0 + g],), (a_sm[(kk + t + 4) * lda + m0 + g + 8],)])
                for l in range(32):
                    a[l][i] = [elem(r) for r in regs[l]]
            for jj in range(2):
                n0 = wn * 32 + jj * 16
                if not b_kn or not tf32:
                    if not b_kn:
                        regs = ldmatrix_x4(b_u, lambda l: ((n0 + l % 8 + l // 16 * 8) * ldb + kk + l // 8 % 2 * (fk // 2)) * units,
                                           False, units)
                    else:
                        regs = ldmatrix_x4(b_u, lambda l: ((kk + l % 8 + l // 8 % 2 * 8) * ldb + n0 + l // 16 * 8) * units,
                                           True, units)
                    for l in range(32):
                        b[l][2 * jj] = [elem(regs[l][0]), elem(regs[l][1])]
                        b[l][2 * jj + 1] = [elem(regs[l][2]), elem(regs[l][3])]
                else:
                    for l in range(32):
                        g, t = l // 4, l % 4
                        for j in range(2):
                            b[l][2 * jj + j] = [[b_sm[(kk + t) * ldb + n0 + j * 8 + g]],
                                                [b_sm[(kk + t + 4) * ldb + n0 + j * 8 + g]]]
            # mma.sync: rebuild the m16 x k and k x n8 operands from the fragments (PTX layouts)
            for i, j in itertools.product(range(2), range(4)):
                Af = np.full((16, fk), 10 ** 7, dtype=np.int64)
                Bf = np.full((fk, 8), 10 ** 7, dtype=np.int64)
                for l in range(32):
                    g, t = l // 4, l % 4
                    for r in range(4):
                        row = g + 8 * (r % 2)
                        for e, v in enumerate(a[l][i][r]):
                            col = (t + 4 * (r // 2)) if tf32 else (2 * t + e + 8 * (r // 2))
                            Af[row, col] = v
                    for r in range(2):
                        for e, v in enumerate(b[l][j][r]):
                            krow = (t + 4 * r) if tf32 else (2 * t + e + 8 * r)
                            Bf[krow, g] = v
                D = Af @ Bf
                for l in range(32):
                    g, t = l // 4, l % 4
                    for r in range(4):
                        acc[l, i, j, r] += D[g + 8 * (r // 2), 2 * t + r % 2]
        # the epilogue's placement: (m, n) = (wm*32 + i*16 + g + 8h, wn*32 + j*8 + 2t + e), reg 2h + e
        for l, i, j, h, e in itertools.product(range(32), range(2), range(4), range(2), range(2)):
            g, t = l // 4, l % 4
            C[wm * 32 + i * 16 + g + 8 * h, wn * 32 + j * 8 + 2 * t + e] += acc[l, i, j, 2 * h + e]
    ok = np.array_equal(C, A @ B)
    name = f"{'tf32' if tf32 else '16-bit'} A {'[m][k]' if a_mk else '[k][m]'} B {'[k][n]' if b_kn else '[n][k]'}"
    print(f"{name:36s} {'ok' if ok else 'MISMATCH'}")
    return ok


def main():
    rng = np.random.default_rng(0)
    results = [check(tf32, a_mk, b_kn, rng) for tf32, a_mk, b_kn in itertools.product((False, True), repeat=3)]
    raise SystemExit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
