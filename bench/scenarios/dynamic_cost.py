"""Where a dynamic-convolution net's extra latency goes: attention, kernel aggregation, convolution.

Every `nets.layers.DynamicConv2d` of a net is run on the input it sees in one forward pass, and
its parts are timed apart, interleaved in rounds on the same inputs (eager PyTorch, the engine
"torch" at this batch): the attention branch (`attention`), the aggregation (the per-sample
kernels, `aggregate_kernels`; in mode "expand" the attention-weighted sum of the K outputs,
`mix_outputs`; in mode "chunked" the kernel blocks, `chunk_kernel`), the convolution in the form
the layer runs at this batch, the whole layer, and the static convolution the static twin runs
in its place (the layer's first kernel, same shape). The layer's extra cost over the static twin
is then attention + aggregation + (convolution - static convolution). FLOPs per part come from
`torch.utils.flop_counter.FlopCounterMode` on the same calls (2 per multiply-accumulate; thop's rule
in `bench.measure.flops` counts the same conv and aggregation MACs).
Returns data; prints nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.errors import UsageProblem
from bench.measure.stats import percentile

#: The parts of one DynamicConv2d, in the order a table shows them; "layer" is the whole forward and
#: "static_conv" the static twin's conv at the same shape (not a part of the layer).
PARTS = ("attention", "aggregation", "conv", "layer", "static_conv")
#: The parts whose times add up to the layer's.
SUMMED_PARTS = ("attention", "aggregation", "conv")


def _layer_inputs(model, x) -> list[tuple[str, Any, Any]]:
    """(name, layer, its input) for every DynamicConv2d that `model(x)` runs, in the order it runs them."""
    import torch

    from nets.layers import DynamicConv2d

    seen: list[tuple[str, Any, Any]] = []
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: seen.append((name, m, args[0].detach())))
             for name, m in model.named_modules() if isinstance(m, DynamicConv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def layer_parts(layer, x) -> tuple[str, dict[str, Callable[[], Any]]]:
    """The form `layer` runs `x` in, and one no-argument callable per part of `PARTS` on `x`.

    The aggregation and convolution callables start from the attention (and the kernels) computed
    once here, so each times its own work only.
    """
    import torch
    import torch.nn.functional as F

    mode = layer.resolved_mode(x)
    attn = layer.attention(x)
    static_bias = layer.bias[0] if layer.bias is not None else None
    parts: dict[str, Callable[[], Any]] = {"attention": lambda: layer.attention(x)}
    if mode == "chunked":
        # Aggregation and matmul alternate block by block; timed apart, each over all the blocks, so the kernel
        # blocks no longer meet in cache and the parts may add up to more than the layer ("other" below zero).
        bounds = layer.chunk_bounds(x)
        kernels = [layer.chunk_kernel(attn, start, stop) for start, stop in bounds]

        def conv():
            cols_t, out_hw = layer.chunk_columns(x)
            return layer.chunk_output([torch.bmm(cols_t, k.transpose(1, 2)) for k in kernels], attn, out_hw)
        parts["aggregation"] = lambda: [layer.chunk_kernel(attn, start, stop) for start, stop in bounds]
        parts["conv"] = conv
    elif mode == "expand":
        expanded = layer.expand_conv(x)
        parts["aggregation"] = lambda: layer.mix_outputs(expanded, attn)
        parts["conv"] = lambda: layer.expand_conv(x)
    else:
        weight, bias = layer.aggregate_kernels(attn)
        conv = layer.grouped_conv if mode == "grouped" else layer.unfold_conv
        parts["aggregation"] = lambda: layer.aggregate_kernels(attn)
        parts["conv"] = lambda: conv(x, weight, bias)
    parts["layer"] = lambda: layer(x)
    parts["static_conv"] = lambda: F.conv2d(x, layer.weight[0], static_bias, layer.stride, layer.padding,
                                            layer.dilation)
    return mode, parts


def _flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _synchronized(fn: Callable[[], Any]) -> Callable[[], Any]:
    import torch

    def call() -> None:
        fn()
        torch.cuda.synchronize()  # the queued GPU work inside the time
    return call


def dynamic_cost_split(model, input_shape: Sequence[int], batch: int = 1, *, warmup: int = 3, iters: int = 10,
                       rounds: int = 5, threads: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Time and count the parts of every DynamicConv2d of `model` (eval mode, eager PyTorch, CPU or its device).

    Args:
        model: an nn.Module holding DynamicConv2d layers (a zoo net, trained or not).
        input_shape: (C, H, W) of one image.
        batch: the batch the layers see (the form "auto" picks depends on it).
        warmup, iters, rounds: untimed calls per part, then `rounds` interleaved rounds of `iters` timed calls.
        threads: torch's intra-op threads for the run (restored after); None keeps the current setting.
        seed: the random input and the order of the parts in each round.

    Returns:
        {"batch", "input_shape", "threads", "iters", "rounds", "layers": [per layer: name, mode, shape,
        "ms": {part: median ms}, "flops": {part: FLOPs}], "total_ms": {part: sum over layers},
        "total_flops": {...}, "parts_sum_ms" (attention + aggregation + conv), "extra_ms" (that minus
        static_conv: the layers' cost over the static twin's convs), "extra_share": {attention, aggregation,
        conv: its share of extra_ms, the conv's own being conv - static_conv}, "other_ms" (layer minus the
        three parts: the layer's own overhead around them)}.

    Raises:
        UsageProblem: `model` holds no DynamicConv2d, or the settings are not positive.
    """
    import torch

    from bench.measure.timing import time_interleaved, torch_threads
    from nets import uses_dynamic_conv

    if not uses_dynamic_conv(model):
        raise UsageProblem(f"{type(model).__name__} has no DynamicConv2d layer: the cost split is for dynamic-convolution "
                           "nets (dy_resnet20, dy_vgg11, ...)")
    if min(batch, iters, rounds) < 1 or warmup < 0:
        raise UsageProblem(f"batch, iters and rounds must be positive and warmup not negative; got batch={batch}, "
                           f"iters={iters}, rounds={rounds}, warmup={warmup}")
    if len(input_shape) != 3:
        raise UsageProblem(f"input_shape is (C, H, W) of one image; got {tuple(input_shape)}")
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads):
            used_threads = torch.get_num_threads()
            param = next(model.parameters())
            generator = torch.Generator().manual_seed(seed)
            x = torch.randn(batch, *input_shape, generator=generator).to(param.device, param.dtype)
            with torch.no_grad():
                layers = _layer_inputs(model, x)
                found = [(name, layer, inp, *layer_parts(layer, inp)) for name, layer, inp in layers]
                calls = {(i, part): _synchronized(fn) if x.is_cuda else fn
                         for i, (*_, parts) in enumerate(found) for part, fn in parts.items()}
                rounds_ms = time_interleaved(calls, warmup=warmup, iters=iters, rounds=rounds, seed=seed)
                times = {key: [ms for samples in per_round for ms in samples] for key, per_round in rounds_ms.items()}
                rows = []
                for i, (name, layer, inp, mode, parts) in enumerate(found):
                    rows.append({"name": name, "mode": mode, "input_shape": list(inp.shape),
                                 "kernels": layer.kernels, "out_channels": layer.out_channels,
                                 "ms": {part: percentile(times[(i, part)], 50) for part in PARTS},
                                 "flops": {part: _flops(parts[part]) for part in PARTS}})
    finally:
        model.train(was_training)
    return summarize_split(rows, batch=batch, input_shape=list(input_shape), threads=used_threads,
                           iters=iters, rounds=rounds)


def summarize_split(rows: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    """The per-layer rows with their sums over the net, and the extra cost's split (see `dynamic_cost_split`)."""
    total_ms = {part: sum(r["ms"][part] for r in rows) for part in PARTS}
    total_flops = {part: sum(r["flops"][part] for r in rows) for part in PARTS}
    parts_sum = sum(total_ms[p] for p in SUMMED_PARTS)
    # What the layer's own forward adds around its parts: choosing the form, reshapes, allocating the kernels.
    other = total_ms["layer"] - parts_sum
    extra = {"attention": total_ms["attention"], "aggregation": total_ms["aggregation"],
             "conv": total_ms["conv"] - total_ms["static_conv"]}
    extra_ms = sum(extra.values())
    share = {part: (value / extra_ms if extra_ms > 0 else None) for part, value in extra.items()}
    return {**settings, "layers": rows, "total_ms": total_ms, "total_flops": total_flops, "parts_sum_ms": parts_sum,
            "other_ms": other, "extra_ms": extra_ms, "extra_ms_by_part": extra, "extra_share": share}
