"""The study (``ablate.study``): the records are the truth.  What runs next is planned from them alone
(unit), and with every file Tune wrote at the experiment level deleted, --resume trains only what is not
done, on the real CLI and real Ray; plain and fused trials; a growth (more seeds) trains only the new
points and leaves every file on record as it was."""

import hashlib
import os

import pandas as pd
import pytest

from helpers.blocks import held_block
from helpers.cli import DEFAULT, kill_group, one_error_line, ran_ok, run_cli, start_cli, wait_for
from helpers.records import trial_results
from helpers.wandb_reader import merged_history, wandb_files


def _digests(paths):
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for d in paths for f in d.rglob("*") if f.is_file()}


def _delete_tunes_experiment_files(exp):
    """Every file Tune wrote at the experiment level: its state, tuner.pkl, the search state, markers."""
    gone = {f for f in [*exp.glob("run-*/*"), *exp.glob("run-*/.*")] if f.is_file()}
    for f in gone:
        f.unlink()
    assert any("tuner.pkl" in f.name for f in gone) and any("experiment_state" in f.name for f in gone)


@pytest.mark.slow
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_resume_with_tunes_files_deleted_trains_only_what_is_not_done(tmp_path, fused):
    exp = tmp_path / "s" / "rec"
    gate, held = held_block(tmp_path, exp, "held-d8-lr0.1-s0" + ("+1" if fused else ""))
    args = [
        DEFAULT,
        "blocks=[baseline,held]",
        "block_modules=[held_block]",
        "depths=[8]",
        "seeds=[0]",
        "epochs=4",
        "lrs=[0.1,0.05]" if fused else "lrs=[0.1]",
        f"fuse_trials={2 if fused else 1}",
        "max_concurrent_trials=1",
        "checkpoint_period_s=0",
        "wandb.mode=offline",
        f"storage_path={tmp_path / 's'}",
        "name=rec",
        "--no-report",
    ]
    proc = start_cli(args, cwd=tmp_path, log=open(tmp_path / "first.log", "w"))
    try:
        wait_for(held.exists, 300, "the held trial, with a checkpoint, after the baseline finished")
    finally:
        kill_group(proc)  # the driver dies (SIGKILL, with its local Ray) at that known point
    gate.unlink()
    done_dirs = [d for d in exp.glob("run-*/baseline-*") if d.is_dir()]
    assert len(done_dirs) == 1 and list(done_dirs[0].glob("checkpoint_*/ablate_record.json"))
    before = _digests(done_dirs)  # the finished trial's records, checkpoint and W&B run
    _delete_tunes_experiment_files(exp)

    p = run_cli([*args, "--resume"], cwd=tmp_path)
    ran_ok(p)
    assert _digests(done_dirs) == before, "the finished trial's files are byte-for-byte unchanged"
    second = sorted(exp.glob("run-*"))[-1]
    assert [d.name.split("-")[0] for d in second.iterdir() if d.is_dir()] == ["held"], "only the unfinished trial ran"
    (rows,) = [r for k, r in trial_results(exp).items() if k.startswith(second.name)]
    assert rows[0]["epoch"] == 2, "it continued from its checkpoint (epoch 1 on record), not from scratch"
    hist = pd.read_csv(exp / "history.csv", dtype={"trial_id": str})
    trials = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == (4 if fused else 2) and (trials["status"] == "TERMINATED").all()
    assert (hist.groupby("trial_id")["epoch"].apply(list) == [[1, 2, 3, 4]] * len(trials)).all(), "each epoch once"
    runs = wandb_files(exp)
    assert sorted(runs) == sorted(trials["trial_id"]), "one W&B run per point, across both Tune runs"
    for files in runs.values():
        assert [s for s, _ in merged_history(files)] == [1, 2, 3, 4]

    if fused:
        # A fused experiment's growth: tests/system/test_fused_resume.py (grown, Tune's files deleted, nothing reruns).
        return

    # Grown by a seed, then Tune's files deleted again (and the tables): nothing is trained twice.
    p = run_cli([*args, "seeds=[0,1]", "--resume", "--dry-run"], cwd=tmp_path)
    ran_ok(p)
    assert "seeds +[1]: 2 new trials beside the 2 it holds" in p.stdout, p.stdout + p.stderr
    p = run_cli([*args, "seeds=[1]", "--resume"], cwd=tmp_path)  # a value removed: another experiment
    one_error_line(p, "differs in: seeds")
    done_dirs = [d for d in exp.glob("run-*/*") if d.is_dir()]
    before = _digests(done_dirs)
    p = run_cli([*args, "seeds=[0,1]", "--resume"], cwd=tmp_path)
    ran_ok(p)
    assert "growing" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    assert _digests(done_dirs) == before, "the trials on record are byte-for-byte unchanged"
    third = sorted(exp.glob("run-*"))[-1]
    assert third.name != second.name and all("-s1_" in d.name for d in third.iterdir() if d.is_dir())
    grown = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})
    assert len(grown) == 2 * len(trials) and set(trials["trial_id"]) < set(grown["trial_id"])
    assert sorted(wandb_files(exp)) == sorted(grown["trial_id"]), "a W&B run per point, new ones beside the old"
    _delete_tunes_experiment_files(exp)
    os.remove(exp / "history.csv")
    p = run_cli([*args, "seeds=[0,1]", "--resume"], cwd=tmp_path)
    ran_ok(p)
    assert "nothing to run" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    hist = pd.read_csv(exp / "history.csv", dtype={"trial_id": str})  # rebuilt from the records
    assert (hist.groupby("trial_id")["epoch"].apply(list) == [[1, 2, 3, 4]] * len(grown)).all()
