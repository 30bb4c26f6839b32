"""``python -m ablate.compare BEFORE AFTER``: did my change change the result?

Two experiments (a run on main and a run on a branch; before and after a torch upgrade, a rewritten block,
another augmentation) as one paired study: every trial of AFTER is paired with the trial of BEFORE at the
same point (every axis and the seed: the same initialisation and data order), and each *cell* (a point
without its seed: block x depth x lr x any swept setting) is judged on final accuracy and AUC with the
report's own statistics (``ablate.sequential``: anytime-valid, one family, an equivalence margin):

- **same**: within +-``--margin`` points (default 0.5) on both metrics;
- **changed**: a difference, with its interval;
- **open**: the seeds cannot tell yet; **void**: a metric is missing.

The comparison is an ordinary question of ablate's (``ablate.rounds``): its subject is the *side* (AFTER
against the reference BEFORE), its context every axis but the seed.  Exit codes, for CI: 0 every cell
same, 1 a cell changed, 3 open cells remain (none changed), 2 bad input, 4 a growth failed.  ``--until-resolved`` adds seeds
where a cell is open, to both experiments, each grown through its own records by ``python -m ablate.grid
--resume`` (one writer per experiment), until every cell closes or ``--max-seeds``.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

from .axes import PAIR
from .messages import AblateError, UsageError
from .stats import Question, axes_of, finished, value_text

__all__ = ["main", "compare", "Side", "EXIT_SAME", "EXIT_CHANGED", "EXIT_OPEN", "EXIT_GROWTH_FAILED"]

EXIT_SAME, EXIT_CHANGED, EXIT_OPEN, EXIT_GROWTH_FAILED = 0, 1, 3, 4
SIDE, BEFORE, AFTER = "side", "before", "after"
COMPARE_HTML, COMPARE_MD, COMPARE_STATE = "compare.html", "compare.md", "compare.json"
# The settings of the two identities that are not compared: what changes no result, what the axes already pair,
# and the experiment's own bookkeeping.
AXIS_KEYS = ("blocks", "depths", "lrs", "seeds", "sweep", "block_modules")


@dataclass
class Side:
    """One experiment of the pair, read as the report reads it."""

    where: str      # as given (a directory or a URI)
    local: str      # where its tables are on this machine
    trials: pd.DataFrame
    meta: Dict[str, Any]

    @classmethod
    def read(cls, where: str) -> "Side":
        from .report import _meta, experiment_tables
        from .results import read_csvs

        if not where:
            raise UsageError("an experiment directory is empty; give the directories python -m ablate.grid printed last")
        local = experiment_tables(where.rstrip("/"), prog="ablate.compare")
        _, trials = read_csvs(local)
        meta = _meta(local)
        if not meta:
            raise UsageError(f"{where} holds no ablate_experiment.yaml: it is not an ablate experiment")
        return cls(where.rstrip("/"), local, trials, meta)

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or os.path.basename(self.where))

    def provenance(self) -> str:
        prov = self.meta.get("provenance") or {}
        versions = ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items())
        return f"{self.name} ({self.where}): commit {prov.get('git_commit') or 'unknown'}; {versions or 'versions unknown'}"


class GrowthFailed(AblateError):
    """A growth's grid run failed: exit 4, never 1 (which says "changed")."""

    code = EXIT_GROWTH_FAILED


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
        import json

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
        from .rounds import first_seen

        return first_seen(both, q, self.seen)

    def write(self, out: str) -> None:
        import json

        os.makedirs(out, exist_ok=True)
        tmp = os.path.join(out, COMPARE_STATE + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"before": self.before, "after": self.after, "seen": self.seen}, f, default=str)
        os.replace(tmp, os.path.join(out, COMPARE_STATE))


def result_settings(meta: Dict[str, Any]) -> Dict[str, Any]:
    """The settings of an identity that change a result, as they act (the axes are paired, not compared)."""
    from .settings import NO_RESULT, TrainSettings, as_it_acts

    dataset = meta.get("dataset")
    return {k: as_it_acts(k, meta.get(k), dataset) for k in TrainSettings.model_fields
            if k not in NO_RESULT and k not in AXIS_KEYS and k in meta}


def differing(before: Side, after: Side) -> Dict[str, Tuple[Any, Any]]:
    b, a = result_settings(before.meta), result_settings(after.meta)
    return {k: (b.get(k), a.get(k)) for k in sorted(set(b) | set(a)) if b.get(k) != a.get(k)}


def check(before: Side, after: Side, named: List[str]) -> Tuple[List[str], Dict[str, Tuple[Any, Any]]]:
    """The axes the two share (refused: other axes, or settings that change a result and differ unnamed)."""
    from .settings import TrainSettings

    unknown = [k for k in named if k not in TrainSettings.model_fields]
    if unknown:
        raise UsageError(f"--differs {','.join(unknown)}: not a setting; allowed: settings that change a result, "
                         "such as epochs, weight_decay, precision, dataset")
    axes_b, axes_a = axes_of(before.trials), axes_of(after.trials)
    if axes_b != axes_a:
        raise UsageError(f"the two experiments have other axes ({', '.join(axes_b)} against {', '.join(axes_a)}): "
                         "points cannot be paired; compare experiments of the same grid (axes may hold other values)")
    diff = differing(before, after)
    unnamed = {k: v for k, v in diff.items() if k not in named}
    if unnamed:
        said = "; ".join(f"{k} {value_text(b)} in {before.name} but {value_text(a)} in {after.name}"
                         for k, (b, a) in list(unnamed.items())[:4])
        raise UsageError(f"settings that change a result differ: {said}; if that is the change under test, name it "
                         f"with --differs {','.join(unnamed)}")
    return axes_b, diff


def paired_table(before: Side, after: Side, axes: List[str]) -> Tuple[pd.DataFrame, Dict[str, int]]:
    """Both experiments' trials as one table with a ``side`` axis, and what each side lacks of the other."""
    keys = [a for a in axes]
    b = before.trials.assign(**{SIDE: BEFORE})
    a = after.trials.assign(**{SIDE: AFTER})
    pts_b = {tuple(_same(v) for v in r) for r in b[keys].itertuples(index=False)}
    pts_a = {tuple(_same(v) for v in r) for r in a[keys].itertuples(index=False)}
    lacks = {before.name: len(pts_a - pts_b), after.name: len(pts_b - pts_a)}
    if not pts_a & pts_b:
        raise UsageError(f"{before.name} and {after.name} share no point (the same value of every axis and the same "
                         f"seed): nothing can be paired; {after.name} has {len(pts_a)} points, {before.name} "
                         f"{len(pts_b)}")
    both = pd.concat([b, a], ignore_index=True)
    cols = [*axes, SIDE] + [c for c in both.columns if c not in axes and c != SIDE]
    return both[cols], lacks


def _same(v: Any) -> Any:
    """A value as both sides' tables hold it alike (a CSV reads 0 as int on one side and 0.0 on the other)."""
    v = v.item() if hasattr(v, "item") else v
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def question(axes: List[str]) -> Question:
    return Question(SIDE, BEFORE, [*axes, SIDE], [a for a in axes if a != PAIR])


def compare(before: Side, after: Side, margin: float, max_seeds: int, named: List[str],
            seen: Optional[List[Dict[str, Any]]] = None):
    """The paired judgement: (judged rows per cell, the question, what each side lacks, the settings that differ,
    both sides as one table, the seed pool); each cell judged on both metrics, its bound counting points tried,
    its pairs read in the order the comparison's looks first saw them (``seen``)."""
    from .rounds import chronology, judge, seed_pool, tried_seeds

    axes, diff = check(before, after, named)
    both, lacks = paired_table(before, after, axes)
    q = question(axes)
    pool = seed_pool(sorted({int(s) for s in both[PAIR]}), max_seeds)
    tried = {k: len(v) for k, v in tried_seeds(both.to_dict("records"), q, pool).items()}
    seen = seen or []
    judged = judge(both, q, margin, max_seeds, tried, drive=("final", "auc"), order=chronology(seen, q),
                   unseen=len(seen) + 1)
    if not len(judged):
        raise UsageError(f"no finished trial of {before.name} pairs with one of {after.name}: nothing to compare")
    return judged, q, lacks, diff, both, pool


def cell_verdict(r: Dict[str, Any]) -> str:
    """A cell's verdict on both metrics: changed (either separated), same (both equivalent), void, or open."""
    v = (r["final_verdict"], r["auc_verdict"])
    if any(x in ("helps", "hurts") for x in v):
        return "changed"
    if all(x == "equivalent" for x in v):
        return "same"
    if "void" in v:
        return "void"
    return "open"


def exit_code(judged: pd.DataFrame) -> int:
    verdicts = [cell_verdict(r) for r in judged.to_dict("records")]
    if "changed" in verdicts:
        return EXIT_CHANGED
    return EXIT_SAME if all(v == "same" for v in verdicts) else EXIT_OPEN


def _metric_text(r: Dict[str, Any], key: str) -> str:
    from .findings import pts

    v = r[f"{key}_verdict"]
    if v == "void":
        return "void"
    low, high = r[f"{key}_low"], r[f"{key}_high"]
    edge = lambda x: pts(x) if math.isfinite(x) else ("-inf" if x < 0 else "+inf")  # noqa: E731
    word = {"helps": "changed", "hurts": "changed", "equivalent": "same"}.get(v, "open")
    return f"{word} {pts(r[f'{key}_mean'])} [{edge(low)}, {edge(high)}]"


def rows(judged: pd.DataFrame, q: Question) -> pd.DataFrame:
    return pd.DataFrame([{"cell": q.where(r), "seeds": r["n"], "verdict": cell_verdict(r),
                          "final acc, points [anytime 95%]": _metric_text(r, "final"),
                          "AUC, points [anytime 95%]": _metric_text(r, "auc")} for r in judged.to_dict("records")])


def summary(before: Side, after: Side, judged: pd.DataFrame, q: Question, lacks: Dict[str, int],
            diff: Dict[str, Tuple[Any, Any]], margin: float) -> List[str]:
    code = exit_code(judged)
    counts = pd.Series([cell_verdict(r) for r in judged.to_dict("records")]).value_counts().to_dict()
    overall = {EXIT_SAME: "same", EXIT_CHANGED: "changed", EXIT_OPEN: "open"}[code]
    lines = [f"before: {before.provenance()}", f"after:  {after.provenance()}"]
    if diff:
        lines.append("differs (named): " + "; ".join(f"{k} {value_text(b)} -> {value_text(a)}" for k, (b, a) in diff.items()))
    for name, n in lacks.items():
        if n:
            lines.append(f"{name} lacks {n} points the other holds (not compared)")
    lines.append(f"overall: {overall} ({', '.join(f'{n} {v}' for v, n in sorted(counts.items()))} of {len(judged)} "
                 f"cells; same = within +-{margin:g} points on final acc and AUC, anytime-valid, one family at 5%)")
    return lines


def write_pages(out: str, before: Side, after: Side, judged: pd.DataFrame, q: Question, head: List[str],
                margin: float) -> Tuple[str, str]:
    """compare.md and compare.html (one self-contained page: the per-cell differences with their intervals)."""
    import html

    from . import figures
    from .results import pipe_table

    table = rows(judged, q)
    md = [f"# Did the change change the result? {after.name} against {before.name}", "", *[f"- {h}" for h in head], "",
          pipe_table(table), ""]
    os.makedirs(out, exist_ok=True)
    md_path, html_path = os.path.join(out, COMPARE_MD), os.path.join(out, COMPARE_HTML)
    with open(md_path, "w") as f:
        f.write("\n".join(md))
    png = figures.paired_differences(judged, q, margin)
    body = "".join(f"<li>{html.escape(h)}</li>" for h in head)
    with open(html_path, "w") as f:
        f.write(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(after.name)} against "
                f"{html.escape(before.name)}</title><style>body{{font-family:sans-serif;max-width:1300px;margin:auto}}"
                "td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style></head><body>"
                f"<h1>Did the change change the result? {html.escape(after.name)} against {html.escape(before.name)}</h1>"
                f"<ul>{body}</ul>"
                + (f"<img alt='per-cell paired differences' src='data:image/png;base64,{png}'>" if png else "")
                + table.to_html(index=False, escape=True) + "</body></html>")
    return md_path, html_path


def _grow(side: Side, points: List[Dict[str, Any]], verbose: bool) -> Tuple[int, int]:
    """Add ``points`` to one experiment (beyond the product of its axes, as a round adds them, but no round of
    its own: its question and its report's rounds stay its own) and train them, with anything of it left
    unfinished, by ``python -m ablate.grid --resume`` (the usual way: its records, one writer).  The grid's
    exit code and the number of points added."""
    import yaml

    from . import storage
    from .experiment_file import load_experiment
    from .identity import META_KEYS
    from .study import Study

    # Without its compare: the resume keeps the question the experiment saved (given anew, it would be checked
    # as a new question, and a one-block regression grid asks none).
    settings = {k: v for k, v in side.meta.items() if k not in META_KEYS and k != "compare"}
    parent = side.where.rsplit("/", 1)[0] if storage.is_uri(side.where) else os.path.dirname(os.path.abspath(side.where))
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
        print(f"ablate.compare: growing {side.where} by {added} trials (python -m ablate.grid ... --resume)",
              flush=True)
        return subprocess.call(cmd, stdout=None if verbose else subprocess.DEVNULL), added
    finally:
        os.unlink(path)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ablate.compare",
        description="Did my change change the result? Pair every trial of AFTER with BEFORE's at the same point "
                    "(every axis and the seed) and judge each cell: same (within --margin points), changed (with "
                    "its interval) or open. Exit 0: every cell same; 1: a cell changed; 3: open cells remain; 2: "
                    "bad input; 4: growing an experiment failed (--until-resolved).")
    p.add_argument("before", help="the experiment directory (or URI) of the code before the change")
    p.add_argument("after", help="the experiment directory (or URI) of the code after it")
    p.add_argument("--margin", type=float, default=0.5, help="'same' means within +- this many accuracy points (0.5)")
    p.add_argument("--differs", default="", help="settings that change a result and differ on purpose, comma-separated")
    p.add_argument("--until-resolved", action="store_true",
                   help="add seeds to both experiments where a cell is open, until it closes or --max-seeds")
    p.add_argument("--max-seeds", type=int, default=12, help="seeds per cell at most, with --until-resolved (12)")
    p.add_argument("--out", help="where compare.html and compare.md go (default: AFTER's directory)")
    p.add_argument("--verbose", action="store_true", help="show the grid's own output while growing (its errors always)")
    p.add_argument("--wandb-report", action="store_true",
                   help="also save the comparison as a W&B Report of the two groups (needs WANDB_API_KEY or `wandb login`)")
    args = p.parse_args(argv)
    try:
        return _main(args)
    except AblateError as e:
        print(f"ablate.compare: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("ablate.compare: interrupted; what finished is kept: run the same command again to continue",
              file=sys.stderr)
        return 130


def _main(args) -> int:
    from .grid import check_rounds
    from .rounds import next_points

    if not (0 < args.margin <= 100):
        raise UsageError(f"--margin {args.margin:g}: allowed: more than 0 and at most 100 accuracy points")
    named = [k.strip() for k in args.differs.split(",") if k.strip()]
    before, after = Side.read(args.before), Side.read(args.after)
    if os.path.realpath(before.local) == os.path.realpath(after.local):
        raise UsageError("BEFORE and AFTER are the same experiment; give two experiment directories")
    out = args.out or after.local
    state = CompareState.read(out, before, after)
    if args.until_resolved:
        check_rounds(args.max_seeds, "--max-seeds")
        for side in (before, after):
            if side.meta.get("scheduler") == "asha":  # ASHA stops weak points: which pairs exist depends on results
                raise UsageError(f"--until-resolved: {side.name} runs scheduler asha, whose stopped trials never pair; "
                                 "allowed: experiments run with scheduler fifo")
    for _ in range(args.max_seeds + 3):  # each pass adds a seed or finishes what a pass before began
        judged, q, lacks, diff, both, pool = compare(before, after, args.margin, args.max_seeds, named, state.seen)
        if not args.until_resolved:
            break
        state.seen = state.look(both, q)
        state.write(out)
        points = [{a: r[a] for a in q.axes} for r in both.to_dict("records")]
        finished_points = [{a: r[a] for a in q.axes} for r in finished(both).to_dict("records")]
        grow = next_points(judged, points, q, pool, finished_points)
        unfinished = {name for name, side in ((BEFORE, before), (AFTER, after))
                      if (~side.trials["status"].isin(["TERMINATED", "DIVERGED", "ERROR", "STOPPED_EARLY"])).any()}
        if not grow and not unfinished:
            break
        grew = 0
        for side, name in ((before, BEFORE), (after, AFTER)):
            mine = [pt for pt in grow if pt[SIDE] == name]
            if mine or name in unfinished:  # a growth interrupted before: trained now, as a rerun promises
                code, added = _grow(side, mine, args.verbose)
                if code:
                    raise GrowthFailed(f"growing {side.where} failed (python -m ablate.grid exited {code}; its error "
                                       "is above); fix it, then run the same command again to continue")
                grew += added or (name in unfinished)
        if not grew:  # nothing new could be added: the comparison stands as it is
            break
        before, after = Side.read(args.before), Side.read(args.after)
    head = summary(before, after, judged, q, lacks, diff, args.margin)
    md, html_path = write_pages(out, before, after, judged, q, head, args.margin)
    from .results import pipe_table

    print("\n".join(head))
    print(pipe_table(rows(judged, q)))
    print(f"compare: {html_path}")
    if args.wandb_report:
        _wandb_report(before, after, [" | ".join(map(str, r.values())) for r in rows(judged, q).to_dict("records")])
    return exit_code(judged)


def _wandb_report(before: Side, after: Side, lines: List[str]) -> None:
    import wandb

    from .messages import first_line
    from .tracking import build_compare_report, has_api_key

    if not has_api_key():
        raise UsageError("--wandb-report needs WANDB_API_KEY (or `wandb login`); compare.html is written")
    try:
        entity = (after.meta.get("wandb") or {}).get("entity") or os.environ.get("WANDB_ENTITY") or wandb.Api().default_entity
        report = build_compare_report(before.meta, after.meta, lines, entity)
        report.save()
    except Exception as e:  # noqa: BLE001 -- W&B refused the key, or is unreachable: the pages above stand
        raise UsageError(f"W&B did not take the report ({e.__class__.__name__}: {first_line(e)}); compare.html is "
                         "written; check the key (wandb login) and the network") from None
    print(f"W&B report: {report.url}")


if __name__ == "__main__":
    sys.exit(main())
