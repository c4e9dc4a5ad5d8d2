"""rbench serve: the four LoadGen scenarios on torch, ort and openvino at tiny sizes, with LoadGen's real library;
accuracy mode against `rbench accuracy`, the peak search, and every bad setting as one line."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

pytest.importorskip("mlperf_loadgen")

from bench.engines.sources import resolve_source  # noqa: E402
from bench.errors import RbenchError, UsageProblem  # noqa: E402
from bench.records.io import validate_record  # noqa: E402
from bench.scenarios.serve import ModelFailure, ServeConfig, mlperf_defaults, serve  # noqa: E402
from bench.scenarios.serve import run as serve_run  # noqa: E402
from bench.scenarios.serve.settings import loadgen_settings, read_settings  # noqa: E402

#: A run LoadGen finishes in well under a second: few samples, a short minimum, few queries.
TINY = dict(min_duration_s=0.1, min_queries=8)
SCENARIO_OPTIONS = {"singlestream": {}, "multistream": {"samples_per_query": 2}, "server": {"target_qps": 100},
                    "offline": {"max_batch": 4}}


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))


@pytest.fixture(scope="module")
def tiny_source():
    torch.manual_seed(0)
    return resolve_source(_tiny_net(), input_shape=(3, 32, 32), name="tiny")


@pytest.mark.parametrize("engine", ["torch", "ort", "openvino"])
@pytest.mark.parametrize("scenario", list(SCENARIO_OPTIONS))
def test_every_scenario_on_every_cpu_engine(tiny_source, engine, scenario, tmp_path):
    if engine == "openvino":
        pytest.importorskip("openvino")
    config = ServeConfig(scenario=scenario, **TINY, **SCENARIO_OPTIONS[scenario])
    record = serve(tiny_source, engine, config, out=tmp_path, samples=16)
    validate_record(record)
    assert record["kind"] == "serve" and record["scenario"] == scenario and record["engine"] == engine
    assert record["result"] in ("VALID", "INVALID") and record["samples_per_s"] > 0
    assert record["latency_ms_p50"] > 0 and record["latency_ms_p99"] >= record["latency_ms_p50"]
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"):
        assert (tmp_path / name).is_file()
    assert "Scenario : " + config.loadgen_scenario in (tmp_path / "mlperf_log_summary.txt").read_text()
    # A shortened run is never valid under MLPerf's rules, whatever LoadGen says of it.
    assert record["mlperf_valid"] is False and any("min duration" in s for s in record["shortened"])
    assert sum(int(k) * v for k, v in record["batch_sizes"].items()) >= record["queries"]
    if scenario == "multistream":
        assert record["batch_sizes"] == {"2": record["queries"]}
    if scenario == "offline":
        assert max(int(k) for k in record["batch_sizes"]) == 4


def test_defaults_are_mlperf_and_options_override_them(tmp_path):
    server = mlperf_defaults("server")
    assert server["min_duration_s"] == 600 and server["latency_bound_ms"] == 15
    assert mlperf_defaults("multistream")["samples_per_query"] == 8
    conf = tmp_path / "user.conf"
    conf.write_text("tiny.Server.target_qps = 123\n*.Server.min_query_count = 7\n")
    settings, shortened = loadgen_settings(ServeConfig(scenario="server", user_conf=str(conf)), "tiny")
    values = read_settings(settings)
    assert values["target_qps"] == 123 and values["min_queries"] == 7 and values["min_duration_s"] == 600
    assert shortened == ["min queries 7 < MLPerf's 100"]
    settings, _ = loadgen_settings(ServeConfig(scenario="server", user_conf=str(conf), target_qps=50), "tiny")
    assert read_settings(settings)["target_qps"] == 50  # the command line wins over user.conf
    _, shortened = loadgen_settings(ServeConfig(scenario="server"), "tiny")
    assert shortened == []


@pytest.mark.parametrize("config, message", [
    (dict(scenario="server", target_qps=0), "--target-qps must be a positive number"),
    (dict(scenario="server", target_qps=-5), "--target-qps must be a positive number"),
    (dict(scenario="server", latency_bound_ms=0), "--latency-bound-ms must be a positive number"),
    (dict(scenario="server", latency_bound_ms=1e-9), "below LoadGen's 1 ns resolution"),
    (dict(scenario="server", user_conf="/no/such/user.conf"), "--user-conf /no/such/user.conf is not a file"),
    (dict(scenario="offline", target_qps=10), "applies to --scenario server"),
    (dict(scenario="server", min_duration_s=-1), "--min-duration must be a positive number"),
    (dict(scenario="warp"), "unknown scenario"),
])
def test_bad_settings_are_one_line(config, message, tmp_path):
    with pytest.raises(UsageProblem, match=message) as info:
        serve("resnet20", "ort", ServeConfig(**config), out=tmp_path)
    assert "\n" not in str(info.value)


class _FailsAfter(nn.Module):
    """A tiny net whose forward raises from its `limit`-th call on (after the SUT's warm-up)."""

    def __init__(self, limit: int):
        super().__init__()
        self.net, self.calls, self.limit = _tiny_net(), 0, limit

    def forward(self, x):
        self.calls += 1
        if self.calls > self.limit:
            raise RuntimeError("boom\nsecond line")
        return self.net(x)


@pytest.mark.parametrize("scenario", ["server", "offline"])
def test_a_model_failing_inside_the_sut_completes_every_query_then_raises(scenario, tmp_path):
    source = resolve_source(_FailsAfter(limit=12), input_shape=(3, 32, 32), name="fails")
    config = ServeConfig(scenario=scenario, **TINY, **SCENARIO_OPTIONS[scenario])
    with pytest.raises(ModelFailure, match="the model failed inside the SUT .*boom second line") as info:
        serve(source, "torch", config, out=tmp_path, samples=16)
    assert "\n" not in str(info.value)
    assert "Result is" in (tmp_path / "mlperf_log_summary.txt").read_text()  # LoadGen finished its run


def test_a_model_failing_at_warm_up_stops_before_loadgen(tmp_path):
    source = resolve_source(_FailsAfter(limit=0), input_shape=(3, 32, 32), name="fails")
    with pytest.raises(ModelFailure, match="before LoadGen started"):
        serve(source, "torch", ServeConfig(**TINY), out=tmp_path, samples=4)
    assert not (tmp_path / "mlperf_log_summary.txt").exists()


def test_accuracy_mode_equals_rbench_accuracy(trained_digits_run, tmp_path):
    from bench.accuracy.evaluate import dataset_for_checkpoint, evaluate_checkpoint, load_trained_model

    checkpoint = trained_digits_run / "best.pt"
    record = serve("resnet20", "ort", ServeConfig(scenario="offline", accuracy=True), out=tmp_path,
                   checkpoint=checkpoint, samples=60)
    trained = load_trained_model(checkpoint, "resnet20")
    [expected] = evaluate_checkpoint(trained, dataset_for_checkpoint(trained, subset=60), engines=("ort",))
    assert record["samples"] == expected["samples"] == 60
    assert record["top1"] == expected["top1"]  # to the image
    assert record["agreement"] == 1.0 and record["reference_engine"] == "torch fp32"
    logged = json.loads((tmp_path / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in logged) == list(range(60))


def test_peak_search_brackets_the_highest_valid_qps(tiny_source, tmp_path, monkeypatch):
    def fake_run(lg, system, served, config, model_key, hints, folder, target_qps):
        folder.mkdir(parents=True)
        (folder / "mlperf_log_summary.txt").write_text("stand-in")
        return {"target_qps": target_qps, "result": "VALID" if target_qps <= 300 else "INVALID", "result_reasons": [],
                "samples_per_s": target_qps, "latency_ms_p99": 1.0, "queries": 10,
                "loadgen_files": {"mlperf_log_summary.txt": str(folder / "mlperf_log_summary.txt")}}

    monkeypatch.setattr(serve_run, "_one_run", fake_run)
    best, steps = serve_run._peak_search(None, None, None, ServeConfig(scenario="server", find_peak=True), "tiny",
                                         {}, tmp_path, capacity_qps=1000)
    qps = [s["target_qps"] for s in steps]
    assert qps[:2] == [500, 250] and best["target_qps"] <= 300
    invalid_above = min(q for q in qps if q > best["target_qps"])
    assert invalid_above / best["target_qps"] - 1 <= 0.1


def test_peak_search_real_steps_write_loadgen_summaries(tiny_source, tmp_path):
    config = ServeConfig(scenario="server", find_peak=True, search_duration_s=0.1, search_steps=2, min_queries=8,
                         latency_bound_ms=1000)
    record = serve(tiny_source, "ort", config, out=tmp_path, samples=8)
    validate_record(record)
    assert record["mode"] == "find_peak" and len(record["peak_search"]) == 2
    for step in record["peak_search"]:
        assert "Result is : " + step["result"] in (tmp_path / step["loadgen_dir"] /
                                                   "mlperf_log_summary.txt").read_text()


def test_trt_is_guarded_without_a_gpu(tmp_path):
    try:
        import tensorrt  # noqa: F401
        if torch.cuda.is_available():
            pytest.skip("TensorRT and a GPU are here: the trt path runs for real")
    except ImportError:
        pass
    with pytest.raises(RbenchError) as info:
        serve("resnet20", "trt", ServeConfig(**TINY), out=tmp_path, samples=4)
    assert "\n" not in str(info.value)


def test_cli_prints_the_table_and_appends_the_record(run_cli, results_dir, tmp_path):
    code, out, err = run_cli("serve", "resnet20", "--scenario", "offline", "--engine", "ort", "--samples", "8",
                             "--min-duration", "0.1", "--min-queries", "8", "--out", tmp_path / "lg",
                             "--results-dir", results_dir, "-q")
    assert code == 0, err
    assert "offline" in out and "not valid under MLPerf's rules" in out
    [line] = (results_dir / "serve.jsonl").read_text().splitlines()
    assert json.loads(line)["loadgen_files"]["mlperf_log_summary.txt"].startswith(str(tmp_path / "lg"))


@pytest.mark.parametrize("args, message", [
    (("--scenario", "server", "--target-qps", "0"), "--target-qps must be a positive number"),
    (("--scenario", "server", "--user-conf", "/no/user.conf"), "is not a file"),
])
def test_cli_bad_settings_exit_2_with_one_line(run_cli, args, message, tmp_path):
    code, _, err = run_cli("serve", "resnet20", *args, "--out", tmp_path, "--no-save")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
