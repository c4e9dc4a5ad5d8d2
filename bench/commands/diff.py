"""`rbench diff BASELINE NEW`: latency and serving regressions between two records files or folders, for CI."""

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
    """Compare the latency and serve records in NEW with those in BASELINE; exit 1 on a significant regression.

    \b
    BASELINE and NEW are records files (.jsonl) or folders (every *.jsonl inside). Records are
    matched by model, source, engine, precision, batch, input shape and machine; settings that
    differ between a matched pair (threads, graph optimization, warm-up, versions) are listed
    beside its verdict. The ratio is NEW's median latency over BASELINE's with a bootstrap 95%
    interval (each side resampled on its own: two runs are not interleaved, so drift between
    them is not in the interval; the threshold absorbs it). Verdict: slower / faster when the
    whole interval lies beyond 1 +/- --threshold, else no measurable difference.

    \b
    Serve records (rbench serve, the serve study) are matched like with like: model, source,
    engine, precision, device, LoadGen scenario, mode and machine. The figure is Server's and
    Offline's samples/s (lower is worse), SingleStream's p90 and MultiStream's p99 latency (higher
    is worse); LoadGen keeps percentiles, not every latency, so the verdict is the ratio against
    --threshold alone. A pair whose LoadGen verdict went from VALID to INVALID is a regression.

    \b
    Records diff cannot trust are refused, never compared: a corrupt line, a latency record
    missing a field or holding the wrong type, latencies that are NaN, infinite, zero or
    negative. A last line without its newline (a write cut short, e.g. by a full disk) is
    skipped with a warning.

    \b
    Exit 0: no pair regressed.
    Exit 1: at least one pair is significantly worse, or became INVALID (a regression).
    Exit 2: a usage problem (no such file, no latency or serve records, records of different machines).
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
        console = Console(width=200)
        if report["pairs"] or not report["serve_pairs"]:
            console.print(table)
            click.echo(f"{len(report['pairs'])} matched pairs; {report['unmatched_baseline']} baseline and "
                       f"{report['unmatched_new']} new records without a partner")
        if report["serve_pairs"]:
            console.print(_serve_table(report, f"{new} against {baseline}: serve records (threshold {threshold:.0%})"))
            click.echo(f"{len(report['serve_pairs'])} matched serve pairs; {report['serve_unmatched_baseline']} "
                       f"baseline and {report['serve_unmatched_new']} new serve records without a partner")
    pairs = report["pairs"] + report["serve_pairs"]
    if not pairs:
        click.echo("rbench: warning: no record in NEW matches one in BASELINE (model, engine, precision, batch or "
                   "scenario, input shape, machine)", err=True)
    if report["regressed"]:
        worse = [p for p in pairs if p["verdict"] in ("slower", "became INVALID")]
        click.echo(f"rbench: regression: {len(worse)} of {len(pairs)} pairs are significantly worse than the "
                   f"baseline by more than {threshold:.0%}, or became INVALID under LoadGen", err=True)
        raise click.exceptions.Exit(1)


def _serve_table(report: dict, title: str):
    """The serve pairs as a rich table: each scenario's figure, LoadGen's verdicts, the diff's verdict."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("model", "engine", "scenario", "mode", "figure", "baseline", "new", "ratio", "LoadGen", "verdict",
                "settings that differ"):
        table.add_column(col, justify="right" if col in ("baseline", "new", "ratio") else "left")
    for p in report["serve_pairs"]:
        key = p["key"]
        differ = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in p["settings_differ"].items()) or "-"
        style = {"slower": "[red]", "became INVALID": "[red]", "faster": "[green]"}.get(p["verdict"], "")
        table.add_row(key["model"], key["engine"], key["scenario"], key["mode"], f"{p['metric']} ({p['better']} is "
                      "better)", f"{p['baseline']:.3f}", f"{p['new']:.3f}", f"{p['ratio']:.3f}",
                      f"{p['baseline_result']} -> {p['new_result']}", f"{style}{p['verdict']}", differ)
    return table
