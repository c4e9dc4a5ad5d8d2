"""CIFAR-10 (Krizhevsky 2009): 50k/10k 32x32 RGB images, through torchvision's reader.

Read from a local `root` (or `$RBENCH_DATA`, else `./data`), in the folder itself or its
`cifar10/` / `cifar-10/` child, wherever `cifar-10-batches-py/` sits; `download=True` fetches it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from bench.data.common import DatasetBundle, SplitSettings, finish_tensor_bundle
from bench.errors import DataProblem

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _as_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    # torchvision keeps CIFAR as uint8 NHWC numpy plus a list of labels.
    return (torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous(),
            torch.tensor(dataset.targets, dtype=torch.int64))


def load_cifar10(root: str | os.PathLike | None, download: bool, settings: SplitSettings) -> DatasetBundle:
    """The CIFAR-10 bundle from the first candidate folder that holds it (or that it is downloaded into)."""
    from torchvision.datasets import CIFAR10

    folder = Path(root).expanduser() if root is not None else Path(os.environ.get("RBENCH_DATA", "data")).expanduser()
    candidates = [folder, folder / "cifar10", folder / "cifar-10"]
    for candidate in candidates:
        if not ((candidate / "cifar-10-batches-py").is_dir() or download):
            continue
        try:
            train = CIFAR10(str(candidate), train=True, download=download)
            test = CIFAR10(str(candidate), train=False, download=download)
        except RuntimeError as exc:
            if download:
                raise DataProblem(f"could not download CIFAR-10 into {candidate}: {exc}") from exc
            raise DataProblem(f"CIFAR-10 in {candidate} is incomplete or corrupt: {exc}") from exc
        except Exception as exc:
            raise DataProblem(f"could not load CIFAR-10 from {candidate}: {exc}") from exc
        return finish_tensor_bundle("cifar10", *_as_tensors(train), *_as_tensors(test),
                                    str(candidate / "cifar-10-batches-py"), CIFAR10_CLASSES, settings)
    raise DataProblem(f"CIFAR-10 not found: looked for cifar-10-batches-py/ in {', '.join(map(str, candidates))}; "
                      "pass --data-root or add --download")
