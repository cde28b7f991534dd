"""rnnkern's functional API: torch.nn.functional's signatures on rnnkern's kernels.
One module per op family; this file only re-exports."""
from rnnkern.functional.unpool import bed_of_nails2d, max_unpool1d, max_unpool2d, unpool_nearest2d  # noqa: F401
from rnnkern.functional.rnn import rnn, rnn_cell, rnn_layer  # noqa: F401
from rnnkern.functional.conv import conv1d, conv2d  # noqa: F401
from rnnkern.functional.conv_transpose import conv_transpose1d, conv_transpose2d  # noqa: F401
