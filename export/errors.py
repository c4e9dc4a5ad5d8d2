"""Errors export raises on purpose: `ExportError` and its kinds, each a subclass of rbench's root error.

Each class here is both an `ExportError` (what went wrong in an export) and the matching `bench.errors`
class (what kind of problem it is), so `except ExportError` catches export's errors alone while
`except bench.errors.UsageProblem` catches a usage problem from anywhere. A CLI turns any of them into
the one line `str(error)` and exits with `error.exit_code`: 2 for a usage problem, 1 for an environment
or data problem (this machine lacks TensorRT or a GPU; a file is missing, corrupt, or the export misses
PyTorch's outputs). `bench.errors` imports nothing, so export depends on no other part of bench.
"""

from __future__ import annotations

from bench import errors as _root


class ExportError(_root.RbenchError):
    """Base class of export's errors: `str(error)` is the one line the user sees."""


class UsageProblem(ExportError, _root.UsageProblem):
    """The request itself is wrong (opset 9, batch range 8,1,64, weights that do not fit the model, ...)."""


class EnvironmentProblem(ExportError, _root.EnvironmentProblem):
    """The request is fine but this machine cannot serve it (no GPU, an unwritable folder, ...)."""


class MissingDependency(EnvironmentProblem, _root.MissingDependency):
    """An optional package is not installed (or too old); the message says what to install."""


class DataProblem(ExportError, _root.DataProblem):
    """A file is missing, unreadable or corrupt (a checkpoint, an ONNX file), or an exporter failed on it."""


class ParityFailure(ExportError):
    """The ONNX model's outputs miss PyTorch's by more than the tolerance."""

    exit_code = 1
