"""An experiment's identity (``ablate.identity``): what makes a resume the same experiment, what it may grow,
and the identity file that cannot be read refused in one line."""
import pytest

from ablate.identity import growth, identity
from conftest import EXP_ID, grid_point, small_config, write_record


def test_growth_allows_added_values_in_any_order_and_nothing_else():
    saved = {"seeds": [0, 1], "depths": [8], "epochs": 3}
    assert growth(saved, {"seeds": [1, 0], "depths": [8], "epochs": 3}) == ([], {})  # reordered: no growth
    assert growth(saved, {"seeds": [2, 0, 1], "depths": [8, 20], "epochs": 3}) == ([], {"depth": [20], "seed": [2]})
    assert growth(saved, {"seeds": [0], "depths": [8], "epochs": 4}) == (["epochs", "seeds"], {})


def test_identity_ignores_what_changes_no_result(tmp_path):
    a, b = small_config(tmp_path), small_config(tmp_path, "target_acc=0.5", "eval_batch_size=64", "compile=false", "threads=1")
    assert identity(a) == identity(b)
    assert identity(a) != identity(small_config(tmp_path, "epochs=4"))


def test_saved_identity_refuses_what_would_lose_the_records_in_one_line(tmp_path):
    import yaml

    from ablate.storage import EXPERIMENT_FILE
    from ablate.identity import saved_identity
    from ablate.messages import UsageError

    exp = tmp_path / "e"
    write_record(exp, "run-1", "t0", "checkpoint_000000", [grid_point()], [3], [True])
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
    base = identity(small_config(tmp_path))
    for same in (["precision=fp32"], ["crop_pad=1", "flip=false"], ["channels_last=true"], ["asha_grace_period=2"],
                 ["name=renamed"]):
        assert identity(small_config(tmp_path, *same)) == base, same
    for other in (["precision=bf16"], ["crop_pad=2"], ["flip=true"], ["channels_last=false"]):
        assert identity(small_config(tmp_path, *other)) != base, other
    asha = identity(small_config(tmp_path, "scheduler=asha", "asha_grace_period=1"))
    assert identity(small_config(tmp_path, "scheduler=asha", "asha_grace_period=2")) != asha
