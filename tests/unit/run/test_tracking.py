"""W&B: one offline run per trial whose history equals history.csv; failures never cost a result."""

import warnings

import pytest

from ablate.run.tracking import resolve_mode, start_trial_run

METRICS = ["train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds", "images_per_second"]


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
