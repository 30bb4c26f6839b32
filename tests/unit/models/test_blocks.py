"""Block library: the contract, the registry, and equivalence with the reference post's code."""

import pytest
import torch
import torch.nn as nn

from ablate.blocks import BLOCKS, get_block, list_blocks, register_block

REQUIRED = ["baseline", "identity_scale", "residual_norm", "fusion", "skipinit", "zero_gamma"]


# --- The oracle: the reference post's three ResidualBlock classes (shared/seed), indentation
# restored, copied verbatim; plus the He et al. baseline written in the same style.
class RefScale(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1, downsample=None):
        super(RefScale, self).__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = downsample
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += self.scale * identity
        out = self.relu(out)
        return out


class RefNorm(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1, downsample=None):
        super(RefNorm, self).__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = downsample
        self.residual_norm = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += self.residual_norm(out - identity)
        out = self.relu(out)
        return out


class RefFusion(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1, downsample=None):
        super(RefFusion, self).__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = downsample
        self.feature_fusion = nn.Conv2d(out_channels * 2, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += self.feature_fusion(torch.cat([out, identity], dim=1))
        out = self.relu(out)
        return out


class RefBasic(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


ORACLES = {"baseline": RefBasic, "identity_scale": RefScale, "residual_norm": RefNorm, "fusion": RefFusion}


def _downsample(cin, cout, stride):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


def _randomise(module):
    # Non-trivial BN statistics/affine and scalars, so a swapped term cannot hide.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.5)


@pytest.mark.parametrize("name", sorted(ORACLES))
@pytest.mark.parametrize("stride,cin,cout", [(1, 16, 16), (2, 16, 32)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_reference_state_dict_loads_strict_and_matches(name, stride, cin, cout, mode):
    torch.manual_seed(0)
    ref = ORACLES[name](cin, cout, stride, _downsample(cin, cout, stride))
    _randomise(ref)
    ours = get_block(name)(cin, cout, stride, _downsample(cin, cout, stride))
    ours.load_state_dict(ref.state_dict(), strict=True)
    getattr(ref, mode)()
    getattr(ours, mode)()
    x = torch.randn(4, cin, 8, 8)
    y_ref = ref(x.clone())
    y = ours(x.clone())
    assert y.shape == (4, cout, 8 // stride, 8 // stride)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    # Train mode updates running stats: both must have moved the same way.
    torch.testing.assert_close(ours.state_dict(), ref.state_dict())


@pytest.mark.parametrize("name", list_blocks())
@pytest.mark.parametrize("stride", [1, 2])
def test_every_block_shapes_gradients_finite(name, stride):
    torch.manual_seed(0)
    cin, cout = 8, 8 * stride
    blk = get_block(name)(cin, cout, stride, _downsample(cin, cout, stride))
    # Gated blocks start with a zero gate; open it so every parameter sees a gradient.
    with torch.no_grad():
        for n, p in blk.named_parameters():
            if n in ("alpha",) or n.endswith("bn2.weight"):
                p.fill_(0.5)
    x = torch.randn(3, cin, 8, 8, requires_grad=True)
    y = blk(x)
    assert y.shape == (3, cout, 8 // stride, 8 // stride)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for n, p in blk.named_parameters():
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n
    assert torch.isfinite(x.grad).all()


def test_required_names_registered_and_documented():
    for name in REQUIRED:
        cls = get_block(name)
        assert cls.__doc__ and ("relu(" in cls.__doc__ or "BN gamma" in cls.__doc__)
    for name in list_blocks():
        assert get_block(name).__doc__, f"{name} needs a docstring with its formula and source"


def test_unknown_block_lists_valid_names():
    with pytest.raises(ValueError) as e:
        get_block("resnet_magic")
    msg = str(e.value)
    assert "resnet_magic" in msg
    for name in REQUIRED:
        assert name in msg


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_block("baseline")(type("Dup", (nn.Module,), {}))
    assert get_block("baseline").__name__ == "BasicBlock"


def test_init_conventions():
    s = get_block("identity_scale")(8, 8)
    assert s.scale.item() == 1.0
    a = get_block("skipinit")(8, 8)
    assert a.alpha.item() == 0.0
    x = torch.relu(torch.randn(2, 8, 4, 4))
    a.eval()
    # SkipInit / zero_gamma start as the shortcut: relu(x) == x for non-negative x.
    torch.testing.assert_close(a(x), x)
    z = get_block("zero_gamma")(8, 8).eval()
    assert (z.bn2.weight == 0).all()
    torch.testing.assert_close(z(x), x)
    b = get_block("baseline")(8, 8)
    assert hasattr(b, "zero_init_last")
    b.zero_init_last()
    assert (b.bn2.weight == 0).all()


def test_registry_has_required_and_extras():
    assert set(REQUIRED) <= set(BLOCKS)
    assert len(BLOCKS) > len(REQUIRED)
