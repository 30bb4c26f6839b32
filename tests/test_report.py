"""The report: files exist, their table equals the results, the W&B Report builds offline."""

import os
import re

import pandas as pd
import pytest
from conftest import REPO, one_error_line, ran_ok, run_cli

from ablate.analysis.findings import verdicts
from ablate.analysis.table import ablation_table
from ablate.spec.question import Question


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


def _synthetic_trials():
    """baseline vs trick, 3 seeds: at lr 1.0 the baseline collapses and the trick trains."""
    accs = {
        ("baseline", 0.1): [0.80, 0.82, 0.81],
        ("trick", 0.1): [0.83, 0.80, 0.82],
        ("baseline", 1.0): [0.10, 0.10, 0.10],
        ("trick", 1.0): [0.90, 0.92, 0.91],
    }
    rows = []
    for (block, lr), values in accs.items():
        for seed, acc in enumerate(values):
            div = block == "baseline" and lr == 1.0
            rows.append(
                dict(
                    block=block,
                    depth=56,
                    lr=lr,
                    seed=seed,
                    status="DIVERGED" if div else "TERMINATED",
                    final_val_acc=acc,
                    best_val_acc=acc,
                    epochs_to_target=None,
                    auc_val_acc=acc,
                    diverged=div,
                    epochs_done=5,
                )
            )
    return pd.DataFrame(rows)


def test_effects_per_depth_and_lr_stable_range_and_verdict_sentences():
    from ablate.analysis.stats import effects, seeds_needed, stable_lrs

    trials = _synthetic_trials()
    fx = effects(trials)
    at = {r["lr"]: r for r in fx.to_dict("records")}
    assert at[1.0]["final_verdict"] == "helps" and at[1.0]["final_delta"] == pytest.approx(0.81, abs=0.01)
    assert at[1.0]["final_p_adj"] < 0.05 and at[1.0]["final_ci_low"] > 0
    assert at[0.1]["final_verdict"] == "no significant difference" and at[0.1]["final_seeds_needed"] >= 3
    stable = stable_lrs(trials)
    row = stable[stable["block"] == "trick"].iloc[0]
    assert row["stable"] == [0.1, 1.0] and row["vs_baseline"] == "widens"
    (line,) = verdicts(fx, stable, Question.default())
    assert line.startswith("trick: helps at depth 56, lr 1: final acc +81.")
    assert "widens the stable LR range at depth 56: trains at lr 0.1, 1 (baseline: 0.1)" in line
    assert seeds_needed(0.01, 0.02) > seeds_needed(0.02, 0.02) >= 2  # smaller effects need more seeds
    # The best-LR table counts the same trials as its row: no diverged baseline trial at its best LR.
    best = ablation_table(trials)
    assert best[best["block"] == "baseline"].iloc[0]["diverged"] == 0


def test_a_comparison_without_a_test_says_why_and_identical_differences_are_tested_by_their_signs():
    """One seed, a missing metric: "not tested: why" / "void: why", never "no significant difference"; the same
    difference on every seed is tested (by its signs), not "no spread"."""
    from ablate.analysis.stats import effects, stable_lrs

    one = _synthetic_trials()
    one = one[one["seed"] == 0]
    fx = effects(one)
    assert set(fx["final_verdict"]) == {"not tested: 1 paired seed"}
    (line,) = verdicts(fx, stable_lrs(one), Question.default())
    assert "no significant difference" not in line and "not tested: 1 paired seed at depth 56, lr 0.1" in line
    missing = _synthetic_trials()
    missing.loc[(missing["block"] == "trick") & (missing["seed"] == 2), "final_val_acc"] = float("nan")
    fx = effects(missing)
    assert set(fx["final_verdict"]) == {"void: final acc missing (trick, seed 2)"}
    assert fx["final_p_adj"].isna().all() and fx["final_seeds_needed"].isna().all()
    # Identical differences on every seed (accuracies are discrete: ties happen): the exact sign test's p-value,
    # 2^(1-n): three seeds cannot decide, seven can.
    from ablate.analysis.stats import paired

    assert paired([0.85, 0.87, 0.86], [0.80, 0.82, 0.81])["p"] == 0.25
    assert paired([0.85] * 7, [0.80] * 7)["p"] == 2.0**-6
    same = _synthetic_trials()
    same.loc[same["block"] == "trick", "final_val_acc"] = (
        same.loc[same["block"] == "baseline", "final_val_acc"].to_numpy() + 0.05
    )
    assert set(effects(same)["final_verdict"]) == {"no significant difference"}


def test_the_answer_at_a_glance_is_one_verdict_per_value_and_cell_on_the_page_and_the_terminal():
    from ablate.analysis import figures
    from ablate.analysis.findings import Analysis, answer_lines
    from ablate.spec.question import Question

    q = Question.default()
    fixed = Analysis.of(_synthetic_trials(), {}, q)
    cells = fixed.cells
    assert cells[["value", "cell", "verdict"]].values.tolist() == [
        ["trick", "depth 56, lr 0.1", "open"],
        ["trick", "depth 56, lr 1", "helps"],
    ]
    assert "+81.0 [" in cells.iloc[1]["label"]
    text = fixed.answer_text()
    assert "fixed-n" in text and "trick  depth 56, lr 1    helps" in text
    assert figures.answer_matrix(cells, q.who, "baseline").startswith("iVBOR")  # a PNG
    rounds = Analysis.of(_synthetic_trials(), {"until_resolved": {"round": 1}, "max_seeds": 12}, q)
    assert rounds.judged is not None and "anytime-valid" in rounds.answer_text()
    assert set(rounds.cells["verdict"]) <= {"helps", "hurts", "same", "open", "void"}
    assert len(answer_lines(q, rounds.cells)) == 2


def test_paired_interval_is_scipys_t_interval():
    from scipy import stats

    from ablate.analysis.stats import paired

    a, b = [0.9, 0.93, 0.91], [0.8, 0.82, 0.81]
    r = paired(a, b)
    ci = stats.ttest_rel(a, b).confidence_interval()
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high))


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
