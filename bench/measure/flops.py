"""Parameters, MACs and FLOPs of a model, by two independent counters that check each other.

- MACs (multiply-accumulates) by thop, the unit papers and torchvision call "FLOPs"
  (torchvision's resnet50 at 224: 4.09 G of conv + linear MACs; thop adds ~1% for BatchNorm
  and pooling, 4.13 G). thop counts modules it has a rule for (conv, linear, norms, average
  pools, softmax); an affine BatchNorm costs it 4 ops per element, ReLU-like activations 0.
  It sees nothing a forward computes with functional calls (`F.conv2d`, `x @ w`, a residual
  `+`): older releases miss the batched matmul of a dynamic conv and the attention products.
- FLOPs by `torch.utils.flop_counter.FlopCounterMode`, which sees every aten matmul and
  convolution whatever module issued it, at 2 FLOPs per MAC; it does not count norms,
  activations, pools or additions.

So FLOPs ~ 2 x MACs, and a gap beyond `AGREEMENT_TOLERANCE` has one of two causes, which
`FlopsReport.warning` names by its direction:
- thop higher: its norm and pool ops are a large share of the work, as in nets of cheap
  depthwise convs (torchvision's mobilenet_v2: thop 8% above FLOPs / 2, all of it BatchNorm).
  That gap is not missed work; FLOPs are the conv and matmul work alone.
- thop lower: thop missed functional work (a dynamic conv, attention); trust the FLOPs.

`count_flops` on a meta-device model does no arithmetic at all, and thop needs shapes only, so
`model_counts` builds each registered net where counting it is fastest (`counting_device`),
counts params, thop MACs and FLOPs from that one build and caches the answer: counting the whole
zoo takes seconds (10 to 15 s cold on a busy 2-core CPU, thop about a quarter of it), none once cached.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode, flop_registry

#: Relative gap between FLOPs and 2 x MACs above which the two counters are said to disagree.
AGREEMENT_TOLERANCE = 0.03


@dataclass
class FlopsReport:
    """What `profile_model` counted, for one forward pass at `batch` x `input_shape`."""

    params: int
    macs: int  # thop, multiply-accumulates
    flops: int  # torch flop counter, 2 per multiply-accumulate
    input_shape: tuple[int, int, int]
    batch: int = 1
    agrees: bool = True
    warning: str | None = None
    flops_by_module: dict[str, int] = field(default_factory=dict)  # module path -> FLOPs (detail=True)
    macs_by_module: dict[str, int] = field(default_factory=dict)  # module path -> thop MACs (detail=True)

    def as_record(self) -> dict:
        """Flat fields for a result record (units in the names)."""
        return dict(params=self.params, macs=self.macs, flops=self.flops, batch=self.batch,
                    input_shape=list(self.input_shape), counters_agree=self.agrees, counters_warning=self.warning)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _example(model: nn.Module, input_shape: tuple[int, ...], batch: int) -> torch.Tensor:
    device = _device_of(model)
    if device.type == "meta":
        return torch.empty((batch, *input_shape), device=device)
    return torch.randn((batch, *input_shape), device=device)


def _check_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    return shape  # type: ignore[return-value]


def count_params(model: nn.Module) -> int:
    """Every parameter, trainable or not (thop misses those of modules it has no rule for)."""
    return sum(p.numel() for p in model.parameters())


class _TotalFlops(TorchDispatchMode):
    """FlopCounterMode's arithmetic (its own per-op formulas) without its per-module bookkeeping,
    which costs seconds on a 1202-layer net; for totals only."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*tree_map(_shape, args), **tree_map(_shape, kwargs), out_val=tree_map(_shape, out))
        return out


def _shape(x):
    return x.shape if isinstance(x, torch.Tensor) else x


@contextlib.contextmanager
def _one_thread():
    # Counting runs tiny batch-1 ops; a second intra-op thread only adds contention (on a busy
    # 2-core machine it made counting resnet1202 ten times slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def count_flops(model: nn.Module, input_shape: tuple[int, int, int], batch: int = 1) -> int:
    """FLOPs of one forward pass, by torch's flop formulas. On a meta-device model nothing is computed."""
    shape = _check_shape(input_shape)
    was_training = model.training
    model.eval()
    counter = _TotalFlops()
    try:
        with _one_thread(), torch.no_grad(), counter:
            model(_example(model, shape, batch))
    finally:
        model.train(was_training)
    return int(counter.total)


def counting_device(input_shape: tuple[int, int, int]) -> torch.device:
    """Where counting a net is fastest: the meta device for large inputs, the CPU for small ones.

    Meta tensors skip all arithmetic, but their kernels and the initialisers run in Python per
    op: at 224x224 (vgg19: 20 GMACs) meta counts in milliseconds where the CPU takes a second,
    while a 1202-layer net at 32x32 builds and runs several times faster on the CPU.
    """
    return torch.device("meta" if input_shape[-1] * input_shape[-2] >= 96 * 96 else "cpu")


def _cache_file() -> Path | None:
    if os.environ.get("RBENCH_NO_CACHE") not in (None, "", "0"):
        return None
    from bench.cache import cache_root

    return cache_root() / "zoo-counts.json"


@functools.lru_cache(maxsize=1)
def _fingerprint() -> str:
    """Changes whenever a count could: the model code, this file, torch or thop."""
    import thop

    import nets

    digest = hashlib.sha256(f"{torch.__version__} thop {getattr(thop, '__version__', '?')}".encode())
    for path in sorted(Path(nets.__file__).parent.rglob("*.py")) + [Path(__file__)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("fingerprint") == _fingerprint() else {}


def _write_cache(path: Path, key: str, value: list[int]) -> None:
    from bench.atomic import write_text

    data = _read_cache(path) or {"fingerprint": _fingerprint(), "counts": {}}
    data.setdefault("counts", {})[key] = value
    with contextlib.suppress(OSError):  # a read-only home only costs speed
        write_text(path, json.dumps(data))


class ModelCounts(NamedTuple):
    """What `model_counts` counted for one image: every parameter, thop's MACs and the torch counter's FLOPs."""

    params: int
    macs: int | None  # thop; None when thop cannot count the net (its FLOPs still stand)
    flops: int


def model_counts(name: str, input_shape: tuple[int, int, int], num_classes: int = 10, in_chans: int | None = None,
                 **kwargs) -> ModelCounts:
    """Params, thop MACs and FLOPs of registered model `name`, built on `counting_device`: fast and cached on disk.

    The same MACs `profile_model` reports (thop needs shapes only, so it counts a meta-device net
    exactly as a real one), from one build of the net, so a zoo listing can show thop's MACs
    beside the FLOPs. `in_chans` defaults to input_shape[0]. Registry errors (unknown name, bad
    setting) propagate. Answers are kept on disk (`bench.cache.cache_root()`; RBENCH_NO_CACHE=1
    turns it off), under a fingerprint of the model code and the torch and thop versions, so a
    second `rbench list` counts nothing.
    """
    import nets

    shape = _check_shape(input_shape)
    nets.model_entry(name)  # an unknown name fails here, before the cache is consulted
    cache = _cache_file()
    try:
        key = json.dumps([name, list(shape), num_classes, in_chans, sorted(kwargs.items())])
    except TypeError:  # settings that are not JSON (a layer factory, ...) are counted every time
        cache = None
    if cache is not None:
        hit = _read_cache(cache).get("counts", {}).get(key)
        if isinstance(hit, list) and len(hit) == len(ModelCounts._fields):
            return ModelCounts(*(None if v is None else int(v) for v in hit))
    with _one_thread(), torch.device(counting_device(shape)):
        model = nets.create_model(name, num_classes=num_classes, in_chans=in_chans or shape[0], **kwargs)
    flops = count_flops(model, shape)
    try:
        with _one_thread():
            # The net is built for counting only: thop may count it in place, without the copy profile_model makes.
            macs: int | None = _thop_profile(model.eval(), torch.zeros((1, *shape), device=_device_of(model)), False)[0]
    except Exception:  # noqa: BLE001 - a thop rule that breaks must not lose the params and FLOPs
        macs = None
    counts = ModelCounts(count_params(model), macs, flops)
    if cache is not None:
        _write_cache(cache, key, list(counts))
    return counts


@functools.lru_cache(maxsize=512)
def model_flops(name: str, input_shape: tuple[int, int, int], num_classes: int = 10, in_chans: int | None = None,
                **kwargs) -> tuple[int, int]:
    """(params, FLOPs) of registered model `name`: `model_counts` without the MACs, also kept in memory."""
    counts = model_counts(name, input_shape, num_classes=num_classes, in_chans=in_chans, **kwargs)
    return counts.params, counts.flops


def _count_dynamic_conv(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """thop rule for nets.layers.DynamicConv2d, whose conv and kernel aggregation are functional (thop
    cannot see them): one convolution per sample with its own kernel, plus aggregating that kernel
    (and bias) from the K kernels. Its attention branch is nn.Linear children that thop counts itself."""
    batch = inputs[0].shape[0]
    kernel = module.in_channels * module.kernel_size * module.kernel_size
    conv = batch * module.out_channels * output.shape[-2] * output.shape[-1] * kernel
    aggregate = batch * module.kernels * module.out_channels * (kernel + (1 if module.bias is not None else 0))
    module.total_ops += int(conv + aggregate)


def _thop_profile(model: nn.Module, x: torch.Tensor, detail: bool) -> tuple[int, dict[str, int]]:
    """thop's MACs of `model` on `x` (and per module with `detail`); thop hooks `model` itself."""
    import thop

    from nets.layers import DynamicConv2d

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            result = thop.profile(model, inputs=(x,), verbose=False, ret_layer_info=detail,
                                  custom_ops={DynamicConv2d: _count_dynamic_conv})
    by_module: dict[str, int] = {}
    if detail and len(result) == 3:

        def walk(tree: dict, prefix: str) -> None:
            for name, (ops, _params, children) in tree.items():
                path = f"{prefix}{name}"
                by_module[path] = int(ops)
                walk(children, path + ".")

        walk(result[2], "")
    return int(result[0]), by_module


def _thop_macs(model: nn.Module, x: torch.Tensor, detail: bool) -> tuple[int, dict[str, int]]:
    # thop attaches hooks and counters to every module; a copy keeps the caller's model clean
    # whatever the thop release leaves behind.
    return _thop_profile(copy.deepcopy(model).eval(), x, detail)


def _flops_by_module(counter: FlopCounterMode) -> dict[str, int]:
    out = {}
    for name, ops in counter.get_flop_counts().items():
        if name == "Global":
            continue
        # The counter names modules "ClassName.path.to.module"; drop the root's class name.
        path = name.split(".", 1)[1] if "." in name else ""
        out[path] = int(sum(ops.values()))
    return out


def counters_warning(macs: int, flops: int) -> str | None:
    """Why thop's MACs and the flop counter's FLOPs disagree (None when within AGREEMENT_TOLERANCE).

    The two causes pull in opposite directions, so the sign of the gap names the cause: thop
    above FLOPs / 2 has counted norms and pools the flop counter ignores; thop below it has
    missed functional ops the flop counter sees.
    """
    if not (flops or macs):
        return None
    gap = abs(flops - 2 * macs) / max(flops, 2 * macs)
    if gap <= AGREEMENT_TOLERANCE:
        return None
    half = flops / 2
    if macs > half:
        above = f"{(macs - half) / half:.0%} above" if flops else "above"
        return (f"thop's MACs ({macs:,}) are {above} FLOPs / 2 ({flops // 2:,}): thop also counts normalization "
                "(4 ops per element of an affine BatchNorm), average pools and softmax, which the flop counter "
                "ignores, so FLOPs count the conv and matmul work alone; that gap is not missed work")
    return (f"thop's MACs ({macs:,}) are {(half - macs) / half:.0%} below FLOPs / 2 ({flops // 2:,}): thop missed "
            "functional ops in a forward (F.conv2d, a matmul: dynamic conv, attention) that the flop counter sees; "
            "trust the FLOPs")


def profile_model(model: nn.Module, input_shape: tuple[int, int, int], batch: int = 1,
                  detail: bool = False, name: str | None = None) -> FlopsReport:
    """Params, thop MACs and torch-counted FLOPs of `model` for a `batch` x `input_shape` input.

    With `detail`, also per-module FLOPs and thop MACs (every module by its dotted path, each
    the total of its subtree; "" in flops_by_module is the whole net). The model is not modified (thop runs on a deep copy).
    A forward that fails on the input (or calls sys.exit) is a one-line DataProblem naming `name`
    (default: the model's class).
    """
    from bench.engines.base import user_code

    shape = _check_shape(input_shape)
    if batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    x = _example(model, shape, batch)
    was_training = model.training
    model.eval()
    # Counted first, as the user's code runs it: a forward that fails here is the model's failure, named;
    # one that fails only under thop's hooks afterwards is thop's, and costs only the MACs.
    try:
        with user_code(name or type(model).__name__, f"a forward pass on a {'x'.join(map(str, (batch, *shape)))} input",
                       hint="does the model take these channels and this size (--in-chans, --input-size)?"):
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x)
    finally:
        model.train(was_training)
    thop_error = None
    try:
        macs, macs_by_module = _thop_macs(model, x, detail)
    except Exception as exc:  # noqa: BLE001 - a counting rule that breaks must not lose the FLOPs
        macs, macs_by_module, thop_error = 0, {}, f"thop failed ({type(exc).__name__}: {exc}); trust the FLOPs"
    flops = int(counter.get_total_flops())
    agrees, warning = thop_error is None, thop_error
    if thop_error is None:
        warning = counters_warning(macs, flops)
        agrees = warning is None
    return FlopsReport(params=count_params(model), macs=macs, flops=flops, input_shape=shape, batch=batch,
                       agrees=agrees, warning=warning,
                       flops_by_module=_flops_by_module(counter) if detail else {},
                       macs_by_module=macs_by_module)
