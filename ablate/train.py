"""Train one configuration (no Ray here: this module runs on its own).

``train(cfg, data, on_epoch, state)`` builds the run (``build``: model, data on the device,
optimiser, schedule, resumed state), then trains it epoch by epoch (``Run.epochs``), evaluates
after every epoch and hands each epoch's metrics to ``on_epoch(metrics, get_state)``;
``get_state()`` returns everything needed to resume (model, optimiser, schedule, RNG, epoch,
history), so a run resumed from epoch k ends with the same metrics as an uninterrupted one.
A non-finite (or exploding) loss stops the run and marks it ``diverged``; it never raises.

A trial's settings are in ``ablate.settings`` and its identity in ``ablate.axes`` (both without torch).
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .axes import AXES, trial_id, trial_key, trial_name
from .data import Dataset, DeviceBatches, load_dataset
from .models import create_model
from .settings import METRIC_KEYS, Number, Settings, TrainConfig, TrainSettings

__all__ = ["TrainSettings", "TrainConfig", "train", "build", "setup", "Run", "resolve_device", "METRIC_KEYS", "AXES",
           "trial_key", "trial_name", "trial_id", "epoch_metrics", "Number", "Settings"]

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


class Run:
    """A built run: model, device-resident batches, optimiser and schedule, history so far."""

    def __init__(self, cfg: TrainConfig, data: Dataset, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        cuda = device.type == "cuda"
        channels_last = True if cfg.channels_last is None else cfg.channels_last
        self.compiled = cuda if cfg.compile is None else cfg.compile  # fused runs decide the same
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.block, cfg.depth, data.num_classes, data.in_channels, cfg.shortcut,
                             conv_bias=cfg.conv_bias, zero_init_last=cfg.zero_init_last)
        self.model = model.to(device=device, memory_format=torch.channels_last if channels_last
                              else torch.contiguous_format)
        self.run_model = torch.compile(self.model, mode=cfg.compile_mode) if self.compiled else self.model
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
        # The whole data set lives on the device; batches are views + one gather.
        tx, ty = data.train_x.to(device, non_blocking=True), data.train_y.to(device, non_blocking=True)
        vx, vy = data.test_x.to(device, non_blocking=True), data.test_y.to(device, non_blocking=True)
        self.train_batches = DeviceBatches(
            tx, ty, cfg.batch_size, mean=data.mean, std=data.std, train=True,
            crop_pad=data.crop_pad if cfg.crop_pad is None else cfg.crop_pad,
            flip=data.flip if cfg.flip is None else cfg.flip, seed=cfg.seed, channels_last=channels_last)
        self.val_batches = DeviceBatches(vx, vy, cfg.eval_batch_size, mean=data.mean, std=data.std, train=False,
                                         channels_last=channels_last)
        opt_kw = {"fused": True} if cuda else {"foreach": True}
        self.opt = torch.optim.SGD(_param_groups(self.model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                                   nesterov=cfg.nesterov, **opt_kw)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(cfg, len(self.train_batches)))
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        self.loss_limit = cfg.diverge_factor * math.log(max(2, data.num_classes))
        self.history: List[Dict] = []

    def restore(self, state: Dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"])
        self.history = list(state["history"])

    def state(self) -> Dict:
        # A deep copy: training goes on mutating the live tensors after the callback returns.
        cuda = self.device.type == "cuda"
        return copy.deepcopy({
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if cuda else None,
            "epoch": len(self.history), "history": list(self.history), "config": self.cfg.to_dict(),
        })

    @property
    def diverged(self) -> bool:
        return bool(self.history and self.history[-1].get("diverged"))

    def epoch(self, epoch: int) -> Dict:
        """Train one epoch, evaluate, return its metrics (also appended to the history)."""
        cfg, model, opt = self.cfg, self.model, self.opt
        t0 = time.perf_counter()
        model.train()
        self.train_batches.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for xb, yb in self.train_batches:
            with self.autocast:
                logits = self.run_model(xb)
                loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_used = opt.param_groups[0]["lr"]
            self.sched.step()
            # Accumulate on the device: no host synchronisation inside the epoch.
            loss_sum += loss.detach().float() * yb.shape[0]
            correct += (logits.argmax(1) == yb).sum()
            seen += yb.shape[0]
        train_loss = loss_sum.item() / seen  # the one sync per epoch
        train_acc = correct.item() / seen
        t_train = time.perf_counter() - t0
        val_loss, val_acc = _evaluate(self.run_model, self.val_batches, self.autocast)
        metrics = epoch_metrics(epoch, train_loss, train_acc, val_loss, val_acc, lr_used,
                                time.perf_counter() - t0, seen / t_train, self.loss_limit, model.learned_scalars())
        self.history.append(metrics)
        return metrics


def epoch_metrics(epoch: int, train_loss: float, train_acc: float, val_loss: float, val_acc: float, lr: float,
                  seconds: float, images_per_second: float, loss_limit: float, scalars: Dict[str, float]) -> Dict:
    """An epoch's metrics (``METRIC_KEYS`` and the learned scalars), for a run and a fused member alike."""
    return {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
            "val_acc": val_acc, "lr": lr, "epoch_seconds": seconds, "images_per_second": images_per_second,
            "diverged": not math.isfinite(train_loss) or train_loss > loss_limit, **scalars}


def setup(cfg: TrainConfig, data: Optional[Dataset] = None) -> Tuple[Dataset, torch.device]:
    """What a run (or a fused group) of ``cfg`` needs first: torch's threads, its data, its device."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    return data if data is not None else load_dataset(cfg.dataset, cfg.data_dir), resolve_device(cfg.device)


def build(cfg: TrainConfig, data: Optional[Dataset] = None, state: Optional[Dict] = None) -> Run:
    """Everything a run needs before its first (or next) epoch: model, data, optimiser, resumed state."""
    run = Run(cfg, *setup(cfg, data))
    if state is not None:
        run.restore(state)
    return run


def train(
    cfg: TrainConfig,
    data: Optional[Dataset] = None,
    on_epoch: Optional[Callable[[Dict, Callable[[], Dict]], None]] = None,
    state: Optional[Dict] = None,
) -> Dict:
    """Train ``cfg``; return ``{"history": [...], "diverged": bool, "train_seconds": float}``."""
    run = build(cfg, data, state)
    for epoch in range(len(run.history) + 1, cfg.epochs + 1):
        if run.diverged:
            break
        metrics = run.epoch(epoch)
        if on_epoch is not None:
            on_epoch(dict(metrics), run.state)
    return {"history": run.history, "diverged": run.diverged,
            "train_seconds": sum(h["epoch_seconds"] for h in run.history)}


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
