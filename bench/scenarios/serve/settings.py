"""Serving settings: the four LoadGen scenarios, their MLPerf defaults, and rbench's overrides on top.

The order in which a setting is decided, last wins (what `loadgen_settings` builds):
1. MLPerf's own `mlperf.conf`, built into LoadGen, read for the image-classification benchmark (resnet50):
   10 minutes minimum per run, 15 ms Server latency bound at the 99th percentile, 8 samples per
   MultiStream query, 24576 Offline samples, ...
2. Hints measured in the warm-up (expected SingleStream latency, expected Offline QPS), which only size the
   queries LoadGen generates ahead of the run; they change no bound.
3. A `--user-conf` file in LoadGen's own format (`resnet20.Server.target_qps = 400`, `*.*.min_duration = 5000`).
4. The options given on the command line (`ServeConfig`'s fields that are set).

A run whose minimum duration or query count is below MLPerf's is "shortened": LoadGen judges it against
the settings it was given (its VALID/INVALID stays as LoadGen reports it), and rbench adds that it is
not a valid result under MLPerf's rules (`mlperf_rules`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import MissingDependency, UsageProblem

#: rbench's scenario names -> LoadGen's (`mlperf_loadgen.TestScenario`), a closed set as in `test_settings.h`.
SCENARIOS = {"singlestream": "SingleStream", "multistream": "MultiStream", "server": "Server", "offline": "Offline"}
#: The MLPerf benchmark whose `mlperf.conf` lines give the defaults: image classification.
MLPERF_MODEL = "resnet50"
#: Dynamic batching when neither --max-batch nor --batch-timeout-ms is given, per scenario: (max batch, timeout ms).
#: SingleStream has one sample in flight; MultiStream takes its query whole; Server waits briefly for company.
BATCHING_DEFAULTS = {"singlestream": (1, 0.0), "multistream": (None, 0.0), "server": (8, 2.0), "offline": (32, 0.0)}


def import_loadgen():
    """The `mlperf_loadgen` module, or a one-line MissingDependency naming the extra."""
    try:
        import mlperf_loadgen
    except ImportError:
        raise MissingDependency("MLPerf LoadGen (mlperf_loadgen)",
                                "pip install 'rbench[serve]' (or pip install mlcommons-loadgen)") from None
    return mlperf_loadgen


def _opt(help_text: str, default: Any = None) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass
class ServeConfig:
    """How one `rbench serve` run is set up; every field's help is the CLI option's help."""

    scenario: str = _opt("singlestream | multistream | server | offline", "singlestream")
    target_qps: float | None = _opt("Server: queries per second LoadGen issues (Poisson arrivals). "
                                    "[default: LoadGen's 1]")
    latency_bound_ms: float | None = _opt("Server: the latency the 99th percentile must stay under. "
                                          "[default: MLPerf's 15 ms]")
    samples_per_query: int | None = _opt("MultiStream: samples in each query. [default: MLPerf's 8]")
    min_duration_s: float | None = _opt("Shortest run in seconds. [default: MLPerf's 600]")
    min_queries: int | None = _opt("Fewest queries a run issues. [default: MLPerf's, per scenario]")
    user_conf: str | None = _opt("A LoadGen user.conf read after MLPerf's defaults and before these options.")
    max_batch: int | None = _opt("Most samples the SUT runs in one inference (dynamic batching). "
                                 "[default: 1 SingleStream, the query MultiStream, 8 Server, 32 Offline]")
    batch_timeout_ms: float | None = _opt("How long a Server/Offline batch waits for more samples after its first. "
                                          "[default: 2 ms Server, 0 otherwise]")
    workers: int = _opt("Worker threads, each with its own engine session pinned to its own cores.", 1)
    threads: int | None = _opt("Intra-op threads per worker. [default: its share of the usable cores]")
    accuracy: bool = _opt("Run LoadGen's AccuracyOnly mode over the whole test split, and score it.", False)
    find_peak: bool = _opt("Server: search the highest target QPS LoadGen calls VALID.", False)
    search_duration_s: float = _opt("--find-peak: minimum duration of each search step, seconds.", 10.0)
    search_steps: int = _opt("--find-peak: most LoadGen runs in the search.", 10)
    search_tolerance: float = _opt("--find-peak: stop when the INVALID step is within this share above the VALID one.",
                                   0.1)

    def __post_init__(self) -> None:
        self.scenario = str(self.scenario).lower().replace("-", "").replace("_", "")

    def validate(self) -> None:
        """One-line UsageProblem for any setting that cannot be served."""
        if self.scenario not in SCENARIOS:
            raise UsageProblem(f"unknown scenario {self.scenario!r}; choose one of {', '.join(SCENARIOS)}")
        for name, value in (("--target-qps", self.target_qps), ("--latency-bound-ms", self.latency_bound_ms),
                            ("--min-duration", self.min_duration_s), ("--search-duration", self.search_duration_s)):
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise UsageProblem(f"{name} must be a positive number, got {value:g}")
        if self.latency_bound_ms is not None and self.latency_bound_ms * 1e6 < 1:
            raise UsageProblem(f"--latency-bound-ms {self.latency_bound_ms:g} is below LoadGen's 1 ns resolution")
        if self.batch_timeout_ms is not None and (not math.isfinite(self.batch_timeout_ms) or self.batch_timeout_ms < 0):
            raise UsageProblem(f"--batch-timeout-ms must be zero or more, got {self.batch_timeout_ms:g}")
        for name, value in (("--samples-per-query", self.samples_per_query), ("--min-queries", self.min_queries),
                            ("--max-batch", self.max_batch), ("--workers", self.workers), ("--threads", self.threads),
                            ("--search-steps", self.search_steps)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise UsageProblem(f"{name} must be a positive integer, got {value}")
        if not 0 < self.search_tolerance < 1:
            raise UsageProblem(f"--search-tolerance must be between 0 and 1, got {self.search_tolerance:g}")
        only = {"server": (("--target-qps", self.target_qps), ("--latency-bound-ms", self.latency_bound_ms),
                           ("--find-peak", self.find_peak or None)),
                "multistream": (("--samples-per-query", self.samples_per_query),)}
        for scenario, options in only.items():
            for name, value in options:
                if value is not None and self.scenario != scenario:
                    raise UsageProblem(f"{name} applies to --scenario {scenario}, not {self.scenario}")
        if self.find_peak and self.accuracy:
            raise UsageProblem("--find-peak searches performance; run --accuracy on its own")
        if self.user_conf is not None:
            path = Path(self.user_conf)
            if not path.is_file():
                raise UsageProblem(f"--user-conf {path} is not a file")

    @property
    def loadgen_scenario(self) -> str:
        return SCENARIOS[self.scenario]

    def batching(self, samples_per_query: int) -> tuple[int, float]:
        """(max batch, batch timeout in ms) of the SUT for this scenario."""
        batch, timeout = BATCHING_DEFAULTS[self.scenario]
        batch = self.max_batch or batch or samples_per_query
        timeout = self.batch_timeout_ms if self.batch_timeout_ms is not None else timeout
        return int(batch), float(timeout)

    def as_record(self) -> dict[str, Any]:
        """The options that were given (None and False left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v is not False}


def mlperf_defaults(scenario: str) -> dict[str, Any]:
    """MLPerf's settings for `scenario` (LoadGen's built-in mlperf.conf for image classification), as plain data."""
    return read_settings(_base_settings(scenario))


def _base_settings(scenario: str):
    lg = import_loadgen()
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, SCENARIOS[scenario])
    settings.FromConfig("", MLPERF_MODEL, SCENARIOS[scenario], 0)  # conf_type 0: only the built-in mlperf.conf
    return settings


def read_settings(settings) -> dict[str, Any]:
    """The TestSettings fields a record keeps, in rbench's units (ms, s)."""
    return {
        "min_duration_s": settings.min_duration_ms / 1000, "max_duration_s": settings.max_duration_ms / 1000,
        "min_queries": settings.min_query_count, "max_queries": settings.max_query_count,
        "target_qps": settings.server_target_qps, "latency_bound_ms": settings.server_target_latency_ns / 1e6,
        "server_latency_percentile": settings.server_target_latency_percentile,
        "samples_per_query": settings.multi_stream_samples_per_query,
        "singlestream_latency_percentile": settings.single_stream_target_latency_percentile,
        "multistream_latency_percentile": settings.multi_stream_target_latency_percentile,
        "single_stream_expected_latency_ms": settings.single_stream_expected_latency_ns / 1e6,
        "multi_stream_expected_latency_ms": settings.multi_stream_expected_latency_ns / 1e6,
        "offline_expected_qps": settings.offline_expected_qps,
        "performance_sample_count": settings.performance_sample_count_override,
    }


def loadgen_settings(config: ServeConfig, model_key: str, *, expected_latency_s: float | None = None,
                  expected_qps: float | None = None, performance_samples: int | None = None,
                  mode: str | None = None, target_qps: float | None = None,
                  min_duration_s: float | None = None) -> tuple[Any, list[str]]:
    """LoadGen TestSettings for `config` (defaults, hints, user.conf, options; see the module docstring) and
    the list of ways the run is shortened below MLPerf's rules (empty: as MLPerf asks).

    `expected_latency_s` / `expected_qps` are warm-up measurements that only size LoadGen's pre-generated
    queries; `mode` is a `TestMode` name (default from `config.accuracy`); `target_qps` and `min_duration_s`
    override the config's (the peak search's steps).
    """
    lg = import_loadgen()
    scenario = config.loadgen_scenario
    settings = _base_settings(config.scenario)
    defaults = read_settings(settings)
    if performance_samples is not None:  # MLPerf's 1024 is ImageNet's; a smaller test split holds fewer
        settings.performance_sample_count_override = int(performance_samples)
    if expected_latency_s:
        settings.single_stream_expected_latency_ns = int(expected_latency_s * 1e9)
        settings.multi_stream_expected_latency_ns = int(expected_latency_s * 1e9 * settings.multi_stream_samples_per_query)
    if expected_qps:
        settings.offline_expected_qps = float(expected_qps)
    if config.user_conf is not None:
        if settings.FromConfig(str(config.user_conf), model_key, scenario, 1) != 0:
            raise UsageProblem(f"LoadGen could not read --user-conf {config.user_conf} (see its log on stderr)")
    if config.target_qps is not None or target_qps is not None:
        settings.server_target_qps = float(target_qps if target_qps is not None else config.target_qps)
    if config.latency_bound_ms is not None:
        settings.server_target_latency_ns = int(round(config.latency_bound_ms * 1e6))
    if config.samples_per_query is not None:
        settings.multi_stream_samples_per_query = int(config.samples_per_query)
        if expected_latency_s:
            settings.multi_stream_expected_latency_ns = int(expected_latency_s * 1e9 * config.samples_per_query)
    duration = min_duration_s if min_duration_s is not None else config.min_duration_s
    if duration is not None:
        settings.min_duration_ms = int(round(duration * 1000))
    if config.min_queries is not None:
        settings.min_query_count = int(config.min_queries)
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = getattr(lg.TestMode, mode or ("AccuracyOnly" if config.accuracy else "PerformanceOnly"))
    now = read_settings(settings)
    if now["target_qps"] <= 0:
        raise UsageProblem(f"the Server target QPS must be positive, got {now['target_qps']:g} (from --user-conf)")
    shortened = []
    if now["min_duration_s"] < defaults["min_duration_s"]:
        shortened.append(f"min duration {now['min_duration_s']:g} s < MLPerf's {defaults['min_duration_s']:g} s")
    if now["min_queries"] < defaults["min_queries"]:
        shortened.append(f"min queries {now['min_queries']} < MLPerf's {defaults['min_queries']}")
    if scenario == "MultiStream" and now["samples_per_query"] != defaults["samples_per_query"]:
        shortened.append(f"{now['samples_per_query']} samples per query, not MLPerf's {defaults['samples_per_query']}")
    if scenario == "Server" and now["latency_bound_ms"] > defaults["latency_bound_ms"]:
        shortened.append(f"latency bound {now['latency_bound_ms']:g} ms > MLPerf's {defaults['latency_bound_ms']:g} ms")
    return settings, shortened
