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
import time
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

import ablate.train.recipe as recipe
from ablate.spec.axes import fusable
from ablate.spec.trial import TrainConfig
from ablate.train.data import Dataset
from ablate.train.recipe import epoch_metrics, evaluate, lr_lambda, param_groups

__all__ = ["FusedRun", "check_group"]


def check_group(cfgs: List[TrainConfig]) -> None:
    """Members of one fused group differ only in the fusable axes (``Axis.fusable``: lr and seed)."""
    free = set(fusable())
    base = cfgs[0].model_dump(exclude=free)
    for c in cfgs[1:]:
        if c.model_dump(exclude=free) != base:
            raise ValueError(f"the members of a fused group may differ only in {' and '.join(fusable())}")


class FusedRun:
    """K members as one model: ``epoch(e)`` trains all active members one epoch, returns their metrics.

    One optimiser and one copy of the data serve all members; each member's model and batches are
    built by ``ablate.train.recipe`` exactly as its own run would build them."""

    def __init__(self, cfgs: List[TrainConfig], data: Dataset, device: torch.device) -> None:
        check_group(cfgs)
        self.cfgs, self.device, cfg = cfgs, device, cfgs[0]
        self.k = len(cfgs)
        self.members = [recipe.member_model(c, data, device) for c in cfgs]  # seeded as each alone
        self.train_batches = [recipe.train_batches(c, data) for c in cfgs]  # views of the one data
        self.val_batches = recipe.val_batches(cfg, data)  # the same for every member (no shuffling)
        self.params, self.buffers = stack_module_state(self.members)
        self.channels_last = recipe.channels_last(cfg)
        if self.channels_last:
            self._grouped_channels_last()
        self._share_storage()
        skeleton = copy.deepcopy(self.members[0]).to("meta")

        def forward(params, buffers, x):
            return functional_call(skeleton, (params, buffers), (x,))

        self.skeleton = skeleton
        self.train_forward = vmap(forward)  # a batch per member
        self.eval_forward = vmap(forward, in_dims=(0, 0, None))  # the same batch for all
        if recipe.compiled(cfg, device):
            self.train_forward = torch.compile(self.train_forward, mode=cfg.compile_mode)
        # The run's groups (no decay on declared gates); decay is folded into each member's gradient
        # (``_scale_grads``), so the optimiser's own is 0 and its lr the schedule's factor.
        self.groups = param_groups(self.members[0], cfg.weight_decay, self.params)
        self.opt = recipe.sgd([{"params": g["params"], "weight_decay": 0.0} for g in self.groups], cfg, device, lr=1.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg, len(self.train_batches[0])))
        self.base_lr = torch.tensor([c.lr for c in cfgs], device=device)
        self.active = torch.ones(self.k, dtype=torch.bool, device=device)
        self.autocast, self.loss_limit = recipe.autocast(cfg, device), recipe.loss_limit(cfg, data)
        self.histories: List[List[Dict]] = [[] for _ in cfgs]

    @torch.no_grad()
    def check(self) -> None:
        """One small step through the fused model: raises where ``vmap`` cannot batch this block."""
        self.skeleton.eval()
        self.eval_forward(self.params, self.buffers, self.val_batches.x[:2].float())

    @torch.no_grad()
    def _grouped_channels_last(self) -> None:
        """Lay each stacked convolution weight [K, O, C, kh, kw] out as [K, O, kh, kw, C]: ``vmap`` runs it as one
        grouped convolution of weight [K*O, C, kh, kw], which is then channels_last without a copy, as each
        member's own is (a contiguous layout would change the float rounding of every step)."""
        for p in self.params.values():
            if p.ndim == 5:
                p.data = p.data.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)

    def _stack(self, xs: List[torch.Tensor]) -> torch.Tensor:
        """The members' batches as one [K, N, C, H, W] input; channels_last: laid out [N, H, W, K, C], which
        ``vmap`` folds into the grouped convolution's channels_last [N, K*C, H, W] without a copy."""
        if not self.channels_last:
            return torch.stack(xs)
        return torch.stack([x.permute(0, 2, 3, 1) for x in xs], dim=3).permute(3, 0, 4, 1, 2)

    def _share_storage(self) -> None:
        """Point each member's modules at its slice of the stacked tensors: a member's state_dict
        and learned scalars then read the live fused values."""
        with torch.no_grad():
            for k, m in enumerate(self.members):
                for name, p in m.named_parameters():
                    p.data = self.params[name][k]
                for name, _ in m.named_buffers():
                    mod, _, leaf = name.rpartition(".")
                    m.get_submodule(mod)._buffers[leaf] = self.buffers[name][k]

    def _per_member(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``t`` (one value per member) shaped to broadcast over a stacked tensor ``like``."""
        return t.view(self.k, *([1] * (like.ndim - 1)))

    @torch.no_grad()
    def _scale_grads(self) -> None:
        for group in self.groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["weight_decay"]:
                    p.grad.add_(p, alpha=group["weight_decay"])
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
            x = self._stack([xb for xb, _ in batches])
            y = torch.stack([yb for _, yb in batches])
            with self.autocast:
                logits = self.train_forward(self.params, self.buffers, x)
                loss = (
                    F.cross_entropy(
                        logits.flatten(0, 1), y.flatten(), reduction="none", label_smoothing=cfg.label_smoothing
                    )
                    .view(k, -1)
                    .mean(1)
                )
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
        self.skeleton.eval()
        val_loss, val_acc = evaluate(
            lambda xb: self.eval_forward(self.params, self.buffers, xb), self.val_batches, self.autocast, k
        )
        wall = time.perf_counter() - t0
        active = [i for i in range(k) if self.active[i]]
        out: List[Optional[Dict]] = [None] * k
        for i in active:
            # A member's share of the fused epoch: sums over members give the device time.
            m = epoch_metrics(
                epoch,
                train_loss[i],
                train_acc[i],
                val_loss[i],
                val_acc[i],
                self.cfgs[i].lr * factor,
                wall / len(active),
                seen / t_train,
                self.loss_limit,
                self.members[i].learned_scalars(),
            )
            self.histories[i].append(m)
            out[i] = m
            if m["diverged"]:
                self.freeze(i)
        return out

    def done(self, epochs: int) -> List[bool]:
        return [not bool(self.active[i]) or len(h) >= epochs for i, h in enumerate(self.histories)]

    def state(self) -> Dict:
        """The tensors to resume from; the members' histories are the caller's (a trial's record)."""
        return copy.deepcopy(
            {
                "params": dict(self.params),
                "buffers": dict(self.buffers),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "active": self.active.tolist(),
                "configs": [c.to_dict() for c in self.cfgs],
            }
        )

    @torch.no_grad()
    def restore(self, state: Dict, histories: List[List[Dict]]) -> None:
        for src, dst in ((state["params"], self.params), (state["buffers"], self.buffers)):
            for name, t in src.items():
                dst[name].copy_(t)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.active = torch.tensor(state["active"], dtype=torch.bool, device=self.device)
        self.histories = [list(h) for h in histories]
