"""Train one configuration (no Ray here: this module runs on its own).

``train(cfg, data, on_epoch, state)`` builds the model, trains it epoch by epoch, evaluates
after every epoch and hands each epoch's metrics to ``on_epoch(metrics, get_state)``;
``get_state()`` returns everything needed to resume (model, optimiser, schedule, RNG, epoch,
history), so a run resumed from epoch k ends with the same metrics as an uninterrupted one.
A non-finite (or exploding) loss stops the run and marks it ``diverged``; it never raises.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import Dataset, DeviceBatches, load_dataset
from .models import create_model

__all__ = ["TrainSettings", "TrainConfig", "train", "resolve_device", "METRIC_KEYS"]

METRIC_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
               "epoch_seconds", "images_per_second", "diverged")


@dataclass
class TrainSettings:
    """Every training setting except the grid axes (block, depth, lr, seed)."""

    dataset: str = "digits"            # digits | synthetic | cifar10 | cifar100
    data_dir: str = "data"             # where torchvision downloads CIFAR
    epochs: int = 10
    batch_size: int = 128              # He et al. 2016
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4         # He et al. 2016
    schedule: str = "step"             # step | cosine | constant
    milestones: List[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of training
    lr_decay: float = 0.1              # step schedule: LR x lr_decay at each milestone
    warmup_epochs: float = 0.0         # linear warm-up (He et al. use 0.01 for ResNet-110's first ~400 iters)
    label_smoothing: float = 0.0
    shortcut: str = "B"                # B: 1x1 conv + BN (reference); A: zero-pad (He et al. CIFAR)
    zero_init_last: bool = False       # call every block's zero_init_last() hook
    conv_bias: bool = False            # bias before BN is redundant (BN subtracts the mean)
    crop_pad: Optional[int] = None     # None: the dataset's default (4 for CIFAR, 1 for digits)
    flip: Optional[bool] = None        # None: the dataset's default (no flips for digits)
    eval_batch_size: int = 1024        # evaluation has no gradients: large batches are cheap
    device: str = "auto"               # auto | cpu | cuda
    # Speed settings (none changes the recipe); defaults = the fastest measured, docs/benchmarks.md.
    precision: str = "auto"            # auto (= fp32: bf16 was no faster at batch 128) | fp32 | bf16
    channels_last: Optional[bool] = None  # None: on CUDA only
    compile: Optional[bool] = None     # torch.compile the model; None: on CUDA only
    compile_mode: str = "reduce-overhead"  # CUDA graphs: small CIFAR nets are launch-bound
    threads: int = 0                   # torch CPU threads; 0 leaves torch's default
    diverge_factor: float = 5.0        # diverged when train loss > factor x ln(classes), or non-finite


@dataclass
class TrainConfig(TrainSettings):
    """One trial: the settings plus one point of the grid."""

    block: str = "baseline"
    depth: int = 20
    lr: float = 0.1
    seed: int = 0

    @classmethod
    def from_dict(cls, d: Dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> Dict:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is visible; use device=cpu or auto")
    return torch.device(name)


def _lr_lambda(cfg: TrainSettings, steps_per_epoch: int) -> Callable[[int], float]:
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


def _param_groups(model: nn.Module, weight_decay: float):
    # Weight decay on every weight, as He et al.; the learned gate scalars are excluded so
    # decay does not pull a SkipInit gate back to 0 or a shortcut scale towards 0.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 and p.numel() == 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(
    cfg: TrainConfig,
    data: Optional[Dataset] = None,
    on_epoch: Optional[Callable[[Dict, Callable[[], Dict]], None]] = None,
    state: Optional[Dict] = None,
) -> Dict:
    """Train ``cfg``; return ``{"history": [...], "diverged": bool, "train_seconds": float}``."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    bf16 = cfg.precision == "bf16"
    channels_last = cuda if cfg.channels_last is None else cfg.channels_last
    compile_model = cuda if cfg.compile is None else cfg.compile
    mem_fmt = torch.channels_last if channels_last else torch.contiguous_format
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir)

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.block, cfg.depth, data.num_classes, data.in_channels, cfg.shortcut,
                         conv_bias=cfg.conv_bias, zero_init_last=cfg.zero_init_last)
    model = model.to(device=device, memory_format=mem_fmt)
    run_model = torch.compile(model, mode=cfg.compile_mode) if compile_model else model
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels

    # The whole data set lives on the device; batches are views + one gather.
    tx, ty = data.train_x.to(device, non_blocking=True), data.train_y.to(device, non_blocking=True)
    vx, vy = data.test_x.to(device, non_blocking=True), data.test_y.to(device, non_blocking=True)
    crop = data.crop_pad if cfg.crop_pad is None else cfg.crop_pad
    flip = data.flip if cfg.flip is None else cfg.flip
    train_batches = DeviceBatches(tx, ty, cfg.batch_size, mean=data.mean, std=data.std, train=True,
                                  crop_pad=crop, flip=flip, seed=cfg.seed, channels_last=channels_last)
    val_batches = DeviceBatches(vx, vy, cfg.eval_batch_size, mean=data.mean, std=data.std, train=False,
                                channels_last=channels_last)

    opt_kw = {"fused": True} if cuda else {"foreach": True}
    opt = torch.optim.SGD(_param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=cfg.nesterov, **opt_kw)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, len(train_batches)))
    history: List[Dict] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if cuda and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"])
        history = list(state["history"])
        start = int(state["epoch"])

    def get_state() -> Dict:
        # A deep copy: training goes on mutating the live tensors after the callback returns.
        return copy.deepcopy({
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng_cpu": torch.get_rng_state(), "rng_cuda": torch.cuda.get_rng_state() if cuda else None,
            "epoch": len(history), "history": list(history), "config": cfg.to_dict(),
        })

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    loss_limit = cfg.diverge_factor * math.log(max(2, data.num_classes))
    diverged = bool(history and history[-1].get("diverged"))
    train_seconds = sum(h["epoch_seconds"] for h in history)

    for epoch in range(start + 1, cfg.epochs + 1):
        if diverged:
            break
        t0 = time.perf_counter()
        model.train()
        train_batches.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for xb, yb in train_batches:
            with autocast:
                logits = run_model(xb)
                loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_used = opt.param_groups[0]["lr"]
            sched.step()
            # Accumulate on the device: no host synchronisation inside the epoch.
            loss_sum += loss.detach().float() * yb.shape[0]
            correct += (logits.argmax(1) == yb).sum()
            seen += yb.shape[0]
        train_loss = loss_sum.item() / seen  # the one sync per epoch
        train_acc = correct.item() / seen
        t_train = time.perf_counter() - t0
        val_loss, val_acc = _evaluate(run_model, val_batches, autocast)
        diverged = not math.isfinite(train_loss) or train_loss > loss_limit
        metrics = {
            "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "lr": lr_used,
            "epoch_seconds": time.perf_counter() - t0, "images_per_second": seen / t_train,
            "diverged": diverged,
        }
        metrics.update(model.learned_scalars())
        train_seconds += metrics["epoch_seconds"]
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(dict(metrics), get_state)
    return {"history": history, "diverged": diverged, "train_seconds": train_seconds}


@torch.no_grad()
def _evaluate(model: nn.Module, batches: DeviceBatches, autocast) -> tuple:
    model.eval()
    loss_sum = torch.zeros((), device=batches.device)
    correct = torch.zeros((), device=batches.device, dtype=torch.long)
    n = 0
    for xb, yb in batches:
        with autocast:
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
        n += yb.shape[0]
    return loss_sum.item() / n, correct.item() / n
