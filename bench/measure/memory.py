"""Will a run fit in memory? An estimate made before anything is allocated, and what this machine has.

A batch or image size too large for the machine used to end in a traceback, or worse: under a
container memory limit (cgroup) the kernel kills the process outright, with no exception to catch
and no record kept. So `bench.measure.run` asks this module first, and refuses a run whose estimate
cannot fit, with one line that says both figures and what to do.

The estimate is a *lower bound* of the memory a run must add, so a run that can fit is never
refused (a refused run would certainly fail):

- the input batch (`batch x C x H x W` float32, made on the host before timing; on a GPU also its
  device copy), computed in Python integers first, so absurd sizes are refused before any
  allocation or integer overflow;
- the weights, where the engine makes a copy of its own (onnxruntime, TensorRT) or moves them to a
  GPU (the torch module itself is already in memory on the host);
- the activations that must be live at once: the largest, over the ops of one forward pass, of
  the non-weight tensors an op reads plus the one it writes. They come from running the module
  once on the `meta` device (shapes only, no data, no memory; ~0.1 s for resnet50) at batch 1
  and 2 under a dispatch mode that sizes each op's tensor storages, so each op's bytes are
  `constant + batch x per-sample` exactly. For an eager torch run every op counts its inputs and
  output; for a graph engine (onnxruntime, TensorRT, torch.compile), which fuses element-wise ops
  and may write them in place, only convolutions, matrix products and pools count both sides, the
  others only the larger one.

The whole forward pass (every activation summed, `activations_total`) is reported too, as the
upper-bound-ish figure; it is not used to refuse. A module that cannot run on the meta device
(data-dependent control flow, tensors created on the CPU inside `forward`, ...) is retried under
torch's FakeTensorMode; if that fails too only the input and weights are counted. An ONNX file
counts its input and its file size (onnxruntime loads the weights); a TensorRT engine file is not
estimated. Allocation failures that slip through are still caught (`bench.measure.timing.is_out_of_memory`)
and recorded per batch, but only this up-front check protects against the kernel's OOM killer.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Larger batches are refused as usage errors: TensorRT dimensions are int32, and no machine holds them.
MAX_BATCH = 2**31 - 1
#: Bytes of one element of the activations at each precision (autocast / half models halve them).
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
#: Op names (aten overloads) a graph engine cannot fuse away or compute in place.
_HEAVY_OPS = ("conv", "mm", "matmul", "linear", "pool", "upsample", "cat", "embedding")
_NO_CGROUP_LIMIT = 1 << 60  # cgroup v1 reports "no limit" as a page-rounded 2**63


# -- what the machine has -------------------------------------------------------------------------
def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text.split()[0])
    except ValueError:
        return None


def meminfo_available(path: str = "/proc/meminfo") -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is no such file)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cgroup_available(root: str = "/sys/fs/cgroup") -> int | None:
    """What this process's cgroup still allows (limit - usage) in bytes; None without a limit.

    cgroup v2: `memory.max - memory.current`; v1: `memory/memory.limit_in_bytes - memory.usage_in_bytes`.
    """
    candidates = [(f"{root}/memory.max", f"{root}/memory.current"),
                  (f"{root}/memory/memory.limit_in_bytes", f"{root}/memory/memory.usage_in_bytes")]
    try:  # the process's own v2 group, when it is not the mount root
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::") and line[3:].strip() not in ("", "/"):
                sub = f"{root}{line[3:].strip()}"
                candidates.insert(0, (f"{sub}/memory.max", f"{sub}/memory.current"))
    except OSError:
        pass
    for limit_path, usage_path in candidates:
        limit = _read_int(limit_path)
        if limit is None or limit >= _NO_CGROUP_LIMIT:
            continue
        usage = _read_int(usage_path) or 0
        return max(0, limit - usage)
    return None


@dataclass(frozen=True)
class Available:
    """Free memory of a device, and where the figure comes from."""

    bytes: int
    source: str


def available(device: str = "cpu") -> Available | None:
    """The memory a run may still take on `device` (cpu | cuda), or None when it cannot be known.

    CPU: the smaller of /proc/meminfo MemAvailable and the cgroup's limit minus its usage.
    CUDA: `torch.cuda.mem_get_info` free bytes plus what torch's caching allocator holds unused.
    """
    if device.startswith("cuda"):
        try:
            import torch

            if not torch.cuda.is_available():
                return None
            free, _total = torch.cuda.mem_get_info()
            cached = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
            return Available(int(free + max(0, cached)), "torch.cuda.mem_get_info")
        except Exception:  # noqa: BLE001 - a broken driver means "unknown", not a crash
            return None
    figures = []
    meminfo = meminfo_available()
    if meminfo is not None:
        figures.append(Available(meminfo, "MemAvailable"))
    cgroup = cgroup_available()
    if cgroup is not None:
        figures.append(Available(cgroup, "container memory limit"))
    return min(figures, key=lambda a: a.bytes) if figures else None


def available_bytes(device: str = "cpu") -> int | None:
    """`available(device)` in bytes (None when unknown)."""
    found = available(device)
    return None if found is None else found.bytes


# -- what a forward pass keeps live ----------------------------------------------------------------
@dataclass(frozen=True)
class ActivationProfile:
    """Bytes of one forward pass at fp32, per op as (constant, per sample); see the module docstring."""

    eager: tuple[tuple[int, int], ...]  # per op: inputs + output (non-weight, non-model-input)
    fused: tuple[tuple[int, int], ...]  # per op: the same for heavy ops, the larger side for the others
    total: tuple[int, int]  # every op's output, summed
    method: str

    @staticmethod
    def _at(terms: Sequence[tuple[int, int]], batch: int) -> int:
        return max((max(0, c + batch * s) for c, s in terms), default=0)

    def live_bytes(self, batch: int, graph_engine: bool = False) -> int:
        return self._at(self.fused if graph_engine else self.eager, batch)

    def total_bytes(self, batch: int) -> int:
        return max(0, self.total[0] + batch * self.total[1])


def _storage_key(tensor) -> tuple[int, int]:
    storage = tensor.untyped_storage()
    return storage._cdata, storage.nbytes()


def _op_sizes(module, input_shape: Sequence[int], batch: int, fake: bool) -> tuple[list[int], list[int], int]:
    """(eager bytes per op, fused bytes per op, summed outputs) of one forward pass at `batch`."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    eager: list[int] = []
    fused: list[int] = []
    total = [0]
    skip: set[int] = set()

    class Sizes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {k: n for k, n in (_storage_key(t) for t in tree_leaves((args, kwargs))
                                        if isinstance(t, torch.Tensor)) if k not in skip}
            outputs = {k: n for k, n in (_storage_key(t) for t in tree_leaves(out) if isinstance(t, torch.Tensor))
                       if k not in skip and k not in inputs}  # an in-place op or a view writes nothing new
            read, wrote = sum(inputs.values()), sum(outputs.values())
            total[0] += wrote
            eager.append(read + wrote)
            name = str(getattr(func, "__name__", func)).lower()
            fused.append(read + wrote if any(word in name for word in _HEAVY_OPS) else max(read, wrote))
            return out

    tensors = list(module.named_parameters()) + list(module.named_buffers())
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        if fake:
            from torch._subclasses.fake_tensor import FakeTensorMode

            mode = stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
            for _, tensor in tensors:
                skip.add(_storage_key(mode.from_tensor(tensor))[0])  # memoized: forward sees these same fakes
            x = torch.empty(batch, *input_shape)
            skip.add(_storage_key(x)[0])
            stack.enter_context(Sizes())
            module(x)
        else:
            state = {name: torch.empty_like(t, device="meta") for name, t in tensors}
            skip.update(_storage_key(t)[0] for t in state.values())
            x = torch.empty(batch, *input_shape, device="meta")
            skip.add(_storage_key(x)[0])
            stack.enter_context(Sizes())
            torch.func.functional_call(module, state, (x,))
    return eager, fused, total[0]


def _linear(at1: Sequence[int], at2: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple((2 * a - b, b - a) for a, b in zip(at1, at2))


def activation_profile(module, input_shape: Sequence[int]) -> ActivationProfile | None:
    """What one forward pass of `module` on (C, H, W) images keeps live, without allocating it.

    Runs on the meta device (or under FakeTensorMode) at batch 1 and 2; None when the module runs
    in neither (the check then counts only inputs and weights).
    """
    import warnings

    for fake, method in ((False, "meta device"), (True, "FakeTensorMode")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                one, two = _op_sizes(module, input_shape, 1, fake), _op_sizes(module, input_shape, 2, fake)
        except (Exception, SystemExit):  # noqa: BLE001 - an exotic module (or one that exits) is skipped, never
            continue  # blocked: the real forward that follows reports the model's own failure
        if len(one[0]) == len(two[0]):
            eager, fused = _linear(one[0], two[0]), _linear(one[1], two[1])
        else:  # batch 1 took another path (a squeeze, say): scale batch 2 by half
            eager = tuple((0, -(-v // 2)) for v in two[0])
            fused = tuple((0, -(-v // 2)) for v in two[1])
        total = (2 * one[2] - two[2], two[2] - one[2])
        return ActivationProfile(eager, fused, total, method)
    return None


_PROFILES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {input shape: profile}


def _cached_profile(module, input_shape: tuple[int, ...]) -> ActivationProfile | None:
    """`activation_profile`, once per module and shape (a sweep asks for every batch)."""
    try:
        per_module = _PROFILES.setdefault(module, {})
    except TypeError:  # not weak-referenceable: no cache
        return activation_profile(module, input_shape)
    if input_shape not in per_module:
        per_module[input_shape] = activation_profile(module, input_shape)
    return per_module[input_shape]


# -- the estimate ---------------------------------------------------------------------------------
@dataclass
class Estimate:
    """What a run at `batch` must add to memory (a lower bound) and what it may take in all.

    `required` is what must fit on the engine's device (`device`); `host` what must fit in host
    memory when that device is a GPU (the input batch made there).
    """

    batch: int
    device: str
    required: int
    host: int
    parts: dict[str, int] = field(default_factory=dict)
    activations_total: int | None = None  # the whole forward pass, every activation kept
    method: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "device": self.device, "required_bytes": self.required,
                "host_bytes": self.host, "parts": dict(self.parts), "activations_total_bytes": self.activations_total,
                "method": self.method}


def _params_bytes(module) -> int:
    seen: dict[int, int] = {}
    for tensor in list(module.parameters()) + list(module.buffers()):
        seen[id(tensor)] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def estimate_bytes(source, batch: int, *, precision: str = "fp32", engine: str = "torch", device: str = "cpu",
                   compile: bool = False, input_shape: Sequence[int] | None = None,
                   profile: bool = True) -> Estimate | None:
    """The memory a run of `source` at `batch` must add (`Estimate.required`, a lower bound).

    `source` is a `bench.engines.sources.ModelSource` or an `nn.Module` (then give `input_shape`). None when
    nothing can be estimated (a TensorRT engine file: its shape is read only when opened).
    With `profile=False` the activations are not counted (input and weights only).
    """
    if engine == "trt":
        device = "cuda"
    module = None
    if hasattr(source, "has_module"):
        shape = source.input_shape if input_shape is None else input_shape
        if source.has_module:
            module = source.module()
    else:
        module, shape = source, input_shape
    if shape is None:
        return None
    batch = int(batch)
    per_image = 1
    for dim in shape:
        per_image *= int(dim)
    on_gpu = device.startswith("cuda")
    input_bytes = batch * per_image * 4  # Python ints: no overflow, nothing allocated
    parts = {"input": input_bytes}
    method = "input batch"
    half = PRECISION_BYTES.get(precision, 4) < 4
    if module is not None:
        weights = _params_bytes(module)
        if engine in ("ort", "trt"):
            parts["weights (engine copy)"] = weights // 2 if half else weights
        elif on_gpu:
            parts["weights"] = weights
    elif getattr(source, "path", None) is not None and engine != "trt":
        with contextlib.suppress(OSError):
            parts["weights (engine copy)"] = Path(source.path).stat().st_size
    if on_gpu:
        parts["input (device copy)"] = batch * per_image * PRECISION_BYTES.get(precision, 4) if engine == "ort" \
            else input_bytes
    estimate = Estimate(batch, "cuda" if on_gpu else "cpu", 0, input_bytes, parts, None, method)
    estimate.required = sum(v for k, v in parts.items() if not (on_gpu and k == "input"))
    if module is None or not profile:
        return estimate
    if per_image >= 2**40:  # the meta run would overflow torch's int64 sizes; the input bound suffices
        return estimate
    found = _cached_profile(module, tuple(int(d) for d in shape))
    if found is None:
        estimate.method = "input batch and weights (the module does not run on the meta device)"
        return estimate
    scale = PRECISION_BYTES.get(precision, 4)
    graph_engine = engine in ("ort", "trt") or compile
    live = found.live_bytes(batch, graph_engine) * scale // 4
    parts["activations live at once"] = live
    estimate.required += live
    estimate.activations_total = found.total_bytes(batch) * scale // 4
    estimate.method = f"input, weights and the activations one op holds ({found.method}, " \
                      f"{'graph engine' if graph_engine else 'eager'})"
    return estimate


# -- the verdict ----------------------------------------------------------------------------------
def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'; enough digits to compare two figures."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _too_large(value: int) -> str:
    return human_bytes(value) if value < 1024**7 else f"about 10^{len(str(value)) - 1} bytes"


class Refusal(str):
    """Why a batch cannot fit: the one-line message (this string itself) and a `short` form for records."""

    short: str

    def __new__(cls, message: str, short: str) -> Refusal:
        obj = super().__new__(cls, message)
        obj.short = short
        return obj


def refusal(estimate: Estimate | None, name: str, *, host: Available | None = None,
            device_free: Available | None = None, resizable: bool = True) -> Refusal | None:
    """Why a run with `estimate` cannot fit (one line), or None when it may.

    `host` / `device_free` default to `available("cpu")` / `available(estimate.device)`.
    Unknown availability never refuses.
    """
    if estimate is None:
        return None
    checks = []
    if estimate.device == "cuda":
        checks.append((estimate.required, device_free if device_free is not None else available("cuda"), "GPU"))
        checks.append((estimate.host, host if host is not None else available("cpu"), "host"))
    else:
        checks.append((estimate.required, host if host is not None else available("cpu"), ""))
    for need, have, where in checks:
        if have is None or need <= have.bytes:
            continue
        detail = " + ".join(f"{k} {_too_large(v)}" for k, v in estimate.parts.items()
                            if v and (where != "host" or k == "input"))
        space = f"{where} memory" if where else "memory"
        figures = f"needs at least {_too_large(need)} more {space}"
        message = (f"{name} at batch {estimate.batch} {figures} ({detail}), but {human_bytes(have.bytes)} is "
                   f"available ({have.source}); use a smaller --batch" + (" or --input-size" if resizable else ""))
        return Refusal(message, f"{figures}, {human_bytes(have.bytes)} available ({have.source}; estimated "
                                f"before running)")
    return None


def check_fits(source, batches: Sequence[int], engines: Sequence[str], *, precision: str = "fp32",
               device: str = "cpu", compile: bool = False) -> dict[int, Refusal]:
    """{batch: why it cannot fit} for the batches of `source` that cannot fit on any of `engines`.

    The input-only bound is checked first (so an absurd size never reaches torch), then the full
    estimate. An estimate that fails is skipped, never blocking a run.
    """
    host = available("cpu")
    gpu = available("cuda") if device == "cuda" or "trt" in engines else None
    name = getattr(source, "name", type(source).__name__)
    refused: dict[int, Refusal] = {}
    for batch in sorted(set(int(b) for b in batches)):
        for engine in engines:
            why = None
            for profile in (False, True):
                try:
                    estimate = estimate_bytes(source, batch, precision=precision, engine=engine, device=device,
                                              compile=compile, profile=profile)
                except Exception:  # noqa: BLE001 - estimating must never block a run
                    estimate = None
                # A file's image size is its own (--input-size is refused for it): only a smaller batch helps.
                why = refusal(estimate, name, host=host, device_free=gpu,
                              resizable=getattr(source, "kind", None) not in ("onnx", "trt"))
                if why:
                    break
            if why:
                refused[batch] = why
                break
    return refused

