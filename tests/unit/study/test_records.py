"""The study's pure parts, without Ray: records on disk (hand-made), what a resume runs, growth,
the tables, trial groups and resources."""

import json
import math

import pytest
import torch

from ablate.run.checkpoints import write_checkpoint
from ablate.spec.axes import trial_id
from ablate.storage import RECORD_FILE, STATE_FILE, STOPPED_FILE
from ablate.study.records import list_records, make_record, write_stopped
from ablate.study.study import Study

from helpers.records import EXP_ID, epoch_row, grid_point, small_config, write_record


def test_records_are_listed_newest_first_and_a_cut_checkpoint_is_known_by_its_own_files(tmp_path):
    exp = tmp_path / "e"
    old = write_record(exp, "run-1", "t0", "checkpoint_000000", [grid_point()], [1], [False])
    new = write_record(exp, "run-2", "t0", "checkpoint_000001", [grid_point()], [2], [False])
    listing = list_records(str(exp), EXP_ID)
    (found,) = listing.by_group.values()
    assert [f.checkpoint for f in found] == [str(new), str(old)] and found[0].state_whole
    # The state cut short (a full disk): the trial continues from the older checkpoint.
    state = new / STATE_FILE
    state.write_bytes(state.read_bytes()[:50])
    listing = list_records(str(exp), EXP_ID)
    assert listing.broken == [str(new)]
    assert [f.state_whole for f in listing.by_group[(trial_id(EXP_ID, grid_point()),)]] == [False, True]
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


def test_another_experiments_records_are_ignored(tmp_path):
    exp = tmp_path / "e"
    write_record(exp, "run-1", "t0", "checkpoint_000000", [grid_point()], [3], [True], experiment_id="ffffffffffff")
    listing = list_records(str(exp), EXP_ID)
    assert not listing.by_group and not listing.broken  # names another experiment (a copied directory)


def test_nan_metrics_of_a_diverged_trial_round_trip(tmp_path):
    exp = tmp_path / "e"
    d = tmp_path / "e" / "run-1" / "t0" / "checkpoint_000000"
    d.mkdir(parents=True)
    hist = [epoch_row(1), {**epoch_row(2, loss=float("nan")), "diverged": True}]
    write_checkpoint(
        str(d), {"w": torch.ones(1)}, make_record(EXP_ID, "t0", [{"id": "a", "point": grid_point()}], [hist], [True])
    )
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


def test_a_record_of_another_shape_or_a_newer_format_is_an_error_not_a_trial_to_train(tmp_path):
    from ablate.errors import RecordError

    exp = tmp_path / "e"
    d = write_record(exp, "run-1", "t0", "checkpoint_000000", [grid_point()], [3], [True])
    rec = json.loads((d / RECORD_FILE).read_text())
    for edit, needle in (
        (lambda r: r["members"][0].pop("history"), "not a trial record"),
        (lambda r: r["members"][0].update(done="yes"), "not a trial record"),
        (lambda r: r.update(ablate_record=2), "newer ablate"),
    ):
        bad = json.loads(json.dumps(rec))
        edit(bad)
        (d / RECORD_FILE).write_text(json.dumps(bad))
        with pytest.raises(RecordError, match=needle):
            list_records(str(exp), EXP_ID)


def test_a_file_name_that_is_not_utf8_is_an_error_naming_the_experiment(tmp_path):
    from ablate.errors import RecordError

    exp = tmp_path / "e"
    write_record(exp, "run-1", "t0", "checkpoint_000000", [grid_point()], [3], [True])
    open(bytes(exp / "run-1") + b"/caf\xe9.txt", "w").close()
    with pytest.raises(RecordError, match="not UTF-8"):
        list_records(str(exp), EXP_ID)


def _many_records(exp, n=40):
    """``n`` finished trials' records (a study's worth, listed in one pass): the paths of their records."""
    return [
        write_record(exp, "run-1", f"t{k:03d}", "checkpoint_000000", [grid_point(seed=k)], [2], [True]) / RECORD_FILE
        for k in range(n)
    ]


@pytest.mark.parametrize(
    "text",
    ["[]", "3", '"x"', "null", json.dumps({"hello": 1}), json.dumps({"ablate_record": 1, "trial": "t", "members": []})],
    ids=["a list", "a number", "a string", "null", "an object of another kind", "a record without experiment_id"],
)
def test_a_record_of_valid_json_of_another_shape_among_many_is_an_error_naming_it(tmp_path, text):
    from ablate.errors import RecordError

    exp = tmp_path / "e"
    records = _many_records(exp)
    records[17].write_text(text)  # skipped, its finished trial would be INTERRUPTED and train again
    with pytest.raises(RecordError, match="not a trial record") as e:
        list_records(str(exp), EXP_ID)
    assert str(records[17]) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda h: h[1].pop("val_acc"), "val_acc"),
        (lambda h: [r.pop("train_loss") for r in h], "lack train_loss"),
        (lambda h: h[0].update(val_acc="0.5"), "val_acc is str '0.5'"),
        (lambda h: [r.update(val_acc="0.5") for r in h], "val_acc is str '0.5'"),
        (lambda h: [r.update(val_acc=None) for r in h], "val_acc is NoneType"),
        (lambda h: h[1].update(epoch_seconds=True), "epoch_seconds is bool"),
        (lambda h: [r.update(diverged=0) for r in h], "diverged is int"),
        (lambda h: [r.update(lr=[0.1]) for r in h], "lr is list"),
    ],
    ids=[
        "one epoch lacks a metric",
        "every epoch lacks a metric",
        "one epoch's metric is text",
        "every epoch's metric is text",
        "a metric is null",
        "a metric is a bool",
        "diverged is a number",
        "a metric is a list",
    ],
)
def test_a_record_whose_epochs_lack_or_mistype_a_metric_is_an_error_naming_it(tmp_path, edit, needle):
    from ablate.errors import RecordError

    exp = tmp_path / "e"
    records = _many_records(exp, 5)
    rec = json.loads(records[3].read_text())
    edit(rec["members"][0]["history"])
    records[3].write_text(json.dumps(rec))
    with pytest.raises(RecordError, match="not a trial record") as e:
        list_records(str(exp), EXP_ID)
    assert str(records[3]) in str(e.value) and needle in str(e.value), str(e.value)


def test_a_records_own_types_pass_the_check_ints_among_floats_nan_and_learned_scalars(tmp_path):
    exp = tmp_path / "e"
    records = _many_records(exp, 2)
    rec = json.loads(records[0].read_text())
    h = rec["members"][0]["history"]
    h[0].update(val_acc=1, train_loss=float("nan"), scale_stage1=0.5)  # an int among floats; NaN; a gate's scalar
    h[1].update(scale_stage1=0.25)
    records[0].write_text(json.dumps(rec))
    assert len(list_records(str(exp), EXP_ID).done_ids()) == 2


EDITS = {  # what a hand, a sync tool or another program left in a finished trial's record
    "a record that is a list": lambda rec: [],
    "a record without experiment_id": lambda rec: {k: v for k, v in rec.items() if k != "experiment_id"},
    "an epoch without val_acc": lambda rec: rec["members"][0]["history"][1].pop("val_acc") and rec,
    "an epoch whose val_acc is text": lambda rec: rec["members"][0]["history"][2].update(val_acc="high") or rec,
}
