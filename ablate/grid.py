"""``python -m ablate.grid [EXPERIMENT.yaml] [key=value ...] [--address ADDR] [--resume] [--dry-run]``

Runs the whole ablation grid (block x depth x lr x seed) as one Ray Tune experiment and ends
with the answer: the ablation table, ``history.csv``, ``trials.csv`` and the report, in
``<storage_path>/<name>``.  Every input check runs before Ray starts; a bad input exits with
code 2 and one line that names the field and what is allowed.
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import List, Optional

from typing import TYPE_CHECKING

from . import storage
from .cli import PID_ENV, split_overrides
from .storage import HISTORY_FILE, OUTPUTS, RAY_LOG, TRIALS_FILE, is_uri

if TYPE_CHECKING:
    from .config import ExperimentConfig
    from .study import Study

# Everything else (torch, pandas, Ray) is imported inside main(), after the signal handlers are in
# place: Ctrl-C during the first seconds is handled like Ctrl-C at any other moment.


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    from .plan import FP32_TFLOPS, MEASURED_GPU

    p = argparse.ArgumentParser(
        prog="python -m ablate.grid",
        description="Run the ablation grid (block x depth x lr x seed) as one Ray Tune experiment, locally or on a "
                    "Ray cluster, and end with the answer: the ablation table, history.csv, trials.csv and the "
                    "report in <storage_path>/<name>. Bad input exits 2 with one line, before Ray starts.",
        epilog="Examples: python -m ablate.grid (the embedded default);  python -m ablate.grid "
               "experiments/cifar10.yaml --dry-run --gpu A10G;  python -m ablate.grid exp.yaml seeds=[0,1,2] --resume")
    p.add_argument("experiment", nargs="?", help="experiment YAML (default: experiments/default.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=5 depths=[20,56]")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster to connect to (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment of this name (finished trials are not rerun), or grow it "
                        "with more values on an axis")
    p.add_argument("--resume-if-exists", action="store_true",
                   help="--resume when the experiment exists, else start it (batch jobs that may be requeued)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit without starting Ray")
    p.add_argument("--until-resolved", action="store_true",
                   help="after the grid, add seeds in rounds only where a comparison is open (anytime-valid "
                        "statistics), up to max_seeds per comparison; with --dry-run: the worst case")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    p.add_argument("--verbose", action="store_true",
                   help="also show Tune's status table and Ray's log lines (by default: one progress line; "
                        f"Ray's log goes to <results>/{RAY_LOG})")
    p.add_argument("--gpu", default=MEASURED_GPU, choices=sorted(FP32_TFLOPS),
                   help=f"--dry-run: price GPU-hours on this GPU (measured on {MEASURED_GPU}; others are scaled)")
    args = p.parse_intermixed_args(argv)  # options may come before, between or after key=value
    args.experiment, args.overrides = split_overrides(args.experiment, args.overrides)
    return args


def check_devices(cfg: ExperimentConfig, address: Optional[str]) -> None:
    """Local mode: a GPU asked for where there is none is an error, before Ray starts."""
    if address:
        return  # the cluster's GPUs are checked once connected, before any trial starts
    import torch

    from .study import UsageError

    if not torch.cuda.is_available():
        if (cfg.gpus_per_trial or 0) > 0:
            raise UsageError(f"key 'gpus_per_trial' is {cfg.gpus_per_trial:g} but this machine has no GPU; "
                             "allowed here: 0, or leave it unset (trials then run on the CPU)")
        if cfg.device == "cuda":
            raise UsageError("key 'device' is 'cuda' but this machine has no GPU; allowed here: auto, cpu")


def check_address(address: Optional[str], timeout_s: float = 10.0) -> None:
    """A cluster address that nothing answers is an error within seconds (Ray would retry for minutes)."""
    if address and address.startswith("ray://"):
        from .study import UsageError

        raise UsageError(f"--address {address}: Ray Client (ray://) is not supported (a grid outlives a client "
                         "connection); allowed: HOST:PORT of the head, or auto on a node of the cluster "
                         "(ray exec, ray job submit, or ssh to the head)")
    if address and "://" in address:
        from .study import UsageError

        raise UsageError(f"--address {address}: a URL is not a Ray cluster address (http:// is the dashboard's, for "
                         "`ray job submit`); allowed: HOST:PORT of the head's GCS (`ray start --head` prints it), or auto")
    if not address or address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        from .study import UsageError

        raise UsageError(f"--address {address}: no Ray cluster answers there ({e.__class__.__name__}); "
                         "allowed: HOST:PORT of a running head (`ray start --head`, `ray up cluster.yaml`), "
                         "or auto") from None


class Signals:
    """SIGINT, SIGTERM and SIGHUP (the terminal closed), from main's first line to its last.

    While Tune runs, the first one stops it gracefully (Tune's own SIGUSR1 path: the trials stop,
    what finished is on record) and the grid writes its tables; at any other moment, and for a
    second signal, it raises ``KeyboardInterrupt`` where the driver is, and main ends with one line
    and exit 128 + the signal (130, 143, 129), after stopping the Ray it started.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.code, self.name, self.tune = 0, "", False
        self.after = "nothing was changed"  # what the line says, by where the run is
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours, which hands over to Tune's
        self.install()

    def install(self) -> None:
        """(Again after ``ray.init``, which puts its own SIGTERM handler in the driver.)"""
        for sig in self.HANDLED:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        first, self.code, self.name = not self.code, self.code or 128 + signum, signal.Signals(signum).name
        if first and self.tune and callable(signal.getsignal(signal.SIGUSR1)):
            _say(f"ablate.grid: {self.name} received: stopping the trials (what finished is kept; send it again "
                 "to stop at once)")
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        raise KeyboardInterrupt

    def close(self) -> None:
        """Stop the local Ray this run started (never a cluster's), deaf to further signals meanwhile."""
        for sig in self.HANDLED:
            signal.signal(sig, signal.SIG_IGN)
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()


def _say(line: str) -> None:
    """A line to stderr that a closed terminal (SIGHUP) cannot turn into a traceback."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    signals = Signals()
    try:
        return _main(argv, signals)
    except KeyboardInterrupt:
        _say(f"ablate.grid: {signals.name or 'SIGINT'} received: stopped; {signals.after}")
        return signals.code or 130
    finally:
        signals.close()


def _main(argv: List[str], signals: Signals) -> int:
    from .config import ConfigError, load_experiment
    from .plan import plan_text
    from .records import RecordError
    from .study import Study, UsageError, resume_command

    args = _parse(argv)
    if os.environ.get(PID_ENV):  # a batch script's way to hand SIGTERM to this driver (ablate.slurm)
        with open(os.environ[PID_ENV], "w") as f:
            f.write(str(os.getpid()))
    try:
        cfg = load_experiment(args.experiment, args.overrides)
        if args.resume_if_exists and not args.resume:
            args.resume = storage.has_files(cfg.experiment_dir)
        study = Study(cfg, resume=args.resume)
        if args.dry_run:
            print(plan_text(cfg, args.address, args.gpu))
            if args.until_resolved:
                from .plan import until_resolved_text

                print(until_resolved_text(cfg, args.address, args.gpu))
            if args.resume:  # what a resume would add, read from the experiment's identity
                study.check()
                print(study.growth_text() if study.added else "resume: no axis grows; unfinished trials continue")
            return 0
        check_address(args.address)
        with study.lock():  # one writer per experiment, until this run ends
            study.check()
            signals.after = f"what finished is kept; continue with:  {resume_command(argv)}"
            return _run(study, args, argv, signals)
    except (ConfigError, UsageError, storage.LockedError, RecordError) as e:
        print(f"ablate.grid: error: {e}", file=sys.stderr)
        return 2


def _run(study: Study, args: argparse.Namespace, argv: List[str], signals: Signals) -> int:
    """Run the grid points that are not done (all of them, the first time): start, train, finish."""
    from . import results as R

    trials = study.plan()
    if study.added:
        print(f"ablate.grid: {study.growth_text()}", flush=True)
    if study.broken_notice():
        print(f"ablate.grid: {study.broken_notice()}", file=sys.stderr, flush=True)
    if not trials and args.until_resolved:  # every point on record: is a comparison still open?
        trials = _next_round(study, set())
    if not trials:  # the tables are rebuilt from the records where they were lost or cut short
        os.makedirs(study.cfg.output_dir, exist_ok=True)
        if not study.tables_current():  # whole and newer than every record: nothing to rebuild
            R.write_csvs(study.cfg.output_dir, *study.tables(set(), interrupted=False, relist=False), only_changed=True)
        if is_uri(study.cfg.storage_path):  # the bucket's own copies too, where lost or other
            local = {n: os.path.getsize(os.path.join(study.cfg.output_dir, n)) for n in (HISTORY_FILE, TRIALS_FILE)}
            storage.upload(study.cfg.output_dir, study.dir,
                           [n for n, size in local.items() if study.listing.top_files.get(n) != size])
        if study.added:  # a growth trained to the end whose identity was never rewritten (a kill at the finish)
            study.write_identity()
        print(f"ablate.grid: every trial of {study.dir} had already finished; nothing to run "
              f"(results: {study.cfg.output_dir}; rebuild the report with python -m ablate.report)")
        return 0
    started = _start(study, args, signals)
    if isinstance(started, int):
        return started
    t0, errored = time.time(), set()
    while trials:  # one Tune run; with --until-resolved, then a round more while a comparison is open
        failed = _train(study, trials, started, args, argv, signals)
        if isinstance(failed, int):
            return failed
        errored |= failed
        trials = _next_round(study, errored) if args.until_resolved and not signals.code else []
    return _finish(study, errored, started, time.time() - t0, args, argv, signals)


def _next_round(study: Study, errored: set) -> list:
    """--until-resolved: judge every comparison (anytime-valid), write the interim tables and report, and
    add the next round's points to the study (its identity first: a round interrupted continues on
    ``--resume --until-resolved``); the trials that run next, none when nothing is open."""
    from .axes import context_of
    from .report import write_report
    from .results import write_csvs
    from .rounds import judge, next_points, resolved_count
    from .stats import Question

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


@dataclass
class _Started:
    """What the start gave the run: Ray's resources per trial, the data, the W&B mode, Ray's log file."""

    resources: dict
    data: object
    mode: str
    ray_log: str


def _start(study: Study, args: argparse.Namespace, signals: Signals):
    """Ray first, what it can give checked, and the data loaded, before anything is written (a failed
    start leaves nothing behind); then the identity, the plan.  A ``_Started``, or an exit code."""
    from .cluster import BOOTSTRAP_CONFIG, ClusterError, connect, trial_resources
    from .data import load_dataset
    from .plan import plan_text
    from .tracking import resolve_mode

    cfg = study.cfg
    check_devices(cfg, args.address)  # here, not earlier: a finished study's resume never imports torch for it
    # Ray's own log lines go to a file, moved into the results at the end.
    try:
        fd, ray_log = tempfile.mkstemp(prefix="ablate-ray-", suffix=".log")
        os.close(fd)
    except OSError as e:
        print(f"ablate.grid: error: no usable temporary directory ({tempfile.gettempdir()}: {e.__class__.__name__}); "
              "set TMPDIR to a writable directory", file=sys.stderr)
        return 2
    try:
        cap = connect(args.address, cfg.block_modules, log_path=None if args.verbose else ray_log)
        signals.install()
        resources = trial_resources(cfg, cap)
    except ClusterError as e:
        os.remove(ray_log)
        print(f"ablate.grid: error: {e}", file=sys.stderr)
        return 2
    try:
        data = load_dataset(cfg.dataset, cfg.data_dir)  # once, in the driver; shared by the object store
    except Exception as e:
        os.remove(ray_log)
        print(f"ablate.grid: error: key 'dataset': {cfg.dataset!r} could not be loaded from "
              f"{os.path.abspath(cfg.data_dir)} ({e.__class__.__name__}: {str(e).splitlines()[0][:200]})",
              file=sys.stderr)
        return 2
    if resources["gpu"] == 0 and args.address:  # what is known, said as known: an autoscaler read, or none
        scaler = (f"its autoscaler ({cap.autoscaler}) can add none" if cap.autoscaler else
                  f"no autoscaler configuration found (in the GCS or at {BOOTSTRAP_CONFIG})")
        print(f"ablate.grid: notice: no GPU node now, and {scaler}: trials train on CPUs; set gpus_per_trial "
              "to wait for GPU workers", file=sys.stderr)
    elif resources["gpu"] > 0 and cap.gpus_now == 0:
        print(f"ablate.grid: notice: no GPU node yet; trials ask for {resources['gpu']:g} GPU and wait for the "
              f"autoscaler (node types from {cap.autoscaler})", file=sys.stderr)
    os.makedirs(cfg.output_dir, exist_ok=True)
    if not args.resume:
        study.write_identity()
    mode = resolve_mode(cfg.wandb.mode)
    print(plan_text(cfg, args.address), flush=True)
    print(f"W&B mode: {mode}", flush=True)
    return _Started(resources, data, mode, ray_log)


def _train(study: Study, trials, started: _Started, args: argparse.Namespace, argv: List[str], signals: Signals):
    """One Tune run over ``trials``, a progress line meanwhile; the ids of the grid points whose trial errored
    (after its retries), or an exit code."""
    from .progress import Progress
    from .study import git_commit
    from .tracking import trial_env
    from .tune_glue import run_grid

    cfg = study.cfg
    meta = {"experiment_id": study.experiment_id, "git_commit": git_commit(),
            "wandb": {**cfg.wandb.model_dump(), "mode": started.mode}}
    r = study.rounds
    note = f"round {r['round'] + 1}: {r['resolved']}/{r['total']} comparisons resolved" if r.get("round") else ""
    progress = Progress({t.name: {"weight": t.weight, "start": t.epochs_done, "epochs": cfg.epochs} for t in trials},
                        note=note)
    signals.tune = True
    try:
        names = run_grid(cfg, study.dir, study.part_name(), trials, resources=started.resources, meta=meta,
                         env=trial_env(started.mode), data=started.data, progress=progress, verbose=args.verbose)
        # Tune names a Tune trial; the tables speak of grid points (a fused trial errs for all its members).
        return {m["id"] for t in trials if t.name in names for m in t.members}
    except RuntimeError as e:
        print(f"ablate.grid: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the storage failed under Tune (a full disk leaves its files cut short)
        return _storage_failed(e, cfg, study.dir, argv)
    finally:
        signals.tune = False


def _finish(study: Study, errored: set, started: _Started, wall: float, args: argparse.Namespace,
            argv: List[str], signals: Signals) -> int:
    """The tables from the records; then, unless interrupted, the ablation table, the report, the uploads."""
    from . import results as R
    from .axes import context_of
    from .plan import concurrency
    from .stats import FINISHED
    from .study import PART_PREFIX, record_timing, resume_command

    cfg, exp_dir, out_dir = study.cfg, study.dir, study.cfg.output_dir
    try:
        history, trials_df = study.tables(errored, interrupted=bool(signals.code))
        R.write_csvs(out_dir, history, trials_df)
        shutil.move(started.ray_log, os.path.join(out_dir, RAY_LOG))
    except OSError as e:
        return _storage_failed(e, cfg, exp_dir, argv)
    if signals.code:  # what finished is written; a partial grid is no answer: no table, no report
        if is_uri(cfg.storage_path):
            storage.upload(out_dir, exp_dir, (HISTORY_FILE, TRIALS_FILE))
        finished = int(trials_df["status"].isin(FINISHED).sum())
        _say(f"\nablate.grid: interrupted: {finished} of {len(trials_df)} trials finished (history.csv and trials.csv "
             f"in {out_dir}); continue with:\n  {resume_command(argv)}")
        return signals.code
    if study.added:  # the grown points are on record: the experiment is now the grown one
        study.write_identity()
    signals.after = (f"every trial finished and the tables are written ({out_dir}); the report: "
                     f"python -m ablate.report {out_dir}")
    print()
    subject, reference = cfg.subject()
    print(f"Ablation table ({cfg.name}, {cfg.dataset}, {cfg.epochs} epochs; at each {subject}'s best lr; "
          f"mean +- std over {len(cfg.seeds)} seeds):")
    context = context_of(list(cfg.axes()), subject)
    print(R.format_table(R.ablation_table(trials_df, subject, reference, context), cfg.target_acc, subject, reference))
    train_s = trials_df["train_seconds"].sum()
    print(f"\ntrials: {R.summary_line(trials_df)}; wall {wall:.0f} s; time in training {train_s:.0f} s "
          f"(sum over trials)")
    record_timing(out_dir, {"wall_s": wall, "train_seconds": float(train_s), "trials": len(trials_df),
                            "concurrency": concurrency(cfg, args.address)}, resumed=args.resume)
    if not args.no_report:
        try:
            from .report import write_report

            print(f"report: {write_report(out_dir)}")
        except Exception as e:  # the report must never cost the results already written
            print(f"ablate.grid: warning: report failed ({e.__class__.__name__}: {e})", file=sys.stderr)
    if is_uri(cfg.storage_path):
        storage.upload(out_dir, exp_dir, OUTPUTS)
    if started.mode == "offline":  # offline runs are in each trial's own directory of the experiment's storage
        where = exp_dir if not is_uri(cfg.storage_path) else f"<a download of {exp_dir}>"
        print(f"W&B offline runs: upload with  wandb sync {where}/{PART_PREFIX}*/*/wandb/offline-run-*")
    if not args.verbose:
        print(f"Ray's log: {os.path.join(out_dir, RAY_LOG)}")
    print(f"results: {exp_dir}")
    failed = int((trials_df["status"] == "ERROR").sum())
    if failed:  # the answer above lacks these points: say so last, and exit 1
        _say(f"ablate.grid: error: {failed} of {len(trials_df)} trials failed (ERROR in {TRIALS_FILE}; each one's "
             f"traceback: {exp_dir}/{PART_PREFIX}*/<trial>_*/error.txt); fix the cause, then continue with:  "
             f"{resume_command(argv)}")
        return 1
    return 0


def _storage_failed(e: Exception, cfg: ExperimentConfig, exp_dir: str, argv: List[str]) -> int:
    """A full (or failing) storage under a running grid: one line naming the path, and how to go on."""
    from .study import resume_command

    full = not is_uri(cfg.storage_path) and shutil.disk_usage(exp_dir).free < 16 * 2**20
    if not (full or isinstance(e, (OSError, EOFError, pickle.UnpicklingError))):
        raise e
    what = f"no space left on {exp_dir}" if full else f"the storage at {exp_dir} failed"
    detail = str(e).splitlines()[0][:160] if str(e) else ""
    print(f"ablate.grid: error: {what} ({e.__class__.__name__}: {detail}); free space, then continue with:  "
          f"{resume_command(argv)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
