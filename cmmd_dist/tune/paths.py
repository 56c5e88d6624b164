"""Where a sweep lives: its storage root and name (``<storage>/<name>``), before anything is written.

An unnamed sweep gets a timestamped name; an unnamed ``--resume`` takes the newest sweep of its dataset and
scenario under the storage. Imported by ``plan`` and ``identity`` (which must not import each other's callers).
"""

from __future__ import annotations

import time
from pathlib import Path

from cmmd_dist.config import SweepConfig
from cmmd_dist.errors import UserError

__all__ = ["sweep_paths"]


def sweep_paths(settings: SweepConfig, dataset: str) -> tuple[str, str]:
    """(storage root, sweep name). Unnamed sweeps get a timestamp; an unnamed --resume takes the newest one."""
    storage = settings.storage or str(Path(settings.output_dir, "sweeps").resolve())
    if settings.name:
        return storage, settings.name
    prefix = f"sweep-{dataset}" + (f"-{settings.scenario}" if settings.scenario else "")
    if settings.resume:
        from cmmd_dist.storage.listing import folder_names

        found = folder_names(storage, prefix + "-")
        if not found:
            raise UserError(f"--resume: no sweep named {prefix}-* under {storage}")
        return storage, found[-1]
    return storage, f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
