"""Bad models (issue 12): an int32 or fixed-size input is refused when the model loads, in one
line; NaN outputs are reconstruction errors; a model without its card reports the
out-of-distribution check as unavailable, not as 0."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
from onnx_models import write_conv_sr

from mlsim_live.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

SIZE = 16


def mean_weight() -> np.ndarray:
    return np.full((4, 9, 1, 1), 1 / 9, dtype=np.float32)


def stack(tmp_path: Path, n_groups: int = 3) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "raw.tif"
    data = (100 + rng.poisson(200.0, size=(9 * n_groups, SIZE, SIZE))).astype(np.uint16)
    tifffile.imwrite(path, data, metadata=None)
    return path


def one_error_line(err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"int_input": True}, ("tensor(int32)", "expected float32 or float16")),
        ({"fixed_hw": (64, 64)}, ("fixed size (64 x 64)", "dynamic height and width")),
    ],
)
@pytest.mark.parametrize("command", ["reconstruct", "replay"])
def test_unusable_model_input_is_refused_at_load(tmp_path, capsys, kwargs, words, command):
    model = write_conv_sr(tmp_path / "bad.onnx", mean_weight(), **kwargs)
    out = tmp_path / "out"
    args = [command, str(stack(tmp_path)), "--out", str(out), "--method", "rcan"]
    args += ["--model", str(model)]
    if command == "replay":
        args.append("--headless")
    assert main(args) == 2
    one_error_line(capsys.readouterr().err, "bad.onnx", *words)
    assert not out.exists() or list(out.iterdir()) == []


def test_nan_output_is_an_error_in_reconstruct(tmp_path, capsys):
    model = write_conv_sr(tmp_path / "nan.onnx", np.full((4, 9, 1, 1), np.nan, np.float32))
    out = tmp_path / "out"
    args = ["reconstruct", str(stack(tmp_path)), "--out", str(out), "--method", "rcan"]
    assert main([*args, "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert "NaN/Inf pixels" in err and "Traceback" not in err
    assert not (out / "raw_sr.tif").exists()


def test_nan_output_is_an_error_in_replay(tmp_path, capsys):
    model = write_conv_sr(tmp_path / "nan.onnx", np.full((4, 9, 1, 1), np.nan, np.float32))
    out = tmp_path / "out"
    args = ["replay", str(stack(tmp_path)), "--out", str(out), "--method", "rcan", "--headless"]
    assert main([*args, "--model", str(model)]) == 2
    one_error_line(capsys.readouterr().err, "no group was reconstructed", "3 failed")


def test_model_without_card_reports_the_ood_check_unavailable(tmp_path, capsys, caplog):
    model = write_conv_sr(tmp_path / "nocard.onnx", mean_weight())
    out = tmp_path / "out"
    args = ["replay", str(stack(tmp_path)), "--out", str(out), "--method", "rcan", "--headless"]
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--model", str(model)]) == 0
    summary = json.loads((out / "raw_summary.json").read_text())
    assert summary["ood_groups"] is None
    assert summary["ood_check"].startswith("unavailable")
    warnings = [
        r for r in caplog.records if "out-of-distribution check is unavailable" in r.message
    ]
    assert len(warnings) == 1


def test_model_without_card_in_reconstruct(tmp_path, caplog):
    model = write_conv_sr(tmp_path / "nocard.onnx", mean_weight())
    out = tmp_path / "out"
    args = ["reconstruct", str(stack(tmp_path)), "--out", str(out), "--method", "rcan"]
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--model", str(model)]) == 0
    sidecar = json.loads((out / "raw_sr.json").read_text())
    assert sidecar["ood_groups"] is None
    assert "out-of-distribution check is unavailable" in caplog.text


@pytest.mark.mm
def test_demo_with_a_fixed_size_model_leaves_no_folder(tmp_path, capsys):
    model = write_conv_sr(tmp_path / "fixed.onnx", mean_weight(), fixed_hw=(64, 64))
    out = tmp_path / "out"
    args = ["demo", "--headless", "--groups", "1", "--size", "32", "--out", str(out)]
    assert main([*args, "--method", "rcan", "--model", str(model)]) == 2
    one_error_line(capsys.readouterr().err, "fixed size")
    assert not out.exists()
