"""bench.scenarios.dynamic and `rbench dynamic`: the interleaved dynamic-vs-static table (tiny nets, few runs)."""

from __future__ import annotations

import pytest

from bench.errors import UsageProblem
from bench.measure.run import Settings
from bench.scenarios.dynamic import Pair, TrainTiming, default_pairs, dynamic_markdown, latency_table, training_ratio

TINY = Pair("dy_resnet20", "resnet20", (), 8)


def test_default_pairs_are_the_issue_pairs_and_build():
    pairs = default_pairs()
    assert [(p.dynamic, p.static) for p in pairs] == [("dy_resnet20", "resnet20"), ("dy_vgg11", "vgg11_bn")]
    vgg = pairs[1]
    assert "small_input=True" in vgg.label and vgg.build(vgg.static).config.get("small_input") is True


def test_latency_table_compares_the_dynamic_net_with_its_twin_per_engine():
    settings = Settings(warmup=0, iters=4, rounds=2, threads=1)
    latencies, comparisons = latency_table([TINY], [1], ["torch"], settings, command="test")
    assert [r["model"] for r in latencies] == ["resnet20", "dy_resnet20"]
    (c,) = comparisons
    assert c["baseline"]["model"] == "resnet20" and c["candidate"]["model"] == "dy_resnet20"
    assert c["label"] == TINY.label and c["ratio_ci"][0] <= c["ratio_ci"][1]
    text = dynamic_markdown(latencies, comparisons, [], [], 1, "test")
    assert TINY.label in text and "| torch | 1 |" in text


def test_latency_table_refuses_an_empty_request():
    with pytest.raises(UsageProblem):
        latency_table([], [1], ["torch"], Settings())


def test_training_ratio_is_dynamic_over_static_img_s():
    row = training_ratio(TINY, TrainTiming(batch=2, steps=1, rounds=2, warmup=0, threads=1))
    assert row["ratio"] == pytest.approx(row["dynamic_img_s"] / row["static_img_s"], rel=0.5)
    assert row["static_img_s"] > 0 and row["dynamic_img_s"] > 0
    assert row["ratio_ci"][0] <= row["ratio_ci"][1]


def test_training_ratio_refuses_zero_steps():
    with pytest.raises(UsageProblem):
        training_ratio(TINY, TrainTiming(steps=0))


def test_cli_refuses_a_bad_batch_in_one_line(run_cli, tmp_path):
    code, _, err = run_cli("dynamic", "--batch", "0", "--out", tmp_path / "d")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_compare_dynamic_returns_every_part_of_the_table():
    from bench.scenarios.dynamic import compare_dynamic

    stages = []
    result = compare_dynamic([1], ["torch"], warmup=0, iters=4, rounds=2, train_batch=2, train_steps=1, pairs=[TINY],
                             command="test", on_stage=stages.append)
    assert [r["model"] for r in result.latencies] == ["resnet20", "dy_resnet20"]
    assert len(result.comparisons) == 1 and result.comparisons[0]["label"] == TINY.label
    (split,) = result.splits
    assert split["kind"] == "cost_split" and split["model"] == "dy_resnet20" and split["batch"] == 1
    (train,) = result.training
    assert train["label"] == TINY.label and train["ratio"] > 0
    assert stages == ["timing batch 1 (4 runs per entry in 2 rounds) ...", "timing training steps ...",
                      "timing parameter reads ..."]
    static, dynamic = result.reads
    assert (static["model"], static["twin"], dynamic["model"], dynamic["twin"]) == ("resnet20", None, "dy_resnet20",
                                                                                    "resnet20")
    # K=4 kernels per dynamic conv plus its attention: about 4x the bytes (an independent count from the builders).
    import nets

    for row in result.reads:
        assert row["bytes"] == 4 * sum(p.numel() for p in nets.create_model(row["model"], num_classes=10).parameters())
        assert row["read_ms_p50"] > 0
    assert 3.5 < dynamic["bytes"] / static["bytes"] < 4.5
    text = dynamic_markdown(result.latencies, result.comparisons, result.splits, result.training, 1, "test", result.reads)
    assert "Cost split" in text and "| dy_resnet20 | 1 |" in text
    static_p50 = result.comparisons[0]["baseline"]["latency_ms_p50"]
    assert (f"| dy_resnet20 | {dynamic['bytes'] / 1e6:.1f} | {dynamic['read_ms_p50']:.2f} | "
            f"{dynamic['read_ms_p50'] / static_p50:.2f}x resnet20's torch ({static_p50:.2f} ms) |") in text
