"""TorchScript and rnnkern's modules."""


def not_scriptable(self) -> None:
    """__prepare_scriptable__, which torch.jit.script calls on every module it is to compile (its
    submodules included) before compiling anything: the forward is Python around the
    torch.ops.rnnkern operators (argument checks, autocast, torch.func dispatch), which TorchScript
    cannot compile; without this it fails on an annotation deep inside rnnkern.functional."""
    name = next(c.__name__ for c in type(self).__mro__ if c.__module__.startswith("rnnkern."))
    raise RuntimeError(f"torch.jit.script cannot compile rnnkern.nn.{name} (its forward is Python around the "
                       f"torch.ops.rnnkern operators): use torch.compile or torch.export, or torch.nn.{name} "
                       "(the same state_dict) where TorchScript is needed")
