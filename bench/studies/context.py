"""A study run's inputs, checked: its data set, device, engines and preset (`RunContext`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.errors import EnvironmentProblem, UsageProblem
from bench.studies.base import Preset

DATASET_AUTO = "auto"


def resolve_dataset(name: str, root: str | None = None) -> tuple[str, str]:
    """The data set `auto` means here, and why: Fashion-MNIST when its files are found, else digits."""
    from bench import data

    if name != DATASET_AUTO:
        known = [d for d in data.DATASETS if not d.endswith(":PATH")]
        if name not in known and not name.startswith("imagefolder:"):
            raise UsageProblem(f"unknown dataset {name!r}; choose auto or one of {', '.join(data.DATASETS)}")
        return name, f"{name} (asked for)"
    folder = data.find_fashion_mnist(root)
    if folder is not None:
        return "fashion-mnist", f"fashion-mnist (found in {folder})"
    return "digits", "digits (scikit-learn's bundled 8x8 digits; Fashion-MNIST is not installed here)"


def check_device(device: str) -> None:
    """Refuse, before anything is written, a device this machine cannot train and measure on."""
    if device == "cpu":
        return
    if device != "cuda":
        raise UsageProblem(f"unknown device {device!r}; choose cpu, cuda or auto")
    from bench.engines import engine_availability

    row = next(r for r in engine_availability() if r["engine"] == "torch" and r["device"] == "cuda")
    if not row["available"]:
        raise EnvironmentProblem(f"--device cuda needs a CUDA GPU that torch can use: {row['reason'] or 'none found'}; "
                                 "use --device cpu (or auto)")


def _why_not(name: str, device: str, rows: list[dict[str, Any]]) -> str:
    """Why engine `name` does not work on `device` here: its own reason, or the devices it runs on."""
    mine = [r for r in rows if r["engine"] == name]
    here = [r["reason"] for r in mine if r["device"] == device and r["reason"]]
    if here:
        return here[0]
    devices = sorted({r["device"] for r in mine})
    if not devices:
        return "it is not available on this machine"
    why = f"{name} runs only on {' or '.join(devices)} (--device {devices[0]})"
    usable = [r for r in mine if r["available"]]
    if not usable and mine[0]["reason"]:
        why += f", and not on this machine either: {mine[0]['reason']}"
    return why


def available_engines(requested: Sequence[str] | None, device: str) -> tuple[str, ...]:
    """The engines to measure: those asked for, or every engine that works on `device` here."""
    from bench.engines import ENGINES, engine_availability

    rows = engine_availability()
    works = {r["engine"] for r in rows if r["available"] and r["device"] == device}
    if requested:
        for name in requested:
            if name not in ENGINES:
                raise UsageProblem(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
            if name not in works:
                raise UsageProblem(f"engine {name!r} does not work on {device} here: {_why_not(name, device, rows)}")
        return tuple(requested)
    found = tuple(e for e in ("torch", "ort", "trt") if e in works)
    if not found:
        raise EnvironmentProblem(f"no engine works on {device} here; see `rbench engines`")
    return found


@dataclass
class RunContext:
    """Everything a unit needs besides its spec: data, preset, engines, device."""

    dataset: str
    preset: Preset
    engines: tuple[str, ...]
    device: str = "cpu"
    data_root: str | None = None
    seed: int = 0
    command: str | None = None
    shard: str | None = None  # 'I/N' when this run is one shard of a suite (bench.studies.shard)
    _bundles: dict[tuple, Any] = field(default_factory=dict, repr=False)
    #: unit id -> its training, done before by every process of a distributed run (`bench.studies.data_parallel`)
    trained: dict[str, Any] = field(default_factory=dict, repr=False)

    def bundle(self, channels: str | None = None, channel_mode: str = "select"):
        """The data set at this preset (cached): native channels, or a channel subset."""
        from bench.data import load_dataset

        key = (channels, channel_mode)
        if key not in self._bundles:
            self._bundles[key] = load_dataset(
                self.dataset, root=self.data_root, subset=self.preset.train_size, seed=self.seed,
                input_size=self.preset.input_size, channels=channels, channel_mode=channel_mode)
        return self._bundles[key]

    def test_split(self, bundle, size: int | None = None):
        """The first `size` (default `preset.test_size`) test images (the subset is already stratified and seeded)."""
        size = size or self.preset.test_size
        if size is None or size >= len(bundle.test):
            return bundle.test
        return bundle.test.take(range(size))

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a previous run's units to be reused."""
        from bench.studies.registry import preset_settings

        fingerprint = {"dataset": self.dataset, "preset": preset_settings(self.preset), "device": self.device,
                       "engines": list(self.engines), "seed": self.seed}
        if self.shard:  # only then: run folders written before sharding existed still resume
            fingerprint["shard"] = self.shard
        return fingerprint


