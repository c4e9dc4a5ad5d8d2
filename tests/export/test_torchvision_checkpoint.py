"""export.checkpoint: a torchvision state dict is recognised as its architecture, and as published weights
when its sha256 matches the hash in one of torchvision's weight file names (metadata read from torchvision)."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

import nets
from export import checkpoint as ckpt_module
from export.checkpoint import TORCHVISION_ARCHITECTURES, load_checkpoint, published_weights, torchvision_architecture


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("name", TORCHVISION_ARCHITECTURES)
def test_zoo_nets_have_torchvision_keys_and_shapes(name):
    """Every recognised architecture is a zoo net that loads torchvision's state dict strictly (checked on meta)."""
    assert name in nets.list_models()
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in nets.create_model(name, num_classes=1000).state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in torchvision.models.get_model(name).state_dict().items()}
    assert ours == theirs
    assert torchvision_architecture(dict.fromkeys(theirs)) == name


def test_other_state_dicts_are_not_torchvision():
    assert torchvision_architecture(nets.create_model("resnet20", num_classes=10).state_dict()) is None
    assert torchvision_architecture({"weight": torch.zeros(1)}) is None


def test_published_table_is_torchvision_metadata():
    from torchvision.models import ResNet18_Weights, ResNet50_Weights

    v1 = published_weights("0676ba61" + "0" * 56)
    v2 = published_weights("11ad3fa6" + "0" * 56)
    r18 = published_weights("f37072fd" + "0" * 56)
    assert v1["weights"] == "ResNet50_Weights.IMAGENET1K_V1" and v1["file"] == "resnet50-0676ba61.pth"
    assert (v1["published_top1"], v1["published_top5"]) == (76.13, 92.862)
    assert v1["eval_transform"]["resize_size"] == 256 and v1["eval_transform"]["crop_size"] == 224
    assert (v2["published_top1"], v2["published_top5"]) == (80.858, 95.434)
    assert v2["eval_transform"]["resize_size"] == 232 and v2["url"] == ResNet50_Weights.IMAGENET1K_V2.url
    assert r18["file"] == "resnet18-f37072fd.pth" and r18["published_top1"] == 69.758
    assert r18["published_top1"] == ResNet18_Weights.IMAGENET1K_V1.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert published_weights("0676ba61" + "0" * 56, architecture="resnet18") is None
    assert published_weights("deadbeef" * 8) is None


def test_plain_state_dict_loads_as_torchvision(tv_resnet18, tmp_path):
    loaded = load_checkpoint(tv_resnet18)
    assert loaded.config == {"name": "resnet18", "num_classes": 3, "in_chans": 3}
    assert loaded.extra["torchvision"] == {"architecture": "resnet18", "num_classes": 3, "published": None}
    assert loaded.extra["eval_transform"]["resize_size"] == 256 and len(loaded.sha256) == 64
    wrapped = tmp_path / "wrapped.pth"  # as saved from DataParallel, under "model"
    state = torch.load(tv_resnet18, weights_only=True)
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    assert load_checkpoint(wrapped).config["name"] == "resnet18"


def test_published_weights_recognised_by_hash(tv_resnet18, monkeypatch):
    """A file whose sha256 starts with a published file's hash is those weights (the table patched to this file)."""
    sha = load_checkpoint(tv_resnet18).sha256
    entry = dict(published_weights("f37072fd" + "0" * 56), hash_prefix=sha[:8], num_classes=3)
    entry["eval_transform"] = dict(entry["eval_transform"], resize_size=232)
    monkeypatch.setattr(ckpt_module, "_published_table", lambda: (entry,))
    loaded = load_checkpoint(tv_resnet18)
    assert loaded.extra["torchvision"]["published"]["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert loaded.extra["eval_transform"]["resize_size"] == 232


def test_export_cli_torchvision_checkpoint(run_cli, tv_resnet18, tmp_path):
    code, out, err = run_cli("export", "resnet18", "--checkpoint", tv_resnet18, "--input-size", "64",
                             "--out", tmp_path / "exp")
    assert code == 0, err
    manifest = json.loads((tmp_path / "exp" / "resnet18.onnx.json").read_text())
    assert manifest["parity"]["passed"] and manifest["model_config"]["num_classes"] == 3
    assert manifest["checkpoint"]["sha256"] == load_checkpoint(tv_resnet18).sha256
    assert manifest["checkpoint"]["torchvision"]["architecture"] == "resnet18"
    code, _, err = run_cli("export", "resnet50", "--checkpoint", tv_resnet18, "--out", tmp_path / "exp50")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "resnet18" in lines[0] and "resnet50" in lines[0]


def test_export_int8_with_eval_transform(run_cli, tv_resnet18, tmp_path):
    """int8 of torchvision weights: calibrated on train/, checked on val/, both through the eval transform."""
    from tests.bench.data.test_eval_folder import make_eval_folder

    folder = make_eval_folder(tmp_path / "data", split="train")
    make_eval_folder(folder, split="val", seed=1)
    code, out, err = run_cli("export", "resnet18", "--checkpoint", tv_resnet18, "--input-size", "32",
                             "--precision", "int8", "--calibration", f"imagefolder:{folder}:6",
                             "--eval-transform", "imagenet:40:32", "--min-agreement", "0.5",
                             "--min-accuracy-ratio", "0.5", "--out", tmp_path / "exp")
    assert code == 0, err
    int8 = json.loads((tmp_path / "exp" / "resnet18-int8.onnx.json").read_text())["int8"]
    assert int8["calibration"]["split"] == "train" and int8["calibration_images"] == 6
    assert int8["calibration"]["eval_transform"]["crop_size"] == 32 and int8["check"]["images"] == 12
    code, _, err = run_cli("export", "resnet18", "--checkpoint", tv_resnet18, "--eval-transform", "imagenet")
    assert code == 2 and "applies to --precision int8" in err
