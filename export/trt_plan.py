"""What a TensorRT build asks for, decided without TensorRT: the batch range and its optimization profile, the
precision plan for TensorRT 10 (builder flags) or 11 (strongly typed, the precision from the ONNX file), and the
cache key that says when an engine on disk may be reused. Pure functions, tested on any machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from export.errors import MissingDependency, UsageProblem

INSTALL_HINT = "pip install 'rbench[trt]' (tensorrt>=10,<11) on a machine with an NVIDIA GPU"


DEFAULT_BATCH_RANGE = (1, 8, 64)


MIN_TRT_MAJOR = 10
#: Bump when what a build asks TensorRT changes (flags, profiles, ...): engines of an older recipe rebuild.
BUILD_RECIPE_VERSION = 2


def parse_batch_range(text: str | Sequence[int]) -> tuple[int, int, int]:
    """'1,8,64' (or a sequence) -> (min, opt, max), each >= 1 and min <= opt <= max.

    A single number 'N' means a fixed batch (N, N, N).
    """
    if isinstance(text, str):
        parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise UsageProblem(f"batch range must be integers 'MIN,OPT,MAX' (e.g. 1,8,64), got {text!r}") from None
    else:
        values = list(text)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise UsageProblem(f"batch range must be three integers MIN,OPT,MAX (e.g. 1,8,64), got {text!r}")
    lo, opt, hi = values
    if lo < 1:
        raise UsageProblem(f"batch range minimum must be at least 1, got {lo}")
    if not lo <= opt <= hi:
        raise UsageProblem(f"batch range must satisfy MIN <= OPT <= MAX, got {lo},{opt},{hi}")
    return lo, opt, hi


def profile_shapes(input_shape: Sequence[int], batch_range: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """The optimization profile of one NCHW input: {'min': (1, C, H, W), 'opt': ..., 'max': ...}."""
    lo, opt, hi = parse_batch_range(batch_range)
    rest = tuple(int(d) for d in input_shape)
    if len(rest) != 3 or any(d < 1 for d in rest):
        raise UsageProblem(f"input shape must be three positive integers (C, H, W), got {tuple(input_shape)!r}")
    return {"min": (lo, *rest), "opt": (opt, *rest), "max": (hi, *rest)}


@dataclass(frozen=True)
class PrecisionPlan:
    """How to get a precision out of a given TensorRT major version."""

    trt_major: int
    precision: str  # what the user asked for
    strongly_typed: bool  # create the network with STRONGLY_TYPED (always so on TensorRT 11)
    set_flags: tuple[str, ...]  # BuilderFlag names to set
    clear_flags: tuple[str, ...]  # BuilderFlag names to clear
    note: str


def precision_plan(trt_major: int, precision: str, onnx_precision: str, quantized: bool = False,
                   tf32: bool = False) -> PrecisionPlan:
    """Decide network typing and builder flags for `precision` on TensorRT `trt_major`.

    `onnx_precision` is the float type of the ONNX file's input ("fp32" or "fp16"); `quantized`
    says whether the file holds Q/DQ nodes (an int8 file from `rbench export --precision int8`).
    TensorRT 10: weak typing, precision by flags (FP16; TF32 cleared for fp32).
    TensorRT 11+: strong typing, no precision flags; the file must already be in that precision.
    int8 (both): explicit quantization from the file's Q/DQ pairs in a strongly typed network, with
    no precision flags, as TensorRT's guide asks ("use explicit quantization with strong typing");
    layers outside Q/DQ pairs run in the file's float type.
    `tf32`: fp32 means strict fp32 everywhere in rbench (TF32 cleared here, and off in torch and
    onnxruntime); with `tf32=True` the TF32 flag is set instead, as `--tf32` sets it for torch.
    """
    plan = _precision_plan(trt_major, precision, onnx_precision, quantized)
    if tf32:
        plan = PrecisionPlan(plan.trt_major, plan.precision, plan.strongly_typed,
                             (*plan.set_flags, "TF32"), tuple(f for f in plan.clear_flags if f != "TF32"),
                             plan.note.replace("TF32 off", "TF32 on") + ("" if "TF32 off" in plan.note else "; TF32 on"))
    return plan


def _precision_plan(trt_major: int, precision: str, onnx_precision: str, quantized: bool) -> PrecisionPlan:
    if precision not in ("fp32", "fp16", "int8"):
        raise UsageProblem(f"TensorRT precision must be fp32, fp16 or int8, got {precision!r}")
    if onnx_precision not in ("fp32", "fp16"):
        raise UsageProblem(f"ONNX precision must be fp32 or fp16, got {onnx_precision!r}")
    if trt_major < MIN_TRT_MAJOR:
        raise MissingDependency(f"TensorRT {MIN_TRT_MAJOR} or newer (found {trt_major}.x)", INSTALL_HINT)
    if precision == "int8" and not quantized:
        raise UsageProblem("a TensorRT int8 engine is built from an int8 (Q/DQ) ONNX file: make one with "
                           "`rbench export MODEL --precision int8 --checkpoint CKPT --calibration DATA`")
    if precision != "int8" and quantized:
        raise UsageProblem(f"the ONNX file is int8 (it holds Q/DQ nodes); build it with --precision int8, not {precision}")
    if precision == "int8":
        return PrecisionPlan(trt_major, precision, True, (), ("TF32",),
                             f"TensorRT {trt_major}, strongly typed, explicit quantization: int8 where the file's "
                             f"Q/DQ pairs say, {onnx_precision} elsewhere")
    if precision == "fp32" and onnx_precision == "fp16":
        raise UsageProblem("an fp16 ONNX file cannot give an fp32 engine; export again with --precision fp32")
    if trt_major == 10:
        if precision == "fp16":
            return PrecisionPlan(10, precision, False, ("FP16",), ("TF32",),
                                 "TensorRT 10, weak typing: BuilderFlag.FP16 lets it choose fp16 kernels")
        return PrecisionPlan(10, precision, False, (), ("TF32",),
                             "TensorRT 10, weak typing: fp32 kernels, TF32 off")
    if precision == "fp16" and onnx_precision != "fp16":
        raise UsageProblem(f"TensorRT {trt_major} builds strongly typed networks and takes the precision from the "
                           "ONNX file; export with --precision fp16 for an fp16 engine")
    return PrecisionPlan(trt_major, precision, True, (), ("TF32",),
                         f"TensorRT {trt_major}, strongly typed: precision from the ONNX file ({onnx_precision})")


def engine_cache_key(*, onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str,
                     precision: str, profile: dict[str, Sequence[int]], workspace_gib: float,
                     profiles: Sequence[dict[str, Sequence[int]]] | None = None, tf32: bool = False,
                     trt_flavour: str | None = None, cuda_version: str | None = None,
                     recipe_version: int = BUILD_RECIPE_VERSION) -> str:
    """A hash of everything that makes an engine valid: change any part and the key changes.

    `profiles`: every optimization profile when there are several (one per measured batch);
    `trt_flavour`: the wheel that provides TensorRT (tensorrt-cu12, tensorrt-cu13, ...);
    `cuda_version`: the CUDA runtime it runs with; `recipe_version`: `BUILD_RECIPE_VERSION`.
    """
    def dims(shapes: dict[str, Sequence[int]]) -> dict[str, list[int]]:
        return {k: [int(d) for d in v] for k, v in sorted(shapes.items())}

    payload = {
        "onnx_sha256": onnx_sha256,
        "tensorrt": trt_version,
        "tensorrt_flavour": trt_flavour,
        "cuda": cuda_version,
        "gpu": gpu_name,
        "compute_capability": compute_capability,
        "precision": precision,
        "tf32": bool(tf32),
        "profile": dims(profile),
        "profiles": [dims(p) for p in profiles] if profiles else None,
        "workspace_gib": float(workspace_gib),
        "recipe": int(recipe_version),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def trt_major_of(version: str) -> int:
    """'10.13.3.9' -> 10."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise MissingDependency(f"TensorRT with a readable version (got {version!r})", INSTALL_HINT) from None
