"""Build rnnkern._C: CPU kernels always, CUDA kernels when a real toolkit is found.

Environment:
  RNNKERN_BUILD_CUDA=0   CPU-only build even where CUDA is available
  FORCE_CUDA=1           build the CUDA kernels even with no GPU visible (compile check)
  CUDA_HOME / CUDA_PATH  toolkit location (else /usr/local/cuda, else torch's guess)
  TORCH_CUDA_ARCH_LIST   GPU archs (default: the visible GPU's, else "8.0;9.0"); 9.0 builds as 9.0a
  MAX_JOBS               parallel compile jobs (honoured by torch's ninja builder)
"""
import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _is_toolkit(path):
    """A real toolkit has nvcc next to the CUDA runtime library (not just a wrapper script)."""
    if not path or not os.path.isfile(os.path.join(path, "bin", "nvcc")):
        return False
    libdirs = ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"),
               os.path.join("targets", "sbsa-linux", "lib"))
    return any(glob.glob(os.path.join(path, d, "libcudart.so*")) for d in libdirs)


def find_cuda_home():
    """Locate the CUDA toolkit before torch guesses it.

    torch derives CUDA_HOME from `which nvcc`; where nvcc is a wrapper script outside the
    toolkit (/usr/local/bin/nvcc -> exec /usr/local/cuda-13.0/bin/nvcc) that guess points at
    /usr/local and the link fails with "-lcudart not found".
    """
    candidates = [("CUDA_HOME", os.environ.get("CUDA_HOME")),
                  ("CUDA_PATH", os.environ.get("CUDA_PATH")),
                  ("default location", "/usr/local/cuda")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        candidates.append(("nvcc on PATH", os.path.dirname(os.path.dirname(real))))
        # follow a one-line `exec /path/to/nvcc` wrapper
        try:
            with open(real, "rb") as f:
                head = f.read(4096).decode("utf-8", "replace")
            for tok in head.split():
                if tok.endswith("/bin/nvcc"):
                    candidates.append(("nvcc wrapper target", os.path.dirname(os.path.dirname(tok))))
        except OSError:
            pass
    for how, path in candidates:
        if _is_toolkit(path):
            return os.path.realpath(path), how
    return None, None


def want_cuda():
    if os.environ.get("RNNKERN_BUILD_CUDA", "1") == "0":
        return False, "RNNKERN_BUILD_CUDA=0"
    cuda_home, how = find_cuda_home()
    if cuda_home is None:
        if os.environ.get("FORCE_CUDA", "0") == "1":
            sys.exit("rnnkern setup: FORCE_CUDA=1 but no CUDA toolkit found "
                     "(looked in CUDA_HOME, CUDA_PATH, /usr/local/cuda and the nvcc on PATH)")
        return False, "no CUDA toolkit found"
    os.environ["CUDA_HOME"] = cuda_home  # must be set before torch.utils.cpp_extension loads
    print(f"rnnkern setup: CUDA toolkit {cuda_home} (from {how})")
    return True, cuda_home


BUILD_CUDA, CUDA_REASON = want_cuda()

import torch  # noqa: E402  (after CUDA_HOME is fixed)
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

if BUILD_CUDA and torch.version.cuda is None:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        sys.exit("rnnkern setup: FORCE_CUDA=1 but this torch is a CPU-only build")
    BUILD_CUDA, CUDA_REASON = False, "torch is a CPU-only build"


def cuda_arch_list():
    """(archs, ptx): the archs to build, sm_90 as sm_90a, and the extra nvcc flags for PTX.

    Hopper's arch-specific features (wgmma, used by the convolution engine's opt-in wgmma form)
    compile only for sm_90a, whose code runs on every sm_90 GPU (H100 / H200, the only ones). An
    sm_90 cubin beside it would hold the same kernels without wgmma, so 9.0 is replaced, not
    added to; "9.0+PTX" keeps its PTX (plain compute_90, for GPUs after Hopper) as an extra
    -gencode. Entries are normalised as torch wants them ("90" -> "9.0"); named archs ("Hopper")
    pass through to torch unchanged (then no sm_90a: the wgmma form is not built)."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    if (not archs or archs == "native") and torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        archs = ";".join(f"{a}.{b}" for a, b in caps)
    out, ptx = [], []
    for entry in (archs or "8.0;9.0").replace(",", ";").replace(" ", ";").split(";"):
        base, _, suffix = entry.partition("+")
        if len(base) == 2 and base.isdigit():
            base = f"{base[0]}.{base[1]}"
        if base in ("9.0", "9.0a"):
            if suffix:  # "+PTX"
                ptx.append("-gencode=arch=compute_90,code=compute_90")
            entry = "9.0a"
        elif base:
            entry = base + ("+" + suffix if suffix else "")
            major = base.split(".")[0]
            if major.isdigit() and int(major) < 8:
                # the tensor-core kernels trap below sm_80, and PTX for an older arch would be
                # compiled by the driver for a newer GPU with exactly that arch's code
                sys.exit(f"rnnkern setup: TORCH_CUDA_ARCH_LIST entry {entry!r}: the CUDA kernels need compute "
                         f"capability 8.0 or newer (Ampere, Hopper); build for those archs, or "
                         f"RNNKERN_BUILD_CUDA=0 for the CPU kernels only")
        if entry and entry not in out:
            out.append(entry)
    return ";".join(out), ptx


def write_build_info(cuda, archs):
    """rnnkern.info() reports what this build compiled; the module records it next to _C."""
    with open(os.path.join(ROOT, "rnnkern", "_build_info.py"), "w") as f:
        f.write("# written by setup.py; do not edit\n")
        f.write(f"WITH_CUDA = {cuda!r}\nCUDA_ARCHS = {archs!r}\n")
        f.write(f"CUDA_HOME = {os.environ.get('CUDA_HOME') if cuda else None!r}\n")
        f.write(f"BUILT_WITH_TORCH = {torch.__version__!r}\nREASON = {CUDA_REASON if not cuda else ''!r}\n")


def library_headers():
    """ATen's CUDA headers include cuBLAS/cuSPARSE/cuSOLVER headers. A bare toolkit (nvcc +
    runtime only) lacks them; torch's pip wheels ship them under site-packages/nvidia/."""
    if os.path.isfile(os.path.join(os.environ["CUDA_HOME"], "include", "cusparse.h")):
        return []
    import site
    roots = site.getsitepackages() + [site.getusersitepackages()]
    found = sorted({os.path.dirname(h) for r in roots
                    for h in glob.glob(os.path.join(r, "nvidia", "*", "include", "cusparse.h"))
                    + glob.glob(os.path.join(r, "nvidia", "*", "include", "cublas_v2.h"))})
    if found:
        print(f"rnnkern setup: CUDA library headers from {', '.join(found)}")
    return found


def extension():
    cpu_sources = sorted(glob.glob("csrc/cpu/*.cpp"))
    sources = ["csrc/bindings.cpp"] + sorted(glob.glob("csrc/autograd/*.cpp")) + cpu_sources
    cxx = ["-O3", "-fopenmp"]  # the C++ standard is torch's own choice (C++17 or C++20)
    define_macros = []
    if BUILD_CUDA:
        os.environ["TORCH_CUDA_ARCH_LIST"], ptx = cuda_arch_list()
        cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
        sources += cuda_sources
        define_macros.append(("WITH_CUDA", None))
        if "9.0a" in os.environ["TORCH_CUDA_ARCH_LIST"].split(";"):
            define_macros.append(("RNNKERN_WITH_SM90A", None))  # the host may launch sm_90a-only kernels
        else:
            print("rnnkern setup: no sm_90a in the arch list: the convolution engine's wgmma form is not built")
        nvcc = ptx + ["-O3", "-lineinfo", "--expt-relaxed-constexpr",
                "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_HALF2_OPERATORS__"]
        if os.environ.get("RNNKERN_PTXAS_REPORT") == "1":  # registers, spills, wgmma serialisation
            nvcc.append("-Xptxas=-v")  # (make cuda-check: scripts/check_ptxas_report.py reads it)
        write_build_info(True, os.environ["TORCH_CUDA_ARCH_LIST"])
        print(f"rnnkern setup: building CPU + CUDA kernels for archs {os.environ['TORCH_CUDA_ARCH_LIST']} "
              f"({len(cpu_sources)} .cpp, {len(cuda_sources)} .cu), MAX_JOBS={os.environ.get('MAX_JOBS', 'auto')}")
        return CUDAExtension("rnnkern._C", sources, define_macros=define_macros, include_dirs=library_headers(),
                             extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                             extra_link_args=["-fopenmp"])
    write_build_info(False, None)
    print(f"rnnkern setup: building CPU kernels only ({CUDA_REASON}); "
          f"{len(cpu_sources)} .cpp, MAX_JOBS={os.environ.get('MAX_JOBS', 'auto')}")
    return CppExtension("rnnkern._C", sources, define_macros=define_macros,
                        extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
