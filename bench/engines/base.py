"""The one contract every engine keeps: a context manager that runs a batch and describes itself.

Polygraphy style: public methods check state; subclasses override only the `_*_impl` hooks.

    with create_engine("ort", "resnet20") as engine:
        logits = engine.infer(batch)            # numpy float32 NCHW in, numpy logits out
        ready = engine.prepare(batch)           # the input placed where the engine reads it
        engine.run_prepared(ready)              # what latency times: compute only
        engine.synchronize()                    # wait for queued device work
        engine.describe()                       # backend, version, device, precision, ...
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from bench.errors import DataProblem, RbenchError, UsageProblem

#: int8 is a Q/DQ ONNX file (`rbench export --precision int8`), run by ort, openvino and trt.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DEVICES = ("cpu", "cuda")


# -- the boundary between rbench and the code it runs ------------------------------------------
def user_failure(exc: BaseException, name: str, action: str, error: type[RbenchError] = DataProblem,
                 hint: str = "") -> BaseException:
    """What to raise for `exc`, raised while `name` was `action` (building it, running a batch): `exc` itself
    when rbench should see it as is, else one `error` line naming the model, ending in `hint` (what to check).

    Passed through: rbench's own errors (they are one line already), nets' ModelError, KeyboardInterrupt,
    and out-of-memory errors (the timing loop retries a smaller batch). Converted: any other exception,
    and SystemExit, since a sys.exit() in user code would end rbench silently, with the user's code.
    """
    from nets.errors import ModelError

    if isinstance(exc, SystemExit):
        return error(f"{name}: {action} called sys.exit({exc.code!r}); rbench stops there, with nothing measured")
    if not isinstance(exc, Exception) or isinstance(exc, (RbenchError, ModelError)):
        return exc
    from bench.measure.timing import is_out_of_memory  # here, not at the top: engines sit below measure

    if is_out_of_memory(exc):
        return exc
    text = _native_message(str(exc))
    return error(f"{name}: {action} failed: {type(exc).__name__}{': ' + text if text else ''}"
                 f"{'; ' + hint if hint else ''}")


#: What native engines put in an exception beside the message: onnxruntime's error-code prefix, OpenVINO's
#: "Check '...' failed at", and C++ source locations with the function that raised.
_NATIVE_NOISE = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : |Check '.*?' failed at "
                           r"|\S+\.(?:h|hpp|c|cc|cpp)(?::\d+)+:?(?:\s+[\w:~<>]+\([^()]*\))?")


def _native_message(text: str, limit: int = 300) -> str:
    """An exception's text as one line, without native source locations, at most `limit` characters."""
    text = " ".join(_NATIVE_NOISE.sub("", text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def user_code(name: str, action: str, error: type[RbenchError] = DataProblem, hint: str = "") -> Iterator[None]:
    """Run user code (a builder, a forward, an engine's session) so that its failures are one line
    naming `name` (see `user_failure`)."""
    try:
        yield
    except (Exception, SystemExit) as exc:
        converted = user_failure(exc, name, action, error, hint)
        if converted is exc:
            raise
        raise converted from exc


class Engine:
    """Base class: a backend that turns an NCHW float32 batch into logits.

    `OPTIONS` names the keyword options a backend takes; `create_engine` refuses any other.

    Subclasses implement `_activate_impl`, `_deactivate_impl`, `_prepare_impl`,
    `_run_prepared_impl`, `_to_numpy_impl` and `_describe_impl`; `synchronize` when the
    backend queues work asynchronously.
    """

    backend = "base"
    OPTIONS: tuple[str, ...] = ()

    def __init__(self, *, input_shape: tuple[int, int, int] | None, device: str = "cpu", precision: str = "fp32",
                 name: str | None = None):
        if device not in DEVICES:
            raise UsageProblem(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        if precision not in PRECISIONS:
            raise UsageProblem(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if input_shape is not None and len(tuple(input_shape)) != 3:
            raise UsageProblem(f"input_shape must be (C, H, W), got {input_shape!r}")
        # None until activation for engines that read it from their file (a TensorRT engine).
        self.input_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        self.device = device
        self.precision = precision
        self.name = name or self.backend
        self.is_active = False
        self.artifact: dict[str, Any] | None = None  # what create_engine made for it (file, graph batch)

    # -- lifecycle -------------------------------------------------------------------------
    def activate(self) -> Engine:
        """Load the model or engine and allocate what inference needs."""
        if self.is_active:
            return self
        with user_code(self.name, f"loading on the {self.backend} engine"):
            self._activate_impl()
        self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release sessions, contexts and device buffers; safe to call twice."""
        if not self.is_active:
            return
        try:
            self._deactivate_impl()
        finally:
            self.is_active = False

    def __enter__(self) -> Engine:
        return self.activate()

    def __exit__(self, *exc_info: Any) -> None:
        self.deactivate()

    # -- inference -------------------------------------------------------------------------
    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        if not self.is_active:
            raise RuntimeError(f"{type(self).__name__} is not active; use it as a context manager")
        batch = np.asarray(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape:
            raise UsageProblem(f"expected a batch of shape (N, {', '.join(map(str, self.input_shape))}), got {batch.shape}")
        if batch.shape[0] < 1:
            raise UsageProblem("a batch needs at least one image")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def _shape_from(self, dims) -> tuple[int, int, int]:
        """(C, H, W) of a file's NCHW input `self.input_name` with dims `dims`: fixed axes from the file,
        symbolic ones from `input_shape` (engines that run an ONNX file)."""
        if len(dims) != 4:
            raise UsageProblem(f"the ONNX input {self.input_name!r} has rank {len(dims)}, not an NCHW batch")
        fixed = [d if isinstance(d, int) and d > 0 else None for d in dims[1:]]
        given = self.input_shape
        if given is None and None in fixed:
            raise UsageProblem(f"the ONNX input {self.input_name!r} has symbolic axes {dims}; give input_shape / --input-size")
        if given is not None and any(f is not None and f != g for f, g in zip(fixed, given)):
            raise UsageProblem(f"the ONNX input {self.input_name!r} is {dims}, which does not fit {tuple(given)}")
        return tuple(f if f is not None else g for f, g in zip(fixed, given or fixed))

    def prepare(self, batch: np.ndarray) -> Any:
        """Place `batch` where the engine reads it (device memory, bound buffers, a plan compiled for its
        batch size); untimed unless transfers are. A failure there is one line naming the model."""
        batch = self._check_batch(batch)
        try:
            return self._prepare_impl(batch)
        except (Exception, SystemExit) as exc:
            converted = user_failure(exc, self.name, self._running(len(batch)))
            if converted is exc:
                raise
            raise converted from exc

    def run_prepared(self, prepared: Any) -> Any:
        """Run one inference on a prepared input; returns the engine's native output (maybe on device).

        A failure of the model's own code or of the engine's run is one line naming the model (`user_failure`).
        """
        try:  # no context manager here: this is the timed call, and a try costs nothing until it raises
            return self._run_prepared_impl(prepared)
        except (Exception, SystemExit) as exc:
            converted = user_failure(exc, self.name, self._running())
            if converted is exc:
                raise
            raise converted from exc

    def _running(self, batch: int | None = None) -> str:
        if self.input_shape is None:
            return f"running a batch on the {self.backend} engine"
        image = "x".join(map(str, self.input_shape))
        return f"running a {batch}x{image} batch on the {self.backend} engine" if batch else \
            f"running a batch of {image} images on the {self.backend} engine"

    def to_numpy(self, output: Any) -> np.ndarray:
        """The engine's native output as float32 numpy logits on the host."""
        return np.asarray(self._to_numpy_impl(output), dtype=np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits of an NCHW float32 batch, as float32 numpy: prepare, run, copy back."""
        output = self.run_prepared(self.prepare(batch))
        self.synchronize()
        return self.to_numpy(output)

    def synchronize(self) -> None:
        """Wait until the work queued so far is done (a no-op for synchronous backends)."""

    def timing_context(self) -> contextlib.AbstractContextManager:
        """A context the timing loop enters once around its warm-up and timed runs, untimed: what a bare loop
        would set up once and each `run_prepared` call would otherwise set up inside the timed region."""
        return contextlib.nullcontext()

    def memory_usage(self) -> dict[str, Any] | None:
        """{"memory_peak_bytes", "memory_kind"} where the engine knows its device memory better than
        torch's allocator does (TensorRT's context, onnxruntime's arena); None: the timing loop's figure."""
        return None

    def describe(self) -> dict[str, Any]:
        """What the record says about this engine: backend, version, device, precision, options."""
        info = {"backend": self.backend, "version": None, "device": self.device, "precision": self.precision,
                "providers": None, "options": {}}
        info.update(self._describe_impl())
        if self.artifact is not None:
            info["artifact"] = self.artifact
        return info

    # -- hooks -----------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        raise NotImplementedError

    def _deactivate_impl(self) -> None:
        pass

    def _prepare_impl(self, batch: np.ndarray) -> Any:
        raise NotImplementedError

    def _run_prepared_impl(self, prepared: Any) -> Any:
        raise NotImplementedError

    def _to_numpy_impl(self, output: Any) -> np.ndarray:
        return np.asarray(output)

    def _describe_impl(self) -> dict[str, Any]:
        return {}
