"""The roofline column: a model's arithmetic per group, counted from its ONNX graph, against the
machine's measured peak for the same precision.

FLOPs count a multiply-add as 2 (int8 "FLOPs" are integer operations, counted the same way) for
``Conv``, ``ConvTranspose``, ``MatMul`` and ``Gemm`` at the actual input size; element-wise
operations are left out (they are memory-bound, a few percent of the arithmetic). The peak is a
short probe run by ONNX Runtime on this machine with the bench's threads: a 1024 x 1024 fp32
``MatMul`` (MLAS SGEMM) and a u8 x s8 ``MatMulInteger`` (the kernel int8 convolutions use),
best of a few runs: what this machine's dense kernels reach now, load included.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PROBE_SIZE = 1024
PROBE_REPEATS = 5
COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _dims(value_info: Any) -> list[int] | None:
    dims = value_info.type.tensor_type.shape.dim
    out = [d.dim_value for d in dims]
    return out if out and all(v > 0 for v in out) else None


def count_flops(model_path: Path, input_shape: tuple[int, ...]) -> dict[str, Any] | None:
    """FLOPs of one run of the model on ``input_shape`` ``(1, C, H, W)``, total and per op type.

    Returns None when the ``onnx`` package is missing or the shapes cannot be inferred.
    """
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        log.info("onnx is not installed: no FLOP count (pip install onnx)")
        return None
    model = onnx.load(str(model_path))
    graph_input = model.graph.input[0]
    for dim, value in zip(graph_input.type.tensor_type.shape.dim, input_shape):
        dim.ClearField("dim_param")
        dim.dim_value = int(value)
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception as exc:  # an op without a shape function: no count, the bench goes on
        log.info("shape inference failed on %s: %s", Path(model_path).name, exc)
        return None
    shapes = {vi.name: _dims(vi) for vi in inferred.graph.value_info}
    shapes.update({vi.name: _dims(vi) for vi in inferred.graph.output})
    shapes.update({vi.name: _dims(vi) for vi in inferred.graph.input})
    weights = {init.name: list(init.dims) for init in inferred.graph.initializer}
    by_op: dict[str, float] = {}
    for node in inferred.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        flops = _node_flops(node, shapes, weights)
        if flops is None:
            log.info("no shape for %s %s: left out of the FLOP count", node.op_type, node.name)
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0.0) + flops
    total = float(sum(by_op.values()))
    pixels = int(np.prod(input_shape[2:]))
    return {"total": total, "by_op": by_op, "per_input_pixel": total / max(1, pixels)}


def _node_flops(
    node: Any, shapes: dict[str, list[int] | None], weights: dict[str, list[int]]
) -> float | None:
    out = shapes.get(node.output[0])
    if node.op_type in ("Conv", "ConvTranspose"):
        w = weights.get(node.input[1]) or shapes.get(node.input[1])
        if out is None or w is None:
            return None
        # weight (Cout, Cin/groups, k...) for Conv; (Cin, Cout/groups, k...) for ConvTranspose
        if node.op_type == "Conv":
            macs = float(np.prod(out)) * float(np.prod(w[1:]))
        else:
            x = shapes.get(node.input[0])
            if x is None:
                return None
            macs = float(np.prod(x)) * float(np.prod(w[1:]))
        return 2.0 * macs
    a = shapes.get(node.input[0])
    if out is None or a is None:
        return None
    k = a[-1] if node.op_type == "MatMul" else _gemm_k(node, a)
    return 2.0 * float(np.prod(out)) * float(k)


def _gemm_k(node: Any, a: list[int]) -> int:
    trans_a = any(att.name == "transA" and att.i for att in node.attribute)
    return a[0] if trans_a else a[-1]


def _probe_session(ort: Any, model: Any, threads: int) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"]
    )


def peak_gflops(precision: str, threads: int, n: int = PROBE_SIZE) -> float | None:
    """Measured dense-kernel peak of this machine for ``precision`` (``fp32`` or ``int8``), in
    GFLOP/s (int8: G integer ops/s); None when it cannot be measured here."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    a: np.ndarray
    if precision == "fp32":
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "b")
        node = helper.make_node("MatMul", ["a", "b"], ["c"])
        in_type, out_type, extra = TensorProto.FLOAT, TensorProto.FLOAT, []
    elif precision == "int8":
        a = rng.integers(0, 255, (n, n), dtype=np.uint8)
        b = numpy_helper.from_array(rng.integers(-127, 127, (n, n), dtype=np.int8), "b")
        zero = numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zero")
        node = helper.make_node("MatMulInteger", ["a", "b", "a_zero"], ["c"])
        in_type, out_type, extra = TensorProto.UINT8, TensorProto.INT32, [zero]
    else:
        return None
    graph = helper.make_graph(
        [node],
        f"peak_{precision}",
        [helper.make_tensor_value_info("a", in_type, [n, n])],
        [helper.make_tensor_value_info("c", out_type, [n, n])],
        [b, *extra],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    try:
        session = _probe_session(ort, model, threads)
        session.run(None, {"a": a})
    except Exception as exc:
        log.info("peak probe %s failed: %s", precision, exc)
        return None
    best = float("inf")
    for _ in range(PROBE_REPEATS):
        t0 = time.perf_counter()
        session.run(None, {"a": a})
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def roofline_fields(flops: float | None, p50_ms: float, peak: float | None) -> dict[str, Any]:
    """``flops_per_group``, ``achieved_gflops`` and ``fraction_of_peak`` of one row."""
    if flops is None or p50_ms <= 0:
        return {"flops_per_group": None, "achieved_gflops": None, "fraction_of_peak": None}
    achieved = flops / (p50_ms / 1e3) / 1e9
    return {
        "flops_per_group": flops,
        "achieved_gflops": round(achieved, 2),
        "fraction_of_peak": round(achieved / peak, 4) if peak else None,
    }
