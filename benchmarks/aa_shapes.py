"""What paired differences look like when nothing differs: the A/A study's shapes (docs/benchmarks.md).

Run the A/A grid (baseline against ``aa_copy``, a registered copy that differs only in its initial random
stream: benchmarks/aa_blocks.py), then this script on its trials.csv:

    cd benchmarks && python -m ablate.grid blocks=[baseline,aa_copy] block_modules=[aa_blocks] depths=[8,56] \\
        lrs=[0.05,0.2] 'seeds=[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]' wandb.mode=disabled storage_path=/tmp/aa name=aa
    python benchmarks/aa_shapes.py /tmp/aa/aa/trials.csv [--differences tests/fixtures/aa_differences.csv]

Per depth x lr cell and metric: the paired differences' mean, sd, skewness, excess kurtosis and the share of
far-off runs (more than 3 scaled MADs from the median), in accuracy points; ``--differences`` writes them
(the simulation test in tests/unit/analysis/test_sequential.py resamples them as the "A/A" shape).
"""

import argparse

import numpy as np
import pandas as pd
from scipy import stats


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("trials")
    p.add_argument("--differences")
    args = p.parse_args()
    t = pd.read_csv(args.trials)
    rows = []
    for metric in ("final_val_acc", "auc_val_acc"):
        for (depth, lr), g in t.groupby(["depth", "lr"]):
            a = g[g.block == "aa_copy"].set_index("seed")[metric]
            b = g[g.block == "baseline"].set_index("seed")[metric]
            d = ((a - b).dropna() * 100).sort_index()
            med, mad = np.median(d), stats.median_abs_deviation(d, scale="normal")
            far = float((np.abs(d - med) > 3 * mad).mean()) if mad > 0 else 0.0
            print(
                f"{metric:14s} d{depth:<3d} lr {lr:<5g} n={len(d):2d}  mean {d.mean():+6.2f}  sd {d.std(ddof=1):5.2f}"
                f"  skew {stats.skew(d):+5.2f}  excess kurtosis {stats.kurtosis(d):+5.2f}  far-off {far:4.0%}"
                f"  range [{d.min():+.1f}, {d.max():+.1f}]  baseline {100 * b.mean():.1f} +- {100 * b.std():.1f}"
            )
            rows += [
                {"metric": metric, "depth": depth, "lr": lr, "seed": int(s), "difference_points": float(v)}
                for s, v in d.items()
            ]
    if args.differences:
        pd.DataFrame(rows).to_csv(args.differences, index=False)


if __name__ == "__main__":
    main()
