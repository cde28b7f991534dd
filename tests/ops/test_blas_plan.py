"""The cuBLAS calls of the CUDA build, replayed on the CPU (csrc/blas_plan.h, csrc/cpu/blas_emulation.h).

The GEMM-shaped convolutions and the RNN's large products (TF32) go to cuBLAS on CUDA through
blas_plan.h, which picks each operand's transpose flag, leading dimension and batch stride, or
copies it. `_C.blas_gemm_emulated` and RNNKERN_EMULATE_CUBLAS=1 run that same plan on the CPU into a
column-major product that reads memory as cuBLAS would (as_strided views of the storage; cuBLAS's
leading-dimension rules checked), so these tests check the arguments without a GPU: over random
operand layouts here, and over the operands the conv route (tests/ops/test_conv_gemm.py) and the
RNN build."""
import random

import pytest
import torch

from rnnkern import _C
from rnnkern.ops import rnn as rnn_ops
from tests.ops.test_rnn import _fwd_bwd, _leaf, make_args, rand_lengths, ref_layer
from tests.utils import TOL, rel_err


def _matrix(rng, rows, cols, dtype):
    """A rows x cols matrix in one of the layouts the callers hand over: contiguous, transposed, a
    slice of a wider / taller one (leading dimension > the other size), every other column (no unit
    stride: copied), or a size-1 dimension with an arbitrary stride."""
    kind = rng.choice(["contiguous", "transposed", "wide", "tall", "strided", "odd-size-1"])
    if kind == "transposed":
        return torch.randn(cols, rows, dtype=dtype).t(), kind
    if kind == "wide":
        return torch.randn(rows, cols + rng.randint(1, 3), dtype=dtype)[:, 1:cols + 1], kind
    if kind == "tall":
        return torch.randn(cols, rows + rng.randint(1, 3), dtype=dtype)[:, :rows].t(), kind
    if kind == "strided":
        return torch.randn(rows, 2 * cols, dtype=dtype)[:, ::2], kind
    if kind == "odd-size-1" and (rows == 1 or cols == 1):
        base = torch.randn(rows * cols * 7 + 7, dtype=dtype)
        stride = (7, 1) if cols == 1 else (1, 7)
        return base.as_strided((rows, cols), stride if rows > 1 or cols > 1 else (5, 3)), kind
    return torch.randn(rows, cols, dtype=dtype), "contiguous"


def _batched(rng, batch, rows, cols, dtype):
    """A batch of matrices: independent ones (contiguous, transposed, interleaved: the batch
    dimension inside a matrix's rows, so matrices overlap in extent; padded: rows sliced from taller
    matrices, batch stride > rows x ld), or one repeated (expand: batch stride 0), as the conv
    route's NCHW weight is."""
    kind = rng.choice(["contiguous", "transposed", "interleaved", "padded", "repeated"])
    if kind == "repeated":
        m, inner = _matrix(rng, rows, cols, dtype)
        return m.unsqueeze(0).expand(batch, rows, cols), "repeated " + inner
    if kind == "transposed":
        return torch.randn(batch, cols, rows, dtype=dtype).transpose(1, 2), kind
    if kind == "interleaved":
        return torch.randn(rows, batch, cols, dtype=dtype).transpose(0, 1), kind
    if kind == "padded":
        return torch.randn(batch, rows + 2, cols, dtype=dtype)[:, :rows], kind
    return torch.randn(batch, rows, cols, dtype=dtype), kind


@pytest.mark.parametrize("case", range(300))
def test_emulated_cublas_gemm_matches_matmul(case):
    rng = random.Random(case)
    dtype = rng.choice([torch.float64, torch.float32])
    m, n, k = (rng.choice([0, 1, 2, 3, 7, 16]) for _ in range(3))
    beta = rng.choice([0.0, 1.0, 0.5])
    if rng.random() < 0.5:
        A, ka = _matrix(rng, m, k, dtype)
        B, kb = _matrix(rng, k, n, dtype)
        C, kc = _matrix(rng, m, n, dtype)
    else:
        batch = rng.choice([1, 2, 3])
        A, ka = _batched(rng, batch, m, k, dtype)
        B, kb = _batched(rng, batch, k, n, dtype)
        C, kc = _batched(rng, batch, m, n, dtype)
        if kc.startswith("repeated"):  # an output cannot repeat
            C, kc = torch.randn(batch, m, n, dtype=dtype), "contiguous"
    C0 = C.clone()
    if beta == 0.0:
        C.fill_(float("nan"))  # beta = 0: C must not be read
    expect = A.double() @ B.double() + beta * C0.double()
    _C.blas_gemm_emulated(C, A, B, beta)
    assert C.shape == expect.shape
    assert rel_err(C, expect) < TOL[dtype], (ka, kb, kc, m, n, k, beta)


def test_emulation_reads_memory_as_cublas():
    """The emulation is a reader of raw memory, not a matmul: a buffer it reads wrongly shows. The
    same bytes taken as a transposed operand give the transposed product."""
    base = torch.arange(6.0, dtype=torch.float64)
    A, B = base.view(2, 3), torch.eye(3, dtype=torch.float64)
    C = torch.empty(2, 3, dtype=torch.float64)
    _C.blas_gemm_emulated(C, A, B, 0.0)
    assert torch.equal(C, A)
    C = torch.empty(3, 2, dtype=torch.float64)
    _C.blas_gemm_emulated(C, A.t(), torch.eye(2, dtype=torch.float64), 0.0)
    assert torch.equal(C, A.t())


def test_emulation_switch_is_read_on_both_paths(monkeypatch):
    """The switch is read where the conv route and the RNN pick their products (a bad value raises
    there), so the emulated cases above really run the emulation."""
    from rnnkern import functional as RF
    monkeypatch.setenv("RNNKERN_CONV_GEMM", "1")
    monkeypatch.setenv("RNNKERN_EMULATE_CUBLAS", "yes")
    with pytest.raises(RuntimeError, match="RNNKERN_EMULATE_CUBLAS must be '0' or '1'"):
        RF.conv2d(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 2, 2), None, 2)
    with pytest.raises(RuntimeError, match="RNNKERN_EMULATE_CUBLAS must be '0' or '1'"):
        rnn_ops.rnn_forward(*make_args(3, 2, 4, 5, dtype=torch.float32), None, False)


def test_emulation_refuses_what_cublas_would_get_wrong():
    """An output that overlaps an operand (cuBLAS leaves the result undefined)."""
    A = torch.randn(4, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="write C over one of its operands"):
        _C.blas_gemm_emulated(A, A, torch.eye(4, dtype=torch.float64), 0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(6))
def test_rnn_products_through_emulated_cublas(monkeypatch, dtype, case):
    """The RNN's input projection and gradient products as rnn.cu's Tf32Gemm hands them to cuBLAS
    (fp32 under cudnn.allow_tf32, the default), replayed: outputs and every gradient against the
    fp64 reference, with lengths, without bias, and a non-contiguous input."""
    monkeypatch.setenv("RNNKERN_EMULATE_CUBLAS", "1")
    rng = random.Random(case)
    T, B, I, H = rng.choice([1, 3, 6]), rng.choice([1, 2, 5]), rng.choice([1, 4, 7]), rng.choice([1, 5, 8])
    bias, relu = case % 2 == 0, case % 3 == 0
    lengths = rand_lengths(rng, B, T) if case >= 3 else None
    args64 = list(make_args(T, B, I, H, bias=bias))
    if case == 5:
        args64[0] = torch.randn(B, T, 2 * I, dtype=torch.float64).transpose(0, 1)[:, :, ::2]
    g_out, g_hn = torch.randn(T, B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    ref = _fwd_bwd(ref_layer, [_leaf(a) for a in args64], lengths, relu, g_out, g_hn)
    ours = _fwd_bwd(rnn_ops.rnn_forward, [_leaf(a, dtype) for a in args64], lengths, relu, g_out, g_hn)
    assert rel_err(ours[0], ref[0]) < TOL[dtype] and rel_err(ours[1], ref[1]) < TOL[dtype]
    for g, r in zip(ours[2], ref[2]):
        assert rel_err(g, r) < TOL[dtype]
