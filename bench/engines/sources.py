"""Model sources: whatever a user brings, and the loaders that turn it into what an engine runs.

A *source* is a zoo name (`resnet20`), an `nn.Module` (from Python), `torchvision:NAME`, a
`package.module:callable` that returns an `nn.Module`, an `.onnx` file, or a serialized TensorRT
engine (`.engine`, `.plan`, `.trt`). `resolve_source` reads it once, checks it and returns a
`ModelSource` that knows its input shape and dtype; the loaders `onnx_file` and `engine_file` make
the artifact an engine needs (Polygraphy's loader pattern): engines never export by themselves.

    >>> source = resolve_source("torchvision:resnet18", input_size=64)
    >>> source.kind, source.input_shape
    ('torchvision', (3, 64, 64))
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.engines.base import user_code
from bench.errors import DataProblem, UsageProblem
from export.onnx import sha256_files

#: What `--help` says a MODEL argument may be.
SOURCE_HELP = ("a zoo name (rbench list), torchvision:NAME, package.module:callable returning an nn.Module, "
               "a .onnx file, or a TensorRT engine file (.engine/.plan/.trt)")
KINDS = ("zoo", "module", "torchvision", "callable", "onnx", "trt")
MODULE_KINDS = ("zoo", "module", "torchvision", "callable")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: ONNX TensorProto element types an image input may have (FLOAT, FLOAT16, BFLOAT16).
_ONNX_FLOAT_TYPES = {1: "float32", 10: "float16", 16: "bfloat16"}


@dataclass
class ModelSource:
    """One model as a user gave it: what it is, where it is, and the (C, H, W) image it takes.

    `input_shape` is None only for a TensorRT engine, whose shape is read when it is opened.
    `file_batch` is the fixed batch of a static-batch ONNX file (None when the batch is symbolic).
    """

    kind: str
    name: str
    input_shape: tuple[int, int, int] | None
    path: Path | None = None
    sha256: str | None = None
    dtype: str = "float32"
    file_batch: int | None = None
    input_name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    _module: Any = field(default=None, repr=False)
    #: ONNX files already made from this module, by (precision, fixed batch or None for a dynamic batch).
    exported: dict[tuple[str, int | None], Path] = field(default_factory=dict, repr=False)

    @property
    def has_module(self) -> bool:
        return self.kind in MODULE_KINDS

    def module(self):
        """The `nn.Module` in eval mode; a file source has none (one-line UsageProblem)."""
        if not self.has_module:
            raise UsageProblem(f"{self.name} is a {self.kind} file, not a PyTorch model; use --engine "
                               f"{'ort' if self.kind == 'onnx' else 'trt'} for it")
        return self._module.eval()

    def describe(self) -> dict[str, Any]:
        """What a record says about the source: kind, name, file path and sha256."""
        return {"kind": self.kind, "name": self.name, "path": str(self.path) if self.path else None,
                "sha256": self.sha256, "checkpoint": self.checkpoint}


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageProblem(f"{name} must be a positive integer, got {value!r}")


def resolve_source(spec: Any, *, input_size: int | None = None, in_chans: int | None = None,
                   num_classes: int | None = None, act: str | None = None, checkpoint: str | Path | None = None,
                   input_shape: tuple[int, int, int] | None = None, name: str | None = None) -> ModelSource:
    """A checked `ModelSource` for `spec` (see the module docstring for what `spec` may be).

    Args:
        spec: a `ModelSource` (returned as is), an `nn.Module`, or a string.
        input_size / in_chans: image side and channels; a file's own shape wins where it is fixed.
            Defaults: the zoo net's design size, 224 for torchvision; a module or callable without
            a `config` needs them (or `input_shape`).
        num_classes: classifier outputs of a zoo or torchvision model (zoo default 10, torchvision 1000).
        act: activation of a zoo model (relu, leaky_relu, silu).
        checkpoint: weights for a module source (loaded weights-only).
        input_shape: (C, H, W), instead of `in_chans` and `input_size`.
        name: what tables call a module source (default: its class name).
    """
    if isinstance(spec, ModelSource):
        return spec
    if input_shape is not None:
        if len(tuple(input_shape)) != 3:
            raise UsageProblem(f"input_shape must be (C, H, W), got {input_shape!r}")
        in_chans, input_size = int(input_shape[0]), int(input_shape[1])
        if int(input_shape[1]) != int(input_shape[2]):
            raise UsageProblem(f"rbench measures square images; got {tuple(input_shape)}")
    for key, value in (("input size", input_size), ("in_chans", in_chans), ("num_classes", num_classes)):
        _positive(key, value)
    if not isinstance(spec, str):
        import torch.nn as nn

        if not isinstance(spec, nn.Module):
            raise UsageProblem(f"a model source is a name, a path or an nn.Module, not {type(spec).__name__}")
        source = _from_module(spec, "module", name, input_size, in_chans)
    elif spec.lower().endswith(".onnx"):
        source = _from_onnx(Path(spec), input_size, in_chans)
    elif spec.lower().endswith(ENGINE_SUFFIXES):
        source = _from_engine(Path(spec))
    elif spec.startswith("torchvision:"):
        source = _from_torchvision(spec.split(":", 1)[1], input_size, in_chans, num_classes)
    elif ":" in spec:
        source = _from_callable(spec, input_size, in_chans)
    else:
        loaded = _load_checkpoint(checkpoint) if checkpoint is not None else None
        source = _from_zoo(spec, input_size, in_chans, num_classes, act, loaded)
        if loaded is not None:
            _apply_checkpoint(source, Path(checkpoint), loaded)
        return source
    if checkpoint is not None:
        _apply_checkpoint(source, Path(checkpoint))
    return source


# -- one reader per kind ---------------------------------------------------------------------
def _from_zoo(name: str, input_size, in_chans, num_classes, act, checkpoint=None) -> ModelSource:
    """A zoo net. With an `rbench train` checkpoint (loaded), its architecture settings and trained input
    size are the defaults, as `rbench export --checkpoint` takes them: options given here still win."""
    import nets

    if "/" in name or name.endswith((".pt", ".pth", ".onnx")):
        raise UsageProblem(f"no such file or zoo model {name!r}; a model source is {SOURCE_HELP}")
    if name not in nets.list_models():
        import torchvision

        if name in torchvision.models.list_models(module=torchvision.models):
            raise UsageProblem(f"{name!r} is not in rbench's zoo; for torchvision's, say torchvision:{name}")
    entry = nets.model_entry(name)  # unknown: one line with near matches
    trained = dict(checkpoint.config or {}) if checkpoint is not None else {}
    trained_as = trained.pop("name", None)
    if trained_as is not None and trained_as != name:
        raise UsageProblem(f"the checkpoint {checkpoint.path} holds a {trained_as}, not a {name}; measure {trained_as}")
    data = dict((checkpoint.extra or {}).get("dataset") or {}) if checkpoint is not None else {}
    size = input_size or trained.pop("input_size", None) or data.get("input_size") or entry.input_size
    trained.pop("input_size", None)
    kwargs = {"num_classes": 10, "in_chans": 3, **trained}
    for key, value in (("num_classes", num_classes), ("in_chans", in_chans), ("act", act)):
        if value is not None:
            kwargs[key] = value
    model = nets.create_model(name, **kwargs)
    # A channel-agnostic net ("any") is measured at the channels it was trained on (else 3).
    chans = int(data.get("in_chans") or 3) if kwargs["in_chans"] == "any" else int(kwargs["in_chans"])
    return ModelSource("zoo", name, (chans, int(size), int(size)), config=dict(model.config), _module=model)


def _from_module(model, kind: str, name: str | None, input_size, in_chans) -> ModelSource:
    import nets

    config = dict(getattr(model, "config", None) or {})
    zoo_name = config.get("name")
    is_zoo_net = isinstance(zoo_name, str) and zoo_name in nets.list_models()
    name = name or (zoo_name if is_zoo_net else type(model).__name__)
    size = input_size or config.get("input_size") or (nets.model_entry(zoo_name).input_size if is_zoo_net else None)
    if size is None:
        raise UsageProblem(f"{name} does not say its input size; give --input-size (Python: input_shape=(C, H, W))")
    chans = in_chans or config.get("in_chans") or 3
    return ModelSource(kind, name, (int(chans), int(size), int(size)), config=config, _module=model.eval())


def _from_torchvision(name: str, input_size, in_chans, num_classes) -> ModelSource:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)  # classification builders only
    if name not in names:
        near = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join('torchvision:' + n for n in near)}?" if near else \
            "; torchvision.models.list_models() lists them"
        raise UsageProblem(f"torchvision has no classification model {name!r}{hint}")
    if in_chans not in (None, 3):
        raise UsageProblem("torchvision classification models take 3 input channels")
    kwargs = {"weights": None}  # random weights: never a download (give --checkpoint for trained ones)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = torchvision.models.get_model(name, **kwargs)
    size = input_size or 224
    config = {"name": f"torchvision:{name}", "num_classes": num_classes or 1000, "in_chans": 3}
    return ModelSource("torchvision", f"torchvision:{name}", (3, size, size), config=config, _module=model.eval())


def _from_callable(spec: str, input_size, in_chans) -> ModelSource:
    import torch.nn as nn

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageProblem(f"{spec!r}: a callable source is package.module:callable")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:  # importable from the current folder, as python -m does
        sys.path.insert(0, str(Path.cwd()))
    # User code runs here twice (the import, the call): any failure, sys.exit() included, is one line.
    with user_code(spec, f"importing {module_name}", UsageProblem):
        module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise UsageProblem(f"{module_name} has no callable {attr!r}")
    with user_code(spec, f"building the model ({attr}())", UsageProblem):
        model = fn()
    if not isinstance(model, nn.Module):
        raise UsageProblem(f"{spec}() returned a {type(model).__name__}, not a torch.nn.Module")
    return _from_module(model, "callable", spec, input_size, in_chans)


def read_onnx_input(path: Path) -> tuple[str, list[int | None], str]:
    """(name, [N, C, H, W] with None for a symbolic axis, dtype) of an ONNX file's one image input."""
    import onnx

    if not path.is_file():
        raise UsageProblem(f"no ONNX file at {path}")
    if path.stat().st_size == 0:
        raise DataProblem(f"{path} is empty (0 bytes), not an ONNX model; export it again")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a corrupt file
        raise DataProblem(f"{path} is not a readable ONNX model ({type(exc).__name__}); export it again") from None
    # A file cut short at a field boundary still parses, as a model missing its graph or its opsets.
    if not model.HasField("graph") or not model.graph.node:
        raise DataProblem(f"{path} is not a readable ONNX model (no graph: cut short or not ONNX); export it again")
    if not model.opset_import:
        raise DataProblem(f"{path} is not a readable ONNX model (no opset import: cut short?); export it again")
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UsageProblem(f"{path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs) or 'none'}); "
                           "rbench measures models with one NCHW image input")
    value = inputs[0]
    tensor = value.type.tensor_type
    dtype = _ONNX_FLOAT_TYPES.get(tensor.elem_type)
    if dtype is None:
        raise UsageProblem(f"{path}: input {value.name!r} has ONNX element type {tensor.elem_type}, "
                           "not a float image; rbench feeds float32/float16 NCHW batches")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if len(dims) != 4:
        raise UsageProblem(f"{path}: input {value.name!r} has rank {len(dims)}, not an NCHW image batch (rank 4)")
    return value.name, dims, dtype


def _from_onnx(path: Path, input_size, in_chans) -> ModelSource:
    name, (batch, chans, height, width), dtype = read_onnx_input(path)
    if 0 in (batch, chans, height, width):  # no --batch or --input-size can measure an empty tensor
        raise UsageProblem(f"{path}: input {name!r} has a zero-sized axis ({[batch, chans, height, width]}), so it "
                           "holds no image to measure; export the model again with a batch of 1 or more")
    if dtype == "bfloat16":
        raise UsageProblem(f"{path}: bfloat16 inputs are not supported by onnxruntime's CPU provider; export fp32")
    if chans is None:
        if in_chans is None:
            raise UsageProblem(f"{path} leaves its channel axis symbolic; give --in-chans")
        chans = in_chans
    elif in_chans is not None and in_chans != chans:
        raise UsageProblem(f"{path} takes {chans} input channels, not --in-chans {in_chans}")
    if height is None or width is None:
        if input_size is None:
            raise UsageProblem(f"{path} leaves height/width symbolic; give --input-size")
        height = height or input_size
        width = width or input_size
    elif input_size is not None and (input_size, input_size) != (height, width):
        raise UsageProblem(f"{path} takes {height}x{width} images; drop --input-size {input_size}")
    if height != width:
        raise UsageProblem(f"{path} takes {height}x{width} images; rbench measures square images")
    return ModelSource("onnx", path.stem, (chans, height, width), path=path, sha256=sha256_files(path), dtype=dtype,
                       file_batch=batch, input_name=name)


def _from_engine(path: Path) -> ModelSource:
    if not path.is_file():
        raise UsageProblem(f"no TensorRT engine file at {path}; build one with `rbench export MODEL --engine trt`")
    return ModelSource("trt", path.stem, None, path=path, sha256=sha256_files(path))


def _load_checkpoint(path: str | Path):
    from export.checkpoint import load_checkpoint

    return load_checkpoint(Path(path))


def _apply_checkpoint(source: ModelSource, path: Path, checkpoint=None) -> None:
    from export.checkpoint import apply_checkpoint

    if not source.has_module:
        raise UsageProblem(f"--checkpoint applies to PyTorch models; {source.name} is a {source.kind} file")
    apply_checkpoint(source._module, checkpoint or _load_checkpoint(path), source.name)
    source.checkpoint = str(path)


# -- loaders: the artifact each engine runs ---------------------------------------------------
#: Bumped when rbench exports the same net as a different graph, so cached ONNX files of the old form are not reused.
EXPORT_FORM = 2


def graph_batch(source: ModelSource, batch: int | None) -> int | None:
    """The batch to export a fixed-batch graph for, or None for a dynamic-batch graph.

    A net with dynamic convolution runs its fast form (each sample's kernel aggregated, then one
    grouped conv with the batch folded into the groups) only in a graph whose batch is fixed; its
    dynamic-batch graph computes the slower im2col form (see nets.layers.DynamicConv2d). So when
    a measurement is at one batch size, such a net gets a fixed-batch graph; every other net keeps
    one dynamic-batch graph for every batch.
    """
    if batch is None or not source.has_module:
        return None
    from nets import uses_dynamic_conv

    return int(batch) if uses_dynamic_conv(source.module()) else None


def onnx_file(source: ModelSource, precision: str = "fp32", workdir: Path | None = None,
              batch: int | None = None) -> Path:
    """The ONNX file of `source` at `precision`: the file itself, or an export of the module.

    A zoo model with random weights (timing does not depend on them) is exported once into the
    cache; any other module (trained weights, user code) is exported into `workdir`. `batch` is
    the batch the graph will run at, when known: see `graph_batch`.
    """
    if source.kind == "onnx":
        wanted = "float16" if precision == "fp16" else "float32"
        if source.dtype != wanted:
            raise UsageProblem(f"{source.path} is a {source.dtype} model; measure it with --precision "
                               f"{'fp16' if source.dtype == 'float16' else 'fp32'}")
        return source.path
    if source.kind == "trt":
        raise UsageProblem(f"{source.path} is a TensorRT engine; only --engine trt runs it")
    fixed = graph_batch(source, batch)
    known = source.exported.get((precision, fixed))
    if known is not None and known.exists():
        return known
    import export
    from bench.cache import cache_root, checked_entry, record_entry

    c, h, w = source.input_shape
    model = source.module()
    cached = False
    suffix = f"{precision}" + (f"-b{fixed}" if fixed else "")
    if source.kind == "zoo" and source.checkpoint is None:
        params = sum(p.numel() for p in model.parameters())  # a changed definition gets a new file
        config = "-".join(f"{k}={v}" for k, v in sorted(source.config.items()) if k not in ("name", "input_size"))
        # EXPORT_FORM: a new graph form of the same net (e.g. BatchNorm folded) is exported anew, not reused.
        key = hashlib.sha256(f"{config}|{EXPORT_FORM}".encode()).hexdigest()[:8]
        path = cache_root() / "onnx" / f"{source.name}-{c}x{h}x{w}-{params}p-{key}-{suffix}.onnx"
        if checked_entry(path, "cached ONNX file"):  # a cut-short or changed file is rebuilt, not trusted
            source.exported[(precision, fixed)] = path
            return path
        cached = True
    else:
        if workdir is None:
            raise ValueError("onnx_file needs a workdir to export a module source into")
        stem = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in source.name)
        path = Path(workdir) / f"{stem}-{suffix}.onnx"
        # Sources often share a name (a study's K=3 and K=4 nets, an RGB net and its 1-channel twin): each exports
        # to its own file, never over another source's.
        n = 1
        while path.exists() or path.with_suffix(".onnx.data").exists():
            n += 1
            path = Path(workdir) / f"{stem}-{suffix}-{n}.onnx"
    # Only the dynamo exporter takes a computed conv weight (the fixed-batch dynamic conv form).
    report = export.to_onnx(model.cpu(), path, input_shape=(c, h, w), batch=fixed or 1, dynamic_batch=fixed is None,
                            precision=precision, verify=False, model_name=source.name,
                            exporter="dynamo" if fixed else "auto")
    if cached:
        try:
            record_entry(report.path)  # after the file: a crash in between leaves an unverifiable file, rebuilt later
        except OSError as exc:
            from bench.errors import EnvironmentProblem

            raise EnvironmentProblem(f"cannot write to the cache {path.parent}: {exc.strerror or exc}") from None
    source.exported[(precision, fixed)] = Path(report.path)
    return Path(report.path)


def engine_file(source: ModelSource, precision: str = "fp32", max_batch: int = 64, workdir: Path | None = None,
                batch: int | None = None, tf32: bool = False) -> Path:
    """The TensorRT engine of `source`: the file itself, or one built from `onnx_file` (reused by cache key).

    With `batch` (the one batch about to be measured), the profile's opt is that batch: every
    batch of a sweep is timed on kernels TensorRT tuned for it (one engine per batch, each kept
    under its own cache key), not on those of batch 8.
    """
    if source.kind == "trt":
        return source.path
    import export
    from bench.cache import cache_root

    fixed = graph_batch(source, batch)
    onnx = onnx_file(source, precision, workdir, batch)
    folder = Path(workdir) if workdir is not None else cache_root() / "trt"
    top = max(max_batch, batch or 1)
    opt = fixed or batch or min(8, top)
    path = folder / f"{onnx.stem}-b{fixed or top}-opt{opt}{'-tf32' if tf32 else ''}.engine"
    c, h, w = source.input_shape
    if source.file_batch is not None and source.file_batch != max_batch:
        raise UsageProblem(f"{source.path} has a fixed batch of {source.file_batch}; measure batch {source.file_batch}")
    # TensorRT 11 takes the precision from the ONNX file (strong typing), so fp16 exported fp16 above.
    batch_range = (fixed,) * 3 if fixed else (1, opt, top)
    report = export.build_trt_engine(onnx, path, precision=precision, batch_range=batch_range, input_shape=(c, h, w),
                                     tf32=tf32)
    return Path(getattr(report, "engine_path", None) or path)


def check_engine_fits(source: ModelSource, engine: str) -> None:
    """A file source runs only on its own engine: say so in one line before any work."""
    if source.kind == "onnx" and engine not in ("ort", "openvino", "trt"):
        raise UsageProblem(f"{source.path} is an ONNX file: measure it with --engine ort or openvino (or trt on a GPU)")
    if source.kind == "trt" and engine != "trt":
        raise UsageProblem(f"{source.path} is a TensorRT engine: measure it with --engine trt")
