"""Signals of a driver, in one room: SIGINT, SIGTERM and SIGHUP (the terminal closed), from main's first line
to its last (as submitit keeps signals and requeue together, with the cluster-specific step as a hook).

While a stop hand-off is installed (``handoff``: Tune's, from ``ablate.run.tune.stop_handoff``), the first
signal is passed on to it (the trials stop, what finished is on record) and the driver writes its tables;
at any other moment, and for a second signal, it raises ``KeyboardInterrupt`` where the driver is, and
main ends with one line and exit 128 + the signal (130, 143, 129), after stopping the Ray it started.
"""

from __future__ import annotations

import logging
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from ablate.run.cli import say

__all__ = ["Signals"]


class Signals:
    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, prog: str):
        self.prog, self.code, self.name = prog, 0, ""
        self.after = "nothing was changed"  # what the line says, by where the run is
        self._handoff: Optional[Callable[[], bool]] = None
        self._unraisable = sys.unraisablehook
        sys.unraisablehook = self._swallowed
        self.install()

    def install(self) -> None:
        """(Again after ``ray.init``, which puts its own SIGTERM handler in the driver.)  A signal that came
        meanwhile and could not stop it (``_swallowed``) stops the run here, before anything else starts."""
        for sig in self.HANDLED:
            signal.signal(sig, self._handle)
        if self.code and self._handoff is None:
            raise KeyboardInterrupt

    def _swallowed(self, unraisable) -> None:
        """Python's hook for an exception it cannot raise: our ``KeyboardInterrupt`` raised inside a fork hook
        (``ray.init`` starts its processes with ``preexec_fn``, so logging's lock is released after each fork
        in Python code) is printed as "Exception ignored in ... _releaseLock" and dropped, and the start went
        on.  Not printed: the signal is kept (``code``) and acted on at the next ``install``; the lock that
        hook did not get to release is released."""
        if not (self.code and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            return self._unraisable(unraisable)
        if getattr(unraisable.object, "__module__", None) == "logging":
            try:
                logging._lock.release()  # type: ignore[attr-defined]
            except (AttributeError, RuntimeError):  # released already (the signal came after it)
                pass

    @contextmanager
    def handing_off(self, handoff: Callable[[], bool]) -> Iterator[None]:
        """While the block runs, a first signal goes to ``handoff`` (which says whether it took it); one that came
        before and could not stop the run (``_swallowed``) stops it here."""
        if self.code:
            raise KeyboardInterrupt
        self._handoff = handoff
        try:
            yield
        finally:
            self._handoff = None

    def _handle(self, signum, frame):
        first, self.code, self.name = not self.code, self.code or 128 + signum, signal.Signals(signum).name
        if first and self._handoff is not None and self._handoff():
            say(
                f"{self.prog}: {self.name} received: stopping the trials (what finished is kept; send it again "
                "to stop at once)"
            )
            return
        raise KeyboardInterrupt

    def close(self) -> None:
        """Stop the local Ray this run started (never a cluster's), deaf to further signals meanwhile."""
        for sig in self.HANDLED:
            signal.signal(sig, signal.SIG_IGN)
        sys.unraisablehook = self._unraisable
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
