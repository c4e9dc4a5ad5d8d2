"""scikit-learn's bundled 8x8 digits (1797 images, always offline), upsampled to 32x32 by default.

Having no test split of its own, a fixed stratified 20 % is held out as the test split; the
`seed` moves only the subset and the validation carve-out, so every run tests on the same images.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bench.data.common import DatasetBundle, SplitSettings, finish_tensor_bundle, stratified_split

DIGITS_INPUT_SIZE = 32
_TEST_SPLIT_SEED = 12345


def load_digits(settings: SplitSettings) -> DatasetBundle:
    """The digits bundle (input size `settings.input_size`, else 32)."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    # Pixel values are 0..16; scale to the uint8 range every other data set uses.
    images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = digits.target.astype(np.int64)
    rest, held = stratified_split(labels, 0.2, np.random.default_rng(_TEST_SPLIT_SEED))
    settings = dataclasses.replace(settings, input_size=settings.input_size or DIGITS_INPUT_SIZE)
    return finish_tensor_bundle(
        "digits", images[rest], torch.from_numpy(labels[rest]), images[held], torch.from_numpy(labels[held]),
        "sklearn.datasets.load_digits (bundled)", [str(i) for i in range(10)], settings)
