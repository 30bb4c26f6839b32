"""An experiment on record, read as the report and ``ablate.compare`` read it: its identity and its tables,
mirrored from a URI to this machine, and rebuilt from the trials' records where they are lost, cut short, or
being trained by a run now (no torch, no Ray)."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import pandas as pd

from ablate import storage
from ablate.errors import RecordError, UsageError, first_line
from ablate.storage import EXPERIMENT_FILE, HISTORY_FILE, TRIALS_FILE, ExperimentLock
from ablate.study.identity import saved_identity
from ablate.study.study import Study
from ablate.study.tables import read_csvs, write_csvs

__all__ = ["tables_from_records", "experiment_tables", "read_meta", "read_experiment"]


def tables_from_records(exp_dir: str) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """An experiment's history.csv and trials.csv rebuilt from its identity and its trials' records alone
    (``python -m ablate.report`` when they are lost or cut short); ``ValueError`` if it has neither."""
    try:
        study = Study.open(exp_dir)
    except UsageError as e:
        raise ValueError(str(e).replace("--resume: ", "")) from None
    # A run holding the experiment now is training its unfinished trials: RUNNING, not INTERRUPTED.
    running = ExperimentLock.holder(exp_dir) is not None
    history, trials = study.tables(set(), interrupted=not running, running=running)
    if history.empty:
        raise ValueError("no trial has a record yet")
    return history, trials


def experiment_tables(where: str) -> Tuple[str, Optional[str]]:
    """An experiment's tables, read as the report reads them: local, or from a URI into its local mirror; lost,
    cut short or being trained, rebuilt from the trials' records (also in the bucket).  (The local directory
    that holds them and the identity file, the notice to print where they were rebuilt, else None.)"""
    uri = storage.is_uri(where)
    out = storage.local_mirror(where.rstrip("/")) if uri else where  # a bucket's tables are read and written here
    if uri:
        try:
            os.makedirs(out, exist_ok=True)
            for name in (HISTORY_FILE, TRIALS_FILE, EXPERIMENT_FILE):
                try:
                    text = storage.read_text(storage.join(where, name))
                except FileNotFoundError:
                    continue
                with open(os.path.join(out, name), "w") as f:
                    f.write(text)
        except Exception as e:  # noqa: BLE001 -- pyarrow: an unknown scheme, no credentials
            raise UsageError(f"cannot read {where} ({e.__class__.__name__}: {first_line(e)})") from None
    holder = ExperimentLock.holder(where)
    try:
        read_csvs(out)
        if holder is not None:  # the tables on disk are the last run's: the records are newer
            raise ValueError(f"a run is training {where} now")
        return out, None
    except (OSError, ValueError) as e:  # lost, cut short or foreign: the trials' records can rebuild them
        problem = str(e) if isinstance(e, ValueError) else f"{where} has no {os.path.basename(e.filename or '')}"
        try:
            write_csvs(out, *tables_from_records(where))
        except RecordError:
            raise  # a record it cannot read: its own line, naming the file
        except ValueError as e2:
            raise UsageError(
                f"{problem}; and no trial records to rebuild it from ({e2}); give the directory that "
                "python -m ablate.grid printed last"
            ) from None
        if uri:
            storage.upload(out, where, (HISTORY_FILE, TRIALS_FILE))
        return out, (
            f"{problem}; history.csv and trials.csv rebuilt from the trials' records"
            + (
                f" (interim: trials still training are RUNNING; pid {holder.get('pid')} on {holder.get('host')})"
                if holder is not None
                else ""
            )
        )


def read_meta(exp_dir: str) -> Dict[str, Any]:
    """The experiment's settings as ``--resume`` reads them (one line, exit 2, for a file cut short or edited);
    {} where there is none (tables copied without it)."""
    if not os.path.exists(os.path.join(exp_dir, EXPERIMENT_FILE)):
        return {}
    return saved_identity(exp_dir, command="", outcome="no report was written")


def read_experiment(exp_dir: str) -> Tuple[pd.DataFrame, pd.DataFrame, Dict[str, Any]]:
    """(history, trials, meta) of a local experiment directory whose tables are whole (``experiment_tables``)."""
    history, trials = read_csvs(exp_dir)
    return history, trials, read_meta(exp_dir)
