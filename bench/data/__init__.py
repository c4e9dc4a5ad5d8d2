"""Data sets by name, held as uint8 image tensors, with seeded splits and batch-level augmentation.

    >>> bundle = load_dataset("digits", subset=600, input_size=16)
    >>> loaders = make_loaders(bundle, batch_size=64, augment=("crop", "flip"))
    >>> for images, labels in loaders.train: ...   # float32 NCHW, normalized

Names (`DATASETS`), one module each:
- `fashion-mnist` (`fashion_mnist.py`): the real 60k/10k Fashion-MNIST, read from IDX files
  (`.gz` or not) in the folder `find_fashion_mnist(root)` names: `root`, else `$RBENCH_DATA`,
  else `/usr/share/datasets/fashion-mnist/` (Debian package `dataset-fashion-mnist`). Only
  `download=True` reaches the network (torchvision's downloader, into `root` or `~/.cache/rbench`).
- `digits` (`digits.py`): scikit-learn's bundled 8x8 digits (1797 images, always offline),
  upsampled to 32x32 by default; a fixed stratified 20 % is the test split.
- `cifar10` (`cifar10.py`): torchvision's CIFAR-10 from a local `root` (`cifar-10-batches-py/`);
  `download=True` fetches it.
- `imagefolder:PATH` (`imagefolder.py`): an ImageFolder tree `PATH/{train,val,test}/<class>/<image>`.
  For evaluation only (`eval_only=True`: accuracy, ladder, int8 calibration) it may hold just `val/`
  or just class folders, and with `eval_transform` ('imagenet', torchvision's resize-256-crop-224
  preset, `transforms.py`), `class_index` or `skip_bad_images` it is read by `evalfolder.py`:
  decoded lazily by DataLoader workers, never preloaded.

Every split's items are `(uint8 tensor (C, H, W), int label)`; normalization (per-channel mean and
std measured on the training split, as the network sees it) is applied on whole batches by
`make_loaders` / `normalize_batch` (`batches.py`), together with augmentation, because per-item
transforms cost more than the convolutions on a 2-core CPU. The validation split is always carved
from train, stratified and seeded; `subset=N` keeps N stratified training+validation images (and at
most N test images) for quick runs. The same `seed` gives the same splits on every machine.

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

The names below are re-exported from the modules that define them; a test that patches a
module-level setting patches it there (`bench.data.fashion_mnist.DEFAULT_FASHION_ROOT`,
`bench.data.imagefolder.PRELOAD_BYTES`), where the code reads it.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.data.batches import (
    AUGMENTATIONS,
    Batches,
    Loaders,
    augment_batch,
    make_loaders,
    normalize_batch,
    parse_augment,
)
from bench.data.cifar10 import CIFAR10_CLASSES, load_cifar10
from bench.data.common import (
    CHANNEL_MODES,
    DatasetBundle,
    SplitSettings,
    TensorImages,
    apply_channels,
    channel_stats,
    channels_out,
    parse_channels,
)
from bench.data.digits import load_digits
from bench.data.evalfolder import (
    EvalBatches,
    EvalImages,
    default_workers,
    load_eval_folder,
    read_class_index,
    scan_eval_folder,
)
from bench.data.fashion_mnist import (
    DEFAULT_FASHION_ROOT,
    FASHION_CLASSES,
    fashion_mnist_roots,
    find_fashion_mnist,
    load_fashion_mnist,
    read_idx,
)
from bench.data.imagefolder import IMAGE_SUFFIXES, PRELOAD_BYTES, FolderImages, load_imagefolder
from bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, parse_eval_transform
from bench.errors import UsageProblem

DATASETS = ("fashion-mnist", "digits", "cifar10", "imagefolder:PATH")

__all__ = [
    "AUGMENTATIONS", "CHANNEL_MODES", "CIFAR10_CLASSES", "DATASETS", "DEFAULT_FASHION_ROOT", "FASHION_CLASSES",
    "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_SUFFIXES", "PRELOAD_BYTES", "Batches", "DatasetBundle", "EvalBatches",
    "EvalImages", "EvalTransform", "FolderImages", "Loaders", "SplitSettings", "TensorImages", "apply_channels",
    "augment_batch", "channel_stats", "channels_out", "default_workers", "fashion_mnist_roots", "find_fashion_mnist", "load_dataset",
    "load_eval_folder", "make_loaders", "normalize_batch", "parse_augment", "parse_channels", "parse_eval_transform",
    "read_class_index", "read_idx", "scan_eval_folder",
]


def load_dataset(name: str, root: str | os.PathLike | None = None, subset: int | None = None, seed: int = 0,
                 val_fraction: float = 0.1, input_size: int | None = None, channels: str | None = None,
                 download: bool = False, channel_mode: str = "select", *, eval_only: bool = False,
                 eval_transform: str | EvalTransform | None = None, class_index: str | os.PathLike | None = None,
                 skip_bad_images: bool = False) -> DatasetBundle:
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
        eval_only: the caller only evaluates (accuracy, ladder, calibration): an image folder may then
            lack train/ (only val/, or only class folders), and is decoded lazily (`load_eval_folder`).
        eval_transform: 'imagenet' or 'imagenet:RESIZE:CROP' (an `EvalTransform`): torchvision's
            evaluation preprocessing and normalization, for image folders (implies lazy decoding).
        class_index: a class-index JSON file giving the label order of an image folder's classes.
        skip_bad_images: drop (and count) unreadable files of an evaluation folder instead of stopping.

    Raises:
        UsageProblem: unknown name or bad option. DataProblem: files missing or inconsistent.
    """
    settings = _check_settings(subset, seed, val_fraction, input_size, channels, channel_mode)
    transform = parse_eval_transform(eval_transform)
    key = name.lower()
    evaluation_options = transform is not None or class_index is not None or skip_bad_images
    if evaluation_options and not key.startswith("imagefolder:"):
        raise UsageProblem(f"--eval-transform, --class-index and --skip-bad-images apply to imagefolder:PATH, not {name}")
    if evaluation_options and not eval_only:
        raise UsageProblem("--eval-transform, --class-index and --skip-bad-images apply to evaluation "
                           "(accuracy, ladder, calibration), not to training")
    if key in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return load_fashion_mnist(root, download, settings)
    if key == "digits":
        return load_digits(settings)
    if key in ("cifar10", "cifar-10"):
        return load_cifar10(root, download, settings)
    if key.startswith("imagefolder:"):
        path = name.split(":", 1)[1]
        if not path:
            raise UsageProblem("imagefolder needs a path: imagefolder:PATH")
        folder = Path(path).expanduser()
        if eval_only and (evaluation_options or not (folder / "train").is_dir()):
            if settings.channels is not None:
                raise UsageProblem("channel subsets need a folder with train/; an evaluation folder gives RGB")
            return load_eval_folder(folder, transform, input_size, class_index, subset, seed, skip_bad_images)
        return load_imagefolder(folder, settings)
    raise UsageProblem(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _check_settings(subset: int | None, seed: int, val_fraction: float, input_size: int | None,
                    channels: str | None, channel_mode: str) -> SplitSettings:
    """The options every data set shares, checked (one-line UsageProblem) and with the channel subset normalized."""
    channels = parse_channels(channels)
    if channel_mode not in CHANNEL_MODES:
        raise UsageProblem(f"unknown channel mode {channel_mode!r}; choose one of {', '.join(CHANNEL_MODES)}")
    if not 0.0 < val_fraction < 1.0:
        raise UsageProblem(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if subset is not None and subset < 2:
        raise UsageProblem(f"subset must be at least 2 images, got {subset}")
    if input_size is not None and input_size < 4:
        raise UsageProblem(f"input size must be at least 4 pixels, got {input_size}")
    return SplitSettings(subset, seed, val_fraction, input_size, channels, channel_mode)
