"""Shared test set-up: small, deterministic, CPU-sized."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores on CI: one intra-op thread per test process keeps timings and runs predictable.
torch.set_num_threads(int(os.environ.get("RBENCH_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _private_count_cache(tmp_path_factory, monkeypatch):
    # FLOP counts are cached on disk; tests must not read or write the user's ~/.cache.
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "rbench-cache"))


@pytest.fixture
def private_flops_cache(tmp_path, monkeypatch):
    """A per-test FLOP-count cache: on-disk counts in tmp_path, the in-memory cache emptied."""
    from bench.measure.flops import model_flops

    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))
    model_flops.cache_clear()
    yield
    model_flops.cache_clear()


@pytest.fixture(scope="session")
def tv_resnet18(tmp_path_factory):
    """A torchvision resnet18 state dict (3 classes, random weights, seed 0), saved as torchvision's .pth files are."""
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tv") / "resnet18-3class.pth"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    return path


@pytest.fixture
def results_dir(tmp_path):
    """A fresh results/ folder for commands that write records."""
    path = tmp_path / "results"
    path.mkdir()
    return path


@pytest.fixture
def run_cli(capsys):
    """Run `rbench ARGS...` in-process; returns (exit_code, stdout, stderr)."""
    from bench.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def record_of(kind: str, **fields):
    """A valid record of `kind` with only the given fields set (the rest None), for report and schema tests."""
    from bench.records.builders import FIELDS
    from bench.records.io import make_record

    fields.setdefault("command", "test")
    return make_record(kind, **{**dict.fromkeys(FIELDS.get(kind, ())), **fields})
