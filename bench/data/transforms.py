"""Evaluation presets equal to torchvision's: resize the shorter side, centre-crop, normalize with fixed constants.

    >>> preset = parse_eval_transform("imagenet")          # resize 256, crop 224 (torchvision's V1 weights)
    >>> preset = parse_eval_transform("imagenet:232:224")  # ResNet-50 IMAGENET1K_V2
    >>> image = preset.decode("val/n01440764/x.JPEG")       # uint8 (3, 224, 224), before normalization

torchvision's published accuracies (`ResNet50_Weights.IMAGENET1K_V1.meta["_metrics"]`) come from
its reference script: `datasets.ImageFolder` opens each file with PIL and converts it to RGB (so a
greyscale or RGBA file becomes 3-channel RGB), then `weights.transforms()` resizes the PIL image's
shorter side with PIL's bilinear filter (which antialiases), centre-crops, scales to 0..1 and
normalizes with the ImageNet mean and std. `EvalTransform` does exactly those steps, with
torchvision's own v2 transforms on the PIL image; only the last two (scale and normalize) run on
whole uint8 batches (`bench.data.normalize_batch`), which computes them in the same order and
dtype, so the tensors agree to the last bit (tests/bench/test_eval_transforms.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from bench.errors import DataProblem, UsageProblem

#: The ImageNet statistics every torchvision classification weight was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = ("imagenet", "imagenet:RESIZE:CROP")
_SPEC = re.compile(r"imagenet(?::(\d+):(\d+))?")


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to `resize_size` (bilinear, antialiased), centre-crop `crop_size`, then
    normalize with `mean` and `std` (0..1 scale)."""

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    name: str = "imagenet"

    def __post_init__(self):
        if self.crop_size < 4:
            raise UsageProblem(f"the eval crop must be at least 4 pixels, got {self.crop_size}")
        if self.crop_size > self.resize_size:
            raise UsageProblem(f"--eval-transform crops {self.crop_size} px from images resized to {self.resize_size} "
                               f"px: the crop must not be larger than the resize (e.g. imagenet:256:224)")

    @property
    def spec(self) -> str:
        """The `--eval-transform` value that gives this preset back."""
        return f"{self.name}:{self.resize_size}:{self.crop_size}"

    def describe(self) -> dict[str, Any]:
        """Plain data for records, checkpoints and `from_dict`."""
        return {"name": self.name, "resize_size": self.resize_size, "crop_size": self.crop_size,
                "interpolation": "bilinear", "antialias": True, "mean": list(self.mean), "std": list(self.std),
                "convert": "RGB"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalTransform:
        return cls(int(data["resize_size"]), int(data["crop_size"]), tuple(data.get("mean", IMAGENET_MEAN)),
                   tuple(data.get("std", IMAGENET_STD)), str(data.get("name", "imagenet")))

    def pil_transform(self):
        """torchvision v2 transforms from an RGB PIL image to the uint8 (3, crop, crop) tensor."""
        from torchvision.transforms import v2

        return v2.Compose([
            v2.Resize(self.resize_size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
            v2.CenterCrop(self.crop_size),
            v2.PILToTensor(),
        ])

    def decode(self, path: str, transform=None) -> torch.Tensor:
        """The uint8 (3, crop, crop) tensor of the image file at `path`; an unreadable file raises DataProblem."""
        image = open_rgb(path)
        return (transform or self.pil_transform())(image)


def open_rgb(path: str):
    """The image at `path` as an RGB PIL image, as torchvision's ImageFolder loader opens it.

    Every image rbench reads is opened here, so every way a file can fail (not an image, cut short,
    more pixels than PIL's decompression-bomb limit) is one DataProblem naming the file, which
    `--skip-bad-images` can skip."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() decodes while the file is open
    except UnidentifiedImageError:
        raise DataProblem(f"cannot read image {path}: not an image file PIL can identify") from None
    except Image.DecompressionBombError as exc:
        raise DataProblem(f"cannot read image {path}: {exc} (PIL's guard against oversized images: shrink the "
                          "file, or raise PIL.Image.MAX_IMAGE_PIXELS if it is trusted)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises all three on truncated or broken files
        raise DataProblem(f"cannot read image {path}: {exc}") from None


def parse_eval_transform(spec: str | dict[str, Any] | EvalTransform | None) -> EvalTransform | None:
    """`imagenet` (resize 256, crop 224) or `imagenet:RESIZE:CROP` -> EvalTransform; None/'none' -> None.

    A dict is a preset as `EvalTransform.describe` wrote it (a checkpoint that carries its own)."""
    if spec is None or isinstance(spec, EvalTransform):
        return spec
    if isinstance(spec, dict):
        return EvalTransform.from_dict(spec)
    text = str(spec).strip().lower()
    if text in ("", "none"):
        return None
    match = _SPEC.fullmatch(text)
    if not match:
        raise UsageProblem(f"unknown --eval-transform {spec!r}; use imagenet (resize 256, crop 224) or "
                           "imagenet:RESIZE:CROP such as imagenet:232:224")
    if match.group(1) is None:
        return EvalTransform()
    return EvalTransform(int(match.group(1)), int(match.group(2)))
