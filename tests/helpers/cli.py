"""The real CLI in a subprocess, and the checks of what it said (``ran_ok``, ``one_error_line``); the processes a
test started, found and ended by pid (never another test's, never another Ray)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
DEFAULT = str(REPO / "experiments" / "default.yaml")
FIXTURES = REPO / "tests" / "fixtures"  # data files and users' block modules the tests read
# One trial at a time, in the system tests whose subject is not trials side by side (the mini grid, the clusters
# and the concurrent refusals keep theirs): on the 2-core CI machine a second trial process costs ~10 CPU-s of
# start-up (Python, Ray, torch) against a second of digits training; a 4-trial mini grid at 1 took 31% less CPU
# and no more wall time than at 2 (median of 3 paired runs, 2026-12-08), and the suite is CPU-bound.
ONE_AT_A_TIME = "max_concurrent_trials=1"
# The mini-grid: 2 blocks x 1 depth x 1 lr x 2 seeds, 3 epochs on digits (real Ray Tune, CPU).
MINI = ["blocks=[baseline,identity_scale]", "depths=[8]", "lrs=[0.1]", "seeds=[0,1]", "epochs=3", "wandb.mode=offline"]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RAY_ADDRESS"))}
    env.update({"PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0"})
    env.update(extra)
    return env


def run_cli(args, *, module="ablate.grid", env=None, timeout=600, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=timeout,
        cwd=cwd,
    )


def ran_ok(p):
    """A command that exited 0 (its output shown where it did not); the command, for what it said."""
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def one_error_line(p, *needles, code=2):
    """A command that failed with ``code`` and said why in one ``ablate.*`` line naming each needle, without a
    traceback; that line."""
    assert p.returncode == code, p.stdout[-2000:] + p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("ablate.")]
    assert len(errors) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def start_cli(args, *, env=None, cwd=None, log=None):
    """Start the grid in its own process group, so a test can kill it and only it."""
    return subprocess.Popen(
        [sys.executable, "-m", "ablate.grid", *args],
        env=env or clean_env(),
        cwd=cwd,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes():
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out[int(p.name)] = (ppid, cmd)
    return out


def descendants(roots):
    procs = processes()
    ours, grew = set(roots), True
    while grew:
        grew = False
        for pid, (ppid, _) in procs.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                grew = True
    return ours


def kill_pids(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
