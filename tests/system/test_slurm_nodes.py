"""SLURM on several nodes (issue 37): ``python -m ablate.slurm ... --nodes 2 --submit`` on a real SLURM cluster
of the multi-host harness (``helpers.slurm_hosts``: a login node with slurmctld, two compute nodes with slurmd,
each host its own address, hostname, /tmp and process list, munge on each, the home shared as on NFS).

Ray's head starts on the first node and a worker joins from the second; the trials train on both (the records'
writers and history's Ray node ids say which); ``scontrol requeue`` kills the job mid-run (seed 2 held at a known
point with a checkpoint, seeds 0 and 1 finished) and the requeued job finishes the study with every (point,
epoch) once and the finished trials untouched; once the job has ended, nothing of its Ray is left on any node.
The single-host test (a second Ray beside the job, a bare PATH) is ``test_slurm.py``."""

import glob
import hashlib
import json
import re
import shutil
import sys
import time

import pandas as pd
import pytest

from helpers.blocks import user_block
from helpers.cli import wait_for
from helpers.hosts import HOME, Hosts
from helpers.slurm_hosts import ENDED, SlurmHosts

SKIP = Hosts.skip_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SKIP is not None, reason=str(SKIP)),
    pytest.mark.skipif(
        not shutil.which("slurmctld") or not shutil.which("munged"),
        reason="Debian's slurm-wlm and munge are installed by .ci/run",
    ),
]
BARE_PATH = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"  # a venv's Python run without activating it
HELD = "held-d8-lr0.1-s2"


def _records(root, pattern):
    return [json.loads(open(f).read()) for f in glob.glob(f"{root}/run-*/{pattern}/checkpoint_*/ablate_record.json")]


@pytest.mark.timeout(1200)
def test_a_two_node_job_trains_on_both_nodes_and_a_requeue_finishes_with_every_epoch_once(tmp_path):
    timings = {}
    t0 = time.time()
    with SlurmHosts(tmp_path / "hosts", 2) as c:
        timings["cluster up"] = time.time() - t0
        work, store = f"{HOME}/work", f"{HOME}/store"
        exp = c.here(f"{store}/sl")
        gate, held = c.here(f"{HOME}/gate"), c.here(f"{HOME}/held")
        c.here(work).mkdir()
        # Held as every node sees the shared home (the gate, the records), only in seed 2's trial.
        user_block(
            "held_trial",
            c.here(work),
            module="held_block",
            gate=f"{HOME}/gate",
            held=f"{HOME}/held",
            records=f"{store}/sl/run-*/{HELD}_*/checkpoint_*/ablate_record.json",
            trial=HELD,
        )
        gate.touch()
        # One trial fills a node (2 CPUs each): seeds 0 and 1 train at once, one on each node.
        args = [
            "blocks=[held]",
            "block_modules=[held_block]",
            "depths=[8]",
            "lrs=[0.1]",
            "seeds=[0,1,2]",
            "epochs=4",
            "cpus_per_trial=2",
            "checkpoint_period_s=0",
            "wandb.mode=offline",
            f"storage_path={store}",
            "name=sl",
        ]
        t = time.time()
        p = c.login.run(
            f"cd {work} && {sys.executable} -m ablate.slurm {' '.join(args)} --nodes 2 --cpus-per-node 2 "
            "--time 30 --submit",
            env={**c.env, "PATH": BARE_PATH},
            check=False,
            timeout=300,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        job = re.search(r"submitted job (\d+)", p.stdout).group(1)
        out = c.here(f"{work}/ablate-sl-{job}.out")

        def ended():
            return c.job_state(job) in ENDED

        def log():
            return (out.read_text()[-4000:] if out.exists() else "(no output yet)") + "\n" + c.logs()

        def both_finished():
            return len({r["trial"] for r in _records(exp, "held-d8-lr0.1-s[01]_*") if r["members"][0]["done"]}) == 2

        wait_for(lambda: (held.exists() and both_finished()) or ended(), 600, "seed 2 held, seeds 0 and 1 finished")
        assert not ended(), log()
        timings["held"] = time.time() - t
        done = {
            f: hashlib.sha256(open(f, "rb").read()).hexdigest()
            for f in glob.glob(f"{exp}/run-*/held-d8-lr0.1-s[01]_*/checkpoint_*/*")
            if f.endswith(("ablate_record.json", "state.pt"))
        }

        # The job killed outright and queued again, as an admin's requeue or a lost node does.
        t_requeue = time.time()
        c.sh(f"scontrol requeue {job}", check=True)
        wait_for(
            lambda: c.job_state(job) == "PENDING" and "Restarts=1" in c.sh(f"scontrol show job {job}"),
            120,
            "the job requeued",
        )
        c.sh(f"scontrol update JobId={job} StartTime=now", check=True)  # SLURM holds a requeued job ~2 minutes
        gate.unlink()
        wait_for(
            lambda: (out.exists() and re.search(r"^results: ", out.read_text(), re.M)) or ended(),
            600,
            "the grid's last line in the requeued job",
        )
        t_grid = time.time()
        wait_for(ended, 300, "the job's end")
        timings["requeue to the job's end"] = time.time() - t_requeue
        timings["the grid's end to the job's end"] = time.time() - t_grid
        show = c.sh(f"scontrol show job {job}")
        assert c.job_state(job) == "COMPLETED" and "Restarts=1" in show and "ExitCode=0:0" in show, log()
        assert "PANIC" not in out.read_text() and "should only be specified" not in out.read_text(), log()

        trials = pd.read_csv(exp / "trials.csv")
        history = pd.read_csv(exp / "history.csv")
        assert (trials["status"] == "TERMINATED").all() and len(trials) == 3, trials
        assert sorted(map(tuple, history[["seed", "epoch"]].values.tolist())) == [
            (s, e) for s in (0, 1, 2) for e in (1, 2, 3, 4)
        ], "every (point, epoch) once"
        assert {f: hashlib.sha256(open(f, "rb").read()).hexdigest() for f in done} == done, "finished, untouched"
        # Trials on both nodes: the records' writers are both compute hosts, and history holds several Ray nodes.
        writers = {r["process"]["host"] for r in _records(exp, "*")}
        assert writers == {h.name for h in c.compute}, writers
        assert history["node"].nunique() >= 2, history["node"].unique()
        assert len(list(exp.glob("run-*"))) == 2  # the first job's run and the requeued job's

        # Nothing of the job's Ray is left on any node: the compute hosts run slurmd and munged, and nothing else
        # once the job has ended (the script stops Ray's agents too, which rename themselves).
        def left():
            return {h.name: [cmd[:80] for cmd in h.processes().values() if "ray" in cmd.lower()] for h in c.compute}

        wait_for(lambda: not any(left().values()), 30, "the job's Ray gone from every node")
        timings["the job's end to its Ray gone"] = time.time() - t_grid - timings["the grid's end to the job's end"]
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
