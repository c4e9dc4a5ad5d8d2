"""How to measure (`Settings`) and the checks of a measuring request: the engines, the batch sizes, and whether
this machine can serve them (`check_environment`), before anything is loaded or timed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.errors import EnvironmentProblem, UsageProblem

#: Timed runs per batch when neither iters nor a duration is given.
DEFAULT_ITERS = 50


#: torch on a CPU with no --threads takes one thread while a batch's multiply-accumulates per weighted layer (conv,
#: linear) stay at or under this, and every usable core above it. torch parallelises inside each op, so what a second
#: thread can share is one layer's work: on the 2-core VMs the CIFAR ResNets (2.1 to 2.3M MACs per layer at batch 1)
#: were never measurably faster with 2 threads, and 2 threads fell into process-long slow modes that one thread did
#: not, while ResNet-18 at 64x64 (7.1M per layer, about as many MACs in all as resnet56) was 1.43x faster with 2
#: (results/thread-check-*/table.md).
TORCH_ONE_THREAD_LAYER_MACS = 4e6

#: Where entries are timed: fresh worker processes, this process, or the one that fits the call.
TIMING_MODES = ("auto", "workers", "in-process")
#: The environment variable that sets the default timing mode (the test suite's fast tests run in-process).
TIMING_ENV = "RBENCH_TIMING"

#: on_progress(engine, batch) -> on_iteration(done, elapsed_s) or None.
ProgressFactory = Callable[[str, int], Callable[[int, float], None] | None]

#: Why `--engine ort --precision fp16` is refused on a CPU without fp16 arithmetic, and what works instead
#: (onnxruntime takes no bf16, so the torch advice "--precision bf16" would be refused in turn).
ORT_CPU_FP16 = ("fp16 on CPU with onnxruntime: this CPU has no fp16 arithmetic (avx512_fp16/amx_fp16), so "
                "onnxruntime's CPU provider casts the model back to fp32 and the figure would time fp32 kernels plus "
                "the casts; measure --engine ort --precision fp32, or --engine torch --precision bf16 for reduced "
                "precision on this CPU, or fp16 on a GPU with --device cuda")


@dataclass
class Settings:
    """How to measure: everything a latency run depends on besides the model and the engines."""

    precision: str = "fp32"
    device: str = "cpu"
    warmup: int = 10
    warmup_s: float = 0.0
    iters: int | None = None
    duration_s: float | None = None
    include_transfers: bool = False
    threads: int | None = None
    compile: bool = False
    channels_last: bool = False
    cuda_graph: bool = False
    tf32: bool = False  # fp32 may use TF32 (torch, onnxruntime CUDA, TensorRT); off: strict fp32 on every engine
    device_id: int | None = None  # the CUDA device onnxruntime runs on
    provider: str | None = None
    graph_optimization: str = "all"
    rounds: int = 10  # interleaved rounds when several models or engines are timed together
    require_quiet: bool = False  # refuse to time (or keep) figures from a machine other work competes for
    # Where entries are timed (`bench.measure.workers`): "workers" (fresh processes), "in-process", or "auto"
    # (workers for comparisons and several engines; in-process for one engine, or a module that does not pickle).
    timing: str = dataclasses.field(default_factory=lambda: os.environ.get(TIMING_ENV, "auto"))
    workers: int = 4  # the fewest worker processes per entry; more follow until the precision target
    precision_target: float = 0.03  # stop adding workers once every ratio's interval is within +/- this
    max_time_s: float = 60.0  # ... or once this many seconds of worker timing have passed (0: `workers` only)
    worker_timeout_s: float = 120.0  # a worker silent this long in one round is killed (starting: START_TIMEOUT_S at least)
    # At batch 1 on a CPU with the default threads, also time each engine's first entry at one thread, in the same
    # worker generations, and say when the default's threads are no faster (`bench.measure.workers.thread_check`)
    thread_check: bool = False

    def validate(self) -> None:
        # NaN passes every comparison below and an infinite duration never ends the timed loop: refuse both first.
        for name, value in (("warm-up seconds", self.warmup_s), ("--duration", self.duration_s)):
            if value is not None and not math.isfinite(value):
                raise UsageProblem(f"{name} must be a finite number of seconds, got {value}")
        if self.warmup < 0 or self.warmup_s < 0:
            raise UsageProblem("warm-up must be zero or more runs / seconds")
        if self.iters is not None and self.duration_s is not None:
            raise UsageProblem("give --iters or --duration, not both")
        if self.iters is not None and self.iters < 1:
            raise UsageProblem(f"--iters must be at least 1, got {self.iters}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise UsageProblem(f"--duration must be positive, got {self.duration_s}")
        if self.threads is not None and self.threads < 1:
            raise UsageProblem(f"--threads must be at least 1, got {self.threads}")
        if self.timing not in TIMING_MODES:
            raise UsageProblem(f"timing is one of {', '.join(TIMING_MODES)}, got {self.timing!r}")
        if self.workers < 1:
            raise UsageProblem(f"--workers must be at least 1, got {self.workers}")
        for name, value in (("--precision-target", self.precision_target), ("worker timeout", self.worker_timeout_s)):
            if not math.isfinite(value) or value <= 0:
                raise UsageProblem(f"{name} must be a positive number, got {value}")
        if not math.isfinite(self.max_time_s) or self.max_time_s < 0:  # 0: exactly `workers` workers
            raise UsageProblem(f"--max-time must be zero or more seconds, got {self.max_time_s}")
        if self.precision_target >= 1:
            raise UsageProblem(f"--precision-target is a fraction like 0.03, got {self.precision_target}")
        if self.rounds < 1:
            raise UsageProblem(f"--rounds must be at least 1, got {self.rounds}")
        if self.device_id is not None and self.device_id < 0:
            raise UsageProblem(f"--device-id must be 0 or more, got {self.device_id}")

    def threads_for(self, engine: str, layer_macs: float | None) -> tuple[int | None, str]:
        """The intra-op threads `engine` gets for a batch of `layer_macs` multiply-accumulates per weighted layer
        (`layer_macs()`; None: unknown), and why: --threads when given; torch on a CPU, a batch of at most
        TORCH_ONE_THREAD_LAYER_MACS per layer: one thread; otherwise None, the engine's own default (every core)."""
        if self.threads is not None:
            return self.threads, "--threads"
        if engine == "torch" and self.device == "cpu" and layer_macs is not None \
                and layer_macs <= TORCH_ONE_THREAD_LAYER_MACS:
            return 1, (f"torch's default for a batch of at most {TORCH_ONE_THREAD_LAYER_MACS / 1e6:g}M "
                       f"multiply-accumulates per layer ({layer_macs / 1e6:.3g}M here): one thread")
        return None, "the engine's default: every usable core"

    def engine_options(self, engine: str, layer_macs: float | None = None) -> dict[str, Any]:
        """The options `engine` takes, from these settings (`create_engine` refuses any other); `layer_macs`
        (a batch's multiply-accumulates per weighted layer) decides torch's default threads (`threads_for`)."""
        if engine == "torch":
            return {"threads": self.threads_for(engine, layer_macs)[0], "compile": self.compile,
                    "channels_last": self.channels_last, "cuda_graph": self.cuda_graph, "tf32": self.tf32}
        if engine == "ort":
            return {"threads": self.threads, "provider": self.provider, "graph_optimization": self.graph_optimization,
                    "tf32": self.tf32, "device_id": self.device_id}
        if engine == "openvino":
            return {"threads": self.threads}
        return {"cuda_graph": self.cuda_graph, "tf32": self.tf32}

    def as_record(self) -> dict[str, Any]:
        """The settings a record keeps: only those that are set."""
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}


def layer_macs(costs: dict[str, Any] | None, batch: int) -> float | None:
    """A batch's multiply-accumulates per weighted layer (conv, linear) from `model_costs`, or None where either is
    unknown (they decide torch's default threads: `Settings.threads_for`)."""
    macs, layers = (costs or {}).get("macs"), (costs or {}).get("layers")
    return None if not macs or not layers else float(macs) * batch / layers


def settings_from(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    """`settings` (default: Settings()) with keyword overrides; an unknown name is a UsageProblem."""
    names = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UsageProblem(f"unknown measurement setting(s) {', '.join(map(repr, unknown))}; "
                           f"choose from {', '.join(sorted(names))}")
    return dataclasses.replace(settings or Settings(), **overrides)


def check_environment(engines: Sequence[str], settings: Settings) -> None:
    """Fail before any work when this machine cannot serve the request (exit 1) or it is malformed (2)."""
    settings.validate()
    if settings.provider is not None and "ort" not in engines:
        raise UsageProblem("--provider applies to --engine ort")
    if settings.device_id is not None and ("ort" not in engines or settings.device != "cuda"):
        raise UsageProblem("--device-id applies to --engine ort with --device cuda")
    if settings.device == "cuda" or "trt" in engines:
        if "trt" in engines:
            from export.tensorrt import import_tensorrt

            import_tensorrt()
        from bench.engines.torch_engine import check_cuda

        check_cuda()
    if settings.precision == "int8" and "torch" in engines:
        raise UsageProblem("int8 runs a calibrated Q/DQ ONNX file on --engine ort, openvino or trt, not torch; "
                           "make one with `rbench export MODEL --precision int8 --checkpoint CKPT --calibration DATA`")
    if "openvino" in engines:
        if settings.device == "cuda":
            raise UsageProblem("the openvino engine runs on the CPU here; drop --device cuda")
        if settings.precision == "fp16":
            raise UsageProblem("the openvino engine runs fp32, bf16 or int8 on the CPU, not fp16")
        if settings.precision == "bf16":
            from bench.engines.openvino_engine import bf16_support

            ok, why = bf16_support()
            if not ok:
                raise EnvironmentProblem(f"openvino bf16: {why}")
    on_cpu = settings.device != "cuda" and "trt" not in engines
    if on_cpu and settings.precision in ("fp16", "bf16") and set(engines) & {"torch", "ort"}:
        from bench.engines.torch_engine import cpu_precision_support

        ok, why = cpu_precision_support(settings.precision)
        if not ok and settings.precision == "fp16" and "ort" in engines:
            raise EnvironmentProblem(ORT_CPU_FP16)
        if not ok:
            raise EnvironmentProblem(f"{settings.precision} on CPU: {why}")
    if "ort" in engines:
        from bench.engines.ort_engine import resolve_provider

        if settings.precision == "bf16":
            raise UsageProblem("onnxruntime runs fp32, fp16 or int8 models; bf16 is for --engine torch or openvino")
        resolve_provider(settings.provider, settings.device)
    if settings.cuda_graph and settings.device != "cuda" and "trt" not in engines:
        raise UsageProblem("--cuda-graph needs --device cuda")


def parse_engines(engines: str | Sequence[str]) -> list[str]:
    """'torch,ort' or ['torch', 'onnxruntime'] -> ['torch', 'ort']; an unknown name is a UsageProblem."""
    from bench.engines import ALIASES, ENGINES

    parts = engines.split(",") if isinstance(engines, str) else list(engines)
    names = []
    for part in parts:
        key = ALIASES.get(str(part).strip().lower(), str(part).strip().lower())
        if key not in ENGINES:
            raise UsageProblem(f"unknown engine {str(part).strip()!r}; choose from {', '.join(ENGINES)} (comma-separated)")
        names.append(key)
    if not names:
        raise UsageProblem(f"name at least one engine: {', '.join(ENGINES)}")
    return list(dict.fromkeys(names))


def parse_batches(batches: str | int | Sequence[int]) -> list[int]:
    """'1,8,32', 8 or [1, 8] -> [1, 8, 32]; zero, negative, non-integer or absurd sizes are a UsageProblem."""
    from bench.measure.memory import MAX_BATCH

    parts = str(batches).split(",") if isinstance(batches, (str, int)) else list(batches)
    sizes = []
    for part in parts:
        text = str(part).strip()
        shown = text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"
        try:
            size = int(text)
        except ValueError:  # also a number of more digits than int() takes
            size = None
        if size is None:
            raise UsageProblem(f"batch sizes are positive integers like 1,8,32, got {shown!r}")
        if size < 1:
            raise UsageProblem(f"batch size must be at least 1, got {shown}")
        if size > MAX_BATCH:
            raise UsageProblem(f"batch size {shown} is too large: at most {MAX_BATCH}, and far less fits in memory; "
                               "use a smaller --batch")
        sizes.append(size)
    return list(dict.fromkeys(sizes))


# -- what the last measurements of this machine left ----------------------------------------------
def cached_peak(settings: Settings, engine: str) -> dict[str, Any] | None:
    """The device peak `rbench device` measured and cached; never measured here (that takes seconds)."""
    from bench.measure.device import cache_path

    device = "cuda" if settings.device == "cuda" or engine == "trt" else "cpu"
    path = cache_path(device)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_average() -> list[float] | None:
    """The 1/5/15-minute load average: on a shared machine it says how busy it was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
