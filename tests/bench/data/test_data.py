"""bench.data: data sets by name, seeded splits, channel subsets, batches."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.data.fashion_mnist
from bench.data import (
    DEFAULT_FASHION_ROOT,
    Batches,
    apply_channels,
    augment_batch,
    find_fashion_mnist,
    load_dataset,
    make_loaders,
    normalize_batch,
    parse_channels,
)
from bench.errors import DataProblem, UsageProblem


def _labels(split) -> np.ndarray:
    return split.labels.numpy()


def test_digits_shapes_and_splits():
    bundle = load_dataset("digits")
    assert (bundle.in_chans, bundle.input_size, bundle.num_classes) == (1, 32, 10)
    x, y = bundle.train[0]
    assert x.dtype == torch.uint8 and x.shape == (1, 32, 32) and isinstance(y, int)
    # 1797 images: a fixed 20 % test split, and the validation split carved from the rest.
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 1797
    assert abs(len(bundle.val) / (len(bundle.train) + len(bundle.val)) - 0.1) < 0.01
    assert set(_labels(bundle.val)) == set(range(10))  # stratified
    assert bundle.source.startswith("sklearn")


def test_splits_are_seeded_and_deterministic():
    a = load_dataset("digits", subset=300, input_size=8, seed=1)
    b = load_dataset("digits", subset=300, input_size=8, seed=1)
    c = load_dataset("digits", subset=300, input_size=8, seed=2)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert len(a.train) + len(a.val) == 300 and len(a.test) == 300
    assert np.bincount(_labels(a.train), minlength=10).min() >= 20  # stratified subset: every class


def test_normalization_comes_from_the_training_split():
    bundle = load_dataset("digits", subset=400, input_size=8)
    x = bundle.train.images.double() / 255
    assert bundle.mean[0] == pytest.approx(float(x.mean()), abs=1e-5)
    assert bundle.std[0] == pytest.approx(float(x.std()), abs=1e-4)
    batch = normalize_batch(bundle.train.images, bundle.mean, bundle.std)
    assert float(batch.mean()) == pytest.approx(0, abs=1e-3) and float(batch.std()) == pytest.approx(1, abs=1e-2)


def test_channel_modes():
    rgb = torch.arange(3, dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2) * 10  # R=0, G=10, B=20
    assert apply_channels(rgb, "GB", "select")[0, :, 0, 0].tolist() == [10, 20]
    assert apply_channels(rgb, "GB", "average")[0, :, 0, 0].tolist() == [15, 15, 15]
    assert apply_channels(rgb, "RG", "replicate")[0, :, 0, 0].tolist() == [0, 10, 0]
    assert apply_channels(rgb, "B", "zero")[0, :, 0, 0].tolist() == [0, 0, 20]
    grey = torch.full((1, 1, 2, 2), 7, dtype=torch.uint8)
    assert apply_channels(grey, "RGB")[0, :, 0, 0].tolist() == [7, 7, 7]  # grey is copied to RGB
    assert parse_channels("bg") == "GB" and parse_channels(None) is None
    with pytest.raises(UsageProblem):
        parse_channels("RX")


def test_channel_subsets_set_in_chans():
    assert load_dataset("digits", subset=100, input_size=8, channels="RG").in_chans == 2
    assert load_dataset("digits", subset=100, input_size=8, channels="R", channel_mode="average").in_chans == 3


def test_loaders_batches_augmentation_and_epochs():
    bundle = load_dataset("digits", subset=200, input_size=8)
    loaders = make_loaders(bundle, batch_size=64, augment="crop,flip", seed=3)
    x, y = next(iter(loaders.train))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    first = next(iter(loaders.train))[0]
    assert torch.equal(x, first)  # same epoch, same seed: same batch (a resumed run sees the same data)
    loaders.train.set_epoch(1)
    assert not torch.equal(x, next(iter(loaders.train))[0])
    assert sum(len(b[1]) for b in loaders.test) == len(bundle.test)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (5, 3, 8, 8), dtype=torch.uint8)
    assert augment_batch(images, ("crop", "flip"), g).shape == images.shape
    with pytest.raises(UsageProblem):
        Batches(bundle.train, 8, bundle.mean, bundle.std, augment="spin")  # no such augmentation


def test_imagefolder(synthetic_imagefolder):
    bundle = load_dataset(f"imagefolder:{synthetic_imagefolder}")
    assert bundle.class_names == ("cat", "dog", "fox")
    assert (bundle.in_chans, bundle.input_size, bundle.num_classes) == (3, 12, 3)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (108, 27, 27)
    resized = load_dataset(f"imagefolder:{synthetic_imagefolder}", input_size=16, channels="GB")
    assert resized.train[0][0].shape == (2, 16, 16)


def test_imagefolder_with_different_classes_is_an_error(mismatched_imagefolder):
    with pytest.raises(DataProblem, match="different classes"):
        load_dataset(f"imagefolder:{mismatched_imagefolder}")


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(UsageProblem, match="fashion-mnist.*digits.*cifar10.*imagefolder"):
        load_dataset("mnist-but-wrong")


def test_missing_files_say_what_and_where(tmp_path):
    with pytest.raises(DataProblem, match=rf"train-images-idx3-ubyte.*{tmp_path}"):
        load_dataset("fashion-mnist", root=tmp_path)
    with pytest.raises(DataProblem, match="cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DataProblem, match="no train/ folder"):
        load_dataset(f"imagefolder:{tmp_path}")


@pytest.mark.skipif(not Path(DEFAULT_FASHION_ROOT, "train-images-idx3-ubyte.gz").exists(),
                    reason=f"Fashion-MNIST is not installed at {DEFAULT_FASHION_ROOT} (apt install dataset-fashion-mnist)")
def test_fashion_mnist_reads_the_real_files():
    bundle = load_dataset("fashion-mnist")
    assert len(bundle.train) + len(bundle.val) == 60000 and len(bundle.test) == 10000
    assert len(bundle.val) == 6000 and bundle.train.images.shape[1:] == (1, 28, 28)
    assert bundle.class_names[0] == "T-shirt/top" and bundle.num_classes == 10
    assert np.bincount(_labels(bundle.test)).tolist() == [1000] * 10  # the published test split is balanced
    assert bundle.mean[0] == pytest.approx(0.286, abs=0.002)  # the well-known Fashion-MNIST mean
    assert bundle.source == str(DEFAULT_FASHION_ROOT)


# --------------------------------------------------------------------------- one Fashion-MNIST locator

FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file (LeCun's format: 0, 0, 0x08, ndim, big-endian dims, data), gzipped for .gz."""
    body = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)


def _tiny_fashion(folder: Path, per_class: int = 3, gz: bool = True, skip: str | None = None) -> Path:
    """The four Fashion-MNIST IDX files with `per_class` 28x28 images of each class (train and test)."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.repeat(np.arange(10), per_class)
    images = np.broadcast_to((labels * 20).reshape(-1, 1, 1), (len(labels), 28, 28))
    for stem in FASHION_FILES:
        if stem == skip:
            continue
        _write_idx(folder / (stem + (".gz" if gz else "")), images if "images" in stem else labels)
    return folder


@pytest.fixture
def no_system_fashion(tmp_path, monkeypatch):
    """Hide the installed copy and $RBENCH_DATA: only what a test builds can be found."""
    monkeypatch.delenv("RBENCH_DATA", raising=False)
    monkeypatch.setattr(bench.data.fashion_mnist, "DEFAULT_FASHION_ROOT", tmp_path / "not-installed")


@pytest.mark.parametrize("sub", ["", "fashion-mnist", "FashionMNIST/raw"])
def test_find_fashion_mnist_looks_in_the_folder_and_its_two_children(tmp_path, no_system_fashion, sub):
    folder = _tiny_fashion(tmp_path / "root" / sub, gz=sub != "fashion-mnist")  # .gz or not, both count
    assert find_fashion_mnist(tmp_path / "root") == folder
    assert find_fashion_mnist(str(tmp_path / "root")) == folder  # a str root too


def test_find_fashion_mnist_needs_all_four_files(tmp_path, no_system_fashion):
    _tiny_fashion(tmp_path / "partial", skip="t10k-labels-idx1-ubyte")
    assert find_fashion_mnist(tmp_path / "partial") is None
    assert find_fashion_mnist() is None


def test_find_fashion_mnist_search_order(tmp_path, no_system_fashion, monkeypatch):
    env = _tiny_fashion(tmp_path / "env")
    system = _tiny_fashion(tmp_path / "system")
    monkeypatch.setattr(bench.data.fashion_mnist, "DEFAULT_FASHION_ROOT", system)
    assert find_fashion_mnist() == system
    monkeypatch.setenv("RBENCH_DATA", str(env))
    assert find_fashion_mnist() == env  # $RBENCH_DATA before the Debian path
    # An explicit root is the only place searched: what it finds is what the loader will read.
    assert find_fashion_mnist(tmp_path / "empty") is None


def test_the_loader_reads_what_the_locator_finds(tmp_path, no_system_fashion, monkeypatch):
    folder = _tiny_fashion(tmp_path / "data" / "FashionMNIST" / "raw", per_class=4)
    monkeypatch.setenv("RBENCH_DATA", str(tmp_path / "data"))
    bundle = load_dataset("fashion-mnist", val_fraction=0.25)
    assert bundle.source == str(folder) == str(find_fashion_mnist())
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (30, 10, 40)
    image, label = bundle.test[0]
    assert image.shape == (1, 28, 28) and int(image[0, 0, 0]) == 20 * label
    with pytest.raises(DataProblem, match="Fashion-MNIST not found"):
        load_dataset("fashion-mnist", root=tmp_path / "data" / "elsewhere")

