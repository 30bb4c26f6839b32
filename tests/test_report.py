"""The report: files exist, their table equals the results, the W&B Report builds offline."""
import re

import pandas as pd
import pytest

from conftest import run_cli

from ablate.report import build_wandb_report, verdicts
from ablate.results import ablation_table


def test_report_written_and_table_matches_results(mini_grid):
    exp = mini_grid["dir"]
    assert f"report: {exp / 'report.html'}" in mini_grid["proc"].stdout
    html = (exp / "report.html").read_text()
    md = (exp / "report.md").read_text()
    assert html.count("data:image/png;base64,") >= 3  # self-contained: curves, loss, LR sensitivity
    assert "Verdict per trick" in html and "identity_scale:" in md
    trials = pd.read_csv(exp / "trials.csv")
    table = ablation_table(trials)
    assert html.count("<tr>") == len(table) + 1  # the ablation table is a real HTML table
    for r in table.itertuples():
        m = re.search(rf"\| {r.block} \| {r.depth} \| {r.best_lr:g} \| +([\d.]+) \+- +([\d.]+) \|", md)
        assert m, f"row for {r.block} missing"
        assert float(m.group(1)) == pytest.approx(100 * r.final_acc_mean, abs=0.051)
        assert float(m.group(2)) == pytest.approx(100 * r.final_acc_std, abs=0.051)


def test_report_cli_rebuilds_and_rejects_a_wrong_dir(mini_grid, tmp_path):
    p = run_cli([str(mini_grid["dir"])], module="ablate.report")
    assert p.returncode == 0 and "report.html" in p.stdout
    p = run_cli([str(tmp_path)], module="ablate.report")
    assert p.returncode == 2 and "history.csv" in p.stderr


def test_ablation_table_statistics_and_verdicts():
    rows = []
    for seed, (b, t) in enumerate([(0.80, 0.90), (0.82, 0.93), (0.81, 0.91)]):
        for block, acc in (("baseline", b), ("trick", t)):
            rows.append(dict(block=block, depth=20, lr=0.1, seed=seed, final_val_acc=acc, best_val_acc=acc,
                             epochs_to_target=None, auc_val_acc=acc, diverged=False))
            rows.append(dict(block=block, depth=20, lr=1.0, seed=seed, final_val_acc=0.1, best_val_acc=0.1,
                             epochs_to_target=None, auc_val_acc=0.1, diverged=True))
    table = ablation_table(pd.DataFrame(rows))
    trick = table[table["block"] == "trick"].iloc[0]
    assert trick["best_lr"] == 0.1 and trick["diverged"] == 3
    assert trick["delta_vs_baseline"] == pytest.approx(0.1033, abs=1e-3)
    assert trick["delta_ci_low"] > 0 and trick["verdict"] == "helps"
    assert trick["auc_verdict"] == "helps"
    assert verdicts(table) == ["trick: final acc: helps at depth 20 (+10.3 pts). "
                               "Convergence (AUC): helps at depth 20 (+10.3 pts)."]


def test_wandb_report_builds_offline_with_its_panels():
    import wandb_workspaces.reports.v2 as wr

    rep = build_wandb_report("ablate", "someone", "mini", ["skipinit: helps at depth 56"], ["baseline", "skipinit"])
    assert rep.project == "ablate" and rep.title == "ablate: mini"
    grids = [b for b in rep.blocks if isinstance(b, wr.PanelGrid)]
    panels = [type(p).__name__ for g in grids for p in g.panels]
    assert panels.count("LinePlot") == 2 and "ParallelCoordinatesPlot" in panels and "RunComparer" in panels
    assert all(g.runsets[0].groupby == ["block"] for g in grids)
