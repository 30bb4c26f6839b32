"""Any setting is an axis (ablate/axes.py): a fifth axis reaches the grid, the names and ids, growth, the tables,
the fused grouping, the plan and every grouping of the analysis; an experiment written with four axes means
what it meant.  The real-CLI cases are marked slow."""

import json
import shutil

import pandas as pd
import pytest
import yaml

from helpers.cli import DEFAULT, FIXTURES, ONE_AT_A_TIME, ran_ok, run_cli

FIXTURE = FIXTURES / "four_axes"

GRID4 = ["blocks=[baseline,skipinit]", "depths=[8]", "lrs=[0.1]", "seeds=[0,1,2]", "epochs=3", ONE_AT_A_TIME]


@pytest.mark.slow
def test_a_weight_decay_sweep_runs_12_trials_and_is_compared_in_each_cell(tmp_path):
    from helpers.wandb_reader import run_info, wandb_files

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
            ONE_AT_A_TIME,
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
