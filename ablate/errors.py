"""What a command ends on: ``AblateError`` and its kin, each one line (what is wrong, what is allowed, how to go
on), printed once by the command's ``main`` (``ablate.run.cli.run_main``), with its exit status ``code``.

Raised where the problem is found, never printed there: 2 for bad input found before any training, 1 for a
run whose trials or storage failed (what finished is kept), 4 for a growth that failed under
``ablate.compare``.
"""

from __future__ import annotations

__all__ = [
    "AblateError",
    "UsageError",
    "ConfigError",
    "RecordError",
    "ClusterError",
    "LockedError",
    "SlurmError",
    "RunFailed",
    "GrowthFailed",
    "first_line",
]


class AblateError(Exception):
    """What a command ends on: one line and its exit status ``code`` (2: bad input, found before any training)."""

    code = 2


class UsageError(AblateError):
    """Bad input found before any Ray or GPU work: exit code 2."""


class ConfigError(AblateError, ValueError):
    """A bad experiment: the message names the key and what is allowed."""


class RecordError(AblateError, ValueError):
    """A record (or the experiment's listing) that exists but cannot be read, or is not one this ablate
    can read: never taken for "not done" (that would train again what may be finished)."""


class ClusterError(AblateError, ValueError):
    """What the grid asks of the Ray cluster it can never get: exit 2 before any trial."""


class LockedError(AblateError):
    """Another run holds the experiment."""


class SlurmError(AblateError, ValueError):
    """A value that cannot go into a batch script: exit 2, one line, nothing written or submitted."""


class RunFailed(AblateError):
    """Trials that failed, or a storage that failed under a run: exit 1 (what finished is kept)."""

    code = 1


class GrowthFailed(AblateError):
    """A growth's grid run failed under ``ablate.compare``: exit 4, never 1 (which says "changed")."""

    code = 4


def first_line(e: BaseException, limit: int = 200) -> str:
    """An exception's first line (its message may run to pages: a remote traceback, a schema), cut to ``limit``."""
    return (str(e).strip().splitlines() or [""])[0][:limit]
