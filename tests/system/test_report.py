"""The report: files exist, their table equals the results, the W&B Report builds offline."""

import os
import re

import pandas as pd
import pytest

from ablate.analysis.table import ablation_table
from ablate.spec.question import Question

from helpers.cli import REPO, one_error_line, ran_ok, run_cli


@pytest.mark.slow
def test_report_written_and_table_matches_results(mini_grid):
    exp = mini_grid["dir"]
    assert f"report: {exp / 'report.html'}" in mini_grid["proc"].stdout
    html = (exp / "report.html").read_text()
    md = (exp / "report.md").read_text()
    assert html.count("data:image/png;base64,") >= 3  # self-contained: curves, loss, LR sensitivity
    for section in (
        "The answer at a glance",
        "Provenance",
        "Verdicts",
        "How sure",
        "Stable LR range",
        "Effects at every depth and LR",
        "Each block at its best LR",
    ):
        assert section in html and f"## {section}" in md
    assert "identity_scale:" in md
    trials = pd.read_csv(exp / "trials.csv")
    table = ablation_table(trials)
    for r in table.itertuples():
        m = re.search(rf"\| {r.block} \| {r.depth} \| {r.best_lr:g} \| +([\d.]+) \+- +([\d.]+) \|", md)
        assert m, f"row for {r.block} missing"
        assert float(m.group(1)) == pytest.approx(100 * r.final_acc_mean, abs=0.051)
        assert float(m.group(2)) == pytest.approx(100 * r.final_acc_std, abs=0.051)
    # Provenance: the recipe, the grid, the code and the files a reader needs to check it.
    for needle in (
        "SGD, momentum 0.9",
        "weight decay",
        "commit ",
        "torch ",
        "history.csv",
        "trials.csv",
        "project ablate, group mini",
    ):
        assert needle in md, needle


@pytest.mark.slow
def test_report_cli_rebuilds_and_rejects_a_wrong_dir(mini_grid, tmp_path):
    p = run_cli([str(mini_grid["dir"])], module="ablate.report")
    ran_ok(p)
    assert "report.html" in p.stdout
    p = run_cli([str(tmp_path)], module="ablate.report")
    one_error_line(p, "history.csv")
    p = run_cli(["--help"], module="ablate.report")
    assert "experiment_dir" in p.stdout and "``" not in p.stdout


@pytest.mark.slow
def test_wandb_report_compares_what_the_page_compares(mini_grid):
    import wandb_workspaces.reports.v2 as wr

    from ablate.analysis.wandb_report import build_wandb_report

    trials = pd.read_csv(mini_grid["dir"] / "trials.csv")
    meta = {"name": "mini", "wandb": {"project": "ablate"}}
    rep = build_wandb_report(meta, trials, ["identity_scale: ..."], "someone", Question.default())
    assert rep.project == "ablate" and rep.title == "ablate: mini"
    grids = [b for b in rep.blocks if isinstance(b, wr.PanelGrid)]
    titles = [b.text for b in rep.blocks if isinstance(b, wr.H1)]
    assert any("ResNet-8" in t and "best LR" in t for t in titles)  # a section per depth
    per_depth = [g for g in grids if g.runsets[0].name.startswith("ResNet-")]
    assert len(per_depth) == trials["depth"].nunique()
    assert all(g.runsets[0].groupby == ["block"] for g in per_depth)
    assert "lr" in str(per_depth[0].runsets[0].filters)  # each block at its best LR, not averaged over LRs
    panels = [type(p).__name__ for g in grids for p in g.panels]
    assert panels.count("LinePlot") == 2 * len(per_depth) and "ScatterPlot" in panels and "RunComparer" in panels


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is installed by .ci/run")
def test_report_renders_in_a_real_browser(mini_grid):
    from playwright.sync_api import sync_playwright

    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto((mini_grid["dir"] / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        page.screenshot(path=str(artifacts / "report.png"), full_page=True)
        browser.close()
    assert len(images) >= 3 and all(ok and width >= 1200 for ok, width in images), images  # every image loads
    assert overflow <= 0, "nothing wider than the window"
    assert (artifacts / "report.png").stat().st_size > 50_000
