"""bench.scenarios.dynamic_cost: the cost split of dynamic-conv nets (tiny inputs, one timed call per part)."""

from __future__ import annotations

import pytest
import torch

import nets
from bench.errors import UsageProblem
from bench.records.builders import cost_split_record
from bench.records.io import validate_record
from bench.scenarios.dynamic_cost import PARTS, SUMMED_PARTS, dynamic_cost_split, layer_parts, summarize_split
from bench.studies import dynamic as report
from nets import DynamicConv2d, dynamic_conv_mode

TINY = dict(warmup=0, iters=2, rounds=2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name, kwargs, shape", [("dy_resnet20", {}, (3, 8, 8)),
                                                 ("dy_vgg11", {"small_input": True}, (3, 16, 16))])
@pytest.mark.parametrize("batch", [1, 2])
def test_split_covers_every_dynamic_layer_and_its_flops(name, kwargs, shape, batch):
    model = nets.create_model(name, num_classes=10, **kwargs)
    split = dynamic_cost_split(model, shape, batch, **TINY)
    layers = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    assert len(split["layers"]) == len(layers)
    for row in split["layers"]:
        assert set(row["ms"]) == set(PARTS) and all(v > 0 for v in row["ms"].values())
        # The parts are the layer's own calls: their FLOPs add up to the whole layer's, exactly.
        assert sum(row["flops"][p] for p in SUMMED_PARTS) == row["flops"]["layer"]
        assert row["flops"]["attention"] > 0 and row["flops"]["aggregation"] > 0
    total = split["total_ms"]
    # Timing, loosely: three parts of every layer sum to about the layers' total (medians, no tight bound).
    assert 0.25 * total["layer"] < split["parts_sum_ms"] < 4 * total["layer"]
    assert split["other_ms"] == pytest.approx(total["layer"] - split["parts_sum_ms"])
    assert model.training  # restored


def test_grouped_parts_are_the_layer_in_grouped_and_unfold_form():
    layer = DynamicConv2d(4, 6, 3, padding=1, kernels=3).eval()
    x = torch.randn(2, 4, 5, 5)
    for mode in ("grouped", "unfold"):
        layer.mode = mode
        with torch.no_grad():
            form, parts = layer_parts(layer, x)
            attn = parts["attention"]()
            out = (layer.grouped_conv if mode == "grouped" else layer.unfold_conv)(x, *layer.aggregate_kernels(attn))
            assert form == mode
            torch.testing.assert_close(out, layer(x))
            torch.testing.assert_close(parts["conv"](), layer(x))


def test_expand_form_splits_into_the_wide_conv_and_the_output_mix():
    layer = DynamicConv2d(4, 6, 3, padding=1, kernels=3, mode="expand").eval()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        form, parts = layer_parts(layer, x)
        assert form == "expand"
        assert parts["conv"]().shape == (2, 18, 5, 5)  # K * C_out channels
        torch.testing.assert_close(parts["aggregation"](), layer(x))


def test_static_conv_is_the_first_kernel_as_nn_conv2d():
    layer = DynamicConv2d(4, 6, 3, padding=1, kernels=2).eval()
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    conv.weight.data.copy_(layer.weight[0])
    conv.bias.data.copy_(layer.bias[0])
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(layer_parts(layer, x)[1]["static_conv"](), conv(x))


def test_mode_is_the_one_the_layer_runs():
    model = nets.create_model("dy_resnet20", num_classes=10)
    with dynamic_conv_mode(model, "unfold"):
        split = dynamic_cost_split(model, (3, 8, 8), 1, **TINY)
    assert {row["mode"] for row in split["layers"]} == {"unfold"}


def test_net_without_dynamic_conv_is_a_one_line_error():
    with pytest.raises(UsageProblem, match="no DynamicConv2d") as info:
        dynamic_cost_split(nets.create_model("resnet20", num_classes=10), (3, 8, 8), 1, **TINY)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [dict(batch=0), dict(iters=0), dict(rounds=0), dict(warmup=-1)])
def test_bad_settings_are_refused(bad):
    model = nets.create_model("dy_resnet20", num_classes=10)
    with pytest.raises(UsageProblem):
        dynamic_cost_split(model, (3, 8, 8), **{**dict(batch=1, **TINY), **bad})


def test_extra_cost_split_arithmetic():
    rows = [{"ms": {"attention": 1.0, "aggregation": 2.0, "conv": 5.0, "layer": 9.0, "static_conv": 4.0},
             "flops": dict.fromkeys(PARTS, 0)}] * 2
    split = summarize_split(rows, batch=1)
    assert split["parts_sum_ms"] == 16.0 and split["other_ms"] == 2.0
    assert split["extra_ms_by_part"] == {"attention": 2.0, "aggregation": 4.0, "conv": 2.0}
    assert split["extra_ms"] == 8.0
    assert split["extra_share"] == {"attention": 0.25, "aggregation": 0.5, "conv": 0.25}


def test_record_and_report_table():
    model = nets.create_model("dy_resnet20", num_classes=10)
    split = dynamic_cost_split(model, (3, 8, 8), 1, **TINY)
    record = cost_split_record(split, model="dy_resnet20", model_config={"name": "dy_resnet20"},
                               context={"unit": "dyresnet20-relu", "study": "dynamic", "label": "dy_resnet20 K=4",
                                        "group": "ResNet dynamic"}, command="test")
    validate_record(record)
    assert record["kind"] == "cost_split" and record["engine"] == "torch"
    text, findings = report.cost_split_table([record])
    assert "Where the time goes" in text and "dy_resnet20 K=4" in text
    assert len(findings) == (1 if split["extra_ms"] > 0 else 0)
    assert report.cost_split_table([]) == ("", [])


def test_chunked_form_splits_into_kernel_blocks_and_their_matmuls():
    layer = DynamicConv2d(4, 20, 3, padding=1, kernels=3, mode="chunked").eval()
    x = torch.randn(2, 4, 2, 2)
    with torch.no_grad():
        form, parts = layer_parts(layer, x)
        assert form == "chunked" and len(layer.chunk_bounds(x)) >= 1
        torch.testing.assert_close(parts["conv"](), layer(x))
        blocks = parts["aggregation"]()
        assert sum(b.shape[1] for b in blocks) == 20
    split = summarize_split([{"ms": dict.fromkeys(PARTS, 1.0), "flops": dict.fromkeys(PARTS, 0)}])
    assert split["parts_sum_ms"] == 3.0
