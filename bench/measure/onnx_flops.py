"""FLOPs of an ONNX graph, counted from the graph itself with ONNX shape inference (no PyTorch module needed).

Unit: FLOPs of one forward pass at `batch`, 2 per multiply-accumulate (MAC), the convention of
`torch.utils.flop_counter.FlopCounterMode`, so the two agree on an exported net. Counted: Conv, ConvTranspose,
Gemm, MatMul (batched, broadcast), two-operand Einsum, and the int8 forms QLinearConv, ConvInteger,
QLinearMatMul, MatMulInteger; a QDQ-quantized graph keeps plain Conv/MatMul between DequantizeLinear nodes and
counts like the float one. Not counted, as in torch: bias adds, norms, activations, pools, softmax, other
element-wise ops. Never guessed, but listed in `uncounted` (and `complete=False`): counted ops whose shapes
inference cannot resolve (e.g. downstream of a com.microsoft op onnx has no schema for), counted ops inside
If/Loop/Scan bodies, RNN/LSTM/GRU/Attention, and other domains' conv/matmul/attention ops (FusedConv, QGemm...).

Params: the elements of every initializer except scalars and int64 tensors (shape constants, indices), i.e.
weights, biases, unfused norm statistics and a quantized graph's per-channel scales and zero points. They are
read from declared dims, so external data is never loaded.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnx.inliner
import onnx.shape_inference
from onnx import TensorProto, numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor
from onnx.reference import ReferenceEvaluator

COUNTER = "rbench.onnx_flops (Conv/Gemm/MatMul MACs x 2, onnx shape inference)"

_CONVS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "ConvTranspose": (0, 1)}  # (x, w) inputs
_MATMULS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}  # (a, b) inputs
_COUNTED = {*_CONVS, *_MATMULS, "Gemm", "Einsum"}
_HEAVY = {"RNN", "LSTM", "GRU", "Attention", "DeformConv"}  # default-domain arithmetic without a rule here
_HEAVY_WORDS = ("Conv", "MatMul", "Gemm", "Attention", "Einsum")  # the same, in other domains
_SMALL = 1 << 16  # elements: tensors this small are shape arithmetic or indices, never weights worth loading
_GRAPH_ATTRS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)

Shape = list[int]


@dataclass
class OnnxFlopsReport:
    """What `count_onnx_flops` counted, for one forward pass at `batch` x `input_shape`."""

    flops: int
    macs: int
    params: int
    batch: int
    input_name: str
    input_shape: list[int]  # (C, H, W) after fixing symbolic dims
    by_op_type: dict[str, int] = field(default_factory=dict)  # FLOPs per op type
    uncounted: dict[str, int] = field(default_factory=dict)  # op type -> nodes doing arithmetic that were not counted
    complete: bool = True
    counter: str = COUNTER
    layers: int = 0  # weighted layers: Conv, ConvTranspose, Gemm and MatMul nodes (what torch's threads would share)

    def as_dict(self) -> dict:
        return asdict(self)


def _load(model_or_path) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)
        return model
    path = os.fspath(model_or_path)
    try:
        model = onnx.load(path, load_external_data=False)
    except OSError:
        raise
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ValueError(f"{path}: not an ONNX model ({(str(exc).strip().splitlines() or [type(exc).__name__])[0]})") from None
    if not model.graph.node:
        raise ValueError(f"{path}: not an ONNX model (no graph nodes)")
    for t in model.graph.initializer:  # small external tensors may be shape constants that inference needs
        if t.data_location == TensorProto.EXTERNAL and math.prod(t.dims) <= _SMALL:
            with contextlib.suppress(Exception):  # missing or unreadable: inference may not need it
                load_external_data_for_tensor(t, os.path.dirname(os.path.abspath(path)))
    return model


def _fix_input(model: onnx.ModelProto, batch: int, input_shape) -> tuple[str, list[int]]:
    """Set the one image input's dims to (batch, C, H, W) in place; return its name and (C, H, W)."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"expected exactly one graph input (an NCHW image), got {len(inputs)}: {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError(f"expected a 4-D NCHW input, got {inputs[0].name!r} of rank {len(dims)}")
    fixed = [d.dim_value if d.WhichOneof("value") == "dim_value" else None for d in dims[1:]]
    if input_shape is not None:
        want = [int(s) for s in input_shape]
        if len(want) != 3 or min(want) < 1:
            raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
        if any(f is not None and f != w for f, w in zip(fixed, want)):
            raise ValueError(f"input_shape {tuple(want)} conflicts with the ONNX input's fixed dims {fixed}")
        fixed = want
    elif None in fixed:
        raise ValueError("the ONNX input has symbolic height/width; give input_shape")
    for d, value in zip(dims, [batch, *fixed]):
        d.dim_value = value  # setting the oneof clears dim_param
    del graph.value_info[:]  # shapes recorded at export carry the symbolic dims: infer them afresh
    for out in graph.output:
        out.type.tensor_type.ClearField("shape")
    return inputs[0].name, fixed


def _weights_as_inputs(graph: onnx.GraphProto) -> None:
    """Turn large initializers into typed graph inputs: inference needs their dims, never their bytes."""
    inputs, keep = {i.name for i in graph.input}, []
    for t in graph.initializer:
        if math.prod(t.dims) <= _SMALL:
            keep.append(t)
        elif t.name not in inputs:  # IR < 4 lists initializers among the inputs already
            graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    graph.ClearField("initializer")
    graph.initializer.extend(keep)


def _shapes(graph: onnx.GraphProto) -> dict[str, Shape | None]:
    """Value name -> fully known shape, or None where some dim is unknown."""
    shapes: dict[str, Shape | None] = {t.name: list(t.dims) for t in graph.initializer}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.tensor_type.HasField("shape"):
            dims = [d.dim_value if d.WhichOneof("value") == "dim_value" else None for d in vi.type.tensor_type.shape.dim]
            shapes.setdefault(vi.name, None if None in dims else dims)
    return shapes


def _attr(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _matmul_macs(a: Shape, b: Shape) -> int:
    a, b = ([1, *a] if len(a) == 1 else a), ([*b, 1] if len(b) == 1 else b)  # numpy: 1-D is a row / column vector
    return math.prod(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))) * a[-2] * a[-1] * b[-1]


def _einsum_macs(equation: str, a: Shape, b: Shape) -> int | None:
    """A two-operand einsum as torch runs it: a bmm over the letters both operands or the output hold."""
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms, operands = lhs.split(","), []
    for term, shape in zip(terms, (a, b)):
        head, dots, tail = term.partition("...")  # ellipsis dims broadcast from the right: name them by that
        letters = [*head, *(f"...{i}" for i in range(len(shape) - len(head) - len(tail), 0, -1)), *tail] if dots else list(term)
        if len(letters) != len(shape):
            return None
        operands.append(dict(zip(letters, shape)))
    sizes = {k: max(op.get(k, 1) for op in operands) for op in operands for k in op}
    kept = [k for k in sizes if all(k in op for op in operands) or not arrow or k in rhs or (k[0] == "." and "..." in rhs)]
    return math.prod(sizes[k] for k in kept) if len(terms) == 2 else None


def _node_macs(node: onnx.NodeProto, shapes: dict[str, Shape | None]) -> int | None:
    """MACs of one counted node, or None if a shape it needs is unknown."""
    def shape(i: int) -> Shape | None:
        return shapes.get(node.input[i]) if i < len(node.input) and node.input[i] else None

    op = node.op_type
    if op in _CONVS:
        x, w = (shape(i) for i in _CONVS[op])
        if op == "ConvTranspose":  # each input element meets C_out/group x kernel weights
            return math.prod(x) * math.prod(w[1:]) if x and w else None
        y = shapes.get(node.output[0])
        return math.prod(y) * math.prod(w[1:]) if y and w else None  # N*C_out*H_out*W_out * C_in/group*kH*kW
    if op in _MATMULS:
        a, b = (shape(i) for i in _MATMULS[op])
        return _matmul_macs(a, b) if a and b else None
    if op == "Gemm":
        a, b = shape(0), shape(1)
        if not (a and b):
            return None
        m, k = a[::-1] if _attr(node, "transA", 0) else a
        return m * k * (b[0] if _attr(node, "transB", 0) else b[1])
    if op == "Einsum" and len(node.input) == 2 and shape(0) and shape(1):
        return _einsum_macs(_attr(node, "equation", b"").decode(), shape(0), shape(1))
    return None


def _is_arithmetic(node: onnx.NodeProto) -> bool:
    if node.domain in ("", "ai.onnx"):
        return node.op_type in _COUNTED or node.op_type in _HEAVY
    return any(word in node.op_type for word in _HEAVY_WORDS)


def _subgraph_nodes(node: onnx.NodeProto):
    for a in node.attribute:
        for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs:
            for inner in g.node:
                yield inner
                yield from _subgraph_nodes(inner)


def _evaluate(node: onnx.NodeProto, values: dict[str, np.ndarray], shapes: dict[str, Shape | None], opset: int):
    """The outputs of `node` if they follow from constants and known shapes alone and are small, else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type.startswith("Random") or any(a.type in _GRAPH_ATTRS for a in node.attribute):
        return None
    if any(shapes.get(o) and math.prod(shapes[o]) > _SMALL for o in node.output):
        return None
    if node.op_type == "Shape":
        dims = shapes.get(node.input[0])
        return None if dims is None else [np.array(dims[_attr(node, "start", 0):_attr(node, "end", None)], dtype=np.int64)]
    if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return [numpy_helper.to_array(node.attribute[0].t)]
    if not all(not name or name in values for name in node.input):
        return None
    try:
        out = ReferenceEvaluator(node, opsets={"": opset}).run(None, {n: values[n] for n in node.input if n})
    except Exception:  # an op the reference runtime lacks: leave it to inference
        return None
    out = [np.asarray(v) if isinstance(v, np.ndarray | np.generic) else None for v in out]
    return out if all(v is not None and v.size <= _SMALL for v in out) else None


def _fold_constants(model: onnx.ModelProto) -> bool:
    """Replace shape arithmetic on constants by Constant nodes; return whether anything was folded.

    Data propagation stops at Range, Transpose, ConstantOfShape and the like, which exporters emit for
    padding and im2col indices; evaluating them lets the next round of inference resolve what follows.
    """
    graph, shapes = model.graph, _shapes(model.graph)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.data_location != TensorProto.EXTERNAL}
    nodes, folded = [], False
    for node in graph.node:
        out = _evaluate(node, values, shapes, opset)
        if out is not None:
            values.update(zip(node.output, out))
        if out is None or node.op_type == "Constant":
            nodes.append(node)
        else:
            folded = True
            nodes.extend(onnx.helper.make_node("Constant", [], [name], value=numpy_helper.from_array(v, name))
                         for name, v in zip(node.output, out))
    graph.ClearField("node")
    graph.node.extend(nodes)
    return folded


def _infer_and_count(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, dict[str, int], dict[str, int]]:
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ValueError(f"ONNX shape inference failed: {(str(exc).strip().splitlines() or ['?'])[0]}") from None
    shapes, macs, by_op, uncounted = _shapes(model.graph), 0, {}, {}
    for node in model.graph.node:
        for inner in _subgraph_nodes(node):  # control-flow bodies run a data-dependent number of times
            if _is_arithmetic(inner):
                uncounted[inner.op_type] = uncounted.get(inner.op_type, 0) + 1
        if not _is_arithmetic(node):
            continue
        n = _node_macs(node, shapes) if node.domain in ("", "ai.onnx") else None
        if n is None:
            uncounted[node.op_type] = uncounted.get(node.op_type, 0) + 1
        else:
            macs += n
            by_op[node.op_type] = by_op.get(node.op_type, 0) + 2 * n
    return model, macs, by_op, uncounted


def count_onnx_flops(model_or_path: str | os.PathLike | onnx.ModelProto, batch: int = 1,
                     input_shape: tuple[int, int, int] | None = None) -> OnnxFlopsReport:
    """Count the FLOPs (2 x MACs) of an ONNX model with one NCHW input at `batch` x `input_shape` (C, H, W).

    `input_shape` is needed only where the ONNX input has symbolic channels/height/width; a path is loaded
    without its external data. The caller's ModelProto is never changed.
    """
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    model = _load(model_or_path)
    if model.functions:  # model-local functions: count their bodies as part of the graph
        model = onnx.inliner.inline_local_functions(model)
    params = sum(math.prod(t.dims) for t in model.graph.initializer if t.data_type != TensorProto.INT64 and math.prod(t.dims) > 1)
    input_name, chw = _fix_input(model, batch, input_shape)
    _weights_as_inputs(model.graph)
    model, macs, by_op, uncounted = _infer_and_count(model)
    # Each round folds at least one node into a constant, so this ends; a round can resolve the shapes the next needs.
    while uncounted and _fold_constants(model):
        model, macs, by_op, uncounted = _infer_and_count(model)
    layers = sum(1 for node in model.graph.node if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"))
    return OnnxFlopsReport(flops=2 * macs, macs=macs, params=params, batch=batch, input_name=input_name,
                           input_shape=chw, by_op_type=by_op, uncounted=uncounted, complete=not uncounted,
                           layers=layers)
