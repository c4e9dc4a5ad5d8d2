"""Fixtures for the data, training and accuracy tests: tiny data sets built in temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Comparisons time in worker processes by default, each until a precision target: minutes per call. The fast
# tests check everything else in-process; tests/bench/measure/test_workers.py covers the worker path.
os.environ.setdefault("RBENCH_TIMING", "in-process")

#: Colour of each synthetic class: a net learns these in one epoch, so "beats chance" is robust.
SYNTHETIC_COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


def make_synthetic_imagefolder(root: Path, per_split=(("train", 36), ("val", 9), ("test", 9)),
                               classes=tuple(SYNTHETIC_COLOURS), size: int = 12, seed: int = 0) -> Path:
    """An ImageFolder tree root/{split}/{class}/{i}.png of noisy single-colour squares with a bar."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in per_split:
        for index, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array(SYNTHETIC_COLOURS.get(cls, (128, 128, 128)), dtype=np.float64)
            for i in range(count):
                img = colour + rng.normal(0, 25, size=(size, size, 3))
                img[:, index * size // len(classes):(index + 1) * size // len(classes)] = 255  # a shape cue too
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture
def synthetic_imagefolder(tmp_path) -> Path:
    """A 3-class ImageFolder tree with train/val/test splits (12x12 RGB PNGs)."""
    return make_synthetic_imagefolder(tmp_path / "tiny_folder")


@pytest.fixture
def mismatched_imagefolder(tmp_path) -> Path:
    """An ImageFolder tree whose test split lacks a class and adds another."""
    root = make_synthetic_imagefolder(tmp_path / "mismatched", per_split=(("train", 3), ("val", 2)))
    make_synthetic_imagefolder(root, per_split=(("test", 2),), classes=("cat", "dog", "owl"))
    return root


@pytest.fixture(scope="session")
def trained_digits_run(tmp_path_factory) -> Path:
    """One brief digits training run (resnet20 at 16x16), shared by the accuracy tests: its folder."""
    import torch

    import nets
    from bench.data import load_dataset
    from bench.train.loop import TrainConfig, train_model

    out = tmp_path_factory.mktemp("digits_run")
    bundle = load_dataset("digits", subset=900, input_size=16, seed=0)
    torch.manual_seed(0)
    model = nets.create_model("resnet20", num_classes=10, in_chans=1)
    train_model(model, bundle, TrainConfig(epochs=2, optimizer="adam", batch_size=32, seed=0), out, progress=False)
    return out
