import pytest
import torch

from ablate.train.data import TRAIN_SIZES, DeviceBatches, load_dataset


def test_digits_split_is_fixed_and_balanced():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.train_x.dtype == torch.uint8 and a.train_x.shape[1:] == (1, 8, 8)
    assert len(a.train_x) + len(a.test_x) == 1797
    assert torch.equal(a.test_y, b.test_y) and torch.equal(a.train_x, b.train_x)
    assert a.num_classes == 10 and a.flip is False
    assert a.test_y.bincount().min() >= 30
    assert (
        len(a.train_x) == TRAIN_SIZES["digits"] and len(load_dataset("synthetic").train_x) == TRAIN_SIZES["synthetic"]
    )


def test_synthetic_shape():
    d = load_dataset("synthetic", n_train=64, n_test=16, shape=(3, 32, 32), num_classes=5)
    assert d.train_x.shape == (64, 3, 32, 32) and d.test_x.shape == (16, 3, 32, 32)
    assert d.num_classes == 5 and d.in_channels == 3


def test_unknown_dataset_lists_valid():
    with pytest.raises(ValueError, match="digits, synthetic, cifar10, cifar100"):
        load_dataset("imagenet")


def _batches(d, **kw):
    return DeviceBatches(d.train_x, d.train_y, 100, mean=d.mean, std=d.std, **kw)


def test_batches_cover_epoch_once_and_are_deterministic():
    d = load_dataset("synthetic", n_train=250, n_test=10)
    b = _batches(d, train=True, crop_pad=4, flip=True, seed=3)
    b.set_epoch(1)
    ys = torch.cat([y for _, y in b])
    assert len(b) == 3 and len(ys) == 250
    assert torch.equal(ys.sort().values, d.train_y.sort().values)
    first = [x for x, _ in b]
    again = [x for x, _ in b]
    assert all(torch.equal(p, q) for p, q in zip(first, again))
    b.set_epoch(2)
    assert not torch.equal(next(iter(b))[0], first[0])


def test_crop_and_flip_are_real_and_normalised():
    d = load_dataset("synthetic", n_train=200, n_test=10, shape=(3, 8, 8))
    plain = _batches(d, train=False)
    xb, _ = next(iter(plain))
    assert abs(xb.mean().item()) < 0.1 and abs(xb.std().item() - 1) < 0.1
    # Crop: with pad 2 each image is a shifted copy: zeros appear in the border.
    crop = _batches(d, train=True, crop_pad=2, seed=0)
    xc, yc = next(iter(crop))
    assert (xc == 0).any()
    # Flip only: every augmented image equals its source or its mirror.
    flip = _batches(d, train=True, flip=True, seed=0)
    flip.set_epoch(0)
    xf, yf = next(iter(flip))
    src = (d.train_x.float() - torch.tensor(d.mean).view(1, 3, 1, 1) * 255) / (
        torch.tensor(d.std).view(1, 3, 1, 1) * 255
    )
    n_flipped = 0
    for img in xf:
        same = (src - img).abs().amax(dim=(1, 2, 3)).min() < 1e-4
        mirrored = (src.flip(3) - img).abs().amax(dim=(1, 2, 3)).min() < 1e-4
        assert same or mirrored
        n_flipped += int(mirrored and not same)
    assert 20 < n_flipped < 80


def test_bad_batch_size():
    d = load_dataset("synthetic", n_train=10, n_test=10)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceBatches(d.train_x, d.train_y, 0, mean=d.mean, std=d.std, train=True)


def test_a_last_training_batch_of_one_is_dropped():
    d = load_dataset("synthetic", n_train=129, n_test=10)
    b = DeviceBatches(d.train_x, d.train_y, 64, mean=d.mean, std=d.std, train=True)
    assert [len(y) for _, y in b] == [64, 64]
    e = DeviceBatches(d.train_x, d.train_y, 64, mean=d.mean, std=d.std, train=False)
    assert [len(y) for _, y in e] == [64, 64, 1]  # evaluation keeps every image


def test_the_digits_are_scikit_learns_read_as_it_reads_them():
    """The vendor seam of ``digits_arrays``: scikit-learn's file, read as its ``load_digits`` reads it (that the
    driver then imports no scikit-learn is tests/system/test_contracts.py's, in a fresh interpreter)."""
    import numpy as np
    from sklearn.datasets import load_digits

    from ablate.train.data import digits_arrays

    images, target = digits_arrays()
    d = load_digits()
    assert images.dtype == d.images.dtype and np.array_equal(images, d.images)
    assert target.dtype == d.target.dtype and np.array_equal(target, d.target)
