"""Swept settings through the real CLI (issue 35): a swept ``epochs`` runs every point to its own end and the
report compares them; a new ``compare`` on resume is said and the report answers it (the in-process half,
per-point settings read everywhere, is tests/unit/spec/test_sweep.py)."""

import pandas as pd
import pytest
import yaml

from helpers.cli import ran_ok, run_cli

# One trial at a time: helpers.cli.ONE_AT_A_TIME, as a setting of the experiment file.
GRID = {"blocks": ["baseline", "skipinit"], "depths": [8], "lrs": [0.1], "seeds": [0, 1], "max_concurrent_trials": 1}

# Two values of every setting a sweep may name, that act differently (null crop_pad/flip: digits' own).
VALUES = {
    "batch_size": [64, 128],
    "conv_bias": [False, True],
    "crop_pad": [None, 2],
    "diverge_factor": [5.0, 10.0],
    "epochs": [1, 2],
    "flip": [None, True],
    "label_smoothing": [0.0, 0.1],
    "lr_decay": [0.1, 0.5],
    "momentum": [0.0, 0.9],
    "nesterov": [False, True],
    "precision": ["auto", "bf16"],
    "schedule": ["step", "cosine"],
    "shortcut": ["A", "B"],
    "warmup_epochs": [0.0, 1.0],
    "weight_decay": [0.0, 0.0005],
    "zero_init_last": [False, True],
}


def experiment(tmp_path, name="s", file=None, **settings):
    """An experiment file in ``tmp_path`` (the small grid, 2 epochs unless swept), ``file`` or named after it."""
    doc = {**GRID, "epochs": 2, "wandb": {"mode": "disabled"}, "storage_path": str(tmp_path), "name": name, **settings}
    if "epochs" in doc.get("sweep", {}):
        del doc["epochs"]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / (file or f"{name}.yaml")
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_a_swept_epochs_runs_every_point_to_its_own_end_and_the_report_compares_them(tmp_path):
    exp = tmp_path / "ep"
    p = run_cli([str(experiment(tmp_path, name="ep", sweep={"epochs": [1, 2]}))], cwd=tmp_path)
    ran_ok(p)
    trials = pd.read_csv(exp / "trials.csv")
    assert (trials["status"] == "TERMINATED").all() and dict(zip(trials["epochs"], trials["epochs_done"])) == {
        1: 1,
        2: 2,
    }
    assert "1/2 epochs" in p.stdout and "no finished trials" not in p.stdout
    md = (exp / "report.md").read_text()
    assert "Unfinished trials" not in md and "- skipinit" in md.split("## Verdicts")[1], md


@pytest.mark.slow
def test_a_new_compare_on_resume_is_said_and_the_report_answers_it(tmp_path):
    exp, path = tmp_path / "rq", experiment(tmp_path, name="rq", epochs=1, seeds=[0, 1], sweep={"shortcut": ["A", "B"]})
    ran_ok(run_cli([str(path)], cwd=tmp_path))
    assert "| question | each block against baseline" in (exp / "report.md").read_text()
    p = run_cli([str(path), "seeds=[0,1,2]", "compare={axis: shortcut, reference: B}", "--resume"], cwd=tmp_path)
    ran_ok(p)
    assert "the question is now each shortcut against shortcut B (it was each block against baseline)" in p.stdout
    assert yaml.safe_load((exp / "ablate_experiment.yaml").read_text())["compare"] == {
        "axis": "shortcut",
        "reference": "B",
    }
    assert "| question | each shortcut against shortcut B" in (exp / "report.md").read_text()
