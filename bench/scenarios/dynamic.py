"""Dynamic vs static convolution, timed interleaved: latency ratio per pair, batch and engine, and training speed.

The dynamic-vs-static table: each dynamic net against its static twin (same family, same input), at each
batch and on each engine, the two timed together in rounds (`bench.measure.run.time_pairs`), so the
ratio's bootstrap interval is over paired rounds. On onnxruntime the loader exports each net for
that one batch (the dynamic net's fast fixed-batch graph; `engine_info.artifact` says which).
Training speed: one optimizer step (forward, backward, Adam) at a training batch on random data,
both nets stepped in alternation, round by round, its ratio the same way. Returns records;
prints and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.errors import UsageProblem

#: The pairs the table times: (dynamic, static, builder kwargs, input side).
DEFAULT_PAIRS = (("dy_resnet20", "resnet20", (), 32), ("dy_vgg11", "vgg11_bn", (("small_input", True),), 32))


@dataclass(frozen=True)
class Pair:
    """A dynamic net and its static twin, built with the same kwargs, timed at one input side."""

    dynamic: str
    static: str
    kwargs: tuple[tuple[str, object], ...] = ()
    input_size: int = 32
    num_classes: int = 10

    @property
    def label(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.kwargs)
        return f"{self.dynamic} / {self.static} ({self.input_size}x{self.input_size}{extra})"

    def build(self, name: str):
        import nets

        return nets.create_model(name, num_classes=self.num_classes, **dict(self.kwargs)).eval()


@dataclass
class TrainTiming:
    """How the training speed is timed: steps per round, rounds, the batch and optimizer."""

    batch: int = 64
    steps: int = 3
    rounds: int = 5
    warmup: int = 2
    lr: float = 1e-3
    seed: int = 0
    threads: int | None = None  # torch's intra-op threads while timing (restored after)


def default_pairs() -> list[Pair]:
    return [Pair(d, s, kw, size) for d, s, kw, size in DEFAULT_PAIRS]


def latency_table(pairs: Sequence[Pair], batches: Sequence[int], engines: Sequence[str], settings, *,
                  threshold: float | None = None, command: str | None = None,
                  on_progress: Callable | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(latency records, comparison records): for every pair, batch and engine, the dynamic net's p50 over its
    static twin's, the two timed interleaved in `settings.rounds` rounds (one `time_pairs` call each)."""
    from bench.engines.sources import resolve_source
    from bench.measure.run import time_pairs

    if not pairs or not batches or not engines:
        raise UsageProblem("name at least one pair, batch and engine")
    latencies, comparisons = [], []
    for pair in pairs:
        shape = (3, pair.input_size, pair.input_size)
        static = resolve_source(pair.build(pair.static), input_shape=shape, name=pair.static)
        dynamic = resolve_source(pair.build(pair.dynamic), input_shape=shape, name=pair.dynamic)
        for batch in batches:
            for engine in engines:
                context = {"label": pair.label, "group": f"{engine} batch {batch}"}
                records, compared = time_pairs([(static, engine, settings.precision),
                                                (dynamic, engine, settings.precision)], batch, settings,
                                               threshold=threshold, command=command, context=context,
                                               on_progress=on_progress)
                latencies += records
                comparisons += compared
    return latencies, comparisons


def _train_step(model, batch: int, shape: tuple[int, ...], classes: int, lr: float, seed: int) -> Callable[[], None]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=generator)
    y = torch.randint(0, classes, (batch,), generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    return step


def training_ratio(pair: Pair, timing: TrainTiming | None = None) -> dict[str, Any]:
    """The dynamic net's training images/s over its static twin's, timed in alternating rounds.

    Returns {"label", "batch", "steps", "rounds", "static_img_s", "dynamic_img_s", "ratio", "ratio_ci"} where
    ratio = dynamic img/s / static img/s (the static step time over the dynamic one; below 1: slower).
    """
    timing = timing or TrainTiming()
    if min(timing.batch, timing.steps, timing.rounds) < 1:
        raise UsageProblem(f"training batch, steps and rounds must be positive; got {timing}")
    from bench.measure.timing import torch_threads

    with torch_threads(timing.threads):
        return _training_ratio(pair, timing)


def _training_ratio(pair: Pair, timing: TrainTiming) -> dict[str, Any]:
    from bench.measure.stats import percentile, ratio_interval
    from bench.measure.timing import time_interleaved

    shape = (3, pair.input_size, pair.input_size)
    steps = {name: _train_step(pair.build(name), timing.batch, shape, pair.num_classes, timing.lr, timing.seed)
             for name in (pair.static, pair.dynamic)}
    times = time_interleaved(steps, warmup=timing.warmup, iters=timing.steps, rounds=timing.rounds, seed=timing.seed)
    # img/s is batch over step time, so dynamic/static img/s is static/dynamic step time.
    ratio, low, high = ratio_interval(times[pair.dynamic], times[pair.static])
    median_s = {name: percentile([ms for samples in rounds for ms in samples], 50) / 1000.0
                for name, rounds in times.items()}
    return {"label": pair.label, "batch": timing.batch, "steps": timing.steps, "rounds": timing.rounds,
            "static_img_s": timing.batch / median_s[pair.static], "dynamic_img_s": timing.batch / median_s[pair.dynamic],
            "ratio": ratio, "ratio_ci": [low, high]}


def parameter_reads(pairs: Sequence[Pair], *, rounds: int = 10, iters: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    """How long reading each net's parameters once takes (a sum over every parameter tensor), the nets of all pairs
    timed interleaved: a floor under any form of the dynamic net, which must read all K kernels per inference.

    Returns one row per net, {"model", "twin" (a dynamic net's static twin, else None), "bytes", "read_ms_p50"}.
    """
    import torch

    from bench.measure.stats import percentile
    from bench.measure.timing import time_interleaved

    params, rows = {}, []
    for pair in pairs:
        for name, twin in ((pair.static, None), (pair.dynamic, pair.static)):
            if name not in params:
                params[name] = [p.detach() for p in pair.build(name).parameters()]
                rows.append({"model": name, "twin": twin,
                             "bytes": sum(p.numel() * p.element_size() for p in params[name])})

    def reader(tensors):
        def read() -> None:
            with torch.inference_mode():
                for t in tensors:
                    t.sum()
        return read
    times = time_interleaved({name: reader(tensors) for name, tensors in params.items()}, warmup=2, iters=iters,
                             rounds=rounds, seed=seed)
    for row in rows:
        row["read_ms_p50"] = percentile([ms for samples in times[row["model"]] for ms in samples], 50)
    return rows


@dataclass
class DynamicComparison:
    """What `rbench dynamic` measures: latency and comparison records per pair, batch and engine; each dynamic
    net's cost split per batch (records); each pair's training-speed row; each net's parameter read time."""

    latencies: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    splits: list[dict[str, Any]]
    training: list[dict[str, Any]]
    reads: list[dict[str, Any]] = field(default_factory=list)


def compare_dynamic(batches: Sequence[int], engines: Sequence[str], *, threads: int = 1, warmup: int = 10,
                    iters: int = 60, rounds: int = 10, train_batch: int = 64, train_steps: int = 2,
                    pairs: Sequence[Pair] | None = None, command: str | None = None,
                    on_stage: Callable[[str], None] = lambda message: None) -> DynamicComparison:
    """The dynamic-vs-static table: every pair timed together per batch and engine (`iters` runs per entry at batch 1 in
    `rounds` rounds, iters / batch at larger batches, at least 2 a round), each dynamic net's cost split per batch
    (eager torch), and the training img/s ratio (`train_steps` Adam steps per net per round; 0 skips it)."""
    from bench.measure.timing import torch_threads

    pairs = list(pairs) if pairs is not None else default_pairs()
    with torch_threads(threads):
        return _compare_dynamic(pairs, batches, engines, threads, warmup, iters, rounds, train_batch, train_steps,
                                command, on_stage)


def _compare_dynamic(pairs, batches, engines, threads, warmup, iters, rounds, train_batch, train_steps, command,
                     on_stage) -> DynamicComparison:
    from bench.measure.run import Settings
    from bench.records.builders import cost_split_record
    from bench.scenarios.dynamic_cost import dynamic_cost_split

    latencies, comparisons = [], []
    for batch in batches:
        per_round = max(2, iters // (rounds * batch))
        settings = Settings(threads=threads, warmup=max(2, warmup // batch), iters=per_round * rounds, rounds=rounds)
        on_stage(f"timing batch {batch} ({per_round * rounds} runs per entry in {rounds} rounds) ...")
        lat, comp = latency_table(pairs, [batch], engines, settings, command=command)
        latencies += lat
        comparisons += comp
    splits = []
    for pair in pairs:
        model = pair.build(pair.dynamic)
        for batch in batches:
            split = dynamic_cost_split(model, (3, pair.input_size, pair.input_size), batch, threads=threads)
            splits.append(cost_split_record(split, model=pair.dynamic, model_config=dict(model.config),
                                            context={"label": pair.label}, command=command))
    training = []
    if train_steps:
        on_stage("timing training steps ...")
        timing = TrainTiming(batch=train_batch, steps=train_steps, threads=threads)
        training = [training_ratio(pair, timing) for pair in pairs]
    on_stage("timing parameter reads ...")
    return DynamicComparison(latencies, comparisons, splits, training, parameter_reads(pairs, rounds=rounds))


def dynamic_markdown(latencies: list[dict[str, Any]], comparisons: list[dict[str, Any]], splits: list[dict[str, Any]],
                     training: list[dict[str, Any]], threads: int, command: str | None,
                     reads: Sequence[dict[str, Any]] = ()) -> str:
    """The latency ratios, training ratios, cost split and parameter reads as Markdown, the command and load above."""
    from bench.records.io import describe_machine

    machine = describe_machine()
    lines = [f"<!-- made by: {command} -->",
             f"Machine: {machine['cpu']}, {machine['cores_usable']} cores; torch {machine['versions']['torch']}, "
             f"onnxruntime {machine['versions']['onnxruntime']}; {threads} intra-op thread(s); "
             + (f"tuning environment: {', '.join(f'{k}={v}' for k, v in machine['tuning_env'].items())}."
                if machine.get("tuning_env") else "no allocator or thread-pool environment variables set."), "",
             "| pair | engine | batch | static p50 ms | dynamic p50 ms | ratio (95% CI) | verdict |",
             "|---|---|---:|---:|---:|---:|---|"]
    for c in comparisons:
        lines.append(f"| {c.get('label')} | {c['candidate']['engine']} | {c['batch']} | "
                     f"{c['baseline']['latency_ms_p50']:.3f} | {c['candidate']['latency_ms_p50']:.3f} | "
                     f"{c['ratio']:.2f}x ({c['ratio_ci'][0]:.2f}-{c['ratio_ci'][1]:.2f}) | {c['verdict']} |")
    if training:
        lines += ["", "| pair | training batch | static img/s | dynamic img/s | dynamic / static img/s (95% CI) |",
                  "|---|---:|---:|---:|---:|"]
        for t in training:
            lines.append(f"| {t['label']} | {t['batch']} | {t['static_img_s']:.1f} | {t['dynamic_img_s']:.1f} | "
                         f"{t['ratio']:.2f} ({t['ratio_ci'][0]:.2f}-{t['ratio_ci'][1]:.2f}) |")
    if splits:
        lines += ["", "Cost split (eager torch; ms summed over the dynamic layers, each part timed apart; extra = "
                      "attention + aggregation + conv - static conv):", "",
                  "| net | batch | form | attention | aggregation | conv | other | layers total | static conv | "
                  "extra | shares attention / aggregation / conv |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for s in splits:
            t, share = s["total_ms"], s["extra_share"]
            forms = ", ".join(sorted({layer["mode"] for layer in s["layers"]}))
            shares = " / ".join("n/a" if share[k] is None else f"{100 * share[k]:.0f}%"
                                for k in ("attention", "aggregation", "conv"))
            lines.append(f"| {s['model']} | {s['batch']} | {forms} | {t['attention']:.2f} | {t['aggregation']:.2f} | "
                         f"{t['conv']:.2f} | {s['other_ms']:.2f} | {t['layer']:.2f} | {t['static_conv']:.2f} | "
                         f"{s['extra_ms']:.2f} | {shares} |")
    if reads:
        lines += ["", "Reading the parameters once (a sum over every parameter tensor, p50, the nets interleaved): "
                      "every form of a dynamic conv reads all K kernels per inference.", "",
                  "| net | parameters MB | read once, ms | vs the static twin's batch-1 p50 |", "|---|---:|---:|---|"]
        twin_p50 = {(c["baseline"].get("model"), c["candidate"]["engine"]): c["baseline"]["latency_ms_p50"]
                    for c in comparisons if c["batch"] == 1}
        for r in reads:
            versus = ", ".join(f"{r['read_ms_p50'] / ms:.2f}x {model}'s {engine} ({ms:.2f} ms)"
                               for (model, engine), ms in twin_p50.items() if model == r["twin"])
            lines.append(f"| {r['model']} | {r['bytes'] / 1e6:.1f} | {r['read_ms_p50']:.2f} | {versus} |")
    loads = [r["load_average_after"][0] for r in latencies if r.get("load_average_after")]
    contended = sum(bool((r.get("contention") or {}).get("contended")) for r in latencies)
    if loads:
        verdict = (f"{contended} of {len(latencies)} timings flagged as contended (bench.measure.contention): the ratios are "
                   "interleaved, so both sides were hit alike, but intervals widen" if contended else
                   "no timing flagged as contended (bench.measure.contention)")
        lines += ["", f"1-minute load average after each latency run: {min(loads):.1f} to {max(loads):.1f} on "
                      f"{machine['cores_usable']} cores, {threads} thread(s) timed; {verdict}."]
    return "\n".join(lines)
