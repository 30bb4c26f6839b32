"""``python -m ablate.compare BEFORE AFTER``: did my change change the result?

Reads the two experiments as the report does (``ablate.study.reader``), judges every cell on both metrics
(``ablate.analysis.compare``: same, changed, open or void, anytime-valid), writes ``compare.html`` and
``compare.md``, and exits 0 every cell same, 1 a cell changed, 3 open cells remain (none changed), 2 bad input,
4 a growth failed.  ``--until-resolved`` adds seeds where a cell is open, to both experiments, each grown
through its own records by ``python -m ablate.grid --resume`` (one writer per experiment), until every cell
closes or ``--max-seeds``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd
import yaml

from ablate import storage
from ablate.analysis.compare import AFTER, BEFORE, SIDE, Side, compare, exit_code, rows, summary, write_pages
from ablate.analysis.rounds import check_rounds, first_seen, next_points
from ablate.analysis.stats import finished
from ablate.analysis.table import pipe_table
from ablate.errors import GrowthFailed, UsageError, first_line
from ablate.run.cli import run_main
from ablate.spec.experiment_file import load_experiment
from ablate.spec.question import Question
from ablate.spec.status import Status
from ablate.storage import COMPARE_STATE, EXPERIMENT_FILE
from ablate.study.identity import META_KEYS
from ablate.study.reader import experiment_tables, read_experiment
from ablate.study.study import Study

__all__ = ["main", "read_side", "CompareState"]

PROG = "ablate.compare"


@dataclass
class CompareState:
    """What an ``--until-resolved`` comparison has looked at (``compare.json`` beside its pages): the points in
    the order its looks first saw them finished, so each cell's e-process reads one sequence across looks
    and reruns (``rounds.chronology``)."""

    before: str
    after: str
    seen: List[Dict[str, Any]]

    @classmethod
    def read(cls, out: str, before: Side, after: Side) -> "CompareState":
        ids = (str(before.meta.get("experiment_id")), str(after.meta.get("experiment_id")))
        try:
            with open(os.path.join(out, COMPARE_STATE)) as f:
                saved = json.load(f)
            if (saved.get("before"), saved.get("after")) == ids and isinstance(saved.get("seen"), list):
                return cls(*ids, saved["seen"])
        except (OSError, ValueError, AttributeError):
            pass  # no comparison looked yet (or another pair's): this one starts its sequence
        return cls(*ids, [])

    def look(self, both: pd.DataFrame, q: Question) -> List[Dict[str, Any]]:
        return first_seen(both, q, self.seen)

    def write(self, out: str) -> None:
        os.makedirs(out, exist_ok=True)
        tmp = os.path.join(out, COMPARE_STATE + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"before": self.before, "after": self.after, "seen": self.seen}, f, default=str)
        os.replace(tmp, os.path.join(out, COMPARE_STATE))


def read_side(where: str) -> Side:
    """One experiment of the pair, read as the report reads it (its tables rebuilt where lost: said once)."""
    if not where:
        raise UsageError("an experiment directory is empty; give the directories python -m ablate.grid printed last")
    local, notice = experiment_tables(where.rstrip("/"))
    if notice:
        print(f"{PROG}: notice: {notice}")
    _, trials, meta = read_experiment(local)
    if not meta:
        raise UsageError(f"{where} holds no {EXPERIMENT_FILE}: it is not an ablate experiment")
    return Side(where.rstrip("/"), local, trials, meta)


def _grow(side: Side, points: List[Dict[str, Any]], verbose: bool) -> Tuple[int, int]:
    """Add ``points`` to one experiment (beyond the product of its axes, as a round adds them, but no round of
    its own: its question and its report's rounds stay its own) and train them, with anything of it left
    unfinished, by ``python -m ablate.grid --resume`` (the usual way: its records, one writer).  The grid's
    exit code and the number of points added."""
    # Without its compare: the resume keeps the question the experiment saved (given anew, it would be checked
    # as a new question, and a one-block regression grid asks none).
    settings = {k: v for k, v in side.meta.items() if k not in META_KEYS and k != "compare"}
    parent = (
        side.where.rsplit("/", 1)[0] if storage.is_uri(side.where) else os.path.dirname(os.path.abspath(side.where))
    )
    settings.update(name=os.path.basename(side.where.rstrip("/")), storage_path=parent)
    # The experiment file in the working directory: user block modules beside it are found, as on the first run.
    fd, path = tempfile.mkstemp(prefix=".ablate-compare-", suffix=".yaml", dir=os.getcwd())
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(settings, f, sort_keys=False)
        cfg = load_experiment(path, [])
        study = Study(cfg, resume=True)
        with study.lock():
            study.check()
            added = study.add_points([{k: v for k, v in p.items() if k != SIDE} for p in points], {})
            if added:
                study.write_identity()
        cmd = [sys.executable, "-m", "ablate.grid", path, "--resume", "--no-report"]
        print(
            f"ablate.compare: growing {side.where} by {added} trials (python -m ablate.grid ... --resume)", flush=True
        )
        return subprocess.call(cmd, stdout=None if verbose else subprocess.DEVNULL), added
    finally:
        os.unlink(path)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ablate.compare",
        description="Did my change change the result? Pair every trial of AFTER with BEFORE's at the same point "
        "(every axis and the seed) and judge each cell: same (within --margin points), changed (with "
        "its interval) or open. Exit 0: every cell same; 1: a cell changed; 3: open cells remain; 2: "
        "bad input; 4: growing an experiment failed (--until-resolved).",
    )
    p.add_argument("before", help="the experiment directory (or URI) of the code before the change")
    p.add_argument("after", help="the experiment directory (or URI) of the code after it")
    p.add_argument("--margin", type=float, default=0.5, help="'same' means within +- this many accuracy points (0.5)")
    p.add_argument("--differs", default="", help="settings that change a result and differ on purpose, comma-separated")
    p.add_argument(
        "--until-resolved",
        action="store_true",
        help="add seeds to both experiments where a cell is open, until it closes or --max-seeds",
    )
    p.add_argument("--max-seeds", type=int, default=12, help="seeds per cell at most, with --until-resolved (12)")
    p.add_argument("--out", help="where compare.html and compare.md go (default: AFTER's directory)")
    p.add_argument(
        "--verbose", action="store_true", help="show the grid's own output while growing (its errors always)"
    )
    p.add_argument(
        "--wandb-report",
        action="store_true",
        help="also save the comparison as a W&B Report of the two groups (needs WANDB_API_KEY or `wandb login`)",
    )
    args = p.parse_args(argv)
    interrupted = ("interrupted; what finished is kept: run the same command again to continue", 130)
    return run_main(PROG, lambda: _main(args), interrupted=lambda: interrupted)


def _main(args) -> int:
    if not (0 < args.margin <= 100):
        raise UsageError(f"--margin {args.margin:g}: allowed: more than 0 and at most 100 accuracy points")
    named = [k.strip() for k in args.differs.split(",") if k.strip()]
    before, after = read_side(args.before), read_side(args.after)
    if os.path.realpath(before.local) == os.path.realpath(after.local):
        raise UsageError("BEFORE and AFTER are the same experiment; give two experiment directories")
    out = args.out or after.local
    state = CompareState.read(out, before, after)
    if args.until_resolved:
        check_rounds(args.max_seeds, "--max-seeds")
        for side in (before, after):
            if side.meta.get("scheduler") == "asha":  # ASHA stops weak points: which pairs exist depends on results
                raise UsageError(
                    f"--until-resolved: {side.name} runs scheduler asha, whose stopped trials never pair; "
                    "allowed: experiments run with scheduler fifo"
                )
    for _ in range(args.max_seeds + 3):  # each pass adds a seed or finishes what a pass before began
        judged, q, lacks, diff, both, pool = compare(before, after, args.margin, args.max_seeds, named, state.seen)
        if not args.until_resolved:
            break
        state.seen = state.look(both, q)
        state.write(out)
        points = [{a: r[a] for a in q.axes} for r in both.to_dict("records")]
        finished_points = [{a: r[a] for a in q.axes} for r in finished(both).to_dict("records")]
        grow = next_points(judged, points, q, pool, finished_points)
        unfinished = {
            name
            for name, side in ((BEFORE, before), (AFTER, after))
            if (~side.trials["status"].isin(Status.ended())).any()
        }
        if not grow and not unfinished:
            break
        grew = 0
        for side, name in ((before, BEFORE), (after, AFTER)):
            mine = [pt for pt in grow if pt[SIDE] == name]
            if mine or name in unfinished:  # a growth interrupted before: trained now, as a rerun promises
                code, added = _grow(side, mine, args.verbose)
                if code:
                    raise GrowthFailed(
                        f"growing {side.where} failed (python -m ablate.grid exited {code}; its error "
                        "is above); fix it, then run the same command again to continue"
                    )
                grew += added or (name in unfinished)
        if not grew:  # nothing new could be added: the comparison stands as it is
            break
        before, after = read_side(args.before), read_side(args.after)
    head = summary(before, after, judged, q, lacks, diff, args.margin)
    md, html_path = write_pages(out, before, after, judged, q, head, args.margin)

    print("\n".join(head))
    print(pipe_table(rows(judged, q)))
    print(f"compare: {html_path}")
    if args.wandb_report:
        _wandb_report(before, after, [" | ".join(map(str, r.values())) for r in rows(judged, q).to_dict("records")])
    return exit_code(judged)


def _wandb_report(before: Side, after: Side, lines: List[str]) -> None:
    import wandb  # only with --wandb-report

    from ablate.analysis.wandb_report import build_compare_report  # wandb_workspaces: only with --wandb-report
    from ablate.run.tracking import has_api_key  # requests, as wandb_workspaces: only with --wandb-report

    if not has_api_key():
        raise UsageError("--wandb-report needs WANDB_API_KEY (or `wandb login`); compare.html is written")
    try:
        entity = (
            (after.meta.get("wandb") or {}).get("entity")
            or os.environ.get("WANDB_ENTITY")
            or wandb.Api().default_entity
        )
        report = build_compare_report(before.meta, after.meta, lines, entity)
        report.save()
    except Exception as e:  # noqa: BLE001 -- W&B refused the key, or is unreachable: the pages above stand
        raise UsageError(
            f"W&B did not take the report ({e.__class__.__name__}: {first_line(e)}); compare.html is "
            "written; check the key (wandb login) and the network"
        ) from None
    print(f"W&B report: {report.url}")
