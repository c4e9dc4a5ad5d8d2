"""The errors rbench raises on purpose, each with the exit code the CLI gives it: rbench's one root error.

Every bad input ends as one line on stderr that says what to do, and a non-zero exit:
2 for a usage problem (the command line asked for something that cannot be), 1 for an
environment problem (this machine lacks a GPU, TensorRT, a data set, ...).

This module is the floor every package stands on: it imports nothing of rbench, and `export.errors`
and `nets.errors` subclass its classes, so `except RbenchError` (or `except UsageProblem`) catches what
export and the model zoo raise too.
"""

from __future__ import annotations

__all__ = ["DataProblem", "EnvironmentProblem", "MissingDependency", "RbenchError", "UsageProblem"]


class RbenchError(Exception):
    """Root of every error rbench raises on purpose: `str(error)` is the one line the user sees."""

    exit_code = 1


class UsageProblem(RbenchError):
    """The request itself is wrong (opset 9, batch range 8,1,64, weights that do not fit the model, ...)."""

    exit_code = 2


class EnvironmentProblem(RbenchError):
    """The request is fine but this machine cannot serve it (no GPU, an unwritable folder, ...)."""

    exit_code = 1


class MissingDependency(EnvironmentProblem):
    """An optional package is not installed (or too old); the message says what to install."""

    def __init__(self, what: str, install_hint: str):
        super().__init__(f"{what} is not available: {install_hint}")
        self.what = what
        self.install_hint = install_hint


class DataProblem(RbenchError):
    """A file is missing, unreadable or corrupt (a checkpoint, an ONNX file), or an exporter failed on it."""

    exit_code = 1
