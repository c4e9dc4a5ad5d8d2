"""Errors export raises on purpose, each with the exit code a command line gives it.

`export` imports nothing from `bench`, so it owns its errors (as `nets` owns `nets.errors`). A CLI
turns any `ExportError` into the one line `str(error)` and exits with `error.exit_code`: 2 for a
usage problem (the request cannot be served as asked), 1 for an environment or data problem (this
machine lacks TensorRT or a GPU; a file is missing, corrupt, or the export misses PyTorch's outputs).
"""

from __future__ import annotations


class ExportError(Exception):
    """Base class: `str(error)` is the one line the user sees."""

    exit_code = 1


class UsageProblem(ExportError):
    """The request itself is wrong (opset 9, batch range 8,1,64, weights that do not fit the model, ...)."""

    exit_code = 2


class EnvironmentProblem(ExportError):
    """The request is fine but this machine cannot serve it (no GPU, an unwritable folder, ...)."""

    exit_code = 1


class MissingDependency(EnvironmentProblem):
    """An optional package is not installed (or too old); the message says what to install."""

    def __init__(self, what: str, install_hint: str):
        super().__init__(f"{what} is not available: {install_hint}")
        self.what = what
        self.install_hint = install_hint


class DataProblem(ExportError):
    """A file is missing, unreadable or corrupt (a checkpoint, an ONNX file), or an exporter failed on it."""

    exit_code = 1


class ParityFailure(ExportError):
    """The ONNX model's outputs miss PyTorch's by more than the tolerance."""

    exit_code = 1
