"""What the two command lines (``ablate.grid``, ``ablate.slurm``) share: where a driver's pid goes, and
how a first ``key=value`` that argparse took for the experiment file is put back among the overrides."""
from __future__ import annotations

from typing import List, Optional, Tuple

__all__ = ["PID_ENV", "split_overrides"]

PID_ENV = "ABLATE_PID_FILE"  # where the grid writes its pid, for a batch shell to signal it (ablate.slurm)


def split_overrides(experiment: Optional[str], overrides: List[str]) -> Tuple[Optional[str], List[str]]:
    """``python -m ablate.grid epochs=5``: argparse's first positional is an override, not a file."""
    if experiment is not None and "=" in experiment and not experiment.endswith((".yaml", ".yml")):
        return None, [experiment, *overrides]
    return experiment, list(overrides)
