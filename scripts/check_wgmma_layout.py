"""Replays the index arithmetic of csrc/cuda/conv.cu's wgmma form (RNNKERN_CONV_MMA=wgmma) in
numpy:
- the cp.async destinations of gather_conv_kernel's issue() (channels_last 16-byte runs, fp32 NCHW
  element copies, the K-major B rows) and of the fp32 NCHW wgrad_kernel land every element of the
  WgmmaLayout tiles exactly once, and a warp's stores spread over all 32 banks;
- a model of wgmma reading its operands through our descriptors (the canonical K-major unswizzled
  layout, CuTe's ((8,m),(T,2)):((1T,SBO),(1,LBO)) in 16-byte units, T = 16 / element size)
  multiplies what was written;
- WgmmaMma's epilogue lands every accumulator of the 128 x 64 or 128 x 128 block tile once;
- the 16-bit channels_last grad_weight's MN-major tiles (wgmma's transposed operands, CuTe's
  ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))) likewise: copies, banks, product;
- the ring loop's k order (gather_conv_kernel's build_group and its loop, GatherParams::tap_group
  taps a group: 9 on wgmma, one elsewhere by default): every (live tap, channel chunk) is copied
  once, and one tap a group is the tap-by-tap order (the order only: the barriers around the
  tables are the C++'s); and how many distinct 16-byte lines of the gathered operand a chunk of a
  group touches against the copies it issues (the L1 reuse the group order is for).
Both element sizes (16-bit, fp32 as tf32). No GPU needed; a mismatch names the case.

    python scripts/check_wgmma_layout.py

This checks our arithmetic against the documented layout, not the hardware: the CUDA tests
(test_cuda_tensor_core_forms' wgmma rows, test_cuda_wgmma_form_is_the_one_that_runs) on an
H100 / H200 are what verify the kernel."""
import numpy as np

BM, BN, BK, THREADS = 128, 64, 32, 256


def check(elem: int, channels_last: bool, tn: int) -> None:
    """The gather kernel's tiles at BM x tn (wgmma_tile_n: 64 or 128), and the fp32 NCHW grad_weight's."""
    V = 16 // elem                       # elements per 16-byte run
    SBO, LBO = BK * elem * 8, 128        # WgmmaLayout::kSbo / kLbo
    steps = BK * elem // 32              # WgmmaLayout::kSteps: 32 bytes of k per instruction

    def at(row, k):                      # WgmmaLayout::at, in elements
        return ((row // 8) * SBO + (k * elem // 16) * 128 + (row % 8) * 16 + (k * elem) % 16) // elem

    def run(q):                          # WgmmaLayout::run: the q-th 16-byte run's (row, first k)
        runs = BK * elem // 16
        return q // (8 * runs) * 8 + q % 8, q // 8 % runs * (16 // elem)

    def nchw_elem(tid, i):               # the fp32 NCHW A copy of thread tid, iteration i
        return tid % 8 + 8 * ((tid // 32 + 8 * i) % 16), tid // 8 % 4 + 4 * (i // 2)

    def banks_ok(starts):                # eight 16-byte stores a wavefront: all 32 banks once
        for w in range(0, len(starts), 8):
            banks = sorted((b * elem // 4 + j) % 32 for b in starts[w:w + 8] for j in range(4))
            assert banks == list(range(32)), ("bank conflict", elem, starts[w:w + 8])

    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((BM, BK)), rng.standard_normal((BK, tn))
    sa, hits_a = np.full(BM * BK, np.nan), np.zeros(BM * BK, int)
    a_per = BM * BK // THREADS
    for tid in range(THREADS):           # issue(): the A copies
        if channels_last:                # 16-byte channel runs in core-matrix order
            for i in range(a_per // V):
                m, kv = run(tid + i * THREADS)
                for e in range(V):
                    sa[at(m, kv) + e] = A[m, kv + e]
                    hits_a[at(m, kv) + e] += 1
        else:                            # fp32 NCHW: 4-byte copies, a warp 8 pixels x 4 channels
            for i in range(a_per):
                m, k = nchw_elem(tid, i)
                sa[at(m, k)] = A[m, k]
                hits_a[at(m, k)] += 1
    assert (hits_a == 1).all(), ("A coverage", elem, channels_last)
    sb, hits_b = np.full(tn * BK, np.nan), np.zeros(tn * BK, int)
    kv_runs = BK // V
    for tid in range(THREADS):           # issue(): the K-major B rows, 16-byte runs along k
        for i in range(tn * kv_runs // THREADS):
            n, kv = run(tid + i * THREADS)
            for e in range(V):
                sb[at(n, kv) + e] = B[kv + e, n]
                hits_b[at(n, kv) + e] += 1
    assert (hits_b == 1).all(), ("B coverage", elem)
    for i in range(tn * kv_runs // THREADS):  # a warp's stores, eight threads a wavefront
        banks_ok([at(*run(tid + i * THREADS)) for tid in range(THREADS)])
    if channels_last:
        for i in range(a_per // V):
            banks_ok([at(*run(tid + i * THREADS)) for tid in range(THREADS)])
    else:                                # a warp's 32 four-byte copies: 32 distinct banks
        for i in range(a_per):
            for w in range(0, THREADS, 32):
                banks = sorted(at(*nchw_elem(tid, i)) % 32 for tid in range(w, w + 32))
                assert banks == list(range(32)), ("bank conflict, NCHW", i, w)

    def operand(buf, start, rows):       # wgmma's read of a rows x (32 bytes of k) K-major operand
        T = 16 // elem
        out = np.empty((rows, 2 * T))
        for r in range(rows):
            for kc in range(2):
                for t in range(T):
                    out[r, kc * T + t] = buf[(start + (r // 8) * SBO + kc * LBO + (r % 8) * 16 + t * elem) // elem]
        return out

    if not channels_last:                # the fp32 NCHW grad_weight's copies: A (BM rows) and B (BN rows)
        for rows in (BM, BN):             # of 32 pixels; a warp 8 rows x 4 pixels, a thread one pixel
            hits = np.zeros(rows * BK, int)
            for w in range(0, THREADS, 32):
                for i in range(rows // 8):
                    starts = [at(tid // 4 % 8 + 8 * i, tid % 4 + 4 * (tid // 32 % 8)) for tid in range(w, w + 32)]
                    assert sorted(b % 32 for b in starts) == list(range(32)), ("bank conflict, wgrad", rows, i)
                    for b in starts:
                        hits[b] += 1
            assert (hits == 1).all(), ("wgrad coverage", rows)

    D = np.zeros((BM, tn))
    for wg in range(2):                  # WgmmaMma::step: warpgroup wg takes rows 64 wg ...
        for ks in range(steps):
            a = operand(sa, wg * 8 * SBO + ks * 256, 64)
            b = operand(sb, ks * 256, tn)
            D[wg * 64:(wg + 1) * 64] += a @ b.T
    assert np.allclose(D, A @ B), ("product", elem, channels_last, tn)

    seen = np.zeros((BM, tn), int)       # WgmmaMma::epilogue: register 4j + 2h (+1) -> (m, n (+1))
    for tid in range(THREADS):
        wg, warp, lane = tid // 128, tid // 32 % 4, tid % 32
        for j in range(tn // 8):
            for h in range(2):
                m, n = wg * 64 + warp * 16 + lane // 4 + 8 * h, j * 8 + 2 * (lane % 4)
                seen[m, n] += 1
                seen[m, n + 1] += 1
    assert (seen == 1).all(), ("epilogue", elem, tn)


def check_mn_major(tn: int) -> None:
    """The 16-bit channels_last grad_weight: A (k_out x pixels) and B (pixels x c_in) both MN-major
    (WgmmaLayout::at_mn / run_mn, wgmma's transposed operands), BM x tn tiles: copies, banks, product."""
    elem, SBO, LBO = 2, BK * 2 * 8, 128
    at_mn = lambda mn, k: ((mn // 8) * SBO + (k // 8) * 128 + (k % 8) * 16 + (mn % 8) * elem) // elem

    def run_mn(q):
        blocks = BK // 8
        return (q // (32 * blocks) * 4 + q // 8 % 4) * 8, q // 32 % blocks * 8 + q % 8

    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((BM, BK)), rng.standard_normal((BK, tn))  # A[k_out, pixel], B[pixel, c_in]
    tiles = {}
    for name, rows, value in (("A", BM, lambda mn, k: A[mn, k]), ("B", tn, lambda mn, k: B[k, mn])):
        buf, hits = np.full(rows * BK, np.nan), np.zeros(rows * BK, int)
        for i in range(rows * BK // 8 // THREADS):
            starts = [at_mn(*run_mn(tid + i * THREADS)) for tid in range(THREADS)]
            for w in range(0, THREADS, 8):  # eight 16-byte stores a wavefront: all 32 banks
                banks = sorted((b * elem // 4 + j) % 32 for b in starts[w:w + 8] for j in range(4))
                assert banks == list(range(32)), ("bank conflict, MN-major", name)
            for tid in range(THREADS):
                mn, k = run_mn(tid + i * THREADS)
                for e in range(8):  # one run: 8 consecutive mn of one k
                    buf[at_mn(mn + e, k)] = value(mn + e, k)
                    hits[at_mn(mn + e, k)] += 1
        assert (hits == 1).all(), ("MN-major coverage", name)
        tiles[name] = buf

    def operand(buf, start, rows):  # wgmma's read of an MN-major operand (CuTe ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)))
        out = np.empty((rows, 16))
        for mn in range(rows):
            for k in range(16):
                out[mn, k] = buf[(start + (mn % 8) * elem + (mn // 8) * SBO + (k % 8) * 16 + (k // 8) * LBO) // elem]
        return out

    D = np.zeros((BM, tn))
    for wg in range(2):
        for ks in range(BK * elem // 32):
            a = operand(tiles["A"], wg * 8 * SBO + ks * 256, 64)
            b = operand(tiles["B"], ks * 256, tn)
            D[wg * 64:(wg + 1) * 64] += a @ b.T
    assert np.allclose(D, A @ B), ("MN-major product", tn)


def ring_order(live: list[bool], chunks: int, group_cap: int) -> list[tuple[int, int]]:
    """gather_conv_kernel's ring loop, its k-steps in issue order as (tap, chunk): build_group
    tabulates up to group_cap taps that read real data (live[t]); each group runs chunk-major."""
    order, next_tap = [], 0

    def build_group():
        nonlocal next_tap
        taps = []
        while next_tap < len(live) and len(taps) < group_cap:
            if live[next_tap]:
                taps.append(next_tap)
            next_tap += 1
        return taps

    taps, slot, c = build_group(), 0, 0
    while taps:
        order.append((taps[slot], c))
        slot += 1
        if slot == len(taps):
            slot, c = 0, c + 1
            if c == chunks:  # the next group (the C++ puts a barrier before build_group rewrites the tables)
                c = 0
                taps = build_group()
    return order


def check_ring_order(rng) -> None:
    for _ in range(300):
        ntaps, chunks, cap = int(rng.integers(1, 30)), int(rng.integers(1, 9)), int(rng.integers(1, 10))
        live = list(rng.random(ntaps) < 0.7)
        order = ring_order(live, chunks, cap)
        want = {(t, c) for t in range(ntaps) if live[t] for c in range(chunks)}
        assert len(order) == len(want) and set(order) == want, (ntaps, chunks, cap)
        if cap == 1:  # tap by tap, all chunks of a tap first: the other forms' order
            assert order == sorted(want)


def gather_lines(hw: int, d: int, group_cap: int, channels: int = 256, chunk_bytes: int = 64) -> tuple[int, int]:
    """(16-byte runs copied, distinct 16-byte lines among them, summed over chunks and groups) for
    one BM-pixel block of a 3x3 'same' forward at dilation d on hw x hw channels_last bf16 maps
    (row-order pixels, rows of hw). A group's chunk re-reading a line another of its taps copied is
    an L1 hit when the lines stay resident (cp.async.ca)."""
    runs_per_px = chunk_bytes // 16
    pixels = [(m // hw, m % hw) for m in range(BM)]
    taps = [(r, c) for r in range(3) for c in range(3)]
    live = []
    for r, c in taps:
        src = [(h + (r - 1) * d, w + (c - 1) * d) for h, w in pixels]
        live.append([p for p in src if 0 <= p[0] < hw and 0 <= p[1] < hw])
    chunks = channels * 2 // chunk_bytes
    copies = distinct = 0
    live_taps = [t for t in range(len(taps)) if live[t]]  # build_group: groups of live taps
    for g in range(0, len(live_taps), group_cap):
        members = live_taps[g:g + group_cap]
        for _ in range(chunks):
            seen = set()
            for t in members:
                copies += runs_per_px * len(live[t])
                seen.update(live[t])
            distinct += runs_per_px * len(seen)
    return copies, distinct


if __name__ == "__main__":
    check_ring_order(np.random.default_rng(0))
    print("ok: ring k order (every live tap x chunk once; 1 tap a group = tap by tap)")
    for d in (1, 6):
        copies, lines = gather_lines(64, d, 9)
        _, lines1 = gather_lines(64, d, 1)
        print(f"   gathered A, bf16 3x3 d{d} 64x64, one 128-pixel block: {copies} 16-byte copies, distinct lines "
              f"{lines} a chunk across a 9-tap group ({copies / lines:.1f}x reuse; tap by tap {copies / lines1:.1f}x)")
    for elem, cl in ((2, True), (4, True), (4, False)):  # 16-bit NCHW has no cp.async form
        for tn in (64, 128):
            check(elem, cl, tn)
            print(f"ok: {8 * elem}-bit {'channels_last' if cl else 'NCHW'}, {BM} x {tn} tiles")
    for tn in (64, 128):
        check_mn_major(tn)
        print(f"ok: 16-bit channels_last grad_weight (MN-major operands), {BM} x {tn} tiles")
