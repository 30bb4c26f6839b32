"""The grid CLI through real Ray Tune on CPU: trials, metrics, CSVs, table, dry-run, resume."""

import json

import pandas as pd
import pytest

from ablate.spec.config import trial_configs
from ablate.spec.experiment_file import load_experiment
from ablate.storage import STOPPED_FILE
from ablate.train.data import load_dataset

from helpers.cli import DEFAULT, MINI, one_error_line, ran_ok, run_cli


@pytest.mark.slow
def test_mini_grid_runs_every_trial_and_writes_csvs(mini_grid):
    proc, exp = mini_grid["proc"], mini_grid["dir"]
    ran_ok(proc)
    hist = pd.read_csv(exp / "history.csv")
    trials = pd.read_csv(exp / "trials.csv")
    assert len(trials) == 4 and set(trials["status"]) == {"TERMINATED"}
    assert sorted(trials["block"].unique()) == ["baseline", "identity_scale"]
    # every trial has every epoch exactly once, with every metric
    assert hist.groupby(["block", "seed"])["epoch"].apply(list).tolist() == [[1, 2, 3]] * 4
    for col in [
        "block",
        "depth",
        "lr",
        "seed",
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "epoch_lr",
        "epoch_seconds",
        "images_per_second",
        "diverged",
        "scale_stage1",
    ]:
        assert col in hist.columns, col
    assert hist["val_acc"].between(0, 1).all()
    # trials.csv agrees with history.csv
    last = hist.sort_values("epoch").groupby(["block", "seed"]).last()
    for r in trials.itertuples():
        assert r.final_val_acc == pytest.approx(last.loc[(r.block, r.seed), "val_acc"])
        assert r.epochs_done == 3


@pytest.mark.slow
def test_mini_grid_prints_table_and_names_directory_last(mini_grid):
    out = mini_grid["proc"].stdout
    assert "Ablation table" in out and "| identity_scale | 8 |" in out
    assert out.strip().splitlines()[-1] == f"results: {mini_grid['dir']}"


@pytest.mark.slow
def test_mini_grid_shows_a_progress_line_not_a_log(mini_grid):
    out = mini_grid["proc"].stdout + mini_grid["proc"].stderr
    lines = out.splitlines()
    # Not a terminal: a plain progress line (once a minute, and at the end), no status table.
    assert any(line.startswith("trials 4/4 done, 0 running, 0 pending, 0 diverged | ") for line in lines), out
    assert "Trial name" not in out and "== Status ==" not in out
    assert len(lines) <= 40, f"{len(lines)} lines:\n{out}"
    noisy = [line for line in lines if "warn" in line.lower() or "deprecat" in line.lower()]
    assert not noisy, noisy  # W&B's deprecation, Tune's snapshot warning, Ray's token notice: causes fixed
    assert (mini_grid["dir"] / "ray.log").stat().st_size > 0 and f"Ray's log: {mini_grid['dir'] / 'ray.log'}" in out


@pytest.mark.slow
def test_dry_run_prints_plan_without_ray(tmp_path):
    p = run_cli([DEFAULT, "epochs=3", f"storage_path={tmp_path}", "--dry-run"], cwd=tmp_path)
    ran_ok(p)
    cfg = load_experiment(DEFAULT, ["epochs=3"])
    n = len(trial_configs(cfg))
    assert f"{n} trials" in p.stdout
    assert "resources per group" in p.stdout and "concurrent groups" in p.stdout
    assert f"{n * 3 * len(load_dataset('digits').train_x):,} training images" in p.stdout
    assert not any(tmp_path.iterdir()), "dry-run must not write anything"
    assert "Started a local Ray instance" not in p.stdout + p.stderr


@pytest.mark.slow
def test_dry_run_cifar_gives_gpu_hours(tmp_path):
    p = run_cli([str(DEFAULT).replace("default", "cifar10"), "--dry-run"], cwd=tmp_path)
    ran_ok(p)
    assert "GPU-hours" in p.stdout and "8 blocks x 5 depths x 3 lrs x 3 seeds" in p.stdout
    assert "on H100 (measured there" in p.stdout  # names the GPU it was measured on
    p = run_cli([str(DEFAULT).replace("default", "cifar10"), "--dry-run", "--gpu", "A10G"], cwd=tmp_path)
    ran_ok(p)
    line = next(line for line in p.stdout.splitlines() if "GPU-hours" in line)
    assert "on A10G, an ESTIMATE" in line and "scaled by peak FP32 throughput" in line


@pytest.mark.slow
def test_resume_refuses_a_different_experiment_and_an_existing_dir(mini_grid):
    storage = mini_grid["storage"]
    p = run_cli([DEFAULT, *MINI, f"storage_path={storage}", "name=mini"], cwd=storage)
    one_error_line(p, "already holds an experiment", "--resume")
    p = run_cli([DEFAULT, *MINI, "epochs=9", f"storage_path={storage}", "name=mini", "--resume"], cwd=storage)
    one_error_line(p, "different experiment", "epochs")
    assert "Traceback" not in p.stderr
    assert (mini_grid["dir"] / "history.csv").exists()  # nothing already written is lost


@pytest.mark.slow
def test_asha_stops_weak_trials_early(tmp_path):
    # The good LR first: trials start in grid order, and ASHA stops a trial at a rung only against
    # results already there (the weak ones start once the strong ones have reached the rungs).
    args = [
        DEFAULT,
        "blocks=[baseline]",
        "depths=[8]",
        "lrs=[0.1,0.005]",
        "seeds=[0,1]",
        "epochs=6",
        "scheduler=asha",
        "asha_grace_period=2",
        "asha_reduction_factor=2",
        "wandb.mode=disabled",
        f"storage_path={tmp_path}",
        "name=a",
        "--no-report",
    ]
    p = run_cli(args, cwd=tmp_path)
    ran_ok(p)
    exp = tmp_path / "a"
    trials = pd.read_csv(exp / "trials.csv")
    assert (trials["status"] == "STOPPED_EARLY").any() and (trials["epochs_done"] == 6).any()
    stopped = trials[trials["status"] == "STOPPED_EARLY"]
    assert (stopped["epochs_done"] < 6).all()
    # The scheduler's decision is on record beside the trial: a --resume trains no stopped trial
    # again, and tables rebuilt from the records alone still say STOPPED_EARLY (not INTERRUPTED).
    # (A trial whose stop reached it only after its last epoch is done all the same: a note, and TERMINATED.)
    noted = {i for f in exp.rglob(STOPPED_FILE) for i in json.loads(f.read_text())["members"]}
    assert set(stopped["trial_id"]) <= noted
    before = {f: (exp / f).read_bytes() for f in ("trials.csv", "history.csv")}
    p = run_cli([*args, "--resume"], cwd=tmp_path)
    ran_ok(p)
    assert "nothing to run" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    assert {f: (exp / f).read_bytes() for f in before} == before
    for f in before:
        (exp / f).unlink()
    p = run_cli([str(exp)], module="ablate.report")
    ran_ok(p)
    rebuilt = pd.read_csv(exp / "trials.csv")
    assert rebuilt[["trial_id", "status", "epochs_done"]].equals(trials[["trial_id", "status", "epochs_done"]])


@pytest.mark.slow
def test_grid_timing_feeds_the_overhead_benchmark(mini_grid):
    from ablate.bench import grid_overhead

    r = grid_overhead(str(mini_grid["dir"]))
    assert r["concurrency"] >= 1 and r["wall_s"] > r["ideal_wall_s"] > 0 and 0 < r["overhead_fraction"] < 1


@pytest.mark.slow
def test_resume_of_a_finished_experiment_runs_nothing_and_rewrites_nothing(mini_grid):
    storage, exp = mini_grid["storage"], mini_grid["dir"]
    files = ("history.csv", "trials.csv", "grid_timing.json", "report.md")
    before = {f: (exp / f).read_bytes() for f in files}
    p = run_cli([DEFAULT, *MINI, f"storage_path={storage}", "name=mini", "--resume"], cwd=storage)
    ran_ok(p)
    assert "every trial" in p.stdout and "had already finished" in p.stdout
    assert "Started a local Ray instance" not in p.stdout + p.stderr
    assert {f: (exp / f).read_bytes() for f in files} == before  # timing, CSVs (and their columns) untouched
