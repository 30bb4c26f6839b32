"""One experiment's lifecycle: what is done, what runs next, its tables.

A study is the grid of one experiment directory.  What it holds is decided from the trials'
own records alone (``ablate.study.records``): a first run, a ``--resume`` after a crash, a Ctrl-C or a
full disk, and a growth (more values on an axis) are one operation: run the grid points that are
not done, each unfinished group from its newest whole checkpoint, as one more Tune run
(``<experiment>/run-<time>``).  No file of Tune's is read back.  What makes it the same
experiment is in ``ablate.study.identity``.

Words: a *trial* is one grid point (a row of trials.csv, a W&B run, its ``trial_id``); a *group* is
the trials that train together as one Tune trial (one trial, or several fused: ``fuse_trials``).
"""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd
import yaml
from pydantic import ValidationError

from ablate import storage
from ablate.errors import UsageError, first_line
from ablate.formatting import short
from ablate.spec.axes import GRID, trial_id, trial_name
from ablate.spec.config import CompareSettings, ExperimentConfig, point_config, to_dict, trial_configs, trial_groups
from ablate.spec.settings import sweep_as_it_acts
from ablate.storage import EXPERIMENT_FILE, HISTORY_FILE, RUN_PREFIX, TRIALS_FILE, ExperimentLock
from ablate.study.identity import ROUNDS_KEY, growth, identity, provenance, saved_identity
from ablate.study.records import Listing, list_records
from ablate.study.tables import current, tables_of, write_csvs

__all__ = ["Study", "Group"]


@dataclass
class Group:
    """Trials (grid points) that train together as one Tune trial: its members (``{"id", "point"}``), the
    checkpoints it may continue from (newest first) and the directories of its earlier runs."""

    name: str
    members: List[Dict[str, Any]]
    checkpoints: List[str] = field(default_factory=list)
    dirs: List[str] = field(default_factory=list)
    epochs_done: int = 0  # on record in its newest whole checkpoint: where it continues

    def epochs(self, default: int) -> int:
        """The epochs its members train: the point's own where epochs is swept, else the experiment's ``default``
        (the members of a group share every setting but lr and seed)."""
        return int(self.members[0]["point"].get("epochs", default))

    @property
    def weight(self) -> float:
        """What an epoch of it costs, relatively: compute grows with depth, and with the members."""
        return float(self.members[0]["point"]["depth"] * len(self.members))


def _group(points: List[Dict[str, Any]], ids: List[str], found=(), digits: Optional[Dict[str, int]] = None) -> Group:
    name = trial_name(points[0], digits) + (f"+{len(points) - 1}" if len(points) > 1 else "")
    whole = [f for f in found if f.state_whole]
    start = min((len(m["history"]) for m in whole[0].record["members"] if not m["done"]), default=0) if whole else 0
    return Group(
        name,
        [{"id": i, "point": dict(p)} for i, p in zip(ids, points)],
        [f.checkpoint for f in whole],
        list(dict.fromkeys(f.trial_dir for f in found)),
        start,
    )


class Study:
    """The lifecycle of ``cfg``'s experiment: ``lock`` and ``check`` (before Ray), ``plan``, ``write_identity``,
    ``tables``; ``Study.open`` for an experiment on record."""

    def __init__(self, cfg: ExperimentConfig, resume: bool):
        self.cfg, self.resume = cfg, resume
        self.dir = cfg.experiment_dir
        self.saved: Optional[Dict[str, Any]] = None
        self.added: Dict[str, list] = {}
        self.asked = ""  # on --resume: the question the command asks anew, in words (``_question``)
        self.experiment_id = uuid.uuid4().hex[:12]
        self.listing = Listing()
        # An --until-resolved study's state: {"round", "points" (added beyond the product), "resolved", "total",
        # "final"}; empty for a grid that is the product of its axes.
        self.rounds: Dict[str, Any] = {}
        self._points: Optional[tuple] = None  # (what it was expanded for, the points)

    @classmethod
    def open(cls, exp_dir: str) -> "Study":
        """The study of an experiment on record, from its identity alone (the report, the tables rebuilt from
        records): ``UsageError`` with one line where the identity cannot be read."""
        saved = saved_identity(exp_dir)
        fields = {k: v for k, v in saved.items() if k in ExperimentConfig.model_fields}
        fields["sweep"] = sweep_as_it_acts(fields.get("sweep") or {}, fields.get("dataset"))  # as a resume reads it
        parent, name = (
            exp_dir.rstrip("/").rsplit("/", 1)
            if storage.is_uri(exp_dir)
            else os.path.split(os.path.abspath(exp_dir.rstrip("/")))
        )
        # Not validated again: its user blocks need not be importable here, and it was valid when it ran.
        study = cls(ExperimentConfig.model_construct(**{**fields, "storage_path": parent, "name": name}), resume=True)
        study.dir, study.saved, study.experiment_id = exp_dir, saved, str(saved["experiment_id"])
        study.rounds = dict(saved.get(ROUNDS_KEY) or {})
        return study

    # --- before Ray ---------------------------------------------------------------------------
    def lock(self) -> ExperimentLock:
        """One writer per experiment, for the whole run (``with study.lock():``), where its files can be written."""
        storage.preflight(self.dir, self.cfg.output_dir, self.cfg.storage_path)
        return ExperimentLock(self.dir)

    def check(self) -> None:
        """Refuse to mix experiments and to resume nothing; on ``--resume``, what the grid adds."""
        try:
            exists = storage.has_files(self.dir)
            if self.resume:
                self.saved = saved_identity(self.dir) if exists else None
                if self.saved is None:
                    raise UsageError(
                        f"--resume: nothing to resume at {self.dir} (no experiment was started there); "
                        "run without --resume to start it"
                    )
                refused, self.added = growth(identity(self.saved), identity(self.cfg))
                if refused:
                    raise UsageError(
                        f"--resume: {self.dir} holds a different experiment (differs in: "
                        f"{', '.join(refused)}); resume it with its own settings (an axis may only gain "
                        "values), or choose a new name="
                    )
                self.experiment_id = str(self.saved["experiment_id"])
                self.rounds = dict(self.saved.get(ROUNDS_KEY) or {})
                # A swept setting's own value is the experiment's (its base: the ids of the points that have it).
                self.cfg = self.cfg.model_copy(update={k: self.saved[k] for k in self.cfg.sweep if k in self.saved})
                self.asked = self._question()
            elif exists:
                raise UsageError(
                    f"{self.dir} already holds an experiment; continue it with --resume, "
                    "or choose a new name= (nothing was changed)"
                )
        except UsageError:
            raise
        except OSError as e:  # an unreachable bucket, no credentials
            raise UsageError(
                f"key 'storage_path': cannot read {self.dir} ({e.__class__.__name__}: {first_line(e)})"
            ) from None
        except Exception as e:  # pyarrow: an unknown scheme, a malformed URI
            raise storage.unusable_location(self.cfg.storage_path, e) from None

    def _question(self) -> str:
        """What the report answers changes only by an explicit command: a ``compare`` given on ``--resume`` that
        differs from the saved one is applied (and said: the returned words); a command without one keeps the
        saved question, also when it grows the experiment.  An --until-resolved study's question is fixed:
        its rounds added seeds for the comparisons it asked."""
        try:
            saved = CompareSettings.model_validate(self.saved.get("compare") or {})
        except ValidationError:
            raise UsageError(
                f"--resume: the compare of {self.dir}'s {EXPERIMENT_FILE} is not one ablate wrote "
                f"({short(self.saved.get('compare'))}): edited by hand; restore it, or give compare= anew"
            ) from None
        was = self.cfg.model_copy(update={"compare": saved})
        if "compare" not in self.cfg.model_fields_set:
            self.cfg = was
            return ""
        if self.cfg.subject() == was.subject():
            return ""
        if self.rounds:
            raise UsageError(
                f"--resume: {self.dir} is an --until-resolved study of {was.question_text()}: its rounds "
                f"added seeds for that question, which stays; drop compare= (nothing was trained), or "
                "start a new study (name=) for the new question"
            )
        return f"the question is now {self.cfg.question_text()} (it was {was.question_text()}); the report answers it"

    def growth_text(self) -> str:
        axes = self.cfg.axes()
        old = math.prod(len([v for v in values if v not in self.added.get(k, [])]) for k, values in axes.items())
        new = math.prod(len(v) for v in axes.values()) - old
        keys = {a.name: a.key for a in GRID}  # as the user wrote them: seeds +[3]; weight_decay +[0.0005]
        what = "; ".join(f"{keys.get(k, k)} +{v}" for k, v in self.added.items())
        return f"growing {self.dir}: {what}: {new} new trials beside the {old} it holds (those are not rerun)"

    # --- what runs ----------------------------------------------------------------------------
    def points(self) -> Dict[str, Dict[str, Any]]:
        """The study's points by their stable id: the product of the axes, then the points rounds added.
        Expanded once per state of the study (plan, the tables and their check all ask for it)."""
        key = (self.cfg, self.experiment_id, len(self.rounds.get("points", [])))  # the config itself: kept alive
        if self._points is None or self._points[0] != key:
            base = self.cfg.base()
            out = {trial_id(self.experiment_id, t.point, base): t.point for t in trial_configs(self.cfg)}
            for p in self.rounds.get("points", []):
                point = point_config(self.cfg, p).point  # every axis, in the grid's order
                out.setdefault(trial_id(self.experiment_id, point, base), point)
            self._points = (key, out)
        return dict(self._points[1])

    def add_points(self, points: List[Dict[str, Any]], state: Dict[str, Any]) -> int:
        """A round's points (and its state) join the study; the number that are new."""
        have = {trial_id(self.experiment_id, p, self.cfg.base()) for p in self.points().values()}
        new = [
            p
            for p in points
            if trial_id(self.experiment_id, point_config(self.cfg, p).point, self.cfg.base()) not in have
        ]
        self.rounds = {**self.rounds, **state, "points": [*self.rounds.get("points", []), *new]}
        return len(new)

    def plan(self) -> List[Group]:
        """The groups that train next: the grid points not done, from the records alone.

        An unfinished group runs again as it was (its members together, from its newest whole
        checkpoint, whichever Tune run wrote it); points no record holds form new groups.
        """
        self.listing = list_records(self.dir, self.experiment_id)
        points = self.points()
        done = self.listing.settled_ids()  # done, or stopped early by the scheduler: never trained again
        done_in: Dict[str, set] = {}  # member id -> the trials whose newest record says it is done
        for f in self.listing.newest():
            for m in f.record["members"]:
                if m["done"]:
                    done_in.setdefault(m["id"], set()).add(f.ids)
        todo, taken, digits = [], set(), self.cfg.digits()
        for found in self.listing.by_group.values():
            ids = found[0].ids
            elsewhere = {i for i in ids if done_in.get(i, set()) - {ids}}
            if (
                all(i in done for i in ids)
                or not all(i in points for i in ids)
                or any(i in elsewhere or i in taken for i in ids)
            ):
                continue  # settled, or not all of it in this grid (an interrupted growth), or its points run elsewhere
            todo.append(_group([points[i] for i in ids], list(ids), found, digits))
            taken |= set(ids)
        fresh = [p for i, p in points.items() if i not in done and i not in taken]
        base = self.cfg.base()
        if fresh:
            todo += [
                _group([t.point for t in g], [trial_id(self.experiment_id, t.point, base) for t in g], (), digits)
                for g in trial_groups(self.cfg, fresh)
            ]
        return todo

    def broken_notice(self) -> Optional[str]:
        broken = self.listing.broken
        if not broken:
            return None
        return (
            f"notice: {len(broken)} checkpoints are cut short or unreadable (first: {broken[0]}); their trials "
            "continue from an older checkpoint, or each starts again from epoch 1"
        )

    # --- writing ------------------------------------------------------------------------------
    def write_identity(self) -> None:
        """The experiment's identity, with the experiment (checked by ``--resume``, read by the report):
        written when the experiment starts, after a growth once the grown points are on record, and
        before each round of an --until-resolved study trains (its added points are then the study's)."""
        prov = (self.saved or {}).get("provenance") or provenance()
        rounds = {ROUNDS_KEY: self.rounds} if self.rounds else {}
        text = yaml.safe_dump(
            {**to_dict(self.cfg), "experiment_id": self.experiment_id, "provenance": prov, **rounds}, sort_keys=False
        )
        storage.write_text(storage.join(self.dir, EXPERIMENT_FILE), text)
        if self.cfg.output_dir != self.dir:
            os.makedirs(self.cfg.output_dir, exist_ok=True)
            storage.write_text(os.path.join(self.cfg.output_dir, EXPERIMENT_FILE), text)

    def analysis_meta(self) -> Dict[str, Any]:
        """What the analysis reads of the experiment, as the report reads it from the identity file."""
        return {
            "equivalence_margin": self.cfg.equivalence_margin,
            "max_seeds": self.cfg.max_seeds,
            ROUNDS_KEY: self.rounds,
        }

    def run_name(self) -> str:
        """A new Tune run's directory name: the time, and a count where one of that second exists."""
        taken = set(storage.list_dirs(self.dir))
        base = RUN_PREFIX + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}-{k}"
        return name

    def settle_tables(self) -> str:
        """A study with nothing to run: its tables rebuilt from the records where lost or cut short (also in
        the bucket), and a growth trained to the end whose identity was never rewritten (a kill at the
        finish) completed; what the run then says."""
        out = self.cfg.output_dir
        os.makedirs(out, exist_ok=True)
        if not self.tables_current():  # whole and newer than every record: nothing to rebuild
            write_csvs(out, *self.tables(set(), interrupted=False, relist=False), only_changed=True)
        if storage.is_uri(self.cfg.storage_path):  # the bucket's own copies too, where lost or other
            local = {n: os.path.getsize(os.path.join(out, n)) for n in (HISTORY_FILE, TRIALS_FILE)}
            storage.upload(out, self.dir, [n for n, size in local.items() if self.listing.top_files.get(n) != size])
        if self.added or self.asked:
            self.write_identity()
        return (
            f"every trial of {self.dir} had already finished; nothing to run (results: {out}; rebuild the "
            "report with python -m ablate.report)"
        )

    def tables_current(self) -> bool:
        """Whether the tables in the output directory are whole and newer than every record (a finished
        study's ``--resume`` then rebuilds nothing; ``tables.current``)."""
        return not self.added and current(self.cfg.output_dir, self.listing, self.points())

    def tables(
        self, errored: set, interrupted: bool, running: bool = False, relist: bool = True
    ) -> Tuple[pd.DataFrame, pd.DataFrame]:
        """history.csv and trials.csv of the grid, from the records (listed once more, unless ``relist`` is
        False: what this run added)."""
        if relist:
            self.listing = list_records(self.dir, self.experiment_id)
        return tables_of(
            self.listing, self.points(), errored, self.cfg.target_acc, self.cfg.epochs, interrupted, running
        )
