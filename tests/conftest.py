"""Shared helpers: run the real CLI in a subprocess and the checks of what it said (``ran_ok``,
``one_error_line``), one real mini-grid for many tests, what Tune reported of each trial, a local
multi-node Ray cluster, and trial records written by hand for the unit tests.

Tests that start Ray or the CLI in a subprocess are marked ``slow``; ``pytest -m "not slow"`` is
the inner loop (no Ray, no subprocess)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ablate.run.checkpoints import write_checkpoint
from ablate.spec.axes import trial_id
from ablate.spec.experiment_file import load_experiment
from ablate.study.records import make_record

REPO = Path(__file__).resolve().parents[1]
RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
DEFAULT = str(REPO / "experiments" / "default.yaml")
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


def trial_results(exp):
    """{Tune trial directory: its reports} from Tune's result.json files (what Tune got: epoch, node,
    time, the process's pid), in every Tune run of the experiment."""
    return {
        f"{f.parent.parent.name}/{f.parent.name}": [json.loads(line) for line in f.read_text().splitlines()]
        for f in exp.glob("run-*/*/result.json")
    }


def trial_records(exp):
    """{Tune trial directory: the newest record of its trials' checkpoints} (``ablate.study.records``: written by
    the trial itself, so a test sees an epoch as soon as it is on record, whatever Tune's driver syncs)."""
    out = {}
    for f in sorted(exp.glob("run-*/*/checkpoint_*/ablate_record.json")):
        try:
            out[f"{f.parent.parent.parent.name}/{f.parent.parent.name}"] = json.loads(f.read_text())
        except ValueError:  # being written
            continue
    return out


# A block held in its trial's epoch after the first checkpoint while the gate file exists: the run stops
# at a known point (that trial unfinished, with a checkpoint on record), however fast the machine.
HELD_BLOCK = """
import glob, os, time
from ablate.blocks import BasicBlock, register_block
import torch

from ablate.spec.axes import trial_id
from ablate.spec.experiment_file import load_experiment
from ablate.study.records import make_record, write_checkpoint

@register_block("held")
class Held(BasicBlock):
    def merge(self, out, identity):
        while os.path.exists({gate!r}) and glob.glob({records!r}):
            open({held!r}, "a").close()
            time.sleep(0.05)
        return out + identity
"""


def held_block(tmp_path, exp, trial):
    """Write ``held_block.py`` (block ``held``) into ``tmp_path`` (run the CLI there, with
    ``block_modules=[held_block]``), held once trial ``trial`` (a name prefix) has a checkpoint.
    Returns (gate, held): delete the gate to let it go; ``held`` exists once it waits."""
    gate, held = tmp_path / "gate", tmp_path / "held"
    records = str(exp / "run-*" / f"{trial}_*" / "checkpoint_*" / "ablate_record.json")
    (tmp_path / "held_block.py").write_text(HELD_BLOCK.format(gate=str(gate), held=str(held), records=records))
    gate.touch()
    return gate, held


def signal_when_held(args, tmp_path, gate, held, sig, while_held=None):
    """Run the grid (in ``tmp_path``, with the held block); once it is held (and ``while_held()`` has run
    there), send ``sig`` to the driver alone (as Ctrl-C, ``kill`` or a closed terminal would) and let the
    trial go.  Returns (exit code, log)."""
    log = tmp_path / "grid.log"
    proc = start_cli(args, cwd=tmp_path, log=open(log, "w"))
    try:
        wait_for(held.exists, 300, "the run held at its known point")
        if while_held is not None:
            while_held()
        os.kill(proc.pid, sig)
        # Let the trial go only once the driver has the signal (its line is in the log): Tune's stop is
        # then under way before the held trial can train on.
        wait_for(lambda: "received" in log.read_text(), 60, "the driver to take the signal")
        gate.unlink()
        return proc.wait(timeout=120), log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def kill_trial_midrun(args, exp, name, tmp_path):
    """Run the grid (``args`` with block ``held`` and ``block_modules=[held_block]``); once trial ``name``
    is held with a checkpoint, SIGKILL its worker process (the pid its record names), let it go, let the
    grid finish.  Returns the killed pid."""
    gate, held = held_block(tmp_path, exp, name)
    log = tmp_path / "grid.log"
    proc = start_cli(args, cwd=tmp_path, log=open(log, "w"))

    def record():
        return next(r for d, r in trial_records(exp).items() if d.split("/")[1].startswith(f"{name}_"))

    try:
        wait_for(held.exists, 300, f"{name} held after its first checkpoint")
        victim = record()["process"]["pid"]
        os.kill(victim, signal.SIGKILL)  # the trial's worker process, by pid
        gate.unlink()
        assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert record()["process"]["pid"] != victim, "the trial ran again in a new process"
    return victim


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


# --- a local multi-node Ray cluster: every process it starts is ours, stopped by pid ---------------


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


class LocalCluster:
    """A head and worker nodes started with `ray start` on 127.0.0.1, each with a fake GPU."""

    def __init__(self):
        self.temp_dir = f"/tmp/abl-{uuid.uuid4().hex[:8]}"
        # The same auth mode for every command: a head turns token auth on by itself when
        # ~/.ray/auth_token exists, and a node or driver without it then fails after ~20 s.
        self.env = clean_env(RAY_AUTH_MODE="disabled")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes = {}

    def _start(self, args, name):
        before = set(processes())
        subprocess.run(
            [
                RAY,
                "start",
                *args,
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                "--num-gpus=1",
                "--disable-usage-stats",
            ],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        # Ours by name (our temp dir), and the agents our raylet started (renamed ray::...): never another
        # test's processes that started meanwhile (pytest-xdist runs two test files at once).
        new = {pid: v for pid, v in processes().items() if pid not in before}
        ours = {pid for pid, (_, cmd) in new.items() if self.temp_dir in cmd}
        self.nodes[name] = ours | {pid for pid, (ppid, _) in new.items() if ppid in ours}

    def start(self, workers=1):
        self._start(
            ["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}"], "head"
        )
        for i in range(workers):
            self._start([f"--address={self.address}"], f"worker{i}")
        return self

    def node_raylet(self, name):
        procs = processes()
        return next(pid for pid in self.nodes[name] if pid in procs and "/raylet/raylet" in procs[pid][1])

    def kill_node(self, name):
        """Lose a node: SIGKILL its raylet, the processes it started, and its other daemons."""
        raylet = self.node_raylet(name)
        children = [pid for pid, (ppid, _) in processes().items() if ppid == raylet]
        for pid in [raylet, *children, *self.nodes[name]]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self):
        """Stop our nodes only: the daemons we saw start, and the workers their raylets started."""
        ours = set().union(*self.nodes.values())
        procs = processes()
        ours |= {pid for pid, (ppid, _) in procs.items() if ppid in ours}
        ours |= {pid for pid, (_, cmd) in procs.items() if self.temp_dir in cmd}
        for pid in ours:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


# --- records written by hand: what a trial's checkpoints leave behind, for the unit tests -----------------

EXP_ID = "0123456789ab"


def epoch_row(e, acc=0.5, loss=1.0, diverged=False):
    """A history row as the trainer and the trial write it."""
    return {
        "epoch": e,
        "train_loss": loss,
        "train_acc": acc,
        "val_loss": loss,
        "val_acc": acc,
        "lr": 0.1,
        "epoch_seconds": 0.1,
        "images_per_second": 100.0,
        "diverged": diverged,
        "node": "n1",
        "time": 1.0 * e,
    }


def small_config(tmp_path, *overrides):
    """A small experiment's config (2 blocks x depth 8 x lr 0.1 x 2 seeds, 3 epochs) in ``tmp_path``."""
    return load_experiment(
        None,
        [
            "blocks=[baseline,skipinit]",
            "depths=[8]",
            "lrs=[0.1]",
            "seeds=[0,1]",
            "epochs=3",
            f"storage_path={tmp_path}",
            "name=e",
            *overrides,
        ],
    )


def write_record(exp_dir, part, trial_dir, ckpt, points, epochs, done, experiment_id=EXP_ID, state=None):
    """A checkpoint as a trial writes it: the trainer's state and the record beside it."""
    import torch

    d = exp_dir / part / trial_dir / ckpt
    d.mkdir(parents=True)
    members = [{"id": trial_id(experiment_id, p), "point": p} for p in points]
    histories = [[epoch_row(e) for e in range(1, n + 1)] for n in epochs]
    write_checkpoint(
        str(d), state or {"w": torch.zeros(3)}, make_record(experiment_id, trial_dir, members, histories, done)
    )
    return d


def grid_point(block="baseline", seed=0):
    """A grid point of ``small_config``'s grid."""
    return {"block": block, "depth": 8, "lr": 0.1, "seed": seed}


def finished_by_hand(tmp_path):
    """A finished experiment of ``small_config`` (its identity and every trial's record, as ablate writes
    them, no Ray): its directory, the CLI arguments that continue it, and its records."""
    from ablate.storage import RECORD_FILE
    from ablate.study.study import Study

    cfg = small_config(tmp_path / "s", "wandb.mode=disabled")
    study = Study(cfg, resume=False)
    study.experiment_id = EXP_ID
    os.makedirs(study.dir)
    study.write_identity()
    exp = tmp_path / "s" / "e"
    records = [
        write_record(exp, "run-1", f"t{k}", "checkpoint_000000", [grid_point(b, s)], [3], [True]) / RECORD_FILE
        for k, (b, s) in enumerate((b, s) for b in ("baseline", "skipinit") for s in (0, 1))
    ]
    args = [
        "blocks=[baseline,skipinit]",
        "depths=[8]",
        "lrs=[0.1]",
        "seeds=[0,1]",
        "epochs=3",
        f"storage_path={tmp_path / 's'}",
        "name=e",
        "wandb.mode=disabled",
        "--resume",
    ]
    return exp, args, records
