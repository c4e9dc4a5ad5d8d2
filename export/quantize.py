"""fp32 ONNX -> INT8 QDQ ONNX through onnxruntime's static quantization, checked on the task.

`quantize_onnx` pre-processes the fp32 file (onnxruntime's `quant_pre_process`: shape inference
and graph clean-up), calibrates on images the caller gives (from a training split, never the
test split: the calibration would otherwise see the data it is judged on) and writes a QDQ file:

- weights int8, symmetric, per output channel;
- activations (`ACTIVATIONS`): "u8" (default), uint8 with a zero point (U8S8), or "s8", int8
  symmetric (S8S8). On this project's AVX-512 VNNI CPU, onnxruntime 1.32 ran a U8S8 ResNet-50 at
  0.32x and an S8S8 one at 0.86x its fp32 latency (results/ladder-resnet50-amd-epyc-2c/; a one-off
  look at the optimized graphs showed fewer convs fused into QLinearConv for S8S8). TensorRT's explicit quantization
  reads only symmetric int8 Q/DQ pairs, so a file for TensorRT is "s8" (`build_trt_engine` refuses
  a uint8 one). On an x86 CPU without VNNI, U8S8 can saturate (onnxruntime's guide); the task check
  below is what catches it;
- calibration by min/max, entropy (KL divergence) or percentile (99.999th).

Element-wise tolerances do not apply to int8, so `check_int8` judges the file on the task:
top-1 agreement with the fp32 file on labelled test images, the accuracy change, and the
cosine similarity of the logits. It fails when the agreement is below `min_agreement` (default
`DEFAULT_MIN_AGREEMENT`, 95%) or the int8 accuracy is below `min_accuracy_ratio` of the fp32
accuracy (default 0.99: MLPerf's rule for a quantized submission).

`quantize_and_check` does both and writes the file only when the check passes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export._atomic import work_dir
from export.errors import DataProblem, MissingDependency, ParityFailure, UsageProblem
from export.onnx import sha256_files

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: Activation encodings: "u8" (uint8 with zero point: fastest in onnxruntime on x86) or "s8" (int8 symmetric: TensorRT).
ACTIVATIONS = ("u8", "s8")
#: Top-1 agreement with the fp32 file below which an int8 file is refused. 95%: a briefly trained
#: net has many near ties between classes, and int8 rounding flips some of them at little cost in
#: accuracy (resnet20 after 2 epochs on Fashion-MNIST, 73% accurate, uint8 activations, 256
#: calibration images: 97.8% agreement, accuracy 73.4% -> 72.7% on the 10k test images; `rbench
#: train resnet20 --subset 6000 --epochs 2`, then `rbench export resnet20 --precision int8 --checkpoint
#: ... --calibration fashion-mnist:256`). A file that flips one prediction in twenty has lost
#: something (a layer that should stay fp32, calibration data unlike the test data).
DEFAULT_MIN_AGREEMENT = 0.95
#: MLPerf's accuracy rule for a quantized submission: at least 99% of the fp32 reference.
MLPERF_RATIO = 0.99
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class QuantCheck:
    """How an int8 file compares to its fp32 file on labelled images."""

    images: int
    top1_agreement: float
    fp32_accuracy: float
    int8_accuracy: float
    accuracy_delta: float  # int8 - fp32, in accuracy units (0.01 = one point)
    accuracy_ratio: float | None  # int8 / fp32 (None when fp32 accuracy is 0)
    cosine_mean: float
    cosine_min: float
    min_agreement: float
    min_accuracy_ratio: float = MLPERF_RATIO

    @property
    def meets_accuracy(self) -> bool:
        # An fp32 model at 0% accuracy has nothing to keep; agreement alone judges it.
        return self.accuracy_ratio is None or self.accuracy_ratio >= self.min_accuracy_ratio

    @property
    def passed(self) -> bool:
        return self.top1_agreement >= self.min_agreement and self.meets_accuracy

    def summary(self) -> str:
        verdict = "int8 check OK" if self.passed else "int8 check FAILED"
        ratio = "-" if self.accuracy_ratio is None else f"{self.accuracy_ratio:.3f}"
        return (f"{verdict} ({self.images} test images: top-1 agreement {self.top1_agreement:.2%} "
                f"(needs >= {self.min_agreement:.0%}), accuracy {self.fp32_accuracy:.2%} -> {self.int8_accuracy:.2%} "
                f"(ratio {ratio}, needs >= {self.min_accuracy_ratio:g}), logit cosine mean {self.cosine_mean:.4f}, "
                f"min {self.cosine_min:.4f})")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed, "meets_accuracy": self.meets_accuracy}


@dataclass
class QuantReport:
    """What `quantize_onnx` wrote and how."""

    path: str
    source_path: str
    source_sha256: str
    sha256: str
    size_bytes: int
    source_size_bytes: int
    method: str
    calibration_images: int
    per_channel: bool = True
    activation_type: str = "uint8 (asymmetric)"
    weight_type: str = "int8 (symmetric, per channel)"
    quant_format: str = "QDQ"
    quantized_ops: dict[str, int] = field(default_factory=dict)  # op type -> nodes fed by DequantizeLinear
    fp32_ops: dict[str, int] = field(default_factory=dict)  # compute op types left unquantized
    onnxruntime_version: str = ""
    seconds: float = 0.0
    calibration: dict[str, Any] = field(default_factory=dict)  # the caller's description of the data
    check: QuantCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["check"] = self.check.to_dict() if self.check is not None else None
        return out


def _import_quantization():
    try:
        import onnxruntime
        from onnxruntime import quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise MissingDependency("onnxruntime.quantization", "pip install onnxruntime") from exc
    return onnxruntime, quantization, quant_pre_process


def read_input(path: str | os.PathLike) -> tuple[str, list[Any], str]:
    """(name, dims, element type) of an ONNX file's first input; a DataProblem for a file onnx cannot read."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UsageProblem(f"no ONNX file at {path}; run `rbench export` first")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own types for a corrupt file
        raise DataProblem(f"{path} is not a readable ONNX file ({' '.join(str(exc).split())[:120]})") from None
    graph_inputs = {i.name for i in model.graph.initializer}
    first = next((i for i in model.graph.input if i.name not in graph_inputs), None)
    if first is None:
        raise DataProblem(f"{path} has no graph input")
    tensor = first.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    return first.name, dims, onnx.TensorProto.DataType.Name(tensor.elem_type).lower()


def is_quantized(path: str | os.PathLike) -> bool:
    """Whether an ONNX file holds Q/DQ nodes (an int8 file)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def activation_encoding(path: str | os.PathLike) -> str | None:
    """"u8" or "s8": the type the file's QuantizeLinear nodes produce (None: no Q/DQ nodes)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    zero_points = {init.name: init.data_type for init in model.graph.initializer}
    types = {zero_points.get(node.input[2]) for node in model.graph.node
             if node.op_type == "QuantizeLinear" and len(node.input) > 2}
    if not types:
        return None
    return "u8" if onnx.TensorProto.UINT8 in types else "s8"


def check_calibration(images: np.ndarray, dims: list[Any], path: Path) -> np.ndarray:
    """`images` as a float32 NCHW array that fits the file's input, or a UsageProblem saying how it does not."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] < 1:
        raise UsageProblem(f"calibration needs a non-empty NCHW batch of images, got shape {tuple(images.shape)}")
    if not np.issubdtype(images.dtype, np.floating):
        raise UsageProblem(f"calibration images must be floats (normalized as in training), got {images.dtype}")
    want = dims[1:]
    got = list(images.shape[1:])
    names = ("channels", "height", "width")
    for name, w, g in zip(names, want, got):
        if isinstance(w, int) and w > 0 and w != g:
            raise UsageProblem(f"the calibration images have {g} {name}, {path.name} takes {w} "
                               f"(input {'x'.join(str(d) for d in dims[1:])}); calibrate on the data the model was trained on")
    if not np.isfinite(images).all():
        raise UsageProblem("the calibration images hold NaN or inf")
    return np.ascontiguousarray(images, dtype=np.float32)


def _count_ops(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(op type -> nodes that read a DequantizeLinear output, compute op type -> nodes that do not)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dq_outputs = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    quantized, plain = Counter(), Counter()
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        (quantized if any(i in dq_outputs for i in node.input) else plain)[node.op_type] += 1
    return dict(sorted(quantized.items())), dict(sorted(plain.items()))


def quantize_onnx(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: np.ndarray, *,
                  method: str = "minmax", per_channel: bool = True, batch_size: int = 32,
                  calibration_info: dict[str, Any] | None = None, activations: str = "u8") -> QuantReport:
    """Write the INT8 QDQ form of `fp32_path` to `out_path`, calibrated on `calibration` (N, C, H, W float32).

    The file appears whole or not at all. onnxruntime's calibration chatter goes to stderr, so a
    `--json` consumer of stdout never sees it.
    """
    if method not in CALIBRATION_METHODS:
        raise UsageProblem(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    if batch_size < 1:
        raise UsageProblem(f"calibration batch size must be positive, got {batch_size}")
    if activations not in ACTIVATIONS:
        raise UsageProblem(f"unknown activation encoding {activations!r}; choose u8 (onnxruntime, OpenVINO) or s8 "
                           "(symmetric int8: TensorRT)")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    name, dims, elem = read_input(fp32_path)
    if elem != "float":
        raise UsageProblem(f"{fp32_path.name} takes {elem} input; quantize the fp32 export, not a {elem} one")
    if is_quantized(fp32_path):
        raise UsageProblem(f"{fp32_path.name} is already quantized (it holds Q/DQ nodes)")
    images = check_calibration(calibration, dims, fp32_path)
    ort, quantization, quant_pre_process = _import_quantization()
    fixed = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    step = fixed or batch_size

    class _Reader(quantization.CalibrationDataReader):
        """The calibration images in batches of the graph's batch (or `batch_size` for a dynamic one)."""

        def __init__(self) -> None:
            whole = len(images) - len(images) % step if fixed else len(images)
            self._batches = iter([{name: images[i:i + step]} for i in range(0, max(whole, 0), step)])

        def get_next(self):
            return next(self._batches, None)

    if fixed and len(images) < fixed:
        raise UsageProblem(f"{fp32_path.name} has a fixed batch of {fixed}; give at least {fixed} calibration images")
    start = time.perf_counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with work_dir(out_path.parent, out_path.stem) as stage:
        pre, staged = stage / "pre.onnx", stage / out_path.name
        with contextlib.redirect_stdout(io.StringIO()) as chatter:
            try:
                quant_pre_process(str(fp32_path), str(pre))
            except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs; ONNX's still works
                quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            quantization.quantize_static(
                str(pre), str(staged), _Reader(), quant_format=quantization.QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=quantization.QuantType.QUInt8 if activations == "u8" else quantization.QuantType.QInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=getattr(quantization.CalibrationMethod,
                                         {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}[method]),
                extra_options={"ActivationSymmetric": activations == "s8", "WeightSymmetric": True},
            )
        if os.environ.get("RBENCH_DEBUG") not in (None, "", "0"):
            sys.stderr.write(chatter.getvalue())
        quantized, plain = _count_ops(staged)
        report = QuantReport(
            path=str(out_path), source_path=str(fp32_path), source_sha256=sha256_files(fp32_path),
            sha256=sha256_files(staged), size_bytes=staged.stat().st_size, source_size_bytes=fp32_path.stat().st_size,
            method=method, calibration_images=int(len(images)), per_channel=per_channel,
            quantized_ops=quantized, fp32_ops=plain, onnxruntime_version=ort.__version__,
            activation_type="uint8 (asymmetric)" if activations == "u8" else "int8 (symmetric)",
            calibration=dict(calibration_info or {}))
        os.replace(staged, out_path)
        report.seconds = round(time.perf_counter() - start, 3)
        return report


def _logits(session, images: np.ndarray, batch_size: int) -> np.ndarray:
    first = session.get_inputs()[0]
    fixed = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else None
    step = fixed or batch_size
    out = []
    for i in range(0, len(images), step):
        chunk = images[i:i + step]
        if fixed and len(chunk) < fixed:  # pad the last chunk of a fixed-batch graph
            chunk = np.concatenate([chunk, np.zeros((fixed - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            out.append(session.run(None, {first.name: chunk})[0][: len(images) - i])
        else:
            out.append(session.run(None, {first.name: chunk})[0])
    return np.concatenate(out)


def check_int8(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, images: np.ndarray, labels: np.ndarray,
               *, min_agreement: float = DEFAULT_MIN_AGREEMENT, min_accuracy_ratio: float = MLPERF_RATIO,
               batch_size: int = 256, threads: int | None = None) -> QuantCheck:
    """Run both files in onnxruntime (CPU) on labelled `images` and compare them on the task."""
    if not 0.0 < min_agreement <= 1.0:
        raise UsageProblem(f"the minimum top-1 agreement must be in (0, 1], got {min_agreement}")
    if not 0.0 <= min_accuracy_ratio <= 1.0:
        raise UsageProblem(f"the minimum accuracy ratio must be in [0, 1], got {min_accuracy_ratio}")
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images) or len(labels) == 0:
        raise UsageProblem(f"the check needs labelled images: {len(images)} images, {len(labels)} labels")
    ort, _, _ = _import_quantization()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    sessions = []
    for path in (fp32_path, int8_path):
        try:
            sessions.append(ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"]))
        except Exception as exc:  # noqa: BLE001
            raise DataProblem(f"onnxruntime cannot load {path}: {' '.join(str(exc).split())[:200]}") from None
    images = np.ascontiguousarray(images, dtype=np.float32)
    ref, low = (_logits(s, images, batch_size) for s in sessions)
    ref_top, low_top = ref.argmax(1), low.argmax(1)
    fp32_acc, int8_acc = float((ref_top == labels).mean()), float((low_top == labels).mean())
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(low, axis=1)
    cosine = (ref * low).sum(1) / np.maximum(norms, 1e-12)
    return QuantCheck(
        images=int(len(labels)), top1_agreement=float((ref_top == low_top).mean()),
        fp32_accuracy=fp32_acc, int8_accuracy=int8_acc, accuracy_delta=int8_acc - fp32_acc,
        accuracy_ratio=int8_acc / fp32_acc if fp32_acc > 0 else None,
        cosine_mean=float(cosine.mean()), cosine_min=float(cosine.min()), min_agreement=min_agreement,
        min_accuracy_ratio=min_accuracy_ratio)


def quantize_and_check(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: np.ndarray,
                       test_images: np.ndarray, test_labels: np.ndarray, *, method: str = "minmax",
                       min_agreement: float = DEFAULT_MIN_AGREEMENT, min_accuracy_ratio: float = MLPERF_RATIO,
                       per_channel: bool = True, calibration_info: dict[str, Any] | None = None,
                       threads: int | None = None, enforce: bool = True, activations: str = "u8") -> QuantReport:
    """`quantize_onnx`, then `check_int8` on the test images; `out_path` is written only when the check passes.

    A failed check raises `ParityFailure` with the check's summary (its figures, the threshold).
    With `enforce=False` the file is written anyway and the report's `check` says it failed (the
    precision ladder shows a failed rung's figures rather than hiding them).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with work_dir(out_path.parent, out_path.stem) as stage:
        staged = stage / out_path.name
        report = quantize_onnx(fp32_path, staged, calibration, method=method, per_channel=per_channel,
                               calibration_info=calibration_info, activations=activations)
        report.check = check_int8(fp32_path, staged, test_images, test_labels, min_agreement=min_agreement,
                                  min_accuracy_ratio=min_accuracy_ratio, threads=threads)
        if enforce and not report.check.passed:
            raise ParityFailure(f"{out_path.name}: {report.check.summary()}; try --calibration-method entropy or "
                                "percentile, more calibration images, or keep this model in fp32")
        os.replace(staged, out_path)
        report.path = str(out_path)
        return report
