"""Users' block modules as the tests use them: real files in ``tests/fixtures/blocks`` (each a module a user could
write), copied beside the test's experiment with its placeholders set; and the runs held at a known point by one
(``held_block``: a gate file the test removes, never the clock)."""

import os
import re
import signal
from pathlib import Path

from helpers.cli import start_cli, wait_for
from helpers.records import trial_records

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "blocks"


def user_block(fixture, dest, module=None, **values):
    """Copy ``tests/fixtures/blocks/<fixture>.py`` into ``dest`` as ``<module>.py`` (default: the fixture's name),
    each placeholder ``"__NAME__"`` set to ``str(values[name])`` (a path, a glob); the path written."""
    text = (FIXTURES / f"{fixture}.py").read_text()
    for key, value in values.items():
        placeholder = f'"__{key.upper()}__"'
        assert placeholder in text, (fixture, placeholder)
        text = text.replace(placeholder, repr(str(value)))
    left = re.findall(r'"__[A-Z]+__"', text)
    assert not left, f"{fixture}: placeholders left unset: {left}"
    path = Path(dest) / f"{module or fixture}.py"
    path.write_text(text)
    return path


def held_block(tmp_path, exp, trial):
    """Write ``held_block.py`` (block ``held``) into ``tmp_path`` (run the CLI there, with
    ``block_modules=[held_block]``), held once trial ``trial`` (a name prefix) has a checkpoint.
    Returns (gate, held): delete the gate to let it go; ``held`` exists once it waits."""
    gate, held = tmp_path / "gate", tmp_path / "held"
    records = str(exp / "run-*" / f"{trial}_*" / "checkpoint_*" / "ablate_record.json")
    user_block("held_block", tmp_path, gate=gate, held=held, records=records)
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
