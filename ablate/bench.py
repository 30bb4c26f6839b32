"""``python -m ablate.bench``: ablate's trainer against the tutorial loop, side by side in one run.

(a) the tutorial loop: torchvision's real ``CIFAR10`` dataset class (over synthetic CIFAR-format
    files, since nothing is downloaded here) + ``DataLoader`` + CPU transforms, fp32, ``.item()``
    every step;
(b) ``ablate.train.train`` on the same number of CIFAR-shaped images, same model and batch size.
Both report training images/s as the median over epochs after a warm-up epoch.  With ``--packing``
(GPU) k trainer processes share one GPU and their aggregate images/s is reported; with ``--fused``
K members train as one fused model (``ablate.fused``), aggregate images/s against K = 1.
No Ray here: the GPU machine has none.  Results print as JSON lines and a summary table.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import platform
import statistics
import tempfile
import time
from typing import Dict, List

import numpy as np
import torch

from .data import load_dataset
from .train import TrainConfig, train


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}, torch {torch.__version__}"


def _write_fake_cifar(root: str, n: int, seed: int = 0) -> None:
    """Synthetic data in CIFAR-10's on-disk format, so torchvision's own CIFAR10 class reads it."""
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    with open(os.path.join(d, "data_batch_1"), "wb") as f:
        pickle.dump({"data": data, "labels": labels}, f)
    with open(os.path.join(d, "test_batch"), "wb") as f:
        pickle.dump({"data": data[:16], "labels": labels[:16]}, f)
    with open(os.path.join(d, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)


def tutorial_loop(depth: int, batch_size: int, n_images: int, epochs: int, workers: int,
                  block: str = "baseline") -> List[float]:
    """The PyTorch CIFAR tutorial's loop; images/s per epoch."""
    import torchvision
    import torchvision.transforms as T

    from .models import create_model

    class FakeCIFAR10(torchvision.datasets.CIFAR10):
        train_list = [["data_batch_1", None]]
        test_list = [["test_batch", None]]
        meta = {"filename": "batches.meta", "key": "label_names", "md5": None}

        def _check_integrity(self) -> bool:  # our synthetic files have no published md5
            return True

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tmp = tempfile.mkdtemp(prefix="ablate-bench-")
    _write_fake_cifar(tmp, n_images)
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
    ds = FakeCIFAR10(tmp, train=True, transform=tf, download=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = create_model(block, depth, 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    crit = torch.nn.CrossEntropyLoss()
    rates = []
    for _ in range(epochs):
        model.train()
        t0, seen, running = time.perf_counter(), 0, 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            opt.step()
            running += loss.item()  # the tutorial's running loss: one sync per step
            seen += x.shape[0]
        rates.append(seen / (time.perf_counter() - t0))
    return rates


def _synthetic(n_images: int, dataset: str = "synthetic"):
    """CIFAR-shaped synthetic data (``n_images``), or the default grid's own data set, digits."""
    if dataset == "digits":
        return load_dataset("digits")
    return load_dataset("synthetic", n_train=n_images, n_test=1024, shape=(3, 32, 32))


def _bench_cfg(depth: int, batch_size: int, epochs: int, block: str, lr: float = 0.05, seed: int = 0,
               dataset: str = "synthetic", **overrides) -> TrainConfig:
    # diverge_factor: the largest allowed; random labels must never count as diverged.
    return TrainConfig(dataset=dataset, block=block, depth=depth, batch_size=batch_size, epochs=epochs,
                       lr=lr, seed=seed, schedule="cosine", diverge_factor=1e6, **overrides)


def trainer_rates(depth: int, batch_size: int, n_images: int, epochs: int, block: str = "baseline",
                  **overrides) -> List[float]:
    """ablate's trainer on CIFAR-shaped synthetic data; training images/s per epoch."""
    cfg = _bench_cfg(depth, batch_size, epochs, block, **overrides)
    return [h["images_per_second"] for h in train(cfg, _synthetic(n_images, cfg.dataset))["history"]]


def fused_rates(depth: int, batch_size: int, n_images: int, epochs: int, k: int, block: str = "baseline",
                **overrides) -> List[float]:
    """``k`` members (distinct LRs and seeds) fused into one model (``ablate.fused``); aggregate
    training images/s per epoch."""
    from .train import build_group, train_group

    cfgs = [_bench_cfg(depth, batch_size, epochs, block, lr=0.05 * (1 + i / k), seed=i, **overrides)
            for i in range(k)]
    hist = train_group(build_group(cfgs, _synthetic(n_images, cfgs[0].dataset)))[0]["history"]
    return [k * h["images_per_second"] for h in hist]


def _median_after_warmup(rates: List[float]) -> float:
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def _packed_worker(args) -> float:
    depth, batch_size, n_images, epochs, overrides, barrier = args
    barrier.wait()  # start together, so the epochs we time overlap
    return _median_after_warmup(trainer_rates(depth, batch_size, n_images, epochs, **overrides))


def packing(k: int, depth: int, batch_size: int, n_images: int, epochs: int, overrides: Dict) -> Dict:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as m:
        barrier = m.Barrier(k)
        with ctx.Pool(k) as pool:
            rates = pool.map(_packed_worker, [(depth, batch_size, n_images, epochs, overrides, barrier)] * k)
    return {"k": k, "total_img_s": sum(rates), "per_proc": statistics.median(rates)}


def grid_overhead(exp_dir: str) -> Dict:
    """Ray's (and W&B's) overhead: the grid's wall against summed training time / concurrency."""
    with open(os.path.join(exp_dir, "grid_timing.json")) as f:
        t = json.load(f)
    ideal = t["train_seconds"] / t["concurrency"]
    return {"what": "grid_overhead", "wall_s": t["wall_s"], "train_seconds": t["train_seconds"],
            "concurrency": t["concurrency"], "ideal_wall_s": ideal,
            "overhead_fraction": (t["wall_s"] - ideal) / t["wall_s"], "hardware": hardware()}


def main(argv=None) -> int:
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
    p.add_argument("--dataset", default="synthetic", choices=["synthetic", "digits"],
                   help="the trainer's data: CIFAR-shaped synthetic images, or the default grid's digits (8x8)")
    p.add_argument("--out", default=None, help="append JSON lines here")
    p.add_argument("--grid", default=None, metavar="EXPERIMENT_DIR",
                   help="instead: Ray's overhead of a finished grid (wall vs training time / concurrency)")
    p.add_argument("--bookkeeping", default=None, metavar="NxE[,NxE]",
                   help="instead: time --resume --dry-run, --resume and the report's rebuild on synthetic finished "
                        "studies of N trials x E epochs (ablate/bench_bookkeeping.py)")
    p.add_argument("--baseline-src", default=None, metavar="DIR",
                   help="--bookkeeping: also time the same commands by the ablate checked out in DIR, side by side")
    args = p.parse_args(argv)
    if args.bookkeeping:
        from .bench_bookkeeping import main_bookkeeping

        with open(args.out, "a") if args.out else open(os.devnull, "w") as out:
            main_bookkeeping(args.bookkeeping, out, args.baseline_src)
        return 0
    if args.grid:
        print(json.dumps(grid_overhead(args.grid)))
        return 0
    cuda = torch.cuda.is_available()
    n = args.images or (25_600 if cuda else 2048)
    workers = args.workers if args.workers is not None else (8 if cuda else 2)
    variants = {
        "default": {}, "fp32": {"precision": "fp32", "channels_last": False},
        "fp32cl": {"precision": "fp32", "channels_last": True}, "bf16": {"precision": "bf16", "channels_last": False},
        "bf16cl": {"precision": "bf16", "channels_last": True}, "compile": {"compile": True, "compile_mode": "default"}, "eager": {"compile": False},
        "cudagraphs": {"compile": True, "compile_mode": "reduce-overhead", "precision": "bf16"},
        "fp32cl_cudagraphs": {"compile": True, "compile_mode": "reduce-overhead", "precision": "fp32",
                              "channels_last": True},
        "threads1": {"threads": 1}, "threads1cl": {"threads": 1, "channels_last": True},
        "threads2": {"threads": 2},
    }
    variants = {k: {**v, "dataset": args.dataset} for k, v in variants.items()}
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
            emit({"what": f"trainer:{name}", "depth": depth, "img_s": med, "rates": rates,
                  "vs_tutorial": med / ref if ref else None})
        for name in args.fused_variants.split(",") if args.fused else []:
            # Unfused, the same variant, in this run: a trial at a time is K trials' aggregate too.
            unfused = measured.get(name) or _median_after_warmup(
                trainer_rates(depth, args.batch_size, n, args.epochs, **variants[name]))
            for k in [int(x) for x in args.fused.split(",")]:
                rates = fused_rates(depth, args.batch_size, n, args.epochs, k, **variants[name])
                med = _median_after_warmup(rates)
                emit({"what": f"fused:{k}:{name}", "depth": depth, "img_s": med, "rates": rates, "k": k,
                      "unfused_img_s": unfused, "vs_unfused": med / unfused,
                      "vs_tutorial": med / ref if ref else None})
        for k in [int(x) for x in args.packing.split(",") if x]:
            r = packing(k, depth, args.batch_size, n, args.epochs, variants[args.pack_variant])
            emit({"what": f"packed:{k}:{args.pack_variant}", "depth": depth, "img_s": r["total_img_s"], "per_proc": r["per_proc"],
                  "vs_tutorial": r["total_img_s"] / ref if ref else None})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
