"""`rbench list` and `rbench info`: what the model zoo holds, counted without running a net.

Both build models where counting is fastest (`bench.measure.flops.counting_device`: PyTorch's meta
device, no memory or arithmetic, for large inputs), so the whole zoo (resnet1202 and VGGs at
224 included) is counted in seconds. MACs here are
multiply-accumulates counted by thop (what papers call "FLOPs"), as everywhere in rbench;
FLOPs (torch's flop counter) are 2 per MAC where the two counters agree.
"""

from __future__ import annotations

import json

import click

from bench.commands._options import count

ACT_HELP = "activation everywhere in the net: relu, leaky_relu or silu"


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # pipes and tests: do not squeeze the table into 80 columns
        console = Console(width=160)
    return console


def _giga(n: int | float | None) -> str:
    return "-" if n is None else f"{n / 1e9:.3f} G"


def _mega(n: int | float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M"


def zoo_rows(pattern: str | None = None, num_classes: int = 10, in_chans: int = 3) -> list[dict]:
    """One dict per registered model matching `pattern`: name, family, kind, input, params, MACs."""
    import nets
    from bench.measure.flops import model_counts

    # The registry's own checks, before any shape is built from these numbers.
    for setting, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise nets.ModelConfigError(f"{setting} must be a positive integer, got {value!r}")
    rows = []
    for name in nets.list_models(pattern):
        entry = nets.model_entry(name)
        shape = (in_chans, entry.input_size, entry.input_size)
        counts = model_counts(name, shape, num_classes=num_classes, in_chans=in_chans)
        rows.append(dict(name=name, family=entry.family, kind=entry.kind, input_size=entry.input_size,
                         params=counts.params, macs=counts.macs, flops=counts.flops, twin=entry.twin,
                         description=entry.description))
    return rows


@click.command("list")
@click.argument("pattern", required=False)
@click.option("--num-classes", type=int, default=10, show_default=True, help="classifier outputs")
@click.option("--in-chans", type=int, default=3, show_default=True, help="input channels (1 greyscale, 3 RGB)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of a table")
def list_command(pattern: str | None, num_classes: int, in_chans: int, as_json: bool) -> None:
    """Table of the model zoo, optionally only names matching PATTERN ('resnet*', '*vgg*').

    \b
    kind: residual (shortcuts), plain (the same layers, no shortcuts),
          dynamic (dynamic convolution), static (no shortcuts by design).
    MACs: multiply-accumulates of one image at the net's default input size,
          counted by thop, as `rbench flops` and `rbench info` count them
          (`rbench flops NAME` also shows torch's FLOPs and whether they agree).
    """
    from bench.errors import UsageProblem

    rows = zoo_rows(pattern, num_classes, in_chans)
    if not rows:
        raise UsageProblem(f"no model matches {pattern!r}; `rbench list` shows every name")
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    from rich.table import Table

    table = Table(title=f"rbench model zoo ({len(rows)} models, {num_classes} classes, {in_chans} input channels)")
    for col, justify in (("name", "left"), ("family", "left"), ("kind", "left"), ("input", "right"),
                         ("params", "right"), ("MACs", "right"), ("twin", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r["name"], r["family"], r["kind"], f"{r['input_size']}", _mega(r["params"]), _giga(r["macs"]),
                      r["twin"] or "")
    _console().print(table)


def model_info(name: str, input_size: int | None = None, in_chans: int = 3, num_classes: int = 10,
               act: str = "relu", depth: int = 1) -> dict:
    """Everything `rbench info` shows, as data: entry, config, counts and a layer summary."""
    import torch

    import nets
    from bench.errors import UsageProblem
    from bench.measure.flops import counting_device, profile_model

    if name not in nets.list_models():  # any other PyTorch source: torchvision:NAME, package.module:callable
        from bench.engines.sources import resolve_source

        source = resolve_source(name, input_size=input_size, in_chans=None if in_chans == 3 else in_chans,
                                num_classes=None if num_classes == 10 else num_classes)
        if not source.has_module:
            raise UsageProblem(f"{name} is not a PyTorch model; `rbench flops {name} --detail` counts a file's ops")
        entry = None
        shape, size, model = source.input_shape, source.input_shape[1], source.module()
    else:
        entry = nets.model_entry(name)
        size = input_size or entry.input_size
        shape = (in_chans, size, size)
        with torch.device(counting_device(shape)):
            model = nets.create_model(name, num_classes=num_classes, in_chans=in_chans, act=act)

    layers: dict[str, dict] = {}  # filled in call order (pre-hooks), so the table reads like forward()
    hooks = []
    for path, module in model.named_modules():
        if path and path.count(".") < depth:
            def pre_hook(m, args, path=path):
                layers.setdefault(path, dict(name=path, type=type(m).__name__, output=None,
                                             params=sum(p.numel() for p in m.parameters())))

            def hook(m, args, out, path=path):
                if isinstance(out, torch.Tensor):
                    layers[path]["output"] = list(out.shape[1:])
            hooks.append(module.register_forward_pre_hook(pre_hook))
            hooks.append(module.register_forward_hook(hook))
    try:
        report = profile_model(model, shape, detail=True)  # thop runs on a copy, without these hooks
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageProblem(f"{name} cannot take a {size}x{size} input: {first}") from None
    finally:
        for h in hooks:
            h.remove()
    summary = list(layers.values())
    for row in summary:
        row["flops"] = report.flops_by_module.get(row["name"], 0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return dict(name=name, family=entry.family if entry else name.split(":")[0],
                kind=entry.kind if entry else "-", description=entry.description if entry else type(model).__name__,
                twin=entry.twin if entry else None, designed_input_size=entry.input_size if entry else size,
                input_shape=list(shape), config=dict(getattr(model, "config", None) or {}),
                params=report.params, trainable_params=trainable, macs=report.macs, flops=report.flops,
                counters_agree=report.agrees, counters_warning=report.warning, layers=summary)


@click.command("info")
@click.argument("model", metavar="MODEL")
@click.option("--input-size", type=count(1), default=None,
              help="input height = width (default: the size the net is designed for)")
@click.option("--in-chans", type=int, default=3, show_default=True, help="input channels")
@click.option("--num-classes", type=int, default=10, show_default=True, help="classifier outputs")
@click.option("--act", default="relu", show_default=True, help=ACT_HELP)
@click.option("--depth", type=count(1), default=1, show_default=True,
              help="module nesting depth of the layer summary")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
def info_command(model: str, input_size: int | None, in_chans: int, num_classes: int, act: str, depth: int,
                 as_json: bool) -> None:
    """Everything about one MODEL: config, params, MACs (thop) and FLOPs (torch), layers, twin.

    MODEL is a zoo name, torchvision:NAME or package.module:callable.

    Counts are for one image; at large inputs nothing is computed (the meta device).
    """
    info = model_info(model, input_size, in_chans, num_classes, act, depth)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    from rich.table import Table

    console = _console()
    head = Table(title=f"{info['name']}: {info['description']}", show_header=False)
    head.add_column("field", style="bold")
    head.add_column("value")
    twin = info["twin"] or "-"
    fields = [
        ("family", info["family"]), ("kind", info["kind"]), ("twin", twin),
        ("designed input", f"{info['designed_input_size']}x{info['designed_input_size']}"),
        ("input shape", "x".join(map(str, info["input_shape"]))),
        ("config", ", ".join(f"{k}={v}" for k, v in info["config"].items())),
        ("params", f"{info['params']:,} ({_mega(info['params'])})"),
        ("MACs (thop)", f"{info['macs']:,} ({_giga(info['macs'])})"),
        ("FLOPs (torch)", f"{info['flops']:,} ({_giga(info['flops'])})"),
    ]
    if info["counters_warning"]:
        fields.append(("warning", info["counters_warning"]))
    for k, v in fields:
        head.add_row(k, str(v))
    console.print(head)
    layers = Table(title="layers")
    for col, justify in (("module", "left"), ("type", "left"), ("output", "right"), ("params", "right"),
                         ("FLOPs", "right")):
        layers.add_column(col, justify=justify)
    for row in info["layers"]:
        out = "x".join(map(str, row["output"])) if row["output"] else "-"
        layers.add_row(row["name"], row["type"], out, f"{row['params']:,}", f"{row['flops']:,}")
    console.print(layers)
