"""The S3 server unreachable for a minute mid-run (issue 37): one clear line naming the storage (no traceback, no
"free space"), exit 1, and the ``--resume`` that line names finishes the study after the server answers again,
with every (point, epoch) once and the finished trial untouched.

The storage box is a host of the multi-host harness (its own network namespace) running moto's S3 server; the
outage is its cable pulled (``MotoOnHost.cut``: packets dropped, moto's objects kept, nothing else on the machine
touched).  The grid runs on this machine (a local Ray: the driver and its trials see the same outage).  Nothing
races the clock: the cut comes while seed 1 is held at a known point (its first checkpoint in the bucket), and
the cable is plugged back only once Tune has given that trial up (its ``max_failures`` + 1 failed starts) and a
minute has passed."""

import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from helpers.blocks import user_block
from helpers.cli import clean_env, wait_for
from helpers.hosts import Hosts
from helpers.s3 import BUCKET, MotoOnHost, records_in, s3_env

SKIP = Hosts.skip_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SKIP is not None, reason=str(SKIP)),
    pytest.mark.skipif(importlib.util.find_spec("moto") is None, reason="moto's S3 server is missing (.[test])"),
]
MAX_FAILURES = 1  # Tune gives the held trial up after 2 failed starts (each ~25 s into the outage)
OUTAGE_S = 60.0


@pytest.mark.timeout(900)
def test_s3_unreachable_for_a_minute_is_one_line_and_the_resume_finishes_the_study(tmp_path):
    timings = {}
    with Hosts(tmp_path / "hosts", 1) as hosts:
        box = MotoOnHost(hosts[0], tmp_path / "moto.log")
        storage = f"s3://{BUCKET}/ablate"
        exp = f"{storage}/out"
        gate, held = tmp_path / "gate", tmp_path / "held"
        user_block(
            "held_s3",
            tmp_path,
            module="held_block",
            exp=exp,
            gate=gate,
            held=held,
            pattern="*/held-d8-lr0.1-s1_*/checkpoint_*/ablate_record.json",
        )
        gate.touch()
        env = clean_env(**s3_env(box.url), RAY_AUTH_MODE="disabled")
        args = [
            "blocks=[held]",
            "block_modules=[held_block]",
            "depths=[8]",
            "lrs=[0.1]",
            "seeds=[0,1]",
            "epochs=3",
            "max_concurrent_trials=1",
            "checkpoint_period_s=0",
            f"max_failures={MAX_FAILURES}",
            "wandb.mode=offline",
            f"storage_path={storage}",
            "name=out",
        ]
        lines = []
        t0 = time.time()
        grid = subprocess.Popen(
            [sys.executable, "-m", "ablate.grid", *args],
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        reader = threading.Thread(target=lambda: lines.extend(grid.stdout), daemon=True)
        reader.start()
        try:
            wait_for(lambda: held.exists() or grid.poll() is not None, 300, "seed 1 held after its first checkpoint")
            assert grid.poll() is None, "".join(lines)[-3000:]
            timings["held"] = time.time() - t0
            finished = {k: v for k, v in records_in(box, "ablate/out/").items() if "-s0_" in k}
            assert any(json.loads(v)["members"][0]["done"] for v in finished.values()), finished

            t_cut = time.time()
            box.cut()
            gate.unlink()  # the held trial trains on: its next checkpoint meets the outage

            def given_up():
                return sum("Trial task failed for trial held-d8-lr0.1-s1" in line for line in lines) > MAX_FAILURES

            wait_for(lambda: given_up() or grid.poll() is not None, 400, "Tune to give the held trial up")
            wait_for(lambda: time.time() - t_cut >= OUTAGE_S, OUTAGE_S + 1, "the minute of the outage")
            box.mend()
            timings["outage"] = time.time() - t_cut
            code = grid.wait(timeout=300)  # the driver ends by itself once the storage answers
            reader.join(timeout=30)
            timings["grid after the storage answered"] = time.time() - t_cut - timings["outage"]
        finally:
            if grid.poll() is None:
                os.killpg(grid.pid, signal.SIGKILL)
        out = "".join(lines)
        errors = [line for line in out.splitlines() if line.startswith("ablate.grid: error")]
        assert code == 1 and len(errors) == 1, out[-4000:]
        assert f"the storage at {exp} failed" in errors[0] and errors[0].rstrip().endswith("--resume"), errors[0]
        assert "free space" not in errors[0] and "once it answers again" in errors[0], errors[0]
        assert "Traceback" not in out, out[-4000:]

        # The storage answers again: the resume the line names finishes the study; nothing finished trains again.
        resume = re.search(r"continue with:\s+python -m ablate.grid (.*)$", errors[0]).group(1)
        t = time.time()
        p = subprocess.run(
            f"{sys.executable} -m ablate.grid {resume}",
            shell=True,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        timings["resume"] = time.time() - t
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        history = pd.read_csv(io.StringIO(box.read("ablate/out/history.csv")))
        trials = pd.read_csv(io.StringIO(box.read("ablate/out/trials.csv")))
        assert sorted(map(tuple, history[["seed", "epoch"]].values.tolist())) == [
            (s, e) for s in (0, 1) for e in (1, 2, 3)
        ], "every (point, epoch) once"
        assert (trials["status"] == "TERMINATED").all() and len(trials) == 2
        assert all(box.read(k) == v for k, v in finished.items()), "the finished trial was not trained again"
        box.stop()
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()}, "\nthe line:", errors[0])
