"""Any setting is an axis (ablate/axes.py): a fifth axis reaches the grid, the names and ids, growth, the tables,
the fused grouping, the plan and every grouping of the analysis; an experiment written with four axes means
what it meant.  The real-CLI cases are marked slow."""

import re

import pytest

from ablate.analysis.stats import axes_of, effects, stable_lrs
from ablate.errors import ConfigError
from ablate.run.plan import plan_text
from ablate.spec.axes import AXES, GRID, context_of, expand, fused_key, trial_id, trial_key, trial_name
from ablate.spec.config import trial_configs, trial_groups
from ablate.spec.experiment_file import load_experiment
from ablate.study.identity import growth, identity
from ablate.study.tables import history_table, trials_table

from helpers.cli import FIXTURES, REPO
from helpers.records import EXP_ID, grid_point

FIXTURE = FIXTURES / "four_axes"

GRID4 = ["blocks=[baseline,skipinit]", "depths=[8]", "lrs=[0.1]", "seeds=[0,1,2]", "epochs=3"]


def _cfg(tmp_path, *extra):
    return load_experiment(None, [*GRID4, f"storage_path={tmp_path}", "name=x", *extra])


def test_a_fifth_axis_reaches_the_grid_names_ids_growth_tables_fusion_plan_and_analysis(tmp_path):
    cfg = _cfg(tmp_path, "sweep={warmup_epochs: [0, 2]}", "fuse_trials=4")
    axes = cfg.axes()
    assert list(axes) == [*AXES, "warmup_epochs"] and len(trial_configs(cfg)) == 2 * 3 * 2
    points = [t.point for t in trial_configs(cfg)]
    assert points == list(expand(axes)) and {p["warmup_epochs"] for p in points} == {0.0, 2.0}
    assert {t.warmup_epochs for t in trial_configs(cfg)} == {0.0, 2.0}  # the trainer gets the point's value
    names = [trial_name(p) for p in points]
    assert len(set(names)) == len(names) and names[1] == "baseline-d8-lr0.1-s0-warmup_epochs2"
    ids = {trial_id("e", p, cfg.base()) for p in points}
    assert len(ids) == len(points)
    # The base value (the setting's own, 0) keeps a four-axis point's key and id.
    four = {a: points[0][a] for a in AXES}
    assert trial_key(points[0], cfg.base()) == trial_key(four) and trial_id("e", points[0], cfg.base()) == trial_id(
        "e", four
    )
    # Fused trials share every axis but lr and seed: a swept setting splits them.
    assert all(len({fused_key(t.point) for t in g}) == 1 for g in trial_groups(cfg))
    assert {t.warmup_epochs for t in trial_groups(cfg)[0]} == {0.0}
    # Growth along it, and a fixed setting becoming an axis that keeps its value.
    saved = identity(_cfg(tmp_path, "sweep={warmup_epochs: [0, 2]}"))
    assert growth(saved, identity(_cfg(tmp_path, "sweep={warmup_epochs: [0, 2, 3]}"))) == ([], {"warmup_epochs": [3.0]})
    assert growth(saved, identity(_cfg(tmp_path, "sweep={warmup_epochs: [2]}")))[0] == ["sweep.warmup_epochs"]
    fixed = identity(_cfg(tmp_path, "label_smoothing=0.1"))
    assert growth(fixed, identity(_cfg(tmp_path, "sweep={label_smoothing: [0.1, 0.2]}"))) == (
        [],
        {"label_smoothing": [0.2]},
    )
    assert growth(fixed, identity(_cfg(tmp_path, "sweep={label_smoothing: [0.2]}")))[0] == ["sweep.label_smoothing"]
    # The tables carry it as a column, after the four.
    with_ids = {trial_id("e", p, cfg.base()): p for p in points}
    rows = {
        i: [
            {
                "epoch": 1,
                "train_loss": 1.0,
                "train_acc": 0.5,
                "val_loss": 1.0,
                "val_acc": 0.5 + p["seed"] / 10 + (0.2 if p["block"] == "skipinit" and p["warmup_epochs"] else 0),
                "lr": 0.1,
                "epoch_seconds": 0.1,
                "images_per_second": 1.0,
                "diverged": False,
            }
        ]
        for i, p in with_ids.items()
    }
    history = history_table(rows, with_ids)
    assert list(history.columns[:6]) == [*AXES, "warmup_epochs", "trial_id"]
    trials = trials_table(
        rows, {i: "TERMINATED" for i in rows}, [{**p, "trial_id": i} for i, p in with_ids.items()], 0.9, 1
    )
    assert axes_of(trials) == axes_of(history) == [*AXES, "warmup_epochs"]
    # The analysis compares within each cell of the context, which holds it (never pooled).
    assert context_of(list(axes), "block") == ["depth", "lr", "warmup_epochs"]
    fx = effects(trials)
    assert sorted(fx["warmup_epochs"]) == [0.0, 2.0]
    by = dict(zip(fx["warmup_epochs"], fx["final_delta"]))
    assert by[0.0] == pytest.approx(0.0) and by[2.0] == pytest.approx(0.2)
    assert sorted(stable_lrs(trials)["warmup_epochs"]) == [0.0, 0.0, 2.0, 2.0]
    assert "2 warmup_epochs" in plan_text(cfg, None) and "depth x lr x warmup_epochs cell" in plan_text(cfg, None)


def test_the_four_axis_names_are_spelled_together_in_one_place_in_ablate():
    together = re.compile(
        r"""["']block["'],\s*["']depth["'],\s*["']lr["'],\s*["']seed["']|Axis\("block".*Axis\("seed\"""", re.S
    )
    hits = [
        str(p.relative_to(REPO / "ablate")) for p in (REPO / "ablate").rglob("*.py") if together.search(p.read_text())
    ]
    assert hits == ["spec/axes.py"], hits
    assert [a.name for a in GRID] == list(AXES)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["sweep={storage_path: [a, b]}"], "changes no result"),
        (["sweep={eval_batch_size: [1, 2]}"], "changes no result"),
        (["sweep={nope: [1]}"], "is not a setting"),
        (["sweep={lrs: [0.1]}"], "grid axis already"),
        (["weight_decay=0.001", "sweep={weight_decay: [0.0]}"], "both set"),
        (["sweep={weight_decay: [0.0, 0.5]}"], "allowed: 0 to 0.1"),
        (["sweep={shortcut: [A, C]}"], "allowed: A, B"),
        (["sweep={warmup_epochs: [0, 20]}"], "with sweep.warmup_epochs = 20"),
        (["compare={axis: shortcut, reference: A}"], "compare.axis 'shortcut'"),
        (["sweep={shortcut: [A, B]}", "compare={axis: shortcut}"], "compare.reference"),
        (["compare={axis: seed}"], "other than seed"),
    ],
)
def test_a_sweep_or_comparison_that_cannot_be_is_one_line(tmp_path, overrides, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)) as e:
        _cfg(tmp_path, *overrides)
    assert "\n" not in str(e.value)


def test_trial_ids_are_stable_per_experiment_and_point():
    p = grid_point()
    assert trial_id(EXP_ID, p) == trial_id(EXP_ID, dict(p, lr=0.1, depth=8))
    assert trial_id(EXP_ID, p) != trial_id("ffffffffffff", p) != trial_id(EXP_ID, grid_point(seed=1))
