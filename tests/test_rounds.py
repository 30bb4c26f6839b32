"""--until-resolved (ablate/rounds.py): seeds only where a comparison is open, pairs kept paired, max_seeds kept;
and on the real CLI a study interrupted in its second round that ``--resume --until-resolved`` finishes with
every (point, epoch) once."""
import signal

import numpy as np
import pandas as pd
import pytest

from conftest import DEFAULT, clean_env, ran_ok, run_cli, signal_when_held

from ablate.rounds import judge, next_points
from ablate.stats import Question


def _trials(seeds, effects, noise=0.01, seed=0):
    """A finished trials table: baseline and the blocks of ``effects`` (mean final-acc difference) at depth 8."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in seeds:
        base = 0.8 + rng.normal(0, noise)
        for block, eff in {"baseline": 0.0, **effects}.items():
            acc = base + eff + (rng.normal(0, noise) if block != "baseline" else 0)
            rows.append({"block": block, "depth": 8, "lr": 0.1, "seed": s, "trial_id": f"{block}{s}",
                         "status": "TERMINATED", "final_val_acc": acc, "auc_val_acc": acc, "diverged": False})
    return pd.DataFrame(rows)


def test_only_open_comparisons_get_seeds_paired_with_the_reference_up_to_max_seeds():
    q = Question()
    trials = _trials(range(4), {"big": -0.4, "null": 0.0})
    judged = judge(trials, q, margin_points=0.01, max_seeds=6).set_index("block")
    assert judged.loc["big", "final_verdict"] == "hurts" and judged.loc["big", "more"] == 0  # decided at 4 seeds
    assert judged.loc["null", "final_verdict"] == "open" and judged.loc["null", "more"] == 2  # capped by max_seeds
    points = next_points(judged.reset_index(), trials, q)
    assert sorted((p["block"], p["seed"]) for p in points) == [("baseline", 4), ("baseline", 5), ("null", 4), ("null", 5)]
    assert all(p["depth"] == 8 and p["lr"] == 0.1 for p in points)
    grown = _trials(range(6), {"big": -0.4, "null": 0.0})
    assert (judge(grown, q, 0.01, max_seeds=6)["more"] == 0).all(), "max_seeds reached: nothing more"
    wide = judge(_trials(range(6), {"tiny": 0.0}, noise=0.0005), q, margin_points=1.0, max_seeds=12)
    assert wide["final_verdict"].tolist() == ["equivalent"]


ROUND_BLOCK = """
import glob, os, time
import torch
from ablate.blocks import BasicBlock, register_block

@register_block("held")
class Held(BasicBlock):
    \"\"\"The basic block with its own initialisation (one extra random draw): no true difference from
    baseline, only seed noise; held in its trial's second epoch while the gate exists once the record of
    seed 3 (a point only the second round adds) exists.\"\"\"

    def init_merge(self, channels):
        torch.rand(1)

    def merge(self, out, identity):
        while os.path.exists({gate!r}) and glob.glob({records!r}):
            open({held!r}, "a").close()
            time.sleep(0.05)
        return out + identity
"""


@pytest.mark.slow
def test_a_study_interrupted_in_round_2_finishes_on_resume_with_every_epoch_once(tmp_path):
    exp = tmp_path / "ur"
    gate, held = tmp_path / "gate", tmp_path / "held"
    records = str(exp / "run-*" / "held-d8-lr0.1-s3_*" / "checkpoint_*" / "ablate_record.json")
    (tmp_path / "round_block.py").write_text(ROUND_BLOCK.format(gate=str(gate), held=str(held), records=records))
    gate.touch()
    args = [DEFAULT, "blocks=[baseline,held]", "block_modules=[round_block]", "depths=[8]", "lrs=[0.1]",
            "seeds=[0,1,2]", "epochs=2", "max_seeds=5", "equivalence_margin=0.001", "max_concurrent_trials=1",
            "checkpoint_period_s=0", "wandb.mode=disabled", f"storage_path={tmp_path}", "name=ur", "--until-resolved"]
    code, out = signal_when_held(args, tmp_path, gate, held, signal.SIGINT)
    assert code == 130, out[-3000:]
    assert "round 1: 0 of 1 comparisons resolved; adding 4 trials" in out, out[-3000:]
    resume = next(line.strip() for line in out.splitlines() if line.strip().endswith("--resume"))
    assert "--until-resolved" in resume
    p = run_cli([*args, "--resume"], cwd=tmp_path, env=clean_env())
    ran_ok(p)
    trials, history = pd.read_csv(exp / "trials.csv"), pd.read_csv(exp / "history.csv")
    assert sorted(trials["seed"].unique()) == [0, 1, 2, 3, 4] and len(trials) == 10
    assert (trials["status"] == "TERMINATED").all()
    assert (history.groupby("trial_id")["epoch"].apply(list) == [[1, 2]] * 10).all(), "every (point, epoch) once"
    md = (exp / "report.md").read_text()
    assert "Final: round 2, " in md and "How each verdict was reached" in md and "anytime" in md
