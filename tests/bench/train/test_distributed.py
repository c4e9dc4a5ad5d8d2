"""Data-parallel training (`bench.train.distributed`) with gloo and 2 processes on the CPU: the same step as one process,
the same accuracy, a killed rank ends the run, and the one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from bench.data.batches import Batches
from bench.data.common import TensorImages
from bench.errors import UsageProblem
from bench.train import distributed

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    """This interpreter's environment for a child rbench, one torch thread, no torchrun variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), **extra)
    return env


def _rbench(*args, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=REPO, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- the sampler, without processes


@pytest.mark.parametrize("n", [10, 11, 1])
def test_shards_cover_the_order_once_or_padded_equally(n):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    exact = [distributed.shard_indices(order, r, 2, pad=False) for r in range(2)]
    assert sorted(torch.cat(exact).tolist()) == sorted(order.tolist())  # a partition: nothing scored twice
    padded = [distributed.shard_indices(order, r, 2, pad=True) for r in range(2)]
    assert len(padded[0]) == len(padded[1]) == -(-n // 2)  # equal steps on every rank
    assert set(torch.cat(padded).tolist()) == set(order.tolist())


def test_first_global_batch_is_the_single_process_batch():
    images = torch.randint(0, 255, (40, 1, 4, 4), dtype=torch.uint8)
    data = TensorImages(images, torch.arange(40))
    full = Batches(data, 8, (0.5,), (0.25,), shuffle=True, seed=3)
    full.set_epoch(2)
    _, labels = next(iter(full))
    shares = []
    for rank in range(2):
        share = distributed.ShardedBatches.of(full, rank, 2, 4, pad=True)
        assert len(share) == 5
        shares.append(next(iter(share))[1])
    assert sorted(torch.cat(shares).tolist()) == sorted(labels.tolist())
    again = distributed.ShardedBatches.of(full, 1, 2, 4, pad=True)
    assert torch.equal(next(iter(again))[1], shares[1])  # seeded by (seed, epoch): a resumed run sees the same


def test_command_argv_repeats_the_command_without_nproc():
    import click

    @click.command("train")
    @click.argument("model")
    @click.option("--epochs", type=int, default=1)
    @click.option("--nproc", type=int, default=None)
    @click.option("--quiet", "-q", is_flag=True)
    @click.option("--restore-best/--keep-last", default=True)
    def cmd(model, epochs, nproc, quiet, restore_best):
        pass

    params = {"model": "resnet20", "epochs": 3, "nproc": 2, "quiet": True, "restore_best": False}
    assert distributed.command_argv(cmd, params, drop=("nproc",), epochs=4) == [
        "train", "resnet20", "--epochs", "4", "--quiet", "--keep-last"]



def test_command_argv_leaves_out_flags_left_at_their_default():
    # click 8.2+ keeps an option declared without a default as its UNSET sentinel; the value the command
    # received (False for a flag) is its default all the same, so it is left out, never repeated by name.
    import click

    @click.command("train")
    @click.argument("model")
    @click.option("--nproc", type=int)
    @click.option("--quiet", "-q", is_flag=True)
    @click.option("--sync-bn", is_flag=True)
    @click.option("--limit", type=int)
    @click.option("--amp/--no-amp", default=False)
    @click.pass_context
    def cmd(ctx, model, nproc, quiet, sync_bn, limit, amp):
        return distributed.command_argv(ctx.command, ctx.params, drop=("nproc",))

    argv = cmd.main(["resnet20", "--nproc", "2"], standalone_mode=False)
    assert argv == ["train", "resnet20"]
    argv = cmd.main(["resnet20", "--nproc", "2", "--sync-bn", "--limit", "5", "--amp"], standalone_mode=False)
    assert argv == ["train", "resnet20", "--sync-bn", "--limit", "5", "--amp"]

# --------------------------------------------------------------------------- bad input: one line, non-zero exit


def _one_line_error(code: int, err: str, expected: int) -> str:
    lines = err.strip().splitlines()
    assert code == expected and len(lines) == 1 and lines[0].startswith("rbench: error:"), (code, err)
    return lines[0]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_nproc_below_one(run_cli, in_tmp):
    code, _, err = run_cli("train", "resnet20", "--dataset", "digits", "--nproc", "0")
    assert "--nproc" in _one_line_error(code, err, 2)


def test_nproc_above_the_cores(run_cli, in_tmp, monkeypatch):
    monkeypatch.setattr(distributed, "available_cores", lambda: 2)
    code, _, err = run_cli("train", "resnet20", "--dataset", "digits", "--nproc", "3")
    line = _one_line_error(code, err, 2)
    assert "--nproc 3" in line and "2 CPU core" in line
    assert not (in_tmp / "runs").exists() and not (in_tmp / "results").exists()


def test_nproc_above_the_gpus(run_cli, in_tmp, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UsageProblem, match="needs 2 GPUs; torch sees 1"):
        distributed.check_nproc(2, "cuda")


@pytest.mark.parametrize("args, words", [
    (("--batch-size", "33"), "multiple of 2"),
    (("--sync-bn",), "SyncBatchNorm"),
])
def test_launch_refuses_what_every_rank_would(run_cli, in_tmp, monkeypatch, args, words):
    monkeypatch.setattr(distributed, "available_cores", lambda: 2)
    code, _, err = run_cli("train", "resnet20", "--dataset", "digits", "--nproc", "2", *args)
    assert words in _one_line_error(code, err, 2)


def test_sync_bn_without_processes(run_cli, in_tmp):
    code, _, err = run_cli("train", "resnet20", "--dataset", "digits", "--subset", "40", "--sync-bn", "-q")
    assert "--nproc 2 or more" in _one_line_error(code, err, 2)


def test_unreachable_master_ends_in_bounded_time(tmp_path):
    """A rank whose master does not answer (nothing listens on the port) gives up after RBENCH_DIST_TIMEOUT."""
    t0 = time.monotonic()
    proc = _rbench("train", "resnet20", "--dataset", "digits", "--subset", "40", "--out", tmp_path / "run",
                   "--results", tmp_path / "results", "-q", timeout=90, RANK="1", WORLD_SIZE="2", LOCAL_RANK="0",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RBENCH_DIST_TIMEOUT="2")
    assert time.monotonic() - t0 < 60
    line = _one_line_error(proc.returncode, proc.stderr, 1)
    assert "could not join the process group at 127.0.0.1" in line and "within 2 s" in line
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- 2 processes vs 1


class TinyNet(nn.Module):
    """No BatchNorm: DDP's averaged gradient over two halves is exactly the full batch's."""

    def __init__(self):
        super().__init__()
        self.config = {"name": "tiny", "num_classes": 10, "in_chans": 1}
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _one_step(out: str, batch_size: int) -> None:
    from bench.data import load_dataset
    from bench.train.loop import TrainConfig, train_model

    torch.set_num_threads(1)
    bundle = load_dataset("digits", subset=200, input_size=8, seed=0)
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, batch_size=batch_size, optimizer="sgd", lr=0.5, schedule="constant", max_batches=1)
    train_model(TinyNet(), bundle, config, out, progress=False)


def _rank_step(rank: int, port: int, out: str, batch_size: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), RBENCH_DIST_TIMEOUT="60")
    with distributed.session("cpu") as ctx:
        assert ctx is not None and ctx.backend == "gloo"
        _one_step(out, batch_size)


def test_two_processes_at_half_batch_take_the_single_process_step(tmp_path):
    import torch.multiprocessing as mp

    _one_step(str(tmp_path / "one"), 32)
    mp.start_processes(_rank_step, args=(free_port(), str(tmp_path / "two"), 32), nprocs=2, join=True,
                       start_method="spawn")
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    for name, weight in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][name], weight, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    initial = TinyNet().state_dict()
    assert any(not torch.equal(one["state_dict"][k], v) for k, v in initial.items())  # the step did move them
    assert two["history"][0]["train_loss"] == pytest.approx(one["history"][0]["train_loss"], rel=1e-5)
    assert two["history"][0]["val_acc"] == pytest.approx(one["history"][0]["val_acc"], abs=1e-9)  # val: a partition


@pytest.mark.slow
def test_two_process_resnet20_matches_one_process_and_resumes(tmp_path):
    common = ("train", "resnet20", "--dataset", "digits", "--subset", "1000", "--input-size", "12",
              "--optimizer", "adam", "--batch-size", "32", "-q")
    one = _rbench(*common, "--out", tmp_path / "one", "--results", tmp_path / "r1", "--threads", "1")
    assert one.returncode == 0, one.stderr
    two = _rbench(*common, "--out", tmp_path / "two", "--results", tmp_path / "r2", "--nproc", "2")
    assert two.returncode == 0, two.stderr
    (rec1,) = [json.loads(line) for line in (tmp_path / "r1" / "train.jsonl").read_text().splitlines()]
    (rec2,) = [json.loads(line) for line in (tmp_path / "r2" / "train.jsonl").read_text().splitlines()]
    assert rec1["world_size"] == 1 and rec1["backend"] is None
    assert rec2["world_size"] == 2 and rec2["backend"] == "gloo" and rec2["batch"] == 32
    assert rec2["batch_per_process"] == 16 and len(rec2["rank_train_img_s"]) == 2
    assert "--nproc 2" in rec2["command"]
    assert rec1["best_val_acc"] > 0.3 and rec2["best_val_acc"] > 0.3  # chance is 0.1
    assert abs(rec2["best_val_acc"] - rec1["best_val_acc"]) <= 0.15  # 100 val images: within noise
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())

    again = _rbench(*common, "--epochs", "2", "--resume", "--out", tmp_path / "two", "--results", tmp_path / "r2",
                    "--nproc", "2")
    assert again.returncode == 0, again.stderr
    history = json.loads((tmp_path / "two" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[0] == rec2["history"][0]
    last = json.loads((tmp_path / "r2" / "train.jsonl").read_text().splitlines()[-1])
    assert last["resumed"] and last["epochs"] == 2


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _rank_of(pid: int) -> int | None:
    try:
        env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")]
    return int(ranks[0]) if ranks else None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks through /proc")
def test_killing_one_rank_ends_the_run(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "bench", "train", "resnet20", "--dataset", "digits", "--subset",
                             "600", "--input-size", "12", "--epochs", "200", "--batch-size", "16", "--nproc", "2",
                             "--out", str(tmp_path / "run"), "--results", str(tmp_path / "results"), "-q"],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        rank1 = None
        while rank1 is None and time.monotonic() < deadline:  # the rank trains once rank 0 has written an epoch
            time.sleep(0.5)
            if (tmp_path / "run" / "history.json").exists():
                rank1 = next((p for p in _children(proc.pid) if _rank_of(p) == 1), None)
        assert rank1 is not None, "rank 1 never started training"
        os.kill(rank1, signal.SIGKILL)
        t_kill = time.monotonic()
        _, err = proc.communicate(timeout=90)
        assert time.monotonic() - t_kill < 60
    finally:
        if proc.poll() is None:
            for child in _children(proc.pid):
                os.kill(child, signal.SIGKILL)
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("rbench: error: rank 1 of 2") and "SIGKILL" in lines[-1], err
    assert not (tmp_path / "results").exists()  # no record of a run that did not finish
