"""This machine's peak: dense matmul FLOP/s and copy bandwidth, measured once and cached.

Latency records divide achieved FLOP/s by this measured peak ("% of peak"), so every number
says how far it is from what this device reached on the easiest possible work. The peak is
what a library matmul reaches here (the faster of torch's and onnxruntime's on a CPU), not the
vendor's datasheet figure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.records.io import describe_machine, machine_slug

CACHE_VERSION = 1


def cache_path(device: str = "cpu") -> Path:
    from bench.cache import cache_root

    return cache_root() / f"device-{machine_slug()}-{device}.json"


def _best_of(fn, budget_s: float, min_runs: int = 3) -> float:
    """The shortest time of `fn()` over at least `min_runs` runs and about `budget_s` seconds."""
    best = float("inf")
    start = time.perf_counter()
    runs = 0
    while runs < min_runs or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return best


def _onnxruntime_matmul(lhs, rhs):
    """A callable running one fp32 MatMul in onnxruntime on the CPU, or None without onnxruntime."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    n = lhs.shape[0]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("a", "b", "c")]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", io[:2], io[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"a": lhs, "b": rhs}
    session.run(None, feed)
    return lambda: session.run(None, feed)


def measure_peak(device: str = "cpu", budget_s: float = 1.0, size: int | None = None) -> dict[str, Any]:
    """Peak matmul FLOP/s (fp32; also fp16 and bf16 on CUDA) and copy bandwidth on `device`.

    CPU: a 1024x1024 fp32 matmul (2*n^3 FLOPs) in torch (MKL) and in onnxruntime (MLAS), all
    threads, best of ~`budget_s` each; the peak is the faster library's figure.
    bandwidth from copying a 128 MiB tensor (read + write = 2 x bytes). CUDA: 8192x8192
    matmuls timed with synchronize, TF32 off for the fp32 figure, 1 GiB device copy.
    `size` overrides the matmul side (tests use a small one; a small matmul under-reports the peak).
    """
    import torch

    out: dict[str, Any] = {"device": device}
    if device == "cpu":
        # 1024 reaches the BLAS peak on a few cores in ~10 ms a run: many runs in the budget, so the
        # best of them catches a quiet moment on a shared machine.
        n = size or 1024
        lhs, rhs = torch.randn(n, n), torch.randn(n, n)
        torch.mm(lhs, rhs)
        by_library = {"torch.mm": 2 * n**3 / _best_of(lambda: torch.mm(lhs, rhs), budget_s)}
        ort_matmul = _onnxruntime_matmul(lhs.numpy(), rhs.numpy())
        if ort_matmul is not None:  # MKL takes slow paths on some AMD CPUs; MLAS may not
            by_library["onnxruntime MatMul"] = 2 * n**3 / _best_of(ort_matmul, budget_s)
        out["peak_flops_s_fp32"] = max(by_library.values())
        out["peak_flops_s_fp32_by_library"] = by_library
        src = torch.ones(32 * 2**20 if size is None else size * size)  # 128 MiB of fp32 by default
        dst = torch.empty_like(src)
        dst.copy_(src)
        seconds = _best_of(lambda: dst.copy_(src), budget_s / 2)
        out["memory_bandwidth_bytes_s"] = 2 * src.numel() * src.element_size() / seconds
        out["threads"] = torch.get_num_threads()
        out["method"] = f"best of torch.mm and onnxruntime MatMul {n}x{n}, and a {src.numel() * 4 / 2**20:g} MiB copy, ~{budget_s:g}s each"
        return out

    from bench.engines.torch_engine import check_cuda

    check_cuda()
    n = size or 8192
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            a = torch.randn(n, n, device="cuda", dtype=dtype)
            b = torch.randn(n, n, device="cuda", dtype=dtype)

            def run(a=a, b=b):
                torch.mm(a, b)
                torch.cuda.synchronize()

            run()
            out[f"peak_flops_s_{name}"] = 2 * n**3 / _best_of(run, budget_s)
            del a, b
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
    src = torch.ones(2**28, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)
        torch.cuda.synchronize()

    copy()
    out["memory_bandwidth_bytes_s"] = 2 * src.numel() * src.element_size() / _best_of(copy, budget_s)
    out["gpu"] = torch.cuda.get_device_name()
    out["method"] = f"best of torch.mm {n}x{n} per dtype (TF32 off) and a 1 GiB device copy, ~{budget_s:g}s each"
    return out


def device_peak(device: str = "cpu", refresh: bool = False, budget_s: float = 1.0,
                size: int | None = None) -> dict[str, Any]:
    """The cached peak of this machine's `device`, measured (and cached) when missing or on `refresh`.

    When the cache cannot be written the measured figure is still returned, with `cache_error`
    saying why it was not kept (`rbench device` turns that into an error: latency records read
    the peak from the cache only).
    """
    path = cache_path(device)
    if not refresh and path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("cache_version") == CACHE_VERSION:
                data["cached"] = True
                return data
        except (OSError, ValueError):
            pass
    data = measure_peak(device, budget_s, size)
    data["cache_version"] = CACHE_VERSION
    data["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        from bench.atomic import write_text

        write_text(path, json.dumps(data, indent=2))
    except OSError as exc:  # the figure is still returned; `cache_error` says it was not kept
        data["cache_error"] = f"cannot save it to {path}: {exc.strerror or exc}"
    data["cached"] = False
    return data


def peak_flops_for(peak: dict[str, Any] | None, precision: str) -> float | None:
    """The peak FLOP/s that matches a run's precision (fp32 when that precision was not measured)."""
    if not peak:
        return None
    return peak.get(f"peak_flops_s_{precision}") or peak.get("peak_flops_s_fp32")


def describe_device() -> dict[str, Any]:
    """The machine description of the records, plus the slug used in file names."""
    machine = dict(describe_machine())
    machine["slug"] = machine_slug()
    return machine
