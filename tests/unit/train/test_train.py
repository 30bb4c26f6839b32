"""The trainer, on real (tiny) data: learning, determinism, resume, divergence."""

import math

import pytest
import torch

from ablate.train import METRIC_KEYS, TrainConfig, train
from ablate.train.data import load_dataset

DIGITS = load_dataset("digits")


def _cfg(**kw):
    base = dict(
        dataset="digits",
        block="baseline",
        depth=8,
        epochs=3,
        lr=0.05,
        batch_size=64,
        schedule="cosine",
        seed=0,
        threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def _strip(history):
    timing = {"epoch_seconds", "images_per_second"}
    return [{k: v for k, v in h.items() if k not in timing} for h in history]


def test_digits_learns_well_above_chance():
    seen = []
    out = train(_cfg(epochs=4), DIGITS, on_epoch=lambda m, s: seen.append(m))
    assert [m["epoch"] for m in seen] == [1, 2, 3, 4]
    for m in seen:
        assert set(METRIC_KEYS) <= set(m)
    assert seen[-1]["val_acc"] > 0.6  # chance is 0.1
    assert seen[-1]["train_loss"] < seen[0]["train_loss"]
    assert out["diverged"] is False and out["history"] == seen


def test_same_seed_same_metrics_and_other_seed_differs():
    a = train(_cfg(epochs=2), DIGITS)["history"]
    b = train(_cfg(epochs=2), DIGITS)["history"]
    c = train(_cfg(epochs=2, seed=1), DIGITS)["history"]
    assert _strip(a) == _strip(b)
    assert _strip(a) != _strip(c)


@pytest.mark.parametrize("block", ["identity_scale", "skipinit"])
def test_resume_from_epoch_k_equals_uninterrupted(block, tmp_path):
    cfg = _cfg(block=block, epochs=4, schedule="step")
    first = []  # the state after epoch 2, taken from the uninterrupted run itself (taking it changes nothing)
    full = train(cfg, DIGITS, on_epoch=lambda m, s: first.append(s()) if m["epoch"] == 2 else None)["history"]
    torch.save(first[0], tmp_path / "s4.pt")
    state = torch.load(tmp_path / "s4.pt", weights_only=False)
    resumed = train(cfg, DIGITS, state=state)["history"]
    assert [h["epoch"] for h in resumed] == [1, 2, 3, 4]
    assert _strip(resumed) == _strip(full)
    assert f"{'scale' if block == 'identity_scale' else 'alpha'}_stage1" in full[-1]


def test_divergence_is_marked_and_stops_without_raising():
    out = train(_cfg(lr=50.0, epochs=6, schedule="constant", weight_decay=0.0), DIGITS)
    assert out["diverged"] is True
    assert len(out["history"]) < 6
    last = out["history"][-1]
    assert last["diverged"] is True
    assert not math.isfinite(last["train_loss"]) or last["train_loss"] > 5 * math.log(10)


def test_step_schedule_and_warmup():
    seen = []
    train(_cfg(epochs=4, schedule="step", warmup_epochs=1), DIGITS, on_epoch=lambda m, s: seen.append(m["lr"]))
    assert seen[0] == pytest.approx(0.05) and seen[1] == pytest.approx(0.05)
    assert seen[2] == pytest.approx(0.005) and seen[3] == pytest.approx(0.0005)
