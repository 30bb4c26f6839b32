"""The study's pure parts, without Ray: records on disk (hand-made), what a resume runs, growth,
the tables, trial groups and resources."""

import json

import pytest

from helpers.cli import one_error_line, run_cli
from helpers.records import finished_by_hand

EDITS = {  # what a hand, a sync tool or another program left in a finished trial's record
    "a record that is a list": lambda rec: [],
    "a record without experiment_id": lambda rec: {k: v for k, v in rec.items() if k != "experiment_id"},
    "an epoch without val_acc": lambda rec: rec["members"][0]["history"][1].pop("val_acc") and rec,
    "an epoch whose val_acc is text": lambda rec: rec["members"][0]["history"][2].update(val_acc="high") or rec,
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(EDITS))
def test_resume_and_the_report_on_a_record_of_another_shape_are_one_line_naming_it(tmp_path, case):
    exp, args, records = finished_by_hand(tmp_path)
    records[2].write_text(json.dumps(EDITS[case](json.loads(records[2].read_text()))))
    p = run_cli(args, cwd=tmp_path)
    one_error_line(p, str(records[2]), "not a trial record")
    assert not list(exp.glob("run-2*")) and not (exp / "trials.csv").exists(), "nothing trained, nothing written"
    p = run_cli([str(exp)], module="ablate.report", cwd=tmp_path)  # no tables: rebuilt from the records
    one_error_line(p, str(records[2]), "not a trial record")
    assert not (exp / "report.html").exists()
