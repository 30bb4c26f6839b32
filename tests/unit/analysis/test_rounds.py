"""--until-resolved (ablate/rounds.py): seeds only where a comparison is open, pairs kept paired, max_seeds kept;
and on the real CLI a study interrupted in its second round that ``--resume --until-resolved`` finishes with
every (point, epoch) once."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ablate.analysis.rounds import judge, next_points, seed_pool, tried_seeds
from ablate.spec.question import Question


def _trials(seeds, effects, noise=0.01, seed=0, cells=((8, 0.1),)):
    """A finished trials table: baseline and the blocks of ``effects`` (mean final-acc difference) per cell;
    ``seeds``: one list for every block, or {block: seeds}."""
    rng = np.random.default_rng(seed)
    rows = []
    for depth, lr in cells:
        for block, eff in {"baseline": 0.0, **effects}.items():
            for s in seeds.get(block, []) if isinstance(seeds, dict) else seeds:
                acc = 0.8 + eff + rng.normal(0, noise)
                rows.append(
                    {
                        "block": block,
                        "depth": depth,
                        "lr": lr,
                        "seed": s,
                        "trial_id": f"{block}{depth}{lr}{s}",
                        "status": "TERMINATED",
                        "final_val_acc": acc,
                        "auc_val_acc": acc,
                        "diverged": False,
                    }
                )
    return pd.DataFrame(rows)


def _points(trials):
    return [
        {"block": r["block"], "depth": r["depth"], "lr": r["lr"], "seed": r["seed"]} for r in trials.to_dict("records")
    ]


def test_a_comparisons_next_seeds_are_the_lowest_it_lacks_first_where_the_reference_is_trained():
    """The issue's case: baseline holds seeds 0-5, zero_gamma 0-4: zero_gamma's next seed is 5 (its reference is
    there), never 6; and no seed outside the pool (the grid's seeds, then the lowest unused, max_seeds in all)."""
    q = Question.default()
    trials = _trials({"baseline": range(6), "zero_gamma": range(5)}, {"zero_gamma": -0.2}, noise=0.05)
    pool = seed_pool([0, 1, 2], 6)
    assert pool == [0, 1, 2, 3, 4, 5] and seed_pool([3, 7], 4) == [3, 7, 0, 1] and seed_pool([0, 1, 2], 2) == [0, 1, 2]
    judged = judge(trials, q, margin_points=0.01, max_seeds=6).assign(more=1, futile=False)
    got = next_points(judged, _points(trials), q, pool)
    assert got == [{"block": "zero_gamma", "depth": 8, "lr": 0.1, "seed": 5}], got  # the reference's seed 5 is there
    # Where the reference lacks the seed too, both are added; never beyond the pool.
    judged = judged.assign(more=3)
    trials = _trials({"baseline": range(3), "zero_gamma": range(3)}, {"zero_gamma": -0.2})
    got = next_points(judged, _points(trials), q, pool)
    assert sorted((p["block"], p["seed"]) for p in got) == sorted(
        [(b, s) for b in ("baseline", "zero_gamma") for s in (3, 4, 5)]
    )
    assert not next_points(judged, _points(_trials(range(6), {"zero_gamma": -0.2})), q, pool)


def test_futile_void_and_separated_comparisons_get_no_seeds_and_the_bound_counts_points_tried():
    q = Question.default()
    rng = np.random.default_rng(4)
    trials = _trials(range(3), {"null": 0.0, "big": -0.4, "missing": 0.1}, noise=0.02)
    trials.loc[(trials["block"] == "missing") & (trials["seed"] == 1), "final_val_acc"] = np.nan
    # "null": differences +1, -1, 0 points: even its favourable forecast (1.1 points, 1.6 sd) needs > 12 seeds.
    base = trials.loc[trials["block"] == "baseline", "final_val_acc"].to_numpy()
    for col in ("final_val_acc", "auc_val_acc"):
        trials.loc[trials["block"] == "null", col] = base + [0.01, -0.01, 0.0]
    judged = judge(trials, q, margin_points=0.01, max_seeds=12).set_index("block")
    assert judged.loc["missing", "final_verdict"] == "void" and judged.loc["missing", "more"] == 0
    assert judged.loc["missing", "void"] == "final acc missing (missing, seed 1)"
    assert judged.loc["big", "final_verdict"] == "open" and judged.loc["big", "more"] == 3  # can close: seeds
    assert judged.loc["null", "futile"] and judged.loc["null", "more"] == 0  # a lucky study would still need > 12
    # Points tried (errored or stopped ones too: 11 of them) count toward max_seeds: 12 - 11 = 1 more.
    judged = judge(trials, q, margin_points=0.01, max_seeds=12, tried={("big", 8, 0.1): 11}).set_index("block")
    assert judged.loc["big", "more"] == 1
    # Separated: once the sign test can reach the family's level (7 seeds of a large, steady difference).
    done = judge(_trials(range(8), {"big": -0.4}, noise=0.02, seed=int(rng.integers(100))), q, 0.01, 12)
    assert done["final_verdict"].tolist() == ["hurts"] and done["more"].tolist() == [0]
    wide = judge(_trials(range(12), {"tiny": 0.0}, noise=0.0005), q, margin_points=1.0, max_seeds=12)
    assert wide["final_verdict"].tolist() == ["equivalent"]


def test_rounds_whose_trials_all_error_end_within_the_pool():
    """Every point a round adds errors (it never finishes): the bound counts points tried, so the study stops
    once the pool is spent instead of adding a seed a round for ever (13 rounds to seed 12 before)."""
    q = Question.default()
    trials = _trials(range(3), {"big": -0.4}, noise=0.02)
    points, pool = _points(trials), seed_pool([0, 1, 2], 9)
    for rounds in range(1, 20):  # noqa: B007 -- read after the loop
        tried = {k: len(v) for k, v in tried_seeds(points, q, pool).items()}
        new = next_points(judge(trials, q, 0.01, 9, tried), points, q, pool)
        if not new:
            break
        points += new  # on record as points of the study, never in the finished table
    assert rounds == 3 and len(points) == 18 and {p["seed"] for p in points} == set(range(9))


def test_a_comparison_reads_its_pairs_in_the_order_the_rounds_added_them():
    """The sign test's e-process is a product of bets in sequence: a round's pairs come after what the earlier
    look saw, whatever their seed numbers (seed 5 was added before 3 and 4 here)."""
    from ablate.analysis.rounds import chronology
    from ablate.analysis.sequential import e_values

    q = Question.default()
    diffs = {0: 0.10, 1: 0.11, 2: 0.09, 3: 0.02, 4: 0.105, 5: 0.095}
    trials = _trials(range(6), {"x": 0.0}, noise=0.0)
    trials.loc[trials["block"] == "x", "final_val_acc"] += [diffs[s] for s in range(6)]
    trials["auc_val_acc"] = trials["final_val_acc"]
    added = [{"block": b, "depth": 8, "lr": 0.1, "seed": s} for s in (5, 3, 4) for b in ("x", "baseline")]
    got = judge(trials, q, 1.0, 12, order=chronology(added, q))["final_e"].iloc[0]
    assert np.isclose(got, e_values([diffs[s] for s in (0, 1, 2, 5, 3, 4)])[0])
    assert not np.isclose(got, e_values([diffs[s] for s in range(6)])[0])


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_an_until_resolved_study_never_trains_a_point_the_full_max_seeds_grid_lacks(data):
    """Property: over random grids, effects, errored points and rounds, the study's points stay inside the full
    max_seeds grid (every value x cell x pool seed) and never outnumber it; the reference has no seed that no
    comparison in its cell uses."""
    q = Question.default()
    seeds = data.draw(st.lists(st.integers(0, 9), min_size=1, max_size=4, unique=True), label="seeds")
    max_seeds = data.draw(st.integers(min_value=len(seeds), max_value=9), label="max_seeds")
    blocks = ["baseline", *data.draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True))]
    cells = [(8, 0.1), (56, 0.2)][: data.draw(st.integers(1, 2))]
    effects = {b: data.draw(st.sampled_from([0.0, 0.05, -0.3]), label=b) for b in blocks[1:]}
    pool = seed_pool(seeds, max_seeds)
    points = [{"block": b, "depth": d, "lr": lr, "seed": s} for b in blocks for d, lr in cells for s in seeds]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="rng"))
    accs = {}
    for _ in range(data.draw(st.integers(1, 5), label="rounds")):
        for p in points:  # train what is new; now and then a point errors (on record, never finished)
            key = tuple(p.values())
            if key not in accs:
                accs[key] = np.nan if rng.random() < 0.1 else 0.8 + effects.get(p["block"], 0.0) + rng.normal(0, 0.02)
        rows = [
            {
                **p,
                "trial_id": str(i),
                "status": "ERROR" if np.isnan(accs[tuple(p.values())]) else "TERMINATED",
                "final_val_acc": accs[tuple(p.values())],
                "auc_val_acc": accs[tuple(p.values())],
                "diverged": False,
            }
            for i, p in enumerate(points)
        ]
        tried = {k: len(v) for k, v in tried_seeds(points, q, pool).items()}
        judged = judge(pd.DataFrame(rows), q, margin_points=1.0, max_seeds=max_seeds, tried=tried)
        new = next_points(judged, points, q, pool)
        if not new:
            break
        points += new
    full = len(blocks) * len(cells) * len(pool)
    assert len(points) <= full and len({tuple(p.values()) for p in points}) == len(points)
    assert all(p["seed"] in pool for p in points)
    for d, lr in cells:
        ref = {p["seed"] for p in points if p["block"] == "baseline" and (p["depth"], p["lr"]) == (d, lr)}
        used = {p["seed"] for p in points if p["block"] != "baseline" and (p["depth"], p["lr"]) == (d, lr)}
        assert ref <= used | set(seeds)


def test_max_seeds_below_the_first_decisive_n_is_refused_naming_it():
    from ablate.analysis.rounds import check_rounds
    from ablate.errors import UsageError

    check_rounds(6)
    with pytest.raises(UsageError, match=r"key 'max_seeds': 5 seeds can resolve nothing .* before 6 seeds"):
        check_rounds(5)
