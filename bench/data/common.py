"""What every data set shares: in-memory splits, the bundle a net is trained on, channel subsets, seeded splits.

A data set module reads its files into uint8 tensors and hands them to `finish_tensor_bundle`,
which takes the seeded subset, carves the validation split, resizes, applies the channel subset
and measures the normalization on the training split, the same way for every data set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.errors import DataProblem, UsageProblem

CHANNEL_MODES = ("select", "average", "replicate", "zero")


@dataclass(frozen=True)
class SplitSettings:
    """How `load_dataset` cuts and shapes any data set (its arguments other than name, root and download)."""

    subset: int | None = None  # at most this many train+val images, and this many test images
    seed: int = 0  # seeds the subset and the validation carve-out
    val_fraction: float = 0.1  # share of the training images held out for validation
    input_size: int | None = None  # square size to resize to (None: the data set's own)
    channels: str | None = None  # canonical channel subset ('RG', ...) or None for the data's own
    channel_mode: str = "select"  # see CHANNEL_MODES


# --------------------------------------------------------------------------- splits


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


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held) with `fraction` of every class held out (at least one when a class has two)."""
    held, rest = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n = int(round(len(idx) * fraction))
        n = min(max(n, 1 if len(idx) > 1 else 0), len(idx) - 1) if len(idx) > 1 else 0
        held.append(idx[:n])
        rest.append(idx[n:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def stratified_take(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices, classes in proportion (seeded); all of them when n >= len(labels)."""
    if n >= len(labels):
        return np.arange(len(labels))
    _, held = stratified_split(labels, n / len(labels), rng)
    if len(held) > n:
        held = np.sort(rng.choice(held, n, replace=False))
    elif len(held) < n:
        others = np.setdiff1d(np.arange(len(labels)), held)
        held = np.sort(np.concatenate([held, rng.choice(others, n - len(held), replace=False)]))
    return held


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


# --------------------------------------------------------------------------- finishing a bundle


def resize_images(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 (N, C, H, W) resized to `size` x `size` (antialiased); unchanged when already that size or None."""
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


def finish_tensor_bundle(name: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                         test_y: torch.Tensor, source: str, class_names: Sequence[str],
                         settings: SplitSettings) -> DatasetBundle:
    """The bundle of an in-memory data set: seeded subset, validation carve-out, resize, channels, normalization."""
    rng = np.random.default_rng(settings.seed)
    labels = train_y.numpy()
    if settings.subset is not None:
        keep = stratified_take(labels, settings.subset, rng)
        train_x, train_y, labels = train_x[keep], train_y[keep], labels[keep]
        keep_test = stratified_take(test_y.numpy(), settings.subset, rng)
        test_x, test_y = test_x[keep_test], test_y[keep_test]
    rest, held = stratified_split(labels, settings.val_fraction, rng)
    native = train_x.shape[1]
    size = settings.input_size or train_x.shape[-1]
    channels, mode = settings.channels, settings.channel_mode
    train_x = apply_channels(resize_images(train_x, size), channels, mode)
    test_x = apply_channels(resize_images(test_x, size), channels, mode)
    train = TensorImages(train_x, train_y).take(rest)
    val = TensorImages(train_x, train_y).take(held)
    test = TensorImages(test_x, test_y)
    mean, std = channel_stats(train.images)
    return DatasetBundle(name, train, val, test, len(class_names), channels_out(channels, mode, native),
                         size, mean, std, tuple(class_names), source, channels, mode, settings.seed, settings.subset)
