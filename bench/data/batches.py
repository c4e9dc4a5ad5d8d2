"""Epochs of normalized, augmented float batches over a split.

Normalization and augmentation work on whole uint8 batches, not per item, because per-item
transforms cost more than the convolutions on a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from bench.data.augment import AUGMENTATIONS, augment_batch, erase_batch, parse_augment
from bench.data.common import DatasetBundle, TensorImages
from bench.errors import DataProblem, UsageProblem

__all__ = ["AUGMENTATIONS", "Batches", "Loaders", "augment_batch", "make_loaders", "normalize_batch", "parse_augment"]


def normalize_batch(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32, scaled to 0..1 and normalized per channel."""
    x = images.to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    if m.shape[1] != x.shape[1]:
        raise DataProblem(f"normalization has {m.shape[1]} channels, the images {x.shape[1]}")
    return x.sub_(m).div_(s)


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

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """This epoch's item indices in batching order (`bench.train.distributed.ShardedBatches` takes a rank's share)."""
        n = len(self.dataset)
        return torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = self.epoch_order(generator)
        for images, labels in self._uint8_batches(order):
            if self.augment:
                images = augment_batch(images, self.augment, generator)
            x = normalize_batch(images.to(self.device, non_blocking=True), self.mean, self.std)
            if "erase" in self.augment:
                x = erase_batch(x, generator)
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
