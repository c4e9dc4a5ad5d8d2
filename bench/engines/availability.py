"""What `rbench engines` shows: which engine, device and provider work here, and why the others don't."""

from __future__ import annotations

from typing import Any

#: onnxruntime's TensorRT provider links one TensorRT major; TensorRT 11 needs onnxruntime-gpu 1.27 or newer.
ORT_FLOOR_FOR_TRT = {11: (1, 27)}


def _row(engine: str, device: str, provider: str | None, ok: bool, why: str,
         warnings: list[str] | None = None) -> dict[str, Any]:
    return {"engine": engine, "device": device, "provider": provider, "available": ok, "reason": why,
            "warnings": list(warnings or [])}


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def trt_row() -> dict[str, Any]:
    """TensorRT: usable or not, and what it runs on (wheel flavour, CUDA runtime, driver), with mismatches."""
    from bench.errors import MissingDependency
    from export.tensorrt import cuda_stack, import_tensorrt, trt_status

    ok, why = trt_status()
    try:
        import_tensorrt()
    except MissingDependency:
        return _row("trt", "cuda", None, ok, why)
    stack = cuda_stack()
    why = (f"{why}; wheel {stack['flavour'] or 'unknown (not a pip wheel?)'}, CUDA runtime {stack['cuda_runtime'] or '?'}, "
           f"driver supports CUDA {stack['driver_cuda'] or '?'}")
    return _row("trt", "cuda", None, ok, why, stack["warnings"])


def ort_tensorrt_warnings(ort_version: str | None) -> list[str]:
    """Why onnxruntime's TensorRT provider cannot load the installed TensorRT (empty when it can or there is none)."""
    try:
        from export.tensorrt import import_tensorrt, trt_major_of

        major = trt_major_of(import_tensorrt().__version__)
    except Exception:  # noqa: BLE001 - no TensorRT: nothing to warn about
        return []
    floor = ORT_FLOOR_FOR_TRT.get(major)
    if ort_version and floor and _version_tuple(ort_version) < floor:
        return [f"TensorRT {major} needs onnxruntime-gpu>={'.'.join(map(str, floor))} for the tensorrt provider "
                f"(this is {ort_version})"]
    return []


def availability() -> list[dict[str, Any]]:
    """Rows for torch (cpu, cuda, precisions), onnxruntime (each provider), OpenVINO and TensorRT."""
    import torch

    from bench.engines.torch_engine import cpu_precision_support

    rows = []
    cuda = torch.cuda.is_available()
    cuda_why = (f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})" if cuda else
                "torch was built without CUDA" if torch.version.cuda is None else f"torch (CUDA {torch.version.cuda}) sees no GPU")
    rows.append(_row("torch", "cpu", None, True, f"torch {torch.__version__}, {torch.get_num_threads()} threads"))
    for precision in ("bf16", "fp16"):
        ok, why = cpu_precision_support(precision)
        rows.append(_row(f"torch {precision}", "cpu", None, ok, why))
    rows.append(_row("torch", "cuda", None, cuda, cuda_why))

    try:
        import onnxruntime as ort

        have = ort.get_available_providers()
        version = f"onnxruntime {ort.__version__}"
    except ImportError:
        have, version = [], None
    from bench.engines.ort_engine import PROVIDERS

    for short, full in PROVIDERS.items():
        device = "cpu" if short == "cpu" else "cuda"
        if version is None:
            rows.append(_row("ort", device, short, False, "onnxruntime is not installed: pip install onnxruntime"))
        elif full not in have:
            rows.append(_row("ort", device, short, False,
                             f"{version} lacks {full}: install onnxruntime-gpu instead (pip install 'rbench[gpu]')"))
        elif device == "cuda" and not cuda:
            rows.append(_row("ort", device, short, False, f"{full} is installed but no GPU: {cuda_why}"))
        else:
            warnings = ort_tensorrt_warnings(ort.__version__) if short == "tensorrt" else []
            rows.append(_row("ort", device, short, True, version, warnings))

    from bench.engines.openvino_engine import bf16_support, openvino_status

    ok, why = openvino_status()
    rows.append(_row("openvino", "cpu", None, ok, why))
    if ok:
        bf16, why = bf16_support()
        rows.append(_row("openvino bf16", "cpu", None, bf16, why))

    rows.append(trt_row())
    return rows
