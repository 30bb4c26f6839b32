"""Datasets as tensors, and a device-resident batch iterator with batched augmentation.

Every dataset is returned as uint8 NCHW images plus int64 labels and the per-channel
normalisation, so a whole CIFAR train set is 150 MB (not 600 MB of float32), moves to the GPU
once, and is shared between Ray trials through the object store.  Augmentation (pad-and-crop,
horizontal flip; He et al. 2016, Sec. 4.2) runs on the device for a whole batch at once, with
no per-sample Python (airbench style).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Iterator, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ablate.errors import UsageError, first_line
from ablate.spec.settings import (  # the facts, declared without torch
    AUGMENT,
    CLASSES,
    DATASETS,
    IMAGE_SHAPES,
    TRAIN_SIZES,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "DeviceBatches",
    "check_dataset_name",
    "TRAIN_SIZES",
    "IMAGE_SHAPES",
    "CLASSES",
    "AUGMENT",
]


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8, N x C x H x W
    train_y: torch.Tensor  # int64, N
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: Tuple[float, ...]  # per channel, in [0, 1] units
    std: Tuple[float, ...]
    # Augmentation that suits the data (AUGMENT).
    crop_pad: int = 4
    flip: bool = True

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])


def check_dataset_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")


def _stats(x: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    xf = x.float().div_(255)
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


# scikit-learn's copy of the digits, a file of its package (one row per image: 64 pixels in 0..16, then the
# label), read without importing scikit-learn: the import costs 2.5 s of every grid's start on a 2-core
# machine (measured 2026-12-08), the file 0.02 s.  A vendor seam: tests/unit/train/test_data.py checks it
# against ``sklearn.datasets.load_digits`` and the fallback below takes over where the file has moved.
_DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


def digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """The digits as scikit-learn's ``load_digits`` gives them: images (1797 x 8 x 8, float, 0..16), labels."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    if spec is not None and spec.origin is not None:
        path = os.path.join(os.path.dirname(spec.origin), *_DIGITS_FILE)
        if os.path.exists(path):
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits  # the file moved: scikit-learn's own loader

    d = load_digits()
    return d.images, d.target


def _digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes): the offline default."""
    images, target = digits_arrays()
    x = torch.from_numpy((images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(target.astype(np.int64))
    # A fixed, seeded, class-balanced split, the same on every machine.
    g = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:k])
        train_idx.append(idx[k:])
    tr, te = torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values
    mean, std = _stats(x[tr])
    return Dataset(
        "digits",
        x[tr].contiguous(),
        y[tr].contiguous(),
        x[te].contiguous(),
        y[te].contiguous(),
        10,
        mean,
        std,
        *AUGMENT["digits"],
    )


def _synthetic(
    n_train: int = TRAIN_SIZES["synthetic"],
    n_test: int = 512,
    shape: Tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    seed: int = 0,
) -> Dataset:
    """Random CIFAR-shaped tensors (for tests and benchmarks; nothing to learn)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_test, *shape), dtype=torch.uint8, generator=g)
    y = torch.randint(0, num_classes, (n_train + n_test,), generator=g)
    c = shape[0]
    return Dataset(
        "synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes, (0.5,) * c, (0.289,) * c
    )


# Published CIFAR channel statistics (train split), so no pass over the data is needed.
_CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _cifar(name: str, data_dir: str, download: bool = True) -> Dataset:
    import torchvision  # only for CIFAR (a slow import)
    from filelock import FileLock

    os.makedirs(data_dir, exist_ok=True)
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    # Several trials (or nodes sharing a file system) may start at once: one downloads.
    with FileLock(os.path.join(data_dir, f".{name}.lock")):
        tr = cls(data_dir, train=True, download=download)
        te = cls(data_dir, train=False, download=download)

    def to_t(ds) -> Tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    (xtr, ytr), (xte, yte) = to_t(tr), to_t(te)
    mean, std = _CIFAR_STATS[name]
    return Dataset(name, xtr, ytr, xte, yte, 10 if name == "cifar10" else 100, mean, std)


def load_dataset(name: str, data_dir: str = "data", **synthetic_kwargs) -> Dataset:
    """Load a dataset by name: ``digits``, ``synthetic``, ``cifar10``, ``cifar100``."""
    check_dataset_name(name)
    if name == "digits":
        return _digits()
    if name == "synthetic":
        return _synthetic(**synthetic_kwargs)
    return _cifar(name, data_dir)


def load_experiment_data(name: str, data_dir: str) -> Dataset:
    """``load_dataset`` for a grid's driver: a data set that cannot be loaded is one line (exit 2)."""
    try:
        return load_dataset(name, data_dir)
    except Exception as e:
        raise UsageError(
            f"key 'dataset': {name!r} could not be loaded from {os.path.abspath(data_dir)} "
            f"({e.__class__.__name__}: {first_line(e)})"
        ) from None


class DeviceBatches:
    """Batches from tensors held on the training device, shuffled and augmented in batch.

    One epoch = one ``torch.randperm`` and, per batch, one gather for the random crop and one
    ``where`` for the flip, all on the device.  Deterministic for ``(seed, epoch)``: each epoch
    draws from its own generator, so a resumed run sees the same batches as an uninterrupted one.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        mean,
        std,
        train: bool,
        crop_pad: int = 0,
        flip: bool = False,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.x, self.y = x, y
        self.device = x.device
        self.batch_size, self.train = batch_size, train
        self.crop_pad, self.flip, self.seed = (crop_pad, flip, seed) if train else (0, False, seed)
        self.channels_last = channels_last
        c = x.shape[1]
        self.mean = torch.tensor(mean, device=self.device, dtype=torch.float32).view(1, c, 1, 1) * 255
        self.inv_std = 1.0 / (torch.tensor(std, device=self.device, dtype=torch.float32).view(1, c, 1, 1) * 255)
        self.epoch = 0

    def __len__(self) -> int:
        n = self.x.shape[0]
        # A last training batch of one image would break BatchNorm's batch statistics: drop it.
        drop = self.train and n % self.batch_size == 1
        return n // self.batch_size if drop else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed * 100_003 + self.epoch)
        return g

    def _augment(self, xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, c, h, w = xb.shape
        p = self.crop_pad
        if p > 0:
            padded = F.pad(xb, (p, p, p, p))  # zero padding, as He et al.
            dy = torch.randint(0, 2 * p + 1, (n,), device=self.device, generator=g)
            dx = torch.randint(0, 2 * p + 1, (n,), device=self.device, generator=g)
            rows = (dy[:, None] + torch.arange(h, device=self.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w, device=self.device))[:, None, None, :]
            bidx = torch.arange(n, device=self.device)[:, None, None, None]
            cidx = torch.arange(c, device=self.device)[None, :, None, None]
            xb = padded[bidx, cidx, rows, cols]
        if self.flip:
            mask = torch.rand(n, device=self.device, generator=g) < 0.5
            xb = torch.where(mask[:, None, None, None], xb.flip(3), xb)
        return xb

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        g = self._generator()
        order = torch.randperm(n, device=self.device, generator=g) if self.train else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            if order is not None:
                idx = order[sl]
                xb, yb = self.x[idx], self.y[idx]
            else:
                xb, yb = self.x[sl], self.y[sl]
            # Normalise first, then pad with zeros: He et al. pad the normalised image.
            xb = (xb.float() - self.mean) * self.inv_std
            if self.train:
                xb = self._augment(xb, g)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb
