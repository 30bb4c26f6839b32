"""The tables (``ablate.study.tables``): a row per trial of the grid, with its status."""

import pandas as pd

from ablate.study.tables import trials_table

from helpers.records import epoch_row, grid_point


def test_trials_table_marks_diverged_interrupted_and_not_started():
    points = [{**grid_point(seed=s), "trial_id": f"id{s}"} for s in range(4)]
    rows = [{**grid_point(seed=0), "trial_id": "id0", **epoch_row(e)} for e in (1, 2, 3)]
    rows += [{**grid_point(seed=1), "trial_id": "id1", **epoch_row(1, loss=float("nan"), diverged=True)}]
    rows += [{**grid_point(seed=2), "trial_id": "id2", **epoch_row(1)}]
    hist = pd.DataFrame(rows)
    t = trials_table(
        hist, {"id0": "TERMINATED", "id1": "TERMINATED", "id2": "TERMINATED"}, points, 0.9, 3, interrupted=True
    )
    assert t["status"].tolist() == ["TERMINATED", "DIVERGED", "INTERRUPTED", "INTERRUPTED"]
    assert t["trial_id"].tolist() == ["id0", "id1", "id2", "id3"] and t["epochs_done"].tolist() == [3, 1, 1, 0]


def test_trials_table_calls_a_running_experiments_unfinished_trials_running():
    hist = pd.DataFrame(
        [{**grid_point(), "trial_id": "a", "epoch": 1, "val_acc": 0.5, "train_loss": 1.0, "epoch_seconds": 0.1}]
    )
    expected = [{**grid_point(), "trial_id": "a"}, {**grid_point(seed=1), "trial_id": "b"}]
    t = trials_table(hist, {"a": "TERMINATED"}, expected, 0.9, 3, interrupted=False, running=True)
    assert list(t["status"]) == ["RUNNING", "NOT_STARTED"]
