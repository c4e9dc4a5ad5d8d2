"""Any ImageFolder tree `PATH/{train,val,test}/<class>/<image>` (ImageNet-mini style).

`train` is required; without `val` the validation split is carved from train, without `test`
the `val` folder serves as test. Every split must have the same classes. Images are RGB,
resized (shorter side) and centre-cropped to `input_size` (default: the first image's size when
square and at most 64 px, else 224). Trees small enough are decoded into memory once.
This is the training loader; a folder that is only evaluated (an ImageNet `val/`, torchvision's
evaluation transform) is read by `bench.data.evalfolder`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.data.common import (
    DatasetBundle,
    SplitSettings,
    TensorImages,
    apply_channels,
    channel_stats,
    channels_out,
    stratified_split,
    stratified_take,
)
from bench.data.transforms import open_rgb
from bench.data.tree import IMAGE_SUFFIXES, scan_classes
from bench.errors import DataProblem

#: ImageFolder trees smaller than this (decoded, in bytes) are held in memory.
PRELOAD_BYTES = 1 << 30


def _read_image(path: str, input_size: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    image = TF.pil_to_tensor(open_rgb(path))  # an unreadable or oversized file: DataProblem naming it
    if image.shape[-2:] != (input_size, input_size):
        image = TF.center_crop(TF.resize(image, input_size, antialias=True), [input_size, input_size])
    return image


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
        """A new split holding the items at `indices` (still lazy)."""
        return FolderImages([self.samples[int(i)] for i in indices], self.input_size, self.channels, self.channel_mode)

    def load_all(self) -> TensorImages:
        """Decode every image into memory (fast epochs for small trees)."""
        images = torch.stack([self[i][0] for i in range(len(self))]) if len(self) else torch.empty(0, 3, 1, 1, dtype=torch.uint8)
        return TensorImages(images, self.labels.clone())


def _scan_tree(path: Path) -> dict[str, tuple[list[str], list[tuple[str, int]]]]:
    """(classes, samples) of each split folder present, checked: train exists, has images, and all agree."""
    if not path.is_dir():
        raise DataProblem(f"ImageFolder root {path} does not exist")
    present = {s: path / s for s in ("train", "val", "test") if (path / s).is_dir()}
    if "train" not in present:
        raise DataProblem(f"ImageFolder root {path} has no train/ folder (expected {path}/train/<class>/<image>, "
                          "plus val/ and test/)")
    scans = {split: scan_classes(folder) for split, folder in present.items()}
    classes = scans["train"][0]
    if not scans["train"][1]:
        raise DataProblem(f"no images in {path / 'train'} (looked for {', '.join(IMAGE_SUFFIXES)} under class folders)")
    if len(classes) < 2:
        raise DataProblem(f"{path / 'train'} has one class folder, {classes[0]!r}; a classifier needs at least 2 "
                          "classes: add one folder of images per class")
    for split, (split_classes, _) in scans.items():
        if split_classes != classes:
            missing = sorted(set(classes) - set(split_classes))
            extra = sorted(set(split_classes) - set(classes))
            raise DataProblem(f"ImageFolder splits have different classes: {split}/ lacks {missing or 'none'} "
                              f"and adds {extra or 'none'} compared with train/ in {path}")
    if "val" not in scans and "test" not in scans:
        raise DataProblem(f"ImageFolder root {path} has neither test/ nor val/: nothing to test on")
    return scans


def _default_input_size(first_image: str) -> int:
    from PIL import Image

    with Image.open(first_image) as first:
        w, h = first.size
    return w if w == h and w <= 64 else 224


def load_imagefolder(path: Path, settings: SplitSettings) -> DatasetBundle:
    """The bundle of the ImageFolder tree at `path` (decoded into memory when under PRELOAD_BYTES)."""
    scans = _scan_tree(path)
    classes = scans["train"][0]
    input_size = settings.input_size or _default_input_size(scans["train"][1][0][0])
    settings = dataclasses.replace(settings, input_size=input_size)
    channels, mode, subset = settings.channels, settings.channel_mode, settings.subset
    rng = np.random.default_rng(settings.seed)
    train_all = FolderImages(scans["train"][1], input_size, channels, mode)
    if subset is not None:
        train_all = train_all.take(stratified_take(train_all.labels.numpy(), subset, rng))
    if "val" in scans and "test" in scans:
        train = train_all
        val = FolderImages(scans["val"][1], input_size, channels, mode)
        test = FolderImages(scans["test"][1], input_size, channels, mode)
    else:
        rest, held = stratified_split(train_all.labels.numpy(), settings.val_fraction, rng)
        train, val = train_all.take(rest), train_all.take(held)
        test = FolderImages(scans.get("test", scans.get("val"))[1], input_size, channels, mode)
    if subset is not None:
        val = val.take(stratified_take(val.labels.numpy(), subset, rng)) if len(val) > subset else val
        test = test.take(stratified_take(test.labels.numpy(), subset, rng)) if len(test) > subset else test
    c = channels_out(channels, mode, 3)
    if (len(train) + len(val) + len(test)) * c * input_size**2 <= PRELOAD_BYTES:
        train, val, test = train.load_all(), val.load_all(), test.load_all()
        mean, std = channel_stats(train.images)
    else:
        sample = torch.stack([train[int(i)][0] for i in rng.choice(len(train), min(512, len(train)), replace=False)])
        mean, std = channel_stats(sample)
    return DatasetBundle(f"imagefolder:{path}", train, val, test, len(classes), c, input_size, mean, std,
                         tuple(classes), str(path), channels, mode, settings.seed, subset)
