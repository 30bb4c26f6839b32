"""W&B: one offline run per trial whose history equals history.csv; failures never cost a result."""

import json

import pandas as pd
import pytest

from ablate.spec.axes import trial_name

import helpers.wandb_reader as wandb_reader
from helpers.wandb_reader import merged_history, wandb_files

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
