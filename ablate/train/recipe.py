"""The training recipe's parts, shared by a run of one grid point and a fused run of several (no Ray).

Each part is built here once, so a member of a fused run is exactly the run it would be alone: its
model (seeded, He-initialised, in the memory layout the settings ask for), its batches (its seed's
order and augmentation), the optimiser's parameter groups and LR schedule, evaluation, and the
metrics of an epoch.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.models.resnet import create_model
from ablate.spec.settings import TrainSettings
from ablate.spec.trial import TrainConfig
from ablate.train.data import Dataset, DeviceBatches

__all__ = [
    "resolve_device",
    "lr_lambda",
    "param_groups",
    "member_model",
    "train_batches",
    "val_batches",
    "sgd",
    "autocast",
    "loss_limit",
    "evaluate",
    "epoch_metrics",
    "channels_last",
]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is visible; use device=cpu or auto")
    return torch.device(name)


def channels_last(cfg: TrainSettings) -> bool:
    # None: on; measured faster on CUDA and on the CPU (docs/benchmarks.md).
    return True if cfg.channels_last is None else cfg.channels_last


def lr_lambda(cfg: TrainSettings, steps_per_epoch: int) -> Callable[[int], float]:
    """The schedule's factor of the base LR at each step: linear warm-up, then cosine, step or constant."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    marks = sorted(int(m * total) for m in cfg.milestones)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "cosine":
            t = (step - warm) / max(1, total - warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
        if cfg.schedule == "step":
            return cfg.lr_decay ** sum(step >= m for m in marks)
        return 1.0

    return f


def param_groups(model: nn.Module, weight_decay: float, params: Optional[Dict[str, torch.Tensor]] = None) -> List[Dict]:
    """Weight decay on every weight, as He et al.; none on the gates a block declares in ``learned_scalars``
    (decay would pull a SkipInit gate back to 0, a shortcut scale towards 0), whatever their shape.

    Keyed on the names the model declares, as timm's ``param_groups_weight_decay``.  ``params``: the
    tensors by the model's parameter names (a fused run's stacked ones); the model's own by default.
    """
    declared = ((prefix, getattr(module, "learned_scalars", ())) for prefix, module in model.named_modules())
    gates = {
        f"{prefix}.{name}" if prefix else name
        for prefix, names in declared
        if isinstance(names, (tuple, list))
        for name in names
    }  # (the model's learned_scalars() is a method)
    params = dict(model.named_parameters()) if params is None else params
    return [
        {"params": [p for n, p in params.items() if n not in gates], "weight_decay": weight_decay},
        {"params": [p for n, p in params.items() if n in gates], "weight_decay": 0.0},
    ]


def member_model(cfg: TrainConfig, data: Dataset, device: torch.device) -> nn.Module:
    """The point's model: built from the block library with its seed, on the device, in its layout."""
    torch.manual_seed(cfg.seed)
    model = create_model(
        cfg.block,
        cfg.depth,
        data.num_classes,
        data.in_channels,
        cfg.shortcut,
        conv_bias=cfg.conv_bias,
        zero_init_last=cfg.zero_init_last,
    )
    return model.to(device=device, memory_format=torch.channels_last if channels_last(cfg) else torch.contiguous_format)


def compiled(cfg: TrainSettings, device: torch.device) -> bool:
    return device.type == "cuda" if cfg.compile is None else cfg.compile


def train_batches(cfg: TrainConfig, data: Dataset) -> DeviceBatches:
    """The point's training batches: its seed's order and augmentation, views of the data where it lies."""
    return DeviceBatches(
        data.train_x,
        data.train_y,
        cfg.batch_size,
        mean=data.mean,
        std=data.std,
        train=True,
        crop_pad=data.crop_pad if cfg.crop_pad is None else cfg.crop_pad,
        flip=data.flip if cfg.flip is None else cfg.flip,
        seed=cfg.seed,
        channels_last=channels_last(cfg),
    )


def val_batches(cfg: TrainSettings, data: Dataset) -> DeviceBatches:
    return DeviceBatches(
        data.test_x,
        data.test_y,
        cfg.eval_batch_size,
        mean=data.mean,
        std=data.std,
        train=False,
        channels_last=channels_last(cfg),
    )


def sgd(groups: List[Dict], cfg: TrainSettings, device: torch.device, lr: float) -> torch.optim.SGD:
    kw = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **kw)


def autocast(cfg: TrainSettings, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


def loss_limit(cfg: TrainSettings, data: Dataset) -> float:
    """Diverged above this training loss: ``diverge_factor`` x the loss of a uniform guess."""
    return cfg.diverge_factor * math.log(max(2, data.num_classes))


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], batches: DeviceBatches, autocast, k: int = 1) -> tuple:
    """Validation loss and accuracy of ``k`` members (one list each); ``forward(x)`` gives ``k`` x batch logits
    (or batch logits, for one).  The caller puts its model in eval mode."""
    loss_sum = torch.zeros(k, device=batches.device)
    correct = torch.zeros(k, device=batches.device, dtype=torch.long)
    n = 0
    for xb, yb in batches:
        with autocast:
            logits = forward(xb).reshape(k, xb.shape[0], -1)
        loss_sum += F.cross_entropy(logits.float().flatten(0, 1), yb.repeat(k), reduction="none").view(k, -1).sum(1)
        correct += (logits.argmax(-1) == yb).sum(1)
        n += yb.shape[0]
    return (loss_sum / n).tolist(), (correct.float() / n).tolist()


def epoch_metrics(
    epoch: int,
    train_loss: float,
    train_acc: float,
    val_loss: float,
    val_acc: float,
    lr: float,
    seconds: float,
    images_per_second: float,
    limit: float,
    scalars: Dict[str, float],
) -> Dict:
    """An epoch's metrics (``METRIC_KEYS`` and the learned scalars), for a run and a fused member alike."""
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "lr": lr,
        "epoch_seconds": seconds,
        "images_per_second": images_per_second,
        "diverged": not math.isfinite(train_loss) or train_loss > limit,
        **scalars,
    }
