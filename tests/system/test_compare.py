"""``python -m ablate.compare BEFORE AFTER`` on real experiments: the same code twice is "same" in every cell
(and --until-resolved grows both experiments until it is), a block rewritten under the same name is "changed"
where it matters, settings that differ unnamed are refused in one line (the judging alone, and its error
rate by simulation, is tests/unit/analysis/test_compare.py)."""

import shutil

import pandas as pd
import pytest
import yaml

from ablate.analysis.compare import (
    EXIT_CHANGED,
    EXIT_OPEN,
    EXIT_SAME,
)

from helpers.blocks import user_block
from helpers.cli import DEFAULT, ONE_AT_A_TIME, clean_env, one_error_line, ran_ok, run_cli


def _grid(tmp_path, name, module, seeds, *extra):
    p = run_cli(
        [
            DEFAULT,
            "blocks=[baseline,mine]",
            f"block_modules=[{module}]",
            "depths=[8]",
            "lrs=[0.1]",
            f"seeds={seeds}",
            "epochs=1",
            "wandb.mode=disabled",
            f"storage_path={tmp_path / 'r'}",
            f"name={name}",
            "--no-report",
            ONE_AT_A_TIME,
            *extra,
        ],
        cwd=tmp_path,
        env=clean_env(),
    )
    ran_ok(p)
    return tmp_path / "r" / name


@pytest.mark.slow
def test_the_same_code_twice_is_same_a_rewritten_block_changed_and_until_resolved_grows_both(tmp_path):
    user_block("mine_plain", tmp_path, module="plain_blocks")
    user_block("mine_half", tmp_path, module="half_blocks")
    before = _grid(tmp_path, "main", "plain_blocks", "[0,1,2,3,4,5]")
    after = _grid(tmp_path, "branch", "plain_blocks", "[0,1,2,3,4,5]")
    # Six identical seeds cannot yet say "same" within 0.5 points without assuming a shape (the sign test
    # needs 9 at this family's level): open, exit 3.
    p = run_cli([str(before), str(after)], module="ablate.compare", cwd=tmp_path, env=clean_env())
    assert p.returncode == EXIT_OPEN, p.stdout[-2000:] + p.stderr[-2000:]
    assert "overall: open" in p.stdout and "commit " in p.stdout
    p = run_cli(
        [str(before), str(after), "--until-resolved", "--max-seeds", "9"],
        module="ablate.compare",
        cwd=tmp_path,
        env=clean_env(),
    )
    assert p.returncode == EXIT_SAME, p.stdout[-3000:] + p.stderr[-3000:]
    assert "overall: same (2 same of 2 cells" in p.stdout
    assert p.stdout.count("ablate.compare: growing") == 2  # each experiment grew once, through its own records
    for exp in (before, after):
        trials = pd.read_csv(exp / "trials.csv")
        assert sorted(trials["seed"].unique()) == list(range(9)) and (trials["status"] == "TERMINATED").all()
    assert (after / "compare.html").exists() and "| block mine, depth 8, lr 0.1 | 9 | same |" in (
        after / "compare.md"
    ).read_text()
    # The rewrite under the same name: changed where it matters (mine), same where it does not (baseline).
    half = _grid(tmp_path, "half", "half_blocks", "[0,1,2,3,4,5,6,7,8]")
    p = run_cli([str(before), str(half)], module="ablate.compare", cwd=tmp_path, env=clean_env())
    assert p.returncode == EXIT_CHANGED, p.stdout[-2000:] + p.stderr[-2000:]
    assert "| block mine, depth 8, lr 0.1 | 9 | changed | changed -" in p.stdout
    assert "| block baseline, depth 8, lr 0.1 | 9 | same |" in p.stdout
    # A setting that changes a result, changed without saying so: one line, exit 2, naming it.
    edited = tmp_path / "r" / "edited"
    shutil.copytree(before, edited)
    ident = yaml.safe_load((edited / "ablate_experiment.yaml").read_text())
    (edited / "ablate_experiment.yaml").write_text(yaml.safe_dump({**ident, "weight_decay": 0.0005}))
    p = run_cli([str(before), str(edited)], module="ablate.compare", cwd=tmp_path, env=clean_env())
    one_error_line(p, "weight_decay", "--differs weight_decay")
