"""Train grid points (no Ray here: this module runs on its own).

``build_group(cfgs, data, state, histories)`` is the one way to make a run: one grid point as a
plain ``Run``, several that differ only in ``lr`` and ``seed`` as one fused run
(``ablate.train.fused``), restored from a state.  ``train_group`` is the one epoch loop: it trains every
member to its last epoch and hands each epoch's metrics to ``on_epoch(metrics, get_state)``;
``get_state()`` returns everything needed to resume (model, optimiser, schedule, RNG), so a run
resumed from epoch k ends with the same metrics as an uninterrupted one.  ``train(cfg)`` is that
loop with a group of one.  A non-finite (or exploding) loss stops a member and marks it
``diverged``; it never raises.

The parts of the recipe are in ``ablate.train.recipe``, a trial's settings in ``ablate.spec.trial`` and its
identity in ``ablate.spec.axes`` (both without torch).
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import ablate.train.recipe as recipe
from ablate.errors import first_line
from ablate.spec.settings import METRIC_KEYS
from ablate.spec.trial import TrainConfig
from ablate.train.data import Dataset, load_dataset
from ablate.train.fused import FusedRun
from ablate.train.recipe import epoch_metrics, evaluate, lr_lambda, param_groups

__all__ = ["TrainConfig", "train", "build_group", "train_group", "Run", "SequentialGroup", "METRIC_KEYS"]

# What on_epoch gets: each member's metrics of the epoch (None for a member that has stopped), and
# the group's resumable state.
OnEpoch = Callable[[List[Optional[Dict]], Callable[[], Dict]], None]


class Run:
    """One grid point trained alone: model, device-resident batches, optimiser and schedule, history so far."""

    def __init__(self, cfg: TrainConfig, data: Dataset, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.model = recipe.member_model(cfg, data, device)
        self.run_model = (
            torch.compile(self.model, mode=cfg.compile_mode) if recipe.compiled(cfg, device) else self.model
        )
        self.train_batches, self.val_batches = recipe.train_batches(cfg, data), recipe.val_batches(cfg, data)
        self.opt = recipe.sgd(param_groups(self.model, cfg.weight_decay), cfg, device, lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg, len(self.train_batches)))
        self.autocast, self.loss_limit = recipe.autocast(cfg, device), recipe.loss_limit(cfg, data)
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
        return copy.deepcopy(
            {
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state() if cuda else None,
                "epoch": len(self.history),
                "history": list(self.history),
                "config": self.cfg.to_dict(),
            }
        )

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
        model.eval()
        (val_loss,), (val_acc,) = evaluate(self.run_model, self.val_batches, self.autocast)
        metrics = epoch_metrics(
            epoch,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            lr_used,
            time.perf_counter() - t0,
            seen / t_train,
            self.loss_limit,
            model.learned_scalars(),
        )
        self.history.append(metrics)
        return metrics


class SequentialGroup:
    """Members as separate runs, epoch by epoch: a trial of one grid point, or the fallback for a
    block ``vmap`` cannot batch."""

    def __init__(self, cfgs: List[TrainConfig], data: Dataset, device: torch.device) -> None:
        self.cfgs, self.runs = cfgs, [Run(c, data, device) for c in cfgs]

    @property
    def histories(self) -> List[List[Dict]]:
        return [r.history for r in self.runs]

    def epoch(self, epoch: int) -> List[Optional[Dict]]:
        return [None if r.diverged else r.epoch(epoch) for r in self.runs]

    def done(self, epochs: int) -> List[bool]:
        return [r.diverged or len(r.history) >= epochs for r in self.runs]

    def state(self) -> Dict:
        """The tensors to resume from; the members' histories are the caller's (a trial's record)."""
        states = [r.state() for r in self.runs]
        for s in states:
            del s["history"]
        return {"members": states}

    def restore(self, state: Dict, histories: List[List[Dict]]) -> None:
        for r, s, h in zip(self.runs, state["members"], histories):
            r.restore({**s, "history": h})


def build_group(
    cfgs: List[TrainConfig],
    data: Optional[Dataset] = None,
    state: Optional[Dict] = None,
    histories: Optional[List[List[Dict]]] = None,
):
    """The members of one trial, built and restored (``state`` and the members' ``histories``): one
    member as a plain run, several as one fused run (or, for a block that cannot be fused, one by one)."""
    cfg = cfgs[0]
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    device = recipe.resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    # On the device once, for every member: their batches are views of it.
    data = dataclasses.replace(
        data, **{f: getattr(data, f).to(device) for f in ("train_x", "train_y", "test_x", "test_y")}
    )
    group = None
    if len(cfgs) > 1 and (state is None or "params" in state):
        try:
            group = FusedRun(cfgs, data, device)
            group.check()
        except Exception as e:
            if state is not None:
                raise
            warnings.warn(
                f"block {cfg.block!r} cannot be fused ({e.__class__.__name__}: {first_line(e, 120)}); "
                f"its {len(cfgs)} members train one after another",
                stacklevel=2,
            )
            group = None
    if group is None:
        group = SequentialGroup(cfgs, data, device)
    if state is not None:
        group.restore(state, histories if histories is not None else [[] for _ in cfgs])
    return group


def train_group(group, on_epoch: Optional[OnEpoch] = None) -> List[Dict]:
    """The epoch loop: train a built group (``build_group``) to the end; each member's
    ``{"history", "diverged", "train_seconds"}``."""
    epochs = group.cfgs[0].epochs
    while not all(group.done(epochs)):  # the members still training are all at the same epoch
        epoch = 1 + min(len(h) for h, d in zip(group.histories, group.done(epochs)) if not d)
        metrics = group.epoch(epoch)
        if on_epoch is not None:
            on_epoch(metrics, group.state)
    return [
        {
            "history": h,
            "diverged": bool(h and h[-1].get("diverged")),
            "train_seconds": sum(m["epoch_seconds"] for m in h),
        }
        for h in group.histories
    ]


def train(
    cfg: TrainConfig,
    data: Optional[Dataset] = None,
    on_epoch: Optional[Callable[[Dict, Callable[[], Dict]], None]] = None,
    state: Optional[Dict] = None,
) -> Dict:
    """Train one grid point: the epoch loop with a group of one.  ``on_epoch(metrics, get_state)``;
    ``state``: what ``get_state()`` returned, to resume.  ``{"history", "diverged", "train_seconds"}``."""
    group = build_group([cfg], data, state and {"members": [state]}, state and [state["history"]])
    run = group.runs[0]
    relay = None if on_epoch is None else (lambda metrics, _: on_epoch(dict(metrics[0]), run.state))
    return train_group(group, relay)[0]
