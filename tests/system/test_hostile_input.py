"""Careless and hostile use of the real CLI (real Ray, real files): two runs at once, failed starts, broken
checkpoints, a full disk, absurd or malicious input (signals: tests/system/test_signals.py)."""

import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from helpers.blocks import held_block, user_block
from helpers.cli import DEFAULT, ONE_AT_A_TIME, one_error_line, ran_ok, run_cli, start_cli, wait_for
from helpers.records import trial_records

SMALL = [DEFAULT, ONE_AT_A_TIME, "blocks=[baseline]", "depths=[8]", "lrs=[0.1]", "wandb.mode=disabled"]


@pytest.mark.slow
@pytest.mark.parametrize("uri", [False, True], ids=["local", "file-uri"])
def test_second_run_and_concurrent_resume_are_refused_while_the_first_runs(tmp_path, uri):
    gate, started = tmp_path / "gate", tmp_path / "started"
    user_block("gated_block", tmp_path, gate=gate, started=started)
    gate.touch()
    storage = f"file://{tmp_path}/s" if uri else str(tmp_path / "s")
    args = [
        *SMALL,
        "blocks=[gated]",
        "block_modules=[gated_block]",
        "seeds=[0,1]",
        "epochs=2",
        f"storage_path={storage}",
        "name=twin",
        "--no-report",
    ]
    first = start_cli(args, cwd=tmp_path, log=open(tmp_path / "first.log", "w"))
    exp = tmp_path / "s" / "twin"
    try:
        wait_for(started.exists, 240, "the first run's trials")
        for extra in ([], ["--resume"]):
            p = run_cli([*args, *extra], cwd=tmp_path)
            one_error_line(p, "is being run by pid", str(first.pid))
        gate.unlink()
        assert first.wait(timeout=400) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    trials = pd.read_csv(exp / "trials.csv")
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs_done"] == 2).all()
    assert not list((tmp_path / "s").glob(".twin.lock*")), "the lock goes with the run"


@pytest.mark.parametrize(
    "case",
    [
        "unreachable address",
        "bogus storage scheme",
        "asha grace beyond epochs",
        "storage is a file",
        "storage unwritable",
        "more CPUs than any node",
    ],
)
@pytest.mark.slow
def test_failed_start_exits_2_and_leaves_nothing_in_the_way(tmp_path, case):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    extra = {
        "unreachable address": ["--address", "127.0.0.1:1"],
        "bogus storage scheme": ["storage_path=bogus://x"],
        "asha grace beyond epochs": ["scheduler=asha", "asha_grace_period=50"],
        "storage is a file": [f"storage_path={blocker}"],
        "storage unwritable": ["storage_path=/proc/ablate"],
        "more CPUs than any node": ["cpus_per_trial=1000"],
    }[case]
    needle = {
        "unreachable address": "--address",
        "more CPUs than any node": "'cpus_per_trial'",
        "asha grace beyond epochs": "'asha_grace_period'",
    }.get(case, "'storage_path'")
    args = [*SMALL, "seeds=[0]", "epochs=2", f"storage_path={tmp_path / 's'}", "name=fs"]
    t0 = time.time()
    p = run_cli([*args, *extra], cwd=tmp_path, timeout=120)
    one_error_line(p, needle)
    assert time.time() - t0 < 60
    assert not (tmp_path / "s" / "fs").exists() or not any((tmp_path / "s" / "fs").iterdir())
    if case != "more CPUs than any node":
        return  # refused before Ray starts (nothing can be in the way): one case after Ray runs on

    p = run_cli(args, cwd=tmp_path)  # the same experiment then starts as if nothing happened
    ran_ok(p)


@pytest.mark.slow
def test_unloadable_dataset_is_refused_before_anything_is_written(tmp_path):
    # No network for CIFAR here; an empty data_dir with a file where the download would go fails fast.
    (tmp_path / "data").write_text("not a directory")
    args = [
        *SMALL,
        "seeds=[0]",
        "epochs=1",
        "dataset=cifar10",
        f"data_dir={tmp_path / 'data'}",
        f"storage_path={tmp_path / 's'}",
        "name=nodata",
    ]
    p = run_cli(args, cwd=tmp_path, timeout=300)
    one_error_line(p, "'dataset'", "cifar10")
    assert not (tmp_path / "s" / "nodata").exists()


@pytest.mark.slow
def test_broken_checkpoint_restarts_its_trial_and_tables_count_only_finished(tmp_path):
    exp = tmp_path / "bk"
    gate, held = held_block(tmp_path, exp, "held-d8-lr0.1-s0")
    args = [
        *SMALL,
        "blocks=[held]",
        "block_modules=[held_block]",
        "seeds=[0,1]",
        "epochs=6",
        "max_concurrent_trials=1",
        "checkpoint_period_s=0",
        f"storage_path={tmp_path}",
        "name=bk",
    ]
    proc = start_cli(args, cwd=tmp_path, log=open(tmp_path / "a.log", "w"))
    try:
        wait_for(held.exists, 300, "a trial held with a checkpoint")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies
        proc.wait(timeout=30)
    gate.unlink()
    for ckpt in exp.glob("run-*/*/checkpoint_*/state.pt"):  # a disk that filled up: every checkpoint cut short
        ckpt.write_bytes(ckpt.read_bytes()[:100])
    p = run_cli([*args, "--resume"], cwd=tmp_path)
    ran_ok(p)
    assert "starts again from epoch 1" in p.stdout + p.stderr
    trials = pd.read_csv(exp / "trials.csv")
    hist = pd.read_csv(exp / "history.csv")
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs_done"] == 6).all()
    assert (hist.groupby("seed")["epoch"].apply(list) == [list(range(1, 7))] * 2).all()


def _alias_bomb(key):
    names = "abcdefghi"
    parts = ["&a [" + ",".join(["l"] * 9) + "]"]
    parts += [f"&{names[i]} [" + ",".join(["*" + names[i - 1]] * 9) + "]" for i in range(1, 9)]
    return f"{key}: [" + ", ".join(parts) + "]\n"


FILES = {
    "alias bomb under a valid key": (_alias_bomb("epochs"), ["'epochs'", "integer"]),
    "alias bomb in a list key": (_alias_bomb("milestones"), ["'milestones[0]'", "number"]),
    "duplicate key": ("epochs: 2\nepochs: 500\n", ["'epochs'", "twice"]),
    "binary file": (b"\x00\xff\xfe binary", ["not UTF-8"]),
    "UTF-16 file": ("epochs: 3\n".encode("utf-16"), ["not UTF-8"]),
    "huge file": ("# " + "x" * 300_000 + "\n", ["at most"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(FILES))
def test_hostile_experiment_file_is_one_bounded_line(tmp_path, case):
    text, needles = FILES[case]
    f = tmp_path / "exp.yaml"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    t0 = time.time()
    p = run_cli([str(f), f"storage_path={tmp_path / 's'}", "--dry-run"], cwd=tmp_path, timeout=60)
    line = one_error_line(p, *needles)
    assert len(line) < 400 and time.time() - t0 < 30


OVERRIDES = {
    "5e-4 without a dot": (["weight_decay=5e-4", "lrs=[1e-3]"], 0, "lrs: [0.001]"),
    "numeric name": (["name=2024"], 0, "experiment 2024"),
    "empty storage_path": (["storage_path="], 2, "'storage_path'"),
    "malformed list": (["depths=[20,"], 2, "depths"),
    "absurd epochs": (["epochs=1000000000"], 2, "'epochs'"),
    "negative momentum": (["momentum=-1"], 2, "'momentum'"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(OVERRIDES))
def test_overrides_users_write_are_read_or_refused_in_one_line(tmp_path, case):
    overrides, code, needle = OVERRIDES[case]
    p = run_cli([DEFAULT, *overrides, "--dry-run"], cwd=tmp_path)
    if code == 0:
        ran_ok(p)
        assert needle in p.stdout, p.stdout
    else:
        one_error_line(p, needle)


@pytest.mark.slow
def test_options_may_come_before_overrides(tmp_path):
    p = run_cli([DEFAULT, "--dry-run", "epochs=3", "--no-report", "name=x"], cwd=tmp_path)
    ran_ok(p)
    assert "experiment x:" in p.stdout and "3 epochs" in p.stdout


@pytest.mark.slow
def test_report_refuses_empty_and_cut_short_csvs_in_one_line_or_rebuilds_them_from_records(mini_grid, tmp_path):
    import shutil

    exp = tmp_path / "copy"
    shutil.copytree(mini_grid["dir"], exp, ignore=shutil.ignore_patterns("run-*"))  # the tables alone
    text = (exp / "history.csv").read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    (exp / "history.csv").write_text(text[: len(text) - 1 - len(last) // 2])  # cut in the middle of its last row
    p = run_cli([str(exp)], module="ablate.report")
    one_error_line(p, "history.csv", "cut short")
    (exp / "trials.csv").write_text("")
    (exp / "history.csv").write_text(text)
    p = run_cli([str(exp)], module="ablate.report")
    one_error_line(p, "trials.csv", "empty")
    (exp / "trials.csv").write_text(text)  # a foreign table (history.csv's) where trials.csv belongs
    p = run_cli([str(exp)], module="ablate.report")
    one_error_line(p, "trials.csv", "lacks the columns")
    # With the trials' records beside them, a lost or cut table is rebuilt from them: no advice in a circle.
    full = tmp_path / "full"
    shutil.copytree(mini_grid["dir"], full)
    (full / "history.csv").write_text(text[: len(text) - 1 - len(last) // 2])
    (full / "trials.csv").unlink()
    p = run_cli([str(full)], module="ablate.report")
    ran_ok(p)
    assert "rebuilt from the trials' records" in p.stdout, p.stdout + p.stderr
    assert (full / "history.csv").read_text() == text
    assert (full / "trials.csv").read_text() == (mini_grid["dir"] / "trials.csv").read_text()


@pytest.mark.slow
def test_full_disk_is_one_line_and_resume_after_freeing_space_reruns_no_finished_trial(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        exp = disk / "full"
        gate, held = held_block(tmp_path, exp, "held-d8-lr0.1-s1")  # seed 0 finishes, seed 1 is held mid-run
        args = [
            *SMALL,
            "blocks=[held]",
            "block_modules=[held_block]",
            "seeds=[0,1,2]",
            "epochs=6",
            "max_concurrent_trials=1",
            "checkpoint_period_s=0",
            f"storage_path={disk}",
            "name=full",
        ]
        log = tmp_path / "grid.log"
        proc = start_cli(args, cwd=tmp_path, log=open(log, "w"))
        try:
            wait_for(held.exists, 300, "the run held at its known point")
            finished = [d.split("/")[1] for d, r in trial_records(exp).items() if all(m["done"] for m in r["members"])]
            assert len(finished) == 1, finished
            with open(disk / "filler", "wb") as f:  # the disk fills up under the running grid
                try:
                    while True:
                        f.write(b"\0" * 2**16)
                        f.flush()
                except OSError:
                    pass
            gate.unlink()  # the held trial trains on: its next checkpoint meets the full disk
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        out = log.read_text()
        errors = [line for line in out.splitlines() if line.startswith("ablate.grid: error")]
        assert code == 1 and len(errors) == 1 and "no space left on" in errors[0] and str(exp) in errors[0], out[-3000:]
        assert errors[0].rstrip().endswith("--resume")
        # Which of the files Tune rewrites the full disk cut short depends on timing (on CI once the
        # finished trial's result.json, here usually the experiment state): cut them all, so the
        # resume below meets the worst case every time.  ablate reads none of them.
        for f in [
            *exp.glob("run-*/*/result.json"),
            *exp.glob("run-*/*/progress.csv"),
            *exp.glob("run-*/*state-*.json"),
        ]:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        (disk / "filler").unlink()  # space freed
        p = run_cli([*args, "--resume"], cwd=tmp_path)
        ran_ok(p)
        trials = pd.read_csv(exp / "trials.csv")
        hist = pd.read_csv(exp / "history.csv")
        assert (trials["status"] == "TERMINATED").all() and len(trials) == 3
        assert (hist.groupby("seed")["epoch"].apply(list) == [list(range(1, 7))] * 3).all()
        # Finished trials were not rerun: no later Tune run holds a trial of theirs.
        later = [d.name for run in sorted(exp.glob("run-*"))[1:] for d in run.iterdir() if d.is_dir()]
        for name in finished:
            assert not [d for d in later if d.startswith(name.rsplit("_", 2)[0] + "_")], "a finished trial ran again"
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
