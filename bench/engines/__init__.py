"""Inference engines behind one contract (see `bench.engines.base.Engine`), and the factory.

    from bench.engines import create_engine
    with create_engine("ort", trained_model, input_shape=(1, 28, 28)) as engine:
        logits = engine.infer(batch)   # float32 NCHW numpy in, float32 numpy logits out

Engines run finished artifacts (a module, an ONNX file or session, a TensorRT engine file);
`create_engine` is the convenience that calls the loaders of `bench.engines.sources` to make them.

Importing this package imports neither torch's CUDA parts, onnxruntime nor TensorRT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.engines.base import DEVICES, PRECISIONS, Engine
from bench.errors import UsageProblem

#: engine name -> "module:Class"; the module is imported only when the engine is created.
ENGINES: dict[str, str] = {
    "torch": "bench.engines.torch_engine:TorchEngine",
    "ort": "bench.engines.ort_engine:OnnxRuntimeEngine",
    "trt": "bench.engines.trt_engine:TensorRTEngine",
    "openvino": "bench.engines.openvino_engine:OpenVinoEngine",
}
ALIASES = {"pytorch": "torch", "onnxruntime": "ort", "tensorrt": "trt", "ov": "openvino"}
#: Engines that run an ONNX file (made by `bench.engines.sources.onnx_file` from a PyTorch source).
ONNX_ENGINES = ("ort", "openvino")


def engine_class(name: str) -> type[Engine]:
    """The Engine subclass for `name` (torch | ort | trt | openvino)."""
    import importlib

    key = ALIASES.get(name.lower(), name.lower())
    if key not in ENGINES:
        raise UsageProblem(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    module_name, attr = ENGINES[key].split(":")
    return getattr(importlib.import_module(module_name), attr)


def create_engine(name: str, source: Any, *, input_shape=None, device: str = "cpu", precision: str = "fp32",
                  workdir: str | Path | None = None, max_batch: int = 64, batch: int | None = None,
                  **options: Any) -> Engine:
    """An inactive engine `name` running `source`, made ready by the loaders in `bench.engines.sources`.

    Args:
        name: torch | ort | trt | openvino.
        source: anything `bench.engines.sources.resolve_source` takes (a zoo name, an `nn.Module`,
            `torchvision:NAME`, `package.module:callable`, an .onnx or engine path, a
            `ModelSource`), or an `onnxruntime.InferenceSession` for ort.
        input_shape: (C, H, W) of one image, for a module without a `config` or an ONNX file
            with symbolic axes.
        device: cpu | cuda.  precision: fp32 | fp16 | bf16 | int8 (int8: an .onnx Q/DQ file source).
        workdir: where a module's ONNX export (and TensorRT engine) go; a temporary folder that
            lives as long as the engine when None. A zoo model with random weights goes to the cache.
        max_batch: top of the TensorRT optimization profile when the engine is built here.
        batch: the one batch size the engine will run, when known: a net with dynamic convolution
            then gets a fixed-batch graph of its fast form (`bench.engines.sources.graph_batch`).
        options: the backend's own options (`Engine.OPTIONS`); any other name is a UsageProblem.
    """
    import tempfile

    from bench.engines.sources import check_engine_fits, engine_file, graph_batch, onnx_file, resolve_source

    cls = engine_class(name)
    unknown = sorted(set(options) - set(cls.OPTIONS))
    if unknown:
        raise UsageProblem(f"the {cls.backend} engine has no option {', '.join(map(repr, unknown))}; "
                           f"it takes {', '.join(cls.OPTIONS) or 'none'}")
    if cls.backend == "ort" and hasattr(source, "get_inputs") and hasattr(source, "run"):
        return cls(source, input_shape=input_shape, device=device, precision=precision, **options)
    src = resolve_source(source, input_shape=input_shape)
    check_engine_fits(src, cls.backend)
    if precision == "int8" and src.kind not in ("onnx", "trt"):
        raise UsageProblem(f"int8 runs a calibrated Q/DQ file, not {src.name} itself: make one with `rbench export "
                           f"{src.name} --precision int8 --checkpoint CKPT --calibration DATA` and measure the .onnx file")
    if cls.backend == "trt":
        from export.tensorrt import import_tensorrt

        import_tensorrt()  # no TensorRT: one line before anything is exported or built
    if cls.backend == "torch":
        engine = cls(src.module(), input_shape=src.input_shape, device=device, precision=precision, name=src.name,
                     **options)
    else:
        scratch = None
        if workdir is None and src.has_module:
            scratch = tempfile.TemporaryDirectory(prefix=f"rbench-{cls.backend}-")
            workdir = scratch.name
        if cls.backend in ONNX_ENGINES:
            # OpenVINO's bf16 is a compile setting on the fp32 file; int8 is the Q/DQ file itself (fp32 IO).
            file_precision = "fp32" if cls.backend == "openvino" and precision == "bf16" else precision
            artifact = onnx_file(src, file_precision, Path(workdir) if workdir else None, batch)
        else:
            artifact = engine_file(src, precision, max_batch, Path(workdir) if workdir else None, batch,
                                   tf32=bool(options.get("tf32")))
        extra = {}
        if cls.backend == "ort" and device == "cuda":
            # The TensorRT provider's profile: tuned for the batch about to be measured, up to the sweep's largest.
            top = max(max_batch, batch or 1)
            extra["batch_range"] = (1, batch or min(8, top), top)
        engine = cls(artifact, input_shape=src.input_shape, device=device, precision=precision, name=src.name,
                     **extra, **options)
        engine._scratch = scratch  # an export made for this engine lives (and is removed) with it
        fixed = graph_batch(src, batch)
        engine.artifact = {"path": str(artifact), "graph_batch": fixed or "dynamic",
                           "why": "dynamic convolution's fast form needs a fixed batch" if fixed else None}
    engine.source = src
    return engine


def engine_availability() -> list[dict[str, Any]]:
    """One row per engine x device x provider: whether it works on this machine, and why (not)."""
    from bench.engines.availability import availability

    return availability()


__all__ = ["DEVICES", "ENGINES", "ONNX_ENGINES", "PRECISIONS", "Engine", "create_engine", "engine_availability", "engine_class"]
