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


def summary_table(rows: Sequence[tuple[str, str, SummaryRow]], report: str = "") -> str:
    """The opening table: (study name, section heading, row) triples, the study column linking to the section (of
    the report at the relative link `report`; '' for the page the table is on)."""
    head = "| study | question | answer | figure [95% CI] | status |\n|---|---|---|---|---|"
    body = [f"| [{name}]({report}#{github_anchor(title)}) | {row.question} | {row.answer} | {row.figure} | "
            f"{row.status} |" for name, title, row in rows]
    return "\n".join([head, *body])


def accuracy_row(question: str, a: dict[str, Any], b: dict[str, Any], *, as_error: bool = False) -> SummaryRow | None:
    """A row comparing row `a`'s torch top-1 with row `b`'s (`bench.report.format.unit_rows`): the difference with
    its paired-bootstrap interval; 'better'/'worse' only where the interval clears 0. `as_error`: said as test error
    (lower is better). None when either net has no trained seed."""
    from bench.report.cells import fmt_pp
    from bench.report.format import accuracy_comparison

    c = accuracy_comparison(a, b)
    if c is None:
        return None
    verdict = c["verdict"]
    subject = f"{a['label']} vs {b['label']}"
    answer = f"{a['label']} {verdict}" if verdict in ("better", "worse") else f"{subject}: {verdict}"
    sign = -1 if as_error else 1
    low, high = sorted((sign * c["low"], sign * c["high"]))
    figure = f"{'test error' if as_error else 'top-1'} {fmt_pp(sign * c['estimate'], low, high)}"
    seeds = [(x.get("seeds") or {}).get("top1") or {} for x in (a, b)]
    unstable = _seeds_disagree(a, b, seeds)
    return SummaryRow(question, answer, figure, status_of(verdict, unstable=unstable))


def _seeds_disagree(a: dict[str, Any], b: dict[str, Any], seeds: Sequence[dict[Any, Any]]) -> bool:
    """Whether the seeds the two nets share disagree on which is more accurate (a sign flip between seeds)."""
    shared = [s for s in seeds[0] if s in seeds[1] and seeds[0][s] is not None and seeds[1][s] is not None]
    signs = {(seeds[0][s] > seeds[1][s]) - (seeds[0][s] < seeds[1][s]) for s in shared}
    return {1, -1} <= signs


def latency_row(question: str, a: dict[str, Any], b: dict[str, Any], engine: str) -> SummaryRow | None:
    """A row giving row `a`'s p50 latency over row `b`'s on `engine`, timed together, with its interval."""
    from bench.report.cells import fmt_ratio
    from bench.report.format import latency_comparison

    c = latency_comparison(a, b, engine)
    if c is None:
        return None
    verdict = c["verdict"]
    answer = f"{a['label']} {verdict}" if verdict in ("faster", "slower") else verdict
    return SummaryRow(question, answer, f"{engine} p50 {fmt_ratio(c['ratio'], c['low'], c['high'])}",
                      status_of(verdict, unstable=bool(c.get("unstable"))))
