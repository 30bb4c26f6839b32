"""--until-resolved (ablate/rounds.py): seeds only where a comparison is open, pairs kept paired, max_seeds kept;
and on the real CLI a study interrupted in its second round that ``--resume --until-resolved`` finishes with
every (point, epoch) once."""

import re
import signal

import pandas as pd
import pytest

from helpers.blocks import signal_when_held, user_block
from helpers.cli import DEFAULT, clean_env, ran_ok, run_cli


@pytest.mark.slow
def test_a_study_interrupted_in_round_2_finishes_on_resume_with_every_epoch_once(tmp_path):
    exp = tmp_path / "ur"
    gate, held = tmp_path / "gate", tmp_path / "held"
    records = str(exp / "run-*" / "held-d8-lr0.1-s3_*" / "checkpoint_*" / "ablate_record.json")
    user_block("round_block", tmp_path, gate=gate, held=held, records=records)
    gate.touch()
    args = [
        DEFAULT,
        "blocks=[baseline,held]",
        "block_modules=[round_block]",
        "depths=[8]",
        "lrs=[0.1]",
        "seeds=[0,1,2]",
        "epochs=2",
        "max_seeds=9",
        "equivalence_margin=0.001",
        "max_concurrent_trials=1",
        "checkpoint_period_s=0",
        "wandb.mode=disabled",
        f"storage_path={tmp_path}",
        "name=ur",
        "--until-resolved",
    ]
    code, out = signal_when_held(args, tmp_path, gate, held, signal.SIGINT)
    assert code == 130, out[-3000:]
    # 3 seeds cannot decide (the sign test needs 7 at this family's level): the first round adds 3 seeds.
    assert "round 1: 0 of 1 comparisons resolved; adding 6 trials" in out, out[-3000:]
    resume = next(line.strip() for line in out.splitlines() if line.strip().endswith("--resume"))
    assert "--until-resolved" in resume
    p = run_cli([*args, "--resume"], cwd=tmp_path, env=clean_env())
    ran_ok(p)
    trials, history = pd.read_csv(exp / "trials.csv"), pd.read_csv(exp / "history.csv")
    seeds = sorted(trials["seed"].unique())
    assert seeds == list(range(len(seeds))) and 7 <= len(seeds) <= 9, seeds  # the pool's lowest seeds, no gaps
    assert len(trials) == 2 * len(seeds) and (trials["status"] == "TERMINATED").all()
    assert (history.groupby("trial_id")["epoch"].apply(list) == [[1, 2]] * len(trials)).all(), (
        "every (point, epoch) once"
    )
    md = (exp / "report.md").read_text()
    assert "Final: round " in md and "How each verdict was reached" in md and "held: final acc hurts" in md, md[:3000]
    assert "The answer at a glance" in md and "held" in p.stdout.split("The answer (final val acc")[1]
    final = re.search(r"Final: round (\d+), ", md).group(1)
    for _ in range(2):  # a no-op resume of the finished study trains nothing and counts no round
        again = ran_ok(run_cli([*args, "--resume"], cwd=tmp_path, env=clean_env()))
        assert f"round {final}: 1 of 1 comparisons resolved; none is open" in again.stdout, again.stdout[-2000:]
    md = (exp / "report.md").read_text()
    assert f"Final: round {final}, " in md and len(pd.read_csv(exp / "trials.csv")) == len(trials)


@pytest.mark.slow
def test_max_seeds_2_with_until_resolved_is_one_line_before_anything_starts(tmp_path):
    from helpers.cli import one_error_line

    p = run_cli([DEFAULT, "max_seeds=2", f"storage_path={tmp_path}", "--until-resolved"], cwd=tmp_path)
    one_error_line(p, "max_seeds", "before 6 seeds", "allowed: 6 to 1000")
    assert not any(tmp_path.iterdir())  # nothing written
