"""The models built on rnnkern's kernels: language models (language/) and segmentation nets
(segmentation/), with their trainers and command lines."""


class TrainingDiverged(ValueError):
    """A trainer's loss became NaN or infinite: the run stops with this error (the checkpoints
    written before stay) instead of training on."""
