"""What an experiment is, before anything runs (no torch, no Ray): typed settings declared once with the reason
for each bound (``settings``), the grid's axes as data (``axes``), one trial (``trial``), the experiment and its
expansion (``config``), the experiment file and its overrides (``experiment_file``), what became of a trial
(``status``) and the question a study answers (``question``)."""

from ablate.spec.axes import AXES, BASELINE, GRID, LR, PAIR, Axis
from ablate.spec.config import ExperimentConfig, point_config, trial_configs, trial_groups
from ablate.spec.experiment_file import load_experiment
from ablate.spec.question import Question
from ablate.spec.settings import METRIC_KEYS, NO_RESULT, SWEEPABLE, TrainSettings
from ablate.spec.status import Status
from ablate.spec.trial import TrainConfig

__all__ = [
    "AXES",
    "BASELINE",
    "GRID",
    "LR",
    "PAIR",
    "Axis",
    "ExperimentConfig",
    "point_config",
    "trial_configs",
    "trial_groups",
    "load_experiment",
    "Question",
    "METRIC_KEYS",
    "NO_RESULT",
    "SWEEPABLE",
    "TrainSettings",
    "Status",
    "TrainConfig",
]
