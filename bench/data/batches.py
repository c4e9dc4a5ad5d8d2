"""Epochs of normalized, augmented float batches over a split.

Normalization and augmentation work on whole uint8 batches, not per item, because per-item
transforms cost more than the convolutions on a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from bench.data.common import DatasetBundle, TensorImages
from bench.errors import DataProblem, UsageProblem

AUGMENTATIONS = ("crop", "flip", "erase")


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
        """Make the next iteration epoch `epoch`'s shuffle and augmentation."""
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
