"""Read a .wandb file in the tests: its records come from ``ablate.run.tracking.read_records``
(wandb 0.31 ships no Python reader); these helpers pick the history, config and run records."""

import json
from pathlib import Path

from ablate.run.wandb_log import read_records as _records


def read_records(path):
    with open(path, "rb") as f:
        return _records(f.read())


def history(path):
    """[(step, {key: value})] from a .wandb file's history records."""
    rows = []
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            rows.append((rec.history.step.num, items))
    return rows


def config(path):
    cfg = {}
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "config":
            for i in rec.config.update:
                cfg[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return cfg


def run_info(path):
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "run":
            return rec.run
    return None


def wandb_files(exp_dir: Path):
    """{run id: [.wandb files, oldest first]} (a resumed run has one file per process).

    Each trial's offline run lives in the trial's own directory of the experiment's storage, in
    the Tune run (``run-*/``) that trained it; a run resumed by a later Tune run has files in both.
    """
    runs = {}
    for f in sorted(Path(exp_dir).glob("**/wandb/offline-run-*/run-*.wandb"), key=lambda f: f.parent.name):
        runs.setdefault(f.stem[len("run-") :], []).append(f)
    return runs


def merged_history(files):
    rows = []
    for f in files:
        rows += history(str(f))
    return rows
