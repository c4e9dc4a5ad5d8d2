"""A refused checkpoint is one line naming the global it tried to load; torch's warnings stay off stderr."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from export.checkpoint import _load_reason, read_weights
from export.errors import DataProblem

#: The global a malicious pickle imports: os.system is posix.system on Linux.
SYSTEM = f"{os.system.__module__}.system"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned >&2",))


class NotAllowed:
    pass


def _evil_files(folder):
    """name -> file: raw pickles at several protocols (3 makes torch warn), and torch.save of foreign objects."""
    files = {}
    for protocol in (0, 2, 3, 4):
        files[f"raw-p{protocol}"] = folder / f"raw-p{protocol}.pt"
        files[f"raw-p{protocol}"].write_bytes(pickle.dumps({"state_dict": Evil()}, protocol=protocol))
    files["zip"] = folder / "zip.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": Evil()}, files["zip"])
    files["class"] = folder / "class.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": NotAllowed()}, files["class"])
    return files


@pytest.mark.parametrize("name", ["raw-p0", "raw-p2", "raw-p3", "raw-p4", "zip", "class"])
def test_the_refused_global_is_named_and_torch_stays_quiet(tmp_path, name):
    path = _evil_files(tmp_path)[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataProblem) as info:
            read_weights(path)
    assert caught == []  # e.g. "Detected pickle protocol 3 in the checkpoint" never reaches the user
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    expected = f"{__name__}.NotAllowed" if name == "class" else SYSTEM
    assert f"unsupported GLOBAL {expected}" in message


def test_the_load_reason_of_todays_torch_messages():
    blocked = RuntimeError(
        "Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument "
        "in `torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set to `False` will "
        "likely succeed, but it can result in arbitrary code execution. Do it only if you got the file from a "
        "trusted source.\n\n\nTrying to load unsupported GLOBAL posix.system whose module posix is blocked.\n\n"
        "Check the documentation of torch.load to learn more about types accepted by default with weights_only "
        "https://pytorch.org/docs/stable/generated/torch.load.html.")
    assert _load_reason(blocked) == "unsupported GLOBAL posix.system: its module posix is blocked"
    operand = RuntimeError(
        "Weights only load failed. Re-running `torch.load` ... trusted source.\nPlease file an issue with the "
        "following so that we can make `weights_only=True` compatible with your use case: WeightsUnpickler "
        "error: \n\nUnsupported operand 149\n\nCheck the documentation of torch.load to learn more")
    assert _load_reason(operand) == "Unsupported operand 149"
    assert _load_reason(KeyError(1785425525)) == "KeyError: 1785425525"


def test_an_empty_checkpoint_says_so(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(DataProblem, match="is empty"):
        read_weights(tmp_path / "empty.pt")


def test_export_of_a_malicious_checkpoint_is_exactly_one_line(tmp_path):
    """In a real process: torch's warning and its code line would go to stderr before rbench's line."""
    path = _evil_files(tmp_path)["raw-p3"]
    root = str(Path(__file__).resolve().parents[2])  # this checkout's rbench, whatever is installed
    env = {**os.environ, "RBENCH_DEBUG": "", "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "bench.cli", "export", "resnet20", "--checkpoint", str(path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300, env=env)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("rbench: error:") and f"unsupported GLOBAL {SYSTEM}" in lines[0]
    assert "pwned" not in done.stderr + done.stdout and not (tmp_path / "out").exists()


def test_export_of_a_foreign_checkpoint_in_process(run_cli, tmp_path):
    path = _evil_files(tmp_path)["zip"]
    code, _, err = run_cli("export", "resnet20", "--checkpoint", path, "--out", tmp_path / "out")
    assert code == 1 and len(err.strip().splitlines()) == 1 and f"unsupported GLOBAL {SYSTEM}" in err
