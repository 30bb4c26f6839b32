"""Training without Ray (torch): the data on the device (``data``), the recipe's parts (``recipe``), the one epoch
loop (``loop``: ``train``, ``build_group``, ``train_group``) and K points as one fused model (``fused``)."""

from ablate.spec.settings import METRIC_KEYS
from ablate.spec.trial import TrainConfig
from ablate.train.loop import Run, SequentialGroup, build_group, train, train_group

__all__ = ["TrainConfig", "METRIC_KEYS", "train", "build_group", "train_group", "Run", "SequentialGroup"]
