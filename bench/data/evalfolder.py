"""Evaluation-only image folders (an ImageNet `val/`): scanned, decoded lazily by DataLoader workers, never preloaded.

    >>> bundle = load_eval_folder("/data/imagenet", transform=parse_eval_transform("imagenet"), workers=8)
    >>> batches = EvalBatches(bundle.test, 256, bundle.mean, bundle.std, workers=8, on_progress=print)
    >>> for x, y in batches: ...       # float32 NCHW, normalized; unreadable files skipped when asked
    >>> batches.skipped                # the files that could not be decoded

The folder is `PATH/test/<class>/` or `PATH/val/<class>/` (test first, as `load_imagefolder` picks its
test split), or `PATH/<class>/` when PATH holds only class folders. `train/`, when present, is the
training split (int8 calibration images). Class order is the sorted folder names, as torchvision's
`ImageFolder` orders them, unless a class-index file says otherwise (`read_class_index`).

An unreadable image stops the run with its file name, unless `skip_bad_images` is set: then it is
decoded as nothing, dropped from its batch, and counted (`EvalBatches.skipped`). The flag travels as
a negative label, `-(index + 1)`, because a DataLoader worker can only hand back what the batch holds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.data.common import DatasetBundle, channel_stats, stratified_take
from bench.data.imagefolder import _read_image
from bench.data.transforms import EvalTransform
from bench.data.tree import IMAGE_SUFFIXES, class_folders, scan_classes
from bench.errors import DataProblem, UsageProblem

SKIP_HINT = "pass --skip-bad-images to skip unreadable files (they are counted and reported)"


def default_workers() -> int:
    """DataLoader processes for decoding a large folder: one per core, at most 8 (JPEG decoding scales to about that)."""
    return max(1, min(8, os.cpu_count() or 1))


class EvalImages(Dataset):
    """A lazily decoded evaluation split: uint8 (3, H, W) per file, by an `EvalTransform` or a plain resize."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: EvalTransform | None, input_size: int,
                 skip_bad_images: bool = False):
        self.samples = list(samples)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        self.transform, self.input_size, self.skip_bad_images = transform, input_size, skip_bad_images
        self._pil = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            if self.transform is None:
                return _read_image(path, self.input_size), label
            if self._pil is None:  # built once per worker process
                self._pil = self.transform.pil_transform()
            return self.transform.decode(path, self._pil), label
        except DataProblem as exc:
            # In a worker process the error would reach the user wrapped in the worker's traceback: the
            # file is marked instead, and EvalBatches raises (or skips) in the main process.
            if not self.skip_bad_images and torch.utils.data.get_worker_info() is None:
                raise DataProblem(f"{exc}; {SKIP_HINT}") from None
            return torch.zeros(3, self.input_size, self.input_size, dtype=torch.uint8), -(index + 1)

    def reason(self, index: int) -> str:
        """Why item `index` cannot be decoded (decoded again here, in the main process)."""
        try:
            self[index]
        except DataProblem as exc:
            return str(exc)
        return f"cannot read image {self.samples[index][0]}; {SKIP_HINT}"

    def take(self, indices: Sequence[int] | np.ndarray) -> EvalImages:
        """A new split holding the items at `indices` (still lazy)."""
        return EvalImages([self.samples[int(i)] for i in indices], self.transform, self.input_size,
                          self.skip_bad_images)


class EvalBatches:
    """Normalized float batches of a lazy split, decoded by `workers` DataLoader processes, in order.

    Iterating yields `(x float32 NCHW, labels int64)`; afterwards `images` is the number evaluated,
    `skipped` the files dropped as unreadable, `seconds` the wall time. `on_progress(done, total)`
    is called after each batch (a progress bar in the CLI)."""

    def __init__(self, dataset: Dataset, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 workers: int = 0, on_progress: Callable[[int, int], None] | None = None):
        if batch_size < 1:
            raise UsageProblem(f"batch size must be positive, got {batch_size}")
        self.dataset, self.batch_size, self.workers = dataset, batch_size, workers
        self.mean, self.std = tuple(mean), tuple(std)
        self.on_progress = on_progress
        self.images, self.skipped, self.seconds = 0, [], 0.0

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torch.utils.data import DataLoader

        from bench.data.batches import normalize_batch

        self.images, self.skipped = 0, []
        start, done, total = time.perf_counter(), 0, len(self.dataset)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.workers, shuffle=False,
                            persistent_workers=False, prefetch_factor=4 if self.workers else None)
        for images, labels in loader:
            labels = torch.as_tensor(labels, dtype=torch.int64)
            done += len(labels)
            bad = labels < 0
            if bad.any():
                indices = [-int(v) - 1 for v in labels[bad]]
                if not getattr(self.dataset, "skip_bad_images", False):
                    raise DataProblem(self.dataset.reason(indices[0]))
                self.skipped += [self.dataset.samples[i][0] for i in indices]
                images, labels = images[~bad], labels[~bad]
            self.images += len(labels)
            self.seconds = time.perf_counter() - start
            if self.on_progress is not None:
                self.on_progress(done, total)
            if len(labels):
                yield normalize_batch(images, self.mean, self.std), labels
        self.seconds = time.perf_counter() - start


# --------------------------------------------------------------------------- scanning


def read_class_index(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(folder names in label order, readable names) from a class-index JSON file.

    Accepted: ImageNet's `{"0": ["n01440764", "tench"], ...}`, `{"n01440764": 0, ...}`, or a list
    of folder names in label order (`["n01440764", ...]`, or `[["n01440764", "tench"], ...]`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataProblem(f"cannot read the class index {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise DataProblem(f"the class index {path} is not JSON: {exc}") from None
    pairs: list[tuple[int, str, str]] = []
    try:
        if isinstance(data, list):
            for i, item in enumerate(data):
                folder, name = (item, item) if isinstance(item, str) else (str(item[0]), str(item[-1]))
                pairs.append((i, folder, name))
        elif isinstance(data, dict) and all(isinstance(v, int) for v in data.values()):
            pairs = [(int(v), str(k), str(k)) for k, v in data.items()]
        elif isinstance(data, dict):
            pairs = [(int(k), str(v[0]), str(v[-1])) if isinstance(v, list) else (int(k), str(v), str(v))
                     for k, v in data.items()]
        else:
            raise TypeError(type(data).__name__)
    except (TypeError, ValueError, IndexError):
        raise DataProblem(f"the class index {path} is neither {{\"0\": [\"n01440764\", \"tench\"], ...}}, "
                          "{\"n01440764\": 0, ...} nor a list of folder names") from None
    pairs.sort()
    if [i for i, _, _ in pairs] != list(range(len(pairs))):
        raise DataProblem(f"the class index {path} does not number its classes 0..{len(pairs) - 1} once each")
    folders = [f for _, f, _ in pairs]
    if len(set(folders)) != len(folders):
        raise DataProblem(f"the class index {path} names a folder twice")
    return folders, [n for _, _, n in pairs]


def scan_eval_folder(path: str | os.PathLike, class_index: str | os.PathLike | None = None) -> dict[str, Any]:
    """What an evaluation folder holds: `classes` (folder names in label order), `class_names`, the
    `test` samples and their split folder (`test_split`), and the `train` samples ([] without train/).

    Raises DataProblem: no such folder, no class folders or images, a class-index file whose classes
    do not match the folder, or splits with different classes."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataProblem(f"image folder {root} does not exist")
    split_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    test_dir = split_dir or root
    found = class_folders(test_dir)
    if not found or found == ["train"]:
        raise DataProblem(f"no class folders in {test_dir} (expected {root}/val/<class>/<image> or {root}/<class>/<image>)")
    if class_index is not None:
        classes, names = read_class_index(class_index)
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DataProblem(f"the class index {class_index} does not match {test_dir}: {len(extra)} folder(s) it "
                              f"does not list ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}); "
                              f"it lists {len(classes)} classes such as {', '.join(classes[:2])}")
    else:
        classes, names = found, found
    index = {c: i for i, c in enumerate(classes)}
    # With a class index the labels come from it: a listed class without test images shifts no label.
    test = scan_classes(test_dir, found, index, allow_empty=class_index is not None)[1]
    if not test:
        raise DataProblem(f"no images in {test_dir} (looked for {', '.join(IMAGE_SUFFIXES)} under class folders)")
    train: list[tuple[str, int]] = []
    if split_dir is not None and (root / "train").is_dir():
        train_found = class_folders(root / "train")
        unknown = sorted(set(train_found) - set(classes))
        if unknown:
            raise DataProblem(f"{root / 'train'} has class folders {test_dir} lacks: {', '.join(unknown[:3])}")
        train = scan_classes(root / "train", train_found, index, allow_empty=True)[1]  # calibration images only
    return {"root": root, "classes": classes, "class_names": names, "test": test, "train": train,
            "test_split": test_dir.name if split_dir is not None else ".", "present": found}


def load_eval_folder(path: str | os.PathLike, transform: EvalTransform | None = None, input_size: int | None = None,
                     class_index: str | os.PathLike | None = None, subset: int | None = None, seed: int = 0,
                     skip_bad_images: bool = False) -> DatasetBundle:
    """The bundle of an evaluation folder: its test split (and train/ when present), lazy, never preloaded.

    With a `transform` the images are resized, centre-cropped and normalized as it says; without one,
    resized to `input_size` (default 224) and normalized by statistics of up to 256 test images (a
    checkpoint's own normalization normally replaces them). `subset` keeps N stratified test images."""
    scan = scan_eval_folder(path, class_index)
    size = transform.crop_size if transform is not None else (input_size or 224)
    if transform is not None and input_size is not None and input_size != size:
        raise UsageProblem(f"--input-size {input_size} contradicts the eval transform's {size} px crop; drop one")
    rng = np.random.default_rng(seed)
    test = EvalImages(scan["test"], transform, size, skip_bad_images)
    if subset is not None and len(test) > subset:
        test = test.take(stratified_take(test.labels.numpy(), subset, rng))
    train = EvalImages(scan["train"], transform, size, skip_bad_images)
    if transform is not None:
        mean, std = transform.mean, transform.std
    else:
        picked = [test[int(i)] for i in rng.choice(len(test), min(256, len(test)), replace=False)]
        decoded = [image for image, label in picked if label >= 0]  # a skipped file is no statistic
        if not decoded:
            raise DataProblem(f"none of {len(picked)} sampled images of {scan['root']} could be read")
        mean, std = channel_stats(torch.stack(decoded))
    extra = {"eval_only": not scan["train"], "test_split": scan["test_split"],
             "eval_transform": transform.describe() if transform is not None else None,
             "class_index": str(class_index) if class_index is not None else None,
             "classes_in_folder": len(scan["present"]), "skip_bad_images": skip_bad_images}
    bundle = DatasetBundle(f"imagefolder:{scan['root']}", train, EvalImages([], transform, size), test,
                           len(scan["classes"]), 3, size, tuple(mean), tuple(std), tuple(scan["class_names"]),
                           str(scan["root"]), seed=seed, subset=subset, extra=extra)
    return bundle
