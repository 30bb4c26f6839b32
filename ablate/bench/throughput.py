"""ablate's trainer against the tutorial loop, side by side in one run (``python -m ablate.bench``).

(a) the tutorial loop: torchvision's real ``CIFAR10`` dataset class (over synthetic CIFAR-format
    files, since nothing is downloaded here) + ``DataLoader`` + CPU transforms, fp32, ``.item()``
    every step;
(b) ``ablate.train.train`` on the same number of CIFAR-shaped images, same model and batch size.
Both report training images/s as the median over epochs after a warm-up epoch.  With ``--packing``
(GPU) k trainer processes share one GPU and their aggregate images/s is reported; with ``--fused``
K members train as one fused model (``ablate.train.fused``), aggregate images/s against K = 1.
No Ray here: the GPU machine has none.  Results print as JSON lines and a summary table.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import statistics
import tempfile
import time
from typing import Dict, List

import numpy as np
import torch

from ablate.bench.hardware import hardware
from ablate.models.resnet import create_model
from ablate.spec.trial import TrainConfig
from ablate.train.data import load_dataset
from ablate.train.loop import build_group, train, train_group


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


def tutorial_loop(
    depth: int, batch_size: int, n_images: int, epochs: int, workers: int, block: str = "baseline"
) -> List[float]:
    """The PyTorch CIFAR tutorial's loop; images/s per epoch."""
    import torchvision  # the tutorial loop's own data pipeline, only where it is measured
    import torchvision.transforms as T

    class FakeCIFAR10(torchvision.datasets.CIFAR10):
        train_list = [["data_batch_1", None]]
        test_list = [["test_batch", None]]
        meta = {"filename": "batches.meta", "key": "label_names", "md5": None}

        def _check_integrity(self) -> bool:  # our synthetic files have no published md5
            return True

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tmp = tempfile.mkdtemp(prefix="ablate-bench-")
    _write_fake_cifar(tmp, n_images)
    tf = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        ]
    )
    ds = FakeCIFAR10(tmp, train=True, transform=tf, download=False)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
    )
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


def _bench_cfg(
    depth: int,
    batch_size: int,
    epochs: int,
    block: str,
    lr: float = 0.05,
    seed: int = 0,
    dataset: str = "synthetic",
    **overrides,
) -> TrainConfig:
    # diverge_factor: the largest allowed; random labels must never count as diverged.
    return TrainConfig(
        dataset=dataset,
        block=block,
        depth=depth,
        batch_size=batch_size,
        epochs=epochs,
        lr=lr,
        seed=seed,
        schedule="cosine",
        diverge_factor=1e6,
        **overrides,
    )


def trainer_rates(
    depth: int, batch_size: int, n_images: int, epochs: int, block: str = "baseline", **overrides
) -> List[float]:
    """ablate's trainer on CIFAR-shaped synthetic data; training images/s per epoch."""
    cfg = _bench_cfg(depth, batch_size, epochs, block, **overrides)
    return [h["images_per_second"] for h in train(cfg, _synthetic(n_images, cfg.dataset))["history"]]


def fused_rates(
    depth: int, batch_size: int, n_images: int, epochs: int, k: int, block: str = "baseline", **overrides
) -> List[float]:
    """``k`` members (distinct LRs and seeds) fused into one model (``ablate.train.fused``); aggregate
    training images/s per epoch."""
    cfgs = [_bench_cfg(depth, batch_size, epochs, block, lr=0.05 * (1 + i / k), seed=i, **overrides) for i in range(k)]
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
    return {
        "what": "grid_overhead",
        "wall_s": t["wall_s"],
        "train_seconds": t["train_seconds"],
        "concurrency": t["concurrency"],
        "ideal_wall_s": ideal,
        "overhead_fraction": (t["wall_s"] - ideal) / t["wall_s"],
        "hardware": hardware(),
    }
