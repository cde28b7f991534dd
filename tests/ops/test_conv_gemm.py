"""GEMM-shaped convolutions (kernel <= stride, no padding, one group: 1x1 and "patchify" convolutions,
the U-Net's k2 s2 transposed convolution) on the BLAS route of csrc/conv_gemm.h, against torch in
fp64: forward, grad_input, grad_weight, grad_bias, both layouts; on CUDA also that the route is
what runs, and TF32 / 16-bit within 2x torch's own error.

On CUDA the route is the default (RNNKERN_CONV_GEMM unset); on CPU it runs only with
RNNKERN_CONV_GEMM=1, which these tests set, so the layout code is checked without a GPU, once on
ATen's BLAS and once through the cuBLAS calls the CUDA build makes, emulated."""
import os
import threading
import time

import pytest
import torch
import torch.nn.functional as TF

from rnnkern import functional as RF
from tests.utils import DEVICES, TOL, TOL_TF32, rel_err

LAYOUTS = [torch.contiguous_format, torch.channels_last]

# (input size, weight size, stride, kwargs): conv2d cases the route takes
CONV_CASES = [
    ((2, 7, 5, 6), (3, 7, 1, 1), 1, {}),                       # 1x1
    ((3, 5, 8, 6), (4, 5, 2, 2), 2, {}),                       # patchify, exact cover
    ((2, 4, 7, 9), (6, 4, 2, 2), 2, {}),                       # a last row / column no patch covers
    ((2, 3, 10, 11), (5, 3, 3, 3), 3, {}),                     # k3 s3, leftovers on both sides
    ((1, 6, 6, 10), (2, 6, 2, 5), (2, 5), {}),                 # rectangular kernel == stride
    ((2, 3, 4, 9), (4, 3, 1, 3), (1, 3), dict(dilation=(7, 1))),  # dilation along a 1-tap side
    ((3, 8, 1, 1), (5, 8, 1, 1), 1, {}),                       # one pixel (ASPP image pooling)
    ((2, 6, 9, 8), (4, 6, 1, 1), 2, {}),                       # 1x1 stride 2 (a ResNet shortcut)
    ((2, 5, 11, 10), (3, 5, 2, 2), 3, {}),                     # kernel < stride: gaps between patches
    ((1, 4, 7, 12), (6, 4, 1, 2), (2, 3), {}),                 # both, rectangular
    ((0, 3, 4, 4), (2, 3, 2, 2), 2, {}),                       # empty batch
]
# (input size, weight size (C_in, C_out, k, k), stride, output_padding): conv_transpose2d cases the
# route takes
CONVT_CASES = [
    ((2, 6, 4, 5), (6, 3, 2, 2), 2, 0),
    ((1, 4, 3, 3), (4, 5, 3, 3), 3, 0),
    ((2, 5, 4, 3), (5, 2, 1, 1), 1, 0),
    ((2, 6, 4, 5), (6, 3, 2, 2), 2, 1),                         # output_padding: a last row / column of bias
    ((2, 4, 3, 5), (4, 3, 1, 1), 2, 0),                         # kernel < stride: gaps of bias
    ((1, 5, 4, 2), (5, 2, 2, 2), 3, 2),
]


@pytest.fixture(params=["blas", "cublas-emulated"])
def gemm_route(monkeypatch, request):
    """The BLAS route on: explicit on CPU, torch's default (unset) on CUDA. On CPU twice: through
    ATen's BLAS, and through the cuBLAS calls the CUDA build makes for the same operands, emulated
    (RNNKERN_EMULATE_CUBLAS=1, tests/ops/test_blas_plan.py), so their arguments are checked here."""
    if request.node.callspec.params.get("device") == "cpu":
        monkeypatch.setenv("RNNKERN_CONV_GEMM", "1")
        monkeypatch.setenv("RNNKERN_EMULATE_CUBLAS", "1" if request.param == "cublas-emulated" else "0")
    elif request.param == "cublas-emulated":
        pytest.skip("on CUDA the route runs on cuBLAS itself")
    else:
        monkeypatch.delenv("RNNKERN_CONV_GEMM", raising=False)


def _grads(fn, x, w, b, gy):
    x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
    y = fn(x, w, b)
    y.backward(gy)
    return y, x.grad, w.grad, b.grad


def _check(ours, ref, device, layout, xs, ws, bias_size, dtype=torch.float64):
    x = torch.randn(xs, dtype=torch.float64)
    w = torch.randn(ws, dtype=torch.float64)
    b = torch.randn(bias_size, dtype=torch.float64)
    gy = torch.randn_like(ref(x, w, b))
    expect = _grads(ref, x, w, b, gy)
    cast = dict(device=device, dtype=dtype)
    xd, gyd = x.to(**cast), gy.to(**cast)
    if layout == torch.channels_last:
        xd, gyd = xd.contiguous(memory_format=torch.channels_last), gyd.contiguous(memory_format=torch.channels_last)
    got = _grads(ours, xd, w.to(**cast), b.to(**cast), gyd)
    for name, o, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, expect):
        assert o.shape == r.shape and o.dtype == dtype, (name, o.shape, r.shape)
        if r.numel():
            assert rel_err(o, r) < TOL[dtype], (name, rel_err(o, r), xs, ws)
    if layout == torch.channels_last and x.shape[0] > 0:  # the layout rule: channels_last in, channels_last out
        assert got[0].is_contiguous(memory_format=torch.channels_last)
        assert got[1].is_contiguous(memory_format=torch.channels_last)
    return got


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}x{c[1]}")
def test_conv2d_gemm_route(gemm_route, device, layout, case):
    xs, ws, stride, kw = case
    _check(lambda x, w, b: RF.conv2d(x, w, b, stride, **kw), lambda x, w, b: TF.conv2d(x, w, b, stride, **kw),
           device, layout, xs, ws, ws[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [((2, 3, 5, 12), (4, 3, 1, 2), (1, 4), (1, 2)),
                                  ((2, 3, 12, 5), (4, 3, 2, 1), (4, 1), (3, 1))], ids=["dil_w", "dil_h"])
def test_conv2d_dilated_patch_is_not_a_gemm(gemm_route, device, layout, case):
    """kernel <= stride but dilated along a side with several taps: the taps are not a dense patch,
    so the route must not take it (it would read the undilated window); against torch."""
    xs, ws, stride, dil = case
    _check(lambda x, w, b: RF.conv2d(x, w, b, stride, dilation=dil),
           lambda x, w, b: TF.conv2d(x, w, b, stride, dilation=dil), device, layout, xs, ws, ws[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("xs", [(2, 3, 6, 9), (2, 3, 7, 8)], ids=["last_column", "last_row"])
def test_conv2d_grad_input_uncovered_edge_is_zero(gemm_route, device, layout, xs):
    """kernel == stride with one side exact and the other leaving a last row / column no patch
    covers: grad_input is zero there (written, not left as whatever the allocation held)."""
    x = torch.randn(xs, dtype=torch.float64)
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    y = TF.conv2d(x, w, None, 2)
    gy = torch.randn_like(y)
    ref = torch.ops.aten.convolution_backward(gy, x, w, None, [2, 2], [0, 0], [1, 1], False, [0, 0], 1,
                                              [True, False, False])[0]
    gyd, wd = gy.to(device), w.to(device)
    if layout == torch.channels_last:
        gyd = gyd.contiguous(memory_format=torch.channels_last)
    for _ in range(3):  # recycled memory full of NaN: an element left unwritten shows
        junk = torch.full(xs, float("nan"), dtype=torch.float64, device=device).contiguous(memory_format=layout)
        del junk
        gx = torch.ops.rnnkern.conv2d_backward_input(gyd, wd, list(xs), [2, 2], [0, 0, 0, 0], [1, 1], 1)
        assert rel_err(gx, ref) < TOL[torch.float64]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONVT_CASES, ids=lambda c: f"{c[0]}x{c[1]}")
def test_conv_transpose2d_gemm_route(gemm_route, device, layout, case):
    xs, ws, s, op = case
    _check(lambda x, w, b: RF.conv_transpose2d(x, w, b, s, 0, op),
           lambda x, w, b: TF.conv_transpose2d(x, w, b, s, 0, op), device, layout, xs, ws, ws[1])
    # and without a bias
    x = torch.randn(xs, dtype=torch.float64, device=device)
    w = torch.randn(ws, dtype=torch.float64, device=device)
    if layout == torch.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref = TF.conv_transpose2d(x.cpu(), w.cpu(), None, s, 0, op)
    assert rel_err(RF.conv_transpose2d(x, w, None, s, 0, op), ref) < TOL[x.dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_conv1d_patchify(gemm_route, device):
    x = torch.randn(2, 5, 13, dtype=torch.float64, device=device)
    w = torch.randn(4, 5, 3, dtype=torch.float64, device=device)
    assert rel_err(RF.conv1d(x, w, None, 3), TF.conv1d(x.cpu(), w.cpu(), None, 3)) < TOL[x.dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_operands(gemm_route, device):
    # a strided input, a transposed weight view: the route makes its own dense copies
    x = torch.randn(2, 6, 8, 10, dtype=torch.float64, device=device)[:, ::2, :, :]
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64, device=device).transpose(2, 3)
    assert rel_err(RF.conv2d(x, w, None, 2), TF.conv2d(x.cpu(), w.cpu(), None, 2)) < TOL[x.dtype]


def test_cpu_route_is_taken_only_when_requested(monkeypatch):
    """The NCHW forward on the route is one batched product (aten::bmm); the CPU kernels never call bmm."""
    x, w = torch.randn(2, 8, 6, 6), torch.randn(4, 8, 2, 2)

    def bmm_calls():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            y = RF.conv2d(x, w, None, 2)
        assert rel_err(y, TF.conv2d(x, w, None, 2)) < 1e-5
        return sum(e.count for e in prof.key_averages() if e.key == "aten::bmm")

    monkeypatch.setenv("RNNKERN_CONV_GEMM", "1")
    assert bmm_calls() == 1
    monkeypatch.delenv("RNNKERN_CONV_GEMM")
    assert bmm_calls() == 0
    monkeypatch.setenv("RNNKERN_CONV_GEMM", "yes")
    with pytest.raises(RuntimeError, match="RNNKERN_CONV_GEMM must be '0' or '1'"):
        RF.conv2d(x, w, None, 2)


def _kernels(fn):
    """Names of the CUDA kernels fn launches."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.key for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]


@pytest.mark.cuda
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_route_runs_on_cublas_not_the_engine(monkeypatch, layout):
    """By default the GEMM-shaped passes (a 1x1 stride-2 conv, a k2 s2 transposed conv, their
    gradients) launch none of the engine's kernels; with RNNKERN_CONV_GEMM=0 they do, and both
    forms agree in fp64. The route's results repeat bitwise."""
    x = torch.randn(2, 16, 9, 7, device="cuda", dtype=torch.float64).contiguous(memory_format=layout)
    w1 = torch.randn(12, 16, 1, 1, device="cuda", dtype=torch.float64)
    wt = torch.randn(16, 8, 2, 2, device="cuda", dtype=torch.float64)
    b = torch.randn(8, device="cuda", dtype=torch.float64)

    def passes():
        xg, w1g, wtg = (t.detach().requires_grad_() for t in (x, w1, wt))
        y1, yt = RF.conv2d(xg, w1g, None, 2), RF.conv_transpose2d(xg, wtg, b, 2)
        (y1.sum() + yt.sum()).backward()
        return y1, yt, xg.grad, w1g.grad, wtg.grad

    engine = ("gather_conv_kernel", "gather_direct_kernel", "wgrad_kernel", "wgrad_direct_kernel",
              "wgrad_reduce_kernel", "conv_transpose_gemm_kernel", "fcn_")
    monkeypatch.delenv("RNNKERN_CONV_GEMM", raising=False)
    names = _kernels(passes)
    assert not [n for n in names if any(e in n for e in engine)], names
    route, again = passes(), passes()
    assert all(torch.equal(a, b) for a, b in zip(route, again))
    monkeypatch.setenv("RNNKERN_CONV_GEMM", "0")
    assert [n for n in _kernels(passes) if any(e in n for e in engine)]
    for a, e in zip(route, passes()):
        assert rel_err(a, e) < TOL[torch.float64]


@pytest.mark.cuda
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_route_true_fp32_under_the_matmul_tf32_flag(strict_fp32, matmul_tf32, layout):
    """cudnn.allow_tf32 off, the matmul TF32 flag on: the cuBLAS route (1x1 conv, k == s transposed
    conv) stays in true fp32, as cuDNN's convolutions do under those flags (torch sets its cuBLAS
    handle's math mode from the matmul flag; the route clears it for the call). TF32 would miss
    fp64 by ~1e-3 over 256 channels; true fp32 by ~1e-6."""
    x = torch.randn(2, 256, 9, 7, dtype=torch.float64)
    w1, wt = torch.randn(64, 256, 1, 1, dtype=torch.float64), torch.randn(256, 8, 2, 2, dtype=torch.float64)
    xd = x.to("cuda", torch.float32).contiguous(memory_format=layout)
    out = RF.conv2d(xd, w1.cuda().float())
    assert rel_err(out, TF.conv2d(x, w1)) < 2e-5
    out = RF.conv_transpose2d(xd, wt.cuda().float(), stride=2)
    assert rel_err(out, TF.conv_transpose2d(x, wt, stride=2)) < 2e-5


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONV_CASES[:4] + [((2, 64, 9, 7), (48, 64, 1, 1), 2, {})],
                         ids=lambda c: f"{c[0]}x{c[1]}")
def test_cuda_route_reduced_precision(dtype, layout, case):
    """TF32 (torch's default for fp32 convolutions) and 16-bit on the route: output and all three
    gradients within 2x torch's own error against fp64 (DESIGN.md's rule for reduced precision)."""
    xs, ws, stride, kw = case
    x, w, b = torch.randn(xs, dtype=torch.float64), torch.randn(ws, dtype=torch.float64) / ws[1] ** 0.5, \
        torch.randn(ws[0], dtype=torch.float64)
    gy = torch.randn_like(TF.conv2d(x, w, b, stride, **kw))
    ref = _grads(lambda x, w, b: TF.conv2d(x, w, b, stride, **kw), x, w, b, gy)
    cast = dict(device="cuda", dtype=dtype)
    xd, gyd = x.to(**cast).contiguous(memory_format=layout), gy.to(**cast).contiguous(memory_format=layout)
    ours = _grads(lambda x, w, b: RF.conv2d(x, w, b, stride, **kw), xd, w.to(**cast), b.to(**cast), gyd)
    theirs = _grads(lambda x, w, b: TF.conv2d(x, w, b, stride, **kw), xd, w.to(**cast), b.to(**cast), gyd)
    floor = TOL_TF32 if dtype == torch.float32 else 0.0
    for name, o, t, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, theirs, ref):
        if r.numel():
            assert rel_err(o, r) <= max(2 * rel_err(t, r), floor) + 1e-4, (name, rel_err(o, r), rel_err(t, r))


CPU_PRECISION_CASES = {  # name: (functional form, input shape, weight shape): each takes ATen products
    "conv1x1": (lambda F, x, w, b: F.conv2d(x, w, b), (2, 64, 9, 7), (32, 64, 1, 1)),
    "conv3x3_8ch": (lambda F, x, w, b: F.conv2d(x, w, b, padding=1), (2, 8, 9, 7), (8, 8, 3, 3)),
    "conv_transpose_k4s2": (lambda F, x, w, b: F.conv_transpose2d(x, w, b, stride=2), (2, 64, 9, 7), (64, 16, 4, 4)),
}


@pytest.mark.parametrize("case", CPU_PRECISION_CASES)
def test_cpu_products_stay_fp32_under_matmul_precision_medium(matmul_precision_medium, case):
    """torch.set_float32_matmul_precision("medium") lets ATen's CPU matrix products run in bf16
    (AMX / AVX512-BF16 CPUs); torch's CPU convolutions follow mkldnn.conv's setting and stay in
    fp32, and so do ours (output and every gradient within fp32 error of fp64, where bf16 products
    miss by ~2e-3). The matmul setting is the user's again after each call. (On a CPU without bf16
    products this holds either way.)"""
    form, xs, ws = CPU_PRECISION_CASES[case]
    x, w = torch.randn(xs, dtype=torch.float64), torch.randn(ws, dtype=torch.float64) / (ws[1] * ws[2] * ws[3]) ** 0.5
    b = torch.randn(w.shape[0] if "transpose" not in case else w.shape[1], dtype=torch.float64)
    gy = torch.randn_like(form(TF, x, w, b))
    ref = _grads(lambda x, w, b: form(TF, x, w, b), x, w, b, gy)
    ours = _grads(lambda x, w, b: form(RF, x, w, b), x.float(), w.float(), b.float(), gy.float())
    for name, o, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        assert rel_err(o, r) < 1e-5, (name, rel_err(o, r))
    assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_matmul_precision_after_fork_during_a_convolution(matmul_precision_medium):
    """A process forked while another thread's CPU convolution holds the matmul setting at IEEE
    (csrc/cpu/conv_precision.h) starts with the user's bf16 setting back: that convolution's thread
    does not exist in the child, so nothing there would ever restore it (it stayed IEEE)."""
    x, w = torch.randn(8, 64, 48, 48), torch.randn(64, 64, 1, 1)  # a GEMM-route convolution, ~ms
    stop = threading.Event()

    def convolutions():
        while not stop.is_set():
            RF.conv2d(x, w)

    thread = threading.Thread(target=convolutions)
    thread.start()
    seen = []
    try:
        for _ in range(5):
            deadline = time.monotonic() + 10
            while torch.backends.mkldnn.matmul.fp32_precision != "ieee" and time.monotonic() < deadline:
                pass  # until a convolution is in flight
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: read the setting, report it, leave at once (no OpenMP here)
                os.write(write, torch.backends.mkldnn.matmul.fp32_precision.encode())
                os._exit(0)
            os.close(write)
            seen.append(os.read(read, 16).decode())
            os.close(read)
            os.waitpid(pid, 0)
    finally:
        stop.set()
        thread.join()
    assert seen == ["bf16"] * 5
    assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
