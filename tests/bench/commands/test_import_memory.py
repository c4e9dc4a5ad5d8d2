"""A machine too short of memory to map torch gets one line saying so, not the loader's traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ulimit -v is a Linux address-space limit")
@pytest.mark.parametrize("limit_kib", [1_500_000, 3_000_000])
def test_torch_that_cannot_be_mapped_is_one_line(tmp_path, limit_kib):
    script = f"ulimit -v {limit_kib}; exec {sys.executable} -m bench flops resnet20 --out {tmp_path / 'results'}"
    run = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    if run.returncode == 0:
        pytest.skip("torch loads under this limit on this machine")
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1, run.stderr[-2000:]
    assert lines[0].startswith("rbench: error: memory is too constrained") and "ulimit -v" in lines[0]


def test_a_missing_package_is_not_called_a_memory_problem():
    from bench.cli import _short_of_memory

    assert not _short_of_memory(ImportError("No module named 'onnxruntime'"))
    assert _short_of_memory(ImportError("libtorch_cpu.so: failed to map segment from shared object"))
    assert _short_of_memory(MemoryError())
