"""Leaving torchrun's process group, shared by the language-model and segmentation trainers' CLIs."""
from __future__ import annotations

import gc


def leave_process_group() -> None:
    """Under torchrun, free what still holds the process group, then leave it, before the
    interpreter's teardown. DistributedDataParallel's reducer holds the group and sits in
    reference cycles, so it outlives the training function until a garbage collection; left to
    teardown, the group's gloo threads could be destroyed while still joinable, which aborts a run
    that had finished ("terminate called without an active exception", ~1 run in 20 here before
    this collection, none in 120 after). No-op without a process group."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
