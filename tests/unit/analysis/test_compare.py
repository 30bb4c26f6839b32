"""The judging half of ``python -m ablate.compare`` (ablate.analysis.compare), in-process: cells, verdicts and
exit codes from tables, and, by simulation, "changed" under no change within 5% with the round rule (the
command on real experiments is tests/system/test_compare.py)."""

import numpy as np
import pandas as pd
import pytest

from ablate.analysis.compare import (
    EXIT_CHANGED,
    EXIT_OPEN,
    EXIT_SAME,
    Side,
    cell_verdict,
    check,
    exit_code,
    paired_table,
)
from ablate.analysis.sequential import _moments, e_bh, e_value, sign_paths
from ablate.errors import UsageError


def _side(name, epochs=6, seeds=(0, 1, 2), blocks=("baseline", "mine"), acc=0.9):
    rows = [
        {
            "block": b,
            "depth": 8,
            "lr": 0.1,
            "seed": s,
            "trial_id": f"{name}{b}{s}",
            "status": "TERMINATED",
            "final_val_acc": acc,
            "auc_val_acc": acc,
            "diverged": False,
        }
        for b in blocks
        for s in seeds
    ]
    meta = {"name": name, "dataset": "digits", "epochs": epochs, "weight_decay": 0.0001, "blocks": list(blocks)}
    return Side(f"/x/{name}", f"/x/{name}", pd.DataFrame(rows), meta)


def test_what_cannot_be_paired_is_refused_and_named():
    before, after = _side("main"), _side("branch", epochs=3)
    with pytest.raises(UsageError, match=r"epochs 6 in main but 3 in branch; .*--differs epochs"):
        check(before, after, [])
    axes, diff = check(before, after, ["epochs"])
    assert axes == ["block", "depth", "lr", "seed"] and diff == {"epochs": (6, 3)}
    with pytest.raises(UsageError, match="--differs nonsense: not a setting"):
        check(before, after, ["nonsense"])
    with pytest.raises(UsageError, match="share no point"):
        paired_table(before, _side("other", seeds=(5, 6)), axes)
    both, lacks = paired_table(before, _side("more", seeds=(0, 1, 2, 3)), axes)
    assert lacks == {"main": 2, "more": 0}  # the two points of seed 3 that main lacks


def test_verdicts_and_exit_codes():
    row = lambda f, a: {"final_verdict": f, "auc_verdict": a}  # noqa: E731
    assert [
        cell_verdict(row(*v))
        for v in (("equivalent", "equivalent"), ("equivalent", "hurts"), ("open", "equivalent"), ("void", "equivalent"))
    ] == ["same", "changed", "open", "void"]
    codes = [
        exit_code(pd.DataFrame([row(*v) for v in cells]))
        for cells in (
            [("equivalent", "equivalent")] * 2,
            [("equivalent", "equivalent"), ("helps", "open")],
            [("equivalent", "equivalent"), ("open", "open")],
        )
    ]
    assert codes == [EXIT_SAME, EXIT_CHANGED, EXIT_OPEN] == [0, 1, 3]


def test_changed_under_no_change_stays_within_5_percent_with_the_round_rule():
    """8 cells x 2 metrics, no change (the two runs of a pair exchangeable: symmetric differences of several
    shapes), 3 seeds then up to 3 a round to every cell not yet changed, to 12: how often any cell is said
    "changed" (the compare's one family)."""
    rng = np.random.default_rng(38)
    k, studies, looks = 8, 400, (3, 6, 9, 12)
    for draw in (
        lambda s: rng.normal(size=s),
        lambda s: rng.standard_t(2.5, s),
        lambda s: np.where(rng.random(s) < 0.1, 30.0, 1.0) * rng.normal(size=s),
    ):
        d = draw((studies, 2, k, 12))
        n, mean, sd = _moments(d)
        e = np.minimum(e_value(n, mean, sd), sign_paths(d))
        changed = np.zeros(studies, bool)
        for s in range(studies):
            for look in looks:
                changed[s] |= e_bh(e[s, :, :, look - 1].ravel(), 0.05).any()
        assert changed.mean() <= 0.05, changed.mean()


def test_the_w_and_b_report_shows_both_groups_and_the_cells_offline():
    import wandb_workspaces.reports.v2 as wr

    from ablate.analysis.wandb_report import build_compare_report

    rep = build_compare_report(
        {"name": "main"},
        {"name": "branch", "wandb": {"project": "p"}},
        ["block mine, depth 8, lr 0.1 | 9 | changed"],
        "someone",
    )
    assert rep.title == "ablate.compare: branch against main" and rep.project == "p"
    grids = [b for b in rep.blocks if isinstance(b, wr.PanelGrid)]
    assert [r.name for r in grids[0].runsets] == ["main", "branch"]
    assert any("changed" in getattr(b, "text", "") for b in rep.blocks)
