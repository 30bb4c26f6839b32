"""The report: files exist, their table equals the results, the W&B Report builds offline."""

import pandas as pd
import pytest

from ablate.analysis.findings import verdicts
from ablate.analysis.table import ablation_table
from ablate.spec.question import Question


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


CHROMIUM = "/usr/bin/chromium"
