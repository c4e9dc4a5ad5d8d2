"""bench.measure.onnx_flops counts what torch's flop counter counts, from an exported ONNX graph alone.

The reference is `torch.utils.flop_counter.FlopCounterMode` on the same module and input: independent code
(aten dispatch, not ONNX shapes). Exports use plain `torch.onnx.export` with the TorchScript exporter, not
rbench's exporter, so a bug there cannot hide one here; every zoo net exports with it, dynamic convolution
included, so no net needs dynamo (one test checks a dynamo graph too).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper
from torch.utils.flop_counter import FlopCounterMode

import nets
from bench.measure.onnx_flops import COUNTER, OnnxFlopsReport, count_onnx_flops

#: Too deep for a CPU test (as in tests/export/test_zoo_export.py), and the big dynamic nets: 38-81M parameters
#: whose export takes 2-7 s each, the same DynamicConv2d graph as dy_resnet20 and dy_vgg11, which are tested.
SLOW = {"resnet1202", "plain1202", "resnet152", "plain152", "resnet101", "plain101",
        "dy_resnet18", "dy_vgg13", "dy_vgg16", "dy_vgg19"}

SHAPE = (3, 32, 32)


def build(name: str) -> nn.Module:
    # VGGs get their CIFAR head: the ImageNet head is ~120M parameters of FC at any input size.
    kwargs = {"small_input": True} if nets.model_entry(name).family == "vgg" else {}
    return nets.create_model(name, num_classes=10, **kwargs).eval()


def torch_flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def export(model: nn.Module, x, path, dynamic_hw: bool = False, input_names=("input",)) -> str:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer warnings
        torch.onnx.export(model, x if isinstance(x, tuple) else (x,), str(path), dynamo=False, opset_version=17,
                          input_names=list(input_names), output_names=["logits"],
                          dynamic_axes={name: axes for name in input_names})
    return str(path)


@pytest.fixture(scope="module")
def resnet20_onnx(tmp_path_factory) -> str:
    return export(build("resnet20"), torch.randn(1, *SHAPE), tmp_path_factory.mktemp("onnx") / "resnet20.onnx")


@pytest.mark.parametrize("name", [n for n in nets.list_models() if n not in SLOW])
def test_zoo_matches_torch_flop_counter(name, tmp_path):
    model, x = build(name), torch.randn(1, *SHAPE)
    report = count_onnx_flops(export(model, x, tmp_path / f"{name}.onnx"))
    assert report.complete and report.uncounted == {}
    # Exactly equal: both count conv/linear/matmul MACs x 2 and nothing else; the batched matmuls of dynamic
    # convolution and self-attention are MatMul nodes in ONNX and bmm/mm in aten.
    assert report.flops == pytest.approx(torch_flops(model, x), rel=1e-6)
    assert report.flops == 2 * report.macs == sum(report.by_op_type.values())
    assert 0 < report.params <= sum(p.numel() for p in model.parameters())  # BatchNorm is folded into the convs


def test_dynamo_graph_counts_the_same(tmp_path):
    pytest.importorskip("onnxscript")  # the dynamo exporter's dependency
    model, x = build("dy_resnet20"), torch.randn(1, *SHAPE)
    path = tmp_path / "dy_resnet20.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)
    assert count_onnx_flops(path).flops == torch_flops(model, x)


@pytest.mark.parametrize("name", ["resnet20", "dy_resnet20"])  # dy_resnet20 reshapes by the batch read from x.shape
def test_flops_scale_with_batch(name, tmp_path):
    path = export(build(name), torch.randn(1, *SHAPE), tmp_path / f"{name}.onnx")
    one, four = count_onnx_flops(path), count_onnx_flops(path, batch=4)
    assert four.batch == 4 and four.flops == 4 * one.flops and four.params == one.params


def test_grouped_and_depthwise_conv_by_hand():
    # x (1, 8, 15, 15) -> grouped conv (16 out, 4 groups, 3x3, stride 2, pad 1, no bias) -> (1, 16, 8, 8)
    #                  -> depthwise conv (16 groups, 5x5, pad 2, bias) -> (1, 16, 8, 8)
    w1 = np.ones((16, 2, 3, 3), np.float32)
    w2, b2 = np.ones((16, 1, 5, 5), np.float32), np.ones(16, np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["y1"], group=4, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["y1", "w2", "b2"], ["y2"], group=16, kernel_shape=[5, 5], pads=[2, 2, 2, 2])]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 15, 15])],
                              [helper.make_tensor_value_info("y2", TensorProto.FLOAT, None)],
                              [onnx.numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b2, "b2"))])
    report = count_onnx_flops(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), batch=3)
    h_out = (15 + 2 * 1 - 3) // 2 + 1  # 8
    grouped = 3 * 16 * h_out * h_out * (8 // 4) * 3 * 3  # N * C_out * H_out * W_out * C_in/group * kH * kW
    depthwise = 3 * 16 * h_out * h_out * 1 * 5 * 5
    assert report.macs == grouped + depthwise == 3 * (18432 + 25600)
    assert report.flops == 2 * report.macs and report.by_op_type == {"Conv": report.flops}
    assert report.params == 16 * 2 * 9 + 16 * 25 + 16 and report.input_shape == [8, 15, 15]


class LayerKinds(nn.Module):
    """ConvTranspose (grouped), einsum (one summing a letter out first), batched and broadcast matmul, Linear on 4-D."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.proj = nn.Parameter(torch.randn(5, 256))
        self.mix = nn.Parameter(torch.randn(3, 6, 2))
        self.fc = nn.Linear(2, 7, bias=False)
        self.head = nn.Parameter(torch.randn(5, 3))

    def forward(self, x):  # (N, 4, 8, 8)
        t = self.up(x).flatten(2)  # (N, 6, 256)
        a = torch.einsum("bcl,dl->bcd", t, self.proj)  # (N, 6, 5)
        b = torch.einsum("bij,bkj->bik", a, a)  # (N, 6, 6): batched
        c = torch.matmul(b.unsqueeze(1), self.mix)  # (N, 1, 6, 6) @ (3, 6, 2): broadcast -> (N, 3, 6, 2)
        d = torch.einsum("bcd,de->be", a, self.head)  # c is summed out of `a` first (no MACs), then (N, 5) @ (5, 3)
        return torch.cat([self.fc(c).flatten(1), d], 1)  # Linear on (N, 3, 6, 2): a MatMul, not a Gemm


def test_other_layer_kinds_match_torch(tmp_path):
    model, x = LayerKinds().eval(), torch.randn(1, 4, 8, 8)
    path = export(model, x, tmp_path / "kinds.onnx")
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"ConvTranspose", "Einsum", "MatMul"} <= ops
    for batch in (1, 2):
        report = count_onnx_flops(path, batch=batch)
        assert report.complete and report.flops == torch_flops(model, torch.randn(batch, 4, 8, 8))


def test_symbolic_height_width_need_input_shape(tmp_path):
    model = build("resnet20")
    path = export(model, torch.randn(1, *SHAPE), tmp_path / "hw.onnx", dynamic_hw=True)
    with pytest.raises(ValueError, match="symbolic height/width; give input_shape"):
        count_onnx_flops(path)
    report = count_onnx_flops(path, input_shape=(3, 40, 48))
    assert report.input_shape == [3, 40, 48] and report.complete
    assert report.flops == torch_flops(model, torch.randn(1, 3, 40, 48))


def test_input_shape_must_agree_with_fixed_dims(resnet20_onnx):
    assert count_onnx_flops(resnet20_onnx, input_shape=SHAPE).flops == count_onnx_flops(resnet20_onnx).flops
    with pytest.raises(ValueError, match="conflicts"):
        count_onnx_flops(resnet20_onnx, input_shape=(3, 64, 64))


def test_two_inputs_are_rejected(tmp_path):
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x, y):
            return self.conv(x) + self.conv(y)

    x = torch.randn(1, 3, 8, 8)
    path = export(TwoInputs(), (x, x), tmp_path / "two.onnx", input_names=("x", "y"))
    with pytest.raises(ValueError, match="exactly one graph input") as info:
        count_onnx_flops(path)
    assert "\n" not in str(info.value)


def test_corrupt_file_is_a_one_line_value_error(tmp_path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not an ONNX model") as info:
        count_onnx_flops(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_the_callers_model_is_not_mutated(resnet20_onnx):
    model = onnx.load(resnet20_onnx)
    before = model.SerializeToString()
    report = count_onnx_flops(model, batch=2)
    assert model.SerializeToString() == before
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert report.flops == 2 * count_onnx_flops(resnet20_onnx).flops


def test_external_data_is_not_needed(resnet20_onnx, tmp_path):
    # Weights saved beside the graph: the counter reads their dims from the graph and never opens the data file.
    model = onnx.load(resnet20_onnx)
    path = tmp_path / "external.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    expected = count_onnx_flops(resnet20_onnx)
    report = count_onnx_flops(path)
    assert (report.flops, report.params) == (expected.flops, expected.params)


def test_report_fields(resnet20_onnx):
    report = count_onnx_flops(resnet20_onnx)
    assert isinstance(report, OnnxFlopsReport)
    d = report.as_dict()
    assert d["input_name"] == "input" and d["input_shape"] == list(SHAPE) and d["batch"] == 1
    assert d["counter"] == COUNTER and d["complete"] is True and d["uncounted"] == {}
    assert set(d["by_op_type"]) == {"Conv", "Gemm"} and d["flops"] == 2 * d["macs"]


def test_unresolvable_shapes_are_listed_not_guessed():
    # A custom-domain op onnx has no schema for hides the shape the Conv after it needs.
    nodes = [helper.make_node("Mystery", ["x"], ["h"], domain="example"),
             helper.make_node("Conv", ["h", "w"], ["y"], kernel_shape=[3, 3])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [onnx.numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example", 1)])
    report = count_onnx_flops(model)
    assert report.uncounted == {"Conv": 1} and not report.complete and report.flops == 0


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, groups=2)
        self.w = nn.Parameter(torch.randn(8 * 7 * 7, 10))

    def forward(self, x):  # (N, 3, 16, 16)
        return torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1) @ self.w


@pytest.mark.parametrize("form", ["QDQ", "QOperator", "dynamic"])
def test_quantized_graphs_count_like_float(form, tmp_path):
    quantization = pytest.importorskip("onnxruntime.quantization")
    model, x = Small().eval(), torch.randn(1, 3, 16, 16)
    src, out = export(model, x, tmp_path / "float.onnx"), str(tmp_path / f"{form}.onnx")

    class Calibration(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": np.random.default_rng(i).random((1, 3, 16, 16), np.float32)} for i in range(2)])

        def get_next(self):
            return next(self.batches, None)

    if form == "dynamic":  # ConvInteger / MatMulInteger
        quantization.quantize_dynamic(src, out)
    else:  # QDQ: plain Conv / MatMul between Q/DQ nodes; QOperator: QLinearConv / QLinearMatMul
        quantization.quantize_static(src, out, Calibration(), quant_format=getattr(quantization.QuantFormat, form))
    report = count_onnx_flops(out)
    assert report.complete and report.flops == torch_flops(model, x)
    expected_ops = {"QDQ": {"Conv", "MatMul"}, "QOperator": {"QLinearConv", "QLinearMatMul"},
                    "dynamic": {"ConvInteger", "MatMulInteger"}}[form]
    assert set(report.by_op_type) == expected_ops
