"""Does an exported ONNX file compute what the PyTorch model does? The ONNX checker (`check_onnx`), and parity
through onnxruntime on the CPU against the model in eval mode (`verify_onnx` -> `ParityReport`): per batch the max
absolute error, the max relative error, the cosine similarity and the top-1 agreement, with the tolerances named
(Polygraphy's comparison). The reference is always the fp32 model fed the same (fp16-rounded) input.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.errors import DataProblem, ParityFailure, UsageProblem

PRECISIONS = ("fp32", "fp16")


#: The channel counts a graph with a symbolic channel axis is checked at (grey, a pair, RGB).
VERIFY_CHANNELS = (1, 2, 3)


@dataclass(frozen=True)
class Tolerances:
    """When an ONNX output counts as equal to PyTorch's.

    A batch passes when max|onnx - torch| <= atol + rtol * max|torch| (the relative error is taken
    against the output's scale, not element by element, where logits near zero would make any
    difference look huge), the cosine similarity of every sample is >= `min_cosine`, and the
    top-1 agreement is >= `min_top1` (None: reported, not enforced; random-init nets have near ties).
    """

    rtol: float
    atol: float
    min_cosine: float
    min_top1: float | None = None

    @classmethod
    def for_precision(cls, precision: str) -> Tolerances:
        """The default tolerances of `precision` ("fp32" or "fp16")."""
        _check_precision(precision)
        return DEFAULT_TOLERANCES[precision]

    def describe(self) -> str:
        top1 = "" if self.min_top1 is None else f", top-1 >= {self.min_top1:g}"
        return f"max abs err <= {self.atol:g} + {self.rtol:g} * max|ref|, cosine >= {self.min_cosine:g}{top1}"


DEFAULT_TOLERANCES = {
    # fp32 kernels differ only in summation order: a few ulps per layer.
    "fp32": Tolerances(rtol=1e-4, atol=1e-5, min_cosine=0.99999),
    # fp16 keeps ~3 decimal digits; deep nets accumulate a few of those per layer.
    "fp16": Tolerances(rtol=2e-2, atol=1e-3, min_cosine=0.999),
}


@dataclass
class BatchParity:
    """How one batch of ONNX outputs compares to PyTorch's."""

    batch: int
    max_abs_err: float
    max_rel_err: float  # max_abs_err / max|reference|
    mean_abs_err: float
    ref_max_abs: float
    min_cosine: float  # the worst sample's cosine similarity
    top1_agreement: float  # fraction of samples whose argmax agrees
    passed: bool
    finite: bool = True  # False: the ONNX output holds inf or NaN
    channels: int | None = None  # the input's channels, where the graph leaves them symbolic


@dataclass
class ParityReport:
    """onnxruntime (CPU) against PyTorch (eval mode, fp32) at each batch size."""

    precision: str
    tolerances: Tolerances
    batches: list[BatchParity]
    provider: str = "CPUExecutionProvider"
    reference: str = "pytorch fp32 eval"

    @property
    def passed(self) -> bool:
        return bool(self.batches) and all(b.passed for b in self.batches)

    @property
    def worst(self) -> BatchParity:
        return max(self.batches, key=lambda b: b.max_rel_err)

    def summary(self) -> str:
        """One line: passed or by how much it missed, with the tolerances."""
        w = self.worst
        figures = (f"max abs err {w.max_abs_err:.3g}, max rel err {w.max_rel_err:.3g}, "
                   f"cosine {w.min_cosine:.6f}, top-1 agreement {w.top1_agreement:.0%}")
        batches = ",".join(dict.fromkeys(str(b.batch) for b in self.batches))
        channels = sorted({b.channels for b in self.batches if b.channels is not None})
        if channels:
            batches += f" at {','.join(map(str, channels))} channels"
        verdict = "parity OK" if self.passed else "parity FAILED"
        hint = ""
        if not all(b.finite for b in self.batches):
            ref = max(b.ref_max_abs for b in self.batches)
            hint = f"; ONNX outputs hold inf/NaN (PyTorch's reach {ref:.3g}"
            hint += ", past fp16's 65504: an untrained deep net's activations can overflow fp16)" \
                if self.precision == "fp16" and ref > 65504 else ")"
        return (f"{verdict} ({self.precision}, batches {batches}; worst: {figures}; "
                f"tolerance: {self.tolerances.describe()}{hint})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "precision": self.precision,
            "provider": self.provider,
            "reference": self.reference,
            "tolerances": dataclasses.asdict(self.tolerances),
            "batches": [dataclasses.asdict(b) for b in self.batches],
        }


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UsageProblem(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise UsageProblem(f"input_shape must be three positive integers (C, H, W), got {input_shape!r}")
    return shape  # type: ignore[return-value]


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_onnx(onnx_path: str | os.PathLike) -> None:
    """onnx.checker with full_check (which includes strict shape inference); a corrupt file raises DataProblem."""
    import onnx

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise DataProblem(f"no ONNX file at {onnx_path}")
    try:
        # full_check adds onnx.shape_inference.infer_shapes(check_type=True, strict_mode=True); the
        # path form also reads a .data side file and works past protobuf's 2 GB limit.
        onnx.checker.check_model(str(onnx_path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types (DecodeError, ValidationError, ...)
        raise DataProblem(f"{onnx_path} is not a valid ONNX model: {_one_line(exc, 160)}") from None


def _ort_session(onnx_path: Path):
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise DataProblem(f"onnxruntime cannot load {onnx_path}: {_one_line(exc, 200)}") from None


def compare_outputs(actual, reference, batch: int, tolerances: Tolerances) -> BatchParity:
    """Compare one batch of outputs (numpy arrays, shape (N, ...)) against the reference."""
    import numpy as np

    actual = np.asarray(actual, dtype=np.float64).reshape(batch, -1)
    reference = np.asarray(reference, dtype=np.float64).reshape(batch, -1)
    finite = bool(np.isfinite(actual).all())
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # inf/NaN outputs are reported, not warned
        diff = np.abs(actual - reference)
        max_abs = float(diff.max()) if diff.size else 0.0
        ref_scale = float(np.abs(reference).max()) if reference.size else 0.0
        max_rel = max_abs / ref_scale if ref_scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        norms = np.linalg.norm(actual, axis=1) * np.linalg.norm(reference, axis=1)
        dots = (actual * reference).sum(axis=1)
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(dots == 0, 1.0, 0.0))
    min_cos = float(cos.min()) if cos.size and finite else (1.0 if finite else 0.0)
    top1 = float((actual.argmax(axis=1) == reference.argmax(axis=1)).mean())
    passed = (finite and max_abs <= tolerances.atol + tolerances.rtol * ref_scale
              and min_cos >= tolerances.min_cosine
              and (tolerances.min_top1 is None or top1 >= tolerances.min_top1))
    mean_abs = float(diff.mean()) if finite and diff.size else (0.0 if finite else float("inf"))
    if not finite:
        max_abs = max_rel = float("inf")
    return BatchParity(batch=batch, max_abs_err=max_abs, max_rel_err=max_rel, mean_abs_err=mean_abs,
                       ref_max_abs=ref_scale, min_cosine=min_cos, top1_agreement=top1, passed=bool(passed),
                       finite=finite)


def verify_onnx(
    onnx_path: str | os.PathLike,
    model,
    input_shape: Sequence[int],
    *,
    batches: Sequence[int] = (1, 3),
    precision: str = "fp32",
    tolerances: Tolerances | None = None,
    seed: int = 1,
    check: bool = True,
    channels: Sequence[int] | None = None,
) -> ParityReport:
    """Run `onnx_path` in onnxruntime (CPU) and PyTorch `model` (eval, fp32) on the same fresh
    random inputs, at each batch size, and compare (see `Tolerances`).

    `channels`: for a graph whose channel axis is symbolic (a channel-agnostic net), check every batch
    size at each of these channel counts (default VERIFY_CHANNELS) instead of `input_shape`'s only.

    A graph with a fixed batch is checked at that batch only. With `check`, the file first goes
    through `check_onnx`. An fp16 file takes fp16 inputs; PyTorch gets the same rounded values in fp32.
    """
    import numpy as np
    import torch

    _check_precision(precision)
    c, h, w = _check_input_shape(input_shape)
    tolerances = tolerances or Tolerances.for_precision(precision)
    onnx_path = Path(onnx_path)
    if check:
        check_onnx(onnx_path)
    session = _ort_session(onnx_path)
    ort_input = session.get_inputs()[0]
    fixed_batch = ort_input.shape[0] if ort_input.shape and isinstance(ort_input.shape[0], int) else None
    if fixed_batch is not None:
        batches = (fixed_batch,)
    if not batches or any(b < 1 for b in batches):
        raise UsageProblem(f"verification batches must be positive, got {tuple(batches)!r}")
    input_dtype = np.float16 if "float16" in ort_input.type else np.float32
    symbolic_channels = len(ort_input.shape or ()) == 4 and not isinstance(ort_input.shape[1], int)
    channel_counts: Sequence[int | None] = (None,)
    if symbolic_channels:
        channel_counts = tuple(channels or VERIFY_CHANNELS)
        if any(n < 1 for n in channel_counts):
            raise UsageProblem(f"verification channel counts must be positive, got {tuple(channel_counts)!r}")

    reference_model = model
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in model.parameters()):
        reference_model = copy.deepcopy(model).float().cpu()
    results = []
    generator = torch.Generator().manual_seed(seed)
    with _eval_mode(reference_model), torch.no_grad():
        for n in channel_counts:
            for b in batches:
                x = torch.randn(b, n or c, h, w, generator=generator).numpy().astype(input_dtype)
                expected = reference_model(torch.from_numpy(x.astype(np.float32))).numpy()
                at = f"batch {b}" + (f", {n} channels" if n else "")
                try:
                    actual = session.run(None, {ort_input.name: x})[0]
                except Exception as exc:  # noqa: BLE001
                    raise DataProblem(f"onnxruntime failed on {onnx_path.name} at {at}: {_one_line(exc, 200)}") from None
                if actual.shape != expected.shape:
                    raise ParityFailure(f"{onnx_path.name}: output shape {list(actual.shape)} at {at}, "
                                        f"PyTorch gives {list(expected.shape)}")
                results.append(dataclasses.replace(compare_outputs(actual, expected, b, tolerances), channels=n))
    return ParityReport(precision=precision, tolerances=tolerances, batches=results)
