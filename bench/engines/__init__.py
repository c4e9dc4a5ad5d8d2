"""Inference engines behind one contract (see `bench.engines.base.Engine`), and the factory.

    from bench.engines import create_engine
    with create_engine("ort", model=trained_model, input_shape=(1, 28, 28)) as engine:
        logits = engine.infer(batch)   # float32 NCHW numpy in, float32 numpy logits out

Importing this package imports neither torch's CUDA parts, onnxruntime nor TensorRT.
"""

from __future__ import annotations

from typing import Any

from bench.engines.base import DEVICES, PRECISIONS, Engine
from bench.errors import UsageProblem

#: engine name -> "module:Class"; the module is imported only when the engine is created.
ENGINES: dict[str, str] = {
    "torch": "bench.engines.torch_engine:TorchEngine",
    "ort": "bench.engines.ort_engine:OnnxRuntimeEngine",
    "trt": "bench.engines.trt_engine:TensorRTEngine",
}
ALIASES = {"pytorch": "torch", "onnxruntime": "ort", "tensorrt": "trt"}


def engine_class(name: str) -> type[Engine]:
    """The Engine subclass for `name` (torch | ort | trt)."""
    import importlib

    key = ALIASES.get(name.lower(), name.lower())
    if key not in ENGINES:
        raise UsageProblem(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    module_name, attr = ENGINES[key].split(":")
    return getattr(importlib.import_module(module_name), attr)


def create_engine(name: str, *, model=None, model_name: str | None = None, input_shape=(3, 32, 32), onnx_path=None,
                  engine_path=None, device: str = "cpu", precision: str = "fp32", **options: Any) -> Engine:
    """An inactive engine `name` for a module, a registry name or an exported file.

    Args:
        name: torch | ort | trt.
        model: an `nn.Module` (e.g. a trained checkpoint); exported on the fly for ort/trt.
        model_name: a registry name, built with random weights when `model` is None.
        input_shape: (C, H, W) of one image.
        onnx_path / engine_path: an existing ONNX file / TensorRT engine to run.
        device: cpu | cuda.  precision: fp32 | fp16 | bf16.
        options: backend options (compile, channels_last, cuda_graph, provider, threads,
            graph_optimization, max_batch, num_classes).
    """
    cls = engine_class(name)
    kwargs: dict[str, Any] = dict(model=model, model_name=model_name, input_shape=tuple(input_shape), device=device,
                                  precision=precision, **options)
    if onnx_path is not None:
        kwargs["onnx_path"] = onnx_path
    if engine_path is not None:
        kwargs["engine_path"] = engine_path
    return cls(**kwargs)


def engine_availability() -> list[dict[str, Any]]:
    """One row per engine x device x provider: whether it works on this machine, and why (not)."""
    from bench.engines.availability import availability

    return availability()


__all__ = ["DEVICES", "ENGINES", "PRECISIONS", "Engine", "create_engine", "engine_availability", "engine_class"]
