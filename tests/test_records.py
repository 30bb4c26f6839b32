"""The study's pure parts, without Ray: records on disk (hand-made), what a resume runs, growth,
the tables, trial groups and resources."""
import json
import math

import pandas as pd
import pytest
import torch

from ablate.cluster import Capacity, ClusterError, trial_resources
from ablate.config import trial_configs, trial_groups
from ablate.experiment_file import load_experiment
from ablate.records import list_records, make_record, write_checkpoint, write_stopped
from ablate.results import trials_table
from ablate.storage import RECORD_FILE, STATE_FILE, STOPPED_FILE
from ablate.identity import growth, identity
from ablate.study import Study
from ablate.axes import trial_id

EXP_ID = "0123456789ab"


def _epoch(e, acc=0.5, loss=1.0, diverged=False):
    return {"epoch": e, "train_loss": loss, "train_acc": acc, "val_loss": loss, "val_acc": acc, "lr": 0.1,
            "epoch_seconds": 0.1, "images_per_second": 100.0, "diverged": diverged, "node": "n1", "time": 1.0 * e}


def _cfg(tmp_path, *overrides):
    return load_experiment(None, ["blocks=[baseline,skipinit]", "depths=[8]", "lrs=[0.1]", "seeds=[0,1]",
                                  "epochs=3", f"storage_path={tmp_path}", "name=e", *overrides])


def _write(exp_dir, part, trial_dir, ckpt, points, epochs, done, experiment_id=EXP_ID, state=None):
    """A checkpoint as a trial writes it: the trainer's state and the record beside it."""
    d = exp_dir / part / trial_dir / ckpt
    d.mkdir(parents=True)
    members = [{"id": trial_id(experiment_id, p), "point": p} for p in points]
    histories = [[_epoch(e) for e in range(1, n + 1)] for n in epochs]
    write_checkpoint(str(d), state or {"w": torch.zeros(3)}, make_record(experiment_id, trial_dir, members,
                                                                         histories, done))
    return d


def _point(block="baseline", seed=0):
    return {"block": block, "depth": 8, "lr": 0.1, "seed": seed}


def test_records_are_listed_newest_first_and_a_cut_checkpoint_is_known_by_its_own_files(tmp_path):
    exp = tmp_path / "e"
    old = _write(exp, "run-1", "t0", "checkpoint_000000", [_point()], [1], [False])
    new = _write(exp, "run-2", "t0", "checkpoint_000001", [_point()], [2], [False])
    listing = list_records(str(exp), EXP_ID)
    (found,) = listing.by_trial.values()
    assert [f.checkpoint for f in found] == [str(new), str(old)] and found[0].state_whole
    # The state cut short (a full disk): the trial continues from the older checkpoint.
    state = new / STATE_FILE
    state.write_bytes(state.read_bytes()[:50])
    listing = list_records(str(exp), EXP_ID)
    assert listing.broken == [str(new)]
    assert [f.state_whole for f in listing.by_trial[(trial_id(EXP_ID, _point()),)]] == [False, True]
    # A record cut short does not parse: broken, never a truth.
    rec = old / RECORD_FILE
    rec.write_text(rec.read_text()[:40])
    assert str(old) in list_records(str(exp), EXP_ID).broken


def test_a_done_record_is_the_truth_even_when_its_state_is_cut(tmp_path):
    exp = tmp_path / "e"
    d = _write(exp, "run-1", "t0", "checkpoint_000002", [_point()], [3], [True])
    (d / STATE_FILE).write_bytes(b"")
    listing = list_records(str(exp), EXP_ID)
    assert listing.broken == [] and listing.done_ids() == {trial_id(EXP_ID, _point())}


def test_another_experiments_records_and_foreign_files_are_ignored(tmp_path):
    exp = tmp_path / "e"
    _write(exp, "run-1", "t0", "checkpoint_000000", [_point()], [3], [True], experiment_id="ffffffffffff")
    (exp / "run-1" / "t1" / "checkpoint_000000").mkdir(parents=True)
    (exp / "run-1" / "t1" / "checkpoint_000000" / RECORD_FILE).write_text(json.dumps({"hello": 1}))
    listing = list_records(str(exp), EXP_ID)
    assert not listing.by_trial and not listing.broken  # names no experiment: not this one's


def test_nan_metrics_of_a_diverged_trial_round_trip(tmp_path):
    exp = tmp_path / "e"
    d = tmp_path / "e" / "run-1" / "t0" / "checkpoint_000000"
    d.mkdir(parents=True)
    hist = [_epoch(1), {**_epoch(2, loss=float("nan")), "diverged": True}]
    write_checkpoint(str(d), {"w": torch.ones(1)}, make_record(EXP_ID, "t0", [{"id": "a", "point": _point()}],
                                                               [hist], [True]))
    (found,) = list_records(str(exp), EXP_ID).newest()
    assert math.isnan(found.record["members"][0]["history"][1]["train_loss"])


def test_plan_runs_only_points_not_done_and_unfinished_trials_as_they_were(tmp_path):
    cfg = _cfg(tmp_path, "fuse_trials=2", "seeds=[0,1,2]")
    study = Study(cfg, resume=True)
    study.experiment_id = EXP_ID
    exp = tmp_path / "e"
    # baseline seeds 0,1 fused: done; skipinit seeds 0,1 fused: one done, one at epoch 1 (continues together)
    _write(exp, "run-1", "a", "checkpoint_000002", [_point(seed=0), _point(seed=1)], [3, 3], [True, True])
    _write(exp, "run-1", "b", "checkpoint_000000", [_point("skipinit", 0), _point("skipinit", 1)], [2, 1],
           [True, False])
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


def test_a_trial_the_scheduler_stopped_is_settled_and_stays_stopped_early(tmp_path):
    study = Study(_cfg(tmp_path), resume=True)
    study.experiment_id = EXP_ID
    exp = tmp_path / "e"
    ids = {b: trial_id(EXP_ID, _point(b)) for b in ("baseline", "skipinit")}
    for block in ids:  # both at epoch 1 of 3; ASHA stopped baseline's (its note), skipinit's was cut off
        _write(exp, "run-1", block, "checkpoint_000000", [_point(block)], [1], [False])
    write_stopped(str(exp / "run-1" / "baseline"), EXP_ID, "baseline", [ids["baseline"]], 1)
    (exp / "run-1" / "x").mkdir()
    (exp / "run-1" / "x" / STOPPED_FILE).write_text('{"ablate_stopped": 1, "experiment_id": "')  # cut short
    write_stopped(str(exp / "run-1" / "y"), "another", "skipinit", [ids["skipinit"]], 1)  # another experiment's
    assert list_records(str(exp), EXP_ID).stopped == {ids["baseline"]: 1}
    names = {t.name for t in study.plan()}
    assert "baseline-d8-lr0.1-s0" not in names and "skipinit-d8-lr0.1-s0" in names
    for interrupted in (False, True):  # a run stopped by Ctrl-C, or tables rebuilt by the report
        trials = study.tables(errored=set(), interrupted=interrupted)[1].set_index("trial_id")["status"]
        assert trials[ids["baseline"]] == "STOPPED_EARLY"
        assert interrupted is False or trials[ids["skipinit"]] == "INTERRUPTED"  # no note: cut off, not stopped


def test_growth_allows_added_values_in_any_order_and_nothing_else():
    saved = {"seeds": [0, 1], "depths": [8], "epochs": 3}
    assert growth(saved, {"seeds": [1, 0], "depths": [8], "epochs": 3}) == ([], {})  # reordered: no growth
    assert growth(saved, {"seeds": [2, 0, 1], "depths": [8, 20], "epochs": 3}) == ([], {"depth": [20], "seed": [2]})
    assert growth(saved, {"seeds": [0], "depths": [8], "epochs": 4}) == (["epochs", "seeds"], {})


def test_identity_ignores_what_changes_no_result(tmp_path):
    a, b = _cfg(tmp_path), _cfg(tmp_path, "target_acc=0.5", "eval_batch_size=64", "compile=false", "threads=1")
    assert identity(a) == identity(b)
    assert identity(a) != identity(_cfg(tmp_path, "epochs=4"))


def test_trial_groups_share_block_and_depth_and_keep_the_grid_order(tmp_path):
    cfg = _cfg(tmp_path, "lrs=[0.1,0.2]", "seeds=[0,1,2]", "fuse_trials=4")
    groups = trial_groups(cfg)
    assert [len(g) for g in groups] == [4, 2, 4, 2]
    assert all(len({(t.block, t.depth) for t in g}) == 1 for g in groups)
    some = [t.point for t in trial_configs(cfg)][:3]
    assert [[t.point for t in g] for g in trial_groups(cfg, some)] == [some]


def test_trials_table_marks_diverged_interrupted_and_not_started():
    points = [{**_point(seed=s), "trial_id": f"id{s}"} for s in range(4)]
    rows = [{**_point(seed=0), "trial_id": "id0", **_epoch(e)} for e in (1, 2, 3)]
    rows += [{**_point(seed=1), "trial_id": "id1", **_epoch(1, loss=float("nan"), diverged=True)}]
    rows += [{**_point(seed=2), "trial_id": "id2", **_epoch(1)}]
    hist = pd.DataFrame(rows)
    t = trials_table(hist, {"id0": "TERMINATED", "id1": "TERMINATED", "id2": "TERMINATED"}, points, 0.9, 3,
                     interrupted=True)
    assert t["status"].tolist() == ["TERMINATED", "DIVERGED", "INTERRUPTED", "INTERRUPTED"]
    assert t["trial_id"].tolist() == ["id0", "id1", "id2", "id3"] and t["epochs_done"].tolist() == [3, 1, 1, 0]


def test_trial_resources_follow_what_the_cluster_has_or_can_add(tmp_path):
    cfg = _cfg(tmp_path, "trials_per_gpu=4")
    cpu_only = Capacity(gpus_now=0, shapes=[{"CPU": 2}])
    assert trial_resources(cfg, cpu_only) == {"cpu": 1.0, "gpu": 0.0}
    scalable = Capacity(gpus_now=0, shapes=[{"CPU": 2}, {"CPU": 8, "GPU": 1}], autoscaler="the GCS cluster config")
    assert trial_resources(cfg, scalable) == {"cpu": 1.0, "gpu": 0.25}
    with pytest.raises(ClusterError, match="'gpus_per_trial' is 0.5 but the Ray cluster has no GPU"):
        trial_resources(_cfg(tmp_path, "gpus_per_trial=0.5"), cpu_only)
    with pytest.raises(ClusterError, match="'cpus_per_trial' is 16.*up to 8"):
        trial_resources(_cfg(tmp_path, "cpus_per_trial=16"), scalable)


def test_trial_ids_are_stable_per_experiment_and_point():
    p = _point()
    assert trial_id(EXP_ID, p) == trial_id(EXP_ID, dict(p, lr=0.1, depth=8))
    assert trial_id(EXP_ID, p) != trial_id("ffffffffffff", p) != trial_id(EXP_ID, _point(seed=1))


# --- careless use, round three: a record that cannot be read never looks like "not done" ------------------

def test_a_record_of_another_shape_or_a_newer_format_is_an_error_not_a_trial_to_train(tmp_path):
    from ablate.records import RecordError

    exp = tmp_path / "e"
    d = _write(exp, "run-1", "t0", "checkpoint_000000", [_point()], [3], [True])
    rec = json.loads((d / RECORD_FILE).read_text())
    for edit, needle in ((lambda r: r["members"][0].pop("history"), "not a trial record"),
                         (lambda r: r["members"][0].update(done="yes"), "not a trial record"),
                         (lambda r: r.update(ablate_record=2), "newer ablate")):
        bad = json.loads(json.dumps(rec))
        edit(bad)
        (d / RECORD_FILE).write_text(json.dumps(bad))
        with pytest.raises(RecordError, match=needle):
            list_records(str(exp), EXP_ID)


def test_a_file_name_that_is_not_utf8_is_an_error_naming_the_experiment(tmp_path):
    from ablate.records import RecordError

    exp = tmp_path / "e"
    _write(exp, "run-1", "t0", "checkpoint_000000", [_point()], [3], [True])
    open(bytes(exp / "run-1") + b"/caf\xe9.txt", "w").close()
    with pytest.raises(RecordError, match="not UTF-8"):
        list_records(str(exp), EXP_ID)


def test_saved_identity_refuses_what_would_lose_the_records_in_one_line(tmp_path):
    import yaml

    from ablate.storage import EXPERIMENT_FILE
    from ablate.identity import saved_identity
    from ablate.messages import UsageError

    exp = tmp_path / "e"
    _write(exp, "run-1", "t0", "checkpoint_000000", [_point()], [3], [True])
    good = {"blocks": ["baseline"], "experiment_id": EXP_ID}
    for text, needle in (("blocks: [baseline\n", "not valid YAML"), ("- 1\n", "not a mapping"),
                         (yaml.safe_dump({"blocks": ["baseline"]}), f"experiment_id: {EXP_ID}"),
                         (yaml.safe_dump({**good, "future_key": 1}), "newer ablate")):
        (exp / EXPERIMENT_FILE).write_text(text)
        with pytest.raises(UsageError, match=needle) as e:
            saved_identity(str(exp))
        assert "\n" not in str(e.value)
    (exp / EXPERIMENT_FILE).write_text(yaml.safe_dump(good))
    assert saved_identity(str(exp))["experiment_id"] == EXP_ID


def test_identity_compares_settings_as_they_act(tmp_path):
    base = identity(_cfg(tmp_path))
    for same in (["precision=fp32"], ["crop_pad=1", "flip=false"], ["channels_last=true"], ["asha_grace_period=2"],
                 ["name=renamed"]):
        assert identity(_cfg(tmp_path, *same)) == base, same
    for other in (["precision=bf16"], ["crop_pad=2"], ["flip=true"], ["channels_last=false"]):
        assert identity(_cfg(tmp_path, *other)) != base, other
    asha = identity(_cfg(tmp_path, "scheduler=asha", "asha_grace_period=1"))
    assert identity(_cfg(tmp_path, "scheduler=asha", "asha_grace_period=2")) != asha


def test_trials_table_calls_a_running_experiments_unfinished_trials_running():
    hist = pd.DataFrame([{**_point(), "trial_id": "a", "epoch": 1, "val_acc": 0.5, "train_loss": 1.0,
                          "epoch_seconds": 0.1}])
    expected = [{**_point(), "trial_id": "a"}, {**_point(seed=1), "trial_id": "b"}]
    t = trials_table(hist, {"a": "TERMINATED"}, expected, 0.9, 3, interrupted=False, running=True)
    assert list(t["status"]) == ["RUNNING", "NOT_STARTED"]
