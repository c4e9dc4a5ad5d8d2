"""ONNX -> TensorRT engine: explicit batch, an optimization profile, precision, workspace, timing cache.

Written against the TensorRT Python API of 10.x and 11.x (NOT yet run on real hardware):
- TensorRT 10 builds weakly typed networks by default, so the precision is a builder flag
  (`BuilderFlag.FP16`); TF32 is switched off for fp32 so that "fp32" means fp32.
- TensorRT 11 removed the weak-typing flags (FP16, INT8, OBEY_PRECISION_CONSTRAINTS, ...): every
  network is strongly typed and the precision comes from the ONNX file, so fp16 needs the fp16
  file that `rbench export --precision fp16` writes.
- int8 (both): explicit quantization, strongly typed, from the Q/DQ file that
  `rbench export --precision int8` writes (calibrated and checked there, not by TensorRT's
  deprecated implicit-quantization calibrators).
- Both: explicit batch is the only mode (EXPLICIT_BATCH is deprecated in 10, gone in 11), a dynamic
  batch needs an optimization profile (min, opt, max), the workspace is a memory-pool limit, and a
  timing cache file is loaded before and saved after each build so later builds skip tactic timing.

An engine is reused only when its manifest's cache key matches: the key hashes the ONNX file, the
build recipe (its version, TF32, the profiles), TensorRT version and wheel flavour (cu12 / cu13), the
CUDA runtime, GPU and compute capability, precision and workspace, so changing any of them rebuilds.
`import tensorrt` happens only in `import_tensorrt`, the one TensorRT import of rbench.

TensorRT's messages go to stderr through `StderrLogger` (an `ILogger` subclass), never to stdout
where `--json` records go; the last error it logged ends the one-line message of a failed step.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from export._atomic import write_bytes, write_text
from export.errors import DataProblem, EnvironmentProblem, MissingDependency, UsageProblem
from export.trt_plan import (  # noqa: F401  (public here too: the engine build's face)
    BUILD_RECIPE_VERSION,
    DEFAULT_BATCH_RANGE,
    INSTALL_HINT,
    MIN_TRT_MAJOR,
    PrecisionPlan,
    _precision_plan,
    engine_cache_key,
    parse_batch_range,
    precision_plan,
    profile_shapes,
    trt_major_of,
)

GPU_HINT = "TensorRT needs an NVIDIA GPU with a working CUDA driver (check `nvidia-smi`)"
DEFAULT_WORKSPACE_GIB = 4.0


# --------------------------------------------------------------------------------------------
# Environment: the one place rbench imports TensorRT


def _one_line(text: object, limit: int = 160) -> str:
    return " ".join(str(text).split())[:limit]


def import_tensorrt():
    """The `tensorrt` module, version 10 or newer, or MissingDependency saying what to install.

    A missing, broken (its libraries do not load) or too old install is the same one-line error, so
    callers need one `except MissingDependency`. Needs no GPU; see `require_trt` for that.
    """
    try:
        import tensorrt as trt
    except ModuleNotFoundError as exc:
        if exc.name not in (None, "tensorrt"):  # the package is there but one of its own modules is not
            raise MissingDependency(f"TensorRT (it does not load: {_one_line(exc)})", INSTALL_HINT) from exc
        raise MissingDependency("TensorRT", INSTALL_HINT) from exc
    except Exception as exc:  # noqa: BLE001 - a broken install raises OSError, ImportError, ... from its libraries
        raise MissingDependency(f"TensorRT (it does not load: {_one_line(exc)})", INSTALL_HINT) from exc
    version = getattr(trt, "__version__", "?")
    if trt_major_of(version) < MIN_TRT_MAJOR:
        raise MissingDependency(f"TensorRT {MIN_TRT_MAJOR} or newer (found {version})", INSTALL_HINT)
    return trt


def _gpu_identity() -> tuple[str, str] | None:
    """(name, compute capability) of the current CUDA GPU as torch sees it, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return props.name, f"{props.major}.{props.minor}"


def _no_gpu_message(trt) -> str:
    return f"no CUDA GPU: TensorRT {trt.__version__} is installed but torch sees no GPU; {GPU_HINT}"


def trt_status() -> tuple[bool, str]:
    """(usable, why): TensorRT 10+ imports and torch sees a CUDA GPU. `why` names the version and GPU,
    or what is missing and how to get it. Never raises for a missing TensorRT or GPU."""
    try:
        trt = import_tensorrt()
    except MissingDependency as exc:
        return False, str(exc)
    gpu = _gpu_identity()
    if gpu is None:
        return False, _no_gpu_message(trt)
    return True, f"TensorRT {trt.__version__} on {gpu[0]} (compute capability {gpu[1]})"


def require_trt():
    """`import_tensorrt()` on a machine with a CUDA GPU: the module, or MissingDependency (no usable
    TensorRT) / EnvironmentProblem (no GPU), each one line that says what to do."""
    trt = import_tensorrt()
    if _gpu_identity() is None:
        raise EnvironmentProblem(_no_gpu_message(trt))
    return trt


#: Wheels that provide the `tensorrt` module, by the CUDA major version they are built for.
TRT_FLAVOURS = {"tensorrt-cu13": 13, "tensorrt-cu12": 12, "tensorrt-cu11": 11}


def trt_flavour() -> str | None:
    """The installed wheel that provides TensorRT's libraries ("tensorrt-cu12 10.13.3"), or None."""
    from importlib import metadata

    for name in TRT_FLAVOURS:
        for dist in (name, f"{name}-libs"):
            try:
                return f"{name} {metadata.version(dist)}"
            except metadata.PackageNotFoundError:
                continue
    return None


def cuda_stack() -> dict[str, Any]:
    """What TensorRT runs on: its wheel flavour, torch's CUDA runtime, the driver's CUDA version.

    `driver_cuda` is the newest CUDA the driver supports (cudaDriverGetVersion through torch), so a
    cu13 wheel on a CUDA 12 driver shows up as a mismatch before a library fails to load.
    """
    import torch

    flavour = trt_flavour()
    driver_cuda = None
    with contextlib.suppress(Exception):  # no driver, or a torch without the call
        raw = int(torch._C._cuda_getDriverVersion())  # e.g. 12080 for CUDA 12.8
        driver_cuda = f"{raw // 1000}.{raw % 1000 // 10}" if raw > 0 else None
    return {"flavour": flavour, "cuda_runtime": torch.version.cuda, "driver_cuda": driver_cuda,
            "warnings": cuda_mismatches(flavour, torch.version.cuda, driver_cuda)}


def cuda_mismatches(flavour: str | None, cuda_runtime: str | None, driver_cuda: str | None) -> list[str]:
    """Why this TensorRT wheel, CUDA runtime and driver may not work together (empty when they fit)."""
    def major(version: str | None) -> int | None:
        try:
            return int(str(version).split(".")[0])
        except ValueError:
            return None

    wheel_cuda = TRT_FLAVOURS.get(flavour.split()[0]) if flavour else None
    notes = []
    if wheel_cuda is not None and major(driver_cuda) is not None and major(driver_cuda) < wheel_cuda:
        notes.append(f"{flavour.split()[0]} needs a CUDA {wheel_cuda} driver, this one supports CUDA {driver_cuda}: "
                     f"install tensorrt-cu{major(driver_cuda)} or update the driver")
    if wheel_cuda is not None and major(cuda_runtime) is not None and major(cuda_runtime) != wheel_cuda:
        notes.append(f"{flavour.split()[0]} is built for CUDA {wheel_cuda} but torch runs CUDA {cuda_runtime}: two CUDA "
                     f"runtimes in one process; install tensorrt-cu{major(cuda_runtime)}")
    return notes


def default_timing_cache(folder: str | os.PathLike) -> Path:
    """`folder/trt-timing-<TensorRT version>-sm<compute capability>.cache`: one file per TensorRT and GPU,
    so an upgrade or another GPU starts its own cache instead of being refused one."""
    trt = import_tensorrt()
    capability = (_gpu_identity() or ("?", "unknown"))[1]
    return Path(folder) / f"trt-timing-{trt.__version__}-sm{capability.replace('.', '')}.cache"


def make_logger(trt, min_severity: str = "WARNING"):
    """A `trt.ILogger` that writes TensorRT's messages to stderr and keeps the last error.

    TensorRT's own `trt.Logger` prints to stdout, between the JSON lines of `--json`.
    """

    class StderrLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)  # pybind11 needs the base initialised explicitly
            self.min_severity = getattr(trt.ILogger.Severity, min_severity)
            self.last_error: str | None = None

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.last_error = _one_line(msg, 240)
            if int(severity) <= int(self.min_severity):
                print(f"[TensorRT {getattr(severity, 'name', severity)}] {msg}", file=sys.stderr, flush=True)

    return StderrLogger()


def _last_error(logger) -> str:
    error = getattr(logger, "last_error", None)
    return f": {error}" if error else "; see TensorRT's log on stderr"


# --------------------------------------------------------------------------------------------
# Build


@dataclass
class EngineReport:
    """What `build_trt_engine` produced (also written as `<engine>.json`)."""

    engine_path: str
    manifest_path: str
    onnx_path: str
    onnx_sha256: str
    cache_key: str
    reused: bool  # True: a valid engine with the same key was already there, nothing was built
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    precision_plan: dict[str, Any]
    input_name: str
    profile: dict[str, list[int]]
    workspace_gib: float
    build_seconds: float
    engine_bytes: int
    timing_cache: str | None
    timing_cache_loaded_bytes: int = 0  # 0 also when the file was there but TensorRT refused it (see warnings)
    timing_cache_saved_bytes: int = 0
    timing_cache_hit: bool = False  # the loaded cache already held every tactic the build timed
    warnings: list[str] = field(default_factory=list)  # what the build worked around (timing cache, precision)
    profiles: list[dict[str, list[int]]] = field(default_factory=list)  # every profile; [0] is `profile`
    tf32: bool = False  # fp32 layers may run TF32 (`--tf32`); off: strict fp32
    tensorrt_flavour: str | None = None  # the wheel: tensorrt-cu12 / -cu13 and its version
    cuda_version: str | None = None  # the CUDA runtime torch runs (TensorRT shares the process)
    recipe_version: int = BUILD_RECIPE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _onnx_input(onnx_path: Path) -> tuple[str, list[int | str], str]:
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in initializers]
    if len(inputs) != 1:
        raise UsageProblem(f"{onnx_path.name} has {len(inputs)} inputs; rbench builds single-input image models")
    vi = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]
    elem = vi.type.tensor_type.elem_type
    precision = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16"}.get(elem)
    if precision is None:
        raise UsageProblem(f"{onnx_path.name} takes {onnx.TensorProto.DataType.Name(elem)} input; expected fp32 or fp16")
    return vi.name, dims, precision


def read_engine_manifest(engine_path: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest beside an engine, or None when missing or unreadable."""
    manifest = Path(f"{engine_path}.json")
    try:
        return json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None


def _check_build_request(onnx_path: Path, batch_range: str | Sequence[int], input_shape: Sequence[int] | None,
                         workspace_gib: float) -> tuple[str, str, dict[str, tuple[int, ...]]]:
    """Everything `build_trt_engine` can check without TensorRT: (input name, ONNX precision, profile)."""
    lo_opt_hi = parse_batch_range(batch_range)
    if workspace_gib <= 0:
        raise UsageProblem(f"workspace must be positive GiB, got {workspace_gib}")
    if not onnx_path.is_file():
        raise DataProblem(f"no ONNX file at {onnx_path}")
    input_name, onnx_dims, onnx_precision = _onnx_input(onnx_path)
    if input_shape is None:
        if len(onnx_dims) != 4 or not all(isinstance(d, int) and d > 0 for d in onnx_dims[1:]):
            raise UsageProblem(f"cannot read (C, H, W) from {onnx_path.name} input {onnx_dims}; pass input_shape")
        input_shape = tuple(onnx_dims[1:])
    if isinstance(onnx_dims[0], int) and onnx_dims[0] > 0 and lo_opt_hi != (onnx_dims[0],) * 3:
        raise UsageProblem(f"{onnx_path.name} has a fixed batch of {onnx_dims[0]}; export with --dynamic-batch "
                           f"for the batch range {','.join(map(str, lo_opt_hi))}")
    return input_name, onnx_precision, profile_shapes(input_shape, lo_opt_hi)


def _reusable_report(engine_path: Path, key: str) -> EngineReport | None:
    """The report of the engine already at `engine_path` when its manifest has this cache key and its
    size matches (a truncated copy is rebuilt), else None."""
    previous = read_engine_manifest(engine_path)
    if not previous or previous.get("cache_key") != key or not engine_path.is_file():
        return None
    if previous.get("engine_bytes") != engine_path.stat().st_size:
        return None
    previous["reused"] = True
    return EngineReport(**{k: v for k, v in previous.items() if k in EngineReport.__dataclass_fields__})


def _precision_warnings(plan: PrecisionPlan, onnx_precision: str) -> list[str]:
    if plan.precision == "fp16" and onnx_precision == "fp32" and not plan.strongly_typed:
        # Weak typing picks fp16 per layer where it is faster: nothing checked those layers' accuracy.
        return [f"fp16 engine from an fp32 ONNX file: TensorRT {plan.trt_major} chooses fp16 kernels layer by "
                "layer and keeps fp32 input and output; the export's parity check did not cover them "
                "(export with --precision fp16 for a checked fp16 file)"]
    return []


def _start_builder(trt, logger):
    try:
        return trt.Builder(logger)
    except Exception as exc:  # noqa: BLE001 - no CUDA context, driver mismatch, ...
        raise EnvironmentProblem(f"TensorRT cannot start a builder ({_one_line(exc)}): {GPU_HINT}") from None


def _parse_network(trt, builder, logger, onnx_path: Path, plan: PrecisionPlan):
    """The network of `onnx_path` (strongly typed when the plan says so), and its parser.

    The parser owns the weights the network points at: keep it alive until the engine is built.
    """
    flags = 0
    # TensorRT 10: STRONGLY_TYPED is opt-in (value 1). TensorRT 11: every network is strongly typed and the
    # flag (value 0 there) is deprecated, so it is not set.
    if plan.strongly_typed and plan.trt_major == 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    if network is None:
        raise EnvironmentProblem(f"TensorRT could not create a network{_last_error(logger)}")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads a .data side file relative to the model
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise DataProblem(f"TensorRT cannot parse {onnx_path.name}: {' '.join(errors.split())[:200]}")
    return network, parser


def _configure_builder(trt, builder, plan: PrecisionPlan, workspace_gib: float):
    """A builder config with the workspace limit and the plan's precision flags."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    for name in plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        if hasattr(trt.BuilderFlag, name):  # a flag this version no longer has needs no clearing
            config.clear_flag(getattr(trt.BuilderFlag, name))
    return config


def _add_profiles(builder, network, config, profiles: Sequence[dict[str, tuple[int, ...]]], logger) -> None:
    """The optimization profiles (min, opt, max) on the network's single input, in order (index = position).

    `add_optimization_profile` returns the profile's index, or -1 when TensorRT refuses it.
    """
    for index, profile in enumerate(profiles):
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(network.get_input(0).name, profile["min"], profile["opt"], profile["max"])
        if config.add_optimization_profile(trt_profile) < 0:
            shapes = ", ".join(f"{k} {tuple(profile[k])}" for k in ("min", "opt", "max"))
            raise UsageProblem(f"TensorRT refused optimization profile {index} ({shapes}){_last_error(logger)}")


def _load_timing_cache(config, cache_path: Path | None, notes: list[str]) -> tuple[bool, bytes, bytes]:
    """Give the build the timing cache in `cache_path`, or a fresh one when the file cannot be read or
    TensorRT refuses it (another TensorRT version or GPU, a corrupt file): a bad cache costs tactic
    timing, never the build. Returns (a cache is attached, the bytes used, the bytes the file held)."""
    loaded = b""
    if cache_path is not None and cache_path.is_file():
        try:
            loaded = cache_path.read_bytes()
        except OSError as exc:
            notes.append(f"timing cache {cache_path} cannot be read ({exc.strerror or exc}); started a fresh one")
    if loaded:
        cache = config.create_timing_cache(loaded)
        if cache is None:
            notes.append(f"TensorRT cannot read the timing cache {cache_path} (corrupt or from another version); "
                         "started a fresh one, which replaces it")
        elif config.set_timing_cache(cache, ignore_mismatch=False) is False:
            # ignore_mismatch=False: tactics timed on another GPU could pick slow or wrong kernels here.
            notes.append(f"TensorRT refused the timing cache {cache_path} (made by another TensorRT version or GPU); "
                         "started a fresh one, which replaces it")
        else:
            return True, loaded, loaded
    cache = config.create_timing_cache(b"")
    if cache is None or config.set_timing_cache(cache, ignore_mismatch=False) is False:
        notes.append("TensorRT could not create an empty timing cache; built without one"
                     + (f" and left {cache_path} as it was" if cache_path is not None else ""))
        return False, b"", loaded
    return True, b"", loaded


def _serialize_engine(builder, network, config, onnx_path: Path, precision: str,
                      profile: dict[str, tuple[int, ...]], logger=None) -> tuple[bytes, float]:
    """Build and serialize the engine: (engine bytes, build seconds); a failed build raises EnvironmentProblem."""
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - start
    if serialized is None:
        batches = ",".join(str(profile[k][0]) for k in ("min", "opt", "max"))
        raise EnvironmentProblem(f"TensorRT could not build an engine for {onnx_path.name} "
                                 f"({precision}, batch {batches}){_last_error(logger)}")
    return bytes(serialized), build_seconds


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `<path>.lock` (advisory, POSIX): builds that share a cache file take turns."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, last writer wins
        yield
        return
    try:
        handle = open(f"{path}.lock", "a+b")  # noqa: SIM115 - held for the block below
    except OSError:  # an unwritable folder: the write below says so
        yield
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _save_timing_cache(config, cache_path: Path, notes: list[str], seen: bytes = b"") -> int:
    """Write the build's timing cache to `cache_path` for later builds; returns its size (0 when not saved).

    Under a lock: when another build saved the file since this one loaded it, its tactics are merged in
    (`ITimingCache.combine`, as Polygraphy does) rather than overwritten. A cache that cannot be
    written, or that TensorRT does not hand back, is a warning: the engine is built and is what the caller
    asked for.
    """
    cache = config.get_timing_cache()
    if cache is None:
        notes.append(f"TensorRT returned no timing cache after the build; {cache_path} was left as it was")
        return 0
    try:
        with _locked(cache_path):
            current = cache_path.read_bytes() if cache_path.is_file() else b""
            if current and current != seen:  # another build wrote it since this one read it: keep its tactics too
                other = config.create_timing_cache(current)
                if other is None or not cache.combine(other, ignore_mismatch=False):
                    notes.append(f"timing cache {cache_path} changed during the build and could not be merged "
                                 "(another TensorRT version or GPU); replaced it")
            data = bytes(cache.serialize())
            write_bytes(cache_path, data)
    except OSError as exc:
        notes.append(f"timing cache {cache_path} cannot be written ({exc.strerror or exc}); later builds time "
                     "tactics again")
        return 0
    return len(data)


def _profiles_for(profile: dict[str, tuple[int, ...]], opt_batches: Sequence[int] | None) -> list[dict[str, tuple[int, ...]]]:
    """`profile` first, then one profile per batch of `opt_batches` tuned for it (opt = that batch,
    the same min and max), so a batch sweep times kernels chosen for each batch it measures."""
    profiles = [profile]
    lo, hi = profile["min"][0], profile["max"][0]
    for batch in opt_batches or ():
        if not lo <= int(batch) <= hi:
            raise UsageProblem(f"batch {batch} is outside the batch range {lo}..{hi} of the engine's profiles")
        shapes = {"min": profile["min"], "opt": (int(batch), *profile["opt"][1:]), "max": profile["max"]}
        if shapes not in profiles:
            profiles.append(shapes)
    return profiles


def build_trt_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    precision: str = "fp32",
    batch_range: str | Sequence[int] = DEFAULT_BATCH_RANGE,
    input_shape: Sequence[int] | None = None,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    timing_cache: str | os.PathLike | None = None,
    force: bool = False,
    opt_batches: Sequence[int] | None = None,
    tf32: bool = False,
) -> EngineReport:
    """Build (or reuse) a serialized TensorRT engine for `onnx_path` and write it to `engine_path`.

    Args:
        onnx_path: a checked ONNX file (its `.data` side file, if any, beside it).
        engine_path: the engine file to write; its manifest goes to `<engine_path>.json`.
        precision: "fp32", "fp16" or "int8" (a Q/DQ file; see `precision_plan` for how each TensorRT version gets it).
        batch_range: (min, opt, max) batch of the optimization profile, or "1,8,64".
        input_shape: (C, H, W); default: read from the ONNX file.
        workspace_gib: limit of TensorRT's workspace memory pool.
        timing_cache: a timing-cache file loaded before and saved after the build (shared across builds, merged
            under a lock when builds overlap). One that TensorRT cannot use is replaced by a fresh one, with a
            warning in the report; `default_timing_cache` names one per TensorRT version and GPU.
        force: rebuild even when an engine with the same cache key exists.
        opt_batches: batches to add one profile each for (opt = that batch, min and max of `batch_range`);
            `TensorRTEngine` switches to the profile made for the batch it runs.
        tf32: let fp32 layers use TF32 (default: strict fp32, as torch and onnxruntime run it in rbench).

    Raises MissingDependency without TensorRT, EnvironmentProblem without a CUDA GPU; nothing is written then.
    """
    from export.onnx import sha256_files

    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path)
    input_name, onnx_precision, profile = _check_build_request(onnx_path, batch_range, input_shape, workspace_gib)
    profiles = _profiles_for(profile, opt_batches)

    trt = require_trt()  # everything above runs (and fails) without TensorRT
    trt_version = trt.__version__
    from export.quantize import activation_encoding

    encoding = activation_encoding(onnx_path)
    plan = precision_plan(trt_major_of(trt_version), precision, onnx_precision, encoding is not None, tf32=tf32)
    if encoding == "u8":
        raise UsageProblem(f"{onnx_path.name} quantizes activations to uint8 with a zero point (onnxruntime's fast "
                           "CPU form); TensorRT reads only symmetric int8: export it with --activations s8")
    gpu_name, capability = _gpu_identity() or ("?", "?")
    stack = cuda_stack()
    onnx_data = onnx_path.with_name(f"{onnx_path.name}.data")
    onnx_sha = sha256_files(onnx_path, onnx_data if onnx_data.exists() else None)
    key = engine_cache_key(onnx_sha256=onnx_sha, trt_version=trt_version, gpu_name=gpu_name,
                           compute_capability=capability, precision=precision, profile=profile,
                           workspace_gib=workspace_gib, profiles=profiles if len(profiles) > 1 else None, tf32=tf32,
                           trt_flavour=stack["flavour"], cuda_version=stack["cuda_runtime"])
    reused = None if force else _reusable_report(engine_path, key)
    if reused is not None:
        return reused

    notes = _precision_warnings(plan, onnx_precision) + list(stack["warnings"])
    logger = make_logger(trt)
    builder = _start_builder(trt, logger)
    network, parser = _parse_network(trt, builder, logger, onnx_path, plan)
    config = _configure_builder(trt, builder, plan, workspace_gib)
    _add_profiles(builder, network, config, profiles, logger)
    cache_path = Path(timing_cache) if timing_cache else None
    has_cache, loaded, seen = _load_timing_cache(config, cache_path, notes)
    engine_bytes, build_seconds = _serialize_engine(builder, network, config, onnx_path, precision, profile, logger)
    del parser  # only now: the network read its weights from the parser's memory until the build was done
    saved_bytes = _save_timing_cache(config, cache_path, notes, seen) if cache_path is not None and has_cache else 0

    report = EngineReport(
        engine_path=str(engine_path), manifest_path=f"{engine_path}.json", onnx_path=str(onnx_path),
        onnx_sha256=onnx_sha, cache_key=key, reused=False, tensorrt_version=trt_version, gpu_name=gpu_name,
        compute_capability=capability, precision=precision, precision_plan=asdict(plan), input_name=input_name,
        profile={k: list(v) for k, v in profile.items()}, workspace_gib=float(workspace_gib),
        build_seconds=round(build_seconds, 3), engine_bytes=len(engine_bytes),
        timing_cache=str(cache_path) if cache_path else None, timing_cache_loaded_bytes=len(loaded),
        timing_cache_saved_bytes=saved_bytes, timing_cache_hit=bool(loaded) and saved_bytes == len(loaded),
        warnings=notes, profiles=[{k: list(v) for k, v in p.items()} for p in profiles], tf32=bool(tf32),
        tensorrt_flavour=stack["flavour"], cuda_version=stack["cuda_runtime"],
    )
    # The engine first, then its manifest: a manifest never names an engine that is not there.
    write_bytes(engine_path, engine_bytes)
    write_text(f"{engine_path}.json", json.dumps(report.to_dict(), indent=2) + "\n")
    return report
