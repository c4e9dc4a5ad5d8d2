"""What a serve run serves: the model source and the real samples (test split or image folder) it is fed.

With a checkpoint, the model and its data set come from it, normalized as `rbench accuracy` normalizes
them, so accuracy mode scores the very tensors `rbench accuracy` scores. Without one, the model is any
source `resolve_source` takes (random weights for a zoo name) and the samples come from `dataset`
(default: scikit-learn's digits, always offline), resized and given the model's channel count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageProblem
from bench.scenarios.serve.qsl import SampleLibrary

#: The data set served when neither a checkpoint nor --dataset names one.
DEFAULT_DATASET = "digits"


@dataclass
class ServedModel:
    """A resolved model source with its samples and what a record says about them."""

    source: Any  # bench.engines.sources.ModelSource
    library: SampleLibrary
    dataset: dict[str, Any]
    num_classes: int
    class_names: tuple[str, ...] | None
    checkpoint: str | None = None


def load_served(model: Any, *, checkpoint: str | Path | None = None, dataset: str | None = None,
                data_root: str | Path | None = None, eval_transform: str | None = None, samples: int | None = None,
                performance_count: int = 1024) -> ServedModel:
    """The model source and a `SampleLibrary` over the test split it is served with.

    Args:
        model: a source for `resolve_source` (zoo name, module, .onnx, ...); with `checkpoint`, the zoo name
            the checkpoint must hold.
        checkpoint: an `rbench train` checkpoint (or torchvision state dict) whose weights and data set are used.
        dataset: the data set (`bench.data.DATASETS`, `imagefolder:PATH`); default the checkpoint's, else digits.
        eval_transform: torchvision's evaluation preset for an image folder (`imagenet`, `imagenet:R:C`).
        samples: serve at most this many test images (a stratified subset).
        performance_count: most samples LoadGen keeps in memory in a performance run.
    """
    from bench.data import load_dataset
    from bench.engines.sources import resolve_source

    if samples is not None and samples < 2:
        raise UsageProblem(f"--samples must be at least 2, got {samples}")
    if checkpoint is not None:
        from bench.accuracy.evaluate import batches_for_checkpoint, dataset_for_checkpoint, load_trained_model

        name = model if isinstance(model, str) and not Path(model).suffix else None
        trained = load_trained_model(checkpoint, model_name=name)
        bundle = dataset_for_checkpoint(trained, dataset, root=str(data_root) if data_root else None, subset=samples,
                                        eval_transform=eval_transform)
        batches = batches_for_checkpoint(trained, bundle, 1)  # the checks and normalization `rbench accuracy` uses
        mean, std = batches.mean, batches.std
        source = resolve_source(trained.model, input_shape=trained.input_shape, name=trained.config.get("name"))
        source.checkpoint = str(checkpoint)
        source.config = dict(trained.config)
    else:
        source = resolve_source(model)
        if source.input_shape is None:
            raise UsageProblem(f"{source.name} is a TensorRT engine: its input shape is read when it is opened; "
                               "serve the .onnx file or the model instead")
        chans, size = source.input_shape[0], source.input_shape[1]
        name = dataset or DEFAULT_DATASET
        folder = name.lower().startswith("imagefolder:")
        if eval_transform is not None and not folder:
            raise UsageProblem(f"--eval-transform applies to imagefolder:PATH, not {name}")
        channels = None if chans == 1 or (folder and eval_transform) else "RGB"[:chans] if chans <= 3 else None
        bundle = load_dataset(name, root=data_root, subset=samples, input_size=None if eval_transform else size,
                              channels=channels, eval_only=True, eval_transform=eval_transform)
        if bundle.input_shape != tuple(source.input_shape):
            raise UsageProblem(f"{source.name} takes {tuple(source.input_shape)} images, {bundle.name} gives "
                               f"{bundle.input_shape}; pick a matching --dataset / --eval-transform")
        mean, std = bundle.mean, bundle.std
    library = SampleLibrary(bundle.test, mean, std, name=f"{bundle.name} test", performance_count=performance_count)
    description = {"name": bundle.name, "source": bundle.source, "split": "test", "samples": library.total_count,
                   "num_classes": bundle.num_classes, "input_shape": list(bundle.input_shape),
                   "mean": list(mean), "std": list(std)}
    return ServedModel(source, library, description, bundle.num_classes, tuple(bundle.class_names or ()) or None,
                       str(checkpoint) if checkpoint is not None else None)
