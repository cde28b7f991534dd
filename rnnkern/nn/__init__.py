"""Drop-in torch.nn modules on rnnkern's kernels (same constructors, parameters, state_dict)."""
from rnnkern.nn.conv import Conv1d, Conv2d
from rnnkern.nn.pooling import MaxUnpool1d, MaxUnpool2d
from rnnkern.nn.rnn import RNN, RNNCell
from rnnkern.nn.conv_transpose import ConvTranspose1d, ConvTranspose2d, bilinear_, bilinear_upsampling_weight

from rnnkern.nn.convert import from_torch

__all__ = ["from_torch", "Conv1d", "Conv2d", "MaxUnpool1d", "MaxUnpool2d", "RNN", "RNNCell", "ConvTranspose1d", "ConvTranspose2d", "bilinear_upsampling_weight", "bilinear_"]
