"""`rbench regress BASE [MODEL...]`: this checkout against a git revision, timed interleaved in one invocation."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bench.commands._options import Number, count
from bench.errors import EnvironmentProblem


@click.command("regress")
@click.argument("base")
@click.argument("models", nargs=-1, metavar="[MODEL...]")
@click.option("--engine", default="torch,ort", show_default=True,
              help="Engines, comma-separated: torch | ort | openvino | trt.")
@click.option("--batch", default=1, show_default=True, type=count(1), help="Batch size of every run.")
@click.option("--threads", default=1, show_default=True, type=count(1),
              help="Intra-op threads of every worker (1: the steadiest figure on a small VM).")
@click.option("--threshold", default=0.05, show_default=True, type=Number(0, 1, min_open=True, max_open=True),
              help="A pair regressed when its whole 95% interval of new/base lies above 1 + this.")
@click.option("--workers", default=4, show_default=True, type=count(1), help="Worker processes per side at least.")
@click.option("--precision-target", default=0.02, show_default=True, type=Number(0, 1, min_open=True, max_open=True),
              help="Add workers until every new/base interval is within +/- this...")
@click.option("--max-time", default=90.0, show_default=True, type=Number(0),
              help="...or until this many seconds of worker timing have passed.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also append the records (latency.jsonl, comparison.jsonl) to this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print each record as one JSON line instead of the table.")
def regress_command(base: str, models: tuple[str, ...], engine: str, batch: int, threads: int, threshold: float,
                    workers: int, precision_target: float, max_time: float, out: Path | None, as_json: bool) -> None:
    """Time MODELS (default resnet20) with the code of BASE and with this checkout, interleaved.

    \b
    BASE is a git revision of this checkout (its tree is unpacked into a scratch folder with git
    archive) or a folder holding another checkout of rbench. Every model x engine gets two
    entries timed in the same generations of worker processes, round by round in turn: one
    importing BASE's code, one this checkout's. A slow period of the machine falls on both, and
    the ratio new/base pairs workers of the same generation, so the verdict holds on a VM whose
    speed drifts between runs (where `rbench diff` against stored records cannot: see
    docs/measuring.md, "Regressions"). torch builds the net from each side's own nets/; ONNX
    engines time the one file this checkout exports.

    \b
    Exit 0: no pair is significantly slower than BASE by more than --threshold.
    Exit 1: at least one is (a regression; an unstable pair counts when every one of its modes is
    slower by more than --threshold), or an entry could not be timed on either side.
    Exit 2: a usage problem (BASE is neither a commit nor a checkout, an unknown model or engine).
    Example:
      rbench regress main resnet20 --engine torch,ort
    """
    import tempfile

    import numpy as np

    from bench.commands.measure import _console, _emit, check_out_folder
    from bench.measure.run import Settings
    from bench.measure.settings import parse_engines
    from bench.measure.versions import base_tree, regressions, time_versions
    from bench.records.io import to_json

    engines = parse_engines(engine)
    if out is not None:
        check_out_folder(out, ("latency.jsonl", "comparison.jsonl"))
    settings = Settings(threads=threads, workers=workers, precision_target=precision_target, max_time_s=max_time,
                        timing="workers")
    with tempfile.TemporaryDirectory(prefix="rbench-regress-") as scratch:
        base_root = base_tree(base, Path(scratch) / "base")
        click.echo(f"timing {', '.join(models or ('resnet20',))} on {', '.join(engines)}: {base} against this "
                   "checkout, interleaved", err=True)
        latency, comparisons = time_versions(list(models or ("resnet20",)), engines, base_root, settings,
                                             Path(scratch), np.random.default_rng(0), threshold=threshold,
                                             base_label=base, batch=batch, command=" ".join(["rbench", *sys.argv[1:]]))
    if as_json:
        for record in latency + comparisons:
            click.echo(to_json(record))
    else:
        from rich.table import Table

        table = Table(title=f"this checkout against {base}, interleaved (batch {batch}, {threads} thread(s); "
                            f"threshold {threshold:.0%})", title_justify="left")
        for col in ("model", "engine", "base p50 ms", "new p50 ms", "new/base (95% CI)", "workers", "verdict"):
            table.add_column(col, justify="left" if col in ("model", "engine", "verdict") else "right")
        by_pair = {(r["model"], r["engine"], r["label"]): r for r in latency}
        for c in comparisons:
            model, eng = c["candidate"]["model"], c["candidate"]["engine"]
            base_p50 = by_pair[(model, eng, f"base {base}")]["latency_ms_p50"]
            new_p50 = by_pair[(model, eng, "new")]["latency_ms_p50"]
            style = {"slower": "[red]", "faster": "[green]"}.get(c["verdict"], "")
            table.add_row(model, eng, f"{base_p50:.3f}", f"{new_p50:.3f}",
                          f"{c['ratio']:.3f} ({c['ratio_ci'][0]:.3f}-{c['ratio_ci'][1]:.3f})", str(c["workers"]),
                          f"{style}{c['verdict']}")
        _console().print(table)
    failed = [r for r in latency if r.get("error")]
    for record in failed:
        click.echo(f"rbench: warning: {record['model']} {record['engine']} ({record['label']}): {record['error']}",
                   err=True)
    if out is not None:
        _emit(latency + comparisons, out, False)
    if failed and len(failed) == len(latency):
        raise EnvironmentProblem(f"nothing could be timed: {failed[0]['error']}")
    if failed:  # a side that cannot be timed is no evidence of "no regression"
        click.echo(f"rbench: error: {len(failed)} of {len(latency)} entries could not be timed (above); their pairs "
                   "have no verdict", err=True)
        raise click.exceptions.Exit(1)
    worse = regressions(comparisons, threshold)
    if worse:
        click.echo(f"rbench: regression: {len(worse)} of {len(comparisons)} pairs are significantly slower than {base} "
                   f"by more than {threshold:.0%}", err=True)
        raise click.exceptions.Exit(1)

