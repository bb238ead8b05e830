"""Tiny ONNX 'super-resolution' models for tests: one convolution, then DepthToSpace."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_conv_sr(
    path: Path,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    scale: int = 2,
    *,
    int_input: bool = False,
    fixed_hw: tuple[int, int] | None = None,
) -> Path:
    """Save a model ``input (n, C, h, w) -> Conv(weight, bias) -> DepthToSpace(scale) -> output``.

    ``weight`` has shape ``(scale**2, C, k, k)`` with odd ``k`` (padded to keep the size); at
    scale 1 the convolution is the output. The model passes ``onnx.checker``. ``int_input``:
    the input is int32 (cast to float inside); ``fixed_hw``: the input has that fixed size.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.asarray(weight, dtype=np.float32)
    in_channels, pad = weight.shape[1], weight.shape[2] // 2
    inputs = ["input", "w"] + (["b"] if bias is not None else [])
    initializer = [numpy_helper.from_array(weight, "w")]
    if bias is not None:
        initializer.append(numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "b"))
    nodes = [helper.make_node("Conv", inputs, ["conv"], pads=[pad] * 4)]
    if int_input:
        inputs[0] = "as_float"
        nodes = [
            helper.make_node("Cast", ["input"], ["as_float"], to=TensorProto.FLOAT),
            helper.make_node("Conv", inputs, ["conv"], pads=[pad] * 4),
        ]
    hw = list(fixed_hw) if fixed_hw else ["h", "w"]
    out_hw = [scale * d for d in fixed_hw] if fixed_hw else ["H", "W"]
    if scale > 1:
        nodes.append(helper.make_node("DepthToSpace", ["conv"], ["output"], blocksize=scale))
    else:
        nodes.append(helper.make_node("Identity", ["conv"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "conv_sr",
        [
            helper.make_tensor_value_info(
                "input",
                TensorProto.INT32 if int_input else TensorProto.FLOAT,
                ["n", in_channels, *hw],
            )
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 1, *out_hw])],
        initializer=initializer,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
