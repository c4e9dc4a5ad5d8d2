"""User code and engine runs that fail: one line naming the model, a non-zero exit, no record, never a traceback.

The user code is in `hostile_models.py` / `hostile_import.py` beside this file: builders and forwards that
raise or call sys.exit, a module that exits on import.
"""

from __future__ import annotations

import pytest

from bench.errors import DataProblem, UsageProblem

FAST = ("--warmup", "0", "--iters", "2", "--threads", "1")
HOSTILE = "tests.bench.engines.hostile_models"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBENCH_CACHE", str(tmp_path / "cache"))


def _one_line(code: int, out: str, err: str, *words: str) -> str:
    lines = err.strip().splitlines()
    assert code not in (0, None), (out, err)
    assert len(lines) == 1 and lines[0].startswith("rbench: error: "), err
    assert "Traceback" not in err and all(word in lines[0] for word in words), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- sys.exit in user code


@pytest.mark.parametrize("command", ["latency", "flops"])
@pytest.mark.parametrize("spec, words", [
    (f"{HOSTILE}:builder_exits_0", ("builder_exits_0", "sys.exit(0)")),
    (f"{HOSTILE}:builder_exits_3", ("builder_exits_3", "sys.exit(3)")),
    ("tests.bench.engines.hostile_import:net", ("hostile_import", "sys.exit(5)")),
    (f"{HOSTILE}:forward_exits_0", ("forward_exits_0", "sys.exit(0)")),
])
def test_sys_exit_in_user_code_is_an_error_not_an_exit(run_cli, results_dir, command, spec, words):
    args = (command, spec, "--input-size", "8", "--out", results_dir, *(FAST if command == "latency" else ()))
    code, out, err = run_cli(*args)
    _one_line(code, out, err, *words)
    assert code in (1, 2) and not list(results_dir.iterdir())


# --------------------------------------------------------------------------- forwards that fail


@pytest.mark.parametrize("command", ["latency", "flops"])
@pytest.mark.parametrize("spec, options, words", [
    (f"{HOSTILE}:forward_raises", (), ("forward_raises", "the user's forward is broken")),
    ("tests.bench.user_models:tiny_net", ("--in-chans", "1"), ("tiny_net", "1x8x8", "channels")),
])
def test_a_forward_that_fails_is_one_line_naming_the_model(run_cli, results_dir, command, spec, options, words):
    code, out, err = run_cli(command, spec, "--input-size", "8", *options, "--out", results_dir,
                             *(FAST if command == "latency" else ()))
    _one_line(code, out, err, *words)
    assert not list(results_dir.iterdir())


def test_a_torchvision_model_at_a_size_it_cannot_take(run_cli, results_dir):
    code, out, err = run_cli("flops", "torchvision:vit_b_16", "--input-size", "64", "--out", results_dir)
    _one_line(code, out, err, "torchvision:vit_b_16", "3x64x64", "Expected 224")


def test_the_engine_contract_names_the_model_when_a_run_fails():
    from bench.engines import create_engine
    from tests.bench.engines.hostile_models import Exits, Raises

    for model, words in ((Raises(), "the user's forward is broken"), (Exits(0), "sys.exit(0)")):
        with create_engine("torch", model, input_shape=(3, 8, 8)) as engine:
            with pytest.raises(DataProblem) as info:
                engine.infer(__import__("numpy").zeros((1, 3, 8, 8), "float32"))
        message = str(info.value)
        assert words in message and type(model).__name__ in message and "\n" not in message


def test_rbench_errors_and_interrupts_pass_through_the_boundary():
    from bench.engines.base import user_code

    with pytest.raises(UsageProblem, match="^as raised$"):
        with user_code("m", "running"):
            raise UsageProblem("as raised")
    with pytest.raises(KeyboardInterrupt):
        with user_code("m", "running"):
            raise KeyboardInterrupt


# --------------------------------------------------------------------------- ONNX files that fail when run


@pytest.fixture
def impossible_reshape(tmp_path):
    """An ONNX file that loads and checks but cannot run: it reshapes 3x8x8 values into rows of 7."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [7, -1])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "impossible",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7, None])], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "impossible.onnx"
    onnx.save(model, str(path))
    return path


def test_an_onnx_file_that_fails_when_run_is_one_line(run_cli, results_dir, impossible_reshape):
    pytest.importorskip("onnxruntime")
    code, out, err = run_cli("latency", impossible_reshape, "--engine", "ort", *FAST, "--out", results_dir)
    _one_line(code, out, err, "impossible", "ort")
    assert code == 1 and not list(results_dir.iterdir())
