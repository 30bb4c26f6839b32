"""The bookkeeping at scale, without Ray: tables rebuilt from a study's records are byte for byte the ones
ablate wrote (golden files written by the code before the linear rebuild), for every kind of trial a
study holds; the rebuild reads each trial's newest whole record once; the synthetic study of the
benchmark is one the CLI takes as finished."""

import math
import os
from pathlib import Path

import torch  # noqa: F401 -- the records' state.pt

from ablate.run.checkpoints import write_checkpoint
from ablate.spec.axes import trial_id
from ablate.spec.config import trial_configs
from ablate.spec.experiment_file import load_experiment
from ablate.storage import HISTORY_FILE, TRIALS_FILE
from ablate.study.reader import tables_from_records
from ablate.study.records import make_record, write_stopped
from ablate.study.study import Study

from helpers.cli import FIXTURES

GOLDEN = FIXTURES / "bookkeeping"

EXP_ID = "b00cb00cb00c"


def _epoch(e, acc, loss=None, **extra):
    return {
        "epoch": e,
        "train_loss": 2.0 - acc if loss is None else loss,
        "train_acc": acc,
        "val_loss": 2.1 - acc,
        "val_acc": acc,
        "lr": 0.1 / e,
        "epoch_seconds": 0.25 * e + 0.01,
        "images_per_second": 1000.0 + e,
        "diverged": False,
        "node": f"n{e % 2}",
        "time": 1.7e9 + e,
        **extra,
    }


def _ckpt(exp, part, trial_dir, index, points, histories, done, stamp):
    d = exp / part / trial_dir / f"checkpoint_{index:06d}"
    d.mkdir(parents=True)
    members = [{"id": trial_id(EXP_ID, p), "point": p} for p in points]
    record = make_record(EXP_ID, trial_dir, members, histories, done)
    record["written"] = stamp  # deterministic order of a trial's records
    write_checkpoint(str(d), {"epoch": max(len(h) for h in histories)}, record)
    return d


def rich_study(root):
    """Every kind of trial a study holds, written with ablate's own writers."""
    cfg = load_experiment(
        None,
        [
            "blocks=[baseline,identity_scale,skipinit]",
            "depths=[8,14]",
            "lrs=[0.1,0.2]",
            "seeds=[0,1]",
            "epochs=3",
            f"storage_path={root}",
            "name=rich",
            "wandb.mode=disabled",
        ],
    )
    study = Study(cfg, resume=False)
    study.experiment_id = EXP_ID
    os.makedirs(study.dir, exist_ok=True)
    study.write_identity()
    exp = Path(study.dir)
    points = [t.point for t in trial_configs(cfg)]
    stamp = 1000.0
    for k, p in enumerate(points):
        stamp += 1
        acc = [0.3 + 0.1 * k % 0.5 + 0.1 * e for e in range(1, 4)]
        extra = {"scale_stage1": 1.0 - 0.01 * k} if p["block"] == "identity_scale" else {}
        hist = [_epoch(e, a, **extra) for e, a in zip(range(1, 4), acc)]
        name = f"t{k:02d}"
        if k == 0:  # no record: never started
            continue
        if k == 1:  # diverged in epoch 2: NaN loss, done early
            hist = [hist[0], {**_epoch(2, 0.1), "train_loss": math.nan, "diverged": True}]
            _ckpt(exp, "run-1", name, 0, [p], [hist], [True], stamp)
        elif k == 2:  # unfinished: two checkpoints, the newest cut short (the state's size)
            _ckpt(exp, "run-1", name, 0, [p], [hist[:1]], [False], stamp)
            d = _ckpt(exp, "run-1", name, 1, [p], [hist[:2]], [False], stamp + 0.5)
            (d / "state.pt").write_bytes(b"cut")
        elif k == 3:  # stopped early by the scheduler after epoch 1
            _ckpt(exp, "run-1", name, 0, [p], [hist[:1]], [False], stamp)
            write_stopped(str(exp / "run-1" / name), EXP_ID, name, [trial_id(EXP_ID, p)], 1)
        elif k == 4:  # interrupted in run-1, continued and finished in run-2 (an epoch reported twice)
            _ckpt(exp, "run-1", name, 0, [p], [hist[:2]], [False], stamp)
            _ckpt(exp, "run-2", name, 0, [p], [[hist[0], {**hist[1], "val_acc": 0.77}, hist[2]]], [True], stamp + 99)
        elif k in (5, 6):  # members of one fused trial
            if k == 5:
                q = points[6]
                h6 = [_epoch(e, 0.5 + 0.05 * e) for e in range(1, 4)]
                _ckpt(exp, "run-1", "fused", 0, [p, q], [hist[:2], h6[:2]], [False, False], stamp)
                _ckpt(exp, "run-1", "fused", 1, [p, q], [hist, h6], [True, True], stamp + 0.5)
        else:
            _ckpt(exp, "run-1", name, 0, [p], [hist[:2]], [False], stamp)
            _ckpt(exp, "run-1", name, 1, [p], [hist], [True], stamp + 0.5)
    return exp


def test_tables_rebuilt_from_the_records_are_byte_for_byte_the_golden_ones(tmp_path):
    exp = rich_study(tmp_path)
    history, trials = tables_from_records(str(exp))
    got = {HISTORY_FILE: history.to_csv(index=False), TRIALS_FILE: trials.to_csv(index=False)}
    if os.environ.get("ABLATE_WRITE_GOLDEN"):  # once, by the code before the linear rebuild
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in got.items():
            (GOLDEN / name).write_text(text)
    for name, text in got.items():
        assert text == (GOLDEN / name).read_text(), name
    statuses = dict(zip(trials["trial_id"], trials["status"]))
    assert sorted(set(statuses.values())) == ["DIVERGED", "INTERRUPTED", "STOPPED_EARLY", "TERMINATED"]
