"""Any setting is an axis (ablate/axes.py): a fifth axis reaches the grid, the names and ids, growth, the tables,
the fused grouping, the plan and every grouping of the analysis; an experiment written with four axes means
what it meant.  The real-CLI cases are marked slow."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import DEFAULT, EXP_ID, grid_point, ran_ok, run_cli

from ablate.analysis.stats import axes_of, effects, stable_lrs
from ablate.errors import ConfigError
from ablate.run.plan import plan_text
from ablate.spec.axes import AXES, GRID, context_of, expand, fused_key, trial_id, trial_key, trial_name
from ablate.spec.config import trial_configs, trial_groups
from ablate.spec.experiment_file import load_experiment
from ablate.study.identity import growth, identity
from ablate.study.tables import history_table, trials_table

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "four_axes"
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


# --- the real CLI -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_weight_decay_sweep_runs_12_trials_and_is_compared_in_each_cell(tmp_path):
    from wandb_reader import run_info, wandb_files

    exp = tmp_path / "wd"
    p = run_cli(
        [
            DEFAULT,
            *GRID4,
            "sweep={weight_decay: [0.0, 0.0005]}",
            "wandb.mode=offline",
            f"storage_path={tmp_path}",
            "name=wd",
        ],
        cwd=tmp_path,
    )
    ran_ok(p)
    trials, history = pd.read_csv(exp / "trials.csv"), pd.read_csv(exp / "history.csv")
    assert len(trials) == 12 and (trials["status"] == "TERMINATED").all()
    assert sorted(trials["weight_decay"].unique()) == [0.0, 0.0005] and "weight_decay" in history
    md = (exp / "report.md").read_text()
    verdicts = md.split("## Verdicts")[1].split("## How sure")[0]
    assert "skipinit:" in verdicts and (
        "weight_decay 0.0005:" in verdicts or "2 depth, LR and weight_decay points" in verdicts
    ), verdicts
    effects_section = md.split("## Effects at every depth, LR and weight_decay (vs baseline")[1].split("##")[0]
    assert effects_section.count("| skipinit | 8 | 0.1 |") == 2
    runs = wandb_files(exp)
    assert len(runs) == 12
    seen = {}
    for files in runs.values():
        info = run_info(str(files[0]))
        cfg = {i.key: json.loads(i.value_json) for i in info.config.update}
        seen[info.display_name] = cfg["weight_decay"]
    assert all(name.endswith(f"-weight_decay{wd:g}") for name, wd in seen.items()), seen
    assert sorted(set(seen.values())) == [0.0, 0.0005]


@pytest.mark.slow
def test_shortcut_a_against_b_is_compared_per_depth_and_lr(tmp_path):
    exp = tmp_path / "sc"
    p = run_cli(
        [
            DEFAULT,
            "blocks=[baseline]",
            "depths=[8]",
            "lrs=[0.05,0.1]",
            "seeds=[0,1]",
            "epochs=2",
            "sweep={shortcut: [A, B]}",
            "compare={axis: shortcut, reference: B}",
            "wandb.mode=disabled",
            f"storage_path={tmp_path}",
            "name=sc",
        ],
        cwd=tmp_path,
    )
    ran_ok(p)
    md = (exp / "report.md").read_text()
    assert "- shortcut A:" in md and "Effects at every block, depth and LR (vs shortcut B" in md
    table = md.split("(vs shortcut B, paired by seed)")[1].split("##")[0]
    assert "| A | baseline | 8 | 0.05 |" in table and "| A | baseline | 8 | 0.1 |" in table


@pytest.mark.slow
def test_an_experiment_written_with_four_axes_resumes_unchanged_and_grows_along_a_fixed_setting(tmp_path):
    exp = tmp_path / "four_axes"
    shutil.copytree(FIXTURE, exp)
    (exp / "history.csv").unlink()  # rebuilt from its records: byte for byte what that version wrote
    args = [
        DEFAULT,
        "blocks=[baseline,skipinit]",
        "depths=[8]",
        "lrs=[0.1]",
        "seeds=[0,1]",
        "epochs=2",
        "wandb.mode=disabled",
        f"storage_path={tmp_path}",
        "name=four_axes",
    ]
    p = run_cli([*args, "--resume"], cwd=tmp_path)
    ran_ok(p)
    assert "nothing to run" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    assert (exp / "history.csv").read_bytes() == (FIXTURE / "history.csv").read_bytes()
    assert (exp / "trials.csv").read_bytes() == (FIXTURE / "trials.csv").read_bytes()
    before = pd.read_csv(FIXTURE / "trials.csv")
    assert yaml.safe_load((exp / "ablate_experiment.yaml").read_text())["weight_decay"] == 0.0001
    # Its fixed weight_decay (0.0001) becomes an axis: only the 0.0005 points train.
    p = run_cli([*args, "sweep={weight_decay: [0.0001, 0.0005]}", "--resume", "--no-report"], cwd=tmp_path)
    ran_ok(p)
    assert "weight_decay +[0.0005]: 4 new trials beside the 4" in p.stdout, p.stdout + p.stderr
    after = pd.read_csv(exp / "trials.csv")
    assert len(after) == 8 and (after["status"] == "TERMINATED").all()
    kept = after[after["weight_decay"] == 0.0001]
    assert sorted(kept["trial_id"]) == sorted(before["trial_id"]), "the same trial ids"
    runs = sorted(d.name for d in exp.glob("run-*"))
    assert len(runs) == 2 and len(list(exp.glob(f"{runs[1]}/*/checkpoint_*"))) == 4, "only the new points trained"
    assert yaml.safe_load((exp / "ablate_experiment.yaml").read_text())["sweep"] == {"weight_decay": [0.0001, 0.0005]}


def test_trial_ids_are_stable_per_experiment_and_point():
    p = grid_point()
    assert trial_id(EXP_ID, p) == trial_id(EXP_ID, dict(p, lr=0.1, depth=8))
    assert trial_id(EXP_ID, p) != trial_id("ffffffffffff", p) != trial_id(EXP_ID, grid_point(seed=1))
