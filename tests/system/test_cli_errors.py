"""Bad input: exit code 2, one line naming the field and what is allowed, no traceback,
before Ray starts, in seconds, and nothing already written is lost."""

import time

import pytest

from helpers.cli import DEFAULT, clean_env, one_error_line, run_cli

pytestmark = pytest.mark.slow  # the real CLI in a subprocess, real Ray

CASES = {
    "unknown block": (["blocks=[baseline,resnet_magic]"], ["'blocks'", "resnet_magic", "valid blocks: baseline"]),
    "depth not 6n+2": (["depths=[20,21]"], ["'depths'", "21", "6n+2"]),
    "lr zero": (["lrs=[0.1,0]"], ["'lrs'", "> 0"]),
    "lr negative": (["lrs=[-0.1]"], ["'lrs'", "> 0"]),
    "lr not a number": (["lrs=[fast]"], ["'lrs[0]'", "number", "fast"]),
    "empty axis": (["seeds=[]"], ["'seeds'", "empty"]),
    "unknown key": (["epoch=5"], ["unknown key 'epoch'", "epochs"]),
    "wrong type": (["epochs=ten"], ["'epochs'", "integer", "ten"]),
    "wrong nested type": (["wandb.mode=loud"], ["'wandb.mode'", "offline"]),
    "unknown dataset": (["dataset=imagenet"], ["'dataset'", "imagenet", "cifar10"]),
    "batch size zero": (["batch_size=0"], ["'batch_size'", "> 0"]),
    "batch size negative": (["batch_size=-8"], ["'batch_size'", "> 0"]),
    "gpu fraction without gpu": (["gpus_per_trial=0.25"], ["'gpus_per_trial'", "no GPU", "leave it unset"]),
    "not key=value": (["epochs"], ["key=value"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_override_exits_2_with_one_clear_line(case, tmp_path):
    overrides, needles = CASES[case]
    t0 = time.time()
    # No GPU visible, whatever the machine has: the GPU case is then the same on a CUDA machine.
    p = run_cli([DEFAULT, *overrides, f"storage_path={tmp_path}"], cwd=tmp_path, env=clean_env(CUDA_VISIBLE_DEVICES=""))
    one_error_line(p, *needles)
    assert len(p.stderr.strip().splitlines()) == 1 and "ray" not in p.stdout.lower(), p.stderr
    assert time.time() - t0 < 30
    assert not any(tmp_path.iterdir())  # nothing written, Ray never started


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\nblocks: baseline\n")
    p = run_cli([str(bad)], cwd=tmp_path)
    one_error_line(p, "malformed YAML", "bad.yaml")
    assert "Traceback" not in p.stderr


def test_yaml_that_is_not_a_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    p = run_cli([str(bad)], cwd=tmp_path)
    one_error_line(p, "mapping")


def test_missing_experiment_file(tmp_path):
    p = run_cli([str(tmp_path / "nope.yaml")], cwd=tmp_path)
    one_error_line(p, "nope.yaml", "does not exist")


def test_resume_with_nothing_to_resume(tmp_path):
    p = run_cli([DEFAULT, f"storage_path={tmp_path}", "name=never", "--resume"], cwd=tmp_path)
    one_error_line(p, "nothing to resume")
    assert not (tmp_path / "never").exists()


def test_unknown_flag_is_a_usage_error(tmp_path):
    p = run_cli(["--frobnicate"], cwd=tmp_path)
    assert p.returncode == 2 and "usage" in p.stderr and "unrecognized arguments: --frobnicate" in p.stderr
