import pytest
import torch

from ablate import create_model, list_blocks, valid_depth

# He et al. 2016, Table 6 (option A shortcuts): 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
HE_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}


@pytest.mark.parametrize("depth,count", sorted(HE_PARAMS.items()))
def test_option_a_parameter_counts_match_he_et_al(depth, count):
    m = create_model("baseline", depth, 10, shortcut="A")
    n = sum(p.numel() for p in m.parameters())
    assert n == count
    paper = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}[depth]
    assert round(n / 1e6, 2 if depth < 110 else 1) == paper


@pytest.mark.parametrize("depth", [0, 7, 19, 21, 100, -4, "20", 20.0])
def test_invalid_depth_names_valid_ones(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        create_model("baseline", depth, 10)


def test_valid_depth():
    assert [d for d in range(0, 60) if valid_depth(d)] == [8, 14, 20, 26, 32, 38, 44, 50, 56]


@pytest.mark.parametrize("block", list_blocks())
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_every_block_builds_a_model(block, shortcut):
    torch.manual_seed(0)
    m = create_model(block, 8, 7, in_channels=1, shortcut=shortcut)
    y = m(torch.randn(2, 1, 8, 8))
    assert y.shape == (2, 7)
    assert torch.isfinite(y).all()
    y.sum().backward()


def test_structure_widths_strides_and_zero_init_hook():
    m = create_model("baseline", 20, 10, zero_init_last=True)
    assert [len(s) for s in m.stages()] == [3, 3, 3]
    assert m.layer2[0].conv1.stride == (2, 2) and m.layer3[0].conv1.stride == (2, 2)
    assert m.layer1[0].downsample is None and m.layer2[0].downsample is not None
    assert all((blk.bn2.weight == 0).all() for s in m.stages() for blk in s)
    assert m.fc.in_features == 64


def test_option_b_projection_and_bad_shortcut():
    m = create_model("baseline", 20, 10, shortcut="B")
    assert isinstance(m.layer2[0].downsample[0], torch.nn.Conv2d)
    with pytest.raises(ValueError, match="shortcut"):
        create_model("baseline", 20, 10, shortcut="C")


def test_learned_scalars_reported_per_stage():
    m = create_model("identity_scale", 20, 10)
    assert m.learned_scalars() == {"scale_stage1": 1.0, "scale_stage2": 1.0, "scale_stage3": 1.0}
    assert create_model("baseline", 20, 10).learned_scalars() == {}
