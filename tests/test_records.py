"""The study's pure parts, without Ray: records on disk (hand-made), what a resume runs, growth,
the tables, trial groups and resources."""
import json
import math

import pytest
import torch

from ablate.records import list_records, make_record, write_checkpoint, write_stopped
from ablate.storage import RECORD_FILE, STATE_FILE, STOPPED_FILE
from ablate.study import Study
from ablate.axes import trial_id
from conftest import EXP_ID, epoch_row, grid_point, small_config, write_record

def test_records_are_listed_newest_first_and_a_cut_checkpoint_is_known_by_its_own_files(tmp_path):
    exp = tmp_path / "e"
    old = write_record(exp, "run-1", "t0", "checkpoint_000000", [grid_point()], [1], [False])
    new = write_record(exp, "run-2", "t0", "checkpoint_000001", [grid_point()], [2], [False])
    listing = list_records(str(exp), EXP_ID)
    (found,) = listing.by_trial.values()
    assert [f.checkpoint for f in found] == [str(new), str(old)] and found[0].state_whole
    # The state cut short (a full disk): the trial continues from the older checkpoint.
    state = new / STATE_FILE
    state.write_bytes(state.read_bytes()[:50])
    listing = list_records(str(exp), EXP_ID)
    assert listing.broken == [str(new)]
    assert [f.state_whole for f in listing.by_trial[(trial_id(EXP_ID, grid_point()),)]] == [False, True]
    # A record cut short does not parse: broken, never a truth.
    rec = old / RECORD_FILE
    rec.write_text(rec.read_text()[:40])
    assert str(old) in list_records(str(exp), EXP_ID).broken


def test_a_done_record_is_the_truth_even_when_its_state_is_cut(tmp_path):
    exp = tmp_path / "e"
    d = write_record(exp, "run-1", "t0", "checkpoint_000002", [grid_point()], [3], [True])
    (d / STATE_FILE).write_bytes(b"")
    listing = list_records(str(exp), EXP_ID)
    assert listing.broken == [] and listing.done_ids() == {trial_id(EXP_ID, grid_point())}


def test_another_experiments_records_and_foreign_files_are_ignored(tmp_path):
    exp = tmp_path / "e"
    write_record(exp, "run-1", "t0", "checkpoint_000000", [grid_point()], [3], [True], experiment_id="ffffffffffff")
    (exp / "run-1" / "t1" / "checkpoint_000000").mkdir(parents=True)
    (exp / "run-1" / "t1" / "checkpoint_000000" / RECORD_FILE).write_text(json.dumps({"hello": 1}))
    listing = list_records(str(exp), EXP_ID)
    assert not listing.by_trial and not listing.broken  # names no experiment: not this one's


def test_nan_metrics_of_a_diverged_trial_round_trip(tmp_path):
    exp = tmp_path / "e"
    d = tmp_path / "e" / "run-1" / "t0" / "checkpoint_000000"
    d.mkdir(parents=True)
    hist = [epoch_row(1), {**epoch_row(2, loss=float("nan")), "diverged": True}]
    write_checkpoint(str(d), {"w": torch.ones(1)}, make_record(EXP_ID, "t0", [{"id": "a", "point": grid_point()}],
                                                               [hist], [True]))
    (found,) = list_records(str(exp), EXP_ID).newest()
    assert math.isnan(found.record["members"][0]["history"][1]["train_loss"])




def test_a_trial_the_scheduler_stopped_is_settled_and_stays_stopped_early(tmp_path):
    study = Study(small_config(tmp_path), resume=True)
    study.experiment_id = EXP_ID
    exp = tmp_path / "e"
    ids = {b: trial_id(EXP_ID, grid_point(b)) for b in ("baseline", "skipinit")}
    for block in ids:  # both at epoch 1 of 3; ASHA stopped baseline's (its note), skipinit's was cut off
        write_record(exp, "run-1", block, "checkpoint_000000", [grid_point(block)], [1], [False])
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
        # No note: cut off by the Ctrl-C; a run that ended without it finishing is what stopped it (the scheduler).
        assert trials[ids["skipinit"]] == ("INTERRUPTED" if interrupted else "STOPPED_EARLY")














# --- careless use, round three: a record that cannot be read never looks like "not done" ------------------

def test_a_record_of_another_shape_or_a_newer_format_is_an_error_not_a_trial_to_train(tmp_path):
    from ablate.records import RecordError

    exp = tmp_path / "e"
    d = write_record(exp, "run-1", "t0", "checkpoint_000000", [grid_point()], [3], [True])
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
    write_record(exp, "run-1", "t0", "checkpoint_000000", [grid_point()], [3], [True])
    open(bytes(exp / "run-1") + b"/caf\xe9.txt", "w").close()
    with pytest.raises(RecordError, match="not UTF-8"):
        list_records(str(exp), EXP_ID)





