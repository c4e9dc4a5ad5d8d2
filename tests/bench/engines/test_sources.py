"""Model sources: every kind a user brings is read and checked, and every bad one is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bench
import nets
from bench.engines.sources import resolve_source
from bench.errors import DataProblem, UsageProblem
from nets.errors import ModelError
from tests.bench.user_models import TinyNet

CALLABLE = "tests.bench.user_models:tiny_net"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))


def _plain_onnx(path, *, dynamic_axes=None, model=None, inputs=None, names=("pixels",)):
    """An ONNX file written by plain torch.onnx.export (not rbench)."""
    model = (model or nets.create_model("resnet20")).eval()
    inputs = inputs if inputs is not None else (torch.randn(1, 3, 32, 32),)
    torch.onnx.export(model, inputs, str(path), dynamo=False, input_names=list(names), output_names=["logits"],
                      dynamic_axes={names[0]: {0: "n"}} if dynamic_axes is None else dynamic_axes)
    return path


def test_each_kind_resolves_with_its_shape(tmp_path):
    zoo = resolve_source("resnet20")
    assert (zoo.kind, zoo.input_shape, zoo.config["name"]) == ("zoo", (3, 32, 32), "resnet20")
    assert resolve_source("resnet50").input_shape == (3, 224, 224)
    tv = resolve_source("torchvision:resnet18", input_size=64, num_classes=7)
    assert (tv.kind, tv.input_shape) == ("torchvision", (3, 64, 64))
    assert tv.module()(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    user = resolve_source(CALLABLE, input_size=16)
    assert (user.kind, user.name, user.input_shape) == ("callable", CALLABLE, (3, 16, 16))
    module = resolve_source(TinyNet(in_chans=1), input_shape=(1, 20, 20))
    assert (module.kind, module.name, module.input_shape) == ("module", "TinyNet", (1, 20, 20))
    onnx = resolve_source(str(_plain_onnx(tmp_path / "r20.onnx")))
    assert (onnx.kind, onnx.input_shape, onnx.input_name, onnx.dtype) == ("onnx", (3, 32, 32), "pixels", "float32")
    assert onnx.file_batch is None and len(onnx.sha256) == 64


def test_a_zoo_net_passed_as_a_module_knows_its_input_size():
    assert resolve_source(nets.create_model("resnet20")).input_shape == (3, 32, 32)


@pytest.mark.parametrize("spec, options, message", [
    ("mobilenet_v2", {}, "torchvision:mobilenet_v2"),
    ("resnet21", {}, "resnet20"),
    ("torchvision:resnet19", {}, "torchvision:resnet18"),
    ("torchvision:resnet18", {"in_chans": 1}, "3 input channels"),
    ("tests.bench.no_such_module:net", {}, "importing tests.bench.no_such_module failed"),
    ("tests.bench.user_models:nothing", {}, "no callable 'nothing'"),
    ("tests.bench.user_models:not_a_module", {"input_size": 8}, "not a torch.nn.Module"),
    ("tests.bench.user_models:broken", {}, "crashed"),
    (CALLABLE, {}, "--input-size"),
    ("missing/model.onnx", {}, "no ONNX file"),
    ("missing/model.engine", {}, "no TensorRT engine file"),
    ("weights.pt", {}, "no such file or zoo model"),
    ("resnet20", {"input_size": 0}, "positive"),
])
def test_bad_sources_are_one_line(spec, options, message):
    with pytest.raises((UsageProblem, ModelError), match=message.replace("(", r"\(")) as info:
        resolve_source(spec, **options)
    assert "\n" not in str(info.value)


def test_bad_onnx_files(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00\x01 not a protobuf" * 10)
    with pytest.raises(DataProblem, match="not a readable ONNX model"):
        resolve_source(str(corrupt))

    class TwoInputs(torch.nn.Module):
        def forward(self, a, b):
            return a + b

    two = _plain_onnx(tmp_path / "two.onnx", model=TwoInputs(), inputs=(torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4)),
                      names=("a", "b"), dynamic_axes={"a": {0: "n"}})
    with pytest.raises(UsageProblem, match="2 inputs"):
        resolve_source(str(two))

    class Tokens(torch.nn.Module):
        def forward(self, ids):
            return ids * 2

    ints = _plain_onnx(tmp_path / "ints.onnx", model=Tokens(), inputs=(torch.ones(1, 3, 4, 4, dtype=torch.int64),),
                       names=("ids",))
    with pytest.raises(UsageProblem, match="not a float image"):
        resolve_source(str(ints))

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x * 2

    flat = _plain_onnx(tmp_path / "flat.onnx", model=Flat(), inputs=(torch.ones(1, 12),), names=("x",))
    with pytest.raises(UsageProblem, match="rank 2"):
        resolve_source(str(flat))


def test_onnx_shape_rules(tmp_path):
    fixed = _plain_onnx(tmp_path / "fixed.onnx", dynamic_axes={})
    assert resolve_source(str(fixed)).file_batch == 1
    with pytest.raises(UsageProblem, match="fixed batch of 1"):
        bench.latency(str(fixed), engines=["ort"], batches=[1, 2], iters=1)
    with pytest.raises(UsageProblem, match="drop --input-size"):
        resolve_source(str(fixed), input_size=64)
    any_size = _plain_onnx(tmp_path / "any.onnx", dynamic_axes={"pixels": {0: "n", 2: "h", 3: "w"}})
    with pytest.raises(UsageProblem, match="--input-size"):
        resolve_source(str(any_size))
    assert resolve_source(str(any_size), input_size=40).input_shape == (3, 40, 40)
    with pytest.raises(UsageProblem, match="--engine ort"):
        bench.latency(str(fixed), engines=["torch"], iters=1)


def test_checkpoint_applies_to_module_sources_only(tmp_path):
    model = TinyNet()
    torch.nn.init.constant_(model.head.bias, 0.5)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    source = resolve_source(CALLABLE, input_size=8, checkpoint=tmp_path / "w.pt")
    assert torch.equal(source.module().head.bias, model.head.bias) and source.checkpoint.endswith("w.pt")
    onnx = _plain_onnx(tmp_path / "r20.onnx")
    with pytest.raises(UsageProblem, match="applies to PyTorch models"):
        resolve_source(str(onnx), checkpoint=tmp_path / "w.pt")


@pytest.mark.parametrize("batch, tf32, expected", [(None, False, (1, 8, 64)), (1, False, (1, 1, 64)),
                                                   (32, True, (1, 32, 64)), (128, False, (1, 128, 128))])
def test_a_trt_engine_from_a_model_is_tuned_for_the_batch_it_measures(tmp_path, monkeypatch, batch, tf32, expected):
    """Each measured batch gets its own engine whose profile's opt is that batch (not batch 8), and --tf32 reaches
    the build; the file names differ, so a sweep's engines never overwrite each other."""
    import export
    from bench.engines import sources
    built = []
    monkeypatch.setattr(sources, "onnx_file", lambda src, precision, workdir, batch: tmp_path / "resnet20.onnx")
    monkeypatch.setattr(export, "build_trt_engine",
                        lambda onnx, path, **kw: built.append((Path(path).name, kw)) or None)
    src = resolve_source("resnet20", input_shape=(3, 16, 16))
    path = sources.engine_file(src, "fp32", max_batch=64, workdir=tmp_path, batch=batch, tf32=tf32)
    (name, kw), = built
    assert kw["batch_range"] == expected and kw["tf32"] is tf32
    assert path.name == name and f"opt{expected[1]}" in name and ("tf32" in name) is tf32


def test_modules_that_share_a_name_export_to_their_own_files(tmp_path):
    """A study times nets that share a name (dy_resnet20 on RGB and its 1-channel twin): each gets its own ONNX file
    in the work folder; the quick suite once timed every RGB dy_resnet20 on the 1-channel twin's file."""
    import onnx

    from bench.engines.sources import onnx_file

    rgb = resolve_source(TinyNet(in_chans=3), input_shape=(3, 16, 16), name="twin")
    grey = resolve_source(TinyNet(in_chans=1), input_shape=(1, 16, 16), name="twin")
    paths = [onnx_file(src, "fp32", tmp_path) for src in (rgb, grey)]
    assert paths[0] != paths[1]
    channels = [onnx.load(str(p)).graph.input[0].type.tensor_type.shape.dim[1].dim_value for p in paths]
    assert channels == [3, 1]
    assert onnx_file(rgb, "fp32", tmp_path) == paths[0]  # the same source reuses its own file
