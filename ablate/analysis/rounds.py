"""``--until-resolved``: more seeds only where a comparison is still open and can still close, judged by
statistics that stay valid however often the study looks (``ablate.analysis.sequential``).  Pure: tables in,
verdicts and points out; no Ray, no torch, no files (the driver's round loop, ``grid._next_round``, writes).

A comparison is one value of the compared axis against the reference, in one cell of the context.  After
every round each is judged on final accuracy and AUC as one family (``sequential.judge_family``):
**separated** (helps or hurts), **equivalent** (its interval within +- the margin), **void** (a metric is
missing: not tested, no seeds) or **open**.  The next round adds seeds to comparisons whose final accuracy
is open and that can still close within ``max_seeds`` even on a favourable forecast (the rest are
*futile*: the page says what they would need), each new seed training the open value and, where it is not
already there, the reference in that cell (pairs stay paired), sized by the cautious forecast, at most
``ROUND_SEEDS`` per round.

**No seed wasted.** The seeds a study may use are its *pool*: the grid's seeds, then the smallest unused
ones, ``max_seeds`` in all (the full ``max_seeds`` grid).  A comparison's next seeds are the lowest seeds of
the pool it lacks, first those whose reference point in its cell is already in the study; the reference
gets a seed only where an open comparison takes it.  A comparison's bound counts the seeds it *tried* (an
errored or stopped point counts), so a point that errors is not tried again every round, and a round that
adds nothing ends the study.  A round interrupted and judged again adds the same points: nothing trains
twice.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import pandas as pd

from ablate.analysis.sequential import closes_at, judge_family, min_decisive_seeds
from ablate.analysis.stats import ALPHA, finished, missing, plain
from ablate.errors import UsageError
from ablate.spec.axes import PAIR
from ablate.spec.question import Question

__all__ = [
    "judge",
    "next_points",
    "seed_pool",
    "tried_seeds",
    "chronology",
    "seen_now",
    "order_of",
    "ROUND_SEEDS",
    "resolved_count",
    "METRICS",
    "check_rounds",
]

ROUND_SEEDS = 3  # at most this many seeds per open comparison per round: look again before spending more
METRICS = (("final_val_acc", "final"), ("auc_val_acc", "auc"))


def seed_pool(seeds: Iterable[int], max_seeds: int) -> List[int]:
    """The seeds an until-resolved study may use: the grid's own, then the smallest unused, ``max_seeds`` in all
    (never fewer than the grid's)."""
    seeds = [int(s) for s in seeds]
    extra = max(0, max_seeds - len(seeds))
    fill, s = [], 0
    while len(fill) < extra:
        if s not in seeds:
            fill.append(s)
        s += 1
    return [*seeds, *fill]


def _cell(point: Mapping[str, Any], context: List[str]) -> tuple:
    return tuple(plain(point[c]) for c in context)


def chronology(points: Iterable[Mapping[str, Any]], q: Question) -> Dict[tuple, int]:
    """Each point's place in the sequence a comparison's e-process reads (1, 2, ...): the order in which the
    study's looks first saw the points finished (``seen``).  A pair's place is its later point's, so what a
    look sees for the first time always comes after what an earlier look saw (Ville's inequality needs the
    sequence, not a reordering of it); pairs no look has seen yet come last, by seed."""
    out: Dict[tuple, int] = {}
    for i, p in enumerate(points):
        out.setdefault((plain(p[q.subject]), *_cell(p, q.context), int(p[PAIR])), i + 1)
    return out


def first_seen(trials: pd.DataFrame, q: Question, seen: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``seen`` and then the finished points this look sees for the first time (by seed): what the next look's
    ``chronology`` reads."""
    known = chronology(seen, q)
    fin = finished(trials)
    new = [
        {q.subject: plain(r[q.subject]), **{c: plain(r[c]) for c in q.context}, PAIR: int(r[PAIR])}
        for r in fin.sort_values(PAIR, kind="stable").to_dict("records")
    ]
    return [*seen, *(p for p in new if (p[q.subject], *_cell(p, q.context), p[PAIR]) not in known)]


def seen_now(trials: pd.DataFrame, q: Question, rounds: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The study's ``seen`` list after this look (written with its rounds); for a study written before there was
    one, the points it holds in the order its looks read them."""
    if "seen" in rounds:
        return first_seen(trials, q, rounds["seen"] or [])
    order, unseen = order_of(rounds, q)
    return sorted(
        first_seen(trials, q, []),
        key=lambda p: (order.get((p[q.subject], *_cell(p, q.context), p[PAIR]), unseen), p[PAIR]),
    )


def order_of(rounds: Mapping[str, Any], q: Question) -> Tuple[Dict[tuple, int], int]:
    """A study's chronology and the place of pairs it has not seen: from its ``seen`` list, or, for a study
    written before there was one, from its rounds' ``points`` (the grid's own points first, place 0)."""
    if "seen" in rounds:
        seen = rounds.get("seen") or []
        return chronology(seen, q), len(seen) + 1
    return chronology(rounds.get("points", []), q), 0


def _in_order(m: pd.DataFrame, value: Any, q: Question, order: Mapping[tuple, int], unseen: int) -> pd.DataFrame:
    """A comparison's pairs in the order they completed: by the later of the two points' place, then seed."""
    if not len(m):
        return m
    cells = [tuple(plain(r[c]) for c in q.context) for r in m[q.context].to_dict("records")]
    seeds = [int(s) for s in m[PAIR]]
    ref = plain(q.reference)
    when = [max(order.get((value, *c, s), unseen), order.get((ref, *c, s), unseen)) for c, s in zip(cells, seeds)]
    return m.assign(_when=when).sort_values(["_when", PAIR], kind="stable").drop(columns="_when")


def judge(
    trials: pd.DataFrame,
    q: Question,
    margin_points: float,
    max_seeds: int,
    tried: Optional[Mapping[tuple, int]] = None,
    drive: Tuple[str, ...] = ("final",),
    order: Optional[Mapping[tuple, int]] = None,
    unseen: int = 0,
) -> pd.DataFrame:
    """Every comparison's state now: a row per value x context cell, with ``n`` (paired seeds), for each
    metric its mean difference, anytime-valid interval, e-value and verdict (one family); where final acc is
    open, ``forecast`` (seeds after which it closes, cautious), ``favourable`` (what even a lucky study would
    need), ``futile`` (not within ``max_seeds``) and ``more`` (seeds the next round adds).  ``tried``: seeds
    each (value, *cell) already has as points of the study, whatever their status (default: ``n``);
    ``drive``: the metrics whose open verdict asks for seeds (final acc; ``ablate.compare``: both);
    ``order``, ``unseen``: each point's place in the sequence, and that of points not in it (``order_of``;
    default: the seed order)."""
    fin = finished(trials)
    ref = fin[fin[q.subject] == q.reference]
    rows: List[Dict[str, Any]] = []
    diffs: Dict[str, List[np.ndarray]] = {short: [] for _, short in METRICS}
    for key, g in fin[fin[q.subject] != q.reference].groupby([q.subject, *q.context], sort=True, dropna=False):
        m = g.merge(ref, on=[*q.context, PAIR], suffixes=("", "_ref"))
        m = _in_order(m, plain(key[0]), q, order or {}, unseen)
        row = {
            q.subject: plain(key[0]),
            **{c: plain(v) for c, v in zip(q.context, key[1:])},
            "n": len(m),
            "seeds": sorted(int(s) for s in m[PAIR]),
        }
        for metric, short in METRICS:
            diffs[short].append((m[metric] - m[f"{metric}_ref"]).to_numpy(float))
        row["void"] = missing(m, q.who(key[0]), q.who(q.reference), suffix="_ref")
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    margin = margin_points / 100.0
    judged = judge_family(diffs, ALPHA, margin)
    m_total = max(1, sum(1 for short in judged for v in judged[short] if v["verdict"] != "void"))
    for short, verdicts in judged.items():
        for row, v in zip(rows, verdicts):
            row.update(
                {
                    f"{short}_mean": v["mean"],
                    f"{short}_sd": v["sd"],
                    f"{short}_low": v["low"],
                    f"{short}_high": v["high"],
                    f"{short}_e": v["e"],
                    f"{short}_verdict": v["verdict"],
                    f"{short}_level": v["level"],
                }
            )
    n_min = min_decisive_seeds(ALPHA)
    for i, row in enumerate(rows):
        have = int((tried or {}).get((row[q.subject], *_cell(row, q.context)), row["n"]))
        row["tried"] = max(have, row["n"])
        row["forecast"] = row["favourable"] = math.nan
        row["futile"] = False
        open_ = [short for short in drive if row[f"{short}_verdict"] == "open"]
        if not open_:
            row["more"] = 0
            continue
        room = max(0, max_seeds - row["tried"])
        if row["n"] < 2:  # nothing to forecast from: one more round's worth, within the bound
            row["more"] = min(room, ROUND_SEEDS, max(1, n_min - row["n"]))
            continue
        # It closes when every open metric it is driven by closes: the latest forecast; futile if any cannot.
        row["forecast"] = max(closes_at(diffs[s][i], row[f"{s}_level"], ALPHA / m_total, margin) for s in open_)
        row["favourable"] = max(
            closes_at(diffs[s][i], row[f"{s}_level"], ALPHA / m_total, margin, favourable=True) for s in open_
        )
        row["futile"] = not (row["favourable"] <= max_seeds)
        if row["futile"]:
            row["more"] = 0
            continue
        want = int(row["forecast"] - row["n"]) if math.isfinite(row["forecast"]) else ROUND_SEEDS
        row["more"] = min(room, ROUND_SEEDS, max(1, want))
    return pd.DataFrame(rows)


def resolved_count(judged: pd.DataFrame) -> int:
    """Comparisons resolved: final accuracy separated or equivalent."""
    return int(judged["final_verdict"].isin(["helps", "hurts", "equivalent"]).sum()) if len(judged) else 0


def tried_seeds(points: Iterable[Mapping[str, Any]], q: Question, pool: List[int]) -> Dict[tuple, set]:
    """Each (value, *cell)'s seeds of the pool that are points of the study (trained, training, errored or not)."""
    out: Dict[tuple, set] = {}
    allowed = set(pool)
    for p in points:
        if int(p[PAIR]) in allowed:
            out.setdefault((plain(p[q.subject]), *_cell(p, q.context)), set()).add(int(p[PAIR]))
    return out


def next_points(
    judged: pd.DataFrame,
    points: Iterable[Mapping[str, Any]],
    q: Question,
    pool: List[int],
    finished_points: Optional[Iterable[Mapping[str, Any]]] = None,
) -> List[Dict[str, Any]]:
    """The points the next round trains: for each comparison with ``more`` > 0, the lowest seeds of the pool it
    lacks, first those whose reference point in its cell is already trained (in ``finished_points``; default:
    in the study); with the reference where the study lacks that seed.  Each point once; never a seed outside
    the pool."""
    points = list(points)
    have = tried_seeds(points, q, pool)
    done = tried_seeds(finished_points, q, pool) if finished_points is not None else have
    out: Dict[tuple, Dict[str, Any]] = {}
    for r in judged[judged["more"] > 0].to_dict("records") if len(judged) else []:
        cell = {c: r[c] for c in q.context}
        key = _cell(r, q.context)
        mine = have.get((r[q.subject], *key), set())
        ref = done.get((plain(q.reference), *key), set())
        lacking = [s for s in pool if s not in mine]
        ordered = [s for s in lacking if s in ref] + [s for s in lacking if s not in ref]
        for seed in ordered[: int(r["more"])]:
            for value in (r[q.subject], q.reference):
                if seed in have.get((plain(value), *key), set()):
                    continue
                p = {q.subject: value, **cell, PAIR: seed}
                out[(plain(value), *key, seed)] = p
    return list(out.values())


def check_rounds(max_seeds: int, key: str = "key 'max_seeds'") -> None:
    """--until-resolved can decide nothing below the fewest seeds at which any comparison can be decided."""
    n = min_decisive_seeds(ALPHA)
    if max_seeds < n:
        raise UsageError(
            f"{key}: {max_seeds} seeds can resolve nothing with --until-resolved: no comparison can be "
            f"decided before {n} seeds (the sign test's largest e-value at {max_seeds} seeds is below "
            f"1/{ALPHA:g}); allowed: {n} to 1000"
        )
