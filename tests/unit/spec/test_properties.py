"""Property tests (hypothesis): any override is a valid experiment or one ConfigError line; any name
a user may give survives the round trip through the tables."""

import os
import string
import tempfile

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablate.blocks import NAME_PATTERN
from ablate.errors import ConfigError
from ablate.spec.experiment_file import load_experiment
from ablate.study.study import Study
from ablate.study.tables import read_csvs, trials_table, write_csvs

KEYS = [
    "epochs",
    "lrs",
    "seeds",
    "depths",
    "blocks",
    "name",
    "batch_size",
    "momentum",
    "storage_path",
    "wandb.mode",
    "schedule",
    "milestones",
    "fuse_trials",
    "scheduler",
    "asha_grace_period",
    "weight_decay",
    "target_acc",
    "nope",
    "wandb",
    "cpus_per_trial",
    "gpus_per_trial",
    "max_failures",
    "warmup_epochs",
]

VALUES = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=string.printable, max_size=30),
    st.lists(st.integers(-5, 3000), max_size=6).map(lambda v: "[" + ",".join(map(str, v)) + "]"),
    st.sampled_from(
        [
            "[]",
            "{}",
            "null",
            "true",
            "[baseline,NA]",
            "~",
            "[0.1,0.1]",
            "s3:/b",
            "1.10",
            "{a: 1}",
            "[[1]]",
            "-1",
            "1e-3",
            ".inf",
            "offline",
            "asha",
            "'5'",
        ]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4))
def test_any_override_is_an_experiment_or_one_line(tmp_path, overrides):
    items = [f"{k}={v}" for k, v in overrides]
    try:
        cfg = load_experiment(None, [f"storage_path={tmp_path}", *items])
    except ConfigError as e:
        assert "\n" not in str(e) and 0 < len(str(e)) < 600, str(e)
        return
    assert cfg.experiment_dir.endswith(cfg.name) and len(cfg.blocks) * len(cfg.seeds) >= 1


NAMES = st.from_regex(rf"\A{NAME_PATTERN}\Z", fullmatch=True) | st.sampled_from(
    ["NA", "None", "null", "nan", "NaN", "1.10", "010", "True", "inf", "-", "1e5"]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(NAMES.filter(lambda n: n[0].isalnum()), min_size=1, max_size=3, unique=True))
def test_block_names_round_trip_through_the_tables(tmp_path, names):
    points = [
        {"block": b, "depth": 8, "lr": 0.1, "seed": s, "trial_id": f"{i}{s}"}
        for i, b in enumerate(names)
        for s in (0, 1)
    ]
    rows = [
        {
            **{k: p[k] for k in ("block", "depth", "lr", "seed", "trial_id")},
            "epoch": 1,
            "train_loss": float("nan"),
            "train_acc": 0.1,
            "val_loss": float("nan"),
            "val_acc": 0.1,
            "epoch_seconds": 0.1,
            "diverged": True,
        }
        for p in points
    ]
    history = pd.DataFrame(rows)
    trials = trials_table(history, {p["trial_id"]: "TERMINATED" for p in points}, points, 0.9, 1)
    d = tempfile.mkdtemp(dir=tmp_path)
    write_csvs(str(d), history, trials)
    h2, t2 = read_csvs(str(d))
    assert list(t2["block"]) == list(trials["block"]) and list(h2["block"]) == list(history["block"])
    assert (t2["status"] == "DIVERGED").all() and h2["train_loss"].isna().all()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(NAMES)
def test_experiment_names_are_kept_as_typed_or_refused_in_one_line(tmp_path, name):
    try:
        cfg = load_experiment(None, [f"name={name}", f"storage_path={tmp_path}"])
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    assert cfg.name == name and os.path.basename(cfg.experiment_dir) == name
    assert "@" in os.path.basename(load_experiment(None, [f"name={name}", "storage_path=s3://b/x"]).output_dir)
    Study(cfg, resume=False)  # a study of it can be opened (nothing is written)


@pytest.mark.parametrize("name", ["a/b", "x" * 65, "", "../up", "a b"])
def test_block_names_that_cannot_name_a_path_are_refused_at_registration(name):
    from ablate.blocks import BasicBlock, register_block

    with pytest.raises(ValueError, match="must be 1-64 letters"):
        register_block(name)(type("B", (BasicBlock,), {}))
