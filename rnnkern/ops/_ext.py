"""The compiled extension. Only rnnkern.ops imports this module."""
try:
    from rnnkern import _C  # noqa: F401
except ImportError as e:  # pragma: no cover - message for users who skipped the build
    raise ImportError(
        "rnnkern._C is not built. Run `make build` (or `pip install --no-build-isolation -e .`) "
        f"in the repository root. Original error: {e}"
    ) from e

WITH_CUDA: bool = bool(getattr(_C, "with_cuda", False))
