"""Shared helpers: run the real CLI in a subprocess, and one real mini-grid for many tests."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT = str(REPO / "experiments" / "default.yaml")
# The mini-grid: 2 blocks x 1 depth x 1 lr x 2 seeds, 3 epochs on digits (real Ray Tune, CPU).
MINI = ["blocks=[baseline,identity_scale]", "depths=[8]", "lrs=[0.1]", "seeds=[0,1]", "epochs=3",
        "wandb.mode=offline"]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RAY_ADDRESS"))}
    env.update({"PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0"})
    env.update(extra)
    return env


def run_cli(args, *, module="ablate.grid", env=None, timeout=600, cwd=None):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=env or clean_env(), timeout=timeout, cwd=cwd)


def start_cli(args, *, env=None, cwd=None, log=None):
    """Start the grid in its own process group, so a test can kill it and only it."""
    return subprocess.Popen([sys.executable, "-m", "ablate.grid", *args], env=env or clean_env(), cwd=cwd,
                            stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def kill_trial_midrun(args, exp, name, tmp_path, epochs=2):
    """Run the grid; when trial ``name`` has reported ``epochs`` epochs, SIGKILL its worker process
    (its pid comes from the trial's hook file); let the grid finish.  Returns (killed pid, pid file)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    log = tmp_path / "grid.log"
    proc = start_cli(args, env=clean_env(ABLATE_TRIAL_HOOK_DIR=str(hooks)), cwd=tmp_path, log=open(log, "w"))
    pid_file = hooks / f"{name}.pid"

    def reported():
        res = list(exp.glob(f"{name}_*/result.json"))
        return pid_file.exists() and res and len(res[0].read_text().splitlines()) >= epochs

    try:
        wait_for(reported, 240, f"epoch {epochs} of {name}")
        time.sleep(0.2)  # into the next epoch
        victim = int(pid_file.read_text())
        os.kill(victim, signal.SIGKILL)  # the trial's worker process, by pid
        assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert int(pid_file.read_text()) != victim, "the trial ran again in a new process"
    return victim, pid_file


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def mini_grid(tmp_path_factory):
    """Run the mini-grid once; tests of the grid, W&B and the report read what it wrote."""
    storage = tmp_path_factory.mktemp("storage")
    proc = run_cli([DEFAULT, *MINI, f"storage_path={storage}", "name=mini"], cwd=storage)
    exp = storage / "mini"
    return {"proc": proc, "dir": exp, "storage": storage}
