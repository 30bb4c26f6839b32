"""CIFAR ResNets of depth 6n+2 (He et al. 2016, Sec. 4.2) built from any registered block."""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.models.registry import get_block, valid_depth

__all__ = ["CifarResNet", "create_model", "valid_depth", "PadShortcut"]

WIDTHS = (16, 32, 64)


def _check_depth(depth: int) -> int:
    if not valid_depth(depth):
        raise ValueError(
            f"depth {depth!r} is not a CIFAR ResNet depth; valid depths are 6n+2 for n >= 1: "
            "8, 14, 20, 26, 32, 38, 44, 50, 56, ..., 110, ..."
        )
    return (depth - 2) // 6


class PadShortcut(nn.Module):
    """He et al.'s option A shortcut: subsample by ``stride`` and zero-pad the new channels.

    Parameter-free, so parameter counts match the paper's table (ResNet-20: 0.27M).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels
        if self.extra < 0:
            raise ValueError("option A shortcut cannot reduce channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # Pad channels symmetrically (as the common CIFAR implementations do).
        lo = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, lo, self.extra - lo))


def _downsample(in_c: int, out_c: int, stride: int, shortcut: str) -> nn.Module | None:
    if stride == 1 and in_c == out_c:
        return None
    if shortcut == "A":
        return PadShortcut(in_c, out_c, stride)
    # Option B (the reference's choice): projection by 1x1 conv with stride + BN.
    return nn.Sequential(
        nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_c),
    )


class CifarResNet(nn.Module):
    """3x3 stem (16 ch) -> 3 stages of n blocks (16/32/64 ch, stride 2 at stages 2 and 3)
    -> global average pool -> linear head."""

    def __init__(
        self,
        block: str,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        shortcut: str = "B",
        *,
        conv_bias: bool = False,
        zero_init_last: bool = False,
        block_kwargs: Dict | None = None,
    ) -> None:
        super().__init__()
        n = _check_depth(depth)
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-pad) or 'B' (1x1 conv + BN), got {shortcut!r}")
        block_cls = get_block(block)
        self.block_name, self.depth = block, depth
        kw = dict(block_kwargs or {})
        kw["conv_bias"] = conv_bias
        self.conv1 = nn.Conv2d(in_channels, WIDTHS[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        stages: List[nn.Sequential] = []
        c_in = WIDTHS[0]
        for i, width in enumerate(WIDTHS):
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(block_cls(c_in, width, stride, _downsample(c_in, width, stride, shortcut), **kw))
                c_in = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(WIDTHS[-1], num_classes)
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        # He init for convs (He et al. 2015, "Delving Deep into Rectifiers"); BN keeps
        # weight=1/bias=0 from its constructor, so a block's own init (zero_gamma) survives.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last") and m is not self:
                    m.zero_init_last()

    def stages(self) -> List[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3]

    @torch.no_grad()
    def learned_scalars(self) -> Dict[str, float]:
        """Mean of each learned gate scalar per stage, e.g. ``{'scale_stage1': 0.98, ...}``."""
        out: Dict[str, float] = {}
        for i, stage in enumerate(self.stages(), start=1):
            vals: Dict[str, List[torch.Tensor]] = {}
            for blk in stage:
                for name in getattr(blk, "learned_scalars", ()):
                    vals.setdefault(name, []).append(getattr(blk, name).detach().float().reshape(-1))
            for name, ts in vals.items():
                out[f"{name}_stage{i}"] = torch.cat(ts).mean().item()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def create_model(
    block: str,
    depth: int,
    num_classes: int,
    in_channels: int = 3,
    shortcut: str = "B",
    **kwargs,
) -> CifarResNet:
    """Build a CIFAR ResNet of ``depth = 6n + 2`` from the registered block ``block``.

    ``shortcut='B'`` (default, the reference's choice) projects with 1x1 conv + BN where the
    shape changes; ``'A'`` is He et al.'s parameter-free zero-padding shortcut.
    Keywords: ``conv_bias`` (default False), ``zero_init_last`` (calls each block's
    ``zero_init_last()`` hook), ``block_kwargs`` (passed to every block).
    """
    return CifarResNet(block, depth, num_classes, in_channels, shortcut, **kwargs)
