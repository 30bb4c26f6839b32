"""``python -m ablate.grid [EXPERIMENT.yaml] [key=value ...] [--address ADDR] [--resume] [--dry-run]``

Runs the whole ablation grid (block x depth x lr x seed) as one Ray Tune experiment and ends
with the answer: the ablation table, ``history.csv``, ``trials.csv`` and the report, in
``<storage_path>/<name>``.  Every input check runs before Ray starts; a bad input exits with
code 2 and one line that names the field and what is allowed.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import pickle
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import List, Optional

import yaml

from . import storage
from .config import ConfigError, ExperimentConfig, growth, identity, load_experiment, to_dict, trial_configs
from .plan import FP32_TFLOPS, MEASURED_GPU, concurrency, plan_text
from .storage import EXPERIMENT_FILE, HISTORY_FILE, OUTPUTS, TIMING_FILE, TRIALS_FILE, is_uri


class UsageError(Exception):
    """Bad input found before any Ray or GPU work: exit code 2."""


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
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
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit without starting Ray")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    p.add_argument("--gpu", default=MEASURED_GPU, choices=sorted(FP32_TFLOPS),
                   help=f"--dry-run: price GPU-hours on this GPU (measured on {MEASURED_GPU}; others are scaled)")
    args = p.parse_intermixed_args(argv)  # options may come before, between or after key=value
    if args.experiment is not None and "=" in args.experiment and not args.experiment.endswith((".yaml", ".yml")):
        args.overrides.insert(0, args.experiment)
        args.experiment = None
    return args


def check_experiment_dir(cfg: ExperimentConfig, resume: bool) -> dict:
    """Refuse to mix experiments, and to resume nothing: local and URI storage alike.

    The identity file lives with the experiment (in the storage, next to Tune's state), and Tune
    itself says whether the experiment can be restored.  On ``--resume`` an axis may gain values
    (the experiment grows); returns ``{axis: added values}``.
    """
    d = cfg.experiment_dir
    try:
        if resume:
            from .tune_glue import can_restore

            if not storage.has_files(d) or not can_restore(d):
                raise UsageError(f"--resume: nothing to resume at {d} (no experiment was started there); "
                                 "run without --resume to start it")
            return resume_growth(cfg)
        if storage.has_files(d):
            raise UsageError(f"{d} already holds an experiment; continue it with --resume, "
                             f"or choose a new name= (nothing was changed)")
    except OSError as e:  # an unreachable bucket, no credentials, an unknown scheme
        raise UsageError(f"key 'storage_path': cannot read {d} ({e.__class__.__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from None
    return {}


def saved_identity(exp_dir: str) -> dict:
    try:
        saved = yaml.safe_load(storage.read_text(storage.join(exp_dir, EXPERIMENT_FILE))) or {}
    except FileNotFoundError:
        raise UsageError(f"--resume: {exp_dir} holds no {EXPERIMENT_FILE}: it is not an ablate experiment") from None
    # A key added to ablate after the experiment was started (fuse_trials) had its default then.
    defaults = {k: f.get_default(call_default_factory=True) for k, f in ExperimentConfig.model_fields.items()}
    return identity({**{k: v for k, v in defaults.items() if k not in saved}, **saved})


def resume_growth(cfg: ExperimentConfig) -> dict:
    """What ``--resume`` adds to the saved experiment (``{axis: new values}``); any other difference
    is a different experiment."""
    refused, added = growth(saved_identity(cfg.experiment_dir), identity(cfg))
    if refused:
        raise UsageError(f"--resume: {cfg.experiment_dir} holds a different experiment (differs in: "
                         f"{', '.join(refused)}); resume it with its own settings (an axis may only gain values), "
                         "or choose a new name=")
    return added


def growth_text(cfg: ExperimentConfig, added: dict) -> str:
    """What a grown experiment adds, in words."""
    saved = {k: [v for v in getattr(cfg, k) if v not in added.get(k, [])] for k in ("blocks", "depths", "lrs", "seeds")}
    old = len(saved["blocks"]) * len(saved["depths"]) * len(saved["lrs"]) * len(saved["seeds"])
    new = len(trial_configs(cfg)) - old
    what = "; ".join(f"{k} +{added[k]}" for k in added)
    return f"growing {cfg.experiment_dir}: {what}: {new} new trials beside the {old} it holds (those are not rerun)"


def check_devices(cfg: ExperimentConfig, address: Optional[str]) -> None:
    """Local mode: a GPU asked for where there is none is an error, before Ray starts."""
    if address:
        return  # the cluster's GPUs are checked once connected, before any trial starts
    import torch

    if not torch.cuda.is_available():
        if (cfg.gpus_per_trial or 0) > 0:
            raise UsageError(f"key 'gpus_per_trial' is {cfg.gpus_per_trial:g} but this machine has no GPU; "
                             "allowed here: 0, or leave it unset (trials then run on the CPU)")
        if cfg.device == "cuda":
            raise UsageError("key 'device' is 'cuda' but this machine has no GPU; allowed here: auto, cpu")


def git_commit() -> Optional[str]:
    try:
        here = os.path.dirname(os.path.abspath(__file__))  # the code that runs, wherever the cwd is
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def check_address(address: Optional[str], timeout_s: float = 10.0) -> None:
    """A cluster address that nothing answers is an error within seconds (Ray would retry for minutes)."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise UsageError(f"--address {address}: no Ray cluster answers there ({e.__class__.__name__}); "
                         "allowed: HOST:PORT of a running head (`ray start --head`, `ray up cluster.yaml`), "
                         "or auto") from None


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    lock = None
    try:
        cfg = load_experiment(args.experiment, args.overrides)
        if args.dry_run:
            print(plan_text(cfg, args.address, args.gpu))
            if args.resume:  # what a resume would add, read from the experiment's identity
                added = resume_growth(cfg)
                print(growth_text(cfg, added) if added else "resume: no axis grows; unfinished trials continue")
            return 0
        check_devices(cfg, args.address)
        check_address(args.address)
        exp_dir = cfg.experiment_dir
        try:  # one writer per experiment: held until this process ends
            storage.check_writable(exp_dir)
            lock = storage.ExperimentLock(exp_dir).acquire()
        except storage.LockedError as e:
            raise UsageError(str(e)) from None
        except OSError as e:
            raise UsageError(f"key 'storage_path': cannot write to {exp_dir} ({e.__class__.__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else 'no detail'})") from None
        except Exception as e:  # pyarrow: an unknown scheme, a malformed URI
            raise UsageError(f"key 'storage_path': {cfg.storage_path!r} is not a usable location "
                             f"({e.__class__.__name__}: {str(e).splitlines()[0][:200]}); allowed: a local "
                             "directory, or a URI such as s3://bucket/path or file:///path") from None
        added = check_experiment_dir(cfg, args.resume)
        if added:
            print(f"ablate.grid: {growth_text(cfg, added)}", flush=True)
        if args.resume and finished_already(cfg):
            print(f"ablate.grid: every trial of {exp_dir} had already finished; nothing to run "
                  f"(results: {cfg.output_dir}; rebuild the report with python -m ablate.report)")
            lock.release()
            return 0
    except (ConfigError, UsageError) as e:
        print(f"ablate.grid: error: {e}", file=sys.stderr)
        if lock is not None:
            lock.release()
        return 2
    try:
        return _run(cfg, args, argv, grown=bool(added))
    finally:
        lock.release()


class _Interrupt:
    """SIGINT/SIGTERM: the first stops Tune gracefully (its own SIGUSR1 path: trials stop, the
    experiment state is saved); a second one stops at once."""

    def __init__(self):
        self.code = 0
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours, which hands over to Tune's
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.code or not callable(signal.getsignal(signal.SIGUSR1)):
            raise KeyboardInterrupt  # a second signal, or Tune not running yet: stop now
        self.code = 128 + signum
        print(f"ablate.grid: {signal.Signals(signum).name} received: stopping the trials and saving the experiment "
              "(send it again to stop at once)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)


def _run(cfg: ExperimentConfig, args: argparse.Namespace, argv: List[str], grown: bool = False) -> int:
    from . import results as R
    from .data import load_dataset
    from .stats import FINISHED
    from .tracking import resolve_mode, trial_env
    from .tune_glue import ClusterError, connect, run_grid, trial_resources

    exp_dir, out_dir = cfg.experiment_dir, cfg.output_dir
    mode = resolve_mode(cfg.wandb.mode)
    # Ray first, what it can give checked, and the data loaded, before anything is written:
    # a failed start leaves nothing behind.
    try:
        cap = connect(args.address, cfg.block_modules)
        resources = trial_resources(cfg, cap)
    except ClusterError as e:
        print(f"ablate.grid: error: {e}", file=sys.stderr)
        return 2
    try:
        data = load_dataset(cfg.dataset, cfg.data_dir)  # once, in the driver; shared by the object store
    except Exception as e:
        print(f"ablate.grid: error: key 'dataset': {cfg.dataset!r} could not be loaded from "
              f"{os.path.abspath(cfg.data_dir)} ({e.__class__.__name__}: {str(e).splitlines()[0][:200]})",
              file=sys.stderr)
        return 2
    if resources["gpu"] == 0:
        print("ablate.grid: notice: the Ray cluster has no GPU and its autoscaler can add none; "
              "trials train on CPUs", file=sys.stderr)
    elif cap.gpus_now == 0:
        print(f"ablate.grid: notice: no GPU node yet; trials ask for {resources['gpu']:g} GPU and wait for the "
              f"autoscaler (node types from {cap.autoscaler})", file=sys.stderr)
    os.makedirs(out_dir, exist_ok=True)
    if not args.resume or grown:  # the experiment's identity, with the experiment: checked by --resume, read by the report
        text = yaml.safe_dump({**to_dict(cfg), "provenance": provenance()}, sort_keys=False)
        storage.write_text(storage.join(exp_dir, EXPERIMENT_FILE), text)
        if out_dir != exp_dir:
            storage.write_text(os.path.join(out_dir, EXPERIMENT_FILE), text)
    print(plan_text(cfg, args.address), flush=True)
    print(f"W&B mode: {mode}", flush=True)
    t0 = time.time()
    interrupt = _Interrupt()
    try:
        grid = run_grid(cfg, exp_dir, storage_path=cfg.storage_path if is_uri(cfg.storage_path)
                        else os.path.abspath(cfg.storage_path), resume=args.resume, resources=resources,
                        wandb_mode=mode, env=trial_env(mode), git_commit=git_commit(), data=data)
    except KeyboardInterrupt:
        print(f"ablate.grid: stopped at once; continue with:  {resume_command(argv)}", file=sys.stderr)
        return interrupt.code or 130
    except RuntimeError as e:
        print(f"ablate.grid: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the storage failed under Tune (a full disk leaves its files cut short)
        return _storage_failed(e, cfg, exp_dir, argv)
    wall = time.time() - t0
    history, statuses = grid
    trials = R.trials_table(history, statuses, [t.point for t in trial_configs(cfg)], cfg.target_acc, cfg.epochs,
                            interrupted=bool(interrupt.code))
    try:
        R.write_csvs(out_dir, history, trials)
    except OSError as e:
        return _storage_failed(e, cfg, exp_dir, argv)
    if interrupt.code:  # what finished is written; a partial grid is no answer: no table, no report
        if is_uri(cfg.storage_path):
            storage.upload(out_dir, exp_dir, (HISTORY_FILE, TRIALS_FILE))
        finished = int(trials["status"].isin(FINISHED).sum())
        print(f"\nablate.grid: interrupted: {finished} of {len(trials)} trials finished (history.csv and trials.csv "
              f"in {out_dir}); continue with:\n  {resume_command(argv)}", file=sys.stderr)
        return interrupt.code
    table = R.ablation_table(trials)
    print()
    print(f"Ablation table ({cfg.name}, {cfg.dataset}, {cfg.epochs} epochs; at each block's best lr; "
          f"mean +- std over {len(cfg.seeds)} seeds):")
    print(R.format_table(table, cfg.target_acc))
    train_s = trials["train_seconds"].sum()
    print(f"\ntrials: {R.summary_line(trials)}; wall {wall:.0f} s; time in training {train_s:.0f} s "
          f"(sum over trials)")
    record_timing(out_dir, {"wall_s": wall, "train_seconds": float(train_s), "trials": len(trials),
                            "concurrency": concurrency(cfg, args.address)}, resumed=args.resume)
    if not args.no_report:
        try:
            from .report import write_report

            path = write_report(out_dir)
            print(f"report: {path}")
        except Exception as e:  # the report must never cost the results already written
            print(f"ablate.grid: warning: report failed ({e.__class__.__name__}: {e})", file=sys.stderr)
    if is_uri(cfg.storage_path):
        storage.upload(out_dir, exp_dir, OUTPUTS)
    # Offline runs (wandb.mode offline, or trials that fell back to it) are in each trial's own
    # directory of the experiment's storage.
    local_runs = not is_uri(cfg.storage_path) and glob.glob(os.path.join(exp_dir, "**", "wandb", "offline-run-*"),
                                                             recursive=True)
    if mode == "offline" or local_runs:
        where = exp_dir if not is_uri(cfg.storage_path) else f"<a download of {exp_dir}>"
        grown_runs = f" {where}/grow-*/*/wandb/offline-run-*" if any("/grow-" in r for r in local_runs or []) else ""
        print(f"W&B offline runs: upload with  wandb sync {where}/*/wandb/offline-run-*{grown_runs}")
    n_err = int((trials["status"] == "ERROR").sum())
    print(f"results: {exp_dir}")
    return 1 if n_err else 0


def _storage_failed(e: Exception, cfg: ExperimentConfig, exp_dir: str, argv: List[str]) -> int:
    """A full (or failing) storage under a running grid: one line naming the path, and how to go on."""
    full = not is_uri(cfg.storage_path) and shutil.disk_usage(exp_dir).free < 16 * 2**20
    if not (full or isinstance(e, (OSError, EOFError, pickle.UnpicklingError))):
        raise e
    what = f"no space left on {exp_dir}" if full else f"the storage at {exp_dir} failed"
    detail = str(e).splitlines()[0][:160] if str(e) else ""
    print(f"ablate.grid: error: {what} ({e.__class__.__name__}: {detail}); free space, then continue with:  "
          f"{resume_command(argv)}", file=sys.stderr)
    return 1


def record_timing(out_dir: str, timing: dict, resumed: bool) -> None:
    """``grid_timing.json`` (read by ``python -m ablate.bench --grid``) describes the first run; a
    resume is appended under ``resumes``, so a short resume never passes for the grid's wall."""
    path = os.path.join(out_dir, TIMING_FILE)
    if resumed and os.path.exists(path):
        with open(path) as f:
            first = json.load(f)
        first.setdefault("resumes", []).append(timing)
        timing = first
    with open(path, "w") as f:
        json.dump(timing, f)


def provenance() -> dict:
    """What produced the results: the code's commit, the libraries' versions, when."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for pkg in ("ablate", "torch", "ray", "wandb", "scipy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {"git_commit": git_commit(), "versions": versions, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def finished_already(cfg: ExperimentConfig) -> bool:
    """Whether every trial of the grid finished in an earlier run (its trials.csv says so)."""
    import pandas as pd

    from .stats import FINISHED
    from .train import trial_key

    try:
        done = pd.read_csv(os.path.join(cfg.output_dir, TRIALS_FILE))
    except (OSError, ValueError):
        return False
    finished = {trial_key(r) for r in done.to_dict("records") if r.get("status") in FINISHED}
    return all(t.key in finished for t in trial_configs(cfg))


def resume_command(argv: List[str]) -> str:
    """The exact command that continues this experiment."""
    rest = [a for a in argv if a != "--resume"]
    return shlex.join(["python", "-m", "ablate.grid", *rest, "--resume"])


if __name__ == "__main__":
    sys.exit(main())
