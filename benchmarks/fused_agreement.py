"""Do fused groups train what separate trials train?  ``fuse_trials=1`` against ``fuse_trials=4`` on the
default grid at 3 epochs, every point's final validation accuracy, the trainer called directly (no Ray).

    python benchmarks/fused_agreement.py [key=value ...]      # e.g. channels_last=false

Raw output: benchmarks/results/cpu-fused-agreement.txt (docs/benchmarks.md, "Fused groups train what
separate trials train").  Chaotic points (depth 56 at lr 0.2) differ by rounding alone, fused or not.
"""

import statistics
import sys
import time

import torch

from ablate.spec.config import trial_groups
from ablate.spec.experiment_file import load_experiment
from ablate.train import build_group, train_group
from ablate.train.data import load_dataset

torch.set_num_threads(1)
extra = sys.argv[1:]
cfg = load_experiment(None, ["epochs=3", "fuse_trials=4", "device=cpu", *extra])
data = load_dataset(cfg.dataset)
t0 = time.time()
diffs, rows = [], []
for g in trial_groups(cfg):
    cfgs = [c.model_copy(update={"threads": 1}) for c in g]
    alone = [train_group(build_group([c], data))[0]["history"][-1]["val_acc"] for c in cfgs]
    fused = [o["history"][-1]["val_acc"] for o in train_group(build_group(cfgs, data))]
    for c, a, f in zip(cfgs, alone, fused):
        diffs.append(100 * (f - a))
        rows.append((c.name, round(100 * a, 1), round(100 * f, 1)))
        print(c.name, round(100 * a, 1), round(100 * f, 1), flush=True)
print(
    f"points {len(diffs)}; mean |fused - alone| {statistics.fmean(map(abs, diffs)):.2f} points; mean signed "
    f"{statistics.fmean(diffs):+.2f}; median |d| {statistics.median(map(abs, diffs)):.2f}; "
    f"wall {time.time() - t0:.0f} s",
    flush=True,
)
