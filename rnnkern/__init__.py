"""rnnkern: fused vanilla-RNN, transposed/dilated convolution and max-unpool kernels for PyTorch."""
__version__ = "0.1.0"

from rnnkern import ops  # noqa: F401  (registers the rnnkern:: ops' fake implementations)
from rnnkern import functional, nn  # noqa: F401
from rnnkern._info import info  # noqa: F401
