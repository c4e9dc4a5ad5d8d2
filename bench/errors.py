"""The errors rbench raises on purpose, each with the exit code the CLI gives it.

Every bad input ends as one line on stderr that says what to do, and a non-zero exit:
2 for a usage problem (the command line asked for something that cannot be), 1 for an
environment problem (this machine lacks a GPU, TensorRT, a data set, ...).
"""

from __future__ import annotations


class RbenchError(Exception):
    """Base class: `str(error)` is the one line the user sees."""

    exit_code = 1


class UsageProblem(RbenchError):
    """The request itself is wrong (unknown model, batch 0, bad shape, ...)."""

    exit_code = 2


class EnvironmentProblem(RbenchError):
    """The request is fine but this machine cannot serve it (no GPU, no TensorRT, ...)."""

    exit_code = 1


class MissingDependency(EnvironmentProblem):
    """An optional package is not installed; the message names the extra to install."""

    def __init__(self, what: str, install_hint: str):
        super().__init__(f"{what} is not available: {install_hint}")
        self.what = what
        self.install_hint = install_hint


class DataProblem(RbenchError):
    """A file or data set is missing, unreadable or corrupt."""

    exit_code = 1
