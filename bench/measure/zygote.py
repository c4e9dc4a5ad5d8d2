"""Worker start by fork: a zygote imports the heavy libraries once, in one worker environment, and forks workers.

A timing worker (`bench.measure.worker`) spent about 2 s of CPU getting ready on a 2-core VM, nearly
all of it `import torch`; the quick suite starts some 300 of them. A zygote is a process started with
a worker environment (the thread policy's OMP_* variables are set before any library loads, as for a
worker) that imports torch, numpy and rbench's worker modules, runs nothing, and then forks one child
per worker on request. Each child is a new process: it opens its engine, creates its thread pools
and settles into whatever thread mode it settles into on its own, as a worker started by exec does.
The zygote never runs a kernel, so no OpenMP pool exists before the fork (GNU OpenMP's pool does not
survive one); the import leaves one helper thread (OpenBLAS's, which shuts itself down at fork).

Protocol: a SOCK_SEQPACKET socket pair, one JSON message per packet. The parent sends
{"cmd": "fork", "spec": path} with the child's stdin, stdout and stderr as SCM_RIGHTS file
descriptors and gets {"pid": n}; {"cmd": "wait", "pid": n, "timeout_s": t} answers
{"status": code or null}. The zygote exits at end of input.

`RBENCH_WORKER_START=exec` starts every worker with a fresh `python -m bench.measure.worker`
instead (the check that both starts time alike: docs/measuring.md, "Worker start").
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

#: What a zygote imports before it forks: everything a worker needs that takes time to load.
#: `onnx` alone took 0.8 s (its dtype tables); onnxruntime (30 ms) starts a native thread at import, so it is
#: left to the child, as is every other engine's library.
PRELOAD = ("numpy", "torch", "onnx", "bench.engines", "bench.engines.sources", "bench.measure.timing",
           "bench.measure.worker", "nets")
#: How workers start: "fork" (of a zygote per environment, the default) or "exec" (a new interpreter each).
START_ENV = "RBENCH_WORKER_START"
START_MODES = ("fork", "exec")
#: Zygotes kept alive at once (each holds an imported torch, ~0.3 GB); the least recently used goes first.
MAX_ZYGOTES = 4
PACKET = 1 << 16
#: Variables that change all the time and mean nothing to a worker: a zygote started with another value serves.
NOT_IN_KEY = frozenset({"PYTEST_CURRENT_TEST"})


#: How a worker or zygote starts: `python -m` would put the working folder first on sys.path, ahead of the
#: checkout PYTHONPATH names first (another version's, `bench.measure.versions`); this puts that checkout there.
_BOOT = "import runpy, sys; sys.path[0] = sys.argv.pop(1); runpy.run_module(sys.argv.pop(1), run_name='__main__')"


def module_command(module: str, env: dict[str, str], *args: str) -> list[str]:
    """The command that runs `module` as a script from the checkout first on `env`'s PYTHONPATH."""
    root = env.get("PYTHONPATH", "").split(os.pathsep)[0] or os.getcwd()
    return [sys.executable, "-c", _BOOT, root, module, *args]


class ZygoteFailed(Exception):
    """The zygote could not start, or stopped answering; the caller starts its workers by exec instead."""


def start_mode() -> str:
    from bench.errors import UsageProblem

    mode = os.environ.get(START_ENV, "fork")
    if mode not in START_MODES:
        raise UsageProblem(f"{START_ENV}={mode!r} is not one of {', '.join(START_MODES)}; unset it for fork")
    return mode


# -- the zygote process ----------------------------------------------------------------------------
def _child(spec: str, cwd: str, fds: list[int], sock: socket.socket) -> None:
    """In the forked child: the parent's working folder, the given descriptors as stdin, stdout and stderr;
    then the worker runs."""
    sock.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    code = 1
    try:
        os.chdir(cwd)  # after the descriptors: a folder that is gone is said on the worker's stderr
        from bench.measure import worker

        worker.START = f"fork of zygote {os.getppid()}"
        worker._START_AFFINITY = _START_AFFINITY
        code = worker.main([spec])
    except BaseException:  # noqa: BLE001 - the parent reads this traceback's tail from the worker's stderr
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)  # never the zygote's own exit path


def _wait(pid: int, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


def serve(sock: socket.socket) -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional library the child may not need either; if it does, it says so
    sock.send(json.dumps({"ready": True, "pid": os.getpid(), "threads": threading.active_count(),
                          "os_threads": len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task")
                          else None}).encode())
    while True:
        message, fds, _, _ = socket.recv_fds(sock, PACKET, 3)
        if not message:
            return
        request = json.loads(message)
        if request["cmd"] == "fork":
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request["spec"], request["cwd"], fds, sock)
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"pid": pid}).encode())
        elif request["cmd"] == "wait":
            sock.send(json.dumps({"status": _wait(request["pid"], request.get("timeout_s", 0.0))}).encode())
        else:
            sock.send(json.dumps({"error": f"unknown command {request['cmd']!r}"}).encode())


#: The zygote's CPUs before any library loaded: what its workers report as the CPUs they started with (torch's
#: OpenMP binds the importing thread to its first place when OMP_PROC_BIND is set, and a fork inherits that).
_START_AFFINITY: list[int] | None = None


def main(argv: list[str]) -> int:
    global _START_AFFINITY
    _START_AFFINITY = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    sock = socket.socket(fileno=int(argv[0]))
    try:
        serve(sock)
    except (ConnectionError, KeyboardInterrupt):
        pass
    return 0


# -- the parent's side -----------------------------------------------------------------------------
class ForkedProcess:
    """A worker forked by a zygote, with the few methods of `subprocess.Popen` the parent uses."""

    def __init__(self, zygote: Zygote, pid: int, stdin, stdout):
        self.zygote, self.pid, self.stdin, self.stdout = zygote, pid, stdin, stdout
        self.returncode: int | None = None

    def _status(self, timeout_s: float) -> int | None:
        try:
            return self.zygote.wait(self.pid, timeout_s)
        except ZygoteFailed:
            return -1  # the zygote is gone, and its children with their status: nothing left to wait for

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._status(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._status(3600.0 if timeout is None else timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
        return self.returncode

    def kill(self) -> None:
        import signal

        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Zygote:
    """One zygote process, started with `env`, and the socket to it."""

    def __init__(self, env: dict[str, str], timeout_s: float = 120.0):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        self.lock = threading.Lock()
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(module_command("bench.measure.zygote", env, str(theirs.fileno())),
                                     pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr, env=env, close_fds=True)
        theirs.close()
        self.sock.settimeout(timeout_s)
        try:
            self.ready = self._receive()
        except ZygoteFailed:
            self.close()
            raise

    def _receive(self) -> dict[str, Any]:
        try:
            message = self.sock.recv(PACKET)
        except (TimeoutError, OSError) as exc:
            raise ZygoteFailed(f"the zygote did not answer: {exc}") from None
        if not message:
            self.stderr.seek(0)
            tail = " | ".join(self.stderr.read().decode(errors="replace").splitlines()[-3:])[-400:]
            raise ZygoteFailed("the zygote exited" + (f": {tail}" if tail else ""))
        return json.loads(message)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, spec_file: str, stderr) -> ForkedProcess:
        """A worker for `spec_file`, its stderr going to the open file `stderr`."""
        in_read, in_write = os.pipe()
        out_read, out_write = os.pipe()
        try:
            with self.lock:
                socket.send_fds(self.sock, [json.dumps({"cmd": "fork", "spec": spec_file, "cwd": os.getcwd()}).encode()],
                                [in_read, out_write, stderr.fileno()])
                reply = self._receive()
        except (ZygoteFailed, OSError):
            for fd in (in_write, out_read):
                os.close(fd)
            raise
        finally:
            os.close(in_read)
            os.close(out_write)
        return ForkedProcess(self, reply["pid"], os.fdopen(in_write, "wb"), os.fdopen(out_read, "rb"))

    def wait(self, pid: int, timeout_s: float) -> int | None:
        with self.lock:
            try:
                self.sock.send(json.dumps({"cmd": "wait", "pid": pid, "timeout_s": timeout_s}).encode())
            except OSError as exc:
                raise ZygoteFailed(f"the zygote is gone: {exc}") from None
            return self._receive()["status"]

    def close(self) -> None:
        try:
            self.sock.close()
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


_ZYGOTES: dict[tuple[tuple[str, str], ...], Zygote] = {}
_POOL_LOCK = threading.Lock()
_AT_EXIT: list[bool] = []


def zygote_for(env: dict[str, str]) -> Zygote:
    """The live zygote started with exactly `env`, started now when there is none."""
    import atexit

    key = tuple(sorted((k, v) for k, v in env.items() if k not in NOT_IN_KEY))
    with _POOL_LOCK:
        zygote = _ZYGOTES.pop(key, None)
        if zygote is not None and not zygote.alive():
            zygote.close()
            zygote = None
        if zygote is None:
            if not _AT_EXIT:
                atexit.register(close_all)
                _AT_EXIT.append(True)
            while len(_ZYGOTES) >= MAX_ZYGOTES:
                _ZYGOTES.pop(next(iter(_ZYGOTES))).close()
            zygote = Zygote(env)
        _ZYGOTES[key] = zygote  # most recently used last
        return zygote


def live_cpu_s() -> float:
    """CPU seconds the live zygotes and the workers they reaped have run (/proc/PID/stat: utime, stime, cutime,
    cstime). A closed zygote is our own reaped child, in `os.times()`'s children already; 0 off Linux."""
    total = 0
    for zygote in list(_ZYGOTES.values()):
        try:
            with open(f"/proc/{zygote.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])
        except (OSError, ValueError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK") if total else 0.0


def close_all() -> None:
    """Stop every zygote (at exit; their workers have stopped or get end of input)."""
    with _POOL_LOCK:
        while _ZYGOTES:
            _ZYGOTES.popitem()[1].close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
