"""Careless and hostile use, round three, on the real CLI: errored trials are ERROR with exit 1, input that
cannot be read never makes --resume train, a growth on record is completed, the report on a running or
URI experiment, and one line (exit 2) where a traceback was.  Each test builds its scenario itself."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
import yaml

from helpers.blocks import user_block
from helpers.cli import DEFAULT, ONE_AT_A_TIME, clean_env, one_error_line, ran_ok, run_cli

pytestmark = pytest.mark.slow

GRID = [DEFAULT, ONE_AT_A_TIME, "blocks=[baseline]", "depths=[8]", "lrs=[0.1]", "seeds=[0,1]", "epochs=2"]

# Root passes every permission check; without these two capabilities it meets them like any user.
CAPLESS = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]

needs_setpriv = pytest.mark.skipif(
    not shutil.which("setpriv") or os.geteuid() != 0, reason="setpriv as root makes permissions bite (util-linux)"
)


def capless(args, module="ablate.grid", cwd=None, env=None):
    return subprocess.run(
        [*CAPLESS, sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        cwd=cwd,
        timeout=600,
    )


def snapshot(exp):
    """Every file of the experiment (bar the lock) and its hash: what a resume that trains nothing leaves alone."""
    return {
        str(f.relative_to(exp)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in exp.rglob("*")
        if f.is_file() and ".lock" not in f.name
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished experiment on URI storage (``file://``); tests copy it to a local path (the same experiment)."""
    root = tmp_path_factory.mktemp("careless3")
    (root / "work").mkdir()
    p = run_cli([*GRID, "wandb.mode=offline", f"storage_path=file://{root}/bucket", "name=fin"], cwd=root / "work")
    ran_ok(p)
    return root


def copy_of(finished, tmp_path, name="fin"):
    exp = tmp_path / "s" / name
    shutil.copytree(finished / "bucket" / "fin", exp)
    return exp


def test_a_trial_that_errors_is_error_and_the_grid_exits_1(tmp_path):
    exp = tmp_path / "s" / "boom"
    user_block("boom_blocks", tmp_path, records=exp / "run-*" / "boom_later-*" / "checkpoint_*" / "ablate_record.json")
    p = run_cli(
        [
            DEFAULT,
            "blocks=[baseline,boom_now,boom_later]",
            "block_modules=[boom_blocks]",
            "depths=[8]",
            "lrs=[0.1]",
            "seeds=[0]",
            "epochs=3",
            "max_failures=0",
            "checkpoint_period_s=0",
            "wandb.mode=disabled",
            f"storage_path={tmp_path / 's'}",
            "name=boom",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    trials = pd.read_csv(exp / "trials.csv").set_index("block")
    assert trials.loc["baseline", "status"] == "TERMINATED"
    assert trials.loc["boom_now", "status"] == "ERROR" and trials.loc["boom_now", "epochs_done"] == 0
    assert trials.loc["boom_later", "status"] == "ERROR" and trials.loc["boom_later", "epochs_done"] == 1
    assert "ablate.grid: error: 2 of 3 trials failed" in p.stderr


CASES = {
    "a run folder that cannot be read": "cannot be listed",
    "an identity without its experiment_id": "names no experiment_id",
    "records of a newer format": "newer ablate",
    "an identity of a newer ablate": "newer ablate",
    "an identity cut short": "not valid YAML",
    "a record member without history": "not a trial record",
    "a file name that is not UTF-8": "not UTF-8",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_of_a_finished_experiment_never_trains_on_input_it_cannot_read(finished, tmp_path, case):
    exp = copy_of(finished, tmp_path)
    records = sorted(exp.glob("run-*/*/checkpoint_*/ablate_record.json"))
    identity = exp / "ablate_experiment.yaml"
    saved = yaml.safe_load(identity.read_text())
    run = CAPLESS if case == "a run folder that cannot be read" else []
    if run:
        trial_dir = records[0].parent.parent
        os.chmod(trial_dir, 0)
    elif case == "an identity without its experiment_id":
        identity.write_text(yaml.safe_dump({k: v for k, v in saved.items() if k != "experiment_id"}))
    elif case == "records of a newer format":
        for r in records:
            r.write_text(json.dumps({**json.loads(r.read_text()), "ablate_record": 2}))
    elif case == "an identity of a newer ablate":
        identity.write_text(yaml.safe_dump({**saved, "a_setting_of_the_future": 1}))
    elif case == "an identity cut short":
        identity.write_text(identity.read_text()[:120] + "\ndepths: [8,")  # cut inside a list
    elif case == "a record member without history":
        rec = json.loads(records[0].read_text())
        del rec["members"][0]["history"]
        records[0].write_text(json.dumps(rec))
    else:
        open(bytes(exp / "run-x") + b"-caf\xe9", "w").close()
    before = snapshot(exp)
    args = [*GRID, f"storage_path={tmp_path / 's'}", "name=fin", "wandb.mode=disabled", "--resume"]
    p = subprocess.run(
        [*run, sys.executable, "-m", "ablate.grid", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=600,
    )
    line = one_error_line(p, CASES[case])
    if case == "an identity without its experiment_id":
        assert f"experiment_id: {saved['experiment_id']}" in line, "says how to repair it"
    if run:
        os.chmod(trial_dir, 0o755)
    assert snapshot(exp) == before, "nothing was trained or rewritten"


@needs_setpriv
def test_resume_takes_a_moved_experiment_settings_that_change_no_result_and_a_read_only_root(finished, tmp_path):
    exp = copy_of(finished, tmp_path, name="moved")  # renamed, and under another storage
    before = snapshot(exp)
    os.chmod(tmp_path / "s", 0o555)  # the storage root is read-only; the experiment's own directory is not
    try:
        p = capless(
            [
                *GRID,
                f"storage_path={tmp_path / 's'}",
                "name=moved",
                "wandb.mode=disabled",
                "precision=fp32",
                "crop_pad=1",
                "flip=false",
                "channels_last=true",
                "asha_grace_period=1",
                "--resume",
            ],
            cwd=tmp_path,
        )
    finally:
        os.chmod(tmp_path / "s", 0o755)
    ran_ok(p)
    assert "nothing to run" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    assert snapshot(exp) == before


def test_a_growth_on_record_whose_identity_was_not_rewritten_is_completed(finished, tmp_path):
    exp = copy_of(finished, tmp_path)
    # A kill in the finish step of a growth to seeds [0, 1]: both seeds on record, the identity still [0].
    identity = exp / "ablate_experiment.yaml"
    identity.write_text(yaml.safe_dump({**yaml.safe_load(identity.read_text()), "seeds": [0]}, sort_keys=False))
    (exp / "history.csv").unlink()
    args = [*GRID, f"storage_path={tmp_path / 's'}", "name=fin", "wandb.mode=disabled"]
    p = run_cli([*args, "--resume"], cwd=tmp_path)
    ran_ok(p)
    assert "nothing to run" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    assert yaml.safe_load(identity.read_text())["seeds"] == [0, 1]
    assert sorted(pd.read_csv(exp / "history.csv")["seed"].unique()) == [0, 1]
    # A resume that trains, with the timing file cut short: no traceback, the new point trains.
    (exp / "grid_timing.json").write_text('{"wall_s": 3')
    p = run_cli([*args[:-1], "seeds=[0,1,2]", "wandb.mode=disabled", "--resume", "--no-report"], cwd=tmp_path)
    ran_ok(p)
    assert "Traceback" not in p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
    assert json.loads((exp / "grid_timing.json").read_text())["trials"] == 3


class _Refuses(BaseHTTPRequestHandler):
    """A W&B server that refuses every key (401), on loopback."""

    def _refuse(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"errors":[{"message":"user is not logged in"}]}')

    do_GET = do_POST = _refuse

    def log_message(self, *args):
        pass


def test_uri_storage_resume_rebuilds_the_buckets_tables_and_the_report_takes_the_uri(finished, tmp_path):
    bucket = finished / "bucket" / "fin"
    uri = f"file://{finished}/bucket/fin"
    (bucket / "history.csv").unlink()
    args = [*GRID, f"storage_path=file://{finished}/bucket", "name=fin", "wandb.mode=disabled", "--resume"]
    p = run_cli(args, cwd=finished / "work")
    ran_ok(p)
    assert "nothing to run" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    assert (bucket / "history.csv").is_file()
    (bucket / "trials.csv").unlink()
    p = run_cli([uri], module="ablate.report", cwd=tmp_path)
    ran_ok(p)
    assert (bucket / "report.html").is_file() and (bucket / "trials.csv").is_file()
    # --wandb-report with a key the W&B server refuses: one line, the report above stands.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = clean_env(WANDB_API_KEY="a" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{server.server_address[1]}")
        p = run_cli([uri, "--wandb-report"], module="ablate.report", cwd=tmp_path, env=env)
    finally:
        server.shutdown()
    one_error_line(p, "W&B did not take the report")


@needs_setpriv
def test_read_only_places_are_one_line(finished, tmp_path):
    # URI storage from a read-only working directory (its tables go to a local mirror there).
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    p = capless(
        [*GRID, f"storage_path=file://{finished}/bucket", "name=fin", "wandb.mode=disabled", "--resume"], cwd=ro
    )
    one_error_line(p, "run from a writable directory")
    # The report into a read-only experiment directory.
    exp = copy_of(finished, tmp_path)
    subprocess.run(["chmod", "-R", "a-w", str(exp)], check=True)
    try:
        p = capless([str(exp)], module="ablate.report", cwd=tmp_path)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(exp)], check=True)
    one_error_line(p, "cannot write the report")


def test_ray_that_cannot_start_and_bad_addresses_are_one_line(tmp_path):
    args = [
        DEFAULT,
        "blocks=[baseline]",
        "depths=[8]",
        "lrs=[0.1]",
        "seeds=[0]",
        "epochs=1",
        "wandb.mode=disabled",
        f"storage_path={tmp_path / 's'}",
    ]
    temp = tmp_path / "tmp"  # this run's own: other tests' runs write theirs to /tmp meanwhile (pytest-xdist)
    temp.mkdir()
    one_error_line(
        run_cli([*args, "name=home"], env=clean_env(HOME="/etc/passwd", TMPDIR=str(temp)), cwd=tmp_path),
        "Ray could not start",
    )
    assert not [f for f in os.listdir(temp) if f.startswith("ablate-ray-")], "no temp log left behind"
    one_error_line(
        run_cli([*args, "name=http"], env=clean_env(RAY_ADDRESS="http://127.0.0.1:8265"), cwd=tmp_path),
        "not a Ray cluster address",
    )
    one_error_line(
        run_cli([*args, "name=scheme", "storage_path=bogus://x/y", "--resume", "--dry-run"], cwd=tmp_path),
        "not a usable location",
    )
    assert not [d for d in ("home", "http", "scheme") if (tmp_path / "s" / d).exists()], "nothing written"
