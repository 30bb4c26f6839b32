"""``python -m ablate.bench``: the measurements of docs/benchmarks.md, each printed as JSON lines (and appended to
``--out``): the trainer against the tutorial loop (``throughput``), Ray's overhead of a finished grid, and what
the bookkeeping costs at scale (``bookkeeping``)."""

from __future__ import annotations

import argparse
import json
import os

import torch

from ablate.bench.bookkeeping import main_bookkeeping
from ablate.bench.hardware import hardware
from ablate.bench.throughput import (
    _median_after_warmup,
    fused_rates,
    grid_overhead,
    packing,
    trainer_rates,
    tutorial_loop,
)

__all__ = ["main", "VARIANTS"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablate.bench", description=__doc__.splitlines()[0])
    p.add_argument("--depths", default="20", help="comma-separated, e.g. 20,56")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=None, help="images per epoch (default: 2048 CPU, 25600 GPU)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per measurement; the first is warm-up")
    p.add_argument("--workers", type=int, default=None, help="tutorial DataLoader workers (default 2 CPU, 8 GPU)")
    p.add_argument("--variants", default="default", help="trainer variants: default,fp32,bf16,bf16cl,compile,...")
    p.add_argument("--packing", default="", help="GPU: comma-separated process counts, e.g. 1,2,4,8")
    p.add_argument("--skip-tutorial", action="store_true")
    p.add_argument("--pack-variant", default="default", help="trainer variant the packed processes run")
    p.add_argument("--fused", default="", help="comma-separated member counts K of fused trials, e.g. 1,2,4,8,16")
    p.add_argument("--fused-variants", default="default", help="trainer variants the fused trials run")
    p.add_argument(
        "--dataset",
        default="synthetic",
        choices=["synthetic", "digits"],
        help="the trainer's data: CIFAR-shaped synthetic images, or the default grid's digits (8x8)",
    )
    p.add_argument("--out", default=None, help="append JSON lines here")
    p.add_argument(
        "--grid",
        default=None,
        metavar="EXPERIMENT_DIR",
        help="instead: Ray's overhead of a finished grid (wall vs training time / concurrency)",
    )
    p.add_argument(
        "--bookkeeping",
        default=None,
        metavar="NxE[,NxE]",
        help="instead: time --resume --dry-run, --resume and the report's rebuild on synthetic finished "
        "studies of N trials x E epochs (ablate/bench/bookkeeping.py)",
    )
    p.add_argument(
        "--baseline-src",
        default=None,
        metavar="DIR",
        help="--bookkeeping: also time the same commands by the ablate checked out in DIR, side by side",
    )
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.bookkeeping:
        with open(args.out, "a") if args.out else open(os.devnull, "w") as out:
            main_bookkeeping(args.bookkeeping, out, args.baseline_src)
        return 0
    if args.grid:
        print(json.dumps(grid_overhead(args.grid)))
        return 0
    return _throughput(args)


# The trainer's variants a measurement may name (--variants, --fused-variants, --pack-variant).
VARIANTS = {
    "default": {},
    "fp32": {"precision": "fp32", "channels_last": False},
    "fp32cl": {"precision": "fp32", "channels_last": True},
    "bf16": {"precision": "bf16", "channels_last": False},
    "bf16cl": {"precision": "bf16", "channels_last": True},
    "compile": {"compile": True, "compile_mode": "default"},
    "eager": {"compile": False},
    "cudagraphs": {"compile": True, "compile_mode": "reduce-overhead", "precision": "bf16"},
    "fp32cl_cudagraphs": {
        "compile": True,
        "compile_mode": "reduce-overhead",
        "precision": "fp32",
        "channels_last": True,
    },
    "threads1": {"threads": 1},
    "threads1cl": {"threads": 1, "channels_last": True},
    "threads2": {"threads": 2},
}


def _throughput(args: argparse.Namespace) -> int:
    """The tutorial loop, the trainer's variants, fused groups and packed processes, per depth, side by side."""
    cuda = torch.cuda.is_available()
    n = args.images or (25_600 if cuda else 2048)
    workers = args.workers if args.workers is not None else (8 if cuda else 2)
    variants = {k: {**v, "dataset": args.dataset} for k, v in VARIANTS.items()}
    out = open(args.out, "a") if args.out else None

    def emit(rec):
        rec.update(hardware=hardware(), batch_size=args.batch_size, images=n, dataset=args.dataset)
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    for depth in [int(d) for d in args.depths.split(",")]:
        ref = None
        if not args.skip_tutorial:
            rates = tutorial_loop(depth, args.batch_size, n, args.epochs, workers)
            ref = _median_after_warmup(rates)
            emit({"what": "tutorial", "depth": depth, "img_s": ref, "rates": rates, "workers": workers})
        measured = {}
        for name in [v for v in args.variants.split(",") if v]:
            rates = trainer_rates(depth, args.batch_size, n, args.epochs, **variants[name])
            med = measured[name] = _median_after_warmup(rates)
            emit(
                {
                    "what": f"trainer:{name}",
                    "depth": depth,
                    "img_s": med,
                    "rates": rates,
                    "vs_tutorial": med / ref if ref else None,
                }
            )
        for name in args.fused_variants.split(",") if args.fused else []:
            # Unfused, the same variant, in this run: a trial at a time is K trials' aggregate too.
            unfused = measured.get(name) or _median_after_warmup(
                trainer_rates(depth, args.batch_size, n, args.epochs, **variants[name])
            )
            for k in [int(x) for x in args.fused.split(",")]:
                rates = fused_rates(depth, args.batch_size, n, args.epochs, k, **variants[name])
                med = _median_after_warmup(rates)
                emit(
                    {
                        "what": f"fused:{k}:{name}",
                        "depth": depth,
                        "img_s": med,
                        "rates": rates,
                        "k": k,
                        "unfused_img_s": unfused,
                        "vs_unfused": med / unfused,
                        "vs_tutorial": med / ref if ref else None,
                    }
                )
        for k in [int(x) for x in args.packing.split(",") if x]:
            r = packing(k, depth, args.batch_size, n, args.epochs, variants[args.pack_variant])
            emit(
                {
                    "what": f"packed:{k}:{args.pack_variant}",
                    "depth": depth,
                    "img_s": r["total_img_s"],
                    "per_proc": r["per_proc"],
                    "vs_tutorial": r["total_img_s"] / ref if ref else None,
                }
            )
    return 0
