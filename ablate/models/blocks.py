"""The residual-block library every ablate model is built from.

Contract (torchvision/timm style): every block class takes
``(in_channels, out_channels, stride=1, downsample=None, **options)``, computes the
residual branch ``F(x) = BN(conv3x3(relu(BN(conv3x3(x, stride)))))`` and merges it with the
shortcut (``x``, or ``downsample(x)`` where the shape changes) by its own formula.
A variant overrides ``merge`` (and ``init_merge`` for its own parameters), nothing else.
Blocks may offer ``zero_init_last()`` (found with ``hasattr``) and list their learned
gate scalars in ``learned_scalars`` so the trainer can log them.

Parameter names follow the reference post in ``shared/seed`` (``conv1, bn1, conv2, bn2,
downsample, scale, residual_norm, feature_fusion``) so a state_dict of the reference's own
``ResidualBlock`` loads into ours with ``strict=True``.  The reference's convolutions carry a
bias, so ``conv_bias=True`` is the block default; ``create_model`` switches it off by default
(He et al. 2016 use bias-free convolutions: a bias right before BatchNorm is removed by BN's
mean subtraction and only costs memory traffic).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.models.registry import register_block

__all__ = [
    "BasicBlock",
    "register_block",
    "IdentityScaleBlock",
    "ResidualNormBlock",
    "FusionBlock",
    "SkipInitBlock",
    "ZeroGammaBlock",
    "BranchScaleBlock",
    "ReZeroBlock",
]


class BasicBlock(nn.Module):
    """He et al. basic block: ``relu(F(x) + shortcut(x))``.

    Source: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image
    Recognition", CVPR 2016 (arXiv:1512.03385), Fig. 2 / Sec. 4.2 (CIFAR).
    Subclasses change only :meth:`merge`, so every variant shares the same ``F``.
    """

    learned_scalars: Tuple[str, ...] = ()

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        conv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=conv_bias)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=conv_bias)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = downsample
        self.init_merge(out_channels)

    def init_merge(self, channels: int) -> None:
        """The merge's own parameters: a variant overrides this and ``merge``, never ``__init__``."""

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """``F(x) = BN(conv3x3(relu(BN(conv3x3(x, stride)))))``."""
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)

    def merge(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return out + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.merge(self.branch(x), self.shortcut(x)))

    def zero_init_last(self) -> None:
        """Zero the last BN's weight so the block starts as its shortcut (Goyal et al. 2017)."""
        nn.init.zeros_(self.bn2.weight)


register_block("baseline")(BasicBlock)


@register_block("identity_scale")
class IdentityScaleBlock(BasicBlock):
    """Residual scaling (reference post, section 1): ``relu(F(x) + s * shortcut(x))``.

    ``s`` is one learnable scalar, 1 at init, so the block starts as the baseline.
    Note: the reference scales the *shortcut*; the literature (SkipInit, ReZero,
    Inception-v4) scales the *branch* -- see ``skipinit`` and ``branch_scale``.
    """

    learned_scalars = ("scale",)

    def init_merge(self, channels: int) -> None:
        self.scale = nn.Parameter(torch.ones(1))

    def merge(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return out + self.scale * identity


@register_block("residual_norm")
class ResidualNormBlock(BasicBlock):
    """Residual normalization (reference post, section 2): ``relu(F(x) + BN(F(x) - shortcut(x)))``.

    The extra BN (``residual_norm``) normalises the difference between the branch and the
    shortcut.  Unlike the literature's normalised residuals, the shortcut is *subtracted*
    inside the BN and not added back un-normalised: it reaches the output only through
    the BN, which rescales it per channel with batch statistics.
    """

    def init_merge(self, channels: int) -> None:
        self.residual_norm = nn.BatchNorm2d(channels)

    def merge(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return out + self.residual_norm(out - identity)


@register_block("fusion")
class FusionBlock(BasicBlock):
    """Multi-scale feature fusion (reference post, section 3):
    ``relu(F(x) + Conv1x1(concat[F(x), shortcut(x)]))``.

    ``feature_fusion`` is a 1x1 convolution (2C -> C, with bias as in the reference).
    The shortcut reaches the output only through the learned 1x1 mixing, so at init the
    block is not an identity map: the literature's fusion blocks (e.g. DenseNet/HRNet-style
    concatenation) keep the identity path alongside.
    """

    def init_merge(self, channels: int) -> None:
        self.feature_fusion = nn.Conv2d(channels * 2, channels, 1, stride=1, padding=0)

    def merge(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return out + self.feature_fusion(torch.cat([out, identity], dim=1))


@register_block("skipinit")
class SkipInitBlock(BasicBlock):
    """SkipInit / ReZero-style gate on the branch: ``relu(shortcut(x) + a * F(x))``, ``a = 0`` at init.

    Source: S. De, S. L. Smith, "Batch Normalization Biases Residual Blocks Towards the
    Identity Function in Deep Networks", NeurIPS 2020 (arXiv:2002.10444); T. Bachlechner
    et al., "ReZero is All You Need", 2020 (arXiv:2003.04887).  The block starts as its
    shortcut, so a deep net starts shallow.  (SkipInit also drops BN; here F keeps it, so
    only the gate is ablated.)
    """

    learned_scalars = ("alpha",)

    def init_merge(self, channels: int) -> None:
        self.alpha = nn.Parameter(torch.zeros(1))

    def merge(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return identity + self.alpha * out


@register_block("zero_gamma")
class ZeroGammaBlock(BasicBlock):
    """Zero-init last BN gamma: the baseline ``relu(F(x) + shortcut(x))`` with ``bn2.weight = 0`` at init.

    Source: P. Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
    2017 (arXiv:1706.02677), Sec. 5.1.  Each block starts as its shortcut, like SkipInit,
    but with a per-channel gate (BN's gamma) instead of one scalar.
    """

    def init_merge(self, channels: int) -> None:
        self.zero_init_last()


@register_block("branch_scale")
class BranchScaleBlock(BasicBlock):
    """Fixed residual scaling of the branch: ``relu(shortcut(x) + c * F(x))``, ``c = 0.2`` (not learned).

    Source: C. Szegedy, S. Ioffe, V. Vanhoucke, A. Alemi, "Inception-v4, Inception-ResNet and
    the Impact of Residual Connections on Learning", AAAI 2017 (arXiv:1602.07261), Sec. 3.3:
    scaling residuals by 0.1-0.3 before the addition stabilised training of very wide nets.
    Pass ``branch_scale=`` to choose another constant.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        branch_scale: float = 0.2,
        **kw,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, downsample, **kw)
        if not 0.0 < branch_scale <= 1.0:
            raise ValueError(f"branch_scale must be in (0, 1], got {branch_scale}")
        self.branch_scale = float(branch_scale)

    def merge(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return identity + self.branch_scale * out


@register_block("rezero")
class ReZeroBlock(SkipInitBlock):
    """ReZero: ``shortcut(x) + a * F(x)`` with ``a = 0`` at init and *no* ReLU after the sum.

    Source: T. Bachlechner, B. P. Majumder, H. H. Mao, G. W. Cottrell, J. McAuley,
    "ReZero is All You Need: Fast Convergence at Large Depth", 2020 (arXiv:2003.04887), Eq. 3:
    ``x_{i+1} = x_i + a_i F(x_i)``.  Dropping the post-sum ReLU keeps the shortcut a pure
    identity path (the pre-activation insight of He et al. 2016b, arXiv:1603.05027).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(self.branch(x), self.shortcut(x))
