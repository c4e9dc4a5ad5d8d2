"""Errors the model zoo raises for bad requests; each is a usage problem (rbench's root error, exit 2)."""

from __future__ import annotations

from bench.errors import UsageProblem


class ModelError(UsageProblem, ValueError):
    """A model request that cannot be served (a ValueError too, as a library caller expects)."""

    exit_code = 2


class UnknownModelError(ModelError, KeyError):
    """No model of that name; the message names the nearest matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


class ModelConfigError(ModelError):
    """A setting the model cannot take (in_chans 0, unknown activation, ...)."""
