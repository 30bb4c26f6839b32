"""What became of a trial (a grid point): the ``status`` column of trials.csv, one owner for every reader.

As optuna's ``TrialState``: the states, and which of them end a trial with an outcome (``is_finished``: its
final accuracy is a result the analysis counts).  A ``str`` enum, so a table's cell and the member compare equal
and trials.csv holds the plain name.
"""

from __future__ import annotations

from enum import Enum
from typing import Tuple

__all__ = ["Status"]


class Status(str, Enum):
    TERMINATED = "TERMINATED"  # trained to its last epoch
    DIVERGED = "DIVERGED"  # stopped by a non-finite or exploding loss: an outcome (it did not train)
    INTERRUPTED = "INTERRUPTED"  # cut short by a signal: a --resume continues it
    STOPPED_EARLY = "STOPPED_EARLY"  # stopped by the scheduler (ASHA) before its last epoch: settled, no outcome
    NOT_STARTED = "NOT_STARTED"  # no epoch on record
    ERROR = "ERROR"  # its group errored after its retries
    RUNNING = "RUNNING"  # being trained now by another run (the tables of a study that is running)

    __str__ = str.__str__  # "TERMINATED" in f-strings, CSV cells and messages
    __format__ = str.__format__

    def is_finished(self) -> bool:
        """Whether its final accuracy is an outcome the analysis counts (trained to the end, or diverged)."""
        return self in (Status.TERMINATED, Status.DIVERGED)

    def is_ended(self) -> bool:
        """Whether no run owes it epochs: finished, stopped by the scheduler, or errored (a growth that left a
        trial interrupted, running or not started is unfinished)."""
        return self.is_finished() or self in (Status.STOPPED_EARLY, Status.ERROR)

    @classmethod
    def finished(cls) -> Tuple[str, ...]:
        """The finished states' names (for ``DataFrame.isin``)."""
        return tuple(s.value for s in cls if s.is_finished())

    @classmethod
    def ended(cls) -> Tuple[str, ...]:
        return tuple(s.value for s in cls if s.is_ended())

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(s.value for s in cls)
