"""The errors rbench raises on purpose, each with the exit code the CLI gives it.

Every bad input ends as one line on stderr that says what to do, and a non-zero exit:
2 for a usage problem (the command line asked for something that cannot be), 1 for an
environment problem (this machine lacks a GPU, TensorRT, a data set, ...).

The classes are defined once, in `export.errors` (export imports nothing from bench), and
re-exported here, so `except UsageProblem` catches what export raises too.
"""

from __future__ import annotations

from export.errors import DataProblem, EnvironmentProblem, MissingDependency, UsageProblem
from export.errors import ExportError as RbenchError

__all__ = ["DataProblem", "EnvironmentProblem", "MissingDependency", "RbenchError", "UsageProblem"]
