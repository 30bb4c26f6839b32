"""``python -m ablate.bench --bookkeeping TRIALSxEPOCHS[,...]``: what ablate's own bookkeeping costs at scale.

A synthetic *finished* study of N trials x E epochs is written in the records' exact format through
ablate's own writers (``Study.write_identity``, ``records.write_checkpoint`` with two kept
checkpoints per trial, as a real trial keeps them, and the tables a run writes at its end), so the
real CLI accepts it as finished.  Then the three commands that pay for the bookkeeping before
anything trains are timed as a user runs them, each a fresh process, with its peak memory:
``--resume --dry-run``, ``--resume`` ("nothing to run"), and ``python -m ablate.report`` with the
tables deleted (rebuilt from the records).  No Ray starts in any of them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import yaml

from ablate.bench.hardware import hardware
from ablate.models.registry import list_blocks
from ablate.run.checkpoints import write_checkpoint
from ablate.spec.axes import trial_id
from ablate.spec.config import ExperimentConfig, trial_configs
from ablate.spec.experiment_file import load_experiment
from ablate.storage import HISTORY_FILE, TRIALS_FILE
from ablate.study.records import list_records, make_record
from ablate.study.study import Study
from ablate.study.tables import write_csvs

__all__ = ["synthetic_study", "time_bookkeeping", "grid_args"]

EXPERIMENT_ID = "5e7e1c0ffee5"
LRS = [round(0.01 * (i + 1), 2) for i in range(10)]


def grid_args(trials: int, epochs: int) -> List[str]:
    """The overrides of a grid of ``trials`` points (every block x depth 8 x up to 10 LRs x seeds)."""
    blocks = list_blocks()
    per_block = max(1, trials // len(blocks))  # lrs x seeds: as many LRs (up to 10) as divide it evenly
    lrs = LRS[: max(k for k in range(1, len(LRS) + 1) if per_block % k == 0)]
    seeds = max(1, per_block // len(lrs))
    return [
        f"blocks=[{','.join(blocks)}]",
        "depths=[8]",
        f"lrs=[{','.join(map(str, lrs))}]",
        f"seeds=[{','.join(map(str, range(seeds)))}]",
        f"epochs={epochs}",
        "wandb.mode=disabled",
    ]


def _epoch(rng: random.Random, e: int, epochs: int, node: str) -> Dict:
    acc = min(1.0, 0.1 + 0.9 * e / epochs * rng.uniform(0.7, 1.0))
    loss = 2.3 * (1 - acc) + 0.01
    return {
        "epoch": e,
        "train_loss": loss,
        "train_acc": acc,
        "val_loss": loss * 1.1,
        "val_acc": acc * 0.98,
        "lr": 0.1,
        "epoch_seconds": rng.uniform(0.5, 1.5),
        "images_per_second": rng.uniform(900, 1100),
        "diverged": False,
        "node": node,
        "time": 1.7e9 + e,
    }


def synthetic_study(storage: str, name: str, trials: int, epochs: int, seed: int = 0) -> str:
    """Write a finished study of about ``trials`` points x ``epochs`` under ``storage``; its directory."""

    cfg = load_experiment(None, [*grid_args(trials, epochs), f"storage_path={storage}", f"name={name}"])
    study = Study(cfg, resume=False)
    study.experiment_id = EXPERIMENT_ID
    os.makedirs(study.dir, exist_ok=True)
    study.write_identity()
    rng = random.Random(seed)
    part = os.path.join(study.dir, "run-20261202-000000")
    for k, t in enumerate(trial_configs(cfg)):
        member = {"id": trial_id(EXPERIMENT_ID, t.point), "point": dict(t.point)}
        history = [_epoch(rng, e, epochs, f"node{k % 4:02d}") for e in range(1, epochs + 1)]
        for c, n in enumerate((epochs - 1, epochs)):  # two kept checkpoints, as a trial keeps them
            d = os.path.join(part, f"{t.name}_{k:05d}", f"checkpoint_{c:06d}")
            os.makedirs(d)
            write_checkpoint(
                d, {"epoch": n}, make_record(EXPERIMENT_ID, t.name, [member], [history[:n]], [n == epochs])
            )
    write_csvs(study.dir, *study.tables(set(), interrupted=False))  # as the run wrote them at its end
    return study.dir


# Run the command from a small process: a child forked from this (large) one would start with this one's
# peak memory, which Linux keeps across exec (``ru_maxrss``); the launcher's own child starts small.
_LAUNCHER = """
import json, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
out, err = p.communicate()
wall = time.perf_counter() - t0
import resource
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the command's: the launcher's only child
print(json.dumps({"code": p.returncode, "s": wall, "rss_kb": rss, "out": out[-300:], "err": err[-500:]}))
"""


def _timed(cmd: List[str], cwd: str, baseline: Optional[str] = None, ok=(0,)) -> Dict:
    """Wall seconds and peak RSS (MB) of one fresh process (its exit code one of ``ok``); with ``baseline`` (a
    checkout of another ablate), that code runs the command instead."""
    env = {**os.environ, "PYTHONPATH": baseline} if baseline else None
    p = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], cwd=cwd, capture_output=True, text=True, env=env)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    if r["code"] not in ok:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited {r['code']}: {(r['err'] or r['out']).strip()[-500:]}")
    return {"s": round(r["s"], 2), "peak_rss_mb": round(r["rss_kb"] / 1024, 1), "last_line": r["out"].strip()[-160:]}


def time_bookkeeping(trials: int, epochs: int, root: str, baseline: Optional[str] = None) -> Dict:
    """Build the synthetic study in ``root`` and time the three commands on it (and, with ``baseline``,
    the same commands by that checkout's code, side by side on the same study: ``baseline_*``)."""
    t0 = time.perf_counter()
    exp = synthetic_study(os.path.join(root, "s"), "book", trials, epochs)
    built = time.perf_counter() - t0
    py = [sys.executable, "-m"]
    grid = [*py, "ablate.grid", *grid_args(trials, epochs), f"storage_path={root}/s", "name=book", "--resume"]
    rec = {
        "what": "bookkeeping",
        "trials": len(list_records(exp, EXPERIMENT_ID).done_ids()),
        "epochs": epochs,
        "build_s": round(built, 1),
    }
    for code in [None, baseline] if baseline else [None]:
        prefix = "baseline_" if code else ""
        if code:
            _fit_identity(exp, code)
        rec[prefix + "dry_run"] = _timed([*grid, "--dry-run"], root, code)
        rec[prefix + "resume_finished"] = _timed(grid, root, code)
        for name in (HISTORY_FILE, TRIALS_FILE):
            os.remove(os.path.join(exp, name))
        rec[prefix + "report_rebuild"] = _timed([*py, "ablate.report", exp], root, code)
    if not baseline:  # ``ablate.compare`` of two finished studies of this size (another draw of the same grid)
        other = synthetic_study(os.path.join(root, "s2"), "book", trials, epochs, seed=1)
        rec["compare_finished"] = _timed(
            [*py, "ablate.compare", exp, other, "--out", os.path.join(root, "c")], root, ok=(0, 1, 3)
        )
    return rec


def _fit_identity(exp: str, baseline: str) -> None:
    """An older ablate refuses settings it does not know: drop from the identity those it lacks whose value
    is this version's default (they mean nothing else there)."""
    # The baseline may predate the subpackages (ablate.config) or not (ablate.spec.config).
    probe = (
        "try:\n    from ablate.spec.config import ExperimentConfig as C\nexcept ImportError:\n"
        "    from ablate.config import ExperimentConfig as C\nprint(' '.join(C.model_fields))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": baseline}
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"the baseline at {baseline} did not say its settings: {out.stderr.strip()[-500:]}")
    known = set(out.stdout.split())
    path = os.path.join(exp, "ablate_experiment.yaml")
    with open(path) as f:
        saved = yaml.safe_load(f)
    defaults = {}
    for k, field in ExperimentConfig.model_fields.items():
        d = field.get_default(call_default_factory=True)
        defaults[k] = d.model_dump() if hasattr(d, "model_dump") else d
    kept = {k: v for k, v in saved.items() if k in known or k not in defaults or v != defaults[k]}
    with open(path, "w") as f:
        yaml.safe_dump(kept, f, sort_keys=False)


def main_bookkeeping(sizes: str, out=None, baseline: Optional[str] = None) -> List[Dict]:
    """``sizes``: ``NxE[,NxE...]``; each is built in a fresh temporary directory, timed, removed."""
    recs = []
    for size in sizes.split(","):
        n, e = (int(x) for x in size.lower().split("x"))
        root = tempfile.mkdtemp(prefix="ablate-book-")
        try:
            rec = {
                **time_bookkeeping(n, e, root, baseline),
                "hardware": hardware(),
                "command": f"python -m ablate.bench --bookkeeping {sizes}"
                + (f" --baseline-src {baseline}" if baseline else ""),
            }
        finally:
            shutil.rmtree(root, ignore_errors=True)
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()
        recs.append(rec)
    return recs
