"""Blocks from the user's own module (``block_modules``) on real Ray: refused names, local trials,
and the workers of a two-node cluster.  A study's growth: tests/system/test_resume.py."""

import pandas as pd
import pytest

from helpers.blocks import user_block
from helpers.cli import clean_env, one_error_line, ran_ok, run_cli

pytestmark = pytest.mark.slow  # the real CLI in a subprocess, real Ray


def _user_experiment(tmp_path, **extra):
    user_block("half_shortcut", tmp_path, module="user_blocks_mod")
    exp = tmp_path / "mine.yaml"
    keys = {
        "name": "mine",
        "dataset": "digits",
        "block_modules": "[user_blocks_mod]",
        "blocks": "[baseline, half_shortcut]",
        "depths": "[8]",
        "lrs": "[0.1]",
        "seeds": "[0, 1]",
        "epochs": 2,
        "wandb": "{mode: disabled}",
        "storage_path": tmp_path / "store",
        **extra,
    }
    exp.write_text("".join(f"{k}: {v}\n" for k, v in keys.items()))
    return exp


def test_unknown_block_still_lists_the_users_blocks(tmp_path):
    exp = _user_experiment(tmp_path)
    p = run_cli([str(exp), "blocks=[nope]", "--dry-run"], cwd=tmp_path)
    one_error_line(p, "unknown block 'nope'", "half_shortcut")
    p = run_cli([str(exp), "block_modules=[no_such_module]", "--dry-run"], cwd=tmp_path)
    assert p.returncode == 2 and "'block_modules'" in p.stderr and "Traceback" not in p.stderr


def test_users_block_module_trains_in_local_trials(tmp_path):
    exp = _user_experiment(tmp_path, max_concurrent_trials=1)  # helpers.cli.ONE_AT_A_TIME
    # Run from elsewhere: the trials find the module only because it is shipped with them.
    p = run_cli([str(exp)], cwd=tmp_path.parent, env=clean_env())
    ran_ok(p)
    trials = pd.read_csv(tmp_path / "store" / "mine" / "trials.csv")
    assert set(trials["block"]) == {"baseline", "half_shortcut"} and (trials["status"] == "TERMINATED").all()


def test_users_block_module_reaches_the_workers_of_a_two_node_cluster(tmp_path):
    from helpers.cluster import LocalCluster

    cluster = LocalCluster()
    try:
        cluster.start(workers=1)
        exp = _user_experiment(tmp_path, device="cpu", trials_per_gpu=2, cpus_per_trial=0.25, epochs=4)
        p = run_cli([str(exp), "seeds=[0,1,2,3]", "--address", cluster.address], env=cluster.env, cwd=tmp_path.parent)
        ran_ok(p)
    finally:
        cluster.stop()
    hist = pd.read_csv(tmp_path / "store" / "mine" / "history.csv")
    mine = hist[hist["block"] == "half_shortcut"]
    assert len(mine) == 4 * 4 and hist["node"].nunique() == 2, "trials of both blocks ran on both nodes"
