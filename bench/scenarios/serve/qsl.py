"""The query sample library: a test split's real images, normalized into memory only when LoadGen asks.

LoadGen names the samples it will use in a run (`load`) before it issues them, and releases them after
(`unload`); only those are decoded and normalized into float32 (C, H, W) arrays, so a folder of photos
larger than memory can be served. Labels are known for every sample up front (accuracy mode scores them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bench.data import normalize_batch
from bench.errors import DataProblem


class SampleLibrary:
    """Samples of one split (`dataset`: items `(uint8 (C, H, W) tensor, label)`, normalized by `mean`/`std`).

    `performance_count` is how many samples LoadGen may hold in memory at once in a performance run
    (MLPerf's 1024 for ImageNet, or the whole split when smaller).
    """

    def __init__(self, dataset: Any, mean: Sequence[float], std: Sequence[float], *, name: str = "test",
                 performance_count: int = 1024):
        if len(dataset) == 0:
            raise DataProblem(f"the {name} split is empty: nothing to serve")
        self.dataset, self.name = dataset, name
        self.mean, self.std = tuple(mean), tuple(std)
        labels = getattr(dataset, "labels", None)
        self.labels = (np.asarray(labels, dtype=np.int64) if labels is not None
                       else np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64))
        self.total_count = len(dataset)
        self.performance_count = min(int(performance_count), self.total_count)
        self.loaded: dict[int, np.ndarray] = {}
        self.loads = 0  # LoadGen's load calls so far (a test reads them)

    def load(self, indices: Sequence[int]) -> None:
        """Decode and normalize `indices` into memory (LoadGen's LoadSamplesToRam)."""
        self.loads += 1
        for index in indices:
            index = int(index)
            if index not in self.loaded:
                image = torch.as_tensor(self.dataset[index][0])
                # the same arithmetic as `rbench accuracy`'s batches, so both see identical tensors
                self.loaded[index] = normalize_batch(image[None], self.mean, self.std)[0].numpy()

    def unload(self, indices: Sequence[int]) -> None:
        """Release `indices` (LoadGen's UnloadSamplesFromRam)."""
        for index in indices:
            self.loaded.pop(int(index), None)

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        """The loaded samples at `indices` as one float32 NCHW batch."""
        try:
            return np.stack([self.loaded[int(i)] for i in indices])
        except KeyError as exc:
            raise DataProblem(f"LoadGen issued sample {exc.args[0]}, which it never asked to load") from None

    def first(self) -> np.ndarray:
        """Sample 0, normalized, without keeping it loaded (the warm-up's input)."""
        self.load([0])
        return self.loaded.pop(0)[None]

    def construct(self, lg) -> Any:
        """The LoadGen QSL handle over this library (destroy it with `lg.DestroyQSL`)."""
        return lg.ConstructQSL(self.total_count, self.performance_count, self.load, self.unload)
