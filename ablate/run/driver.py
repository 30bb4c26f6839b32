"""``python -m ablate.grid [EXPERIMENT.yaml] [key=value ...] [--address ADDR] [--resume] [--dry-run]``

Run an experiment's grid (block x depth x lr x seed, and any swept setting) on Ray Tune, locally or on
a Ray cluster, and end with the answer: the ablation table, history.csv, trials.csv and the report in
<storage_path>/<name>.  Bad input exits 2 with one line, before Ray starts.

Start, train, finish: whatever ends a run early is one ``AblateError`` (its line and exit code),
printed once, by main.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import TYPE_CHECKING, List, NamedTuple, Optional

from ablate import storage
from ablate.errors import RunFailed, UsageError
from ablate.run.cli import resume_command, run_main, say, split_overrides, write_pid
from ablate.run.signals import Signals
from ablate.storage import HISTORY_FILE, OUTPUTS, RAY_LOG, RUN_PREFIX, TRIALS_FILE

if TYPE_CHECKING:
    from ablate.study.study import Study

PROG = "ablate.grid"
# Everything else (pydantic, pandas, scipy, torch, Ray) is imported inside the functions that need it, after
# main's first line has put the signal handlers in place: Ctrl-C during the first seconds is handled like Ctrl-C
# at any other moment, and a --help or a dry run pays only for what it uses.


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    from ablate.run.plan import FP32_TFLOPS, MEASURED_GPU  # after the signal handlers (pydantic)

    p = argparse.ArgumentParser(
        prog="python -m ablate.grid",
        description=" ".join(__doc__.split("\n\n")[1].split()),
        epilog="Examples: python -m ablate.grid (the embedded default);  python -m ablate.grid "
        "experiments/cifar10.yaml --dry-run --gpu A10G;  python -m ablate.grid exp.yaml seeds=[0,1,2] --resume",
    )
    p.add_argument("experiment", nargs="?", help="experiment YAML (default: experiments/default.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=5 depths=[20,56]")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster to connect to (default: $RAY_ADDRESS, else a local Ray)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the experiment of this name (finished trials "
        "are not rerun), or grow it with more values on an axis",
    )
    p.add_argument(
        "--resume-if-exists",
        action="store_true",
        help="--resume when the experiment exists, else start it (batch jobs that may be requeued)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit without starting Ray")
    p.add_argument(
        "--until-resolved",
        action="store_true",
        help="after the grid, add seeds in rounds only where a comparison is open (anytime-valid "
        "statistics), up to max_seeds per comparison; with --dry-run: the worst case",
    )
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show Tune's status table and Ray's log lines (by "
        f"default: one progress line; Ray's log goes to <results>/{RAY_LOG})",
    )
    p.add_argument(
        "--gpu",
        default=MEASURED_GPU,
        choices=sorted(FP32_TFLOPS),
        help=f"--dry-run: price GPU-hours on this GPU (measured on {MEASURED_GPU}; others are scaled)",
    )
    args = p.parse_intermixed_args(argv)  # options may come before, between or after key=value
    args.experiment, args.overrides = split_overrides(args.experiment, args.overrides)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    signals = Signals(PROG)

    def stopped():
        return f"{signals.name or 'SIGINT'} received: stopped; {signals.after}", signals.code or 130

    try:
        return run_main(PROG, lambda: _main(argv, signals), interrupted=stopped)
    finally:
        signals.close()


def _main(argv: List[str], signals: Signals) -> int:
    # After the signal handlers: the config (pydantic), the study (pandas).
    from ablate.run.cluster import check_address
    from ablate.run.plan import dry_run_text
    from ablate.spec.experiment_file import load_experiment
    from ablate.study.study import Study

    args = _parse(argv)
    write_pid()
    cfg = load_experiment(args.experiment, args.overrides)
    if args.until_resolved:
        from ablate.analysis.rounds import check_rounds  # the analysis (scipy) only for --until-resolved

        check_rounds(cfg.max_seeds)
        if cfg.scheduler == "asha":  # ASHA stops the weak points: which pairs exist would depend on the results
            raise UsageError(
                "--until-resolved with scheduler asha: its stopped trials never pair, so which seeds a "
                "comparison holds would depend on its results; allowed: scheduler fifo (the default)"
            )
    args.resume = args.resume or (args.resume_if_exists and storage.has_files(cfg.experiment_dir))
    study = Study(cfg, resume=args.resume)
    if args.dry_run:
        print(dry_run_text(study, args.address, args.gpu, args.until_resolved))
        return 0
    check_address(args.address)
    with study.lock():  # one writer per experiment, until this run ends
        study.check()
        signals.after = f"what finished is kept; continue with:  {resume_command(argv)}"
        return _run(study, args, argv, signals)


def _run(study: Study, args: argparse.Namespace, argv: List[str], signals: Signals) -> int:
    """Train the grid points that are not done (all of them, the first time): start, train, finish."""
    groups = study.plan()
    if study.added:
        print(f"ablate.grid: {study.growth_text()}", flush=True)
    if study.asked:  # a new question on --resume: said, and written with the experiment (below, or at the finish)
        print(f"ablate.grid: {study.asked}", flush=True)
    if study.broken_notice():
        say(f"ablate.grid: {study.broken_notice()}")
    if not groups and args.until_resolved:  # every point on record: is a comparison still open?
        groups = _next_round(study, set())
    if not groups:
        print(f"ablate.grid: {study.settle_tables()}")
        return 0
    started = _start(study, args, signals)
    t0, errored = time.time(), set()
    while groups:  # one Tune run; with --until-resolved, then a round more while a comparison is open
        errored |= _train(study, groups, started, args, argv, signals)
        groups = _next_round(study, errored) if args.until_resolved and not signals.code else []
    return _finish(study, errored, started, time.time() - t0, args, argv, signals)


def _next_round(study: "Study", errored: set) -> list:
    """Judge every comparison of ``study`` (anytime-valid), write the interim tables and report, and add the
    next round's points to the study (its identity first: a round interrupted continues on
    ``--resume --until-resolved``); the groups that train next, none when nothing open can close.  A round
    that adds no point is no round: the study is final as it stands (a no-op resume counts nothing)."""
    # Only where a round is judged (scipy, matplotlib for the interim report).
    from ablate.analysis.rounds import judge, next_points, order_of, resolved_count, seed_pool, seen_now, tried_seeds
    from ablate.run.report import write_report
    from ablate.spec.question import Question
    from ablate.study.tables import write_csvs

    cfg = study.cfg
    history, trials_df = study.tables(errored, interrupted=False)
    q = Question.of_config(cfg)
    pool = seed_pool(cfg.seeds, cfg.max_seeds)
    existing = list(study.points().values())
    tried = {k: len(v) for k, v in tried_seeds(existing, q, pool).items()}
    order, unseen = order_of(study.rounds, q)
    judged = judge(trials_df, q, cfg.equivalence_margin, cfg.max_seeds, tried, order=order, unseen=unseen)
    # What this look saw, in the order it read it: the next look reads the same sequence, then what is new.
    seen = seen_now(trials_df, q, study.rounds)
    study.rounds = {**study.rounds, "seen": seen}
    points = next_points(judged, existing, q, pool, finished_points=seen)
    last = int(study.rounds.get("round", 0))
    state = {"resolved": resolved_count(judged), "total": len(judged)}
    added = study.add_points(points, {**state, "round": last + 1, "final": False}) if points else 0
    if not added:  # nothing new to train: the study stands as it is, at the round it reached
        study.rounds = {**study.rounds, **state, "round": max(last, 1), "final": True}
    study.write_identity()
    os.makedirs(cfg.output_dir, exist_ok=True)
    write_csvs(cfg.output_dir, history, trials_df)
    r = study.rounds["round"]
    futile = int(judged["futile"].sum()) if len(judged) else 0
    still = int((judged["final_verdict"] == "open").sum()) - futile if len(judged) else 0
    what = (
        f"adding {added} trials: {int((judged['more'] > 0).sum())} open comparisons get "
        f"{', '.join(sorted({str(int(m)) for m in judged['more'] if m > 0}))} more seeds"
        if added
        else "nothing to compare"
        if not len(judged)
        else "; ".join(
            [
                *([f"{futile} open ones cannot close within max_seeds {cfg.max_seeds}"] if futile else []),
                *([f"{still} open ones have tried max_seeds"] if still > 0 else []),
            ]
        )
        or "none is open"
    )
    print(f"ablate.grid: round {r}: {state['resolved']} of {state['total']} comparisons resolved; {what}", flush=True)
    if added:
        try:
            write_report(cfg.output_dir)  # interim: the page says which round
        except Exception as e:  # noqa: BLE001 -- the report must never cost the study its next round
            say(f"ablate.grid: warning: interim report failed ({e.__class__.__name__}: {e})")
        return [g for g in study.plan() if not all(m["id"] in errored for m in g.members)]
    return []


# What the start gave the run: Ray's resources per group (a Tune trial), the data, the W&B mode, Ray's log file.
# And each errored group's error (Tune's, after its retries), by its name: what the last line says of them.
_Started = NamedTuple(
    "_Started", [("resources", dict), ("data", object), ("mode", str), ("ray_log", str), ("errors", dict)]
)


def _start(study: Study, args: argparse.Namespace, signals: Signals) -> _Started:
    """The data loaded, Ray started and what it can give checked, before anything is written (a failed
    start leaves nothing behind); then the identity, the plan."""
    # Only where something trains: torch (the data), Ray (the cluster).
    from ablate.run.cluster import check_devices, gpu_notice, start
    from ablate.run.plan import measured_spread, plan_text, power_text
    from ablate.run.tracking import resolve_mode
    from ablate.train.data import load_experiment_data

    cfg = study.cfg
    check_devices(cfg, args.address)  # here, not earlier: a finished study's resume never imports torch for it
    data = load_experiment_data(cfg.dataset, cfg.data_dir)  # once, in the driver; shared by the object store
    cap, resources, ray_log = start(cfg, args.address, args.verbose, on_connect=signals.install)
    notice = gpu_notice(resources, cap, args.address)
    if notice:
        say(f"ablate.grid: {notice}")
    os.makedirs(cfg.output_dir, exist_ok=True)
    if not args.resume or (study.asked and not study.added):  # a growth's identity: once its points are on record
        study.write_identity()
    mode = resolve_mode(cfg.wandb.mode)
    power = f"\n{power_text(cfg, measured_spread(cfg) if args.resume else None)}" if args.until_resolved else ""
    print(f"{plan_text(cfg, args.address)}{power}\nW&B mode: {mode}", flush=True)
    return _Started(resources, data, mode, ray_log, {})


def _train(study: Study, groups, started: _Started, args: argparse.Namespace, argv: List[str], signals: Signals) -> set:
    """One Tune run over ``groups``, a progress line meanwhile; the ids of the trials (grid points) whose
    group errored, after its retries."""
    # Tune and the trainer, only where a run trains.
    from ablate.run.progress import Progress
    from ablate.run.tracking import trial_env
    from ablate.run.tune import run_grid, stop_handoff

    progress = Progress.of(groups, study.cfg.epochs, study.rounds)
    try:
        with signals.handing_off(stop_handoff()):
            names = run_grid(
                study.cfg,
                study.dir,
                study.run_name(),
                groups,
                experiment_id=study.experiment_id,
                wandb_mode=started.mode,
                resources=started.resources,
                env=trial_env(started.mode),
                data=started.data,
                progress=progress,
                verbose=args.verbose,
            )
    except RuntimeError as e:
        raise UsageError(str(e)) from None
    except Exception as e:  # the storage failed under Tune (a full disk leaves its files cut short)
        raise _storage_failed(e, study, argv) from None
    started.errors.update(names)
    # Tune names a group; the tables speak of trials (a fused group errs for all its members).
    return {m["id"] for g in groups if g.name in names for m in g.members}


def _finish(
    study: Study,
    errored: set,
    started: _Started,
    wall: float,
    args: argparse.Namespace,
    argv: List[str],
    signals: Signals,
) -> int:
    """The tables from the records; then, unless interrupted, the ablation table, the report, the uploads."""
    # The analysis and the report (scipy, matplotlib), only where a run finishes.
    from ablate.analysis.findings import Analysis
    from ablate.analysis.table import answer
    from ablate.run.plan import concurrency
    from ablate.run.report import write_report
    from ablate.run.tracking import sync_hint
    from ablate.spec.question import Question
    from ablate.spec.status import Status
    from ablate.study.tables import record_timing, write_csvs

    cfg, exp_dir, out_dir = study.cfg, study.dir, study.cfg.output_dir
    try:
        history, trials_df = study.tables(errored, interrupted=bool(signals.code))
        write_csvs(out_dir, history, trials_df)
        shutil.move(started.ray_log, os.path.join(out_dir, RAY_LOG))
    except OSError as e:
        raise _storage_failed(e, study, argv) from None
    if signals.code:  # what finished is written; a partial grid is no answer: no table, no report
        storage.upload(out_dir, exp_dir, (HISTORY_FILE, TRIALS_FILE))
        finished = int(trials_df["status"].isin(Status.finished()).sum())
        say(
            f"\nablate.grid: interrupted: {finished} of {len(trials_df)} trials finished (history.csv and trials.csv "
            f"in {out_dir}); continue with:\n  {resume_command(argv)}"
        )
        return signals.code
    if study.added:  # the grown points are on record: the experiment is now the grown one
        study.write_identity()
    signals.after = (
        f"every trial finished and the tables are written ({out_dir}); the report: python -m ablate.report {out_dir}"
    )
    print("\n" + answer(cfg, trials_df, wall))
    print("\n" + Analysis.of(trials_df, study.analysis_meta(), Question.of_config(cfg)).answer_text())
    record_timing(out_dir, trials_df, wall, concurrency(cfg, args.address), resumed=args.resume)
    if not args.no_report:
        try:
            print(f"report: {write_report(out_dir)}")
        except Exception as e:  # the report must never cost the results already written
            say(f"ablate.grid: warning: report failed ({e.__class__.__name__}: {e})")
    storage.upload(out_dir, exp_dir, OUTPUTS)
    if started.mode == "offline":
        print(sync_hint(exp_dir))
    if not args.verbose:
        print(f"Ray's log: {os.path.join(out_dir, RAY_LOG)}")
    print(f"results: {exp_dir}")
    failed = int((trials_df["status"] == Status.ERROR).sum())
    cause = storage.trial_failure(list(started.errors.values()), exp_dir) if failed else None
    if cause:  # the trials failed because the storage did (a bucket that did not answer for minutes)
        raise RunFailed(
            f"{failed} of {len(trials_df)} trials failed: {cause}; {storage.remedy(cause)} continue with:  "
            f"{resume_command(argv)}"
        )
    if failed:  # the answer above lacks these points: say so last, and exit 1
        raise RunFailed(
            f"{failed} of {len(trials_df)} trials failed (ERROR in {TRIALS_FILE}; each one's traceback: "
            f"{exp_dir}/{RUN_PREFIX}*/<trial>_*/error.txt); fix the cause, then continue with:  "
            f"{resume_command(argv)}"
        )
    return 0


def _storage_failed(e: Exception, study: Study, argv: List[str]) -> RunFailed:
    line = storage.failure(e, study.dir)
    return RunFailed(f"{line}; {storage.remedy(line)} continue with:  {resume_command(argv)}")
