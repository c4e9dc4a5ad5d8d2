"""The `rbench` command line: one click group whose commands load lazily.

Commands live in `bench/commands/*.py` and import torch only when they run, so that
`rbench --help` and `rbench --version` answer at once. Every deliberate error is one line on
stderr and a non-zero exit (2: usage, 1: environment); set RBENCH_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import warnings

import click

from bench import __version__
from bench.errors import RbenchError

#: name -> (module:function, short help). The short help lives here so that listing the
#: commands imports none of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("bench.commands.zoo:list_command", "Table of the model zoo: family, params, MACs, residual/plain/dynamic."),
    "info": ("bench.commands.zoo:info_command", "Everything about one model: config, layers, params, MACs."),
    "export": ("bench.commands.export:export_command", "Export a model to verified ONNX, and optionally a TensorRT engine."),
    "engines": ("bench.commands.measure:engines_command", "Which engines, providers and devices work on this machine, and why not."),
    "latency": ("bench.commands.measure:latency_command", "Latency percentiles of one model per engine, precision and batch size."),
    "throughput": ("bench.commands.measure:throughput_command", "Best images/s of one model over a batch sweep, per engine."),
    "flops": ("bench.commands.measure:flops_command", "Params, MACs (thop) and FLOPs (torch flop counter) of a model."),
    "device": ("bench.commands.measure:device_command", "Describe this machine and measure its peak FLOP/s and memory bandwidth."),
    "compare": ("bench.commands.measure:compare_command",
                "Time models x engines interleaved; ratios with intervals and verdicts."),
    "dynamic": ("bench.commands.dynamic:dynamic_command",
                "Dynamic vs static convolution timed interleaved: latency and training ratios, cost split."),
    "diff": ("bench.commands.diff:diff_command", "Latency regressions between two records files or folders (exit 1)."),
    "regress": ("bench.commands.regress:regress_command",
                "This checkout against a git revision, timed interleaved in one invocation (exit 1 if slower)."),
    "train": ("bench.commands.train:train_command", "Train a model briefly on real data; keep the best checkpoint."),
    "accuracy": ("bench.commands.train:accuracy_command", "Test-split accuracy of a checkpoint through every engine."),
    "serve": ("bench.commands.serve:serve_command",
              "MLPerf LoadGen scenarios (SingleStream, MultiStream, Server, Offline) on any engine; peak search."),
    "ladder": ("bench.commands.ladder:ladder_command",
               "Speed vs task accuracy of a trained model for every engine and precision (int8, bf16, ...)."),
    "study": ("bench.commands.study:study_command",
              "Run one study (depth, dynamic, activation, family, ladder, recipe, optimizer) end to end."),
    "suite": ("bench.commands.study:suite_command", "The main job: every study at the quick preset, one report."),
    "report": ("bench.commands.study:report_command",
               "Merge finished suite runs (the shards of `suite --shard I/N`) into one report."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, _ = COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and name not in COMMANDS and not name.startswith("-"):
            import difflib

            near = difflib.get_close_matches(name, list(COMMANDS), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; see `rbench --help`"
            raise click.UsageError(f"no command {name!r}{hint}")
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="rbench")
def cli() -> None:
    """Train, export and benchmark the CNNs of residual-learning studies.

    \b
    Typical use:
      rbench list 'resnet*'                 the model zoo
      rbench export resnet50                verified ONNX (+ --engine trt for TensorRT)
      rbench latency resnet20 --engine ort  latency percentiles
      rbench suite                          every study, quick preset, one report
    """


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _known_errors() -> tuple[type[BaseException], ...]:
    """The error classes rbench raises on purpose, from the modules already loaded.

    An error class cannot have been raised unless its module was imported, and importing `nets` here
    would load torch, which is the very import that fails when memory is too constrained.
    """
    known: list[type[BaseException]] = [RbenchError]
    model_errors = sys.modules.get("nets.errors")
    if model_errors is not None:
        known.append(model_errors.ModelError)
    return tuple(known)


def _one_line_warnings(default):
    """A `warnings.showwarning` that prints rbench's own warnings (a category defined in bench, export or
    nets) as one line `rbench: warning: ...`, and hands every other warning to `default`."""

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.split(".")[0] in ("bench", "export", "nets"):
            click.echo(f"rbench: warning: {_one_line(message)}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; errors become one line on stderr.

    With RBENCH_DEBUG=1 the traceback is printed too, and the exit code stays the same.
    """
    debug = os.environ.get("RBENCH_DEBUG") not in (None, "", "0")
    if argv is not None:
        import shlex

        import bench.records.io

        bench.records.io.COMMAND_OVERRIDE = shlex.join(["rbench", *argv])
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        return _run(argv, debug)


def _fail(line: str, code: int, debug: bool, exc: BaseException | None = None) -> int:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # one of several processes (torchrun)
        from bench.train import distributed
        distributed.write_error_file(line, code, type(exc).__name__ if exc is not None else "")
        if not debug and not distributed.prints_error(exc, code):
            return code  # another process (rank 0, or the launcher) prints this line
    if debug:
        traceback.print_exc()
    click.echo(line, err=True)
    return code


def _run(argv: list[str] | None, debug: bool) -> int:
    try:
        # Outside standalone mode click returns (not raises) the code of a click.exceptions.Exit.
        code = cli.main(args=argv, prog_name="rbench", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        return _fail("rbench: interrupted", 130, debug)
    except KeyboardInterrupt:
        return _fail("rbench: interrupted; nothing half-written was kept", 130, debug)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # a bare `rbench` (or group) gets its help as click prints it, not squashed into one line
        return exc.exit_code
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} --help`)"
        return _fail(f"rbench: error: {_one_line(exc.format_message())}{hint}", exc.exit_code, debug, exc)
    except _known_errors() as exc:
        return _fail(f"rbench: error: {_one_line(exc)}", getattr(exc, "exit_code", 2), debug, exc)
    except (ImportError, MemoryError) as exc:
        if not _short_of_memory(exc):
            raise
        return _fail(f"rbench: error: {_memory_message(exc)}", 1, debug, exc)


#: What the dynamic loader and the C library say when a shared library cannot be mapped for lack of memory.
_MEMORY_CLUES = ("failed to map segment", "cannot allocate memory", "out of memory")


def _short_of_memory(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it came from) failed for lack of memory, not for a missing package."""
    while exc is not None:
        if isinstance(exc, MemoryError) or any(clue in str(exc).lower() for clue in _MEMORY_CLUES):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _memory_message(exc: BaseException) -> str:
    """One line for a library that could not be loaded for lack of memory, naming the limit when one is set."""
    limit = ""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            limit = f"; this process may use only {soft / 2**30:.1f} GiB of address space (ulimit -v)"
    except (ImportError, OSError, ValueError):  # no resource module (Windows) or no such limit
        pass
    return (f"memory is too constrained to load the libraries this command needs ({_one_line(exc)}){limit}; "
            "torch alone maps several GiB: raise the limit or free memory")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
