"""An experiment's identity (``ablate.study.identity``): what makes a resume the same experiment, what it may grow,
and the identity file that cannot be read refused in one line."""

import pytest
import yaml

from ablate.study.identity import growth, identity, saved_identity
from ablate.study.study import Study

from helpers.records import EXP_ID, finished_by_hand, grid_point, small_config, write_record


def test_growth_allows_added_values_in_any_order_and_nothing_else():
    saved = {"seeds": [0, 1], "depths": [8], "epochs": 3}
    assert growth(saved, {"seeds": [1, 0], "depths": [8], "epochs": 3}) == ([], {})  # reordered: no growth
    assert growth(saved, {"seeds": [2, 0, 1], "depths": [8, 20], "epochs": 3}) == ([], {"depth": [20], "seed": [2]})
    assert growth(saved, {"seeds": [0], "depths": [8], "epochs": 4}) == (["epochs", "seeds"], {})


def test_identity_ignores_what_changes_no_result(tmp_path):
    a, b = (
        small_config(tmp_path),
        small_config(tmp_path, "target_acc=0.5", "eval_batch_size=64", "compile=false", "threads=1"),
    )
    assert identity(a) == identity(b)
    assert identity(a) != identity(small_config(tmp_path, "epochs=4"))


def test_saved_identity_refuses_what_would_lose_the_records_in_one_line(tmp_path):
    import yaml

    from ablate.errors import UsageError
    from ablate.storage import EXPERIMENT_FILE
    from ablate.study.identity import saved_identity

    exp = tmp_path / "e"
    write_record(exp, "run-1", "t0", "checkpoint_000000", [grid_point()], [3], [True])
    good = {"blocks": ["baseline"], "experiment_id": EXP_ID}
    for text, needle in (
        ("blocks: [baseline\n", "not valid YAML"),
        ("- 1\n", "not a mapping"),
        (yaml.safe_dump({"blocks": ["baseline"]}), f"experiment_id: {EXP_ID}"),
        (yaml.safe_dump({**good, "future_key": 1}), "newer ablate"),
    ):
        (exp / EXPERIMENT_FILE).write_text(text)
        with pytest.raises(UsageError, match=needle) as e:
            saved_identity(str(exp))
        assert "\n" not in str(e.value)
    (exp / EXPERIMENT_FILE).write_text(yaml.safe_dump(good))
    assert saved_identity(str(exp))["experiment_id"] == EXP_ID


def test_identity_compares_settings_as_they_act(tmp_path):
    base = identity(small_config(tmp_path))
    for same in (
        ["precision=fp32"],
        ["crop_pad=1", "flip=false"],
        ["channels_last=true"],
        ["asha_grace_period=2"],
        ["name=renamed"],
    ):
        assert identity(small_config(tmp_path, *same)) == base, same
    for other in (["precision=bf16"], ["crop_pad=2"], ["flip=true"], ["channels_last=false"]):
        assert identity(small_config(tmp_path, *other)) != base, other
    asha = identity(small_config(tmp_path, "scheduler=asha", "asha_grace_period=1"))
    assert identity(small_config(tmp_path, "scheduler=asha", "asha_grace_period=2")) != asha


# As --resume refuses them (tests/system/test_careless_use.py): the report reads the file the same way.
IDENTITY_EDITS = {
    "cut short": (lambda text, saved: text[:120] + "\ndepths: [8,", "not valid YAML"),
    "not a mapping": (lambda text, saved: "- 1\n- 2\n", "not a mapping of settings"),
    "without its experiment_id": (
        lambda text, saved: yaml.safe_dump({k: v for k, v in saved.items() if k != "experiment_id"}),
        "names no experiment_id",
    ),
    "of a newer ablate": (lambda text, saved: yaml.safe_dump({**saved, "a_setting_of_the_future": 1}), "does not know"),
}


@pytest.mark.parametrize("case", sorted(IDENTITY_EDITS))
def test_the_report_on_an_identity_cut_short_or_edited_is_one_line_exit_2(tmp_path, capsys, case):
    from ablate.report import main
    from ablate.study.reader import tables_from_records
    from ablate.study.tables import write_csvs

    exp, _, _ = finished_by_hand(tmp_path)
    write_csvs(str(exp), *tables_from_records(str(exp)))  # the tables are whole: only the identity is read
    path = exp / "ablate_experiment.yaml"
    edit, needle = IDENTITY_EDITS[case]
    path.write_text(edit(path.read_text(), yaml.safe_load(path.read_text())))
    assert main([str(exp)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ablate.report: error: ") and needle in err[0], err
    assert str(path) in err[0] and not (exp / "report.html").exists()


def test_an_identity_written_before_a_setting_existed_reads_its_default_as_the_file_would_hold_it(tmp_path):
    import pandas as pd

    from ablate.spec.question import Question

    cfg = small_config(tmp_path)
    Study(cfg, resume=False).write_identity()
    path = tmp_path / "e" / "ablate_experiment.yaml"
    saved = yaml.safe_load(path.read_text())
    del saved["compare"], saved["wandb"]  # an experiment started before ablate had them
    path.write_text(yaml.safe_dump(saved))
    meta = saved_identity(str(tmp_path / "e"))
    assert meta["compare"] == {"axis": "block", "reference": None} and meta["wandb"]["project"] == "ablate"
    trials = pd.DataFrame([{"block": "baseline", "depth": 8, "lr": 0.1, "seed": 0, "trial_id": "x"}])
    assert Question.of_tables(meta, trials) == Question.default()
