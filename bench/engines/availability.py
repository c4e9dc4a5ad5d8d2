"""What `rbench engines` shows: which engine, device and provider work here, and why the others don't."""

from __future__ import annotations

from typing import Any


def _row(engine: str, device: str, provider: str | None, ok: bool, why: str) -> dict[str, Any]:
    return {"engine": engine, "device": device, "provider": provider, "available": ok, "reason": why}


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
            rows.append(_row("ort", device, short, True, version))

    from bench.engines.openvino_engine import bf16_support, openvino_status

    ok, why = openvino_status()
    rows.append(_row("openvino", "cpu", None, ok, why))
    if ok:
        bf16, why = bf16_support()
        rows.append(_row("openvino bf16", "cpu", None, bf16, why))

    from export.tensorrt import trt_status

    ok, why = trt_status()
    rows.append(_row("trt", "cuda", None, ok, why))
    return rows
