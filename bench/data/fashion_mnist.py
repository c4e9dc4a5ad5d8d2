"""Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747): 60k/10k 28x28 grey images, read from IDX files.

`find_fashion_mnist` is the one place that decides where the files are: `root` if given (the
folder itself or its `fashion-mnist/` / `FashionMNIST/raw/` child), else `$RBENCH_DATA` (the
same three places), else `DEFAULT_FASHION_ROOT` (Debian package `dataset-fashion-mnist`). A
folder counts only when it holds all four IDX files, `.gz` or not. The loader and `rbench
study --dataset auto` both ask it, so `auto` picks Fashion-MNIST exactly when loading it works.
Tests that hide the Debian copy patch `bench.data.fashion_mnist.DEFAULT_FASHION_ROOT`, the
module that reads it.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from bench.data.common import DatasetBundle, SplitSettings, finish_tensor_bundle
from bench.errors import DataProblem

DEFAULT_FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
#: Where inside a searched folder the files may sit: the folder itself, the Debian package's
#: name for it, and the layout torchvision's downloader leaves.
_SUBFOLDERS = ("", "fashion-mnist", "FashionMNIST/raw")


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


def fashion_mnist_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for Fashion-MNIST, in order: `root`, else $RBENCH_DATA, then the Debian path."""
    if root is not None:
        return [Path(root).expanduser()]
    roots = []
    if os.environ.get("RBENCH_DATA"):
        roots.append(Path(os.environ["RBENCH_DATA"]).expanduser())
    roots.append(DEFAULT_FASHION_ROOT)
    return roots


def _files_in(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in `folder` itself (each `.gz` preferred), or None unless all four are there."""
    found = {}
    for key, stem in _FASHION_FILES.items():
        path = next((folder / name for name in (stem + ".gz", stem) if (folder / name).is_file()), None)
        if path is None:
            return None
        found[key] = path
    return found


def _find_files(root: str | os.PathLike | None) -> dict[str, Path] | None:
    for folder in fashion_mnist_roots(root):
        for sub in _SUBFOLDERS:
            files = _files_in(folder / sub)
            if files:
                return files
    return None


def find_fashion_mnist(root: str | os.PathLike | None = None) -> Path | None:
    """The folder holding Fashion-MNIST's four IDX files, or None when no searched folder has all four.

    Searched in order: `root` when given (and only it), else `$RBENCH_DATA`, then
    `DEFAULT_FASHION_ROOT`; in each, the folder itself, then `fashion-mnist/`, then
    `FashionMNIST/raw/`. Nothing is read or downloaded.
    """
    files = _find_files(root)
    return files["train_images"].parent if files else None


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


def _download(root: str | os.PathLike | None) -> dict[str, Path] | None:
    from torchvision.datasets import FashionMNIST

    target = Path(root).expanduser() if root is not None else Path.home() / ".cache" / "rbench"
    try:
        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
    except Exception as exc:  # network errors come in many types
        raise DataProblem(f"could not download Fashion-MNIST into {target}: {exc}") from exc
    return _find_files(target)


def load_fashion_mnist(root: str | os.PathLike | None, download: bool, settings: SplitSettings) -> DatasetBundle:
    """The Fashion-MNIST bundle from the files `find_fashion_mnist(root)` finds (or downloads, if allowed)."""
    files = _find_files(root) or (_download(root) if download else None)
    if not files:
        looked = ", ".join(str(r) for r in fashion_mnist_roots(root))
        raise DataProblem(
            f"Fashion-MNIST not found: looked for {_FASHION_FILES['train_images']}[.gz] and the 3 other IDX files "
            f"in {looked} (and their fashion-mnist/, FashionMNIST/raw/ folders); install dataset-fashion-mnist, "
            "pass --data-root, set RBENCH_DATA, or add --download")
    tensors = _read_fashion(tuple(sorted(files.items())))
    return finish_tensor_bundle("fashion-mnist", *tensors, str(files["train_images"].parent), FASHION_CLASSES, settings)
