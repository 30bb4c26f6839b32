"""The grid on a real single-host SLURM cluster (Debian's slurmctld, slurmd and munge, configured in a
temporary directory here): sbatch, ray symmetric-run, a requeue mid-run, and storage a job cannot write."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pandas as pd
import pytest

from ablate.storage import RECORD_FILE, STATE_FILE

from helpers.blocks import held_block
from helpers.cli import DEFAULT, RAY, clean_env, free_port, ran_ok, run_cli, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not shutil.which("slurmctld") or not shutil.which("munged"),
        reason="Debian's slurm-wlm and munge are installed by .ci/run",
    ),
]

CONF = """ClusterName={cluster}
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={d}/munge.sock
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobRequeue=1
KillWait=10
NodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class Slurm:
    """munged, slurmctld and slurmd of our own (their pid files say which to stop: only those)."""

    def __init__(self, d):
        self.d = d
        d.mkdir()
        (d / "state").mkdir()
        (d / "spool").mkdir()
        (d / "munge.key").write_bytes(os.urandom(1024))
        os.chmod(d / "munge.key", 0o400)
        self.cluster = f"ablatetest{os.getpid()}"
        (d / "slurm.conf").write_text(
            CONF.format(
                cluster=self.cluster,
                host=socket.gethostname(),
                d=d,
                ctld_port=free_port(),
                d_port=free_port(),
                cpus=os.cpu_count(),
            )
        )
        self.env = clean_env(SLURM_CONF=str(d / "slurm.conf"))

    def start(self):
        d = self.d
        subprocess.run(
            [
                "munged",
                "--force",
                f"--socket={d}/munge.sock",
                f"--key-file={d}/munge.key",
                f"--pid-file={d}/munged.pid",
                f"--log-file={d}/munged.log",
                f"--seed-file={d}/munge.seed",
            ],
            check=True,
            timeout=30,
        )
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(d / "slurm.conf")], check=True, env=self.env, timeout=60)
        wait_for(lambda: "idle" in self.run("sinfo", "-h", "-o", "%t"), 60, "the SLURM node to be idle")
        return self

    def run(self, *cmd):
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=60).stdout

    def job_state(self, job):
        m = re.search(r"JobState=(\w+)", self.run("scontrol", "show", "job", job))
        return m.group(1) if m else "GONE"

    def stop(self):
        jobs = self.run("squeue", "-h", "-o", "%i").split()
        if jobs:
            self.run("scancel", *jobs)
        for name in ("slurmd", "slurmctld", "munged"):
            try:
                os.kill(int((self.d / f"{name}.pid").read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        # The Ray that our jobs' `ray start` detached (SLURM does not kill it): known by its temp dir.
        subprocess.run(["pkill", "-KILL", "-f", f"[/]tmp/ray-ablate-{self.cluster}-"])


@pytest.fixture
def slurm(tmp_path):
    s = Slurm(tmp_path / "slurm")
    try:
        yield s.start()
    finally:
        s.stop()


# A venv's python run without activating it (scripts, `conda run`, cron): neither its bin nor pyenv's shims on
# PATH, so nothing in the job finds `ray` or `python` there; SLURM's own commands stay reachable.
BARE_PATH = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"


def _submit(args, cwd, slurm):
    p = run_cli(
        [*args, "--nodes", "1", "--cpus-per-node", "2", "--submit"],
        module="ablate.slurm",
        env={**slurm.env, "PATH": BARE_PATH},
        cwd=cwd,
    )
    ran_ok(p)
    return re.search(r"submitted job (\d+)", p.stdout).group(1)


@pytest.fixture
def other_ray(tmp_path):
    """Another Ray on the node (a user's, another job's), with Ray's default client and agent ports: the job must
    neither refuse to start beside it nor stop it."""
    temp = f"/tmp/abl-other-{os.getpid()}"
    subprocess.run(
        [
            RAY,
            "start",
            "--head",
            f"--port={free_port()}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        env=clean_env(RAY_AUTH_MODE="disabled"),
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield lambda: subprocess.run(["pgrep", "-f", f"[/]{temp[1:]}/.*raylet"], capture_output=True).returncode == 0
    finally:
        subprocess.run(["pkill", "-KILL", "-f", f"[/]{temp[1:]}"])
        shutil.rmtree(temp, ignore_errors=True)


def test_sbatch_runs_the_grid_requeued_midrun_it_finishes_with_every_epoch_once(slurm, other_ray, tmp_path):
    exp = tmp_path / "store" / "sl"
    gate, held = held_block(tmp_path, exp, "held-d8-lr0.1-s1")  # seed 0 finishes, then seed 1 is held
    args = [
        DEFAULT,
        "blocks=[held]",
        "block_modules=[held_block]",
        "depths=[8]",
        "lrs=[0.1]",
        "seeds=[0,1]",
        "epochs=4",
        "max_concurrent_trials=1",
        "checkpoint_period_s=0",
        "wandb.mode=offline",
        f"storage_path={tmp_path / 'store'}",
        "name=sl",
    ]
    p = run_cli([*args, "--nodes", "1", "--dry-run"], module="ablate.slurm", env=slurm.env, cwd=tmp_path)
    ran_ok(p)
    assert "#SBATCH --requeue" in p.stdout and "--time: an ESTIMATE" in p.stdout, p.stderr
    job = _submit(args, tmp_path, slurm)
    script = (tmp_path / "ablate-sl.sbatch").read_text()
    assert "ray symmetric-run" not in script and "WANDB_API_KEY" not in script
    assert f"{sys.executable} -m ray.scripts.scripts start --head" in script, "this environment's Ray"
    assert other_ray(), "the other Ray is running beside the job"
    wait_for(held.exists, 300, "the job's grid, one trial done and one held mid-run")
    # The finished trial's own files (each checkpoint's record and state, written whole before the next trial
    # started), not Tune's event and result files, which Tune's logger may flush at any time after.
    done = {
        str(f): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in exp.glob("run-*/held-d8-lr0.1-s0_*/checkpoint_*/*")
        if f.name in (RECORD_FILE, STATE_FILE)
    }
    assert any(json.loads(open(f).read())["members"][0]["done"] for f in done if f.endswith(RECORD_FILE)), done
    slurm.run("scontrol", "requeue", job)  # preempted: the job is killed and queued again
    wait_for(
        lambda: slurm.job_state(job) == "PENDING" and "Restarts=1" in slurm.run("scontrol", "show", "job", job),
        120,
        "the requeue",
    )
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")  # SLURM holds a requeued job ~2 min
    gate.unlink()
    wait_for(lambda: slurm.job_state(job) in ("COMPLETED", "FAILED", "CANCELLED", "GONE"), 400, "the requeued job")
    out = (tmp_path / f"ablate-sl-{job}.out").read_text()
    assert slurm.job_state(job) in ("COMPLETED", "GONE"), out[-3000:]
    assert "Restarts=1" in slurm.run("scontrol", "show", "job", job) or out.count("W&B mode:") >= 2, out[-3000:]
    trials = pd.read_csv(exp / "trials.csv")
    hist = pd.read_csv(exp / "history.csv")
    assert (trials["status"] == "TERMINATED").all() and len(trials) == 2, out[-3000:]
    assert (hist.groupby("seed")["epoch"].apply(list) == [[1, 2, 3, 4]] * 2).all(), "every epoch once"
    assert {f: hashlib.sha256(open(f, "rb").read()).hexdigest() for f in done} == done, "the finished trial stayed"
    assert (exp / "report.html").exists() and "ablate.grid: error" not in out
    assert "command not found" not in out and "already started" not in out, out[-3000:]
    assert other_ray(), "the job stopped its own Ray only"


def test_a_storage_path_the_job_cannot_write_is_refused_before_any_trial(slurm, tmp_path):
    args = [DEFAULT, "blocks=[baseline]", "depths=[8]", "lrs=[0.1]", "seeds=[0]", "epochs=1", "name=bad"]
    for storage, needle in (("relative/dir", "shared filesystem"), ("/proc/ablate", "cannot write")):
        p = run_cli(
            [*args, f"storage_path={storage}", "--nodes", "1", "--submit"],
            module="ablate.slurm",
            env=slurm.env,
            cwd=tmp_path,
        )
        errors = [line for line in p.stderr.splitlines() if line.startswith("ablate.")]
        assert p.returncode == 2 and len(errors) == 1 and needle in errors[0], p.stdout + p.stderr
    assert not slurm.run("squeue", "-h"), "nothing was submitted"
    assert not list(tmp_path.glob("*.sbatch"))
