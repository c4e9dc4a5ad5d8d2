"""`rbench diff BASELINE NEW`: latency regressions between two records files or folders, for CI."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("diff")
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--threshold", type=float, default=0.05, show_default=True,
              help="A pair regressed when its whole 95% interval of new/baseline lies above 1 + this.")
@click.option("--cross-machine", is_flag=True, help="Compare records measured on different machines.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON instead of a table.")
def diff_command(baseline: Path, new: Path, threshold: float, cross_machine: bool, as_json: bool) -> None:
    """Compare the latency records in NEW with those in BASELINE; exit 1 on a significant regression.

    \b
    BASELINE and NEW are records files (.jsonl) or folders (every *.jsonl inside). Records are
    matched by model, source, engine, precision, batch, input shape and machine; settings that
    differ between a matched pair (threads, graph optimization, warm-up, versions) are listed
    beside its verdict. The ratio is NEW's median latency over BASELINE's with a bootstrap 95%
    interval (each side resampled on its own: two runs are not interleaved, so drift between
    them is not in the interval; the threshold absorbs it). Verdict: slower / faster when the
    whole interval lies beyond 1 +/- --threshold, else no measurable difference.

    \b
    Records diff cannot trust are refused, never compared: a corrupt line, a latency record
    missing a field or holding the wrong type, latencies that are NaN, infinite, zero or
    negative. A last line without its newline (a write cut short, e.g. by a full disk) is
    skipped with a warning.

    \b
    Exit 0: no pair regressed.
    Exit 1: at least one pair is significantly slower (a regression).
    Exit 2: a usage problem (no such file, no latency records, records of different machines).
    Exit 3: a records file is unusable (corrupt or untrustworthy records, named by file:line).
    Example:
      rbench latency resnet20 --engine torch,ort --out new/ && rbench diff results/baselines/ new/
    """
    from bench.report.diff import diff_records, read_all

    report = diff_records(read_all(baseline), read_all(new), threshold=threshold, cross_machine=cross_machine)
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{new} against {baseline} (threshold {threshold:.0%})", title_justify="left")
        for col in ("model", "engine", "precision", "batch", "baseline p50 ms", "new p50 ms", "ratio (95% CI)", "verdict",
                    "settings that differ"):
            table.add_column(col, justify="right" if "ms" in col or col in ("batch", "ratio (95% CI)") else "left")
        for p in report["pairs"]:
            key = p["key"]
            differ = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in p["settings_differ"].items()) or "-"
            style = {"slower": "[red]", "faster": "[green]"}.get(p["verdict"], "")
            table.add_row(key["model"], key["engine"], key["precision"], str(key["batch"]), f"{p['baseline_p50_ms']:.3f}",
                          f"{p['new_p50_ms']:.3f}", f"{p['ratio']:.3f} ({p['ratio_ci'][0]:.3f}-{p['ratio_ci'][1]:.3f})",
                          f"{style}{p['verdict']}", differ)
        Console(width=200).print(table)
        click.echo(f"{len(report['pairs'])} matched pairs; {report['unmatched_baseline']} baseline and "
                   f"{report['unmatched_new']} new records without a partner")
    if not report["pairs"]:
        click.echo("rbench: warning: no record in NEW matches one in BASELINE (model, engine, precision, batch, "
                   "input shape, machine)", err=True)
    if report["regressed"]:
        slower = [p for p in report["pairs"] if p["verdict"] == "slower"]
        click.echo(f"rbench: regression: {len(slower)} of {len(report['pairs'])} pairs are significantly slower than "
                   f"the baseline by more than {threshold:.0%}", err=True)
        raise click.exceptions.Exit(1)
