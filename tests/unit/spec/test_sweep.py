"""Swept settings as they act (issue 35): every per-point setting read per point (the trainer, the status, the
plan, the progress line, the tables, the report), a sweep's values read and refused as they act, the rules
between settings at every point, the question checked against the grid and changed only by an explicit
command, and names that tell every value apart.  In-process (records written as a trial writes them); the
one real CLI run is marked slow."""

import os

import pytest
import yaml

from ablate.analysis.stats import effects
from ablate.analysis.table import answer
from ablate.errors import AblateError, ConfigError
from ablate.run.checkpoints import write_checkpoint
from ablate.run.plan import plan_text
from ablate.run.progress import Progress
from ablate.spec.axes import AXES, trial_name
from ablate.spec.config import trial_configs
from ablate.spec.experiment_file import load_experiment
from ablate.spec.question import Question
from ablate.spec.settings import SWEEPABLE
from ablate.spec.trial import TrainConfig
from ablate.study.records import make_record
from ablate.study.study import Study
from ablate.study.tables import read_csvs, write_csvs

from helpers.cli import FIXTURES
from helpers.records import epoch_row

GRID = {"blocks": ["baseline", "skipinit"], "depths": [8], "lrs": [0.1], "seeds": [0, 1]}

# Two values of every setting a sweep may name, that act differently (null crop_pad/flip: digits' own).
VALUES = {
    "batch_size": [64, 128],
    "conv_bias": [False, True],
    "crop_pad": [None, 2],
    "diverge_factor": [5.0, 10.0],
    "epochs": [1, 2],
    "flip": [None, True],
    "label_smoothing": [0.0, 0.1],
    "lr_decay": [0.1, 0.5],
    "momentum": [0.0, 0.9],
    "nesterov": [False, True],
    "precision": ["auto", "bf16"],
    "schedule": ["step", "cosine"],
    "shortcut": ["A", "B"],
    "warmup_epochs": [0.0, 1.0],
    "weight_decay": [0.0, 0.0005],
    "zero_init_last": [False, True],
}


def experiment(tmp_path, name="s", file=None, **settings):
    """An experiment file in ``tmp_path`` (the small grid, 2 epochs unless swept), ``file`` or named after it."""
    doc = {**GRID, "epochs": 2, "wandb": {"mode": "disabled"}, "storage_path": str(tmp_path), "name": name, **settings}
    if "epochs" in doc.get("sweep", {}):
        del doc["epochs"]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / (file or f"{name}.yaml")
    path.write_text(yaml.safe_dump(doc))
    return path


def finish(study, epochs_of, acc=lambda p: 0.5):
    """Every point of ``study`` trained to ``epochs_of(point)`` and done, on record as its trial writes it."""
    for i, (tid, p) in enumerate(study.points().items()):
        d = f"{study.dir}/run-1/t{i}/checkpoint_000000"
        os.makedirs(d)
        history = [{**epoch_row(e), "val_acc": acc(p)} for e in range(1, epochs_of(p) + 1)]
        write_checkpoint(d, {}, make_record(study.experiment_id, f"t{i}", [{"id": tid, "point": p}], [history], [True]))


def one_line(excinfo, *needles):
    text = str(excinfo.value)
    assert "\n" not in text and isinstance(excinfo.value, AblateError) and excinfo.value.code == 2, text
    for n in needles:
        assert n in text, text
    return text


def test_each_sweepable_setting_reaches_the_trainer_status_plan_progress_and_tables_as_the_points_own(tmp_path):
    from ablate.run.tune import GroupConstants

    # A new sweepable setting needs its two values here (no axis: the data set, the layout, a list per trial).
    assert sorted(VALUES) == sorted(SWEEPABLE - {"dataset", "channels_last", "milestones"})
    for key in sorted(VALUES, key=lambda k: k != "epochs"):  # epochs first: the issue's own case
        cfg = load_experiment(str(experiment(tmp_path / key, sweep={key: VALUES[key]})))
        study = Study(cfg, resume=False)
        points = study.points()
        assert len(points) == 8 and len({p[key] for p in points.values()}) == 2, key
        # The trainer: the config a trial builds from its point (ablate.run.tune.run_group) holds its value.
        const = GroupConstants.of(cfg, study.experiment_id, "disabled", "cpu")
        trainer = {tid: TrainConfig.of_point(const.settings, p) for tid, p in points.items()}
        assert all(getattr(trainer[tid], key) == p[key] for tid, p in points.items()), key
        # The progress line counts each group's own epochs.
        line = Progress.of(study.plan(), cfg.epochs, {})
        assert all(line.trials[g.name]["epochs"] == trainer[g.members[0]["id"]].epochs for g in study.plan()), key
        # The tables: each point trained its own epochs and finished (never STOPPED_EARLY for fewer than the
        # base), its value in its column, through the CSV round trip and into the analysis's grouping.
        finish(
            study,
            lambda p, trainer=trainer, points=points: trainer[next(t for t, q in points.items() if q == p)].epochs,
            acc=lambda p: 0.5 + 0.1 * (p["block"] == "skipinit") + 0.01 * p["seed"],
        )
        history, trials = study.tables(set(), interrupted=False)
        assert (trials["status"] == "TERMINATED").all(), (key, trials["status"].tolist())
        assert sorted(trials[key].map(repr)) == sorted(repr(p[key]) for p in points.values()), key
        assert history.groupby("trial_id").size().to_dict() == {t: trainer[t].epochs for t in points}, key
        write_csvs(str(tmp_path / key), history, trials)
        _, back = read_csvs(str(tmp_path / key))
        fx = effects(back)
        assert len(fx) == 2 and sorted(fx[key].map(repr)) == sorted(map(repr, cfg.sweep[key])), (key, fx)
        # The plan counts every point's own epochs.
        plan = plan_text(cfg, "auto")
        assert f"x 2 {key}" in plan, plan
        images = sum(t.epochs for t in trial_configs(cfg)) * 1438
        assert f"= {images:,} training images" in plan, plan
        if key == "epochs":
            assert "1/2 epochs" in plan and "1/2 epochs" in answer(cfg, back, 1.0), plan
            assert "no finished" not in answer(cfg, back, 1.0)
        if key == "batch_size":  # the time estimate: each point's steps at its own batch (1 s a step at 128)
            from ablate.run.plan import EPOCH_OVER_PROBE, FIXED_S, PER_TRIAL_S, estimate_cpu_wall

            per_epoch = {64: 0.5 * 23, 128: 1.0 * 12}  # 1438 images: 23 steps of 64 images, 12 of 128
            want = sum(per_epoch[t.batch_size] * EPOCH_OVER_PROBE * t.epochs + PER_TRIAL_S for t in trial_configs(cfg))
            assert estimate_cpu_wall(cfg, 1, step_seconds=lambda c, d: 1.0) == pytest.approx(FIXED_S + want)


def test_a_point_trains_its_own_epochs_in_the_trainer(tmp_path):
    from ablate.train import build_group, train_group

    cfg = load_experiment(
        str(experiment(tmp_path, sweep={"epochs": [1, 2]})), ["blocks=[baseline]", "seeds=[0]", "batch_size=512"]
    )
    outs = [train_group(build_group([t])) for t in trial_configs(cfg)]
    assert [len(o[0]["history"]) for o in outs] == [1, 2]


@pytest.mark.parametrize(
    "sweep, needles",
    [
        (
            {"dataset": ["digits", "synthetic"]},
            ["'dataset' is the data every trial trains on", "one experiment per dataset"],
        ),
        ({"milestones": [[0.5], [0.3, 0.6]]}, ["'milestones' holds a list per trial", "allowed: one of batch_size"]),
        ({"channels_last": [True, False]}, ["'channels_last' changes the speed, not what is learned"]),
        ({"precision": ["auto", "fp32"]}, ["sweep.precision repeats a value", "both act as 'fp32'"]),
        ({"crop_pad": [None, 1]}, ["sweep.crop_pad repeats a value", "null and 1 both act as 1"]),
        ({"flip": [None, False]}, ["sweep.flip repeats a value", "null and false both act as false"]),
        ({"lr_decay": [0.1, 0.2]}, ["'lr_decay' acts only under schedule step"]),
    ],
)
def test_a_sweep_that_cannot_be_an_axis_or_repeats_a_value_as_it_acts_is_one_line(tmp_path, sweep, needles):
    extra = {"schedule": "cosine"} if "lr_decay" in sweep else {}
    with pytest.raises(ConfigError) as e:
        load_experiment(str(experiment(tmp_path, sweep=sweep, **extra)))
    one_line(e, *needles)


def test_a_sweep_of_the_default_file_names_the_setting_not_both_set(tmp_path):
    with pytest.raises(ConfigError) as e:  # default.yaml sets dataset: still "no axis", not "give it once"
        load_experiment(None, ["sweep={dataset: [digits, cifar10]}", f"storage_path={tmp_path}"])
    one_line(e, "'dataset' is the data every trial trains on")


@pytest.mark.parametrize(
    "override, needles",
    [
        ("sweep=[weight_decay, 0.0005]", ["key 'sweep' must be a mapping", "got list"]),
        ("name=" + "n" * 150, ["key 'name' is 150 characters long", "at most 100 characters"]),
        ("name=" + "n" * 300, ["key 'name' is 300 characters long", "at most 100 characters"]),
    ],
)
def test_a_sweep_given_as_a_list_and_a_long_name_are_one_line_naming_the_key(tmp_path, override, needles):
    with pytest.raises(ConfigError) as e:
        load_experiment(str(experiment(tmp_path)), [override])
    assert "values" not in one_line(e, *needles)


def test_a_null_swept_value_is_the_datasets_own_and_survives_the_csv_and_the_grouping(tmp_path):
    cfg = load_experiment(str(experiment(tmp_path, sweep={"crop_pad": [None, 2]})))
    assert cfg.sweep == {"crop_pad": [1, 2]}  # digits' own pad-and-crop: what null means there
    study = Study(cfg, resume=False)
    finish(study, lambda p: 2, acc=lambda p: 0.5 + 0.1 * (p["block"] == "skipinit") + 0.01 * p["seed"])
    write_csvs(str(tmp_path), *study.tables(set(), interrupted=False))
    _, trials = read_csvs(str(tmp_path))
    assert sorted(trials["crop_pad"].unique()) == [1, 2] and len(trials) == 8
    assert sorted(effects(trials)["crop_pad"]) == [1, 2]  # both halves of the study are compared


def test_a_null_sweep_keeps_the_ids_of_an_unswept_experiment(tmp_path):
    # crop_pad unset (null) was fixed; swept [null, 2] its null points are the finished ones, with their ids.
    fixed = Study(load_experiment(str(experiment(tmp_path, name="f"))), resume=False)
    swept = Study(load_experiment(str(experiment(tmp_path, name="f", sweep={"crop_pad": [None, 2]}))), resume=False)
    swept.experiment_id = fixed.experiment_id
    assert set(fixed.points()) < set(swept.points())


def test_an_experiment_written_with_a_null_sweep_keeps_its_ids_and_rebuilds_its_tables(tmp_path):
    from ablate.spec.axes import expand, trial_id
    from ablate.study.reader import tables_from_records

    # As an ablate before values were read as they act wrote it: null in the sweep, ids keyed on it.
    cfg = load_experiment(str(experiment(tmp_path, name="old", sweep={"crop_pad": [1, 2]})))
    old = {**cfg.model_dump(), "sweep": {"crop_pad": [None, 2]}, "experiment_id": "e"}
    exp = tmp_path / "old"
    exp.mkdir()
    (exp / "ablate_experiment.yaml").write_text(yaml.safe_dump(old))
    for i, p in enumerate(expand({**cfg.axes(), "crop_pad": [None, 2]})):
        d = exp / "run-1" / f"t{i}" / "checkpoint_000000"
        d.mkdir(parents=True)
        write_checkpoint(
            str(d),
            {},
            make_record(
                "e",
                f"t{i}",
                [{"id": trial_id("e", p, {"crop_pad": None}), "point": p}],
                [[epoch_row(1), epoch_row(2)]],
                [True],
            ),
        )
    _, trials = tables_from_records(str(exp))
    assert (trials["status"] == "TERMINATED").all() and sorted(trials["crop_pad"]) == [1] * 4 + [2] * 4
    resumed = Study(load_experiment(str(experiment(tmp_path, name="old", sweep={"crop_pad": [None, 2]}))), resume=True)
    resumed.check()
    assert resumed.plan() == [] and not resumed.added  # nothing trains again


def test_rules_between_settings_are_checked_at_every_point_of_the_sweep(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_experiment(str(experiment(tmp_path, sweep={"epochs": [2, 10], "warmup_epochs": [0, 5]})))
    one_line(e, "sweep.epochs = 2, sweep.warmup_epochs = 5", "'warmup_epochs' is 5 but 'epochs' is 2")
    ok = load_experiment(str(experiment(tmp_path, sweep={"epochs": [5, 10], "warmup_epochs": [0, 5]})))
    assert len(trial_configs(ok)) == 16


def test_a_reference_is_read_with_its_axis_own_type(tmp_path):
    cfg = load_experiment(
        str(experiment(tmp_path, sweep={"weight_decay": [0.0, 0.0005]})),
        ["compare={axis: weight_decay, reference: 5e-4}"],
    )
    assert cfg.subject() == ("weight_decay", 0.0005)
    study = Study(cfg, resume=False)
    finish(study, lambda p: 2, acc=lambda p: 0.5 + 0.1 * (p["weight_decay"] == 0.0) + 0.01 * p["seed"])
    _, trials = study.tables(set(), interrupted=False)
    fx = effects(trials, *cfg.subject())
    assert len(fx) == 2 and set(fx["weight_decay"]) == {0.0}  # each block's 0 against its 0.0005
    lrs = load_experiment(str(experiment(tmp_path, lrs=[0.1, 0.2])), ["compare={axis: lr, reference: '1e-1'}"])
    assert lrs.subject() == ("lr", 0.1)


@pytest.mark.parametrize(
    "settings, overrides, needles",
    [
        (
            {"sweep": {"weight_decay": [0.0, 0.0005]}},
            ["compare={axis: weight_decay, reference: 0.001}"],
            ["compare.reference 0.001 is not a value of weight_decay", "allowed: one of [0.0, 0.0005]"],
        ),
        (
            {"blocks": ["skipinit", "rezero"]},
            [],
            ["default question compares each block against baseline", "compare={axis: block, reference: skipinit}"],
        ),
        (
            {"sweep": {"shortcut": ["A"]}},
            ["compare={axis: shortcut, reference: A}"],
            ["compare.axis 'shortcut' has one value ('A')", "allowed: an axis with two values or more (block)"],
        ),
        ({}, ["compare={axis: depth, reference: 8}"], ["compare.axis 'depth' has one value (8)"]),
        ({}, ["compare={axis: block, reference: resnet}"], ["compare.reference 'resnet' is not a value of block"]),
    ],
)
def test_a_question_the_grid_cannot_answer_is_one_line(tmp_path, settings, overrides, needles):
    with pytest.raises(ConfigError) as e:
        load_experiment(str(experiment(tmp_path, **settings)), overrides)
    one_line(e, *needles)


def test_a_grid_of_one_block_without_a_question_still_runs(tmp_path):
    cfg = load_experiment(str(experiment(tmp_path, blocks=["skipinit"])))  # a smoke run: nothing to compare, said
    assert len(trial_configs(cfg)) == 2


def test_the_question_changes_on_resume_only_when_asked_and_the_report_answers_the_one_asked(tmp_path):
    from ablate.errors import UsageError

    path = experiment(
        tmp_path, name="q", sweep={"shortcut": ["A", "B"]}, compare={"axis": "shortcut", "reference": "B"}
    )
    first = Study(load_experiment(str(path)), resume=False)
    first.check()
    first.write_identity()
    finish(first, lambda p: 2)
    exp = tmp_path / "q"

    def saved_question():
        meta = yaml.safe_load((exp / "ablate_experiment.yaml").read_text())
        return meta["compare"]

    # A growth that forgets the compare keeps the saved question (never silently the default).
    grown = Study(load_experiment(str(path), ["compare={axis: block}", "seeds=[0,1,2]"]), resume=True)
    forgot = Study(
        load_experiment(
            str(experiment(tmp_path, name="q", file="forgot.yaml", sweep={"shortcut": ["A", "B"]})), ["seeds=[0,1,2]"]
        ),
        resume=True,
    )
    forgot.check()
    assert forgot.cfg.subject() == ("shortcut", "B") and not forgot.asked
    # A new compare on --resume is applied and said, and written with the experiment: the report answers it.
    grown.check()
    assert grown.cfg.subject() == ("block", "baseline")
    assert (
        grown.asked == "the question is now each block against baseline (it was each shortcut against shortcut B); "
        "the report answers it"
    )
    again = Study(load_experiment(str(path), ["compare={axis: block}"]), resume=True)
    again.check()
    assert again.plan() == [] and again.asked
    again.settle_tables()
    assert saved_question() == {"axis": "block", "reference": None}
    _, trials = again.tables(set(), interrupted=False)
    q = Question.of_tables(yaml.safe_load((exp / "ablate_experiment.yaml").read_text()), trials)
    assert (q.subject, q.reference) == ("block", "baseline")
    from ablate.run.report import write_report

    write_report(str(exp))  # the tables settle_tables wrote, and the question now written with the experiment
    assert "| question | each block against baseline, paired by seed" in (exp / "report.md").read_text()
    # The same compare again is no change; an --until-resolved study's question stays.
    same = Study(load_experiment(str(path), ["compare={axis: block}"]), resume=True)
    same.check()
    assert not same.asked
    rounds = Study(load_experiment(str(path)), resume=True)
    rounds.check()
    rounds.rounds = {"round": 1, "resolved": 0, "total": 2}
    rounds.write_identity()
    with pytest.raises(UsageError) as e:
        Study(load_experiment(str(path), ["compare={axis: block}"]), resume=True).check()
    one_line(e, "--until-resolved study of each shortcut against shortcut B", "drop compare=")


def test_values_that_differ_beyond_six_digits_get_distinct_names_runs_and_labels(tmp_path):
    from ablate.analysis.table import ablation_table, best_lr_frame
    from ablate.formatting import value_text
    from ablate.run.tune import GroupConstants
    from ablate.spec.question import Question

    cfg = load_experiment(str(experiment(tmp_path, lrs=[0.1, 0.1000001], sweep={"weight_decay": [1e-4, 1.0000001e-4]})))
    study = Study(cfg, resume=False)
    groups = study.plan()
    assert len({g.name for g in groups}) == 16, [g.name for g in groups]  # Tune's trials and their directories
    const = GroupConstants.of(cfg, study.experiment_id, "disabled", "cpu")
    runs = {
        TrainConfig.of_point(const.settings, m["point"], digits=const.digits).name for g in groups for m in g.members
    }
    assert len(runs) == 16 and "baseline-d8-lr0.1000001-s0-weight_decay0.00010000001" in runs, runs  # W&B runs
    finish(study, lambda p: 2, acc=lambda p: 0.5 + (p["lr"] - 0.1) * 1e5)
    _, trials = study.tables(set(), interrupted=False)
    q = Question("block", "baseline", [*AXES, "weight_decay"], ["depth", "lr", "weight_decay"])
    assert len({q.trial(r) for r in trials.to_dict("records")}) == 16  # the report's labels
    assert value_text(0.1000001) != value_text(0.1)
    table = best_lr_frame(ablation_table(trials), 0.9)
    assert set(table["best lr"]) == {"0.1000001"}, table


def test_names_that_six_digits_already_tell_apart_are_unchanged(tmp_path):
    import json

    # The four-axis fixture (written at 9f3da06): its trials' names are the names its points get now.
    fixture = FIXTURES / "four_axes"
    names = {json.loads(r.read_text())["trial"] for r in fixture.glob("run-*/*/checkpoint_*/ablate_record.json")}
    points = [
        m["point"]
        for r in fixture.glob("run-*/*/checkpoint_*/ablate_record.json")
        for m in json.loads(r.read_text())["members"]
    ]
    assert {trial_name(p) for p in points} == names
    cfg = load_experiment(str(experiment(tmp_path, lrs=[0.123456789, 0.2], sweep={"weight_decay": [0.0, 0.0005]})))
    assert {t.name.split("-")[2] for t in trial_configs(cfg)} == {"lr0.123457", "lr0.2"}  # %g, as it always was
    assert {t.name.split("-")[4] for t in trial_configs(cfg)} == {"weight_decay0", "weight_decay0.0005"}
