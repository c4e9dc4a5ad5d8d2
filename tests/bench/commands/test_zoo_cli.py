"""`rbench list` and `rbench info`: tables, JSON, and one-line errors with exit 2."""

from __future__ import annotations

import json
import time

import pytest

import nets

pytestmark = pytest.mark.usefixtures("private_flops_cache")


def assert_one_line_error(code, out, err, *fragments):
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbench: error:"), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_list_whole_zoo_as_json_is_fast(run_cli):
    start = time.perf_counter()
    code, out, err = run_cli("list", "--json")
    elapsed = time.perf_counter() - start
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == nets.list_models()
    for r in rows:
        assert r["kind"] in nets.KINDS and r["params"] > 0 and r["macs"] > 0
        # thop counts norms and pools too, so its MACs sit 0-7% above FLOPs / 2 (most for the BN-heavy Keras nets).
        assert 0.93 <= r["flops"] / (2 * r["macs"]) <= 1.0, r["name"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet20"]["params"] == 269_722 and by_name["resnet20"]["twin"] == "plain20"
    assert by_name["dy_vgg19"]["kind"] == "dynamic" and by_name["vgg19_bn"]["kind"] == "static"
    assert by_name["resnet50"]["input_size"] == 224
    assert elapsed < 60  # a few seconds on an idle machine; generous for a shared CI runner
    from bench.measure.flops import model_flops

    model_flops.cache_clear()  # a new process: only the disk cache remains
    start = time.perf_counter()
    code, again, err = run_cli("list", "--json")
    assert code == 0 and again == out
    assert time.perf_counter() - start < elapsed


def test_list_table_with_pattern_and_settings(run_cli):
    code, out, err = run_cli("list", "resnet2*", "--num-classes", "100", "--in-chans", "1")
    assert code == 0, err
    assert "resnet20" in out and "plain20" in out.split("resnet20", 1)[1] and "vgg11" not in out
    assert "100 classes" in out and "1 input channels" in out


def test_list_with_no_match_is_one_line(run_cli):
    assert_one_line_error(*run_cli("list", "nothing*"), "nothing*")


def test_info_table(run_cli):
    code, out, err = run_cli("info", "resnet20")
    assert code == 0, err
    for fragment in ("cifar_resnet", "residual", "plain20", "269,722", "layer3", "MACs", "FLOPs"):
        assert fragment in out


def test_info_json_with_settings(run_cli):
    code, out, err = run_cli("info", "dy_resnet20", "--input-size", "28", "--in-chans", "1", "--num-classes", "5",
                             "--act", "silu", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["kind"] == "dynamic" and info["twin"] == "resnet20"
    assert info["config"] == dict(name="dy_resnet20", num_classes=5, in_chans=1, act="silu")
    assert info["input_shape"] == [1, 28, 28]
    assert info["layers"][0]["name"] == "conv1" and info["layers"][-1]["output"] == [5]
    assert info["flops"] > 0 and info["macs"] > 0


def test_info_of_a_large_net_is_quick(run_cli):
    code, out, err = run_cli("info", "vgg19", "--json")  # 224x224 on the meta device
    assert code == 0, err
    assert json.loads(out)["flops"] > 30e9


@pytest.mark.parametrize("args,fragments", [
    (("info", "resnet21"), ("resnet21", "resnet20")),
    (("info", "resnet20", "--in-chans", "0"), ("in_chans",)),
    (("info", "resnet20", "--num-classes", "0"), ("num_classes",)),
    (("info", "resnet20", "--act", "tanh"), ("tanh", "silu")),
    (("info", "resnet20", "--input-size", "0"), ("--input-size",)),
    (("list", "--in-chans", "0"), ("in_chans",)),
    (("list", "--num-classes", "-3"), ("num_classes",)),
])
def test_bad_input_is_one_line_and_exit_2(run_cli, args, fragments):
    assert_one_line_error(*run_cli(*args), *fragments)
