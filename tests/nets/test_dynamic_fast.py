"""Dynamic convolution's forms through ONNX: grouped at a fixed batch (dynamo only), unfold and expand with a
dynamic batch (dynamo and TorchScript), auto in both kinds of export; each checked against PyTorch in
onnxruntime by export.to_onnx, and each graph holds the ops its form promises.

dy_resnet20 at 3x16x16: small enough for a CPU test, every kind of DynamicConv2d it has (stride 1 and 2), and
its last stage's 4x4 output is where "auto" takes "expand" at a batch above 1.
"""

from __future__ import annotations

import collections

import pytest
import torch

import export
import nets
from export.errors import DataProblem
from nets import dynamic_conv_mode
from nets.errors import ModelConfigError
from nets.layers import EXPAND_GEMM_MAX_POSITIONS, DynamicConv2d

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # the dynamo exporter's dependency
onnx = pytest.importorskip("onnx")

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def model():
    return nets.create_model("dy_resnet20", num_classes=10)


def dynamic_layers(model) -> int:
    return sum(isinstance(m, DynamicConv2d) for m in model.modules())


def graph_ops(path) -> tuple[collections.Counter, set[int]]:
    """The op types of the graph, and the `group` attributes of its Conv nodes."""
    nodes = onnx.load(str(path)).graph.node
    groups = {a.i for n in nodes if n.op_type == "Conv" for a in n.attribute if a.name == "group"}
    return collections.Counter(n.op_type for n in nodes), groups


def test_grouped_form_exports_at_a_fixed_batch_with_dynamo(model, tmp_path):
    path = tmp_path / "grouped.onnx"
    with dynamic_conv_mode(model, "grouped"):
        report = export.to_onnx(model, path, SHAPE, batch=4, dynamic_batch=False, exporter="dynamo")
    assert report.exporter == "dynamo" and report.input_shapes == [[4, *SHAPE]]
    assert report.parity.passed and [b.batch for b in report.parity.batches] == [4], report.parity.summary()
    ops, groups = graph_ops(path)
    # One Conv per dynamic layer, the batch folded into its groups, plus the static stem conv.
    assert ops["Conv"] == dynamic_layers(model) + 1 and groups == {1, 4}
    assert "Gather" not in ops and "Slice" in ops  # ResNet's option-A shortcut slices, nothing else does


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_auto_form_exports_with_a_dynamic_batch(model, tmp_path, exporter):
    """No mode set: in a dynamic-batch export "auto" takes the unfold form by itself, as export.to_onnx needs."""
    path = tmp_path / f"{exporter}.onnx"
    report = export.to_onnx(model, path, SHAPE, exporter=exporter)
    assert report.exporter == exporter and report.input_shapes == [["batch", *SHAPE]]
    assert report.parity.passed and [b.batch for b in report.parity.batches] == [1, 3], report.parity.summary()
    ops, groups = graph_ops(path)
    # im2col is Pad + Slice + Concat and the per-sample conv a MatMul: the only Conv is the static stem.
    assert ops["Conv"] == 1 and groups <= {1} and ops["MatMul"] >= dynamic_layers(model)
    if exporter == "dynamo":  # F.unfold's index Gathers, which ran 6x slower in onnxruntime, are gone
        assert "Gather" not in ops



def test_auto_form_exports_grouped_at_a_fixed_batch(model, tmp_path):
    """Batch 4, no mode set: grouped throughout, although eager mode at batch 4 runs the last stage's 4x4
    outputs in "expand" (onnxruntime ran expand slower, so exports never take it by themselves)."""
    eager = {}

    def record(layer, args):
        eager[layer] = layer.resolved_mode(args[0])  # returns None: the input goes on unchanged

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, DynamicConv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.randn(4, *SHAPE))
    finally:
        for hook in hooks:
            hook.remove()
    stage3 = sum(isinstance(m, DynamicConv2d) for m in model.layer3.modules())
    assert collections.Counter(eager.values()) == {"grouped": dynamic_layers(model) - stage3, "expand": stage3}
    path = tmp_path / "auto4.onnx"
    report = export.to_onnx(model, path, SHAPE, batch=4, dynamic_batch=False, exporter="dynamo")
    assert report.input_shapes == [[4, *SHAPE]] and report.parity.passed, report.parity.summary()
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    groups = collections.Counter(next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs)
    assert groups == {4: dynamic_layers(model), 1: 1}  # 1: the static stem conv


def test_expand_form_exports_with_a_dynamic_batch_through_torchscript(model, tmp_path):
    path = tmp_path / "expand.onnx"
    with dynamic_conv_mode(model, "expand"):
        report = export.to_onnx(model, path, SHAPE, exporter="torchscript")
    assert report.input_shapes == [["batch", *SHAPE]] and report.parity.passed, report.parity.summary()
    ops, groups = graph_ops(path)
    # Every dynamic layer is one static product with all K kernels, no per-sample kernel: a Conv, or on outputs
    # of at most EXPAND_GEMM_MAX_POSITIONS (stage 3's six layers at 4x4 here) im2col (one Pad each) + a MatMul.
    gemm = 6
    assert 4 * 4 <= EXPAND_GEMM_MAX_POSITIONS < 8 * 8
    assert ops["Conv"] == dynamic_layers(model) - gemm + 1 and groups <= {1}
    assert ops["Pad"] == 2 + gemm  # the two option-A shortcuts' channel padding, and im2col's

def test_unfold_form_exports_at_a_fixed_batch_too(model, tmp_path):
    with dynamic_conv_mode(model, "unfold"):
        report = export.to_onnx(model, tmp_path / "u.onnx", SHAPE, batch=2, dynamic_batch=False, exporter="torchscript")
    assert report.input_shapes == [[2, *SHAPE]] and report.parity.passed, report.parity.summary()


def test_grouped_form_refuses_a_dynamic_batch_and_says_what_to_do(model, tmp_path):
    with dynamic_conv_mode(model, "grouped"), pytest.raises(DataProblem, match="mode 'unfold'"):
        export.to_onnx(model, tmp_path / "g.onnx", SHAPE, exporter="torchscript")
    assert not (tmp_path / "g.onnx").exists()
    layer = DynamicConv2d(3, 4, 3, padding=1, mode="grouped").eval()
    with pytest.raises(ModelConfigError, match="fixes the batch size"):
        torch.export.export(layer, (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
