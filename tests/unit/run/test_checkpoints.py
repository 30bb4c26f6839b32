"""Careless and hostile use of the real CLI (real Ray, real files): two runs at once, failed starts, broken
checkpoints, a full disk, absurd or malicious input (signals: tests/system/test_signals.py)."""

import os

import pytest
import torch

from ablate.run.checkpoints import CheckpointLost, load_state

from helpers.cli import DEFAULT

SMALL = [DEFAULT, "blocks=[baseline]", "depths=[8]", "lrs=[0.1]", "wandb.mode=disabled"]


def test_tampered_checkpoint_is_refused_not_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"model": Evil()}, tmp_path / "state.pt")
    with pytest.raises(RuntimeError, match="refused"):
        load_state(str(tmp_path / "state.pt"))
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04")
    with pytest.raises(CheckpointLost):
        load_state(str(tmp_path / "cut.pt"))
    with pytest.raises(CheckpointLost):
        load_state(str(tmp_path / "gone.pt"))


def _alias_bomb(key):
    names = "abcdefghi"
    parts = ["&a [" + ",".join(["l"] * 9) + "]"]
    parts += [f"&{names[i]} [" + ",".join(["*" + names[i - 1]] * 9) + "]" for i in range(1, 9)]
    return f"{key}: [" + ", ".join(parts) + "]\n"


FILES = {
    "alias bomb under a valid key": (_alias_bomb("epochs"), ["'epochs'", "integer"]),
    "alias bomb in a list key": (_alias_bomb("milestones"), ["'milestones[0]'", "number"]),
    "duplicate key": ("epochs: 2\nepochs: 500\n", ["'epochs'", "twice"]),
    "binary file": (b"\x00\xff\xfe binary", ["not UTF-8"]),
    "UTF-16 file": ("epochs: 3\n".encode("utf-16"), ["not UTF-8"]),
    "huge file": ("# " + "x" * 300_000 + "\n", ["at most"]),
}

OVERRIDES = {
    "5e-4 without a dot": (["weight_decay=5e-4", "lrs=[1e-3]"], 0, "lrs: [0.001]"),
    "numeric name": (["name=2024"], 0, "experiment 2024"),
    "empty storage_path": (["storage_path="], 2, "'storage_path'"),
    "malformed list": (["depths=[20,"], 2, "depths"),
    "absurd epochs": (["epochs=1000000000"], 2, "'epochs'"),
    "negative momentum": (["momentum=-1"], 2, "'momentum'"),
}
