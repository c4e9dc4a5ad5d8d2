"""Result records: one JSON object per line in results/, each carrying the machine it ran on.

A record is a flat dict (its kinds and fields in `bench.records.schema`, checked by `validate_record`): the metric names
carry their units (`latency_ms_p50`, `throughput_img_s`). Measurement code builds records with
the one builder per kind in `bench.records.builders`; only the CLI layer writes them, with `append_record`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import __version__
from bench.atomic import append_line

# The schema's names are read from here too (bench.validate_record, the records' face since before the schema module).
from bench.records.schema import KINDS, NUMERIC_METRIC, REQUIRED_FIELDS, SCHEMA, validate_record  # noqa: F401

DEFAULT_RESULTS_DIR = Path("results")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu() -> dict[str, Any] | None:
    """GPU name, compute capability, driver and CUDA version, or None without a usable GPU."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return None
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    driver = None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"--id={index}"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        driver = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "driver": driver,
        "cuda": torch.version.cuda,
        "count": torch.cuda.device_count(),
    }


#: Environment variables that change how fast the same code runs (memory allocator, thread pools); the machine
#: description carries the ones set, so two runs that differ only there are not read as a code change.
TUNING_ENV_PREFIXES = ("MALLOC_", "LD_PRELOAD", "OMP_", "MKL_", "KMP_", "ONEDNN_", "DNNL_")


def tuning_env() -> dict[str, str]:
    """The set environment variables that tune allocation or threading (TUNING_ENV_PREFIXES), by name."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(TUNING_ENV_PREFIXES)}


@functools.lru_cache(maxsize=1)
def describe_machine() -> dict[str, Any]:
    """What the numbers ran on: CPU, cores, memory, GPU, OS and the versions that matter."""
    return {
        "cpu": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gpu": _gpu(),
        "tuning_env": tuning_env(),
        "versions": {
            "rbench": __version__,
            "torch": _version("torch"),
            "torchvision": _version("torchvision"),
            "onnx": _version("onnx"),
            "onnxscript": _version("onnxscript"),
            "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
            "tensorrt": _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt-cu13"),
            "thop": _version("ultralytics-thop"),
            "numpy": _version("numpy"),
        },
    }


def machine_slug(machine: dict[str, Any] | None = None) -> str:
    """A short file-name-safe name for the machine: the GPU if any, else the CPU."""
    machine = machine or describe_machine()
    name = machine["gpu"]["name"] if machine.get("gpu") else f"{machine['cpu']}-{machine['cores_usable']}c"
    keep = "".join(c if c.isalnum() else "-" for c in name.lower())
    while "--" in keep:
        keep = keep.replace("--", "-")
    return keep.strip("-")[:60]


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the rbench checkout, with `+dirty` when it has local changes; None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


#: Set by `bench.cli.main(argv)` when the CLI runs in-process (tests, studies), where
#: sys.argv holds the host program's command line rather than rbench's.
COMMAND_OVERRIDE: str | None = None


def current_command() -> str:
    """The command line that is running, as a user would retype it."""
    if COMMAND_OVERRIDE:
        return COMMAND_OVERRIDE
    argv = list(sys.argv)
    if argv and argv[0].endswith(("rbench", "cli.py", "__main__.py")):
        argv[0] = "rbench"
    return shlex.join(argv)


def make_record(kind: str, **fields: Any) -> dict[str, Any]:
    """A result record of `kind` with the standard header (schema, time, machine, commit, command)."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {sorted(KINDS)}")
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": kind,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "rbench_version": __version__,
        "git_commit": git_commit(),
        "command": fields.pop("command", None) or current_command(),
        "machine": describe_machine(),
    }
    record.update(fields)
    validate_record(record)
    return record


def to_json(record: dict[str, Any]) -> str:
    """One line of JSON for a record."""
    return json.dumps(record, sort_keys=False, allow_nan=False, default=str)


def append_record(record: dict[str, Any], results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR,
                  filename: str | None = None) -> Path:
    """Append `record` atomically to `results_dir/<kind>.jsonl` (or `filename`) and return the path."""
    validate_record(record)
    path = Path(results_dir) / (filename or f"{record['kind']}.jsonl")
    try:
        append_line(path, to_json(record))
    except OSError as exc:
        from bench.errors import EnvironmentProblem

        raise EnvironmentProblem(f"cannot write results to {path}: {exc.strerror or exc}") from exc
    return path


class UnfinishedLineWarning(RuntimeWarning):
    """A records file ends in a line without its newline (a write cut short, or one still going on): skipped."""


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file; an empty list when the file is missing or empty (callers decide
    what "no records" means). See `iter_records` for what is skipped and what is refused."""
    return [record for _, record in iter_records(path)]


def iter_records(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`file:line`, record) for every record of a JSON-lines file, in file order; nothing for a missing file.

    The newline is the commit mark (see `bench.atomic.append_line`): an unterminated last line is a
    write that was cut short (a full disk, a kill) or is still going on, so it is skipped with an
    `UnfinishedLineWarning`, not read as a record nor treated as corruption; the next append moves
    it to a `.partial-*` sidecar. Any whole line that is not a JSON object (bad UTF-8, bad JSON, the
    non-JSON constants NaN and Infinity, which rbench never writes) is corruption: `DataProblem`
    naming `file:line`, never a traceback. The whole file is checked before the first record is
    yielded, so a caller never acts on half a corrupt file.
    """
    import warnings

    from bench.errors import DataProblem

    path = Path(path)
    if not path.exists():
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataProblem(f"cannot read records file {path}: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    partial = lines.pop()  # b"" when the file ends in a newline
    if partial.strip():
        warnings.warn(f"{path}:{len(lines) + 1} is an unfinished last line (no newline: an interrupted or "
                      "ongoing write); skipped it", UnfinishedLineWarning, stacklevel=3)
    records = [(f"{path}:{number}", _parse_record_line(raw, f"{path}:{number}"))
               for number, raw in enumerate(lines, 1) if raw.strip()]
    yield from records


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_record_line(raw: bytes, where: str) -> dict[str, Any]:
    """One JSON-lines record, or a one-line `DataProblem` naming `where` (file:line) and what to do about it."""
    from bench.errors import DataProblem

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataProblem(f"{where} is not UTF-8 text, so not a JSON record; repair or remove that line") from None
    try:
        record = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        hint = f" ({exc})" if "is not JSON" in str(exc) else ""
        raise DataProblem(f"{where} is not a JSON record{hint}; repair or remove that line") from None
    if not isinstance(record, dict):
        raise DataProblem(f"{where} is JSON but not a record (an object); repair or remove that line")
    return record
