"""Drop-in torch.nn modules on rnnkern's kernels (same constructors, parameters, state_dict)."""
from rnnkern.nn.pooling import MaxUnpool1d, MaxUnpool2d
from rnnkern.nn.rnn import RNN, RNNCell

__all__ = ["MaxUnpool1d", "MaxUnpool2d", "RNN", "RNNCell"]
