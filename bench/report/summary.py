"""The report's opening table: one row per study question, its answer, the figure with its interval, and whether the
interval decides it.

A study supplies its rows through its `summary` hook (`bench.studies.base.Study.summary`); `render_report` puts every
study's rows in one table, each linked to the study's section.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: The interval lies wholly on one side of the line the question draws.
DECIDED = "decided"
#: The interval straddles the line: more data, seeds or epochs are needed.
UNDECIDED = "undecided"
#: The figure is not trustworthy as measured: timings taken under contention, seeds that disagree in sign, a net
#: that did not train.
UNSTABLE = "unstable"
STATUSES = (DECIDED, UNDECIDED, UNSTABLE)
#: Verdict words (`bench.report.stats`, `bench.measure.stats`) that settle a question.
DECIDING_VERDICTS = {"better", "worse", "faster", "slower", "MET", "NOT MET"}


@dataclass(frozen=True)
class SummaryRow:
    """One question a study answers, as the report's opening table gives it."""

    question: str  # what was asked, in a few words
    answer: str  # the answer the figure supports ('not decided at this budget' when it supports none)
    figure: str  # the measured figure with its 95% interval, in the report's notations (`bench.report.cells`)
    status: str  # DECIDED, UNDECIDED or UNSTABLE

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"a summary row's status is one of {', '.join(STATUSES)}, not {self.status!r}")


#: summary(records, preset settings) -> the study's rows of the opening table.
Summary = Callable[[Sequence[dict[str, Any]], dict[str, Any]], list[SummaryRow]]


def status_of(verdict: str, *, unstable: bool = False) -> str:
    """DECIDED for a verdict that settles the question, UNDECIDED otherwise; UNSTABLE overrides both."""
    if unstable:
        return UNSTABLE
    return DECIDED if verdict in DECIDING_VERDICTS else UNDECIDED


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def summary_table(rows: Sequence[tuple[str, SummaryRow]]) -> str:
    """The opening table: (section heading, row) pairs, the study column linking to the section."""
    head = "| study | question | answer | figure [95% CI] | status |\n|---|---|---|---|---|"
    body = [f"| [{title.split(':')[0]}](#{github_anchor(title)}) | {row.question} | {row.answer} | {row.figure} | "
            f"{row.status} |" for title, row in rows]
    return "\n".join([head, *body])
