"""Fused trials (fuse_trials > 1): each member is still its own trial, in numbers and in files."""

import pytest

from ablate.errors import ConfigError
from ablate.spec.experiment_file import load_experiment
from ablate.train import SequentialGroup, TrainConfig, build_group, train, train_group
from ablate.train.data import load_dataset
from ablate.train.fused import FusedRun

from helpers.blocks import user_block

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
    user_block("branchy", tmp_path, module="branchy_mod")
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
