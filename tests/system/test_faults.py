"""Faults on a real local Ray run: a trial SIGKILLed mid-epoch, a diverging trial, W&B down
with a (fake) key that must never land in any file."""

import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from helpers.blocks import kill_trial_midrun
from helpers.cli import DEFAULT, ONE_AT_A_TIME, clean_env, ran_ok, run_cli
from helpers.wandb_reader import merged_history, wandb_files

pytestmark = pytest.mark.slow  # the real CLI in a subprocess, real Ray


def test_killed_trial_restarts_from_checkpoint_and_diverging_trial_is_marked(tmp_path):
    args = [
        DEFAULT,
        "blocks=[held]",
        "block_modules=[held_block]",
        "depths=[20]",
        "lrs=[0.1,40]",
        "seeds=[0]",
        ONE_AT_A_TIME,
        "epochs=6",
        "schedule=constant",
        "wandb.mode=offline",
        "max_failures=2",
        "checkpoint_period_s=0",
        f"storage_path={tmp_path}",
        "name=f",
    ]
    exp = tmp_path / "f"
    kill_trial_midrun(args, exp, "held-d20-lr0.1-s0", tmp_path)  # held mid-run, killed, let go

    hist = pd.read_csv(exp / "history.csv", dtype={"trial_id": str})
    trials = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})
    killed = trials[trials["lr"] == 0.1].iloc[0]
    assert killed["status"] == "TERMINATED" and killed["epochs_done"] == 6
    assert hist[hist["trial_id"] == killed["trial_id"]]["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    # W&B: the same run id continued; every step exactly once, in order, across its files.
    files = wandb_files(exp)[killed["trial_id"]]
    assert len(files) == 2, files
    assert [s for s, _ in merged_history(files)] == [1, 2, 3, 4, 5, 6]

    div = trials[trials["lr"] == 40].iloc[0]
    assert div["status"] == "DIVERGED" and bool(div["diverged"]) and div["epochs_done"] < 6
    assert "Diverged trials" in (exp / "report.md").read_text()
    assert "held d20 lr 40 seed 0" in (exp / "report.md").read_text()


def test_wandb_down_with_a_key_leaves_grid_green_and_key_nowhere(tmp_path):
    fake = "fake0secret0key0" + "9" * 24
    # Ray's own files in a directory of this run's (short: Ray's socket paths must stay under 108 bytes).
    ray_tmp = Path(tempfile.mkdtemp(prefix="abl-", dir="/tmp"))
    env = clean_env(WANDB_API_KEY=fake, WANDB_BASE_URL="http://127.0.0.1:9", RAY_TMPDIR=str(ray_tmp))
    args = [
        DEFAULT,
        "blocks=[skipinit]",
        "depths=[8]",
        "lrs=[0.1]",
        "seeds=[0]",
        "epochs=2",
        "wandb.mode=online",
        "wandb.init_timeout=5",
        f"storage_path={tmp_path}",
        "name=k",
    ]
    p = run_cli(args, env=env, cwd=tmp_path)
    ran_ok(p)
    exp = tmp_path / "k"
    assert len(pd.read_csv(exp / "history.csv")) == 2
    assert "falling back to offline" in p.stdout + p.stderr
    assert len(wandb_files(exp)) == 1  # the offline fallback kept the run
    assert fake not in p.stdout + p.stderr
    written = [f for f in tmp_path.rglob("*") if f.is_file()]
    ray_logs = [f for f in (ray_tmp / "ray" / "session_latest" / "logs").rglob("*") if f.is_file()]
    assert len(written) > 10 and len(ray_logs) > 5
    for f in written + ray_logs:
        assert fake.encode() not in f.read_bytes(), f"W&B key leaked into {f}"
    shutil.rmtree(ray_tmp, ignore_errors=True)
