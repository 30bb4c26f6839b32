"""The grid CLI through real Ray Tune on CPU: trials, metrics, CSVs, table, dry-run, resume."""

import json

import pandas as pd


def test_a_resumes_timing_is_kept_apart_from_the_grids(tmp_path):

    from ablate.study.tables import record_timing

    trials = pd.DataFrame({"train_seconds": [1.0] * 64})
    record_timing(str(tmp_path), trials, 522.0, 2, resumed=False)
    record_timing(str(tmp_path), trials, 5.6, 2, resumed=True)
    t = json.loads((tmp_path / "grid_timing.json").read_text())
    assert t["wall_s"] == 522.0 and t["resumes"] == [
        {"wall_s": 5.6, "train_seconds": 64.0, "trials": 64, "concurrency": 2}
    ]
