"""What the two command lines (``ablate.grid``, ``ablate.slurm``) share: where a driver's pid goes, how a
first ``key=value`` that argparse took for the experiment file is put back among the overrides, and the
command that continues an experiment."""
from __future__ import annotations

import os
import shlex
from typing import List, Optional, Tuple

__all__ = ["PID_ENV", "write_pid", "split_overrides", "resume_command"]

PID_ENV = "ABLATE_PID_FILE"  # where the grid writes its pid, for a batch shell to signal it (ablate.slurm)


def write_pid() -> None:
    """Where a batch script asked for it (``PID_ENV``), this driver's pid: its way to hand SIGTERM to it."""
    if os.environ.get(PID_ENV):
        with open(os.environ[PID_ENV], "w") as f:
            f.write(str(os.getpid()))


def split_overrides(experiment: Optional[str], overrides: List[str]) -> Tuple[Optional[str], List[str]]:
    """``python -m ablate.grid epochs=5``: argparse's first positional is an override, not a file."""
    if experiment is not None and "=" in experiment and not experiment.endswith((".yaml", ".yml")):
        return None, [experiment, *overrides]
    return experiment, list(overrides)


def resume_command(argv: List[str]) -> str:
    """The exact command that continues this experiment."""
    rest = [a for a in argv if a != "--resume"]
    return shlex.join(["python", "-m", "ablate.grid", *rest, "--resume"])
