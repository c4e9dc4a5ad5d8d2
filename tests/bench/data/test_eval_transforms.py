"""bench.data.transforms: rbench's evaluation preset equals torchvision's own weights.transforms(), to the last bit.

The reference is what torchvision's published accuracies were measured with: `datasets.ImageFolder`
(PIL, converted to RGB) and `ResNet50_Weights.IMAGENET1K_V1/V2.transforms()`; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import ResNet50_Weights

from bench.data import EvalBatches, load_eval_folder, normalize_batch, parse_eval_transform
from bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from bench.errors import UsageProblem

#: (width, height, mode): portrait, landscape, square, smaller than the crop, odd sizes; L and RGBA too.
IMAGES = [(300, 200, "RGB"), (200, 333, "RGB"), (256, 256, "L"), (500, 120, "RGBA"), (150, 180, "RGB"),
          (231, 257, "L"), (224, 224, "RGBA"), (640, 427, "P")]


def _image(width: int, height: int, mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: interpolation differences would show, unlike on flat colours.
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 / width), (yy * 255 / height), ((xx + yy) % 256)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
        image = image.copy()
        image.putalpha(alpha)
        return image
    return image.convert(mode)


def _ours(preset: EvalTransform, image: Image.Image) -> torch.Tensor:
    """rbench's path: RGB, resize + crop per image (uint8), then scale and normalize the batch."""
    uint8 = preset.pil_transform()(image.convert("RGB"))
    assert uint8.dtype == torch.uint8 and uint8.shape == (3, preset.crop_size, preset.crop_size)
    return normalize_batch(uint8.unsqueeze(0), preset.mean, preset.std)[0]


def _assert_last_place(ours: torch.Tensor, reference: torch.Tensor) -> None:
    """Equal within one unit in the last place of float32."""
    assert ours.shape == reference.shape and ours.dtype == reference.dtype == torch.float32
    ulp = np.spacing(np.maximum(np.abs(ours.numpy()), np.abs(reference.numpy())))
    assert np.all(np.abs(ours.numpy() - reference.numpy()) <= ulp)


@pytest.mark.parametrize("weights, spec", [(ResNet50_Weights.IMAGENET1K_V1, "imagenet"),
                                           (ResNet50_Weights.IMAGENET1K_V2, "imagenet:232:224")])
def test_preset_equals_torchvision_weights_transforms(weights, spec):
    reference_transform = weights.transforms()
    preset = parse_eval_transform(spec)
    assert (preset.resize_size, preset.crop_size) == (reference_transform.resize_size[0], reference_transform.crop_size[0])
    assert list(preset.mean) == list(reference_transform.mean) and list(preset.std) == list(reference_transform.std)
    for seed, (width, height, mode) in enumerate(IMAGES):
        image = _image(width, height, mode, seed)
        # torchvision's ImageFolder loader converts to RGB before the transform, as ours does.
        reference = reference_transform(image.convert("RGB"))
        _assert_last_place(_ours(preset, image), reference)


def test_folder_path_equals_torchvision_imagefolder(tmp_path):
    """The lazy folder loader with workers gives torchvision ImageFolder + weights.transforms(), file by file."""
    from torchvision.datasets import ImageFolder

    for seed, (width, height, mode) in enumerate(IMAGES[:6]):
        folder = tmp_path / "val" / ("b_class" if seed % 2 else "a_class")
        folder.mkdir(parents=True, exist_ok=True)
        fmt = "png" if mode in ("RGBA", "P") else "jpg"
        _image(width, height, mode, seed).save(folder / f"{seed}.{fmt}")
    weights = ResNet50_Weights.IMAGENET1K_V2
    reference = ImageFolder(tmp_path / "val", transform=weights.transforms())
    bundle = load_eval_folder(tmp_path, parse_eval_transform("imagenet:232:224"))
    assert bundle.class_names == tuple(reference.classes) and bundle.input_size == 224
    batches = EvalBatches(bundle.test, 4, bundle.mean, bundle.std, workers=2)
    ours = list(batches)
    x = torch.cat([b[0] for b in ours])
    labels = torch.cat([b[1] for b in ours])
    assert batches.images == len(reference) == 6 and not batches.skipped
    for i, (expected, label) in enumerate(reference):
        assert int(labels[i]) == label
        _assert_last_place(x[i], expected)


def test_preset_spec_and_bad_crop():
    assert parse_eval_transform("imagenet") == EvalTransform(256, 224, IMAGENET_MEAN, IMAGENET_STD)
    assert parse_eval_transform("none") is None and parse_eval_transform(None) is None
    preset = parse_eval_transform("imagenet:232:224")
    assert parse_eval_transform(preset.spec) == preset == parse_eval_transform(preset.describe())
    with pytest.raises(UsageProblem, match="crop must not be larger than the resize"):
        parse_eval_transform("imagenet:224:256")
    with pytest.raises(UsageProblem, match="unknown --eval-transform"):
        parse_eval_transform("inception")
