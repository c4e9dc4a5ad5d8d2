"""The run folder: where a study run keeps its units' records, timings and artifacts, resumably.

It holds what rbench writes and nothing rbench deletes unless it can prove it wrote it. `check_run_folder`
refuses a folder holding files rbench did not write, or a subfolder that is a link, and deletes only rbench's
own files when a run starts afresh.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageProblem
from bench.studies.base import StudyPlan, UnitSpec
from bench.studies.context import RunContext
from bench.studies.measure import CHECKPOINT, ONNX, WEIGHTS, artifact_path  # noqa: F401 (the run folder's face)
from bench.studies.plans import timed_units

#
# A run folder holds what rbench writes and nothing rbench deletes unless it can prove it wrote it:
#   settings.json            the run's settings, with "tool": "rbench" (what makes a folder a run folder)
#   units/<unit>.jsonl       a prepared unit's records           timing/<study>.jsonl  a study's timings
#   artifacts/<unit>/        weights.pt, model.onnx(.data), checkpoint.pt (a ladder's net)
#                            run.json, records.jsonl, report.md, figures/
#   .<name>.XXXX/            hidden work folders (bench.atomic.work_dir), locked while their process lives

TOOL = "rbench"
SETTINGS = "settings.json"
RUN_JSON = "run.json"
SUBFOLDERS = ("units", "timing", "artifacts")
#: The report's plots (`bench.report.plots`), written when the run is reported.
FIGURES = "figures"
#: Every folder a run writes into: each must be a real folder inside the run folder, never a link out of it.
WRITTEN_SUBFOLDERS = (*SUBFOLDERS, FIGURES)
ARTIFACT_FILES = (WEIGHTS, ONNX, f"{ONNX}.data", CHECKPOINT)
#: The keys of settings.json before it carried "tool" (still recognised as rbench's).
_FINGERPRINT_KEYS = ("dataset", "preset", "device", "engines", "seed")
#: Keys every run.json rbench has written carries.
_RUN_KEYS = ("title", "preset", "dataset", "engines", "device", "unit_seconds")
_TIMING_KINDS = ("latency", "throughput")


def check_subfolders(out_dir: Path) -> None:
    """Refuse a run folder whose units/, timing/, artifacts/ or figures/ is a link or not a folder: a write
    through it would land outside the run folder (a rerun would overwrite files there).

    Raises:
        UsageProblem: one line naming the subfolder.
    """
    for sub in WRITTEN_SUBFOLDERS:
        folder = Path(out_dir) / sub
        if folder.is_symlink():
            raise UsageProblem(f"{folder} is a symbolic link: rbench writes only inside the run folder; replace it "
                               "with a folder or choose another --out")
        if folder.exists() and not folder.is_dir():
            raise UsageProblem(f"{folder} is not a folder; move it out of the run folder or choose another --out")


def check_writable(out_dir: Path) -> None:
    """Refuse, before any work, an --out that cannot be written: the folder, or the nearest existing folder above
    it, must take a new file.

    Raises:
        UsageProblem: one line naming the folder and why.
    """
    import os
    import tempfile

    folder = Path(out_dir).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageProblem(f"--out {out_dir}: {folder} is not a folder")
    why = None if os.access(folder, os.W_OK | os.X_OK) else "permission denied"
    if why is None:
        try:
            handle, probe = tempfile.mkstemp(prefix=".rbench-write-check.", dir=folder)
        except OSError as exc:
            why = exc.strerror or exc.__class__.__name__
        else:
            os.close(handle)
            os.unlink(probe)
    if why:
        raise UsageProblem(f"--out {out_dir} cannot be written ({folder}: {why}); choose a writable folder")


def unit_path(out_dir: Path, spec: UnitSpec) -> Path:
    return Path(out_dir) / "units" / f"{spec.unit_id}.jsonl"


def timing_path(out_dir: Path, plan: StudyPlan) -> Path:
    return Path(out_dir) / "timing" / f"{plan.name}.jsonl"


def _read_records_file(path: Path, units: Sequence[str], every_unit: bool = False,
                       ) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(records, None) for a sound file; (None, why) for a bad one; (None, None) when there is none.

    Sound: not empty, every line a record that validates, every record's unit one of `units` (and,
    with `every_unit`, every one of `units` present), the last line complete.
    """
    from bench.records.io import validate_record

    if not path.is_file():
        return None, (f"{path.name} is not a file" if path.exists() or path.is_symlink() else None)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name} cannot be read ({exc.__class__.__name__})"
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            return None, f"{path.name} line {number} is not JSON (cut short?)"
        if not isinstance(record, dict):
            return None, f"{path.name} line {number} is not a record"
        try:
            validate_record(record)
        except (ValueError, TypeError, KeyError) as exc:
            return None, f"{path.name} line {number}: {exc}"
        if record.get("unit") not in units:
            return None, f"{path.name} line {number} is a record of unit {record.get('unit')!r}"
        records.append(record)
    if not records:
        return None, f"{path.name} is empty"
    if not text.endswith("\n"):
        return None, f"{path.name} ends in a cut-short line"
    if every_unit:
        missing = sorted(set(units) - {r["unit"] for r in records})
        if missing:
            return None, f"{path.name} lacks unit(s) {', '.join(missing)}"
    return records, None


def unit_state(out_dir: Path, spec: UnitSpec) -> tuple[list[dict[str, Any]] | None, str | None]:
    """A unit's records and None when its file is sound; None and why it is not; (None, None) when absent."""
    return _read_records_file(unit_path(out_dir, spec), [spec.unit_id])


def timing_state(out_dir: Path, plan: StudyPlan) -> tuple[list[dict[str, Any]] | None, str | None]:
    """A study's timing records and None when its file is sound (every unit of the study timed); else as `unit_state`."""
    if not plan.timed:
        return [], None  # an accuracy study times nothing: never missing
    ids = list(dict.fromkeys(unit.spec.unit_id for unit in timed_units(plan)))
    return _read_records_file(timing_path(out_dir, plan), ids, every_unit=True)


def load_unit(out_dir: Path, spec: UnitSpec) -> list[dict[str, Any]] | None:
    """A finished unit's records, or None when it has not finished (no file, or a bad one)."""
    return unit_state(out_dir, spec)[0]


def _is_rbench_settings(path: Path) -> tuple[dict[str, Any] | None, bool]:
    """(settings, True) when `path` is a settings.json rbench wrote; (None, False) otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, False
    if isinstance(data, dict) and (data.get("tool") == TOOL or all(k in data for k in _FINGERPRINT_KEYS)):
        return {k: v for k, v in data.items() if k != "tool"}, True
    return None, False


def _is_rbench_run(path: Path) -> bool:
    """Whether `path` is a run.json rbench wrote (valid JSON carrying rbench's marker or keys)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and (data.get("tool") == TOOL or all(k in data for k in _RUN_KEYS))


def known_unit_ids(plans: Sequence[StudyPlan] = ()) -> set[str]:
    """Every unit id some study of some preset makes, and those of `plans`: the unit files rbench names."""
    from bench.studies.presets import PRESETS
    from bench.studies.registry import study_names, study_plan

    ids = {spec.unit_id for spec in unique_units(plans)}
    for preset in PRESETS.values():
        for name in study_names():
            try:
                ids |= {unit.spec.unit_id for unit in study_plan(name, preset).units}
            except UsageProblem:  # a preset whose roles name no model here: its units are no names of ours
                continue
    return ids


def _is_our_artifact_dir(entry: Path, ids: set[str]) -> bool:
    return (entry.name in ids and entry.is_dir() and not entry.is_symlink()
            and all(f.name in ARTIFACT_FILES and f.is_file() and not f.is_symlink() for f in entry.iterdir()))


def _is_our_hidden(entry: Path, names: set[str]) -> bool:
    """A hidden entry rbench leaves: a work folder with its lock file, or a temporary `.NAME.XXXX[.tmp]`
    of one of `names` (an interrupted atomic write, an older rbench's scratch folder)."""
    from bench.atomic import LOCK_NAME

    if not entry.name.startswith(".") or entry.is_symlink():
        return False
    if entry.is_dir() and (entry / LOCK_NAME).is_file():
        return True
    return any(entry.name.startswith(f".{name}.") for name in names)


def _written_by_rbench(path: Path) -> bool:
    """Whether every line of `path` is an rbench record (its schema name) of the unit the file is named for: what
    rbench writes to units/, in this version's fields or an older one's."""
    from bench.records.schema import SCHEMA

    if not path.is_file() or path.is_symlink():
        return False
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return bool(records) and all(isinstance(r, dict) and r.get("schema") == SCHEMA and r.get("unit") == path.stem
                                 for r in records)


@dataclass
class _Inventory:
    """What a run folder's units/, timing/ and artifacts/ hold."""

    ours: list[Path] = field(default_factory=list)  # files and artifact folders rbench wrote
    foreign: list[Path] = field(default_factory=list)  # anything rbench cannot prove it wrote
    measured: int = 0  # unit and timing files (what a fresh start would lose)


def _inventory(out_dir: Path, plans: Sequence[StudyPlan]) -> _Inventory:
    from bench.studies.registry import study_names

    inv = _Inventory()
    ids = known_unit_ids(plans)
    units = out_dir / "units"
    if units.is_dir() and not units.is_symlink():
        # A unit file of a unit no preset makes today is still ours when its records say so, even when an older
        # rbench wrote them (a field added since does not make them someone else's).
        for entry in units.glob("*.jsonl"):
            if entry.stem not in ids and _written_by_rbench(entry):
                ids.add(entry.stem)
    names = {"units": ids | {f"{i}.jsonl" for i in ids}, "timing": {f"{s}.jsonl" for s in study_names()},
             "artifacts": ids}
    for sub in SUBFOLDERS:
        folder = out_dir / sub
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            inv.foreign.append(folder)
            continue
        if not folder.exists():
            continue
        for entry in sorted(folder.iterdir()):
            if _is_our_hidden(entry, names[sub]):
                continue  # work folders are swept by remove_stale_work_dirs; temporaries are harmless
            if sub == "artifacts":
                ours = _is_our_artifact_dir(entry, ids)
            else:
                ours = entry.name in names[sub] and entry.suffix == ".jsonl" and entry.is_file() and not entry.is_symlink()
                inv.measured += ours
            (inv.ours if ours else inv.foreign).append(entry)
    run = out_dir / RUN_JSON
    if run.exists() or run.is_symlink():
        if run.is_file() and not run.is_symlink() and _is_rbench_run(run):
            inv.ours.append(run)
        else:
            inv.foreign.append(run)
    return inv


def _listing(paths: Sequence[Path], root: Path, most: int = 3) -> str:
    shown = [str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in paths[:most]]
    more = f" and {len(paths) - most} more" if len(paths) > most else ""
    return ", ".join(shown) + more


def _remove_artifact_dir(folder: Path) -> None:
    """Remove an artifacts/<unit>/ folder: rbench's files in it, then the folder if nothing else is left."""
    if not folder.exists():
        return
    for name in ARTIFACT_FILES:
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        raise UsageProblem(f"{folder} holds files rbench did not write ({_listing(sorted(folder.iterdir()), folder)}); "
                           "move them out and run the same command again") from None


def _sweep(out_dir: Path) -> list[Path]:
    """Remove the work folders a killed run left in the run folder (those no live process holds)."""
    from bench.atomic import remove_stale_work_dirs

    removed = []
    for sub in SUBFOLDERS:
        removed += remove_stale_work_dirs(out_dir / sub)
    return removed


def _remove_empty_subfolders(out_dir: Path) -> None:
    for sub in SUBFOLDERS:
        try:
            (out_dir / sub).rmdir()
        except OSError:  # missing, or holds something (a live work folder): leave it
            pass


def check_run_folder(out_dir: Path, ctx: RunContext, resume: bool, plans: Sequence[StudyPlan] = ()) -> str | None:
    """Make `out_dir` a run folder for `ctx`; refuse to mix settings or to touch files rbench did not write.

    `out_dir` must be missing, empty, or a run folder (its settings.json is rbench's) whose units/,
    timing/ and artifacts/ hold only rbench's files (none of them, nor figures/, a link) and whose run.json, if any, is rbench's;
    anything else is refused before a byte is written. Resuming continues an interrupted run only.
    A folder whose run finished (it has rbench's `run.json`, written last) is measured again from
    scratch: rerunning the main job must produce new numbers, not re-render old ones. Starting
    afresh deletes rbench's own unit, timing and artifact files and run.json, nothing else.
    Returns a note saying why a run starts afresh, or None.
    """
    from bench.atomic import write_text

    out_dir = Path(out_dir)
    settings = out_dir / SETTINGS
    current = json.loads(json.dumps(ctx.fingerprint()))  # tuples become lists, as on disk
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageProblem(f"--out {out_dir} is a file, not a folder")
    check_subfolders(out_dir)
    entries = sorted(out_dir.iterdir()) if out_dir.exists() else []
    note = None
    if entries:
        previous, ours = _is_rbench_settings(settings) if settings.is_file() else (None, False)
        if not ours:
            why = "its settings.json is not rbench's" if settings.exists() else "it has no rbench settings.json"
            raise UsageProblem(f"--out {out_dir} is not empty and is not an rbench run folder ({why}; it holds "
                               f"{_listing(entries, out_dir)}); choose another --out or move those files")
        inv = _inventory(out_dir, plans)
        if inv.foreign:
            raise UsageProblem(f"{out_dir} holds files rbench did not write ({_listing(inv.foreign, out_dir)}); "
                               "move them out of the run folder or choose another --out")
        if resume and (out_dir / RUN_JSON).exists():
            resume = False
            note = f"{out_dir} holds a finished run: measuring again (use another --out to keep it)"
        if resume and previous != current:
            differs = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            if inv.measured:
                raise UsageProblem(f"{out_dir} holds a run with other settings ({', '.join(differs)} differ); "
                                   "use another --out or --no-resume to start over")
            resume = False  # nothing measured under the old settings: nothing to lose
        if not resume:
            for path in inv.ours:
                if path.is_dir():
                    _remove_artifact_dir(path)
                else:
                    path.unlink(missing_ok=True)
            _sweep(out_dir)
            _remove_empty_subfolders(out_dir)
    write_text(settings, json.dumps({"tool": TOOL, **current}, indent=1) + "\n")
    return note


def unique_units(plans: Sequence[StudyPlan]) -> list[UnitSpec]:
    """Every unit of `plans` once, in first-use order."""
    seen: dict[str, UnitSpec] = {}
    for plan in plans:
        for unit in plan.units:
            seen.setdefault(unit.spec.unit_id, unit.spec)
    return list(seen.values())

