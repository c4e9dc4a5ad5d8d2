"""PyTorch -> ONNX, checked: export (dynamo, TorchScript fallback), checker, shape inference, parity.

`to_onnx` writes one verified `.onnx` file (weights inside unless the model passes protobuf's 2 GB
limit, then a `<name>.onnx.data` side file) and returns an `ExportReport`. `verify_onnx` runs the
file through onnxruntime on the CPU against the PyTorch model in eval mode, on fresh random inputs
at two batch sizes, and returns a `ParityReport` (Polygraphy-style: per batch the max absolute
error, the max relative error, the cosine similarity and the top-1 agreement, with the tolerances
named).

Precision: "fp32" exports the model as it is. "fp16" exports `model.half()`: weights, activations,
the input and the output are all float16 (fp16 IO), so TensorRT's strongly typed build reads the
precision from the file itself and onnxruntime's CPU provider runs it as is. The parity reference
is always the fp32 PyTorch model fed the same (fp16-rounded) input, so the report says how far the
fp16 file is from the model the user trained.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export._atomic import LOCK_NAME, remove_stale_work_dirs, work_dir
from export.errors import DataProblem, EnvironmentProblem, ParityFailure, UsageProblem
from export.parity import (  # noqa: F401  (public here too: the export's face before parity had a module)
    DEFAULT_TOLERANCES,
    PRECISIONS,
    VERIFY_CHANNELS,
    BatchParity,
    ParityReport,
    Tolerances,
    _check_input_shape,
    _check_precision,
    _eval_mode,
    _one_line,
    check_onnx,
    compare_outputs,
    verify_onnx,
)

#: Opsets rbench exports. The dynamo exporter emits 18 and newer; the TorchScript exporter serves
#: 13..20. Older than 13 predates the axes-as-input forms of Split/Squeeze/ReduceSum that
#: onnxruntime's and TensorRT's optimizers expect, and nothing in the zoo needs it.
MIN_OPSET = 13
DYNAMO_MIN_OPSET = 18
TORCHSCRIPT_MAX_OPSET = 20
MAX_OPSET = 23
DEFAULT_OPSET = 18

EXPORTERS = ("auto", "dynamo", "torchscript")
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
#: The symbolic channel axis of a channel-agnostic net's graph (nets built with in_chans="any").
CHANNEL_DIM = "channels"

#: protobuf refuses a message over 2 GiB; keep a margin for the graph itself.
SINGLE_FILE_LIMIT_BYTES = 2**31 - 64 * 2**20


@dataclass
class ExportReport:
    """What `to_onnx` wrote and how."""

    path: str
    exporter: str  # "dynamo" | "torchscript"
    opset: int
    precision: str
    input_names: list[str]
    output_names: list[str]
    input_shapes: list[list[int | str]]  # a str is a dynamic axis, e.g. ["batch", 3, 32, 32]
    output_shapes: list[list[int | str]]
    dynamic_axes: dict[str, dict[int, str]]
    traced_batch: int
    export_seconds: float
    onnx_sha256: str
    onnx_bytes: int
    external_data: str | None = None  # path of the side .data file, or None when weights are inside
    parity: ParityReport | None = None
    fallback_reason: str | None = None  # why dynamo was not used, when it was not
    warnings: list[str] = field(default_factory=list)
    folded_batchnorm: int = 0  # BatchNorms folded into the dynamic convs before them (nets.layers)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dynamic_axes"] = {k: {str(a): n for a, n in v.items()} for k, v in self.dynamic_axes.items()}
        out["parity"] = self.parity.to_dict() if self.parity is not None else None
        return out


# --------------------------------------------------------------------------------------------
# Checks on arguments (pure)


def check_opset(opset: int, exporter: str = "auto") -> str:
    """Validate `opset` and return the exporter that will serve it ("dynamo" or "torchscript")."""
    if exporter not in EXPORTERS:
        raise UsageProblem(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise UsageProblem(f"opset must be an integer, got {opset!r}")
    if opset < MIN_OPSET:
        raise UsageProblem(f"opset {opset} is too old: rbench exports opset {MIN_OPSET} to {MAX_OPSET} "
                           f"(dynamo exporter {DYNAMO_MIN_OPSET}+, TorchScript up to {TORCHSCRIPT_MAX_OPSET})")
    if opset > MAX_OPSET:
        raise UsageProblem(f"opset {opset} is newer than this torch can export; use {MIN_OPSET} to {MAX_OPSET}")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise UsageProblem(f"the dynamo exporter emits opset {DYNAMO_MIN_OPSET} or newer, not {opset}")
    if exporter == "torchscript" and opset > TORCHSCRIPT_MAX_OPSET:
        raise UsageProblem(f"the TorchScript exporter emits opset {TORCHSCRIPT_MAX_OPSET} at most, not {opset}")
    if exporter == "auto":
        return "dynamo" if opset >= DYNAMO_MIN_OPSET else "torchscript"
    return exporter


def sha256_files(*paths: str | os.PathLike | None) -> str:
    """sha256 over the bytes of each existing path in turn (an ONNX file, then its .data file)."""
    digest = hashlib.sha256()
    for p in paths:
        if p is None:
            continue
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Export


def _export_dynamo(model, example, path: Path, opset: int, dynamic_batch: bool, dynamic_channels: bool = False) -> None:
    import torch

    axes = {}
    if dynamic_batch:
        axes[0] = torch.export.Dim(BATCH_DIM, min=1, max=2**16)
    if dynamic_channels:
        axes[1] = torch.export.Dim(CHANNEL_DIM, min=1, max=2**10)
    dynamic_shapes = (axes,) if axes else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes, external_data=True, verbose=False,
            report=False, optimize=True,
        )


@contextlib.contextmanager
def _quiet_stderr_fd():
    """Silence file descriptor 2 for the block: on failure the TorchScript exporter dumps the whole
    TorchScript graph there from C++ (its log switch is always on), which would bury the one-line error."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _export_torchscript(model, example, path: Path, opset: int, dynamic_batch: bool,
                        dynamic_channels: bool = False) -> None:
    import torch

    dynamic_axes = {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}} if dynamic_batch else {}
    if dynamic_channels:
        dynamic_axes.setdefault(INPUT_NAME, {})[1] = CHANNEL_DIM
    dynamic_axes = dynamic_axes or None
    with warnings.catch_warnings(), _quiet_stderr_fd():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, do_constant_folding=True,
        )


def _shape_of(value_info) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def _finalize(raw: Path, final_name: str, stage: Path, model_name: str | None,
              output_shape: Sequence[int | str]) -> tuple[Path, Path | None]:
    """Re-save the exporter's output in `stage` as `final_name`: one file when it fits, else a
    `<final_name>.data` side file whose reference names the final file (so renaming keeps it valid).
    The output's declared shape is set from what PyTorch returned (the TorchScript exporter leaves
    names like 'Gemmlogits_dim_0' even for a fixed batch). Returns (onnx path, data path or None)."""
    import onnx

    proto = onnx.load(str(raw), load_external_data=True)
    if len(proto.graph.output) == 1:
        dims = proto.graph.output[0].type.tensor_type.shape.dim
        if len(dims) == len(output_shape):
            for dim, value in zip(dims, output_shape):
                if isinstance(value, str):
                    dim.dim_param = value
                else:
                    dim.dim_value = int(value)
    weight_bytes = sum(len(t.raw_data) if t.HasField("raw_data") else 0 for t in proto.graph.initializer)
    if model_name:
        onnx.helper.set_model_props(proto, {"rbench.model": model_name})
    proto.producer_name = proto.producer_name or "pytorch"
    target = stage / final_name
    tmp_target = stage / f".resave.{final_name}"  # raw may be `stage/final_name` already
    data_name = f"{final_name}.data"
    if weight_bytes < SINGLE_FILE_LIMIT_BYTES:
        onnx.save_model(proto, str(tmp_target), save_as_external_data=False)
        data_path = None
    else:
        onnx.save_model(proto, str(tmp_target), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        data_path = stage / data_name
    # The exporter's own side files (e.g. dynamo's `<name>.data`) are no longer referenced.
    _clear_stage(stage, keep=[p for p in (tmp_target, data_path) if p is not None])
    os.replace(tmp_target, target)
    return target, data_path


def _check_request(path: str | os.PathLike, input_shape: Sequence[int], batch: int, precision: str, opset: int,
                   exporter: str) -> tuple[Path, tuple[int, int, int], str]:
    """Check `to_onnx`'s arguments before anything is written: (path, (C, H, W), the exporter to try first)."""
    _check_precision(precision)
    first = check_opset(opset, exporter)
    shape = _check_input_shape(input_shape)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise UsageProblem(f"batch must be a positive integer, got {batch!r}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise UsageProblem(f"the ONNX file name must end in .onnx, got {path.name!r}")
    return path, shape, first


def _open_stage(path: Path, stack: contextlib.ExitStack) -> Path:
    """A private, locked folder beside `path` for the exporter's files (`work_dir`), removed when `stack`
    closes; nothing reaches `path` unless every step passes. Stage folders that a killed export left in
    the same folder (marker present, lock free) are removed first; folders rbench did not make are kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_work_dirs(path.parent)
        return stack.enter_context(work_dir(path.parent, path.name))
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write to {path.parent}: {exc.strerror or exc}") from None


def _clear_stage(stage: Path, keep: Sequence[Path] = ()) -> None:
    """Remove the exporter's files from `stage`, except `keep` and the stage's lock file."""
    for leftover in stage.iterdir():
        if leftover.name == LOCK_NAME or leftover in keep:
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _export_graph(model, example, raw: Path, *, opset: int, exporter: str, first: str, dynamic_batch: bool,
                  notes: list[str], dynamic_channels: bool = False) -> tuple[str, str | None]:
    """Run the exporter into `raw`: dynamo first when `first` says so, TorchScript when dynamo fails and
    the request allows it. Returns (the exporter that wrote the file, why it was not dynamo or None)."""
    fallback_reason = None
    if first == "dynamo":
        try:
            _export_dynamo(model, example, raw, opset, dynamic_batch, dynamic_channels)
            return "dynamo", None
        except Exception as exc:  # noqa: BLE001 - any dynamo failure falls back
            if exporter == "dynamo" or opset > TORCHSCRIPT_MAX_OPSET:
                raise DataProblem(f"dynamo export failed: {_one_line(exc)}") from exc
            fallback_reason = f"dynamo failed: {_one_line(exc, 160)}"
            # A silent fallback would hide a different graph (and a slower exporter) behind the same call.
            notes.append(f"fell back to the TorchScript exporter: {fallback_reason}")
            _clear_stage(raw.parent)
    elif exporter != "torchscript":
        fallback_reason = f"opset {opset} < {DYNAMO_MIN_OPSET}"
    try:
        _export_torchscript(model, example, raw, opset, dynamic_batch, dynamic_channels)
    except Exception as exc:  # noqa: BLE001
        raise DataProblem(f"ONNX export failed: {_one_line(exc)}") from exc
    return "torchscript", fallback_reason


def _check_graph(raw: Path, final_name: str, model_name: str | None, output_shape: Sequence[int | str],
                 notes: list[str]) -> tuple[Path, Path | None]:
    """Re-save the exporter's file as `final_name` in its stage folder (see `_finalize`) and run the
    ONNX checker on it. Returns (onnx path, side .data path or None)."""
    staged, staged_data = _finalize(raw, final_name, raw.parent, model_name, output_shape)
    if staged_data is not None:
        # Copying the .onnx file alone gives a model that cannot load: say so where the caller looks.
        notes.append(f"the weights pass protobuf's 2 GB limit, so they are in the side file {staged_data.name}, "
                     f"which must stay beside {final_name}")
    check_onnx(staged)
    return staged, staged_data


def _verify_parity(onnx_path: Path, model, input_shape: tuple[int, int, int], *, batches: Sequence[int],
                   precision: str, tolerances: Tolerances | None, seed: int, final_name: str,
                   channels: Sequence[int] | None = None) -> ParityReport:
    """`verify_onnx` on the staged file; a miss raises ParityFailure naming the final file."""
    parity = verify_onnx(onnx_path, model, input_shape, batches=batches, precision=precision,
                         tolerances=tolerances, seed=seed, check=False, channels=channels)
    if not parity.passed:
        raise ParityFailure(f"{final_name}: {parity.summary()}")
    return parity


def _graph_signature(onnx_path: Path) -> dict[str, Any]:
    """The input and output names and shapes of the file, and its symbolic axes (the ExportReport fields)."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in initializers]
    outputs = list(proto.graph.output)
    dynamic_axes = {}
    for vi in inputs + outputs:
        axes = {i: d for i, d in enumerate(_shape_of(vi)) if isinstance(d, str)}
        if axes:
            dynamic_axes[vi.name] = axes
    return {
        "input_names": [vi.name for vi in inputs], "output_names": [vi.name for vi in outputs],
        "input_shapes": [_shape_of(vi) for vi in inputs], "output_shapes": [_shape_of(vi) for vi in outputs],
        "dynamic_axes": dynamic_axes,
    }


def _move_into_place(staged: Path, staged_data: Path | None, path: Path) -> Path | None:
    """Rename the checked files onto `path`, the data file first so the model never points at nothing;
    a stale `<path>.data` from an earlier export goes. Returns the final data path or None."""
    final_data = path.with_name(f"{path.name}.data")
    if staged_data is not None:
        os.replace(staged_data, final_data)
    else:
        final_data.unlink(missing_ok=True)
    os.replace(staged, path)
    return final_data if staged_data is not None else None


def to_onnx(
    model,
    path: str | os.PathLike,
    input_shape: Sequence[int] = (3, 32, 32),
    *,
    batch: int = 1,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    precision: str = "fp32",
    verify: bool = True,
    exporter: str = "auto",
    verify_batches: Sequence[int] = (1, 3),
    tolerances: Tolerances | None = None,
    model_name: str | None = None,
    seed: int = 0,
    dynamic_channels: bool | None = None,
) -> ExportReport:
    """Export `model` to ONNX at `path`, check it, and (with `verify`) prove parity with PyTorch.

    Args:
        model: the PyTorch module; exported in eval mode (its training flag is restored after).
        path: the `.onnx` file to write. Nothing is written under this name unless every step
            passes; a side `<path>.data` file appears only for models over protobuf's 2 GB limit.
        input_shape: (C, H, W) of one sample.
        batch: the batch of the static graph (`dynamic_batch=False`); with a dynamic batch the
            trace uses batch 2 when `batch` is 1, so that verifying at 1 and 3 runs batches the
            trace never saw.
        opset: ONNX opset, MIN_OPSET..MAX_OPSET; the dynamo exporter serves 18 and newer.
        dynamic_batch: mark axis 0 of input and output as the symbolic dimension "batch".
        precision: "fp32", or "fp16" (the model is exported in half precision, fp16 IO).
        verify: run `verify_onnx`; a miss raises ParityFailure and leaves no file behind.
        exporter: "auto" (dynamo, TorchScript when dynamo fails), "dynamo" or "torchscript".
        verify_batches: the batch sizes checked (a static graph is checked at `batch` only).
        tolerances: parity tolerances; default `Tolerances.for_precision(precision)`.
        model_name: recorded in the ONNX metadata (`rbench.model`).
        seed: seed of the random verification inputs.
        dynamic_channels: mark axis 1 of the input as the symbolic dimension "channels" and check parity
            at 1, 2 and 3 channels (VERIFY_CHANNELS). None: when the model was built with in_chans="any"
            (its `config`); only such a net takes any number of channels.

    The report's `warnings` say what the caller should know although the export succeeded: a
    fallback from dynamo to TorchScript, weights in a side `.data` file.
    """
    path, (c, h, w), first = _check_request(path, input_shape, batch, precision, opset, exporter)
    agnostic = dict(getattr(model, "config", None) or {}).get("in_chans") == "any"
    if dynamic_channels is None:
        dynamic_channels = agnostic
    elif dynamic_channels and not agnostic:
        raise UsageProblem("a symbolic channel axis needs a net built with in_chans='any' (a channel-agnostic stem)")
    with contextlib.ExitStack() as stack:
        stage = _open_stage(path, stack)
        return _export_in(stage, model, path, (c, h, w), first, batch=batch, opset=opset,
                          dynamic_batch=dynamic_batch, precision=precision, verify=verify, exporter=exporter,
                          verify_batches=verify_batches, tolerances=tolerances, model_name=model_name, seed=seed,
                          dynamic_channels=dynamic_channels)


def _export_in(stage: Path, model, path: Path, input_shape: tuple[int, int, int], first: str, *, batch: int,
               opset: int, dynamic_batch: bool, precision: str, verify: bool, exporter: str,
               verify_batches: Sequence[int], tolerances: Tolerances | None, model_name: str | None,
               seed: int, dynamic_channels: bool = False) -> ExportReport:
    """`to_onnx`'s work, in the locked scratch folder `stage` beside `path` (removed by the caller)."""
    import torch

    from nets import fold_dynamic_batchnorm

    c, h, w = input_shape
    traced_batch = (2 if batch == 1 else batch) if dynamic_batch else batch
    dtype = torch.float16 if precision == "fp16" else torch.float32
    notes: list[str] = []
    try:
        on_cpu = all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
        if not on_cpu:  # export, and check against, a CPU copy: the CPU provider is the reference runtime
            model = copy.deepcopy(model).cpu()
        # A dynamic conv's computed weight keeps its BatchNorm a node of its own: fold it in first (in fp32).
        with _eval_mode(model):
            graph_model, folded = fold_dynamic_batchnorm(model, on_skip=notes.append)
        if precision == "fp16":
            graph_model = (graph_model if folded else copy.deepcopy(model)).to(dtype)
        export_model = graph_model
        example = torch.randn(traced_batch, c, h, w, generator=torch.Generator().manual_seed(seed)).to(dtype)
        raw = stage / path.name
        with _eval_mode(export_model), torch.no_grad():
            start = time.perf_counter()
            used, fallback_reason = _export_graph(export_model, example, raw, opset=opset, exporter=exporter,
                                                  first=first, dynamic_batch=dynamic_batch, notes=notes,
                                                  dynamic_channels=dynamic_channels)
            export_seconds = time.perf_counter() - start
            output_shape = [BATCH_DIM if dynamic_batch else batch, *export_model(example).shape[1:]]
        staged, staged_data = _check_graph(raw, path.name, model_name, output_shape, notes)
        parity = None
        if verify:
            parity = _verify_parity(staged, model, (c, h, w), batches=tuple(verify_batches) if dynamic_batch else (batch,),
                                    precision=precision, tolerances=tolerances, seed=seed + 1, final_name=path.name,
                                    channels=VERIFY_CHANNELS if dynamic_channels else None)
        signature = _graph_signature(staged)
        sha = sha256_files(staged, staged_data)
        size = staged.stat().st_size + (staged_data.stat().st_size if staged_data else 0)
        final_data = _move_into_place(staged, staged_data, path)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write {path}: {exc.strerror or exc}") from None

    return ExportReport(
        path=str(path), exporter=used, opset=opset, precision=precision, **signature, traced_batch=traced_batch,
        export_seconds=round(export_seconds, 3), onnx_sha256=sha, onnx_bytes=size,
        external_data=str(final_data) if final_data else None, parity=parity, fallback_reason=fallback_reason,
        warnings=notes, folded_batchnorm=folded,
    )
