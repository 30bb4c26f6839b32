"""W&B: one offline run per trial whose history equals history.csv; failures never cost a result."""

import json
import warnings

import pandas as pd
import pytest
import wandb_reader
from wandb_reader import merged_history, wandb_files

from ablate.run.tracking import resolve_mode, start_trial_run
from ablate.spec.axes import trial_name

METRICS = ["train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds", "images_per_second"]


@pytest.mark.slow
def test_one_offline_run_per_trial_with_history_equal_to_csv(mini_grid):
    exp = mini_grid["dir"]
    hist = pd.read_csv(exp / "history.csv", dtype={"trial_id": str})
    runs = wandb_files(exp)
    assert sorted(runs) == sorted(hist["trial_id"].unique())
    for trial_id, files in runs.items():
        assert len(files) == 1
        rows = merged_history(files)
        steps = [s for s, _ in rows]
        assert steps == [1, 2, 3], "step = epoch, each once, in order"
        csv = hist[hist["trial_id"] == trial_id].sort_values("epoch")
        for (step, items), (_, row) in zip(rows, csv.iterrows()):
            assert items["epoch"] == row["epoch"] == step
            assert items["lr"] == pytest.approx(row["epoch_lr"])
            for m in METRICS:
                assert items[m] == pytest.approx(row[m]), m
            if row["block"] == "identity_scale":
                assert items["scale_stage3"] == pytest.approx(row["scale_stage3"])


@pytest.mark.slow
def test_run_identity_config_and_summary(mini_grid):
    exp = mini_grid["dir"]
    trials = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})
    runs = wandb_files(exp)
    for t in trials.itertuples():
        (f,) = runs[t.trial_id]
        info = wandb_reader.run_info(str(f))
        assert info.display_name == trial_name(t._asdict())
        assert info.run_group == "mini" and info.project == "ablate" and info.job_type == "trial"
        assert t.block in info.tags
        cfg = {i.key: json.loads(i.value_json) for i in info.config.update}
        for key in ("block", "depth", "lr", "seed", "epochs", "batch_size", "weight_decay", "experiment"):
            assert key in cfg, key
        assert cfg["block"] == t.block and cfg["seed"] == t.seed
        assert "git_commit" in cfg
        summary = {}
        for rec in wandb_reader.read_records(str(f)):
            if rec.WhichOneof("record_type") == "summary":
                for i in rec.summary.update:
                    if i.key:
                        summary[i.key] = json.loads(i.value_json)
        assert summary["final_val_acc"] == pytest.approx(t.final_val_acc)
        assert summary["best_val_acc"] == pytest.approx(t.best_val_acc)
        assert "train_seconds" in summary and summary["diverged"] is False


@pytest.mark.slow
def test_sync_command_printed_for_offline(mini_grid):
    assert "wandb sync" in mini_grid["proc"].stdout


def test_mode_auto_is_offline_without_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("disabled") == "disabled"


def test_wandbs_own_mode_variable_wins_over_auto_and_the_experiments_mode_wins_over_it(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a key is configured: auto alone would be online
    for env, mode in (("offline", "offline"), ("dryrun", "offline"), ("disabled", "disabled"), ("online", "online")):
        monkeypatch.setenv("WANDB_MODE", env)
        assert resolve_mode("auto") == mode, env
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("online") == "online"  # wandb.mode set in the experiment says so explicitly
    monkeypatch.setenv("WANDB_MODE", "")
    assert resolve_mode("auto") == "online"


def test_unusable_directory_warns_once_and_returns_a_no_op_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="W&B init"):
        run = start_trial_run(
            {"a": 1}, project="p", group="g", name="n", run_id="t1", mode="offline", directory=str(blocker / "wandb")
        )
    assert run.run is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run.log({"epoch": 1}, step=1)  # a no-op, never raises
        run.finish({"x": 1})
