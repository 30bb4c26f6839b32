"""What a running grid says on the terminal: one live progress line, instead of Tune's status table.

On a terminal the line is redrawn in place (at most a few times a second); elsewhere (CI, ``ray
exec``, a log file) it is printed as a plain line once a minute.  The ETA comes from the training
measured so far in this run: the work left (depth x members x epochs, which is what a group costs)
over the rate of the work done.  No Ray here: ``ablate.run.tune`` feeds it from a Tune callback.

It counts groups (what Tune trains: ``ablate.study.Group``); where groups hold several trials (fused), it says
both: "groups 3/24 done (trials 12/96)".
"""

from __future__ import annotations

import sys
import time
from typing import Dict, Optional, TextIO

from ablate.formatting import duration

__all__ = ["Progress"]


class Progress:
    """Counts the groups of one Tune run by state (and their trials), and the work (``weight`` x epochs) done."""

    @classmethod
    def of(cls, groups, epochs: int, rounds: Dict) -> "Progress":
        """The line for a Tune run of ``groups`` (``ablate.study.Group``), in an --until-resolved round or not;
        ``epochs``: the experiment's, where a group's own are not swept."""
        note = (
            f"round {rounds['round'] + 1}: {rounds['resolved']}/{rounds['total']} comparisons resolved"
            if rounds.get("round")
            else ""
        )
        return cls(
            {
                g.name: {
                    "weight": g.weight,
                    "start": g.epochs_done,
                    "epochs": g.epochs(epochs),
                    "members": len(g.members),
                }
                for g in groups
            },
            note=note,
        )

    def __init__(
        self,
        trials: Dict[str, Dict[str, float]],
        stream: Optional[TextIO] = None,
        interval: float = 60.0,
        live: Optional[bool] = None,
        clock=time.monotonic,
        note: str = "",
    ):
        # trials: a group's name -> {"weight": cost of one epoch, "start": epochs on record, "epochs": epochs in all,
        # "members": its trials (1 where not given)}
        self.trials, self.stream, self.clock = trials, stream or sys.stderr, clock
        self.note = note  # what the study adds to the line (an --until-resolved round: comparisons resolved)
        self.live = self.stream.isatty() if live is None else live
        self.interval = 0.25 if self.live else interval
        self.state = {name: "pending" for name in trials}
        self.epoch = {name: t["start"] for name, t in trials.items()}
        self.diverged = set()
        self.t0 = clock()
        self._last = self.t0
        self._width = 0

    # --- events (from Tune's callback) --------------------------------------------------------
    def start(self, name: str) -> None:
        self.state[name] = "running"

    def result(self, name: str, result: Dict) -> None:
        self.state[name] = "running"
        self.epoch[name] = max(self.epoch[name], int(result.get("epoch", 0)))
        if result.get("diverged"):
            self.diverged.add(name)

    def complete(self, name: str) -> None:
        self.state[name] = "done"

    def error(self, name: str) -> None:
        self.state[name] = "error"

    # --- the line -----------------------------------------------------------------------------
    def eta(self) -> Optional[float]:
        """Seconds left at the rate measured so far; None before any epoch of this run."""
        done = sum(t["weight"] * (self.epoch[n] - t["start"]) for n, t in self.trials.items())
        left = sum(
            t["weight"] * (t["epochs"] - self.epoch[n])
            for n, t in self.trials.items()
            if self.state[n] in ("pending", "running")
        )
        if done <= 0:
            return None
        return (self.clock() - self.t0) * left / done

    def line(self) -> str:
        counts = {s: sum(v == s for v in self.state.values()) for s in ("done", "running", "pending", "error")}
        eta = self.eta()
        members = {n: int(t.get("members", 1)) for n, t in self.trials.items()}
        done = f"{counts['done']}/{len(self.trials)} done"
        if any(m > 1 for m in members.values()):  # fused: Tune's groups and the grid's trials differ
            finished = sum(m for n, m in members.items() if self.state[n] == "done")
            head = f"groups {done} (trials {finished}/{sum(members.values())})"
        else:
            head = f"trials {done}"
        parts = [head, f"{counts['running']} running", f"{counts['pending']} pending", f"{len(self.diverged)} diverged"]
        if counts["error"]:
            parts.append(f"{counts['error']} errors")
        return (
            (f"{self.note} | " if self.note else "")
            + ", ".join(parts)
            + f" | {duration(self.clock() - self.t0)} elapsed | ETA "
            + ("..." if eta is None else f"~{duration(eta)}")
        )

    def tick(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        text = self.line()
        if self.live:  # redrawn in place, padded over a longer earlier line
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.tick(force=True)
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
