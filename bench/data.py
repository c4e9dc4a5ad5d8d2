"""Data sets by name, held as uint8 image tensors, with seeded splits and batch-level augmentation.

    >>> bundle = load_dataset("digits", subset=600, input_size=16)
    >>> loaders = make_loaders(bundle, batch_size=64, augment=("crop", "flip"))
    >>> for images, labels in loaders.train: ...   # float32 NCHW, normalized

Names (`DATASETS`):
- `fashion-mnist`: the real 60k/10k Fashion-MNIST, read from IDX files (`.gz` or not) in `root`,
  else `$RBENCH_DATA` (the folder itself or its `fashion-mnist/` / `FashionMNIST/raw/` child),
  else `/usr/share/datasets/fashion-mnist/` (Debian package `dataset-fashion-mnist`). Only
  `download=True` reaches the network (torchvision's downloader, into `root` or `~/.cache/rbench`).
- `digits`: scikit-learn's bundled 8x8 digits (1797 images, always offline), upsampled to 32x32
  by default; having no test split, a seeded stratified 20 % is held out as the test split.
- `cifar10`: torchvision's CIFAR-10 from a local `root` (`cifar-10-batches-py/`); `download=True`
  fetches it.
- `imagefolder:PATH`: an ImageFolder tree `PATH/{train,val,test}/<class>/<image>`. `train` is
  required; without `val` the validation split is carved from train, without `test` the `val`
  folder serves as test. Every split must have the same classes. Images are RGB, resized
  (shorter side) and centre-cropped to `input_size` (default: the first image's size when square
  and at most 64 px, else 224).

Every split's items are `(uint8 tensor (C, H, W), int label)`; normalization (per-channel mean and
std measured on the training split, as the network sees it) is applied on whole batches by
`make_loaders` / `normalize_batch`, together with augmentation, because per-item transforms cost
more than the convolutions on a 2-core CPU. The validation split is always carved from train,
stratified and seeded; `subset=N` keeps N stratified training+validation images (and at most N
test images) for quick runs. The same `seed` gives the same splits on every machine.

Channel subsets (the dynamic-vs-static study evaluates a 3-channel model on RGB, RG, GB, R, G
and B): `channels="RG"` keeps those channels of the RGB image. `channel_mode` says how:
- `select` (default): the input has `len(channels)` channels; build the net with that `in_chans`.
- `average`: the coursework's naive way; the mean of the kept channels, copied to 3 channels.
- `replicate`: the kept channels repeated cyclically to 3 (R -> RRR, RG -> RGR).
- `zero`: 3 channels, the dropped ones set to 0.
Grey data (Fashion-MNIST, digits) is made RGB by copying the grey plane to R, G and B before the
subset is taken. All three planes are then equal, so a channel-subset study on grey data measures
how a net copes with a changed channel count and scale, not with lost colour information: use
`cifar10` or a colour ImageFolder for the colour question.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.errors import DataProblem, UsageProblem

DATASETS = ("fashion-mnist", "digits", "cifar10", "imagefolder:PATH")
CHANNEL_MODES = ("select", "average", "replicate", "zero")
AUGMENTATIONS = ("crop", "flip", "erase")
DEFAULT_FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------- datasets


class TensorImages(Dataset):
    """An in-memory split: `images` uint8 (N, C, H, W), `labels` int64 (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 (N, C, H, W) tensor")
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        self.images = images
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def take(self, indices: Sequence[int] | np.ndarray) -> TensorImages:
        """A new split holding the items at `indices` (copied)."""
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return TensorImages(self.images[index], self.labels[index])


class FolderImages(Dataset):
    """A lazily decoded ImageFolder split: RGB, resized and centre-cropped, channel subset applied."""

    def __init__(self, samples: Sequence[tuple[str, int]], input_size: int,
                 channels: str | None = None, channel_mode: str = "select"):
        self.samples = list(samples)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        self.input_size = input_size
        self.channels = channels
        self.channel_mode = channel_mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = _read_image(path, self.input_size)
        return apply_channels(image, self.channels, self.channel_mode), label

    def take(self, indices: Sequence[int] | np.ndarray) -> FolderImages:
        return FolderImages([self.samples[int(i)] for i in indices], self.input_size, self.channels, self.channel_mode)

    def load_all(self) -> TensorImages:
        """Decode every image into memory (fast epochs for small trees)."""
        images = torch.stack([self[i][0] for i in range(len(self))]) if len(self) else torch.empty(0, 3, 1, 1, dtype=torch.uint8)
        return TensorImages(images, self.labels.clone())


@dataclass
class DatasetBundle:
    """The three splits of one data set and what a net needs to know about them.

    `train`, `val`, `test` yield `(uint8 (C, H, W) tensor, int label)`; `mean` and `std` (one
    value per channel, on the 0..1 scale) normalize a batch; `source` says where it was read from.
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_chans: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    source: str
    channels: str | None = None
    channel_mode: str = "select"
    seed: int = 0
    subset: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input."""
        return (self.in_chans, self.input_size, self.input_size)

    def describe(self) -> dict[str, Any]:
        """Plain-data description for records and checkpoints (enough to load it again)."""
        return {
            "name": self.name, "source": self.source, "num_classes": self.num_classes,
            "in_chans": self.in_chans, "input_size": self.input_size,
            "mean": list(self.mean), "std": list(self.std), "class_names": list(self.class_names),
            "channels": self.channels, "channel_mode": self.channel_mode, "seed": self.seed,
            "subset": self.subset, "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
        }


# --------------------------------------------------------------------------- channels


def parse_channels(channels: str | None) -> str | None:
    """Normalize a channel subset ('rg' -> 'RG'); None or 'native' means the data's own channels."""
    if channels is None or channels.lower() in ("", "native", "none"):
        return None
    spec = channels.upper()
    if spec == "ALL":
        spec = "RGB"
    if not spec or any(c not in "RGB" for c in spec) or len(set(spec)) != len(spec):
        raise UsageProblem(f"bad channel subset {channels!r}; use letters of RGB once each, e.g. RGB, RG, GB, R")
    return "".join(c for c in "RGB" if c in spec)  # canonical order


def channels_out(channels: str | None, channel_mode: str, native: int) -> int:
    """How many channels the net sees for a subset and mode (`native` when no subset)."""
    if channels is None:
        return native
    return len(channels) if channel_mode == "select" else 3


def apply_channels(images: torch.Tensor, channels: str | None, channel_mode: str = "select") -> torch.Tensor:
    """Take the channel subset of uint8 images (..., C, H, W); grey (C=1) is copied to RGB first."""
    if channels is None:
        return images
    if channel_mode not in CHANNEL_MODES:
        raise UsageProblem(f"unknown channel mode {channel_mode!r}; choose one of {', '.join(CHANNEL_MODES)}")
    if images.shape[-3] == 1:
        images = images.expand(*images.shape[:-3], 3, *images.shape[-2:])
    elif images.shape[-3] != 3:
        raise DataProblem(f"channel subsets need RGB or grey images, got {images.shape[-3]} channels")
    keep = ["RGB".index(c) for c in channels]
    kept = images[..., keep, :, :]
    if channel_mode == "select":
        return kept.contiguous()
    if channel_mode == "average":
        mean = kept.float().mean(dim=-3, keepdim=True).round().to(torch.uint8)
        return mean.expand(*mean.shape[:-3], 3, *mean.shape[-2:]).contiguous()
    if channel_mode == "replicate":
        order = [keep[i % len(keep)] for i in range(3)]
        return images[..., order, :, :].contiguous()
    out = torch.zeros_like(images)  # zero
    out[..., keep, :, :] = kept
    return out


# --------------------------------------------------------------------------- loading


def load_dataset(name: str, root: str | os.PathLike | None = None, subset: int | None = None, seed: int = 0,
                 val_fraction: float = 0.1, input_size: int | None = None, channels: str | None = None,
                 download: bool = False, channel_mode: str = "select") -> DatasetBundle:
    """Load data set `name` (see `DATASETS`) into train/val/test splits.

    Args:
        name: 'fashion-mnist', 'digits', 'cifar10' or 'imagefolder:PATH'.
        root: where the files are (default per data set, see the module docstring).
        subset: keep at most this many train+val images and this many test images (quick runs).
        seed: seeds the validation carve-out and the subset; same seed, same splits.
        val_fraction: share of the training images held out for validation (0 < f < 1).
        input_size: resize to this square size (default: the data set's own; digits 32).
        channels: channel subset such as 'RGB', 'RG', 'B' (None: the data's own channels).
        download: allow torchvision to fetch fashion-mnist / cifar10 when they are not found.
        channel_mode: 'select', 'average', 'replicate' or 'zero' (see the module docstring).

    Raises:
        UsageProblem: unknown name or bad option. DataProblem: files missing or inconsistent.
    """
    channels = parse_channels(channels)
    if channel_mode not in CHANNEL_MODES:
        raise UsageProblem(f"unknown channel mode {channel_mode!r}; choose one of {', '.join(CHANNEL_MODES)}")
    if not 0.0 < val_fraction < 1.0:
        raise UsageProblem(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if subset is not None and subset < 2:
        raise UsageProblem(f"subset must be at least 2 images, got {subset}")
    if input_size is not None and input_size < 4:
        raise UsageProblem(f"input size must be at least 4 pixels, got {input_size}")
    key = name.lower()
    if key in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return _finish_tensor_bundle("fashion-mnist", *_fashion_mnist(root, download), FASHION_CLASSES,
                                     subset, seed, val_fraction, input_size, channels, channel_mode)
    if key == "digits":
        return _digits(subset, seed, val_fraction, input_size or 32, channels, channel_mode)
    if key in ("cifar10", "cifar-10"):
        return _finish_tensor_bundle("cifar10", *_cifar10(root, download), CIFAR10_CLASSES,
                                     subset, seed, val_fraction, input_size, channels, channel_mode)
    if key.startswith("imagefolder:"):
        path = name.split(":", 1)[1]
        if not path:
            raise UsageProblem("imagefolder needs a path: imagefolder:PATH")
        return _imagefolder(Path(path).expanduser(), subset, seed, val_fraction, input_size, channels, channel_mode)
    raise UsageProblem(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held) with `fraction` of every class held out (at least one when a class has two)."""
    held, rest = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n = int(round(len(idx) * fraction))
        n = min(max(n, 1 if len(idx) > 1 else 0), len(idx) - 1) if len(idx) > 1 else 0
        held.append(idx[:n])
        rest.append(idx[n:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def _stratified_take(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices, classes in proportion (seeded); all of them when n >= len(labels)."""
    if n >= len(labels):
        return np.arange(len(labels))
    _, held = _stratified_split(labels, n / len(labels), rng)
    if len(held) > n:
        held = np.sort(rng.choice(held, n, replace=False))
    elif len(held) < n:
        others = np.setdiff1d(np.arange(len(labels)), held)
        held = np.sort(np.concatenate([held, rng.choice(others, n - len(held), replace=False)]))
    return held


def _resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or images.shape[-1] == size and images.shape[-2] == size:
        return images
    from torchvision.transforms.v2 import functional as TF

    out = []
    for start in range(0, len(images), 4096):  # bounded memory on 60k images
        out.append(TF.resize(images[start:start + 4096], [size, size], antialias=True))
    return torch.cat(out) if out else images


def channel_stats(images: torch.Tensor, limit: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) of uint8 images (N, C, H, W), over at most `limit` images."""
    x = images[:limit].to(torch.float64) / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)  # a constant channel must not divide by zero
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def _finish_tensor_bundle(name: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                          test_y: torch.Tensor, source: str, class_names: Sequence[str], subset: int | None,
                          seed: int, val_fraction: float, input_size: int | None, channels: str | None,
                          channel_mode: str) -> DatasetBundle:
    rng = np.random.default_rng(seed)
    labels = train_y.numpy()
    if subset is not None:
        keep = _stratified_take(labels, subset, rng)
        train_x, train_y, labels = train_x[keep], train_y[keep], labels[keep]
        keep_test = _stratified_take(test_y.numpy(), subset, rng)
        test_x, test_y = test_x[keep_test], test_y[keep_test]
    rest, held = _stratified_split(labels, val_fraction, rng)
    native = train_x.shape[1]
    size = input_size or train_x.shape[-1]
    train_x = apply_channels(_resize(train_x, size), channels, channel_mode)
    test_x = apply_channels(_resize(test_x, size), channels, channel_mode)
    train = TensorImages(train_x, train_y).take(rest)
    val = TensorImages(train_x, train_y).take(held)
    test = TensorImages(test_x, test_y)
    mean, std = channel_stats(train.images)
    return DatasetBundle(name, train, val, test, len(class_names), channels_out(channels, channel_mode, native),
                         size, mean, std, tuple(class_names), source, channels, channel_mode, seed, subset)


# --- Fashion-MNIST

_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not, as a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataProblem(f"cannot read {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataProblem(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataProblem(f"{path} is truncated: {body.size} bytes for shape {dims}")
    return body.reshape(dims)


def _find_fashion_files(folder: Path) -> dict[str, Path] | None:
    for candidate in (folder, folder / "fashion-mnist", folder / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in _FASHION_FILES.items():
            for name in (stem + ".gz", stem):
                if (candidate / name).is_file():
                    found[key] = candidate / name
                    break
        if len(found) == len(_FASHION_FILES):
            return found
    return None


def fashion_mnist_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for Fashion-MNIST, in order: `root`, else $RBENCH_DATA, then the Debian path."""
    if root is not None:
        return [Path(root).expanduser()]
    roots = []
    if os.environ.get("RBENCH_DATA"):
        roots.append(Path(os.environ["RBENCH_DATA"]).expanduser())
    roots.append(DEFAULT_FASHION_ROOT)
    return roots


@functools.lru_cache(maxsize=2)
def _read_fashion(files: tuple[tuple[str, Path], ...]) -> tuple[torch.Tensor, ...]:
    f = dict(files)
    out = []
    for split in ("train", "test"):
        images = read_idx(f[f"{split}_images"])
        labels = read_idx(f[f"{split}_labels"])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataProblem(f"Fashion-MNIST {split} files disagree: images {images.shape}, labels {labels.shape}")
        out += [torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))]
    return tuple(out)


def _fashion_mnist(root, download: bool):
    roots = fashion_mnist_roots(root)
    for folder in roots:
        files = _find_fashion_files(folder)
        if files:
            return (*_read_fashion(tuple(sorted(files.items()))), str(files["train_images"].parent))
    if download:
        from torchvision.datasets import FashionMNIST

        target = Path(root).expanduser() if root is not None else Path.home() / ".cache" / "rbench"
        try:
            FashionMNIST(str(target), train=True, download=True)
            FashionMNIST(str(target), train=False, download=True)
        except Exception as exc:  # network errors come in many types
            raise DataProblem(f"could not download Fashion-MNIST into {target}: {exc}") from exc
        files = _find_fashion_files(target)
        if files:
            return (*_read_fashion(tuple(sorted(files.items()))), str(files["train_images"].parent))
    looked = ", ".join(str(r) for r in roots)
    raise DataProblem(
        f"Fashion-MNIST not found: looked for {_FASHION_FILES['train_images']}[.gz] and the 3 other IDX files "
        f"in {looked} (and their fashion-mnist/, FashionMNIST/raw/ folders); install dataset-fashion-mnist, "
        "pass --data-root, set RBENCH_DATA, or add --download")


# --- digits


def _digits(subset, seed, val_fraction, input_size, channels, channel_mode) -> DatasetBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; scale to the uint8 range every other data set uses.
    images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = digits.target.astype(np.int64)
    rest, held = _stratified_split(labels, 0.2, np.random.default_rng(12345))  # fixed test split, seed-free
    return _finish_tensor_bundle(
        "digits", images[rest], torch.from_numpy(labels[rest]), images[held], torch.from_numpy(labels[held]),
        "sklearn.datasets.load_digits (bundled)", [str(i) for i in range(10)], subset, seed, val_fraction,
        input_size, channels, channel_mode)


# --- CIFAR-10


def _cifar10(root, download: bool):
    from torchvision.datasets import CIFAR10

    folder = Path(root).expanduser() if root is not None else Path(os.environ.get("RBENCH_DATA", "data")).expanduser()
    candidates = [folder, folder / "cifar10", folder / "cifar-10"]
    for candidate in candidates:
        if (candidate / "cifar-10-batches-py").is_dir() or download:
            try:
                train = CIFAR10(str(candidate), train=True, download=download)
                test = CIFAR10(str(candidate), train=False, download=download)
            except RuntimeError as exc:
                if download:
                    raise DataProblem(f"could not download CIFAR-10 into {candidate}: {exc}") from exc
                raise DataProblem(f"CIFAR-10 in {candidate} is incomplete or corrupt: {exc}") from exc
            except Exception as exc:
                raise DataProblem(f"could not load CIFAR-10 from {candidate}: {exc}") from exc

            def tensors(ds):
                return (torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                        torch.tensor(ds.targets, dtype=torch.int64))

            return (*tensors(train), *tensors(test), str(candidate / "cifar-10-batches-py"))
    raise DataProblem(f"CIFAR-10 not found: looked for cifar-10-batches-py/ in {', '.join(map(str, candidates))}; "
                      "pass --data-root or add --download")


# --- ImageFolder


def _read_image(path: str, input_size: int) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    try:
        with Image.open(path) as img:
            image = TF.pil_to_tensor(img.convert("RGB"))
    except OSError as exc:
        raise DataProblem(f"cannot read image {path}: {exc}") from exc
    if image.shape[-2:] != (input_size, input_size):
        image = TF.center_crop(TF.resize(image, input_size, antialias=True), [input_size, input_size])
    return image


def _scan_split(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples = []
    for index, cls in enumerate(classes):
        for path in sorted((folder / cls).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append((str(path), index))
    return classes, samples


#: ImageFolder trees smaller than this (decoded, in bytes) are held in memory.
PRELOAD_BYTES = 1 << 30


def _imagefolder(path: Path, subset, seed, val_fraction, input_size, channels, channel_mode) -> DatasetBundle:
    if not path.is_dir():
        raise DataProblem(f"ImageFolder root {path} does not exist")
    present = {s: path / s for s in ("train", "val", "test") if (path / s).is_dir()}
    if "train" not in present:
        raise DataProblem(f"ImageFolder root {path} has no train/ folder (expected {path}/train/<class>/<image>, "
                          "plus val/ and test/)")
    scans = {split: _scan_split(folder) for split, folder in present.items()}
    classes = scans["train"][0]
    if not scans["train"][1]:
        raise DataProblem(f"no images in {path / 'train'} (looked for {', '.join(IMAGE_SUFFIXES)} under class folders)")
    for split, (split_classes, _) in scans.items():
        if split_classes != classes:
            missing = sorted(set(classes) - set(split_classes))
            extra = sorted(set(split_classes) - set(classes))
            raise DataProblem(f"ImageFolder splits have different classes: {split}/ lacks {missing or 'none'} "
                              f"and adds {extra or 'none'} compared with train/ in {path}")
    if input_size is None:
        from PIL import Image

        with Image.open(scans["train"][1][0][0]) as first:
            w, h = first.size
        input_size = w if w == h and w <= 64 else 224
    rng = np.random.default_rng(seed)
    train_all = FolderImages(scans["train"][1], input_size, channels, channel_mode)
    labels = train_all.labels.numpy()
    if subset is not None:
        train_all = train_all.take(_stratified_take(labels, subset, rng))
        labels = train_all.labels.numpy()
    if "val" in scans and "test" in scans:
        rest, held = np.arange(len(train_all)), None
        val = FolderImages(scans["val"][1], input_size, channels, channel_mode)
        test = FolderImages(scans["test"][1], input_size, channels, channel_mode)
    else:
        rest, held = _stratified_split(labels, val_fraction, rng)
        val = train_all.take(held)
        other = scans.get("test", scans.get("val"))
        test = FolderImages(other[1] if other else [], input_size, channels, channel_mode)
        if not other:
            raise DataProblem(f"ImageFolder root {path} has neither test/ nor val/: nothing to test on")
    train = train_all.take(rest) if held is not None else train_all
    if subset is not None:
        val = val.take(_stratified_take(val.labels.numpy(), subset, rng)) if len(val) > subset else val
        test = test.take(_stratified_take(test.labels.numpy(), subset, rng)) if len(test) > subset else test
    c = channels_out(channels, channel_mode, 3)
    if (len(train) + len(val) + len(test)) * c * input_size**2 <= PRELOAD_BYTES:
        train, val, test = train.load_all(), val.load_all(), test.load_all()
        mean, std = channel_stats(train.images)
    else:
        sample = torch.stack([train[int(i)][0] for i in rng.choice(len(train), min(512, len(train)), replace=False)])
        mean, std = channel_stats(sample)
    return DatasetBundle(f"imagefolder:{path}", train, val, test, len(classes), c, input_size, mean, std,
                         tuple(classes), str(path), channels, channel_mode, seed, subset)


# --------------------------------------------------------------------------- batches


def normalize_batch(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32, scaled to 0..1 and normalized per channel."""
    x = images.to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    if m.shape[1] != x.shape[1]:
        raise DataProblem(f"normalization has {m.shape[1]} channels, the images {x.shape[1]}")
    return x.sub_(m).div_(s)


def parse_augment(augment: str | Sequence[str] | None) -> tuple[str, ...]:
    """'crop,flip' or ['crop', 'flip'] -> ('crop', 'flip'); unknown names are a UsageProblem."""
    if not augment:
        return ()
    names = [a.strip().lower() for a in (augment.split(",") if isinstance(augment, str) else augment) if a.strip()]
    names = [n for n in names if n != "none"]
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad:
        raise UsageProblem(f"unknown augmentation {', '.join(bad)}; choose from {', '.join(AUGMENTATIONS)}")
    return tuple(dict.fromkeys(names))


def augment_batch(images: torch.Tensor, augment: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """Random crop (4-px zero padding, size/8 for large inputs) and horizontal flip of uint8 images, per image."""
    n, _, h, w = images.shape
    if "crop" in augment:
        pad = max(1, min(h, w) // 8)
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        # Gather each image's window with index arithmetic instead of a Python loop.
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # (N, H)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # (N, W)
        batch = torch.arange(n).view(n, 1, 1)
        images = padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
        images = images.contiguous()
    if "flip" in augment:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
    return images


def _erase(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): a random rectangle of half the images set to 0 (the mean)."""
    from torchvision.transforms.v2 import RandomErasing

    erase = RandomErasing(p=1.0, value=0)
    chosen = torch.rand(len(x), generator=generator) < 0.5
    for i in torch.nonzero(chosen).flatten().tolist():
        x[i] = erase(x[i])
    return x


class Batches:
    """An epoch-iterable of normalized float batches (and int64 labels) over one split.

    In-memory splits are sliced directly; lazy ones go through a DataLoader with `workers`.
    Shuffling and augmentation draw from a generator seeded by (seed, epoch), so an epoch is the
    same whether a run was resumed or not. Call `set_epoch` before each training epoch.
    """

    def __init__(self, dataset: Dataset, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 shuffle: bool = False, augment: Sequence[str] = (), seed: int = 0, workers: int = 0,
                 device: str | torch.device = "cpu", drop_last: bool = False):
        if batch_size < 1:
            raise UsageProblem(f"batch size must be positive, got {batch_size}")
        self.dataset, self.batch_size = dataset, batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.shuffle, self.augment, self.seed = shuffle, parse_augment(augment), seed
        self.workers, self.device, self.drop_last = workers, torch.device(device), drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _uint8_batches(self, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.dataset, TensorImages):
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                if self.drop_last and len(idx) < self.batch_size:
                    return
                yield self.dataset.images[idx], self.dataset.labels[idx]
            return
        from torch.utils.data import DataLoader

        loader = DataLoader(torch.utils.data.Subset(self.dataset, order.tolist()), batch_size=self.batch_size,
                            num_workers=self.workers, drop_last=self.drop_last)
        for images, labels in loader:
            yield images, torch.as_tensor(labels, dtype=torch.int64)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        n = len(self.dataset)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        for images, labels in self._uint8_batches(order):
            if self.augment:
                images = augment_batch(images, self.augment, generator)
            x = normalize_batch(images.to(self.device, non_blocking=True), self.mean, self.std)
            if "erase" in self.augment:
                x = _erase(x, generator)
            yield x, labels.to(self.device, non_blocking=True)


class Loaders(NamedTuple):
    train: Batches
    val: Batches
    test: Batches


def make_loaders(bundle: DatasetBundle, batch_size: int, augment: str | Sequence[str] = (), workers: int = 0,
                 seed: int | None = None, device: str | torch.device = "cpu",
                 eval_batch_size: int | None = None) -> Loaders:
    """Batches for the three splits: train shuffled and augmented, val and test in order, unaugmented."""
    seed = bundle.seed if seed is None else seed
    eval_bs = eval_batch_size or max(batch_size, 256)
    common = dict(mean=bundle.mean, std=bundle.std, workers=workers, device=device)
    return Loaders(
        Batches(bundle.train, batch_size, shuffle=True, augment=augment, seed=seed, **common),
        Batches(bundle.val, eval_bs, **common),
        Batches(bundle.test, eval_bs, **common),
    )
