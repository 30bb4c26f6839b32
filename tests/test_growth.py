"""A study that grows (more values on an axis, with --resume) and blocks from the user's own module,
on real Ray: locally and on a two-node cluster."""
import hashlib
import textwrap

import pandas as pd
import pytest

from conftest import DEFAULT, clean_env, run_cli

pytestmark = pytest.mark.slow  # the real CLI in a subprocess, real Ray

BASE = [DEFAULT, "blocks=[baseline,skipinit]", "depths=[8]", "lrs=[0.1]", "epochs=2", "wandb.mode=offline"]


def _digests(root):
    """sha256 of every file in the experiment's Tune runs (results, checkpoints, records, W&B runs)."""
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for d in root.glob("run-*") for f in d.rglob("*") if f.is_file()}


def test_finished_experiment_grows_by_a_seed_without_touching_the_first_trials(tmp_path):
    args = [*BASE, f"storage_path={tmp_path}", "name=grow"]
    p = run_cli([*args, "seeds=[0]"], cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    exp = tmp_path / "grow"
    before = _digests(exp)
    assert any("result.json" in k for k in before) and any(".wandb" in k for k in before)

    p = run_cli([*args, "seeds=[0,1]", "--resume", "--dry-run"], cwd=tmp_path)
    assert p.returncode == 0 and "seeds +[1]: 2 new trials beside the 2 it holds" in p.stdout, p.stdout + p.stderr
    p = run_cli([*args, "seeds=[0,1]", "epochs=3", "--resume"], cwd=tmp_path)  # anything else: refused
    assert p.returncode == 2 and "differs in: epochs" in p.stderr
    p = run_cli([*args, "seeds=[1]", "--resume"], cwd=tmp_path)  # a value removed: refused
    assert p.returncode == 2 and "differs in: seeds" in p.stderr

    p = run_cli([*args, "seeds=[0,1]", "--resume"], cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "growing" in p.stdout
    after = _digests(exp)
    assert {k: v for k, v in after.items() if k in before} == before, "the first run's files are byte-for-byte unchanged"
    trials = pd.read_csv(exp / "trials.csv")
    hist = pd.read_csv(exp / "history.csv")
    assert len(trials) == 4 and (trials["status"] == "TERMINATED").all()
    assert sorted(trials["seed"]) == [0, 0, 1, 1] and len(hist) == 4 * 2
    assert "| skipinit | 8 |" in (exp / "report.md").read_text()
    runs = sorted(exp.glob("run-*"))
    assert len(runs) == 2 and len(list(runs[1].glob("*/result.json"))) == 2  # the new points: one more Tune run
    assert all("-s1_" in d.name for d in runs[1].iterdir() if d.is_dir())
    from wandb_reader import wandb_files

    assert len(wandb_files(exp)) == 4  # a W&B run per trial, new ones beside the old
    p = run_cli([*args, "seeds=[0,1]", "--resume"], cwd=tmp_path)
    assert p.returncode == 0 and "had already finished" in p.stdout


USER_BLOCKS = '''
    import torch
    from ablate.blocks import BasicBlock, register_block


    @register_block("half_shortcut")
    class HalfShortcut(BasicBlock):
        """relu(F(x) + 0.5 * shortcut(x)): a user's block, outside the package."""

        def merge(self, out, identity):
            return out + 0.5 * identity
'''


def _user_experiment(tmp_path, **extra):
    (tmp_path / "user_blocks_mod.py").write_text(textwrap.dedent(USER_BLOCKS))
    exp = tmp_path / "mine.yaml"
    keys = {"name": "mine", "dataset": "digits", "block_modules": "[user_blocks_mod]",
            "blocks": "[baseline, half_shortcut]", "depths": "[8]", "lrs": "[0.1]", "seeds": "[0, 1]", "epochs": 2,
            "wandb": "{mode: disabled}", "storage_path": tmp_path / "store", **extra}
    exp.write_text("".join(f"{k}: {v}\n" for k, v in keys.items()))
    return exp


def test_unknown_block_still_lists_the_users_blocks(tmp_path):
    exp = _user_experiment(tmp_path)
    p = run_cli([str(exp), "blocks=[nope]", "--dry-run"], cwd=tmp_path)
    assert p.returncode == 2 and "unknown block 'nope'" in p.stderr and "half_shortcut" in p.stderr
    p = run_cli([str(exp), "block_modules=[no_such_module]", "--dry-run"], cwd=tmp_path)
    assert p.returncode == 2 and "'block_modules'" in p.stderr and "Traceback" not in p.stderr


def test_users_block_module_trains_in_local_trials(tmp_path):
    exp = _user_experiment(tmp_path)
    # Run from elsewhere: the trials find the module only because it is shipped with them.
    p = run_cli([str(exp)], cwd=tmp_path.parent, env=clean_env())
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "store" / "mine" / "trials.csv")
    assert set(trials["block"]) == {"baseline", "half_shortcut"} and (trials["status"] == "TERMINATED").all()


def test_users_block_module_reaches_the_workers_of_a_two_node_cluster(tmp_path):
    from conftest import LocalCluster

    cluster = LocalCluster()
    try:
        cluster.start(workers=1)
        exp = _user_experiment(tmp_path, device="cpu", trials_per_gpu=2, cpus_per_trial=0.25, epochs=4)
        p = run_cli([str(exp), "seeds=[0,1,2,3]", "--address", cluster.address], env=cluster.env,
                    cwd=tmp_path.parent)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    finally:
        cluster.stop()
    hist = pd.read_csv(tmp_path / "store" / "mine" / "history.csv")
    mine = hist[hist["block"] == "half_shortcut"]
    assert len(mine) == 4 * 4 and hist["node"].nunique() == 2, "trials of both blocks ran on both nodes"
