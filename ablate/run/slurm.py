"""``python -m ablate.slurm [EXPERIMENT.yaml] [key=value ...] --nodes N --gpus-per-node G [--submit]``

The grid on a SLURM allocation: writes (and with ``--submit``, submits) one batch script that starts
this job's own Ray across the allocation (``srun`` on every node: the first starts the head and runs
``python -m ablate.grid`` on it once, the others join), and stops that Ray, and no other, when the grid
ends.  Not ``ray symmetric-run``: it refuses to start where any other Ray runs on the node (another
user's job, a second ablate job) and ends with ``ray stop``, which stops them all.  This job's Ray has
its own temp dir and ports, and is called through the Python the script was written with (a venv
that is not activated on the node, ``conda run``, cron), never ``ray`` from ``PATH``.

Preemption and time limits: the job asks for ``--signal=B:TERM@GRACE`` and ``--requeue``.  The batch
shell hands SLURM's SIGTERM to the grid's driver alone (its pid file), which stops the trials
gracefully and writes what finished; the script then requeues the job, and the requeued job
continues the same experiment (``--resume-if-exists``): every trial's record says what is done,
so nothing is trained twice.  A job killed outright (``scontrol requeue``, a node lost) loses at
most the epochs since each trial's last checkpoint.

The W&B key never enters SLURM: ``--submit`` leaves ``WANDB_API_KEY`` out of the environment
sbatch records (slurmctld keeps a job's environment in its state); the job reads the key from
``wandb login``'s netrc on the shared home, and hands it to the trials in memory as on any cluster.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import List, Optional

import jinja2

from ablate import storage
from ablate.errors import ConfigError, SlurmError
from ablate.run.cli import PID_ENV, run_main, say, split_overrides
from ablate.run.plan import estimate_cpu_wall, gpu_hours
from ablate.spec.experiment_file import load_experiment
from ablate.storage import local_path

PROG = "ablate.slurm"
__all__ = ["batch_script", "parse_time", "SlurmError", "main"]

GRACE_S = 120  # SIGTERM this long before a preemption or the time limit: trials stop, tables written
MIN_TIME_S = GRACE_S + 180  # a job shorter than the grace plus Ray's start would only ever requeue
# Characters SLURM names may hold; anything else (a space, a newline) would be an option or a command.
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.,+-]{1,128}")
_NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run")
MAX_COUNT = 100_000  # the most --nodes, --gpus-per-node and --cpus-per-node a script takes


def parse_time(text: str) -> float:
    """SLURM's ``--time`` in seconds (``inf`` for no limit), in SLURM's own formats: ``minutes``,
    ``minutes:seconds``, ``hours:minutes:seconds``, ``days-hours``, ``days-hours:minutes``,
    ``days-hours:minutes:seconds``, ``infinite``/``unlimited``.  ``SlurmError`` for anything else."""
    t = text.strip()
    if t.lower() in ("infinite", "unlimited"):
        return math.inf
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", t)
    if not m:
        raise SlurmError(
            f"--time {text!r} is not a SLURM time; allowed: minutes (90), minutes:seconds, "
            "hours:minutes:seconds (1:30:00), days-hours[:minutes[:seconds]] (1-00:00:00), infinite"
        )
    days, a, b, c = m.groups()
    nums = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # days-hours[:minutes[:seconds]]
        nums += [0] * (3 - len(nums))
        return float(int(days) * 86400 + nums[0] * 3600 + nums[1] * 60 + nums[2])
    if len(nums) == 1:
        return float(nums[0] * 60)  # SLURM reads a bare number as minutes
    if len(nums) == 2:
        return float(nums[0] * 60 + nums[1])
    return float(nums[0] * 3600 + nums[1] * 60 + nums[2])


def _hms(seconds: float) -> str:
    if math.isinf(seconds):
        return "UNLIMITED"
    s = max(60, int(math.ceil(seconds / 60.0)) * 60)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:00"


def batch_script(
    experiment: Optional[str],
    overrides: List[str],
    *,
    nodes: int,
    gpus_per_node: int,
    cpus_per_node: int,
    time_s: float,
    partition: Optional[str],
    workdir: str,
    name: str,
    python: str = sys.executable,
) -> str:
    """The sbatch script of a grid: #SBATCH lines, this job's own Ray across the allocation, the grid, requeue.

    Every value is checked or quoted here: ``#SBATCH`` lines take only SLURM names and numbers (SLURM
    reads them without a shell), shell lines take only ``shlex``-quoted values.  The job calls the
    Python (and its Ray) this script was written with, not whatever ``PATH`` holds on the node.
    """
    if partition is not None and not _SLURM_NAME.fullmatch(partition):
        raise SlurmError(
            f"--partition {partition!r}: allowed: a SLURM partition name (letters, digits, "
            "'_', '.', '-', '+', or a comma-separated list)"
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SlurmError(f"name {name!r}: allowed: letters, digits, '_', '.', '-'")
    for what, n, low in (
        ("--nodes", nodes, 1),
        ("--gpus-per-node", gpus_per_node, 0),
        ("--cpus-per-node", cpus_per_node, 1),
    ):
        if not isinstance(n, int) or isinstance(n, bool) or not low <= n <= MAX_COUNT:
            raise SlurmError(f"{what} {n!r}: allowed: a whole number from {low} to {MAX_COUNT}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in workdir + python):
        raise SlurmError(
            f"the working directory or Python path {(workdir + ' ' + python)!r} holds control characters; "
            "run from a directory whose path has none"
        )
    grid = [python, "-m", "ablate.grid", *([experiment] if experiment else []), *overrides, "--resume-if-exists"]
    ray = [python, "-m", "ray.scripts.scripts"]  # this environment's Ray, whatever PATH holds
    sbatch = [
        f"--job-name=ablate-{name}",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={cpus_per_node}",
        *([f"--gpus-per-node={gpus_per_node}"] if gpus_per_node else []),
        *([f"--partition={partition}"] if partition else []),
        f"--time={_hms(time_s)}",
        "--requeue",
        f"--signal=B:TERM@{GRACE_S}",
        "--open-mode=append",
        f"--output=ablate-{name}-%j.out",
    ]  # in the directory sbatch was run from
    # This job's Ray: its own temp dir, GCS port and dashboard agent port (Ray's default is a fixed one), so
    # another Ray on the node (another job's, a user's) neither blocks nor is stopped.  (The client server's
    # port is not set: Ray refuses the flag without ray[client], and a grid never uses the client.)  Flags every
    # node takes: `ray start --address` refuses a head's (--port, --include-dashboard: the template gives them).
    start = (
        f"--num-cpus={cpus_per_node} --num-gpus={gpus_per_node} --disable-usage-stats "
        '--temp-dir="$raytmp" --dashboard-agent-listen-port=$((port + 1))'
    )
    return _template().render(
        sbatch=sbatch,
        ray=shlex.join(ray),
        grid=shlex.join(grid),
        start=start,
        python=python,
        workdir=workdir,
        bindir=os.path.dirname(python),
        pid_env=PID_ENV,
    )


def _template():
    """The batch script's template (``templates/sbatch.sh.j2``): the shell lives in a shell file."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ablate.run", "templates"),
        autoescape=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["q"] = shlex.quote
    return env.get_template("sbatch.sh.j2")


def _check_creatable(exp_dir: str) -> None:
    """``--dry-run``: ``OSError`` unless the experiment's directory could be created here, found without
    leaving anything (a probe directory made and removed in the nearest directory that exists: permissions,
    read-only mounts and /proc alike); a URI is checked when the script is written."""
    path = storage.local_path(exp_dir)
    if storage.is_uri(path):
        return
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    os.rmdir(tempfile.mkdtemp(prefix=".ablate-probe-", dir=path))


def _node_local(storage_path: str) -> bool:
    """Whether ``storage_path`` is on each node's own disk (``/tmp/x``, also as ``file:///tmp/x`` or ``//tmp/x``)."""
    path = "/" + os.path.normpath(local_path(storage_path)).lstrip("/")  # POSIX keeps a leading "//"
    return any(path == d or path.startswith(d + "/") for d in _NODE_LOCAL)


def _default_cpus(cfg, gpus_per_node: int) -> int:
    """--cpus-per-node when not given: every trial a node's GPUs hold gets its CPUs (at least 2, at least one
    trial's); ``SlurmError`` naming the settings it comes from where that is over the bound."""
    trials = gpus_per_node * cfg.trials_per_gpu if gpus_per_node else 1
    cpus = max(2, int(math.ceil(trials * cfg.cpus_per_trial)))
    if cpus > MAX_COUNT:
        raise SlurmError(
            f"--cpus-per-node, not given, would be {cpus} (--gpus-per-node {gpus_per_node} x trials_per_gpu "
            f"{cfg.trials_per_gpu} x cpus_per_trial {cfg.cpus_per_trial:g}): more than a node has; give "
            f"--cpus-per-node (allowed: 1 to {MAX_COUNT}), or lower trials_per_gpu or cpus_per_trial"
        )
    return cpus


def _check_trials_fit(cfg, cpus: int, gpus: int, cpus_given: bool) -> None:
    """A trial no node of the job can hold never starts (Ray would refuse it only once the job ran): refused."""
    if cfg.cpus_per_trial > cpus:
        raise SlurmError(
            f"key 'cpus_per_trial' is {cfg.cpus_per_trial:g} but a node of this job has {cpus} CPUs "
            f"(--cpus-per-node{'' if cpus_given else ', as computed'}): no node could hold a trial; allowed: "
            f"cpus_per_trial up to {cpus}, or --cpus-per-node {int(math.ceil(cfg.cpus_per_trial))} or more"
        )
    if (cfg.gpus_per_trial or 0) > gpus:
        raise SlurmError(
            f"key 'gpus_per_trial' is {cfg.gpus_per_trial:g} but a node of this job has {gpus} GPUs "
            f"(--gpus-per-node): no node could hold a trial; allowed: gpus_per_trial up to {gpus}, or "
            f"--gpus-per-node {int(math.ceil(cfg.gpus_per_trial))} or more"
        )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ablate.slurm",
        description="Write (and with --submit, submit) the sbatch script that runs the grid on a SLURM allocation "
        "with this job's own Ray; preempted or timed-out jobs requeue and continue the same experiment.",
    )
    p.add_argument("experiment", nargs="?", help="experiment YAML (default: experiments/default.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as for python -m ablate.grid")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument(
        "--cpus-per-node",
        type=int,
        default=None,
        help="default: GPUs x trials_per_gpu x cpus_per_trial (at least 2); without GPUs, cpus_per_trial (at least 2)",
    )
    p.add_argument("--partition", default=None)
    p.add_argument(
        "--time",
        default=None,
        help="SLURM's formats: minutes, H:MM:SS, D-HH:MM:SS, infinite (default: an "
        "estimate from the plan, plus a margin)",
    )
    p.add_argument("--submit", action="store_true", help="submit it with sbatch (else print where it was written)")
    p.add_argument("--dry-run", action="store_true", help="print the #SBATCH lines and the estimate, write nothing")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_intermixed_args(argv)
    args.experiment, args.overrides = split_overrides(args.experiment, args.overrides)
    return run_main(PROG, lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    """Check everything, then write (and submit) the script: a mistake costs seconds, not a queue wait."""
    cfg, time_given = _checked(args)
    if args.nodes > 1 and _node_local(cfg.storage_path):
        say(
            f"{PROG}: warning: storage_path {cfg.storage_path} is on each node's own disk: with {args.nodes} "
            "nodes, each trial's files stay on the node that ran it and the grid's driver cannot see them; use "
            "the cluster's shared filesystem (e.g. $HOME/ablate, /scratch/$USER/ablate)"
        )
    cpus = args.cpus_per_node or _default_cpus(cfg, args.gpus_per_node)
    _check_trials_fit(cfg, cpus, args.gpus_per_node, args.cpus_per_node is not None)
    time_s, note = (time_given, "as given") if time_given is not None else _estimate_time(cfg, args, cpus)
    workdir = os.path.abspath(os.getcwd())
    # The storage as resolved here (also from $ABLATE_STORAGE_PATH), pinned: the job's environment may differ.
    pinned = [*args.overrides, f"storage_path={cfg.storage_path}"]
    script = batch_script(
        args.experiment and os.path.abspath(args.experiment),
        pinned,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        cpus_per_node=cpus,
        time_s=time_s,
        partition=args.partition,
        workdir=workdir,
        name=cfg.name,
    )
    if args.dry_run:
        print("\n".join(line for line in script.splitlines() if line.startswith("#SBATCH")))
        print(f"# --time: {note}")
        return 0
    path = os.path.join(workdir, f"ablate-{cfg.name}.sbatch")
    with open(path, "w") as f:
        f.write(script)
    if not args.submit:
        print(f"wrote {path} (--time {note}); submit with:  sbatch {path}")
        return 0
    return _submit(path, cfg.name)


def _checked(args: argparse.Namespace):
    """(the experiment, the time limit given or None), every value checked; ``SlurmError``/``ConfigError`` else."""
    try:
        if args.nodes < 1 or args.gpus_per_node < 0 or (args.cpus_per_node is not None and args.cpus_per_node < 1):
            raise ConfigError(
                f"--nodes is {args.nodes}, --gpus-per-node {args.gpus_per_node} and --cpus-per-node "
                f"{args.cpus_per_node}; allowed: nodes >= 1, GPUs >= 0, CPUs >= 1"
            )
        time_given = parse_time(args.time) if args.time is not None else None
        if time_given is not None and time_given < MIN_TIME_S:
            raise SlurmError(
                f"--time {args.time} is {time_given:.0f} s, shorter than the {GRACE_S} s grace before the "
                f"limit plus Ray's start: the job would only ever requeue; allowed: at least {MIN_TIME_S} s "
                f"({MIN_TIME_S // 60} minutes)"
            )
        if args.submit and not shutil.which("sbatch"):
            raise SlurmError(
                "--submit: sbatch is not on PATH (run on a SLURM login node, or write the script without "
                "--submit and submit it there)"
            )
        cfg = load_experiment(args.experiment, args.overrides)
        if not cfg.storage_path.startswith(("s3://", "gs://", "/")) and "://" not in cfg.storage_path:
            raise ConfigError(
                f"key 'storage_path' is {cfg.storage_path!r}, relative to the node that runs the grid; "
                "allowed on SLURM: an absolute path on the shared filesystem every node mounts "
                "(e.g. $HOME/ablate or /scratch/$USER/ablate), or s3://bucket/path"
            )
        if args.dry_run:  # writes nothing: the nearest directory that exists must let it be created
            _check_creatable(cfg.experiment_dir)
        else:
            storage.check_writable(cfg.experiment_dir)  # from the submit host, which sees the shared filesystem
    except OSError as e:
        raise SlurmError(
            f"key 'storage_path': cannot write to {cfg.experiment_dir} ({e.__class__.__name__}); allowed: "
            "a directory every node of the allocation can write (the cluster's shared filesystem), or "
            "s3://bucket/path"
        ) from None
    return cfg, time_given


def _estimate_time(cfg, args: argparse.Namespace, cpus: int):
    """(seconds, how it was found): the plan's GPU-hours over the job's GPUs, or this CPU's probe; with a margin."""
    if args.gpus_per_node and cfg.dataset.startswith("cifar"):
        hours = gpu_hours(cfg)
        return (
            1.5 * hours * 3600 / (args.nodes * args.gpus_per_node) + 600,
            f"an ESTIMATE: ~{hours:.0f} H100-hours measured throughput over {args.nodes * args.gpus_per_node} GPUs, "
            "x1.5",
        )
    return (
        1.5 * estimate_cpu_wall(cfg, max(1, int(cpus // cfg.cpus_per_trial)) * args.nodes) + 600,
        "an ESTIMATE: this CPU's probe, x1.5, plus 10 minutes",
    )


def _submit(path: str, name: str) -> int:
    # Not the W&B key: sbatch records the environment it passes in slurmctld's state.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    out = subprocess.run(["sbatch", "--parsable", path], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SlurmError(f"sbatch failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    job = out.stdout.strip().split(";")[0]
    print(f"submitted job {job} ({path}); watch: squeue -j {job}; output: ablate-{name}-{job}.out")
    if os.environ.get("WANDB_API_KEY"):
        say(
            f"{PROG}: notice: WANDB_API_KEY was not passed to the job (SLURM stores a job's environment); "
            "it uses `wandb login` on the shared home, else logs offline"
        )
    return 0
