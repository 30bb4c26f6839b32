"""The batch script ``python -m ablate.slurm`` writes, without SLURM: every value checked or quoted, SLURM's
time formats, and the refusals that come before anything is written or submitted."""

import os
import re
import shlex
import subprocess

import pytest

from ablate.errors import SlurmError
from ablate.run.slurm import MIN_TIME_S, batch_script, parse_time
from ablate.slurm import main

KW = dict(nodes=2, gpus_per_node=1, cpus_per_node=4, time_s=3600, workdir="/w", name="n")


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90", 5400),
        ("5:30", 330),
        ("1:30:00", 5400),
        ("2-0", 172800),
        ("1-02:03", 93780),
        ("1-00:00:00", 86400),
        ("infinite", float("inf")),
        ("UNLIMITED", float("inf")),
    ],
)
def test_slurm_time_formats(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["1h", "1:2:3:4", "-5", "", "1.5", "1-"])
def test_a_time_slurm_cannot_read_is_refused(text):
    with pytest.raises(SlurmError, match="not a SLURM time"):
        parse_time(text)


@pytest.mark.parametrize("partition", ["gpu\nrm -rf ~", "gpu --account=other", "gpu;id", "$(id)", ""])
def test_a_partition_that_is_not_a_name_is_refused(partition):
    with pytest.raises(SlurmError, match="--partition"):
        batch_script(None, [], partition=partition, **KW)


def test_hostile_values_are_quoted_and_the_script_parses(tmp_path):
    evil_dir = tmp_path / "a b'$(touch pwned)`id`"
    evil_dir.mkdir()
    script = batch_script(
        str(evil_dir / "e.yaml"),
        ["name=x", 'wandb.tags=["$(touch pwned2)"]', "a=b;id"],
        partition="gpu,debug",
        **{**KW, "workdir": str(evil_dir)},
    )
    path = tmp_path / "s.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    sbatch = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert all(re.fullmatch(r"#SBATCH --[a-z-]+(=[A-Za-z0-9_.,:%@+-]+)?", line) for line in sbatch), sbatch
    assert not any("pwned" in line and "'" not in line for line in script.splitlines())


def _main(tmp_path, monkeypatch, *args, env=None):
    monkeypatch.chdir(tmp_path)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    return main(["blocks=[baseline]", "depths=[8]", "lrs=[0.1]", "seeds=[0]", "epochs=1", *args])


def test_a_newline_in_the_working_directory_cannot_add_an_sbatch_option(tmp_path, monkeypatch):
    evil = tmp_path / "x\n#SBATCH --account=evil"
    evil.mkdir()
    code = _main(evil, monkeypatch, f"storage_path={tmp_path}/s")
    assert code == 2 or not any(
        line.startswith("#SBATCH --account") for line in next(evil.glob("*.sbatch")).read_text().splitlines()
    )


def test_refusals_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys):
    store = f"storage_path={tmp_path}/s"
    for args, needle in (
        (["--time", "2"], "would only ever requeue"),
        (["--time", "1h"], "not a SLURM time"),
        (["--partition", "a b"], "--partition"),
        (["--cpus-per-node", "0"], "CPUs >= 1"),
    ):
        assert _main(tmp_path, monkeypatch, store, *args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (args, err)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert _main(tmp_path, monkeypatch, store, "--submit") == 2
    assert "sbatch is not on PATH" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.sbatch"))
    assert MIN_TIME_S > 120


def test_90_minutes_node_local_storage_and_the_pinned_storage(tmp_path, monkeypatch, capsys):
    assert _main(tmp_path, monkeypatch, "--time", "90", "--nodes", "4", env={"ABLATE_STORAGE_PATH": "/tmp/abl-x"}) == 0
    out = capsys.readouterr()
    assert "each node's own disk" in out.err
    script = next(tmp_path.glob("*.sbatch")).read_text()
    assert "#SBATCH --time=1:30:00" in script and "storage_path=/tmp/abl-x" in script
    assert "ray symmetric-run" not in script and "-m ray.scripts.scripts start --head" in script
    os.remove(next(tmp_path.glob("*.sbatch")))


def test_a_dry_run_writes_nothing_not_even_the_storage_directory(tmp_path, monkeypatch, capsys):
    store = tmp_path / "not" / "yet"
    assert _main(tmp_path, monkeypatch, f"storage_path={store}", "--dry-run") == 0
    assert "#SBATCH --requeue" in capsys.readouterr().out
    assert not (tmp_path / "not").exists() and not list(tmp_path.glob("*.sbatch"))
    assert _main(tmp_path, monkeypatch, "storage_path=/proc/ablate", "--dry-run") == 2  # still checked
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["cpus_per_trial=4", "--cpus-per-node", "2"], "'cpus_per_trial' is 4 but a node of this job has 2 CPUs"),
        (["gpus_per_trial=2", "--gpus-per-node", "1"], "'gpus_per_trial' is 2 but a node of this job has 1 GPUs"),
        (["gpus_per_trial=0.5"], "'gpus_per_trial' is 0.5 but a node of this job has 0 GPUs"),
        (
            ["--gpus-per-node", "8", "trials_per_gpu=64", "cpus_per_trial=256"],
            "--cpus-per-node, not given, would be 131072",
        ),
    ],
    ids=[
        "more CPUs than a node",
        "more GPUs than a node",
        "a GPU where the job has none",
        "a computed --cpus-per-node over the bound",
    ],
)
def test_a_job_whose_trials_no_node_can_hold_is_refused_before_it_is_written(
    tmp_path, monkeypatch, capsys, args, needle
):
    assert _main(tmp_path, monkeypatch, f"storage_path={tmp_path}/s", *args) == 2  # before --submit too
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ablate.slurm: error: ") and needle in err[0], err
    assert not list(tmp_path.glob("*.sbatch")), "nothing written, nothing submitted"


def test_without_gpus_a_node_gets_a_trials_cpus_and_a_trial_that_fits_is_written(tmp_path, monkeypatch, capsys):
    assert _main(tmp_path, monkeypatch, f"storage_path={tmp_path}/s", "cpus_per_trial=4") == 0
    assert "#SBATCH --cpus-per-task=4" in next(tmp_path.glob("*.sbatch")).read_text()


@pytest.mark.parametrize("form", ["file://", "//", "/../", "/dev/shm"])
def test_node_local_storage_is_warned_of_however_it_is_written(tmp_path, monkeypatch, capsys, form):
    from ablate.run.slurm import _node_local

    assert str(tmp_path).startswith("/tmp/")  # pytest's own: each node's disk
    store = {
        "file://": f"file://{tmp_path}/s",
        "//": f"/{tmp_path}/s",
        "/../": f"{tmp_path}/../{tmp_path.name}/s",
        "/dev/shm": "/dev/shm/ablate-never-made",
    }[form]
    assert _main(tmp_path, monkeypatch, f"storage_path={store}", "--nodes", "2", "--dry-run") == 0
    assert "each node's own disk" in capsys.readouterr().err
    assert not os.path.exists("/dev/shm/ablate-never-made")
    assert not _node_local("/tmpfoo/abl") and not _node_local("/var/tmpfs/abl")  # only a name that begins the same


# Flags `ray start` takes only with --head (ray/scripts/scripts.py): a worker given one refuses to start (PANIC),
# its step exits 0, and every trial trains on the head alone (tests/system/test_slurm_nodes.py runs two nodes).
HEAD_ONLY = ("--port", "--include-dashboard", "--redis-shard-ports")


def test_worker_nodes_join_with_no_flag_only_a_head_takes(tmp_path):
    script = batch_script(
        None,
        ["epochs=1"],
        nodes=2,
        gpus_per_node=0,
        cpus_per_node=2,
        time_s=3600,
        partition=None,
        workdir=str(tmp_path),
        name="x",
    )
    node = shlex.split(re.search(r"^srun --kill-on-bad-exit=0 bash -c (.*?) &$", script, re.M | re.S).group(1))[0]
    (join,) = [line for line in node.splitlines() if " start --address=" in line]
    assert not {f.split("=")[0] for f in join.split() if f.startswith("--")} & set(HEAD_ONLY), join
    head = next(line for line in node.splitlines() if " start --head" in line)
    assert "--include-dashboard=false" in head  # the head still starts without a dashboard
