"""``python -m ablate.slurm [EXPERIMENT.yaml] [key=value ...] --nodes N --gpus-per-node G [--submit]``

The grid on a SLURM allocation: writes (and with ``--submit``, submits) one batch script that starts
Ray across the allocation with ``ray symmetric-run`` (every node runs the same command; the first
starts the head and runs the grid once, the others join), runs ``python -m ablate.grid ... --address
auto`` on it, and stops Ray when the grid ends.

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
import shlex
import subprocess
import sys
from typing import List, Optional

__all__ = ["batch_script", "main"]

GRACE_S = 120  # SIGTERM this long before a preemption or the time limit: trials stop, tables written
PID_ENV = "ABLATE_PID_FILE"  # where the grid writes its pid, for the batch shell to signal it


def _hms(seconds: float) -> str:
    s = max(60, int(math.ceil(seconds / 60.0)) * 60)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:00"


def batch_script(experiment: Optional[str], overrides: List[str], *, nodes: int, gpus_per_node: int,
                 cpus_per_node: int, time_s: float, partition: Optional[str], workdir: str, name: str,
                 python: str = sys.executable) -> str:
    """The sbatch script of a grid: #SBATCH lines, Ray across the allocation, the grid, requeue."""
    grid = [python, "-m", "ablate.grid", *([experiment] if experiment else []), *overrides, "--resume-if-exists"]
    sbatch = [f"--job-name=ablate-{name}", f"--nodes={nodes}", "--ntasks-per-node=1",
              f"--cpus-per-task={cpus_per_node}", *([f"--gpus-per-node={gpus_per_node}"] if gpus_per_node else []),
              *([f"--partition={partition}"] if partition else []), f"--time={_hms(time_s)}",
              "--requeue", f"--signal=B:TERM@{GRACE_S}", "--open-mode=append",
              f"--output={os.path.join(workdir, f'ablate-{name}-%j.out')}"]
    ray_start = (f"--num-cpus={cpus_per_node} --num-gpus={gpus_per_node} --disable-usage-stats "
                 '--include-dashboard=false --temp-dir="$raytmp"')
    lines = ["#!/bin/bash", *(f"#SBATCH {s}" for s in sbatch), "",
             "# Written by python -m ablate.slurm: Ray across the allocation (ray symmetric-run), the grid once on",
             "# the first node, Ray stopped at the end; SLURM's SIGTERM goes to the grid alone, then the job requeues.",
             f"cd {shlex.quote(workdir)}",
             '# The batch shell runs on the allocation\'s first node, the head: its IP as Ray sees it (the one',
             '# its GCS binds, which a hostname in /etc/hosts may not resolve to).',
             f'head=$({shlex.quote(python)} -c "from ray.util import get_node_ip_address as ip; print(ip())")',
             "port=$((20000 + SLURM_JOB_ID % 20000))",
             "# This job's Ray, known by its own temp dir: a requeued job first stops what its killed run left",
             "# (SLURM kills a step's processes, not the daemons `ray start` detached), and no other Ray.",
             'raytmp="/tmp/ray-ablate-${SLURM_CLUSTER_NAME:-slurm}-$SLURM_JOB_ID"',
             '# ("[/]tmp": the pattern must not match the srun and pkill that carry it)',
             'srun --ntasks-per-node=1 sh -c \'pkill -KILL -f -- "[/]$1/"; true\' _ "${raytmp#/}"',
             'export RAY_ADDRESS="$head:$port"',
             f'export {PID_ENV}="${{TMPDIR:-/tmp}}/ablate-$SLURM_JOB_ID.pid"',
             "export RAY_USAGE_STATS_ENABLED=0",
             "# Token authentication on every node and the driver (the same ~/.ray/auth_token on the shared home):",
             "# a Ray cluster on a shared network must not take jobs from anyone who can reach its ports.",
             "export RAY_AUTH_MODE=token",
             "ray get-auth-token --generate >/dev/null  # created once if missing; never printed",
             "stopping=0",
             f'on_term() {{ stopping=1; [ -f "${PID_ENV}" ] && kill -TERM "$(cat "${PID_ENV}")"; }}',
             "trap on_term TERM",
             f'srun --kill-on-bad-exit=0 ray symmetric-run --address "$head:$port" --min-nodes "$SLURM_JOB_NUM_NODES" '
             f'{ray_start} -- {shlex.join(grid)} &',
             "step=$!",
             'wait "$step"; code=$?',
             'while kill -0 "$step" 2>/dev/null; do wait "$step"; code=$?; done  # a trap interrupts wait',
             f'rm -f "${PID_ENV}"',
             'if [ "$stopping" = 1 ]; then scontrol requeue "$SLURM_JOB_ID"; fi  # the grid continues there',
             'exit "$code"', ""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ablate.slurm",
        description="Write (and with --submit, submit) the sbatch script that runs the grid on a SLURM allocation "
                    "with ray symmetric-run; preempted or timed-out jobs requeue and continue the same experiment.")
    p.add_argument("experiment", nargs="?", help="experiment YAML (default: experiments/default.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as for python -m ablate.grid")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--cpus-per-node", type=int, default=None,
                   help="default: GPUs x trials_per_gpu x cpus_per_trial (at least 2); 2 without GPUs")
    p.add_argument("--partition", default=None)
    p.add_argument("--time", default=None, help="HH:MM:SS (default: an estimate from the plan, plus a margin)")
    p.add_argument("--submit", action="store_true", help="submit it with sbatch (else print where it was written)")
    p.add_argument("--dry-run", action="store_true", help="print the #SBATCH lines and the estimate, write nothing")
    args = p.parse_intermixed_args(argv)
    if args.experiment is not None and "=" in args.experiment and not args.experiment.endswith((".yaml", ".yml")):
        args.overrides.insert(0, args.experiment)
        args.experiment = None
    from .config import ConfigError, load_experiment
    from .plan import gpu_hours

    try:
        if args.nodes < 1 or args.gpus_per_node < 0:
            raise ConfigError(f"--nodes is {args.nodes} and --gpus-per-node {args.gpus_per_node}; allowed: "
                              "nodes >= 1, GPUs >= 0")
        cfg = load_experiment(args.experiment, args.overrides)
        if not cfg.storage_path.startswith(("s3://", "gs://", "/")) and "://" not in cfg.storage_path:
            raise ConfigError(f"key 'storage_path' is {cfg.storage_path!r}, relative to the node that runs the grid; "
                              "allowed on SLURM: an absolute path on the shared filesystem every node mounts "
                              "(e.g. $HOME/ablate or /scratch/$USER/ablate), or s3://bucket/path")
        from . import storage

        storage.check_writable(cfg.experiment_dir)  # from the submit host, which sees the shared filesystem
    except ConfigError as e:
        print(f"ablate.slurm: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"ablate.slurm: error: key 'storage_path': cannot write to {cfg.experiment_dir} "
              f"({e.__class__.__name__}); allowed: a directory every node of the allocation can write (the "
              "cluster's shared filesystem), or s3://bucket/path", file=sys.stderr)
        return 2
    cpus = args.cpus_per_node or (max(2, int(math.ceil(args.gpus_per_node * cfg.trials_per_gpu * cfg.cpus_per_trial)))
                                  if args.gpus_per_node else 2)
    if args.time:
        parts = [int(x) for x in args.time.split(":")]
        time_s, note = float(sum(v * 60 ** i for i, v in enumerate(reversed(parts)))), "as given"
    elif args.gpus_per_node and cfg.dataset.startswith("cifar"):
        hours = gpu_hours(cfg)
        time_s = 1.5 * hours * 3600 / (args.nodes * args.gpus_per_node) + 600
        note = f"an ESTIMATE: ~{hours:.0f} H100-hours measured throughput over {args.nodes * args.gpus_per_node} GPUs, x1.5"
    else:
        from .plan import estimate_cpu_wall

        time_s = 1.5 * estimate_cpu_wall(cfg, max(1, int(cpus // cfg.cpus_per_trial)) * args.nodes) + 600
        note = "an ESTIMATE: this CPU's probe, x1.5, plus 10 minutes"
    workdir = os.path.abspath(os.getcwd())
    script = batch_script(args.experiment and os.path.abspath(args.experiment), args.overrides, nodes=args.nodes,
                          gpus_per_node=args.gpus_per_node, cpus_per_node=cpus, time_s=time_s,
                          partition=args.partition, workdir=workdir, name=cfg.name)
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
    # Not the W&B key: sbatch records the environment it passes in slurmctld's state.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    out = subprocess.run(["sbatch", "--parsable", path], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"ablate.slurm: error: sbatch failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}",
              file=sys.stderr)
        return 2
    job = out.stdout.strip().split(";")[0]
    print(f"submitted job {job} ({path}); watch: squeue -j {job}; output: ablate-{cfg.name}-{job}.out")
    if os.environ.get("WANDB_API_KEY"):
        print("ablate.slurm: notice: WANDB_API_KEY was not passed to the job (SLURM stores a job's environment); "
              "it uses `wandb login` on the shared home, else logs offline", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
