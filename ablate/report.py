"""``python -m ablate.report EXPERIMENT_DIR [--wandb-report]``: which trick helps at which depth and LR (or which
value of any compared axis helps in which cell of the others).

Reads the experiment's ``history.csv`` and ``trials.csv`` and its settings file (rebuilding the tables from
the trials' records only where they are lost or cut short), so it works offline and after the fact; writes ``report.html`` (one self-contained page, figures
embedded) and ``report.md`` (the same verdicts and tables).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import pandas as pd
import yaml

from . import figures
from .axes import PAIR
from .messages import first_line
from .results import ablation_table, best_lr_frame, pipe_table, read_csvs
from .stats import ALPHA, FINISHED, POWER, Question, _v, effects, finished, question, stable_lrs
from .storage import EXPERIMENT_FILE, HISTORY_FILE, REPORT_HTML, REPORT_MD, TRIALS_FILE

__all__ = ["write_report", "verdicts", "question", "Question", "main"]

def _meta(exp_dir: str) -> Dict:
    p = os.path.join(exp_dir, EXPERIMENT_FILE)
    return (yaml.safe_load(open(p)) or {}) if os.path.exists(p) else {}


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _lrs(lrs) -> str:
    return ", ".join(f"{lr:g}" for lr in lrs) or "none"


def verdicts(fx: pd.DataFrame, stable: pd.DataFrame, q: Optional[Question] = None) -> List[str]:
    """One sentence per compared value: in which context cells it helps or hurts, converges faster or slower,
    and where it widens or narrows the stable LR range; the rest said as unresolved."""
    q = q or Question()
    lines = []
    values = list(dict.fromkeys(list(fx[q.subject]) if len(fx) else []) | dict.fromkeys(
        [b for b in stable[q.subject] if b != q.reference] if len(stable) else []))
    cells = f"{q.words()} points"
    for value in values:
        parts = []
        g = fx[fx[q.subject] == value] if len(fx) else fx
        for key, good, bad, what in (("final", "helps", "hurts", "final acc"),
                                     ("auc", "converges faster", "converges slower", "AUC")):
            for verdict, word in (("helps", good), ("hurts", bad)):
                hits = g[g[f"{key}_verdict"] == verdict] if len(g) else g
                if len(hits):
                    where = "; ".join(
                        f"{q.where(r)}: {what} {_pts(r[f'{key}_delta'])} points "
                        f"[{_pts(r[f'{key}_ci_low'])}, {_pts(r[f'{key}_ci_high'])}] (adjusted p {_p(r[f'{key}_p_adj'])})"
                        for r in hits.to_dict("records"))
                    parts.append(f"{word} at {where}")
        s = stable[stable[q.subject] == value] if len(stable) else stable
        base = ({tuple(r[c] for c in q.cells): r["stable"] for r in stable.to_dict("records")
                 if r[q.subject] == q.reference} if len(stable) else {})
        for r in s.to_dict("records"):
            if r["vs_baseline"] in ("widens", "narrows", "shifts"):
                parts.append(f"{r['vs_baseline']} the stable LR range at {q.where(r, q.cells)}: trains at lr "
                             f"{_lrs(r['stable'])} ({q.who(q.reference)}: {_lrs(base.get(tuple(r[c] for c in q.cells), []))})")
        resolved = int(g["final_verdict"].isin(["helps", "hurts"]).sum()) if len(g) else 0
        rest = len(g) - resolved
        if rest:
            parts.append(f"final acc not resolved at the other {rest} of {len(g)} {cells}" if resolved
                         else f"no significant difference in final acc at any of its {len(g)} {cells}")
        lines.append(f"{q.who(value)}: " + ("; ".join(parts) if parts else
                                           f"nothing to compare (no finished {q.who(q.reference)} trial in its cells)") + ".")
    return lines


def power_notes(trials: pd.DataFrame, fx: pd.DataFrame, q: Optional[Question] = None) -> List[str]:
    """What the statistics can and cannot say, in words."""
    from scipy import stats

    q = q or Question()
    done = finished(trials)
    n = int(done.groupby([q.subject, *q.context])[PAIR].nunique().min()) if len(done) else 0
    m = int(fx[["final_p", "auc_p"]].notna().to_numpy().sum()) if len(fx) else 0
    notes = [f"Every comparison is a {q.subject} against {q.who(q.reference)} at the same {q.words()}, paired by seed, with the paired t-test's 95% interval (scipy; "
             f"fixed-n: valid for the seeds the grid was planned with, not when seeds are added after looking); "
             f"p-values are adjusted for the {m} comparisons of this report (final acc and AUC) by Benjamini-Hochberg, "
             f"false discovery rate {ALPHA:.0%}."]
    if n < 2:
        notes.append("With one seed there is no spread: no interval, no verdict. Run at least 3 seeds.")
    elif n <= 3:
        notes.append(f"With {n} seeds each interval is +-t({n - 1}) = {stats.t.ppf(1 - ALPHA / 2, n - 1):.1f} standard "
                     "errors wide: the study is underpowered, and \"not resolved\" means the data cannot tell, "
                     "not that there is no effect.")
    if len(fx):
        need = fx["final_seeds_needed"].replace(math.inf, float("nan")).dropna()
        if len(need):
            notes.append(f"Seeds needed to resolve the final-acc differences observed but not resolved (paired "
                         f"t-test, {POWER:.0%} power, from their measured spread): median {need.median():.0f}, "
                         f"{int((need <= 5).sum())} of {len(need)} within 5 seeds (column \"seeds needed\").")
    notes.append(f"The best-LR table picks each {q.subject}'s LR on the same final accuracy it then compares, so its "
                 f"differences are optimistic; the effects at every {q.words()} involve no selection.")
    return notes


def effects_table(fx: pd.DataFrame, q: Optional[Question] = None) -> pd.DataFrame:
    q = q or Question()
    rows = []
    for r in fx.to_dict("records"):
        rows.append({
            q.subject: r[q.subject], **{c: _v(r[c]) for c in q.context}, "seeds": r["seeds"],
            f"final acc % ({q.subject})": f"{100 * r['final_block']:.1f}",
            f"final acc % ({_v(q.reference)})": f"{100 * r['final_base']:.1f}",
            "difference, points [95% CI]": _ci(r, "final"), "adjusted p": _p(r["final_p_adj"]),
            "verdict": r["final_verdict"], "AUC difference [95% CI]": _ci(r, "auc"),
            "AUC verdict": r["auc_verdict"].replace("helps", "faster").replace("hurts", "slower"),
            "seeds needed": "" if not math.isfinite(r["final_seeds_needed"]) else f"{r['final_seeds_needed']:.0f}",
        })
    return pd.DataFrame(rows)


def _ci(r: Dict, key: str) -> str:
    if not math.isfinite(r[f"{key}_ci_low"]):
        return _pts(r[f"{key}_delta"])
    return f"{_pts(r[f'{key}_delta'])} [{_pts(r[f'{key}_ci_low'])}, {_pts(r[f'{key}_ci_high'])}]"


def _p(p: float) -> str:
    return "" if not math.isfinite(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def stable_table(stable: pd.DataFrame, q: Optional[Question] = None) -> pd.DataFrame:
    q = q or Question()
    return pd.DataFrame([{**{c: _v(r[c]) for c in q.cells}, q.subject: r[q.subject], "stable at lr": _lrs(r["stable"]),
                          "tested lrs": _lrs(r["tested"]), f"vs {_v(q.reference)}": r["vs_baseline"]}
                         for r in stable.sort_values([*q.cells, q.subject]).to_dict("records")])


def provenance(exp_dir: str, meta: Dict, trials: pd.DataFrame, q: Optional[Question] = None) -> pd.DataFrame:
    q = q or Question()
    prov = meta.get("provenance") or {}
    sweep = meta.get("sweep") or {}
    m = {**meta, **{k: f"swept ({', '.join(map(_v, v))})" for k, v in sweep.items()}}  # a swept setting: its values
    recipe = (f"SGD, momentum {m.get('momentum')}{' (Nesterov)' if m.get('nesterov') is True else ''}, weight decay "
              f"{m.get('weight_decay')}, {m.get('schedule')} schedule"
              + (f" (x{m.get('lr_decay')} at {m.get('milestones')} of training)" if m.get("schedule") == "step" else "")
              + f", warm-up {m.get('warmup_epochs')} epochs, label smoothing {m.get('label_smoothing')}, "
              f"{m.get('epochs')} epochs, batch {m.get('batch_size')}, shortcut option {m.get('shortcut')}")
    wb = meta.get("wandb") or {}
    rows = [
        ("experiment", f"{meta.get('name', os.path.basename(os.path.normpath(exp_dir)))}: {len(trials)} trials = "
                       + " x ".join(f"{trials[a].nunique()} {a}" for a in q.axes)),
        ("question", f"each {q.subject} against {q.who(q.reference)}, paired by seed, at every {q.words()}"),
        ("dataset", str(meta.get("dataset", "?"))),
        ("recipe", recipe),
        ("grid", f"blocks {', '.join(map(str, meta.get('blocks', [])))}; depths {meta.get('depths')}; "
                 f"lrs {meta.get('lrs')}; seeds {meta.get('seeds')}" + "".join(f"; {k} {v}" for k, v in sweep.items())),
        ("code", f"commit {prov.get('git_commit') or 'unknown'}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items()) or "unknown"),
        ("run", f"started {prov.get('started', '?')}; report written {pd.Timestamp.now():%Y-%m-%d %H:%M}"),
        ("data files", f"{os.path.join(exp_dir, HISTORY_FILE)} (one row per trial and epoch), "
                       f"{os.path.join(exp_dir, TRIALS_FILE)} (one row per trial)"),
        ("W&B", f"project {wb.get('project', 'ablate')}, group {meta.get('name', '?')}"
                + (f", entity {wb['entity']}" if wb.get("entity") else "")
                + "; one run per trial, named block-dDEPTH-lrLR-sSEED" + "".join(f"-{k}VALUE" for k in sweep)),
    ]
    return pd.DataFrame(rows, columns=["", "value"])


@dataclass
class Section:
    title: str
    paragraphs: List[str] = field(default_factory=list)
    bullets: List[str] = field(default_factory=list)
    table: Optional[pd.DataFrame] = None
    image: Optional[str] = None
    caption: str = ""
    css: str = ""  # "text": a table of words, left-aligned


def sections(exp_dir: str) -> tuple:
    """The report's content, once, for both the page and the Markdown."""
    history, trials = read_csvs(exp_dir)
    meta = _meta(exp_dir)
    q = question(meta, trials)
    target = float(meta.get("target_acc", 0.9))
    fx = effects(trials, q.subject, q.reference, q.context)
    stable = stable_lrs(trials, q.subject, q.reference, q.context)
    table = ablation_table(trials, q.subject, q.reference, q.context)
    lines = verdicts(fx, stable, q)
    cells = q.words()
    rounds = meta.get("until_resolved") or {}
    story = None
    how_sure = power_notes(trials, fx, q)
    if rounds:  # an --until-resolved study: its verdicts are the anytime-valid ones
        lines, how_sure, story = sequential(trials, meta, q)
    out = [
        Section("Provenance", table=provenance(exp_dir, meta, trials, q), css="text"),
        Section("Verdicts", paragraphs=[
            *([f"{'Interim' if not rounds.get('final') else 'Final'}: round {rounds.get('round')}, "
               f"{rounds.get('resolved')} of {rounds.get('total')} comparisons resolved "
               f"(--until-resolved, max_seeds {meta.get('max_seeds')})."] if rounds else []),
            f"Each {q.subject} against {q.who(q.reference)} at every {cells} (final val acc: ends better; AUC = "
            "mean val acc over epochs: converges faster), and its stable LR range."],
            bullets=lines or ["(nothing to compare)"]),
        Section("How sure", bullets=how_sure),
        *([Section("How each verdict was reached", paragraphs=[
            "Per comparison: the seeds it used, its anytime-valid 95% interval (valid however often the study "
            "looked), its e-value, and for what stays open the seeds the forecast says would close it."],
            table=story)] if story is not None else []),
        Section("Stable LR range", paragraphs=[
            f"The LRs at which a {q.subject} trains without collapse or divergence: no seed diverged and every seed "
            f"ends at least halfway to the best mean final accuracy any {q.subject} reached at that "
            f"{q.words(q.cells)}."],
            table=stable_table(stable, q) if len(stable) else None, css="text"),
        Section(f"Effects at every {cells} (vs {q.who(q.reference)}, paired by seed)"
                + (": fixed-n, for reference only (not valid after seeds were added by looking)" if rounds else ""),
                table=effects_table(fx, q) if len(fx) else None),
        Section(f"Each {q.subject} at its best LR", paragraphs=[
            f"Mean +- std over seeds; epochs to {100 * target:.0f}% val acc; every column refers to the trials "
            "at that best LR. The LR is picked on final accuracy: differences here are optimistic (unadjusted)."],
            table=best_lr_frame(table, target, q.subject, _v(q.reference)) if not table.empty else None),
    ]
    fin = finished(history.merge(trials[[*q.axes, "status"]], on=q.axes)) if len(history) else history
    if len(fin):
        out += [
            Section("Convergence: validation accuracy",
                    image=figures.curves(fin, "val_acc", "val acc (%)", True, q.subject, q.reference, q.cells),
                    caption=f"Mean over seeds, band +-1 std; a panel per {q.words(q.cells)} (rows) "
                            f"and LR (columns); {q.who(q.reference)} black and dashed."),
            Section("Convergence: training loss",
                    image=figures.curves(fin, "train_loss", "train loss", False, q.subject, q.reference, q.cells,
                                         log=True),
                    caption="Mean over seeds (log scale)."),
            Section("LR sensitivity", image=figures.lr_sensitivity(finished(trials), q.subject, q.reference, q.cells),
                    caption="Final val acc, mean +- std over seeds, at each tested LR."),
        ]
        g = figures.gates(fin, q.context)
        if g:
            out.append(Section("Learned gate scalars", image=g,
                               caption=f"Absolute values, mean over a stage's blocks and the seeds, per "
                                       f"{q.words()}."))
    diverged = trials[trials["diverged"].astype(bool)]
    if len(diverged):
        out.append(Section("Diverged trials", bullets=[
            f"{q.trial(r)} (epoch {r['epochs_done']})" for r in diverged.to_dict("records")]))
    failed = trials[~trials["status"].isin(FINISHED)]
    if len(failed):
        out.append(Section("Unfinished trials (not counted)", bullets=[
            f"{q.trial(r)}: {r['status']}" for r in failed.to_dict("records")]))
    name = meta.get("name", os.path.basename(os.path.normpath(exp_dir)))
    return name, out


def sequential(trials: pd.DataFrame, meta: Dict, q: Question) -> tuple:
    """An --until-resolved study's verdict sentences, method notes and per-comparison story (its anytime-valid
    statistics, ``ablate.rounds``)."""
    from .rounds import judge

    margin = float(meta.get("equivalence_margin", 1.0))
    judged = judge(trials, q, margin, int(meta.get("max_seeds", 12)))
    words = {"helps": "helps", "hurts": "hurts", "equivalent": f"no difference larger than {margin:g} points",
             "open": "not resolved"}
    lines, rows = [], []
    for value, g in (judged.groupby(q.subject, sort=False) if len(judged) else []):
        parts = []
        for verdict in ("helps", "hurts", "equivalent", "open"):
            hits = g[g["final_verdict"] == verdict]
            if len(hits):
                parts.append(f"{words[verdict]} at " + "; ".join(
                    f"{q.where(r)} ({_pts(r['final_mean'])} points [{_pts(r['final_low'])}, {_pts(r['final_high'])}], "
                    f"{r['n']} seeds)" for r in hits.to_dict("records")))
        lines.append(f"{q.who(value)}: final acc " + "; ".join(parts) + ".")
    for r in judged.to_dict("records") if len(judged) else []:
        rows.append({q.subject: r[q.subject], **{c: _v(r[c]) for c in q.context}, "seeds": r["n"],
                     "final acc: verdict": words[r["final_verdict"]],
                     "difference, points [anytime 95%]": f"{_pts(r['final_mean'])} [{_pts(r['final_low'])}, "
                                                         f"{_pts(r['final_high'])}]",
                     "e-value": f"{r['final_e']:.3g}", "AUC: verdict": words[r["auc_verdict"]],
                     "to close it": ("" if r["final_verdict"] != "open" else
                                     f"~{int(r['forecast'] - r['n'])} more seeds" if math.isfinite(r["forecast"])
                                     else "more than 1000 seeds")})
    notes = [
        "Verdicts are anytime-valid: each comparison's paired differences (by seed) give Lindon et al.'s t-mixture "
        "e-value and confidence sequence (Anytime-Valid Linear Models, 2022), valid however often the study "
        "looked and added seeds; \"helps\"/\"hurts\" are e-BH discoveries over all comparisons (Wang and Ramdas "
        f"2022), false discovery rate {ALPHA:.0%}.",
        f"\"No difference larger than {margin:g} points\" (equivalence): the comparison's confidence sequence at "
        f"level {ALPHA:.0%}/{len(judged)} (Bonferroni over the report's comparisons) lies within +-{margin:g} points.",
        "\"Not resolved\" after max_seeds: the interval still spans both a difference and the margin; the last "
        "column says how many more seeds the forecast (the same spread, the same mean) needs to close it.",
    ]
    return lines, notes, pd.DataFrame(rows)


def _markdown(name: str, secs: List[Section]) -> str:
    md = [f"# Ablation report: {name}", ""]
    for s in secs:
        md += [f"## {s.title}", ""]
        md += [p + "\n" for p in s.paragraphs]
        md += [f"- {b}" for b in s.bullets] + ([""] if s.bullets else [])
        if s.table is not None:
            md += [pipe_table(s.table), ""]
        if s.image:
            md += [f"(figure in report.html: {s.caption})", ""]
    return "\n".join(md)


def write_report(exp_dir: str) -> str:
    """Write report.html and report.md into ``exp_dir``; return the HTML path."""
    import jinja2

    name, secs = sections(exp_dir)
    with open(os.path.join(exp_dir, REPORT_MD), "w") as f:
        f.write(_markdown(name, secs))
    env = jinja2.Environment(loader=jinja2.PackageLoader("ablate", "templates"), autoescape=True)
    path = os.path.join(exp_dir, REPORT_HTML)
    with open(path, "w") as f:
        f.write(env.get_template("report.html.j2").render(name=name, sections=secs))
    return path


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ablate.report",
        description="Write report.html and report.md for a finished experiment: each trick against baseline "
                    "at every depth and LR (paired by seed, with intervals), its stable LR range, the table at "
                    "each block's best LR, and the convergence figures. Reads only the experiment's CSVs.")
    p.add_argument("experiment_dir", help="the directory python -m ablate.grid named on its last line "
                                          "(it holds history.csv and trials.csv)")
    p.add_argument("--wandb-report", action="store_true",
                   help="also save the same comparison as a W&B Report (needs WANDB_API_KEY or `wandb login`)")
    args = p.parse_args(argv)
    try:
        return _main(args)
    except OSError as e:  # a read-only or full experiment directory: the report alone is lost
        print(f"ablate.report: error: cannot write the report ({e.__class__.__name__}: {first_line(e)}); the tables "
              "are unchanged; make the directory writable (or copy it), then run again", file=sys.stderr)
        return 2



def _main(args) -> int:
    from . import storage
    from .storage import HISTORY_FILE, TRIALS_FILE, ExperimentLock

    where = args.experiment_dir
    uri = storage.is_uri(where)
    out = storage.local_mirror(where.rstrip("/")) if uri else where  # a bucket's tables are read and written here
    if uri:
        try:
            os.makedirs(out, exist_ok=True)
            for name in (HISTORY_FILE, TRIALS_FILE, EXPERIMENT_FILE):
                try:
                    text = storage.read_text(storage.join(where, name))
                except FileNotFoundError:
                    continue
                with open(os.path.join(out, name), "w") as f:
                    f.write(text)
        except Exception as e:  # noqa: BLE001 -- pyarrow: an unknown scheme, no credentials
            print(f"ablate.report: error: cannot read {where} ({e.__class__.__name__}: {first_line(e)})", file=sys.stderr)
            return 2
    holder = ExperimentLock.holder(where)
    try:
        read_csvs(out)
        if holder is not None:  # the tables on disk are the last run's: the records are newer
            raise ValueError(f"a run is training {where} now")
    except (OSError, ValueError) as e:  # lost, cut short or foreign: the trials' records can rebuild them
        problem = str(e) if isinstance(e, ValueError) else f"{where} has no {os.path.basename(e.filename or '')}"
        try:
            from .results import write_csvs
            from .study import tables_from_records

            write_csvs(out, *tables_from_records(where))
            if uri:
                storage.upload(out, where, (HISTORY_FILE, TRIALS_FILE))
            print(f"ablate.report: notice: {problem}; history.csv and trials.csv rebuilt from the trials' records"
                  + (f" (interim: trials still training are RUNNING; pid {holder.get('pid')} on {holder.get('host')})"
                     if holder is not None else ""))
        except ValueError as e2:
            print(f"ablate.report: error: {problem}; and no trial records to rebuild it from ({e2}); give the "
                  "directory that python -m ablate.grid printed last", file=sys.stderr)
            return 2
    path = write_report(out)
    if uri:
        storage.upload(out, where, (storage.REPORT_HTML, storage.REPORT_MD))
    print(f"report: {path}")
    if args.wandb_report:
        from .tracking import has_api_key, save_wandb_report

        if not has_api_key():
            print("ablate.report: error: --wandb-report needs WANDB_API_KEY (or `wandb login`)", file=sys.stderr)
            return 2
        _, trials = read_csvs(out)
        meta = _meta(out)
        try:
            q = question(meta, trials)
            lines = verdicts(effects(trials, q.subject, q.reference, q.context),
                             stable_lrs(trials, q.subject, q.reference, q.context), q)
            url = save_wandb_report(meta, trials, lines, q)
        except Exception as e:  # noqa: BLE001 -- W&B refused the key, or is unreachable: the report above stands
            print(f"ablate.report: error: W&B did not take the report ({e.__class__.__name__}: {first_line(e)}); "
                  f"{path} is written; check the key (wandb login) and the network", file=sys.stderr)
            return 2
        print(f"W&B report: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
