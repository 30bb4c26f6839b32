"""Fused trials (fuse_trials > 1): each member is still its own trial, in numbers and in files."""

import textwrap

import pandas as pd
import pytest
from conftest import DEFAULT, kill_trial_midrun, ran_ok, run_cli

from ablate.errors import ConfigError
from ablate.spec.experiment_file import load_experiment
from ablate.train import SequentialGroup, TrainConfig, build_group, train, train_group
from ablate.train.data import load_dataset
from ablate.train.fused import FusedRun

DIGITS = load_dataset("digits")
# "A couple of test images": fp32 rounding alone (grouped convolutions sum in another order) moves
# a digits run's accuracy after a few epochs by as much as 1 or 2 thread counts do: 2-3 images of 359.
COUPLE = 3.01 / len(DIGITS.test_y)


def _cfg(lr, seed, block="identity_scale", epochs=2):
    # Contiguous tensors on both sides: the comparison is of fusion alone (channels_last changes the
    # convolutions' summation order too, and with it the rounding a couple of images turn on).
    return TrainConfig(
        block=block, depth=8, lr=lr, seed=seed, epochs=epochs, device="cpu", threads=1, channels_last=False
    )


def _fused(cfgs):
    group = build_group(cfgs, DIGITS)
    assert isinstance(group, FusedRun)
    return [o["history"] for o in train_group(group)]


def test_each_member_follows_its_separate_run_whoever_shares_its_model():
    cfgs = [_cfg(0.1, 0), _cfg(0.05, 1), _cfg(0.2, 2)]
    fused = _fused(cfgs)
    for cfg, hist in zip(cfgs, fused):
        alone = train(cfg, DIGITS)["history"]
        assert [h["epoch"] for h in hist] == [1, 2]
        assert hist[0]["train_loss"] == pytest.approx(alone[0]["train_loss"], rel=1e-3)  # same init, data, LR
        assert abs(hist[-1]["val_acc"] - alone[-1]["val_acc"]) <= COUPLE
        assert hist[0]["lr"] == pytest.approx(alone[0]["lr"])
        assert hist[-1]["scale_stage1"] == pytest.approx(alone[-1]["scale_stage1"], rel=1e-2)
    other = _fused([_cfg(0.1, 0), _cfg(0.3, 5)])  # the first member with another partner
    assert other[0][0]["train_loss"] == pytest.approx(fused[0][0]["train_loss"], rel=1e-4)


def test_a_diverging_member_is_frozen_and_the_others_finish_as_alone():
    cfgs = [_cfg(1000.0, 0, block="baseline", epochs=3), _cfg(0.1, 1, block="baseline", epochs=3)]
    group = build_group(cfgs, DIGITS)
    blown, ok = [o["history"] for o in train_group(group)]
    assert blown[-1]["diverged"] and len(blown) < 3
    frozen = {n: p[0].clone() for n, p in group.params.items()}
    alone = train(cfgs[1], DIGITS)["history"]
    assert [h["epoch"] for h in ok] == [1, 2, 3] and not ok[-1]["diverged"]
    assert ok[0]["train_loss"] == pytest.approx(alone[0]["train_loss"], rel=1e-3)
    assert abs(ok[-1]["val_acc"] - alone[-1]["val_acc"]) <= COUPLE
    group.epoch(4)  # a frozen member does not move, whatever its neighbour does
    assert all((frozen[n].nan_to_num() == p[0].nan_to_num()).all() for n, p in group.params.items())


def test_a_block_vmap_cannot_batch_runs_its_members_one_by_one(tmp_path):
    (tmp_path / "branchy_mod.py").write_text(
        textwrap.dedent("""
        from ablate.blocks import BasicBlock, register_block

        @register_block("branchy")
        class Branchy(BasicBlock):
            def merge(self, out, identity):
                if out.mean() > 1e9:  # data-dependent control flow: vmap cannot batch it
                    return out
                return out + identity
    """)
    )
    from ablate.blocks import BLOCKS, import_block_modules

    import_block_modules(["branchy_mod"], search_path=str(tmp_path))
    try:
        cfgs = [_cfg(0.1, 0, block="branchy", epochs=1), _cfg(0.05, 1, block="branchy", epochs=1)]
        with pytest.warns(UserWarning, match="cannot be fused"):
            group = build_group(cfgs, DIGITS)
        assert isinstance(group, SequentialGroup)
        hist = [o["history"] for o in train_group(group)]
        assert hist[1][0]["train_loss"] == train(cfgs[1], DIGITS)["history"][0]["train_loss"]
    finally:  # the registry is the process's: later tests expect the built-in blocks only
        BLOCKS.pop("branchy", None)


def test_asha_with_fused_trials_is_refused_naming_both_keys():
    with pytest.raises(ConfigError, match="'scheduler' is asha but 'fuse_trials' is 2"):
        load_experiment(None, ["scheduler=asha", "asha_grace_period=2", "fuse_trials=2"])


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
    from wandb_reader import wandb_files

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
