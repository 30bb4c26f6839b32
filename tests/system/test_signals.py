"""Signals (``ablate.run.signals``, with Tune's hand-off from ``ablate.run.tune``) on the real CLI, real Ray: SIGINT,
SIGTERM and SIGHUP while the driver starts, mid-run (held at a known point by a gated block) and during a
growing resume: one line, exit 128 + the signal, what finished on record, and a resume that trains each
point once."""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pytest
import yaml

from helpers.blocks import held_block, signal_when_held, user_block
from helpers.cli import DEFAULT, ONE_AT_A_TIME, clean_env, ran_ok, run_cli, wait_for

SMALL = [DEFAULT, ONE_AT_A_TIME, "blocks=[baseline]", "depths=[8]", "lrs=[0.1]", "wandb.mode=disabled"]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a run, a report and the resume: beside a CPU hog on 2 cores it went past 600 s
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_writes_what_finished_shows_no_table_and_resumes(tmp_path, sig, code):
    exp = tmp_path / "intr"
    gate, held = held_block(tmp_path, exp, "held-d8-lr0.1-s1")  # seed 0 finishes, seed 1 is held mid-run
    args = [
        *SMALL,
        "blocks=[held]",
        "block_modules=[held_block]",
        "seeds=[0,1,2]",
        "epochs=30",
        "max_concurrent_trials=1",
        "checkpoint_period_s=0",
        "wandb.mode=offline",
        f"storage_path={tmp_path}",
        "name=intr",
    ]

    def report_while_running():  # tables rebuilt from the records while the run trains: RUNNING, not INTERRUPTED
        if sig != signal.SIGINT:
            return
        p = run_cli([str(exp)], module="ablate.report", cwd=tmp_path)
        ran_ok(p)
        assert "RUNNING" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
        running = pd.read_csv(exp / "trials.csv").set_index("seed")["status"]
        assert running[0] == "TERMINATED" and running[1] == "RUNNING" and running[2] == "NOT_STARTED", running
        for name in ("report.html", "report.md"):  # that interim report is the test's, not the interrupted grid's
            (exp / name).unlink()

    got, out = signal_when_held(args, tmp_path, gate, held, sig, while_held=report_while_running)
    assert got == code, out[-3000:]
    assert "Ablation table" not in out and "Traceback" not in out and "core dumped" not in out
    resume = next(line.strip() for line in out.splitlines() if line.strip().endswith("--resume"))
    assert resume.startswith("python -m ablate.grid") and "name=intr" in resume
    trials = pd.read_csv(exp / "trials.csv")
    assert (trials["status"] == "TERMINATED").sum() >= 1 and (trials["status"] == "INTERRUPTED").sum() >= 1
    assert not (exp / "report.html").exists()
    if sig == signal.SIGTERM:
        return  # the same path as SIGINT from here on: the resume is tested once
    p = subprocess.run(
        [sys.executable, *shlex.split(resume)[1:]],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=600,
    )  # the printed command, as printed
    ran_ok(p)
    trials = pd.read_csv(exp / "trials.csv")
    hist = pd.read_csv(exp / "history.csv")
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs_done"] == 30).all()
    assert (hist.groupby("seed")["epoch"].apply(list) == [list(range(1, 31))] * 3).all()
    from helpers.wandb_reader import merged_history, wandb_files

    runs = wandb_files(exp)
    assert len(runs) == 3 and any(len(files) > 1 for files in runs.values()), "a run resumed in a new process"
    for files in runs.values():  # every step once across the run's files: nothing logged twice
        assert [s for s, _ in merged_history(files)] == list(range(1, 31))


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGHUP, 129)], ids=["SIGINT", "SIGHUP"])
def test_a_signal_while_the_driver_starts_is_one_line_and_changes_nothing(tmp_path, sig, code):
    gate, started = tmp_path / "gate", tmp_path / "started"
    user_block("slow_import", tmp_path, started=started, gate=gate)
    gate.touch()
    args = [
        *SMALL,
        "block_modules=[slow_import]",
        "seeds=[0]",
        "epochs=1",
        f"storage_path={tmp_path / 's'}",
        "name=early",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablate.grid", *args],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(started.exists, 120, "the driver importing the experiment's blocks")
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, out + err
    lines = [line for line in err.splitlines() if line.startswith("ablate.")]
    assert len(lines) == 1 and "nothing was changed" in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "s" / "early").exists()


@pytest.mark.slow
def test_sighup_mid_run_writes_what_finished_and_frees_the_lock_at_once_on_uri_storage(tmp_path):
    exp = tmp_path / "s" / "hup"
    gate, held = held_block(tmp_path, exp, "held-d8-lr0.1-s1")
    args = [
        *SMALL,
        "blocks=[held]",
        "block_modules=[held_block]",
        "seeds=[0,1]",
        "epochs=30",
        "max_concurrent_trials=1",
        "checkpoint_period_s=0",
        f"storage_path=file://{tmp_path / 's'}",
        "name=hup",
        "--no-report",
    ]
    got, out = signal_when_held(args, tmp_path, gate, held, signal.SIGHUP)  # the terminal closed
    assert got == 129 and "Traceback" not in out, out[-3000:]
    trials = pd.read_csv(exp / "trials.csv")
    assert sorted(trials["status"]) == ["INTERRUPTED", "TERMINATED"]
    # A lock left by a holder that died on this host (as SIGKILL leaves one) is taken at once, not after 5 min.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "s" / ".hup.lock").write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "heartbeat": time.time()})
    )
    p = run_cli([*args, "--resume"], cwd=tmp_path)
    ran_ok(p)
    assert (pd.read_csv(exp / "trials.csv")["status"] == "TERMINATED").all()


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three grid runs: beside a CPU hog on 2 cores they went past 600 s
def test_ctrl_c_during_a_growing_resume_stops_it_whole_and_the_next_resume_trains_each_point_once(tmp_path):
    exp = tmp_path / "grow"
    gate, held = held_block(tmp_path, exp, "held-d8-lr0.1-s1")
    gate.unlink()  # the first run is not held
    # However far the released seed 1 gets before Tune stops it, seed 2 never starts: the growth is not on record.
    args = [
        *SMALL,
        "blocks=[held]",
        "block_modules=[held_block]",
        "epochs=8",
        "max_concurrent_trials=1",
        "checkpoint_period_s=0",
        f"storage_path={tmp_path}",
        "name=grow",
    ]
    p = run_cli([*args, "seeds=[0]"], cwd=tmp_path)
    ran_ok(p)
    gate.touch()  # the growth is held at seed 1, mid-run
    code, out = signal_when_held([*args, "seeds=[0,1,2]", "--resume"], tmp_path, gate, held, signal.SIGINT)
    assert code == 130 and "Traceback" not in out, out[-3000:]
    assert "seeds:\n- 0\n" in (exp / "ablate_experiment.yaml").read_text(), "not grown before the points are on record"
    p = run_cli([*args, "seeds=[0,1,2]", "--resume"], cwd=tmp_path)
    ran_ok(p)
    trials = pd.read_csv(exp / "trials.csv")
    hist = pd.read_csv(exp / "history.csv")
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs_done"] == 8).all() and len(trials) == 3
    assert (hist.groupby("seed")["epoch"].apply(list) == [list(range(1, 9))] * 3).all(), "each epoch once"


# git as the driver calls it (for the code's commit), here also the known point of the test: the first call
# once the identity holds an --until-resolved round is the next round's Tune run being set up (its trial
# constants name the commit).  There it sends SIGTERM to the driver, which waits on it, as SLURM would.
ROUND_GIT = """#!/bin/sh
if [ ! -e {fired} ] && grep -q '^until_resolved:' {identity} 2>/dev/null; then
  touch {fired}
  kill -TERM "$(cat {pid_file})"
  sleep 3
fi
exec {git} "$@"
"""


@pytest.mark.slow
def test_sigterm_while_the_next_round_starts_stops_the_study_and_trains_no_more(tmp_path):
    exp = tmp_path / "s" / "rounds"
    bin_dir, fired, pid_file = tmp_path / "bin", tmp_path / "fired", tmp_path / "driver.pid"
    bin_dir.mkdir()
    git = bin_dir / "git"
    git.write_text(
        ROUND_GIT.format(
            fired=fired,
            identity=exp / "ablate_experiment.yaml",
            pid_file=pid_file,
            git=shutil.which("git") or "/usr/bin/git",
        )
    )
    git.chmod(0o755)
    args = [
        *SMALL,
        "blocks=[baseline,skipinit]",
        "seeds=[0,1]",
        "epochs=1",
        f"storage_path={tmp_path / 's'}",
        "name=rounds",
        "--until-resolved",
    ]
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", ABLATE_PID_FILE=str(pid_file))
    p = run_cli(args, env=env, cwd=tmp_path, timeout=600)
    assert fired.exists(), "the study reached its second round: " + p.stdout[-2000:] + p.stderr[-2000:]
    assert p.returncode == 143, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "stopping the trials" not in p.stderr, p.stderr[-3000:]
    lines = [line for line in p.stderr.splitlines() if line.startswith("ablate.grid: SIGTERM")]
    assert len(lines) == 1 and "continue with" in lines[0], p.stderr[-3000:]
    seeds = {
        m["point"]["seed"]
        for f in exp.glob("run-*/*/checkpoint_*/ablate_record.json")
        for m in json.loads(f.read_text())["members"]
    }
    assert seeds == {0, 1}, f"the second round's seeds trained after the signal: {sorted(seeds)}"
    rounds = yaml.safe_load((exp / "ablate_experiment.yaml").read_text())["until_resolved"]
    assert rounds["round"] == 1 and rounds["points"], "the round's points are on record: a resume continues it"


@pytest.mark.slow
def test_ctrl_c_while_ray_starts_stops_the_start_and_trains_nothing(tmp_path):
    gate, held = tmp_path / "gate", tmp_path / "held"
    # This run's own temp dir, with a short path (Ray's socket paths under it must stay short).
    temp = tempfile.mkdtemp(prefix="abl-", dir="/tmp")
    user_block("held_start", tmp_path, held=held, gate=gate)
    gate.touch()
    args = [
        *SMALL,
        "block_modules=[held_start]",
        "seeds=[0]",
        "epochs=1",
        f"storage_path={tmp_path / 's'}",
        "name=start",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablate.grid", *args],
        cwd=tmp_path,
        env=clean_env(TMPDIR=temp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: held.exists() or proc.poll() is not None, 180, "the driver held inside ray.init")
        assert held.exists(), proc.communicate()[1][-3000:]
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C, in a Python fork hook as logging's own
        out, err = proc.communicate(timeout=180)
        left = [f for f in os.listdir(temp) if f.startswith("ablate-ray-")]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 130, out[-2000:] + err[-3000:]
    assert "Exception ignored" not in err and "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("ablate.")]
    assert len(lines) == 1 and lines[0].startswith("ablate.grid: SIGINT received: stopped"), err[-3000:]
    assert not (tmp_path / "s" / "start").exists(), "nothing trained, nothing written"
    assert "W&B mode" not in out, "the start stopped before the plan"
    assert not left, "no temp log left behind"
