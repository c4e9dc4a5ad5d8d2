"""bench.measure.flops against published numbers, and the two counters against each other."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import nets
from bench.measure.flops import (
    FlopsReport,
    count_flops,
    counters_warning,
    counting_device,
    model_counts,
    model_flops,
    profile_model,
)

# torchvision's resnet50 at 224: 4,089,184,256 conv + linear MACs, the number torchvision and
# most papers publish ("4.1 GFLOPs"); thop also counts BatchNorm and pooling (~1% more).
RESNET50_MACS = 4_089_184_256


pytestmark = pytest.mark.usefixtures("private_flops_cache")


def test_torchvision_resnet50_at_224():
    with torch.device("meta"):  # counts need shapes only
        model = torchvision.models.resnet50()
    report = profile_model(model, (3, 224, 224))
    assert isinstance(report, FlopsReport)
    assert report.params == 25_557_032
    assert report.flops == 2 * RESNET50_MACS
    assert report.macs == pytest.approx(RESNET50_MACS, rel=0.02)
    assert report.agrees and report.warning is None


def test_our_resnet50_counts_like_torchvision():
    assert model_flops("resnet50", (3, 224, 224), num_classes=1000) == (25_557_032, 2 * RESNET50_MACS)


def test_real_model_is_profiled_without_side_effects():
    model = nets.create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = profile_model(model, (3, 32, 32), batch=2, detail=True)
    assert model.training  # the mode is restored
    after = model.state_dict()
    assert before.keys() == after.keys()  # no thop buffers left behind
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched
    assert not any(hasattr(m, "total_ops") for m in model.modules())
    assert report.params == 269_722 and report.batch == 2
    assert report.flops == 2 * count_flops(model, (3, 32, 32))  # batch 2 costs twice batch 1
    assert report.agrees
    # Per-module: the stages add up to less than the whole, the head is tiny, thop agrees per layer.
    assert report.flops_by_module[""] == report.flops
    stages = sum(report.flops_by_module[f"layer{i}"] for i in (1, 2, 3))
    assert 0.95 * report.flops < stages + report.flops_by_module["conv1"] + report.flops_by_module["fc"] <= report.flops
    assert report.macs_by_module["conv1"] == report.flops_by_module["conv1"] // 2


def test_dynamic_conv_flops_are_one_conv_plus_aggregation():
    """The batched-matmul form costs one conv per sample, not K (see DynamicConv2d's docstring)."""
    dy = nets.create_model("dy_resnet20", kernels=4)
    static = nets.create_model("resnet20")
    dy_flops, static_flops = count_flops(dy, (3, 32, 32)), count_flops(static, (3, 32, 32))
    assert static_flops < dy_flops < 1.1 * static_flops


def test_disagreement_is_flagged():
    """A functional conv is invisible to thop but not to the torch counter."""

    class FunctionalConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(8, 3, 3, 3))

        def forward(self, x):
            return F.conv2d(x, self.weight, padding=1).mean((2, 3))

    report = profile_model(FunctionalConv(), (3, 16, 16))
    assert report.flops == 2 * 8 * 3 * 9 * 16 * 16
    # thop has no rule for F.conv2d: it counts only the mean, far below FLOPs / 2.
    assert report.macs < report.flops // 2
    assert not report.agrees and "below FLOPs / 2" in report.warning and "missed" in report.warning
    assert "trust the FLOPs" in report.warning
    assert report.params == 8 * 3 * 9  # counted by us, not by thop's rules


def test_thop_above_flops_is_its_norms_not_missed_work():
    """mobilenet_v2's depthwise convs are so cheap that thop's BatchNorm ops (4 per element) show."""
    model = torchvision.models.mobilenet_v2(weights=None)
    batchnorm_ops = []
    hooks = [m.register_forward_hook(lambda m, i, o: batchnorm_ops.append(4 * i[0].numel()))
             for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    report = profile_model(model, (3, 64, 64))
    assert report.flops < 2 * report.macs
    # The whole gap is BatchNorm (its pool is functional, its ReLU6s count zero): independent of thop's rules.
    assert report.macs - report.flops // 2 == sum(batchnorm_ops)
    assert not report.agrees and "above FLOPs / 2" in report.warning and "normalization" in report.warning
    assert "missed functional" not in report.warning and "trust the FLOPs" not in report.warning


def test_counters_within_tolerance_give_no_warning():
    assert counters_warning(macs=1_010, flops=2_000) is None  # thop's ~1% of norms on a plain conv net
    assert counters_warning(macs=0, flops=0) is None
    assert "above" in counters_warning(macs=5, flops=0)


def test_fast_counting_matches_a_real_forward():
    real = nets.create_model("template_cnn", in_chans=1)
    assert model_flops("template_cnn", (1, 28, 28))[1] == count_flops(real, (1, 28, 28))
    assert counting_device((3, 224, 224)).type == "meta" and counting_device((3, 32, 32)).type == "cpu"


@pytest.mark.parametrize(("name", "shape"), [("resnet20", (3, 32, 32)), ("resnet18", (3, 96, 96)),
                                           ("dy_resnet20", (1, 28, 28))])
def test_model_counts_equal_a_real_profile(name, shape):
    """The zoo listing's cheap counts (meta device from 96x96 up) are profile_model's on a real net."""
    counts = model_counts(name, shape)
    assert counting_device(shape).type == ("meta" if shape[-1] >= 96 else "cpu")
    report = profile_model(nets.create_model(name, in_chans=shape[0]), shape)
    assert counts == (report.params, report.macs, report.flops)
    assert model_flops(name, shape) == (counts.params, counts.flops)


def test_bad_shapes_are_value_errors():
    model = nets.create_model("template_cnn")
    with pytest.raises(ValueError):
        profile_model(model, (32, 32))
    with pytest.raises(ValueError):
        profile_model(model, (3, 32, 32), batch=0)
    with pytest.raises(ValueError):
        count_flops(model, (3, 0, 32))


def test_counts_are_cached_on_disk_under_a_fingerprint(tmp_path):
    first = model_flops("resnet20", (3, 32, 32))
    path = tmp_path / "cache" / "zoo-counts.json"
    data = json.loads(path.read_text())
    assert list(data["counts"].values()) == [list(model_counts("resnet20", (3, 32, 32)))]
    key = next(iter(data["counts"]))
    data["counts"][key] = [1, 2, 3]  # what another process would find
    path.write_text(json.dumps(data))
    model_flops.cache_clear()
    assert model_flops("resnet20", (3, 32, 32)) == (1, 3)
    assert model_counts("resnet20", (3, 32, 32)) == (1, 2, 3)
    data["fingerprint"] = "older model code"
    path.write_text(json.dumps(data))
    model_flops.cache_clear()
    assert model_flops("resnet20", (3, 32, 32)) == first


def test_a_thop_failure_keeps_the_flops():
    class Odd(nn.Module):
        def forward(self, x):
            return x.flatten(1) @ torch.ones(x[0].numel(), 2)

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.odd = Odd()
            self.total_ops = nn.Linear(1, 1)  # a name thop needs for itself: it refuses to profile

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.broken = Broken()

        def forward(self, x):
            return self.broken.odd(x)

    report = profile_model(Net(), (1, 4, 4))
    assert report.flops == 2 * 16 * 2 and report.macs == 0
    assert not report.agrees and "thop failed" in report.warning


@pytest.mark.parametrize("name", ["dy_resnet20", "dy_vgg11"])
def test_thop_counts_dynamic_conv_through_its_rule(name):
    """DynamicConv2d's conv and kernel aggregation are functional; bench.measure.flops gives thop a rule for
    them, so both counters agree on dynamic nets as on static ones (thop about 1-2% above for BN)."""
    report = profile_model(nets.create_model(name), (3, 32, 32))
    assert report.agrees and report.warning is None
    assert 0.97 <= report.flops / (2 * report.macs) <= 1.0
