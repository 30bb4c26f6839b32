"""Fused trials: K grid points of one block and depth trained as one model (no Ray here).

Horizontal fusion (Wang et al., "Horizontally Fused Training Array", MLSys 2021): the K members'
models, built one by one from the block library exactly as separate trials build them (same seed,
same initialisation), are stacked with ``torch.func.stack_module_state`` and run as one model
with ``vmap(functional_call)``: every convolution becomes a grouped one, every BatchNorm keeps
each member's batch and running statistics.  Each member draws its own batches (its seed's data
order and augmentation) and has its own learning rate: the optimiser's schedule factor is shared
(the members differ only in ``lr`` and ``seed``), the member's base LR scales its gradients, and
weight decay is folded into the gradient first, so each member takes SGD's step exactly.

A member that diverges is frozen (its gradients and momentum are zeroed) and its history ends
there, as a separate trial's would; the others go on.  A block that cannot be fused (an operator
``vmap`` cannot batch) runs its members one after another in the same process, with a notice.
"""
from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from .data import Dataset
from .train import Run, TrainConfig, _lr_lambda, epoch_metrics, setup

__all__ = ["FusedRun", "build_group", "train_group", "check_group"]


def check_group(cfgs: List[TrainConfig]) -> None:
    """Members of one fused trial differ only in ``lr`` and ``seed``."""
    base = cfgs[0].model_dump(exclude={"lr", "seed"})
    for c in cfgs[1:]:
        if c.model_dump(exclude={"lr", "seed"}) != base:
            raise ValueError("the members of a fused trial may differ only in lr and seed")


class FusedRun:
    """K members as one model: ``epoch(e)`` trains all active members one epoch, returns their metrics."""

    def __init__(self, cfgs: List[TrainConfig], data: Dataset, device: torch.device) -> None:
        check_group(cfgs)
        self.cfgs, self.device, cfg = cfgs, device, cfgs[0]
        self.k = len(cfgs)
        # Each member exactly as its separate run builds it (seeded init, its own batches).
        runs = [Run(c, data, device) for c in cfgs]
        self.members = [r.model for r in runs]
        self.train_batches = [r.train_batches for r in runs]
        self.val_batches = runs[0].val_batches  # the same for every member (no shuffling)
        self.params, self.buffers = stack_module_state(self.members)
        self._share_storage()
        skeleton = copy.deepcopy(self.members[0]).to("meta")

        def forward(params, buffers, x):
            return functional_call(skeleton, (params, buffers), (x,))

        self.skeleton = skeleton
        self.train_forward = vmap(forward)                       # a batch per member
        self.eval_forward = vmap(forward, in_dims=(0, 0, None))  # the same batch for all
        if runs[0].compiled:
            self.train_forward = torch.compile(self.train_forward, mode=cfg.compile_mode)
        # Weight decay on every weight, none on learned gate scalars (as train._param_groups).
        gate = {n for n, p in self.params.items() if p[0].ndim == 1 and p[0].numel() == 1}
        self.decay = [p for n, p in self.params.items() if n not in gate]
        self.no_decay = [p for n, p in self.params.items() if n in gate]
        opt_kw = {"fused": True} if device.type == "cuda" else {"foreach": True}
        # lr=1: the schedule factor; each member's base LR scales its gradient (``_scale_grads``).
        self.opt = torch.optim.SGD([{"params": self.decay}, {"params": self.no_decay}], lr=1.0,
                                   momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=0.0, **opt_kw)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(cfg, len(self.train_batches[0])))
        self.base_lr = torch.tensor([c.lr for c in cfgs], device=device)
        self.active = torch.ones(self.k, dtype=torch.bool, device=device)
        self.autocast = runs[0].autocast
        self.loss_limit = runs[0].loss_limit
        self.histories: List[List[Dict]] = [[] for _ in cfgs]

    def _share_storage(self) -> None:
        """Point each member's modules at its slice of the stacked tensors: a member's state_dict
        and learned scalars then read the live fused values."""
        with torch.no_grad():
            for k, m in enumerate(self.members):
                for name, p in m.named_parameters():
                    p.data = self.params[name][k]
                for name, b in m.named_buffers():
                    mod, _, leaf = name.rpartition(".")
                    m.get_submodule(mod)._buffers[leaf] = self.buffers[name][k]

    def _per_member(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``t`` (one value per member) shaped to broadcast over a stacked tensor ``like``."""
        return t.view(self.k, *([1] * (like.ndim - 1)))

    @torch.no_grad()
    def _scale_grads(self) -> None:
        wd = self.cfgs[0].weight_decay
        for group, decay in ((self.decay, wd), (self.no_decay, 0.0)):
            for p in group:
                if p.grad is None:
                    continue
                if decay:
                    p.grad.add_(p, alpha=decay)
                p.grad.mul_(self._per_member(self.base_lr, p))
                p.grad.masked_fill_(~self._per_member(self.active, p), 0.0)  # a frozen member's NaNs too

    @torch.no_grad()
    def freeze(self, k: int) -> None:
        """Stop member ``k`` where it is: no gradient, no momentum left to carry it."""
        self.active[k] = False
        for group in self.opt.param_groups:
            for p in group["params"]:
                buf = self.opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf[k] = 0.0

    def epoch(self, epoch: int) -> List[Optional[Dict]]:
        """One epoch of every active member; their metrics (None for a member already stopped)."""
        cfg, k = self.cfgs[0], self.k
        t0 = time.perf_counter()
        self.skeleton.train()
        for b in self.train_batches:
            b.set_epoch(epoch)
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        seen = 0
        for batches in zip(*self.train_batches):
            x = torch.stack([xb for xb, _ in batches])
            y = torch.stack([yb for _, yb in batches])
            with self.autocast:
                logits = self.train_forward(self.params, self.buffers, x)
                loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none",
                                       label_smoothing=cfg.label_smoothing).view(k, -1).mean(1)
            self.opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # each member's gradient is its own loss's
            self._scale_grads()
            self.opt.step()
            factor = self.opt.param_groups[0]["lr"]
            self.sched.step()
            loss_sum += loss.detach().float() * y.shape[1]
            correct += (logits.argmax(-1) == y).sum(1)
            seen += y.shape[1]
        train_loss, train_acc = (loss_sum / seen).tolist(), (correct.float() / seen).tolist()
        t_train = time.perf_counter() - t0
        val_loss, val_acc = self._evaluate()
        wall = time.perf_counter() - t0
        active = [i for i in range(k) if self.active[i]]
        out: List[Optional[Dict]] = [None] * k
        for i in active:
            # A member's share of the fused epoch: sums over members give the device time.
            m = epoch_metrics(epoch, train_loss[i], train_acc[i], val_loss[i], val_acc[i], self.cfgs[i].lr * factor,
                              wall / len(active), seen / t_train, self.loss_limit, self.members[i].learned_scalars())
            self.histories[i].append(m)
            out[i] = m
            if m["diverged"]:
                self.freeze(i)
        return out

    @torch.no_grad()
    def _evaluate(self) -> tuple:
        self.skeleton.eval()
        k = self.k
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        n = 0
        for xb, yb in self.val_batches:
            with self.autocast:
                logits = self.eval_forward(self.params, self.buffers, xb)
            loss_sum += F.cross_entropy(logits.float().flatten(0, 1), yb.repeat(k), reduction="none").view(k, -1).sum(1)
            correct += (logits.argmax(-1) == yb).sum(1)
            n += yb.shape[0]
        return (loss_sum / n).tolist(), (correct.float() / n).tolist()

    def done(self, epochs: int) -> List[bool]:
        return [not bool(self.active[i]) or len(h) >= epochs for i, h in enumerate(self.histories)]

    def state(self) -> Dict:
        """The tensors to resume from; the members' histories are the caller's (a trial's record)."""
        return copy.deepcopy({
            "params": dict(self.params), "buffers": dict(self.buffers), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "active": self.active.tolist(),
            "configs": [c.to_dict() for c in self.cfgs],
        })

    @torch.no_grad()
    def restore(self, state: Dict, histories: List[List[Dict]]) -> None:
        for src, dst in ((state["params"], self.params), (state["buffers"], self.buffers)):
            for name, t in src.items():
                dst[name].copy_(t)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.active = torch.tensor(state["active"], dtype=torch.bool, device=self.device)
        self.histories = [list(h) for h in histories]


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


def build_group(cfgs: List[TrainConfig], data: Optional[Dataset] = None, state: Optional[Dict] = None,
                histories: Optional[List[List[Dict]]] = None):
    """The members of one trial, built and restored (``state`` and the members' ``histories``): one
    member as a plain run, several as one fused run (or, for a block that cannot be fused, one by one)."""
    cfg = cfgs[0]
    data, device = setup(cfg, data)
    # On the device once, for every member (each member's run would otherwise copy it).
    data = dataclasses.replace(data, **{f: getattr(data, f).to(device) for f in ("train_x", "train_y", "test_x", "test_y")})
    group = None
    if len(cfgs) > 1 and (state is None or "params" in state):
        try:
            group = FusedRun(cfgs, data, device)
            with torch.no_grad():  # one small step through the fused model: can vmap batch this block?
                group.skeleton.eval()
                group.eval_forward(group.params, group.buffers, group.val_batches.x[:2].float())
        except Exception as e:
            if state is not None:
                raise
            warnings.warn(f"block {cfg.block!r} cannot be fused ({e.__class__.__name__}: {str(e).splitlines()[0][:120]}); "
                   f"its {len(cfgs)} members train one after another")
            group = None
    if group is None:
        group = SequentialGroup(cfgs, data, device)
    if state is not None:
        group.restore(state, histories if histories is not None else [[] for _ in cfgs])
    return group


def train_group(group, on_epoch: Optional[Callable[[List[Optional[Dict]], Callable[[], Dict]], None]] = None
                ) -> List[Dict]:
    """Train a built group (``build_group``) to the end; return each member's ``{"history", "diverged"}``.

    ``on_epoch(metrics, get_state)`` gets every member's metrics of the epoch (None for a member
    that has stopped) and the group's resumable state."""
    epochs = group.cfgs[0].epochs
    while not all(group.done(epochs)):  # the members still training are all at the same epoch
        epoch = 1 + min(len(h) for h, d in zip(group.histories, group.done(epochs)) if not d)
        metrics = group.epoch(epoch)
        if on_epoch is not None:
            on_epoch(metrics, group.state)
    return [{"history": h, "diverged": bool(h and h[-1].get("diverged"))} for h in group.histories]
