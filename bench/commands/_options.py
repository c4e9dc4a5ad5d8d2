"""The option types and option groups every rbench command shares: one validator for numbers, one place per option.

A number on the command line must be finite and in its range before any work starts: `float("nan")`
compares false with every bound, so click's own `FloatRange` lets `nan` through, and `inf` passes a
range that has no upper end; either makes a timing loop that never ends. A thread count must fit the
cores this process may run on: more threads than cores time the waiting, not the model.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import click


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Number(click.ParamType):
    """A finite float within [min, max]; `min_open` / `max_open` exclude the bound itself.

    Rejects nan and +-inf with one line, whatever the bounds.
    """

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None, *, min_open: bool = False,
                 max_open: bool = False) -> None:
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        low = self.min is not None and (number <= self.min if self.min_open else number < self.min)
        high = self.max is not None and (number >= self.max if self.max_open else number > self.max)
        if low or high:
            self.fail(f"{value!r} is not {self._range_text()}", param, ctx)
        return number

    def _range_text(self) -> str:
        if self.min == 0 and self.min_open and self.max is None:
            return "positive"
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '>='} {self.min:g}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {self.max:g}")
        return " and ".join(parts) or "a number"

    def __repr__(self) -> str:
        return f"Number({self.min}, {self.max})"


class Threads(click.IntRange):
    """A thread count from 1 to the usable cores of this machine (`os.sched_getaffinity`)."""

    name = "threads"

    def __init__(self) -> None:
        super().__init__(min=1)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        count = super().convert(value, param, ctx)
        cores = usable_cores()
        if count > cores:
            self.fail(f"{count} is more than the {cores} usable core{'s' if cores != 1 else ''} of this process "
                      f"(os.sched_getaffinity); more threads than cores time the waiting, not the model: use at "
                      f"most {cores}", param, ctx)
        return count


def count(min: int = 0, max: int | None = None) -> click.IntRange:
    """A whole number within [min, max] (a count of runs, images, rounds, ...)."""
    return click.IntRange(min=min, max=max)


#: Positive, finite seconds (a duration, a budget).
SECONDS = Number(0, min_open=True)
#: Zero or more finite seconds (an optional minimum, like a warm-up time).
SECONDS_OR_ZERO = Number(0)
THREADS = Threads()


# -- option groups used by more than one command ------------------------------------------------
EVAL_TRANSFORM_METAVAR = "imagenet|imagenet:RESIZE:CROP|none"


def int8_data_options(*, data_root_help: str, eval_transform_help: str, calibration_help: str,
                      activations_default: str | None, activations_help: str):
    """--data-root, --eval-transform, --calibration, --calibration-method and --activations.

    `rbench export --precision int8` and `rbench ladder` read, preprocess and calibrate on their data
    the same way; only the defaults and the wording of what each option applies to differ.
    """
    options = [
        click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=None, help=data_root_help),
        click.option("--eval-transform", default=None, metavar=EVAL_TRANSFORM_METAVAR, help=eval_transform_help),
        click.option("--calibration", default=None, metavar="DATASET[:N]", help=calibration_help),
        click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
                     show_default=True, help="int8: how activation ranges are chosen from the calibration images."),
        click.option("--activations", type=click.Choice(["u8", "s8"]), default=activations_default,
                     show_default=activations_default is not None, help=activations_help),
    ]

    def apply(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply
