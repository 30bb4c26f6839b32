"""The recipe's parts (``ablate.train.recipe``): weight decay keyed on the gates a block declares, in a plain and a
fused run alike; one evaluation for one member and for several."""

import pytest
import torch
import torch.nn as nn

from ablate.blocks import BLOCKS, BasicBlock, register_block
from ablate.spec.trial import TrainConfig
from ablate.train import build_group, train_group
from ablate.train.data import load_dataset
from ablate.train.fused import FusedRun
from ablate.train.recipe import evaluate, param_groups, val_batches

DIGITS = load_dataset("digits")


class ChannelGateBlock(BasicBlock):
    """A per-channel gate it declares (``gate``) and a per-channel weight it does not (``other``); neither
    gets a gradient (each enters the output times 0), so only weight decay can move them."""

    learned_scalars = ("gate",)

    def init_merge(self, channels: int) -> None:
        self.gate = nn.Parameter(torch.ones(channels))
        self.other = nn.Parameter(torch.ones(channels))

    def merge(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return out + identity + 0.0 * (self.gate.sum() + self.other.sum())


@pytest.fixture
def channel_gate_block():
    """Registered for the test only: the registry is the process's, and other tests count its blocks."""
    register_block("test_channel_gate")(ChannelGateBlock)
    yield
    BLOCKS.pop("test_channel_gate")


def _cfgs(k):
    return [
        TrainConfig(
            dataset="digits",
            block="test_channel_gate",
            depth=8,
            epochs=1,
            lr=0.1 + 0.05 * i,
            seed=i,
            weight_decay=0.1,
            batch_size=128,
            threads=1,
            device="cpu",
        )
        for i in range(k)
    ]


def _values(model, name):
    return torch.cat([p.detach().reshape(-1) for n, p in model.named_parameters() if n.endswith(name)])


def test_a_declared_per_channel_gate_gets_no_weight_decay_in_plain_and_fused_runs(channel_gate_block):
    block = ChannelGateBlock(4, 4)
    decay, gates = param_groups(block, 0.1)
    assert gates["params"] == [block.gate] and gates["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert any(p is block.other for p in decay["params"]) and len(decay["params"]) == len(list(block.parameters())) - 1
    plain = build_group(_cfgs(1), DIGITS)
    fused = build_group(_cfgs(3), DIGITS)
    assert type(plain).__name__ == "SequentialGroup" and isinstance(fused, FusedRun)
    train_group(plain), train_group(fused)
    for model in [plain.runs[0].model, *fused.members]:
        assert torch.equal(_values(model, ".gate"), torch.ones_like(_values(model, ".gate")))  # declared: no decay
        assert (_values(model, ".other") < 1).all()  # undeclared, the same shape: decayed, as every weight


def test_one_evaluation_for_one_member_and_for_several():
    cfg = _cfgs(1)[0]
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    batches = val_batches(cfg, DIGITS)
    (loss,), (acc,) = evaluate(model, batches, torch.autocast("cpu", enabled=False))
    losses, accs = evaluate(
        lambda x: torch.stack([model(x), model(x)]), batches, torch.autocast("cpu", enabled=False), k=2
    )
    assert losses == [loss, loss] and accs == [acc, acc] and 0 <= acc <= 1
