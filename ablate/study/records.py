"""A group's record: ablate's own account of what a Tune trial trained, and the one truth of what finished.

Every checkpoint a Tune trial writes is a directory with the trainer's state (``state.pt``) and the
record (``ablate_record.json``): the experiment's id, the group's name (under the key ``trial``, as
format 1 has it: a group of one or more grid points, each a trial of trials.csv, that train together),
and for each member its stable id, its point, its history
(every epoch, with the node that ran it) and whether it is done.  A checkpoint is written once,
into a fresh directory, and never rewritten; the record names the size of the state beside it,
so a checkpoint that a full disk or a broken upload cut short is recognised from its own files.
A trial that the scheduler (ASHA) stopped early cannot say so itself (Tune ends its process at its
next report); the driver that decided it writes ``ablate_stopped.json`` into the trial's directory,
and that trial is settled: no later run continues it.

The driver lists the records once (``list_records``: JSON and file sizes, no torch, no Ray, no
file of Tune's) and decides from them alone what is done, what continues from which checkpoint,
and what history.csv holds.  Local and URI storage alike (pyarrow's filesystems, as Tune's).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ablate import storage
from ablate.errors import RecordError, first_line
from ablate.spec.settings import METRIC_KEYS
from ablate.storage import RECORD_FILE, STATE_FILE, STOPPED_FILE
from ablate.study.histories import History

__all__ = [
    "RecordError",
    "Found",
    "Listing",
    "make_record",
    "write_stopped",
    "list_records",
    "experiment_ids",
    "loggable",
    "RUN_KEYS",
]

VERSION = 1


# What a history row holds beside the trainer's metrics: the node that ran the epoch, and when.
RUN_KEYS = ("node", "time")


def loggable(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """An epoch's metrics as the trainer computed them (W&B's), without ``RUN_KEYS``."""
    return {k: v for k, v in metrics.items() if k not in RUN_KEYS}


def make_record(
    experiment_id: str, trial: str, members: List[Dict[str, Any]], histories: List[List[Dict]], done: List[bool]
) -> Dict[str, Any]:
    """A trial's record: ``members`` are ``{"id", "point"}``; each gets its history and whether it is done."""
    return {
        "ablate_record": VERSION,
        "experiment_id": experiment_id,
        "trial": trial,
        "written": time.time(),
        "process": {"pid": os.getpid(), "host": socket.gethostname()},  # which process wrote it
        "members": [{**m, "history": list(h), "done": bool(d)} for m, h, d in zip(members, histories, done)],
    }


def write_stopped(trial_dir: str, experiment_id: str, trial: str, member_ids: List[str], epoch: int) -> None:
    """Say that the scheduler stopped ``trial`` after ``epoch`` (its directory: a local path or a URI).

    One small JSON file; one that is cut short does not parse and is ignored (the trial then
    continues on a later ``--resume``: training repeated, nothing lost).
    """
    storage.write_text(
        storage.join(trial_dir, STOPPED_FILE),
        json.dumps(
            {
                "ablate_stopped": VERSION,
                "experiment_id": experiment_id,
                "trial": trial,
                "members": list(member_ids),
                "epoch": int(epoch),
                "written": time.time(),
            }
        ),
    )


@dataclass
class Found:
    """A readable record and the checkpoint directory it is in (a local path or a URI)."""

    record: Dict[str, Any]
    checkpoint: str
    state_whole: bool = True  # the trainer's state beside it is whole: the trial can continue from here

    @property
    def trial_dir(self) -> str:
        return self.checkpoint.rstrip("/").rsplit("/", 1)[0]

    @property
    def epochs(self) -> int:
        return sum(len(m["history"]) for m in self.record["members"])

    @property
    def done(self) -> bool:
        return all(m["done"] for m in self.record["members"])

    @property
    def ids(self) -> Tuple[str, ...]:
        return tuple(m["id"] for m in self.record["members"])


@dataclass
class Listing:
    """Every readable record of an experiment, by trial (its members' ids), newest first."""

    by_group: Dict[Tuple[str, ...], List[Found]] = field(default_factory=dict)
    broken: List[str] = field(default_factory=list)  # unfinished trials' checkpoints that are cut short
    stopped: Dict[str, int] = field(default_factory=dict)  # member id -> the epoch the scheduler stopped it after
    newest_write_ns: int = 0  # the modification time of the newest record or note (what the tables must postdate)
    top_files: Dict[str, int] = field(default_factory=dict)  # the experiment's own files (the tables): name -> size

    _members: Optional[Dict[str, Dict[str, Any]]] = field(default=None, repr=False)

    def newest(self) -> List[Found]:
        return [found[0] for found in self.by_group.values()]

    def member(self, member_id: str) -> Optional[Dict[str, Any]]:
        """A member's record in the newest record that holds it (done first, then the longest history, then
        the first listed).  An index built once: one pass over the records, not one per member."""
        if self._members is None:
            best: Dict[str, Dict[str, Any]] = {}
            for f in self.newest():
                for m in f.record["members"]:
                    b = best.get(m["id"])
                    if b is None or (m["done"], len(m["history"])) > (b["done"], len(b["history"])):
                        best[m["id"]] = m
            self._members = best
        return self._members.get(member_id)

    def histories(self, ids) -> Dict[str, History]:
        """Each member's epochs (``ids``: the members' ids) from its newest record, in epoch order and every epoch
        once (a group restored from an older checkpoint may have reported one twice: the last report wins).  The
        records' own ``History`` where it is in order already (a group's usual case)."""
        out = {}
        for member_id in ids:
            m = self.member(member_id)
            if m is None or not len(m["history"]):
                continue
            history = m["history"]
            epochs = history.column("epoch") if history.uniform() else [h["epoch"] for h in history]
            if any(a >= b for a, b in zip(epochs, epochs[1:])):
                by_epoch: Dict[int, Dict[str, Any]] = {}
                for h in history:
                    by_epoch.pop(h["epoch"], None)
                    by_epoch[h["epoch"]] = h
                history = History(sorted(by_epoch.values(), key=lambda h: h["epoch"]))
            out[member_id] = history
        return out

    def done_ids(self) -> set:
        return {m["id"] for f in self.newest() for m in f.record["members"] if m["done"]}

    def settled_ids(self) -> set:
        """The members no later run trains: done, or stopped by the scheduler."""
        return self.done_ids() | set(self.stopped)


def list_records(exp_dir: str, experiment_id: str) -> Listing:
    """Every record under ``exp_dir`` whose checkpoint is whole: one recursive listing, then the records.

    A record cut short (it does not parse: a full disk, a broken upload) is ``broken``: its trial
    continues from an older checkpoint.  Anything that exists but cannot be read (a folder or file
    without permission, a name that is not UTF-8), a record of a newer format, or one of another
    shape is ``RecordError``: whether that trial finished is unknown, so nothing may be trained.
    """
    fs, root = storage.filesystem(exp_dir)
    try:
        files = [i for i in storage.entries(fs, root) if i.is_file]
        sizes = {i.path: i.size for i in files}
        written = [i.mtime_ns or 0 for i in files if i.base_name in (RECORD_FILE, STOPPED_FILE)]
        top = {i.base_name: i.size for i in files if i.path.rsplit("/", 1)[0] == root.rstrip("/")}
    except FileNotFoundError:
        return Listing()
    except (OSError, UnicodeDecodeError) as e:
        what = (
            "holds a file name that is not UTF-8"
            if isinstance(e, UnicodeDecodeError)
            else f"cannot be listed ({first_line(e)})"
        )
        raise RecordError(
            f"{exp_dir} {what}: which trials finished is unknown, so nothing was trained; "
            "make every file of the experiment readable (and its names UTF-8), then run again"
        ) from None
    listing = Listing(newest_write_ns=max(written, default=0), top_files=top)
    # A trial directory's checkpoints, newest (highest index) first: once one says done, the older ones
    # are never needed (nothing continues from them), so a finished trial costs one read, not one per
    # kept checkpoint; an unfinished trial's older checkpoints are read (they are its fallbacks).
    by_dir: Dict[str, List[str]] = {}
    for path in sorted(sizes):
        name = os.path.basename(path)
        if name == STOPPED_FILE:
            _read_stopped(fs, path, experiment_id, listing.stopped)
        elif name == RECORD_FILE:
            by_dir.setdefault(path.rsplit("/", 2)[0], []).append(path)
    for paths in by_dir.values():
        for path in reversed(paths):
            ckpt = path.rsplit("/", 1)[0]
            where = storage.join(exp_dir, ckpt[len(root.rstrip("/")) + 1 :])
            record = _read_json(fs, path)
            if record is CUT_SHORT:  # cut short: an older checkpoint (or epoch 1) continues the trial
                listing.broken.append(where)
                continue
            if not isinstance(record, dict) or not isinstance(record.get("experiment_id"), str):
                # Not a record of any experiment: skipped, its trial would be "not done" and train again.
                raise RecordError(
                    f"{path} is not a trial record this ablate wrote (valid JSON, but "
                    f"{'not an object' if not isinstance(record, dict) else 'without experiment_id'}): "
                    "it was edited or comes from elsewhere; restore or remove that checkpoint "
                    "directory, then run again (nothing was trained)"
                )
            if record["experiment_id"] != experiment_id:
                continue  # another experiment's record (a copied directory): never this one's truth
            _check_shape(record, path)
            for m in record["members"]:
                m["history"] = History(m["history"])
                _check_epochs(m["history"], path)
            found = Found(record, where, sizes.get(f"{ckpt}/{STATE_FILE}") == record["state_bytes"])
            if not found.state_whole and not found.done:
                listing.broken.append(where)
            listing.by_group.setdefault(found.ids, []).append(found)
            if found.done:
                break
    listing.broken.sort()
    # Trials in the order of their first checkpoint's path (as listed), each one's records newest first.
    first = {ids: min(f.checkpoint for f in found) for ids, found in listing.by_group.items()}
    listing.by_group = {
        ids: sorted(listing.by_group[ids], key=lambda f: (f.done, f.epochs, f.record["written"]), reverse=True)
        for ids in sorted(first, key=first.get)
    }
    return listing


CUT_SHORT = object()  # what a JSON file that does not parse holds (``null`` is a value: of another shape)


def _read_json(fs, path: str):
    """A JSON file's value; ``CUT_SHORT`` if it does not parse; ``RecordError`` if it cannot be read at all."""
    try:
        data = storage.read_from(fs, path)
    except OSError as e:
        raise RecordError(
            f"{path} cannot be read ({e.__class__.__name__}: {first_line(e)}): whether its trial "
            "finished is unknown, so nothing was trained; make it readable, then run again"
        ) from None
    try:
        return json.loads(data)
    except ValueError:
        return CUT_SHORT


def _check_shape(record: Dict[str, Any], path: str) -> None:
    """A record of this experiment is of a format this ablate reads, and of its shape; else ``RecordError``."""
    version = record.get("ablate_record")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise RecordError(
            f"{path} was written by a newer ablate (record format {version}; this one reads "
            f"{VERSION}): upgrade ablate to continue this experiment (nothing was trained)"
        )
    members = record.get("members")
    ok = (
        version == VERSION
        and isinstance(members, list)
        and members
        and isinstance(record.get("written"), (int, float))
        and isinstance(record.get("state_bytes"), int)
        and all(
            isinstance(m, dict)
            and isinstance(m.get("id"), str)
            and isinstance(m.get("point"), dict)
            and isinstance(m.get("history"), list)
            and isinstance(m.get("done"), bool)
            and all(isinstance(h, dict) and isinstance(h.get("epoch"), int) for h in m["history"])
            for m in members
        )
    )
    if not ok:
        raise RecordError(
            f"{path} is not a trial record this ablate wrote (format {version!r}, or a member without "
            "id, point, history or done): it was edited or comes from elsewhere; restore or remove "
            "that checkpoint directory, then run again (nothing was trained)"
        )


# The type of each metric of an epoch as the tables read it: numpy's kind of a whole column ("i": int, "f": float,
# "b": bool), and the test of one value (a column of ints and floats is numbers too).
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_METRIC_TYPES = {
    k: ("i", _is_int)
    if k == "epoch"
    else ("b", lambda v: isinstance(v, bool))
    if k == "diverged"
    else ("if", _is_number)
    for k in METRIC_KEYS
}


def _check_epochs(history: History, path: str) -> None:
    """Every epoch holds every metric the tables read, of its type; else ``RecordError`` naming ``path``.

    Checked here, once, where the record is read: a metric missing or of another type would otherwise
    surface later as a traceback in the tables or the report, naming no file.  A uniform history is
    checked by its columns (the types ``History`` derived already), the others epoch by epoch."""
    problem = None
    if not len(history):
        return
    if history.uniform():
        missing = [k for k in METRIC_KEYS if k not in history.keys]
        if missing:
            problem = f"its epochs lack {missing[0]}"
        for k in () if missing else METRIC_KEYS:
            col, (kinds, ok) = history.columns[k], _METRIC_TYPES[k]
            kind = getattr(getattr(col, "dtype", None), "kind", None)
            bad = [v for v in col if not ok(v)][:1] if kind is None else []  # a mixed column: value by value
            if bad or (kind is not None and kind not in kinds):
                v = bad[0] if bad else col[0]
                problem = f"an epoch's {k} is {type(v).__name__} {str(v)[:40]!r}"
                break
    else:
        for h in history:
            k = next((k for k in METRIC_KEYS if k not in h or not _METRIC_TYPES[k][1](h[k])), None)
            if k is not None:
                problem = (
                    f"epoch {h.get('epoch')!r} lacks {k}"
                    if k not in h
                    else f"epoch {h.get('epoch')!r}'s {k} is {type(h[k]).__name__} {str(h[k])[:40]!r}"
                )
                break
    if problem:
        raise RecordError(
            f"{path} is not a trial record this ablate wrote ({problem}; each epoch holds "
            f"{', '.join(METRIC_KEYS)}: numbers, diverged true or false): it was edited or comes "
            "from elsewhere; restore or remove that checkpoint directory, then run again (nothing "
            "was trained)"
        )


def _read_stopped(fs, path: str, experiment_id: str, stopped: Dict[str, int]) -> None:
    note = _read_json(fs, path)  # cut short or of another shape: the trial may continue
    try:
        if note["ablate_stopped"] == VERSION and note["experiment_id"] == experiment_id:
            stopped.update({str(i): int(note["epoch"]) for i in note["members"]})
    except (ValueError, KeyError, TypeError):
        pass


def experiment_ids(exp_dir: str) -> List[str]:
    """The experiment ids the records under ``exp_dir`` name (to repair an identity that lost its own)."""
    fs, root = storage.filesystem(exp_dir)
    try:
        paths = [i.path for i in storage.entries(fs, root) if i.base_name == RECORD_FILE]
    except (OSError, UnicodeDecodeError):
        return []
    ids = set()
    for path in paths:
        try:
            ids.add(str(_read_json(fs, path)["experiment_id"]))
        except (RecordError, KeyError, TypeError):
            continue
    return sorted(ids)
