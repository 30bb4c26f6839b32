"""What the commands share: how each ends (``run_main``: its ``AblateError`` printed once, as one line, and its
exit code), where a driver's pid goes, how a first ``key=value`` that argparse took for the experiment file is
put back among the overrides, and the command that continues an experiment."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Callable, List, Optional, Tuple

from ablate.errors import AblateError

__all__ = ["run_main", "say", "PID_ENV", "write_pid", "split_overrides", "resume_command"]


def say(line: str) -> None:
    """A line to stderr that a closed terminal (SIGHUP) cannot turn into a traceback."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def run_main(
    prog: str,
    fn: Callable[[], int],
    *,
    interrupted: Optional[Callable[[], Tuple[str, int]]] = None,
    oserror: Optional[Callable[[OSError], str]] = None,
) -> int:
    """A command's ``main``: ``fn()``'s exit code; an ``AblateError`` it raised as ``<prog>: error: <line>`` and its
    code; a Ctrl-C as ``interrupted()``'s line and code (130 and "interrupted" where not given); an ``OSError`` as
    ``oserror(e)``'s line, exit 2, where the command says what it cost (else it propagates)."""
    try:
        return fn()
    except AblateError as e:
        say(f"{prog}: error: {e}")
        return e.code
    except KeyboardInterrupt:
        line, code = interrupted() if interrupted else ("interrupted", 130)
        say(f"{prog}: {line}")
        return code
    except OSError as e:
        if oserror is None:
            raise
        say(f"{prog}: error: {oserror(e)}")
        return 2


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
