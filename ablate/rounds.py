"""``--until-resolved``: more seeds only where a comparison is still open, judged by statistics that stay
valid however often the study looks (``ablate.sequential``).  No Ray, no torch here.

A comparison is one value of the compared axis against the reference, in one cell of the context, on
final accuracy (the convergence metric, AUC, is judged the same way and reported beside it).  After every
round each is **separated** (helps or hurts: e-BH over all of them), **equivalent** (its interval within
+- the margin) or **open**.  The next round adds seeds to open comparisons only, each new seed training the
open value and the reference in that cell (so pairs stay paired), sized by the forecast of the seeds that
would close it, at most ``ROUND_SEEDS`` per round and never beyond ``max_seeds`` per comparison.
The seeds a round adds are the cell's next unused ones, so a round interrupted and judged again adds
the same points: nothing trains twice.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List

import numpy as np
import pandas as pd

from .axes import PAIR
from .sequential import forecast_seeds, verdicts
from .stats import ALPHA, Question, finished

__all__ = ["judge", "next_points", "next_round", "ROUND_SEEDS", "resolved_count"]

ROUND_SEEDS = 3  # at most this many seeds per open comparison per round: look again before spending more
METRICS = (("final_val_acc", "final"), ("auc_val_acc", "auc"))


def judge(trials: pd.DataFrame, q: Question, margin_points: float, max_seeds: int) -> pd.DataFrame:
    """Every comparison's state now: a row per value x context cell, with ``n`` (paired seeds), for each
    metric its mean difference, anytime-valid interval, e-value and verdict, and, where final acc is
    open, ``forecast`` (seeds that would close it) and ``more`` (seeds the next round adds)."""
    fin = finished(trials)
    ref = fin[fin[q.subject] == q.reference]
    rows: List[Dict[str, Any]] = []
    diffs: Dict[str, List[np.ndarray]] = {short: [] for _, short in METRICS}
    for key, g in fin[fin[q.subject] != q.reference].groupby([q.subject, *q.context], sort=True):
        m = g.merge(ref, on=[*q.context, PAIR], suffixes=("", "_ref"))
        row = {q.subject: key[0], **{c: (v.item() if hasattr(v, "item") else v) for c, v in zip(q.context, key[1:])},
               "n": len(m), "seeds": sorted(int(s) for s in m[PAIR])}
        rows.append(row)
        for metric, short in METRICS:
            diffs[short].append((m[metric] - m[f"{metric}_ref"]).to_numpy(float))
    if not rows:
        return pd.DataFrame()
    margin = margin_points / 100.0
    for metric, short in METRICS:
        for row, v in zip(rows, verdicts(diffs[short], ALPHA, margin)):
            row.update({f"{short}_mean": v["mean"], f"{short}_sd": v["sd"], f"{short}_low": v["low"],
                        f"{short}_high": v["high"], f"{short}_e": v["e"], f"{short}_verdict": v["verdict"]})
    k = len(rows)
    for row in rows:
        row["forecast"] = (forecast_seeds(row["final_mean"], row["final_sd"], row["n"], k, ALPHA, margin)
                           if row["final_verdict"] == "open" else math.nan)
        room = max(0, max_seeds - row["n"])
        row["more"] = (0 if row["final_verdict"] != "open" else
                       min(room, ROUND_SEEDS, max(1, int(row["forecast"] - row["n"]) if math.isfinite(row["forecast"])
                                                  else ROUND_SEEDS)))
    return pd.DataFrame(rows)


def resolved_count(judged: pd.DataFrame) -> int:
    return int((judged["final_verdict"] != "open").sum()) if len(judged) else 0


def next_points(judged: pd.DataFrame, trials: pd.DataFrame, q: Question) -> List[Dict[str, Any]]:
    """The points the next round trains: for each open comparison its ``more`` next seeds of its cell, for
    the value and for the reference (pairs stay paired); each point once."""
    points: Dict[tuple, Dict[str, Any]] = {}
    for r in judged[judged["more"] > 0].to_dict("records") if len(judged) else []:
        cell = {c: r[c] for c in q.context}
        in_cell = trials
        for c, v in cell.items():
            in_cell = in_cell[in_cell[c] == v]
        start = int(in_cell[PAIR].max()) + 1 if len(in_cell) else 0
        for seed in range(start, start + int(r["more"])):
            for value in (r[q.subject], q.reference):
                p = {q.subject: value, **cell, PAIR: seed}
                points[tuple(sorted((k, str(v)) for k, v in p.items()))] = p
    return list(points.values())


def next_round(study, errored: set) -> list:
    """Judge every comparison of ``study`` (anytime-valid), write the interim tables and report, and add the
    next round's points to the study (its identity first: a round interrupted continues on
    ``--resume --until-resolved``); the groups that train next, none when nothing is open."""
    import sys

    from .axes import context_of
    from .report import write_report
    from .results import write_csvs

    cfg = study.cfg
    history, trials_df = study.tables(errored, interrupted=False)
    subject, reference = cfg.subject()
    q = Question(subject, reference, list(cfg.axes()), context_of(list(cfg.axes()), subject))
    judged = judge(trials_df, q, cfg.equivalence_margin, cfg.max_seeds)
    points = next_points(judged, trials_df, q)
    r = int(study.rounds.get("round", 0)) + 1
    state = {"round": r, "resolved": resolved_count(judged), "total": len(judged), "final": not points}
    added = study.add_points(points, state)
    study.write_identity()
    os.makedirs(cfg.output_dir, exist_ok=True)
    write_csvs(cfg.output_dir, history, trials_df)
    what = (f"adding {added} trials: {int((judged['more'] > 0).sum())} open comparisons get "
            f"{', '.join(sorted({str(int(m)) for m in judged['more'] if m > 0}))} more seeds" if points else
            "none is open, or each open one has max_seeds" if len(judged) else "nothing to compare")
    print(f"ablate.grid: round {r}: {state['resolved']} of {state['total']} comparisons resolved; {what}", flush=True)
    if points:
        try:
            write_report(cfg.output_dir)  # interim: the page says which round
        except Exception as e:  # noqa: BLE001 -- the report must never cost the study its next round
            print(f"ablate.grid: warning: interim report failed ({e.__class__.__name__}: {e})", file=sys.stderr)
    return study.plan() if points else []
