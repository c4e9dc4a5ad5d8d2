"""Every model in the zoo exports to ONNX with a dynamic batch and matches PyTorch at batch 1 and 3.

CPU-sized: 32x32 inputs, the TorchScript exporter for the whole zoo (a tenth of a second for most
nets, where dynamo takes seconds), and the dynamo exporter for one net of each kind of graph
(dynamic convolution, RRDB + attention, VGG). VGGs use their CIFAR head (`small_input=True`):
the paper's 7x7 pool + FC-4096 head is 100M parameters at any input size, which only makes the
test slow, and the TorchScript exporter cannot express a 7x7 adaptive pool of a 1x1 map anyway.
"""

from __future__ import annotations

import pytest

import export
import nets

#: Too deep or too wide for a CPU test; their blocks are the same code as resnet50 / resnet110.
GIANTS = {"resnet1202", "plain1202", "resnet152", "plain152", "resnet101", "plain101"}

#: One net of each kind of graph for the dynamo exporter: dynamic convolution, RRDB + attention, VGG.
DYNAMO_KINDS = ("dy_resnet20", "rrdb_attention_net", "dy_vgg11")

SHAPE = (3, 32, 32)


def _build(name: str):
    kwargs = {"small_input": True} if nets.model_entry(name).family == "vgg" else {}
    return nets.create_model(name, num_classes=10, **kwargs)


def _check(report, name):
    assert report.parity.passed, f"{name}: {report.parity.summary()}"
    assert report.input_shapes == [["batch", *SHAPE]]
    assert report.output_shapes == [["batch", 10]]
    assert [b.batch for b in report.parity.batches] == [1, 3] and report.traced_batch == 2


@pytest.mark.parametrize("name", [n for n in nets.list_models() if n not in GIANTS])
def test_every_model_exports_with_dynamic_batch(name, tmp_path):
    report = export.to_onnx(_build(name), tmp_path / f"{name}.onnx", SHAPE, exporter="torchscript", model_name=name)
    _check(report, name)


def test_every_name_this_file_expects_is_in_the_zoo():
    # A renamed or removed net must fail here, not shrink the test: a skip would hide the lost coverage.
    missing = sorted((GIANTS | set(DYNAMO_KINDS)) - set(nets.list_models()))
    assert not missing, f"not in the zoo any more: {', '.join(missing)}; update GIANTS / DYNAMO_KINDS"


@pytest.mark.parametrize("name", DYNAMO_KINDS)
def test_dynamo_exports_each_kind_of_graph(name, tmp_path):
    assert name in nets.list_models(), f"{name} is not in the zoo any more; pick another net of its kind"
    report = export.to_onnx(_build(name), tmp_path / f"{name}.onnx", SHAPE, exporter="dynamo", model_name=name)
    assert report.exporter == "dynamo"
    _check(report, name)
