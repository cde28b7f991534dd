"""Replays, in numpy, csrc/cuda/rnn.cu's one-CTA RNN kernel (rnn_one_cta_kernel, "one CTA for small
H", RNNKERN_RNN_PATH=cta) for one step of one CTA of 512 threads (16 warps): the W fill (16-bit: hpad
rows x mma_ldk(hpad, 2) elements in mma_k_position's order; fp32: TF32 split into a hi16 plane of
hpad * hpad / 2 32-bit words and a lo8 plane of hpad * hpad / 2 16-bit units, the value pair p of
row n at unit n * hpad / 2 + one_cta_pair_unit(n, p)), the h_0 staging (h_s zeroed, then
each state0 element placed at mma_k_position), each warp's k-half of the product (n_group = warp % 8,
k_half = warp / 8, the pipelined k-loop, 8-byte A / 16-bit W loads, fp32's 32-bit hi + 16-bit lo
loads recombined by __byte_perm), the upper half's float2 stores into part_s and the lower half's
epilogue (acc + part_s, the outputs and h_t written into h_s for the next step). Fragment semantics
are PTX's (ISA, "Matrix Fragments for mma.m16n8k8" .tf32 and "... mma.m16n8k16" .bf16 / .f16;
tables imported from scripts/check_rnn_mma.py); __byte_perm(x, y, s): result byte i = byte
(s >> 4 i) & 7 of x.b0..b3 (0-3), y.b0..b3 (4-7).

Shared memory is a byte array (little-endian, unwritten bytes tracked); registers are bit patterns.
Values: W fp32 as random fp32 bit patterns already TF32 (low 13 bits zero) on half the cases and with
bits 12..8 random too on the others (every bit of the lo8 byte exercised; the product model drops
bits 12..0 as the tensor core does), bf16 / f16 random with a narrow exponent range; h small
integers. Every product is then exact in fp64. Checks, for fp32 (TF32) and 16-bit (bf16, and f16 on
a few), H in {1, 7, 63, 64, 65, 129, 200, 256}, B in {1, 3, 8, 16} (live = B, or fewer, or 0):
 (1) the W fill writes each byte of the planes (fp32) / each (n < hpad, position < hpad) element
     (16-bit) exactly once, nothing else (16-bit rows' padding never written, never read); each
     lane's B registers, rebuilt from the loads (fp32: __byte_perm of the hi word and the lo unit),
     equal the PTX B layout's W[n, k] (tf32 b0 k = t, b1 k = t + 4; 16-bit b0 k 2t..2t+1, b1 k
     2t+8..2t+9; n = g) bit for bit (fp32: W's bits 31..8, bits 7..0 zero); every (n tile, k-step)
     loaded once over the 16 warps;
 (2) the h_0 staging: position c < hpad of row b holds state0[b, col] with mma_k_position(col) ==
     c (col < H, b < B), zero otherwise (and with no state0); positions [hpad, ldh) and rows >= B
     zero;
 (3) the A registers equal the PTX A layout of h (a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3
     (g + 8, t + 4); 16-bit in word pairs); each half multiplies its k-steps 0 .. half_steps - 1
     once in order (the pipelined loop as written), the two halves together k-steps [0, k_steps)
     once; the lower half's acc + part_s (the upper half's) == h @ W.T (fp64, exact) for every
     (b < B, u < H); every output written once by the lower half (y == 0 for b >= live); the upper
     half's float2 stores inside part_s, each (b < 16, n < hpad) element once, read back once;
 (4) the epilogue's h_s write (each (b < B, u < H) once at b * ldh + mma_k_position(u)) leaves h_s
     == a fresh staging (2) of the outputs: the next step multiplies h_t;
 (5) no bank conflicts in the fp32 hi-plane 32-bit and lo-plane 16-bit loads (a warp: one word a
     bank; lanes sharing a word do not conflict), nor in the 16-bit W and the A 8-byte loads (each
     half-warp); the float2 stores' (and the epilogue's part_s reads') conflicts are reported;
 (6) one_cta_smem(hpad, elem) == the regions the kernel's pointers use (W / planes, h_s, part_s,
     for every H 1..256), <= sharedMemPerBlockOptin (232448) at H256; every 8-byte access 8-byte
     aligned, every access inside its region (loads of h_s / 16-bit W inside a row's first hpad
     positions, the planes' loads inside their row), no read of an unwritten byte;
 (7) mutants of the replay (the swizzle dropped on the load side only, selector 0x1046 -> 0x1064, the
     h_0 staging without mma_k_position, A without the k_half offset, the lo plane's base
     off by one row, ...) each caught by the checks it must trip;
 (8) anchors: the source lines of rnn_one_cta_kernel and its helpers the replay models must still be
     in rnn.cu / tensor_core.cuh (comments and whitespace ignored); a missing one is a MISMATCH
     naming it; a comment-only edit is not flagged, real edits are.

    python scripts/check_rnn_one_cta.py

This checks the index arithmetic against the documented PTX layouts, not the hardware: the CUDA
tests in tests/ops/test_rnn.py on a GPU are what verify the kernel."""
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

NTHREADS = 512      # kOneCtaThreads
NWARPS = NTHREADS // 32
TILES = 4           # kOneCtaTilesPerWarp
MAX_H, MAX_B = 256, 16
OPTIN = 227 * 1024  # sharedMemPerBlockOptin of an H100 / H200 (232448)
SEL_B0, SEL_B1 = 0x1046, 0x3256
REPORT_ONLY = set()


# ---------------------------------------------------------------------------------------------
# anchors

# (what the replay assumes, the code that says so, where): "f" rnn.cu, "tc" tensor_core.cuh,
# "k" rnn_one_cta_kernel's body; first the helpers' shared with check_rnn_mma.py (mma_ldk,
# mma_k_position), last mma_tile's PTX instructions (the same)
ANCHORS = _mma.LAYOUT_ANCHORS + [
    # helpers
    ("kOneCtaThreads 512", "constexpr int kOneCtaThreads = 512;", "f"),
    ("kOneCtaMaxH 256, kOneCtaMaxBatch 16", "constexpr int kOneCtaMaxH = 256, kOneCtaMaxBatch = 16;", "f"),
    ("kOneCtaTilesPerWarp 4", "constexpr int kOneCtaTilesPerWarp = 4;", "f"),
    ("one_cta_hpad: round up to 64",
     "__host__ __device__ constexpr int one_cta_hpad(int H) { return (H + 63) / 64 * 64; }", "f"),
    ("one_cta_w_bytes: 3 hpad^2 (planes) / hpad x mma_ldk(hpad, 2) x 2",
     "__host__ __device__ constexpr size_t one_cta_w_bytes(int hpad, int elem_size) { return elem_size == 4 ? "
     "static_cast<size_t>(hpad) * hpad * 3 : static_cast<size_t>(hpad) * mma_ldk(hpad, 2) * 2; }", "f"),
    ("one_cta_smem: W + 16 x ldh + 16 x (hpad + 8) floats",
     "__host__ __device__ constexpr size_t one_cta_smem(int hpad, int elem_size) { return one_cta_w_bytes(hpad, "
     "elem_size) + static_cast<size_t>(16) * mma_ldk(hpad, elem_size) * elem_size + static_cast<size_t>(16) * "
     "(hpad + 8) * sizeof(float); }", "f"),
    ("one_cta_pair_unit: XOR swizzle by n % 8",
     "__host__ __device__ constexpr int one_cta_pair_unit(int n, int p) { return p ^ ((n % 8) * 4); }", "f"),
    ("host: the smem from min(H, kOneCtaMaxH) and the element size",
     "cfg.one_cta_smem = one_cta_smem(one_cta_hpad(static_cast<int>(std::min<int64_t>(H, kOneCtaMaxH))), "
     "static_cast<int>(x.element_size()));", "f"),
    ("host: B <= 16", "else if (B > kOneCtaMaxBatch) cfg.one_cta_why = \"batch > 16\";", "f"),
    ("host: H <= 256", "else if (H > kOneCtaMaxH) cfg.one_cta_why = \"H > 256\";", "f"),
    ("host: smem <= sharedMemPerBlockOptin",
     "else if (cfg.one_cta_smem > prop->sharedMemPerBlockOptin) cfg.one_cta_why = \"W_hh exceeds shared memory\";",
     "f"),
    ("launch: 1 CTA of kOneCtaThreads, one_cta_smem",
     "config.gridDim = dim3(1); config.blockDim = dim3(kOneCtaThreads); config.dynamicSmemBytes = cfg.one_cta_smem;",
     "f"),
    # the kernel: geometry and pointers
    ("kPlanes: fp32", "constexpr bool kPlanes = std::is_same_v<scalar_t, float>;", "k"),
    ("kElem", "constexpr int kElem = sizeof(scalar_t);", "k"),
    ("hpad", "const int hpad = one_cta_hpad(p.H);", "k"),
    ("ldh", "const int ldh = mma_ldk(hpad, kElem);", "k"),
    ("ldh_words", "const int ldh_words = ldh * kElem / 4;", "k"),
    ("ldp = hpad + 8", "const int ldp = hpad + 8;", "k"),
    ("k_steps", "const int k_steps = hpad * kElem / 32;", "k"),
    ("half_steps", "const int half_steps = k_steps / 2;", "k"),
    ("n_tiles", "const int n_tiles = hpad / 8;", "k"),
    ("w_words at byte 0", "uint32_t* w_words = reinterpret_cast<uint32_t*>(smem_raw);", "k"),
    ("h_s after W", "scalar_t* h_s = reinterpret_cast<scalar_t*>(smem_raw + one_cta_w_bytes(hpad, kElem));", "k"),
    ("part_s after 16 rows of h_s", "float* part_s = reinterpret_cast<float*>(h_s + 16 * ldh);", "k"),
    # h_s zeroed, the W fill
    ("h_s zeroed", "for (int i = threadIdx.x; i < 16 * ldh; i += blockDim.x) h_s[i] = scalar_t(0);", "k"),
    ("w_lo8 at byte hpad * hpad * 2", "uint8_t* w_lo8 = smem_raw + static_cast<size_t>(hpad) * hpad * 2;", "k"),
    ("W fill loop", "for (int i = threadIdx.x; i < hpad * hpad; i += blockDim.x) {", "k"),
    ("W fill (n, c)", "const int n = i / hpad, c = i % hpad;", "k"),
    ("W fill value (zero padded)", "const scalar_t v = n < p.H && c < p.H ? "
     "mma_operand(p.weight[static_cast<int64_t>(n) * p.H + c]) : scalar_t(0);", "k"),
    ("W fill position", "const int pos = mma_k_position(c, kElem);", "k"),
    ("fp32 bits", "const uint32_t bits = __float_as_uint(v);", "k"),
    ("fill slot", "const int slot = (n * hpad / 2 + one_cta_pair_unit(n, pos / 2)) * 2 + pos % 2;", "k"),
    ("hi16 plane store", "reinterpret_cast<uint16_t*>(w_words)[slot] = static_cast<uint16_t>(bits >> 16);", "k"),
    ("lo8 plane store", "w_lo8[slot] = static_cast<uint8_t>(bits >> 8);", "k"),
    ("16-bit W store", "reinterpret_cast<scalar_t*>(w_words)[n * ldh + pos] = v;", "k"),
    # the h_0 staging (after the zero fill's barrier)
    ("h_0 after the barrier, only with state0", "__syncthreads(); if (p.state0 != nullptr) "
     "for (int i = threadIdx.x; i < p.B * p.H; i += blockDim.x)", "k"),
    ("h_0 store", "h_s[i / p.H * ldh + mma_k_position(i % p.H, kElem)] = mma_operand(p.state0[i]);", "k"),
    # the warps
    ("warp, lane, g, t",
     "const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;", "k"),
    ("n_group, k_half", "const int n_group = warp % 8, k_half = warp / 8;", "k"),
    ("multiply only when live > 0", "if (live > 0) {", "k"),
    ("a_row", "const uint32_t* a_row = h_words + g * ldh_words + 2 * t + k_half * half_steps * 8;", "k"),
    ("A lo", "const uint2 lo = *reinterpret_cast<const uint2*>(a_row + ks * 8);", "k"),
    ("A hi", "const uint2 hi = *reinterpret_cast<const uint2*>(a_row + 8 * ldh_words + ks * 8);", "k"),
    ("a[0] = lo.x, a[2] = lo.y, a[1] = hi.x, a[3] = hi.y (fragment buffer buf)",
     "a[buf][0] = lo.x, a[buf][2] = lo.y, a[buf][1] = hi.x, a[buf][3] = hi.y;", "k"),
    ("kg", "const int kg = k_half * half_steps + ks;", "k"),
    ("B row n", "const int n = (n_group + 8 * j) * 8 + g;", "k"),
    ("B zero past hpad", "if (n >= hpad) { b[buf][j][0] = b[buf][j][1] = 0u; }", "k"),
    ("B plane unit", "const int unit = n * hpad / 2 + one_cta_pair_unit(n, kg * 4 + t);", "k"),
    ("hi word load", "const uint32_t top = w_words[unit];", "k"),
    ("lo unit load", "const uint32_t low = reinterpret_cast<const uint16_t*>(w_lo8)[unit];", "k"),
    ("b0 byte_perm 0x1046", "b[buf][j][0] = __byte_perm(top, low, 0x1046);", "k"),
    ("b1 byte_perm 0x3256", "b[buf][j][1] = __byte_perm(top, low, 0x3256);", "k"),
    ("16-bit B load",
     "const uint2 v = *reinterpret_cast<const uint2*>(w_words + n * ldh_words + kg * 8 + 2 * t);", "k"),
    ("16-bit b0, b1", "b[buf][j][0] = v.x, b[buf][j][1] = v.y;", "k"),
    ("multiply tiles < n_tiles",
     "for (int j = 0; j < kOneCtaTilesPerWarp; ++j) if (n_group + 8 * j < n_tiles) "
     "mma_tile<Native>(acc[j], a[buf], b[buf][j]);", "k"),
    ("the pipelined k-loop", _mma.pipelined_loop_anchor("half_steps"), "k"),
    # the upper half's stores, the epilogue
    ("upper half stores", "if (k_half == 1) {", "k"),
    ("tiles < n_tiles", "if (n_group + 8 * j >= n_tiles) break;", "k"),
    ("part_s out", "float* out = part_s + g * ldp + (n_group + 8 * j) * 8 + 2 * t;", "k"),
    ("store c0, c1", "*reinterpret_cast<float2*>(out) = make_float2(acc[j][0], acc[j][1]);", "k"),
    ("store c2, c3 at + 8 ldp", "*reinterpret_cast<float2*>(out + 8 * ldp) = make_float2(acc[j][2], acc[j][3]);", "k"),
    ("lower half's epilogue", "if (k_half == 0) {", "k"),
    ("epilogue (b, u)", "const int b = g + 8 * (r / 2), u = (n_group + 8 * j) * 8 + 2 * t + r % 2;", "k"),
    ("epilogue skips b >= B, u >= H", "if (b >= p.B || u >= p.H) continue;", "k"),
    ("epilogue sum", "const float sum = acc[j][r] + part_s[b * ldp + u];", "k"),
    ("y == 0 for b >= live", "const float y = b < live ? step_epilogue(z[j][r] + sum, hf[j][r], p.relu, p.backward) : "
     "0.f;", "k"),
    ("output", "cur[static_cast<int64_t>(b) * p.H + u] = static_cast<scalar_t>(y);", "k"),
    ("h_s write", "h_s[b * ldh + mma_k_position(u, kElem)] = mma_operand(static_cast<scalar_t>(y));", "k"),
] + _mma.PTX_ANCHORS


def check_anchors(rnn, tc):
    return _mma.missing_anchors(ANCHORS, {"f": _code(rnn), "tc": _code(tc),
                                          "k": _code(_body(rnn, "rnn_one_cta_kernel(PersistentParams<scalar_t> p) {"))})


# edits of rnn.cu the anchors must catch (old, new); and one they must not (comments, layout)
SOURCE_EDITS = {
    "selector 0x1064": ("__byte_perm(top, low, 0x1046)", "__byte_perm(top, low, 0x1064)"),
    "swizzle by (n % 8) * 2": ("p ^ ((n % 8) * 4)", "p ^ ((n % 8) * 2)"),
    "staging unpermuted": ("h_s[i / p.H * ldh + mma_k_position(i % p.H, kElem)]", "h_s[i / p.H * ldh + i % p.H]"),
    "A without k_half": ("2 * t + k_half * half_steps * 8;", "2 * t;"),
    "lo plane one row on": ("uint8_t* w_lo8 = smem_raw + static_cast<size_t>(hpad) * hpad * 2;",
                            "uint8_t* w_lo8 = smem_raw + static_cast<size_t>(hpad) * hpad * 2 + hpad;"),
    "ldp = hpad + 4": ("const int ldp = hpad + 8;", "const int ldp = hpad + 4;"),
    "hpad to 32": ("(H + 63) / 64 * 64", "(H + 31) / 32 * 32"),
    "pair kg * 8 + t": ("one_cta_pair_unit(n, kg * 4 + t)", "one_cta_pair_unit(n, kg * 8 + t)"),
    "h_s write unpermuted": ("h_s[b * ldh + mma_k_position(u, kElem)]", "h_s[b * ldh + u]"),
    "part_s rows hpad + 4 in smem": ("static_cast<size_t>(16) * (hpad + 8) * sizeof(float)",
                                     "static_cast<size_t>(16) * (hpad + 4) * sizeof(float)"),
    "16-bit W at n * ldh + c": ("reinterpret_cast<scalar_t*>(w_words)[n * ldh + pos] = v;",
                                "reinterpret_cast<scalar_t*>(w_words)[n * ldh + c] = v;"),
}
NEUTRAL_EDIT = ("const int n_group = warp % 8, k_half = warp / 8;",
                "const int n_group = warp % 8,  // the n8 tile group\n      k_half = warp / 8;  /* half of k */")


# ---------------------------------------------------------------------------------------------
# the C++ formulas, as the replay runs them (mut: the names of the mutants in effect)

def one_cta_hpad(H):
    return (H + 63) // 64 * 64


def one_cta_w_bytes(hpad, elem):
    return hpad * hpad * 3 if elem == 4 else hpad * mma_ldk(hpad, 2) * 2


def one_cta_smem(hpad, elem):
    return one_cta_w_bytes(hpad, elem) + 16 * mma_ldk(hpad, elem) * elem + 16 * (hpad + 8) * 4


def one_cta_pair_unit(n, p):
    return p ^ ((n % 8) * 4)


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


# ---------------------------------------------------------------------------------------------
# one step of the CTA, replayed

class Geometry:
    def __init__(self, elem, H):
        self.elem, self.H = elem, H
        self.per_word = 4 // elem
        self.hpad = one_cta_hpad(H)
        self.ldh = mma_ldk(self.hpad, elem)
        self.ldh_words = self.ldh * elem // 4
        self.ldp = self.hpad + 8
        self.k_steps = self.hpad * elem // 32
        self.half_steps = self.k_steps // 2
        self.n_tiles = self.hpad // 8
        self.w_bytes = one_cta_w_bytes(self.hpad, elem)
        self.hi_bytes = self.hpad * self.hpad * 2      # the lo8 plane's offset (w_lo)
        self.h_base = self.w_bytes
        self.part_base = self.h_base + 16 * self.ldh * elem
        self.end = self.part_base + 16 * self.ldp * 4
        self.smem = one_cta_smem(self.hpad, elem)


def staged_image(g, src_bits, B, H):
    """(2)'s expectation: 16 x ldh operand bits with
    src_bits[b, col] at b, mma_k_position(col) (b < B, col < H), zero elsewhere."""
    img = np.zeros((16, g.ldh), dtype=np.int64)
    if src_bits is not None:
        img[np.arange(B)[:, None], mma_k_position(np.arange(H), g.elem)[None, :]] = src_bits[:B, :H]
    return img


class Smem:
    """Shared memory as bytes; which bytes were written."""

    def __init__(self, size):
        self.size = size
        self.b = np.zeros(size, dtype=np.int64)
        self.init = np.zeros(size, dtype=bool)
        self.count = np.zeros(size, dtype=np.int64)

    def store(self, addr, value, nbytes):
        """Each address (any shape) stores nbytes of value (little-endian); returns the mask inside."""
        addr, value = np.asarray(addr, dtype=np.int64).ravel(), np.asarray(value, dtype=np.int64).ravel()
        idx = addr[:, None] + np.arange(nbytes)[None, :]
        inside = ((idx >= 0) & (idx < self.size)).all(axis=1)
        idx, byt = idx[inside], (value[inside, None] >> (8 * np.arange(nbytes))[None, :]) & 0xFF
        self.b[idx.ravel()] = byt.ravel()
        self.init[idx.ravel()] = True
        np.add.at(self.count, idx.ravel(), 1)
        return inside

    def load8(self, addr):
        """An 8-byte load: (.x, .y, inside, all bytes written) of each address."""
        x, ok_x, w_x = self.load(addr, 4)
        y, ok_y, w_y = self.load(np.asarray(addr, dtype=np.int64) + 4, 4)
        return x, y, ok_x & ok_y, w_x & w_y

    def load(self, addr, nbytes):
        """(value, inside, all bytes written) of each address's nbytes (<= 4, little-endian)."""
        assert nbytes <= 4
        addr = np.asarray(addr, dtype=np.int64)
        idx = addr[..., None] + np.arange(nbytes)
        inside = ((idx >= 0) & (idx < self.size)).all(axis=-1)
        cl = np.clip(idx, 0, self.size - 1)
        val = (self.b[cl] << (8 * np.arange(nbytes))).sum(axis=-1)
        return np.where(inside, val, 0), inside, self.init[cl].all(axis=-1)


def conflict_ways(words):
    """The most distinct 32-bit words one bank serves in one access (words: the words it touches)."""
    u = np.unique(np.asarray(words).ravel())
    return int(np.bincount(u % 32, minlength=32).max())


def replay(fmt, H, B, live, seed, with_state0=True, low_zero=13, mut=frozenset(), stats=None):
    """One step of rnn_one_cta_kernel. Returns findings [(check, msg)]."""
    found = []
    name = f"{fmt} H{H} B{B} live{live}{'' if with_state0 else ' no h_0'}"

    def bad(check, msg):
        found.append((check, f"{name}: {msg}"))

    elem = FMTS[fmt]
    g_ = Geometry(elem, H)
    hpad, ldh, ldh_words, ldp = g_.hpad, g_.ldh, g_.ldh_words, g_.ldp
    per_word, K = g_.per_word, 8 * g_.per_word  # elements per word, an mma k-step's k
    k_steps, half_steps, n_tiles = g_.k_steps, g_.half_steps, g_.n_tiles
    rng = np.random.default_rng(seed)
    wbits = random_w_bits(fmt, H, rng, low_zero)
    state0 = rng.integers(-3, 4, size=(B, H)).astype(np.float64) if with_state0 else None
    s0bits = encode(fmt, state0) if with_state0 else None
    # the logical operands (hpad x hpad, 16 x hpad), zero padded
    Wb = np.zeros((hpad, hpad), dtype=np.int64)
    Wb[:H, :H] = wbits
    hb = np.zeros((16, hpad), dtype=np.int64)
    if with_state0:
        hb[:B, :H] = s0bits

    # (6) the regions the pointers use
    if g_.smem != g_.end or (elem == 4 and g_.hi_bytes * 3 // 2 != g_.w_bytes) or g_.h_base % 16 or g_.part_base % 16:
        bad("6", f"one_cta_smem {g_.smem} != the regions' end {g_.end} (W {g_.w_bytes}, h_s at {g_.h_base}, part_s at "
                 f"{g_.part_base}) or a region misaligned")
    mem = Smem(g_.smem)

    # ---- the W fill: i = tid, tid + 512, ... < hpad * hpad (every i once)
    i = np.arange(hpad * hpad)
    n, c = i // hpad, i % hpad
    v = Wb[n, c]
    pos = mma_k_position(c, elem)
    if elem == 4:
        unit = pos // 2 if "fill_unswizzled" in mut else one_cta_pair_unit(n, pos // 2)
        hi_at = ((n * hpad // 2 + unit) * 2 + pos % 2) * 2
        lo_at = g_.hi_bytes + (n * hpad // 2 + unit) * 2 + pos % 2
        ok_hi = (hi_at >= 0) & (hi_at + 2 <= g_.hi_bytes)
        ok_lo = (lo_at >= g_.hi_bytes) & (lo_at < g_.w_bytes)
        mem.store(hi_at, (v >> 16) & 0xFFFF, 2)
        mem.store(lo_at, (v >> 8) & 0xFF, 1)
        if not (ok_hi.all() and ok_lo.all()):
            bad("1", "the W fill writes outside its plane")
        if (mem.count[:g_.w_bytes] != 1).any():
            at = int(np.argmax(mem.count[:g_.w_bytes] != 1))
            bad("1", f"the planes' byte {at} written {mem.count[at]} times (each once)")
    else:
        at = (n * ldh + pos) * 2
        mem.store(at, v, 2)
        want = np.zeros(g_.w_bytes, dtype=np.int64)
        rows = np.arange(hpad)[:, None] * ldh * 2
        want[(rows + np.arange(hpad * 2)[None, :]).ravel()] = 1
        if not np.array_equal(mem.count[:g_.w_bytes], want) or mem.count[g_.w_bytes:].any():
            bad("1", "the 16-bit W fill does not write each (n < hpad, position < hpad) once and nothing else")

    # ---- h_s zeroed (i = tid, tid + 512, ... < 16 * ldh), then, after a barrier, h_0 placed:
    # i < B * H, element (i / H, i % H) at row i / H, position mma_k_position(i % H)
    before = mem.count.copy()
    mem.store(g_.h_base + np.arange(16 * ldh) * elem, np.zeros(16 * ldh, dtype=np.int64), elem)
    if (mem.count - before)[g_.h_base:g_.part_base].min() != 1 or (mem.count - before).sum() != 16 * ldh * elem:
        bad("2", "the zero fill does not write each h_s element once (and nothing else)")
    if with_state0:
        i = np.arange(B * H)
        b, col = i // H, i % H
        at = b * ldh + staging_position(col, elem, mut)
        before = mem.count.copy()
        mem.store(g_.h_base + at * elem, s0bits[b, col], elem)
        placed = (mem.count - before)[g_.h_base:g_.part_base].reshape(16 * ldh, elem)[:, 0]
        if (mem.count - before).sum() != B * H * elem or placed.max() > 1 or ((at % ldh) >= hpad).any():
            bad("2", "the h_0 placement does not write each (b < B, col < H) once, inside positions < hpad")
    got, _, _ = mem.load(g_.h_base + np.arange(16 * ldh) * elem, elem)
    want = staged_image(g_, s0bits, B, H)
    if not np.array_equal(got.reshape(16, ldh), want):
        bb, cc = np.argwhere(got.reshape(16, ldh) != want)[0]
        bad("2", f"h_s[{bb} * ldh + {cc}] = {got.reshape(16, ldh)[bb, cc]:#x}, expected {want[bb, cc]:#x} (state0[b, "
                 f"col] at mma_k_position(col), zero at rows >= B, columns >= H and positions >= hpad)")

    # ---- the k-halves of the product
    tb = ptx_tables(per_word)
    shift = 16 * np.arange(per_word)

    def pack(elems):  # (..., per_word) element bits -> 32-bit register
        return (elems << shift).sum(axis=-1)

    lo_base = g_.hi_bytes + (hpad if "lo_base_row" in mut else 0)
    sel0 = 0x1064 if "byte_perm_1064" in mut else SEL_B0
    acc_all = np.zeros((NWARPS, TILES, 32, 4))
    accesses = {"A": [], "W8": [], "HI": [], "LO": []}  # (byte addresses of the 32 lanes, the rows n or None)
    loaded = np.zeros((n_tiles, k_steps), dtype=np.int64)
    reg_bad = {"A": [], "B": []}
    k_bad = []
    unwritten = []
    kg_done = np.zeros((8, k_steps), dtype=np.int64)

    if live > 0:
        for warp in range(NWARPS):
            n_group, k_half = warp % 8, warp // 8
            a_row = g_.h_base + 4 * (G * ldh_words + 2 * T + (0 if "a_no_k_half" in mut else k_half * half_steps * 8))
            tiles = n_group + 8 * np.arange(TILES)
            nrow = tiles[:, None] * 8 + G[None, :]  # (TILES, 32)
            live_tiles = tiles < n_tiles

            def load(ks):
                lo_a, hi_a = a_row + 4 * ks * 8, a_row + 4 * (8 * ldh_words + ks * 8)
                lo_x, lo_y, ok1, w1 = mem.load8(lo_a)
                hi_x, hi_y, ok2, w2 = mem.load8(hi_a)
                accesses["A"] += [lo_a, hi_a]
                unwritten.extend(["A"] * int((~w1 & ok1).any() or (~w2 & ok2).any()))
                a = np.stack([lo_x, hi_x, lo_y, hi_y], axis=1)  # a[0] = lo.x, a[1] = hi.x, a[2] = lo.y, a[3] = hi.y
                kg = k_half * half_steps + ks
                # (3) the A registers against PTX's A layout of h (rows g, g + 8; k-step kg)
                want_a = pack(hb[tb["a_row"], kg * K + tb["a_col"]])
                if not np.array_equal(a, want_a):
                    reg_bad["A"].append(f"warp {warp} k-step {kg}")
                bregs = np.zeros((TILES, 32, 2), dtype=np.int64)
                for j in range(TILES):
                    nn = nrow[j]
                    if not live_tiles[j]:  # n >= hpad: zero registers, never multiplied
                        continue
                    if elem == 4:
                        pair = kg * 4 + T
                        unit = nn * hpad // 2 + (pair if "swizzle_load_only" in mut else one_cta_pair_unit(nn, pair))
                        top, ok_t, w_t = mem.load(4 * unit, 4)
                        low, ok_l, w_l = mem.load(lo_base + 2 * unit, 2)
                        accesses["HI"].append((4 * unit, nn))
                        accesses["LO"].append((lo_base + 2 * unit, nn))
                        unwritten.extend(["W"] * int((~w_t & ok_t).any() or (~w_l & ok_l).any()))
                        bregs[j, :, 0] = byte_perm(top, low, sel0)
                        bregs[j, :, 1] = byte_perm(top, low, SEL_B1)
                    else:
                        at = 4 * (nn * ldh_words + kg * 8 + 2 * T)
                        vx, vy, ok_v, w_v = mem.load8(at)
                        accesses["W8"].append((at, nn))
                        unwritten.extend(["W"] * int((~w_v & ok_v).any()))
                        bregs[j, :, 0], bregs[j, :, 1] = vx, vy
                    # (1) the B registers against PTX's B layout of W (n = g, k-step kg)
                    want_b = pack(Wb[tiles[j] * 8 + tb["b_n"], kg * K + tb["b_k"]])
                    if elem == 4:
                        want_b = want_b & 0xFFFFFF00
                    if not np.array_equal(bregs[j], want_b):
                        reg_bad["B"].append(f"warp {warp} tile {tiles[j]} k-step {kg}")
                    loaded[tiles[j], kg] += 1
                return a, bregs

            def multiply(ks, frag):  # the tiles < n_tiles (the others are zero registers, never multiplied)
                a, bregs = frag
                kg_done[n_group, k_half * half_steps + ks] += 1
                a_el, b_el = [decode_mma(fmt, (x[..., None] >> shift) & (0xFFFFFFFF if per_word == 1 else 0xFFFF))
                              for x in (a[None], bregs[live_tiles])]  # element values, (tiles, 32, regs, per_word)
                acc_all[warp, live_tiles] += _mma.fragment_product(tb, a_el, b_el)[0]

            done = _mma.pipelined_k_loop(half_steps, load, multiply, mut)
            if done != list(range(half_steps)):
                k_bad.append(f"warp {warp}: {_mma.k_order_text(done)} (half_steps {half_steps})")

    # (1) / (3) what the loads read
    if reg_bad["B"]:
        bad("1", f"{len(reg_bad['B'])} B fragment loads differ from PTX's B layout of W (fp32: bits 31..8), e.g. "
                 f"{reg_bad['B'][0]}")
    if live > 0 and (loaded != 1).any():
        tt, kk = np.argwhere(loaded != 1)[0]
        bad("1", f"W's n tile {tt} k-step {kk} loaded {loaded[tt, kk]} times (each once over the 16 warps)")
    if reg_bad["A"]:
        bad("3", f"{len(reg_bad['A'])} A fragment loads differ from PTX's A layout of h, e.g. {reg_bad['A'][0]}")
    if k_bad:
        bad("3", f"{len(k_bad)} warp(s) multiply other k-steps than 0 .. half_steps - 1 in order: {k_bad[0]}")
    if live > 0 and (kg_done != 1).any():
        bad("3", "the two k-halves do not multiply k-steps [0, k_steps) once each for every n group")
    if unwritten:
        bad("6", f"{len(unwritten)} loads read bytes never written ({sorted(set(unwritten))}: padding or outside)")

    # ---- the upper half's float2 stores
    part = np.full(16 * ldp, np.nan)
    pcount = np.zeros(16 * ldp, dtype=np.int64)
    stores = []
    for warp in range(8, NWARPS):
        n_group = warp % 8
        for j in range(TILES):
            tile = n_group + 8 * j
            if tile >= n_tiles:
                break
            out = G * ldp + tile * 8 + 2 * T
            second = out + (8 if "part_hi_plus_8" in mut else 8 * ldp)
            stores.extend([g_.part_base + 4 * out, g_.part_base + 4 * second])
            if (stores[-2] % 8).any() or (stores[-1] % 8).any():
                bad("6", "a float2 store to part_s not 8-byte aligned")
            if not _mma.store_c(part, pcount, out, second, acc_all[warp, j]):
                bad("6", f"a float2 store outside part_s (warp {warp}, tile {tile})")
    cnt = pcount.reshape(16, ldp)
    if (cnt[:, :hpad] != 1).any() or cnt[:, hpad:].any():
        bb, nn = np.argwhere(np.concatenate([cnt[:, :hpad] != 1, cnt[:, hpad:] != 0], axis=1))[0]
        bad("3", f"part_s[{bb}, {nn}] stored {cnt[bb, nn]} times (each (b < 16, n < hpad) once, nothing else)")

    # ---- the lower half's epilogue
    outputs = np.full((B, H), np.nan)
    sums = np.full((B, H), np.nan)
    ocount = np.zeros((B, H), dtype=np.int64)
    hs_before = mem.count.copy()
    reads = []
    part_read = np.zeros(16 * ldp, dtype=np.int64)
    for warp in range(8):
        n_group = warp % 8
        for j in range(TILES):
            tile = n_group + 8 * j
            if tile >= n_tiles:
                break
            for r in range(4):
                bq, u = G + 8 * (r // 2), tile * 8 + 2 * T + r % 2
                keep = (bq < B) & (u < H)  # the other lanes continue: no read
                bq, u, accv = bq[keep], u[keep], acc_all[warp, j, keep, r]
                if not len(bq):
                    continue
                reads.append(g_.part_base + 4 * (bq * ldp + u))
                np.add.at(part_read, bq * ldp + u, 1)
                sm = accv + part[bq * ldp + u]
                y = np.where(bq < live, sm, 0.0)  # step_epilogue not modelled: y = sum (b < live)
                sums[bq, u] = sm
                outputs[bq, u] = y
                np.add.at(ocount, (bq, u), 1)
                p_ = u if "h_write_unpermuted" in mut else mma_k_position(u, elem)
                at = g_.h_base + elem * (bq * ldh + p_)
                bad_at = (bq * ldh + p_ >= 16 * ldh) | (p_ >= hpad)
                if bad_at.any():
                    bad("6", "the epilogue writes h_s outside its rows' first hpad positions")
                mem.store(at, encode(fmt, y), elem)
    if (ocount != 1).any():
        bb, uu = np.argwhere(ocount != 1)[0]
        bad("3", f"output (b {bb}, u {uu}) written {ocount[bb, uu]} times by the lower half (each (b < B, u < H) once)")
    if ((part_read > 0) & (pcount != 1)).any():
        bad("3", "the epilogue reads a part_s element the upper half did not store once")
    want_sum = decode_mma(fmt, hb[:B]) @ decode_mma(fmt, Wb[:H]).T  # B x H, fp64, exact
    if live > 0:
        if not np.array_equal(sums, want_sum):
            bb, uu = np.argwhere(~(sums == want_sum))[0]
            bad("3", f"{int((~(sums == want_sum)).sum())} of {B * H} sums wrong, e.g. (b {bb}, u {uu}): acc + part_s = "
                     f"{sums[bb, uu]}, h @ W.T = {want_sum[bb, uu]}")
    elif not np.array_equal(outputs, np.zeros((B, H))):
        bad("3", "live 0: outputs not zero")
    if live > 0 and not np.array_equal(outputs[live:], np.zeros((B - live, H))):
        bad("3", "outputs of rows >= live not zero")

    # (4) the written h_s == a fresh staging of the outputs
    wrote = (mem.count - hs_before)[g_.h_base:g_.part_base].reshape(16, ldh * elem)[:, ::elem]
    want_w = np.zeros((16, ldh), dtype=np.int64)
    want_w[np.arange(B)[:, None], mma_k_position(np.arange(H), elem)[None, :]] = 1
    got, _, _ = mem.load(g_.h_base + np.arange(16 * ldh) * elem, elem)
    fresh = staged_image(g_, encode(fmt, np.nan_to_num(outputs)), B, H)
    if not np.array_equal(wrote, want_w) or (mem.count - hs_before)[:g_.h_base].any() or \
            (mem.count - hs_before)[g_.part_base:].any():
        bad("4", "the epilogue's h_s writes are not each (b < B, mma_k_position(u < H)) once (and nothing else)")
    if not np.array_equal(got.reshape(16, ldh), fresh):
        bb, cc = np.argwhere(got.reshape(16, ldh) != fresh)[0]
        bad("4", f"after the epilogue h_s[{bb} * ldh + {cc}] = {got.reshape(16, ldh)[bb, cc]:#x}, a fresh staging of "
                 f"the outputs gives {fresh[bb, cc]:#x}")

    # (6) each load inside its region (and its row's first hpad positions) and aligned
    row_bytes = ldh * elem
    if accesses["A"]:
        a = np.stack(accesses["A"])
        rel = a - g_.h_base
        if (a % 8).any():
            bad("6", "an 8-byte A load not 8-byte aligned")
        if (rel < 0).any() or (rel // row_bytes >= 16).any() or (rel % row_bytes + 8 > hpad * elem).any():
            bad("6", "an A load outside h_s's 16 rows' first hpad positions (padding or another region)")
    if accesses["W8"]:
        a = np.stack([x for x, _ in accesses["W8"]])
        nn = np.stack([y for _, y in accesses["W8"]])
        if (a % 8).any():
            bad("6", "an 8-byte W load not 8-byte aligned")
        if (a // row_bytes != nn).any() or (a % row_bytes + 8 > hpad * 2).any() or (a < 0).any():
            bad("6", "a 16-bit W load outside its row's first hpad positions")
    if accesses["HI"]:
        a = np.stack([x for x, _ in accesses["HI"]])
        nn = np.stack([y for _, y in accesses["HI"]])
        if (a % 4).any() or (a < 0).any() or (a // (hpad * 2) != nn).any():
            bad("6", "a hi-plane load misaligned or outside its row of the plane")
        a = np.stack([x for x, _ in accesses["LO"]])
        if (a % 2).any() or ((a - g_.hi_bytes) // hpad != nn).any() or (a < g_.hi_bytes).any():
            bad("6", "a lo-plane load misaligned or outside its row of the plane")

    # (5) bank conflicts
    for kind, size in (("A", 8), ("W8", 8), ("HI", 4), ("LO", 2)):
        for x in accesses[kind]:
            a = x[0] if isinstance(x, tuple) else x
            if size == 8:
                w = np.stack([a // 4, a // 4 + 1], axis=-1)
                ways = max(conflict_ways(w[:16]), conflict_ways(w[16:]))
            else:
                ways = conflict_ways(a // 4)
            if ways > 1:
                bad("5", f"a {ways}-way bank conflict in a {kind} load "
                         f"({'each half-warp' if size == 8 else 'the warp'})")
                break
    if stats is not None:
        for kind in accesses:
            stats[kind] = stats.get(kind, 0) + len(accesses[kind])
        stats["stores"] = stats.get("stores", 0) + len(stores)
        for x in stores:
            w = np.stack([x // 4, x // 4 + 1], axis=-1)
            ways = max(conflict_ways(w[:16]), conflict_ways(w[16:]))
            stats.setdefault("store_ways", {}).setdefault(ways, 0)
            stats["store_ways"][ways] += 1
        for x in reads:
            ways = conflict_ways(x // 4)
            stats.setdefault("read_ways", {}).setdefault(ways, 0)
            stats["read_ways"][ways] += 1
    return found


# ---------------------------------------------------------------------------------------------
# the cases, the mutants

H_LIST = [1, 7, 63, 64, 65, 129, 200, 256]
B_LIST = [1, 3, 8, 16]


def cases():
    """(fmt, H, B, live, seed, with_state0, low_zero): the grid for tf32 and bf16, a few f16."""
    rng = np.random.default_rng(2025)
    out = []
    seed = 0
    for fmt in ("tf32", "bf16"):
        for H in H_LIST:
            for B in B_LIST:
                seed += 1
                live = B if seed % 3 else int(rng.integers(0 if seed % 2 else 1, B + 1))
                out.append((fmt, H, B, live, seed, seed % 7 != 0, 13 if seed % 2 else 8))
    for H, B in ((1, 16), (65, 3), (200, 8), (256, 16)):
        seed += 1
        out.append(("f16", H, B, B, seed, True, 13))
    return out


MUTANTS = {
    "swizzle_load_only": ("the planes' loads at pair kg * 4 + t without the XOR swizzle (the fill keeps it)", "135"),
    "byte_perm_1064": ("b0 = __byte_perm(top, low, 0x1064) instead of 0x1046", "13"),
    "stage_identity": ("the h_0 staging puts column col at position col (no mma_k_position)", "23"),
    "a_no_k_half": ("a_row without k_half * half_steps * 8", "3"),
    "lo_base_row": ("w_lo one row (hpad bytes) past the lo8 plane's start", "136"),
    "fill_unswizzled": ("the fill's unit = pos / 2 (no swizzle; the loads keep it)", "13"),
    "second_load_same_ks": ("load(ks, a[1], b[1]) instead of ks + 1", "13"),
    "part_hi_plus_8": ("c2, c3 stored at out + 8 instead of out + 8 * ldp", "3"),
    "h_write_unpermuted": ("the epilogue writes h_s at b * ldh + u", "4"),
}
PLANE_MUTANTS = {"swizzle_load_only", "byte_perm_1064", "lo_base_row", "fill_unswizzled"}  # fp32's planes only


def smem_checks():
    """(6): the sizes for every H 1..256; returns (problems, lines to print)."""
    problems, lines = [], []
    for elem in (4, 2):
        for H in range(1, MAX_H + 1):
            g = Geometry(elem, H)
            regions = (g.hpad * g.hpad // 2 * 4 + g.hpad * g.hpad // 2 * 2 if elem == 4 else g.hpad * g.ldh * 2) + \
                16 * g.ldh * elem + 16 * g.ldp * 4
            if g.smem != regions or g.smem > OPTIN or g.ldh_words % 32 != 8 or g.ldp % 32 != 8 or \
                    g.half_steps * 2 != g.k_steps or g.n_tiles > 8 * TILES:
                problems.append(f"elem {elem} H {H}: smem {g.smem} vs regions {regions} (optin {OPTIN}), ldh_words "
                                f"{g.ldh_words}, ldp {g.ldp}, k_steps {g.k_steps}, n tiles {g.n_tiles}")
    for elem, what in ((4, "fp32 (TF32 planes)"), (2, "bf16 / f16")):
        g = Geometry(elem, 256)
        lines.append(f"   H256 {what}: one_cta_smem {g.smem} bytes = W {g.w_bytes} + h_s {g.part_base - g.h_base} + "
                     f"part_s {g.end - g.part_base} (optin {OPTIN}, {OPTIN - g.smem} to spare)")
    return problems, lines


def main():
    t0, failures, fail = _mma.begin("rnn_one_cta_kernel: one step of the one-CTA kernel (W fill, h_0 staging, both "
                                    "k-halves' mma.sync fragments, part_s, the epilogue's h_s write) replayed on PTX "
                                    "fragments", ANCHORS, check_anchors, SOURCE_EDITS, NEUTRAL_EDIT, prefix="(8)")
    # __byte_perm: the selectors' nibbles pick bytes (bit 3, prmt's sign-replicate mode, clear)
    if any((s >> (4 * i)) & 8 for s in (SEL_B0, SEL_B1) for i in range(4)) or \
            byte_perm(0x44332211, 0x6655, 0x1046) != 0x22115500 or byte_perm(0x44332211, 0x6655, 0x3256) != 0x44336600:
        fail("__byte_perm model / selectors: not (hi16 << 16) | (lo8 << 8) of the pair's two values")
    else:
        print("ok: __byte_perm(top, low, 0x1046 / 0x3256) = (hi16 << 16) | (lo8 << 8) of the pair's first / second "
              "value (byte model checked on a worked word)")

    # (6) sizes
    problems, lines = smem_checks()
    if problems:
        fail(f"(6) shared memory: {problems[0]}")
    else:
        print(f"ok (6) one_cta_smem == W + h_s + part_s as the pointers lay them out, <= {OPTIN} (optin), "
              f"ldh_words and ldp = 8 (mod 32), k_steps even, <= 32 n tiles, for every H 1..256, fp32 and 16-bit")
    for ln in lines:
        print(ln)

    labels = {
        "1": "the W fill writes each plane byte / (n, position < hpad) element once; every B register == PTX's B "
             "layout of W (fp32: bits 31..8 via __byte_perm, 7..0 zero); each (n tile, k-step) loaded once",
        "2": "the h_0 staging: position c of row b == state0[b, col], mma_k_position(col) == c; zero at rows >= B, "
             "columns >= H, positions [hpad, ldh), and without state0",
        "3": "A registers == PTX's A layout of h; each half multiplies k-steps 0..half_steps-1 in order, together "
             "[0, k_steps) once; acc + part_s == h @ W.T (fp64, exact) for every (b < B, u < H); outputs written "
             "once (0 at b >= live); part_s stored once per (b < 16, n < hpad)",
        "4": "the epilogue's h_s == a fresh staging of the outputs (each (b < B, u < H) written once)",
        "5": "no bank conflicts: hi-plane 32-bit and lo-plane 16-bit loads (warp), 16-bit W and A 8-byte loads "
             "(half-warp)",
        "6": "every 8-byte access aligned, every access inside its region / row's first hpad positions, no unwritten "
             "byte read",
    }
    all_cases = cases()
    stats, per_check = {}, {}
    for fmt, H, B, live, seed, s0, lz in all_cases:
        tally(replay(fmt, H, B, live, seed, s0, lz, stats=stats), per_check, fail)
    check_lines(labels, per_check, len(all_cases))
    n_tf = sum(c[0] == "tf32" for c in all_cases)
    print(f"   {len(all_cases)} CTA steps: tf32 {n_tf} ({sum(c[0] == 'tf32' and c[6] == 8 for c in all_cases)} with "
          f"bits 12..8 random), bf16 {sum(c[0] == 'bf16' for c in all_cases)}, f16 "
          f"{sum(c[0] == 'f16' for c in all_cases)}; H {H_LIST}, B {B_LIST}; live < B in "
          f"{sum(c[3] < c[2] for c in all_cases)} (0 in {sum(c[3] == 0 for c in all_cases)}), no state0 in "
          f"{sum(not c[5] for c in all_cases)}; loads: {stats.get('A', 0)} A 8-byte, {stats.get('W8', 0)} W 8-byte, "
          f"{stats.get('HI', 0)} hi-plane 32-bit + {stats.get('LO', 0)} lo-plane 16-bit (warp instructions)")
    print("   (report) float2 stores to part_s, worst half-warp bank conflict: "
          + ", ".join(f"{w}-way x {n}" for w, n in sorted(stats.get("store_ways", {}).items()))
          + "; the epilogue's 32-bit part_s reads, worst warp conflict: "
          + ", ".join(f"{w}-way x {n}" for w, n in sorted(stats.get("read_ways", {}).items())))

    # (7) mutants: the cases with a live row (the planes' mutants: tf32 only)
    def mutant_cases(mname):
        for fmt, H, B, live, seed, s0, lz in all_cases:
            if live > 0 and (fmt == "tf32" or mname not in PLANE_MUTANTS):
                yield replay(fmt, H, B, live, seed, s0, lz, mut=frozenset([mname]))

    _mma.mutant_report(MUTANTS, mutant_cases, fail, width=150, prefix="(7)", ignore=REPORT_ONLY)
    finish(failures, t0)


if __name__ == "__main__":
    main()
