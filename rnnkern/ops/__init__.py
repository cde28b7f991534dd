"""The rnnkern:: operators (registered by rnnkern._C) with their fake implementations and the
argument checks. The only package that touches rnnkern._C and torch.ops.rnnkern."""
from rnnkern.ops import max_unpool  # noqa: F401  (registers rnnkern::max_unpool_*)
from rnnkern.ops import rnn  # noqa: F401  (registers rnnkern::rnn_*)
from rnnkern.ops import conv  # noqa: F401  (registers rnnkern::conv2d_*)
from rnnkern.ops import conv_transpose  # noqa: F401  (registers rnnkern::conv_transpose2d_*)

OPS = ["max_unpool", "rnn", "conv", "conv_transpose"]
