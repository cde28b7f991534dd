"""What `--resume` does to a run's config, shared by the language-model and segmentation trainers:
the settings the weights depend on come from the checkpoint, the others from it unless the user
gave them again, and the run continues in the checkpoint's folder. Every difference is logged."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional


def take_from_checkpoint(cfg, old: dict, keys: Iterable[str], log: Callable, asked: Optional[dict] = None) -> None:
    """cfg's `keys` set to the checkpoint config `old`'s values (a key the checkpoint lacks keeps
    cfg's); a value that changes is logged where `asked` (the options given; None: all) names it."""
    for key in keys:
        if key in old and old[key] != getattr(cfg, key):
            if asked is None or key in asked:
                log(f"resume: taking {key}={old[key]!r} from the checkpoint (asked {getattr(cfg, key)!r})")
            setattr(cfg, key, old[key])


def resume_settings(cfg, old: dict, path: str, given: dict, fixed: Iterable[str], defaults: Iterable[str],
                    log: Callable) -> None:
    """cfg (built from `given`, the options the user passed) continuing the run of checkpoint
    `path` whose config is `old`: `fixed` from the checkpoint, `defaults` from it unless given,
    the output folder the checkpoint's unless given."""
    take_from_checkpoint(cfg, old, fixed, log, asked=given)
    for key in defaults:
        if key not in given:
            setattr(cfg, key, old.get(key, getattr(cfg, key)))
        elif given[key] != old.get(key):
            log(f"resume: {key}={given[key]!r} instead of the run's {old.get(key)!r}")
    if "out" not in given:
        cfg.out = str(Path(path).parent)
