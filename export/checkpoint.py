"""Checkpoints for export: load weights-only, find the state dict, say briefly how it mismatches.

Accepted shapes: a plain state dict; a dict with "state_dict" or "model" holding one (the rbench
trainer writes `{"state_dict", "config", "normalization", ...}`). Prefixes that wrappers add
(`module.` from DataParallel, `_orig_mod.` from torch.compile) are removed.

A plain state dict whose keys are those of a torchvision classification model (`TORCHVISION_ARCHITECTURES`,
the zoo nets that load torchvision's weights strictly) is recognised as that architecture: its config
names it, with the class count read from the classifier, and when its sha256 begins with the hash in the
file name of one of torchvision's published weights (`resnet50-11ad3fa6.pth`, torch.hub's convention)
it is recognised as those weights, with their evaluation transform and published accuracy
(`published_weights`, read from torchvision's own weight metadata).
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.errors import DataProblem, UsageProblem

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class Checkpoint:
    """A checkpoint file as read for export, as plain data: its weights, the model config it carries (if any),
    its file hash. No model is built here; `apply_checkpoint` loads the weights into one."""

    path: str
    sha256: str
    state_dict: dict[str, Any]
    config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # normalization, dataset, epoch, ... (plain data)


def _strip_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_BLOCKED = re.compile(r"whose module (\S+?) is blocked")
#: Paragraphs of torch's weights-only error that are advice, not the cause.
_BOILERPLATE = ("Weights only load failed", "Check the documentation", "Please file an issue", "(1) ", "(2) ",
                "This file can still be loaded")


def _load_reason(exc: BaseException) -> str:
    """The useful part of a torch.load failure, which torch's weights-only error buries among advice.

    torch 2.6+ says e.g. "Weights only load failed. In PyTorch 2.6, ... \n\n\nTrying to load unsupported
    GLOBAL posix.system whose module posix is blocked.\n\nCheck the documentation ...", or puts the cause
    after "WeightsUnpickler error:". The global a file tried to import is what the user must see.
    """
    raw = _ANSI.sub("", str(exc))
    match = _GLOBAL.search(raw)
    if match:
        blocked = _BLOCKED.search(raw)
        why = f"its module {blocked.group(1)} is blocked" if blocked else "not an allowed global"
        return f"unsupported GLOBAL {match.group(1)}: {why}"
    if "WeightsUnpickler error:" in raw:
        raw = raw.split("WeightsUnpickler error:", 1)[1]
    parts = [" ".join(p.split()) for p in re.split(r"\n\s*\n|\n\t", raw)]
    parts = [p for p in parts if p and not p.startswith(_BOILERPLATE)]
    text = parts[0] if parts else ""
    if not text or text.isdigit():  # e.g. a KeyError of a bare number from a junk file
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:160]


def _pickle_globals(path: Path, limit: int = 16 << 20) -> list[str]:
    """The module.name of each global a plain pickle file imports (GLOBAL / STACK_GLOBAL), without running it.

    For a pickle torch refuses before it reaches the import (a protocol its unpickler lacks), so that the
    one line can still say what the file would have run. [] for a zip checkpoint or anything unreadable."""
    import io
    import pickletools

    strings: list[str] = []
    found: list[str] = []
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - not a plain pickle, or cut short: what was found so far
        pass
    return found


def _quiet_load(path: Path):
    """torch.load(weights_only=True) on the CPU with torch's own warnings (pickle protocol, ...) kept off stderr:
    the caller's one line is all the user sees."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def read_weights(path: str | os.PathLike) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; a missing, unreadable or corrupt file raises DataProblem.

    torch's warnings are not shown, and a refused file is named with the global it tried to load."""
    path = Path(path)
    if not path.is_file():
        raise DataProblem(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise DataProblem(f"checkpoint {path} is empty (0 bytes); save it again")
    try:
        return _quiet_load(path)
    except OSError as exc:
        raise DataProblem(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors, or a non-weights object
        reason = _load_reason(exc)
        if "GLOBAL" not in reason:
            foreign = [g for g in _pickle_globals(path) if not g.startswith(("torch.", "collections.OrderedDict"))]
            if foreign:
                reason = f"unsupported GLOBAL {foreign[0]}; torch says: {reason}"
        raise DataProblem(f"{path} is not a readable PyTorch checkpoint ({reason}); rbench loads "
                          "weights only: pass a file saved with torch.save(model.state_dict(), path) "
                          "or by `rbench train`") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load `path` with torch.load(weights_only=True); a missing, unreadable or foreign file raises DataProblem."""
    import torch

    from export.onnx import sha256_files

    path = Path(path)
    payload = read_weights(path)
    sha = sha256_files(path)
    config = None
    extra: dict[str, Any] = {}
    state = payload
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                state = payload[key]
                config = payload.get("config") if isinstance(payload.get("config"), dict) else None
                extra = {k: v for k, v in payload.items()
                         if k not in (key, "config", "optimizer", "scheduler", "scaler") and not isinstance(v, torch.Tensor)}
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataProblem(f"{path} holds no state dict (expected tensors by name, or a dict with 'state_dict' or 'model')")
    state = _strip_prefixes(dict(state))
    if config is None:
        architecture = torchvision_architecture(state)
        if architecture is not None:
            config, extra = _torchvision_facts(architecture, state, sha, extra)
    return Checkpoint(path=str(path), sha256=sha, state_dict=state, config=config, extra=extra)


# --------------------------------------------------------------------------- torchvision's checkpoints

#: torchvision classification models whose zoo namesakes load torchvision's state dicts strictly.
TORCHVISION_ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg11", "vgg11_bn",
                             "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")
#: The ImageNet statistics torchvision's weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.cache
def _torchvision_keys(name: str) -> frozenset[str]:
    """The state-dict keys of torchvision's `name`, built on the meta device (no memory, no weights)."""
    import torch
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None)
    return frozenset(model.state_dict())


def _classifier_key(name: str) -> str:
    return "fc.weight" if name.startswith("resnet") else "classifier.6.weight"


def torchvision_architecture(state_dict: dict[str, Any]) -> str | None:
    """The torchvision architecture whose state-dict keys `state_dict` has exactly, or None."""
    keys = frozenset(state_dict)
    family = "resnet" if "layer1.0.conv1.weight" in keys and "fc.weight" in keys else \
        "vgg" if "features.0.weight" in keys and "classifier.6.weight" in keys else None
    if family is None:  # neither family's landmarks: no model is built to compare
        return None
    for name in TORCHVISION_ARCHITECTURES:
        if name.startswith(family) and _torchvision_keys(name) == keys:
            return name
    return None


@functools.cache
def _published_table() -> tuple[dict[str, Any], ...]:
    import torchvision

    table = []
    for name in TORCHVISION_ARCHITECTURES:
        for weights in torchvision.models.get_model_weights(name):
            if not weights.meta.get("categories"):  # a feature extractor (vgg16 IMAGENET1K_FEATURES), no classifier
                continue
            file = weights.url.rsplit("/", 1)[-1]
            match = re.search(r"-([a-f0-9]+)\.", file)
            preset = weights.transforms()
            metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
            table.append({
                "architecture": name, "weights": f"{type(weights).__name__}.{weights.name}", "file": file,
                "url": weights.url, "hash_prefix": match.group(1) if match else None,
                "num_classes": len(weights.meta.get("categories") or ()), "published_top1": metrics.get("acc@1"),
                "published_top5": metrics.get("acc@5"),
                "eval_transform": {"name": "imagenet", "resize_size": int(preset.resize_size[0]),
                                   "crop_size": int(preset.crop_size[0]), "interpolation": "bilinear",
                                   "antialias": True, "mean": list(preset.mean), "std": list(preset.std),
                                   "convert": "RGB"},
            })
    return tuple(table)


def published_weights(sha256: str, architecture: str | None = None) -> dict[str, Any] | None:
    """torchvision's published weights whose file-name hash `sha256` begins with (and of `architecture`,
    when given): name, file, url, published top-1/top-5 (percent), eval transform. None when none is."""
    for entry in _published_table():
        if entry["hash_prefix"] and sha256.startswith(entry["hash_prefix"]) and \
                architecture in (None, entry["architecture"]):
            return dict(entry)
    return None


def _torchvision_facts(architecture: str, state: dict[str, Any], sha: str,
                       extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, extra) of a recognised torchvision state dict: architecture, classes, normalization, transform."""
    num_classes = int(state[_classifier_key(architecture)].shape[0])
    published = published_weights(sha, architecture)
    transform = published["eval_transform"] if published else {
        "name": "imagenet", "resize_size": 256, "crop_size": 224, "interpolation": "bilinear", "antialias": True,
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "convert": "RGB"}
    facts = {"architecture": architecture, "num_classes": num_classes,
             "published": {k: v for k, v in published.items() if k != "eval_transform"} if published else None}
    config = {"name": architecture, "num_classes": num_classes, "in_chans": 3}
    extra = {**extra, "torchvision": facts, "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
             "eval_transform": transform}
    return config, extra


def _names(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")


def state_dict_mismatch(model, state_dict: dict[str, Any]) -> str | None:
    """None when `state_dict` fits `model` exactly, else a short description of what differs."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k} {list(state_dict[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
              if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shape(s) differ (checkpoint vs model): {_names(shapes, 2)}")
    if missing:
        parts.append(f"{len(missing)} key(s) missing: {_names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
    return "; ".join(parts) or None


def apply_checkpoint(model, checkpoint: Checkpoint, model_name: str) -> None:
    """Load the weights into `model`, or raise UsageProblem saying which keys or shapes differ."""
    problem = state_dict_mismatch(model, checkpoint.state_dict)
    if problem:
        raise UsageProblem(f"checkpoint {Path(checkpoint.path).name} does not fit {model_name}: {problem} "
                           "(set --num-classes / --in-chans / --act as in training)")
    model.load_state_dict(checkpoint.state_dict, strict=True)
