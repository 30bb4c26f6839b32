"""The study (``ablate.study``): the records are the truth.  What runs next is planned from them alone
(unit), and with every file Tune wrote at the experiment level deleted, --resume trains only what is not
done, on the real CLI and real Ray; plain and fused trials; a growth (more seeds) trains only the new
points and leaves every file on record as it was."""

from ablate.spec.axes import trial_id
from ablate.spec.config import trial_configs
from ablate.study.study import Study

from helpers.records import EXP_ID, grid_point, small_config, write_record


def test_plan_runs_only_points_not_done_and_unfinished_trials_as_they_were(tmp_path):
    cfg = small_config(tmp_path, "fuse_trials=2", "seeds=[0,1,2]")
    study = Study(cfg, resume=True)
    study.experiment_id = EXP_ID
    exp = tmp_path / "e"
    # baseline seeds 0,1 fused: done; skipinit seeds 0,1 fused: one done, one at epoch 1 (continues together)
    write_record(exp, "run-1", "a", "checkpoint_000002", [grid_point(seed=0), grid_point(seed=1)], [3, 3], [True, True])
    write_record(
        exp,
        "run-1",
        "b",
        "checkpoint_000000",
        [grid_point("skipinit", 0), grid_point("skipinit", 1)],
        [2, 1],
        [True, False],
    )
    todo = study.plan()
    names = {t.name: t for t in todo}
    assert set(names) == {"skipinit-d8-lr0.1-s0+1", "baseline-d8-lr0.1-s2", "skipinit-d8-lr0.1-s2"}
    again = names["skipinit-d8-lr0.1-s0+1"]
    assert len(again.checkpoints) == 1 and again.checkpoints[0].endswith("b/checkpoint_000000")
    assert [m["point"]["seed"] for m in again.members] == [0, 1]
    assert names["baseline-d8-lr0.1-s2"].checkpoints == []
    # The tables of this state: every grid point, its status from the records.
    history, trials = study.tables(errored=set(), interrupted=True)
    by_seed = trials.set_index(["block", "seed"])["status"]
    assert by_seed[("baseline", 0)] == "TERMINATED" and by_seed[("skipinit", 1)] == "INTERRUPTED"
    assert by_seed[("baseline", 2)] == "INTERRUPTED" and len(trials) == 6
    assert sorted(history.groupby(["block", "seed"]).size().tolist()) == [1, 2, 3, 3]
    assert set(trials["trial_id"]) == {trial_id(EXP_ID, t.point) for t in trial_configs(cfg)}
