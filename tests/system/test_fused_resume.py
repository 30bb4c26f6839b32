"""Fused trials (fuse_trials > 1): each member is still its own trial, in numbers and in files."""

import pandas as pd
import pytest

from ablate.train.data import load_dataset

from helpers.blocks import kill_trial_midrun
from helpers.cli import DEFAULT, ONE_AT_A_TIME, ran_ok, run_cli

DIGITS = load_dataset("digits")

# "A couple of test images": fp32 rounding alone (grouped convolutions sum in another order) moves
# a digits run's accuracy after a few epochs by as much as 1 or 2 thread counts do: 2-3 images of 359.
COUPLE = 3.01 / len(DIGITS.test_y)


@pytest.mark.slow
def test_killed_fused_trial_with_a_diverging_member_resumes_every_member_and_keeps_the_unfused_shape(
    tmp_path, mini_grid
):
    args = [
        DEFAULT,
        "blocks=[held]",
        "block_modules=[held_block]",
        "depths=[20]",
        "lrs=[0.1,0.05,1000]",
        "seeds=[0]",
        "epochs=5",
        "fuse_trials=3",
        ONE_AT_A_TIME,
        "wandb.mode=offline",
        "checkpoint_period_s=0",
        f"storage_path={tmp_path}",
        "name=fu",
    ]
    exp = tmp_path / "fu"
    kill_trial_midrun(args, exp, "held-d20-lr0.1-s0+2", tmp_path)  # the fused trial's process, mid-epoch
    hist = pd.read_csv(exp / "history.csv", dtype={"trial_id": str})
    trials = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})
    ok, blown = trials[trials["lr"] < 1000], trials[trials["lr"] == 1000]
    assert sorted(ok["lr"]) == [0.05, 0.1] and (ok["status"] == "TERMINATED").all() and (ok["epochs_done"] == 5).all()
    assert blown["status"].item() == "DIVERGED" and blown["epochs_done"].item() < 5  # frozen, the others went on
    assert trials["trial_id"].nunique() == 3, "a stable id per member"
    epochs = hist.groupby("lr")["epoch"].apply(list)
    assert epochs[0.1] == epochs[0.05] == [1, 2, 3, 4, 5], "each epoch once"
    assert epochs[1000.0] == list(range(1, blown["epochs_done"].item() + 1))
    unfused_h, unfused_t = (pd.read_csv(mini_grid["dir"] / f) for f in ("history.csv", "trials.csv"))
    assert list(trials.columns) == list(unfused_t.columns)
    assert set(unfused_h.columns) - {"scale_stage1", "scale_stage2", "scale_stage3"} == set(hist.columns)
    from helpers.wandb_reader import wandb_files

    runs = wandb_files(exp)
    assert set(runs) == set(trials["trial_id"]), "a W&B run per member"
    # The fused experiment grows by a seed: the new points are fused the same way, the old kept.
    p = run_cli([*args, "seeds=[0,1]", "--resume", "--no-report"], cwd=tmp_path)
    ran_ok(p)
    grown = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})
    assert (
        len(grown) == 6
        and (grown["status"] == grown["lr"].map({0.1: "TERMINATED", 0.05: "TERMINATED", 1000.0: "DIVERGED"})).all()
    )
    assert set(trials["trial_id"]) <= set(grown["trial_id"]) and grown["trial_id"].nunique() == 6
    # Every file Tune wrote at the experiment level deleted (its state, tuner.pkl, the search state), every
    # result.json cut short, the tables lost: the records alone say every member finished; nothing runs
    # again, the tables come back the same.
    before = pd.read_csv(exp / "history.csv", dtype={"trial_id": str})
    for f in exp.glob("run-*/*"):
        if f.is_file():
            f.unlink()
    for f in exp.glob("run-*/*/result.json"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    (exp / "history.csv").unlink()
    (exp / "trials.csv").unlink()
    runs = sorted(exp.glob("run-*"))
    p = run_cli([*args, "seeds=[0,1]", "--resume", "--no-report"], cwd=tmp_path)
    ran_ok(p)
    assert "nothing to run" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(exp.glob("run-*")) == runs, "nothing ran again"
    pd.testing.assert_frame_equal(pd.read_csv(exp / "trials.csv", dtype={"trial_id": str}), grown)
    key = ["trial_id", "epoch"]
    pd.testing.assert_frame_equal(
        pd.read_csv(exp / "history.csv", dtype={"trial_id": str}).sort_values(key).reset_index(drop=True),
        before.sort_values(key).reset_index(drop=True),
    )
