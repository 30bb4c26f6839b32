"""Typed experiment configs: shipped files are valid, overrides parse as YAML, errors name keys."""

import pytest

from ablate.blocks import list_blocks
from ablate.errors import ConfigError
from ablate.spec.config import trial_configs, trial_groups
from ablate.spec.experiment_file import load_experiment, parse_override

from helpers.cli import REPO
from helpers.records import small_config


@pytest.mark.parametrize("name", ["default", "cifar10", "cifar10_quick"])
def test_shipped_experiments_are_valid(name):
    cfg = load_experiment(str(REPO / "experiments" / f"{name}.yaml"))
    assert cfg.name == name and cfg.blocks == list_blocks()


def test_cifar10_is_he_et_al_recipe():
    c = load_experiment(str(REPO / "experiments" / "cifar10.yaml"))
    assert (c.depths, c.lrs, c.seeds) == ([20, 32, 44, 56, 110], [0.05, 0.1, 0.2], [0, 1, 2])
    assert (c.momentum, c.weight_decay, c.batch_size, c.epochs) == (0.9, 1e-4, 128, 164)
    assert (c.schedule, c.milestones, c.lr_decay) == ("step", [0.5, 0.75], 0.1)
    assert len(trial_configs(c)) == len(list_blocks()) * 5 * 3 * 3


def test_default_is_small_and_includes_a_deep_net():
    c = load_experiment(None)
    assert c.dataset == "digits" and max(c.depths) >= 56 and len(c.lrs) == 2 and len(c.seeds) == 3  # power: t(2)


def test_overrides_parse_yaml_values_and_nested_keys():
    c = load_experiment(None, ["epochs=5", "depths=[20,56]", "lrs=[0.1]", "wandb.mode=disabled", "label_smoothing=0"])
    assert c.epochs == 5 and c.depths == [20, 56] and c.lrs == [0.1]
    assert c.wandb.mode == "disabled" and c.label_smoothing == 0.0 and isinstance(c.label_smoothing, float)
    assert parse_override("name=my-run") == ("name", "my-run")


@pytest.mark.parametrize(
    "override,needle",
    [
        ("epochs=1.5", "'epochs' must be an integer"),
        ("nesterov=1", "'nesterov' must be a bool"),
        ("depths=20", "'depths' must be a list"),
        ("wandb.nope=1", "unknown key 'wandb.nope'"),
        ("wandb=3", "'wandb' must be a mapping"),
        ("name=a/b", "'name'"),
        ("schedule=linear", "allowed: step, cosine, constant"),
        ("milestones=[0.5,1.5]", "'milestones'"),
        ("blocks=[baseline,baseline]", "repeats"),
    ],
)
def test_type_and_value_errors_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_experiment(None, [override])


def test_numbers_users_write_are_read_as_those_numbers():
    cfg = load_experiment(None, ["weight_decay=5e-4", "lrs=[1e-3, 2e-1]", "name=1.10"])
    assert cfg.weight_decay == 5e-4 and cfg.lrs == [1e-3, 0.2] and cfg.name == "1.10"


def test_the_experiment_files_folder_lends_only_the_named_modules(tmp_path):
    """A filelock.py (any module ablate imports) beside an experiment file never shadows ablate's own."""
    import sys

    (tmp_path / "exp.yaml").write_text("epochs: 1\n")
    (tmp_path / "filelock.py").write_text("raise SystemExit('shadowed')\n")
    (tmp_path / "mine_blocks.py").write_text("X = 1\n")
    load_experiment(str(tmp_path / "exp.yaml"))
    assert str(tmp_path) not in sys.path
    load_experiment(str(tmp_path / "exp.yaml"), ["block_modules=[mine_blocks]"])
    assert "mine_blocks" in sys.modules and str(tmp_path) not in sys.path
    sys.modules.pop("filelock", None)
    import filelock  # noqa: F401 -- ablate's own, not the file beside the experiment


def test_a_block_module_without_a_file_is_one_line():
    with pytest.raises(ConfigError, match="built into Python") as e:
        load_experiment(None, ["block_modules=[sys]"])
    assert "\n" not in str(e.value)


def test_trial_groups_share_block_and_depth_and_keep_the_grid_order(tmp_path):
    cfg = small_config(tmp_path, "lrs=[0.1,0.2]", "seeds=[0,1,2]", "fuse_trials=4")
    groups = trial_groups(cfg)
    assert [len(g) for g in groups] == [4, 2, 4, 2]
    assert all(len({(t.block, t.depth) for t in g}) == 1 for g in groups)
    some = [t.point for t in trial_configs(cfg)][:3]
    assert [[t.point for t in g] for g in trial_groups(cfg, some)] == [some]
