"""`mlsim-live bench`: timing helpers, memory measurement, the report and its JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx_models import write_conv_sr

from mlsim_live.bench import (
    ALL_BACKENDS,
    ORT_CPU,
    TORCH_CPU,
    WIENER,
    BenchConfig,
    PeakMemory,
    format_table,
    run_bench,
    summarize_ms,
    time_calls,
)
from mlsim_live.cli import main
from mlsim_live.errors import MLSimError

ROW_KEYS = {
    "model",
    "backend",
    "provider",
    "precision",
    "latency_ms",
    "groups_per_s",
    "n",
    "init_s",
    "peak_mem_mb",
    "peak_mem_kind",
    "ratio_vs_torch_eager",
    "note",
    "flops_per_group",
    "achieved_gflops",
    "peak_gflops",
    "fraction_of_peak",
}


def conv_model(path: Path) -> Path:
    """A one-layer 2x 'super-resolution' ONNX model (3x3 conv, DepthToSpace)."""
    pytest.importorskip("onnx")
    weight = np.random.default_rng(0).standard_normal((4, 9, 3, 3)).astype(np.float32) * 0.1
    return write_conv_sr(path, weight)


def test_time_calls_stops_after_the_time_budget() -> None:
    calls = []
    times = time_calls(lambda: calls.append(1), repeats=1000, max_time_s=0.0, warmup=2)
    assert len(times) == 3 and len(calls) == 5  # 2 warm-up + the minimum of 3 timed runs
    assert len(time_calls(lambda: None, repeats=2, max_time_s=0.0)) == 2


def test_summarize_ms() -> None:
    stats = summarize_ms([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["p50"] == 3.0 and stats["min"] == 1.0 and stats["max"] == 100.0
    assert 4.0 < stats["p95"] < 100.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_memory_sees_a_temporary_allocation() -> None:
    with PeakMemory() as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
        del block
    assert mem.mb is not None and mem.mb > 40
    with PeakMemory() as small:
        np.ones(1000)
    assert small.mb is not None and small.mb < 40  # the earlier peak does not leak in


def test_bench_config_is_checked() -> None:
    with pytest.raises(MLSimError, match="unknown backends"):
        BenchConfig(backends=("ort-opencl",))
    with pytest.raises(MLSimError, match="size"):
        BenchConfig(size=8)


def test_bench_onnx_file_on_cpu(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = conv_model(tmp_path / "conv_sr.onnx")
    report = run_bench(
        BenchConfig(
            size=64,
            repeats=2,
            models=(str(model),),
            backends=(ORT_CPU, "ort-cuda"),
            precisions=("fp32",),
        )
    )
    (row,) = report["results"]
    assert set(row) == ROW_KEYS
    assert row["model"] == "conv_sr.onnx" and row["backend"] == ORT_CPU
    assert row["provider"] == "CPUExecutionProvider" and row["n"] == 2
    assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p95"] * (1 + 1e-9)
    assert row["groups_per_s"] == pytest.approx(1e3 / row["latency_ms"]["p50"])
    assert report["input"]["shape"] == [9, 64, 64]
    assert report["machine"]["physical_cores"] >= 1 and report["machine"]["cpu_model"]
    text = format_table(report)
    assert "conv_sr.onnx" in text and "p50 ms" in text and "% peak" in text
    # roofline: the conv's FLOPs at 64 x 64, and this machine's fp32 peak
    assert row["flops_per_group"] == 2 * 4 * 64 * 64 * 9 * 3 * 3
    assert row["peak_gflops"] > 0 and 0 < row["fraction_of_peak"]
    assert row["precision"] == "fp32"
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert any(s["backend"] == "ort-cuda" for s in report["skipped"])


@pytest.mark.slow
def test_cli_bench_writes_json_with_expected_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    has_torch = True
    try:
        import torch  # noqa: F401
    except ImportError:
        has_torch = False
    model = conv_model(tmp_path / "conv_sr.onnx")
    out = tmp_path / "bench.json"
    models = f"{model},tiny"
    rc = main(
        [
            "bench",
            "--size",
            "64",
            "--repeats",
            "2",
            "--models",
            models,
            "--parity",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert {"date", "machine", "config", "input", "results", "skipped", "notes"} <= set(report)
    assert report["config"]["size"] == 64 and report["config"]["backends"] == list(ALL_BACKENDS)
    for row in report["results"]:
        assert set(row) == ROW_KEYS
        assert {"p50", "p95"} <= set(row["latency_ms"])
    backends = {(r["model"], r["backend"]) for r in report["results"]}
    assert ("conv_sr.onnx", ORT_CPU) in backends
    if has_torch:
        tiny = "tiny (random weights)"
        assert (tiny, TORCH_CPU) in backends
        by = {(r["model"], r["backend"]): r for r in report["results"]}
        if (tiny, ORT_CPU) in by:
            (parity,) = [p for p in report["parity"] if p["model"] == tiny]
            assert parity["reference"] == TORCH_CPU
            assert parity["diffs"][ORT_CPU]["max_abs_rel"] < 1e-4  # same weights, same result
            ratio = by[(tiny, ORT_CPU)]["ratio_vs_torch_eager"]
            p50s = (
                by[(tiny, TORCH_CPU)]["latency_ms"]["p50"],
                by[(tiny, ORT_CPU)]["latency_ms"]["p50"],
            )
            assert ratio == pytest.approx(p50s[0] / p50s[1])
    else:
        assert any(s["model"] == "tiny" for s in report["skipped"])
    wiener_rows = [r for r in report["results"] if r["backend"] == WIENER]
    wiener_skips = [s for s in report["skipped"] if s["backend"] == WIENER]
    assert len(wiener_rows) + len(wiener_skips) == 1
    printed = capsys.readouterr().out
    assert "p50 ms" in printed and "conv_sr.onnx" in printed
    # an existing JSON is never overwritten without --overwrite, and nothing is timed first
    before = out.read_bytes()
    assert main(["bench", "--size", "64", "--models", str(model), "--json", str(out)]) == 2
    assert out.read_bytes() == before
    assert not list(tmp_path.glob(".bench.json*"))


def test_exported_model_gets_pytorch_rows_from_its_card(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from mlsim_live.model.export import export_onnx
    from mlsim_live.model.rcan import build_model

    torch.manual_seed(0)
    path = tmp_path / "tiny.onnx"
    export_onnx(build_model("tiny"), path, parity_sizes=(32,))
    report = run_bench(
        BenchConfig(
            size=48, repeats=1, models=(str(path),), backends=(TORCH_CPU, ORT_CPU), parity=True
        )
    )
    rows = {r["backend"]: r for r in report["results"]}
    assert set(rows) == {TORCH_CPU, ORT_CPU}
    assert rows[ORT_CPU]["ratio_vs_torch_eager"] == pytest.approx(
        rows[TORCH_CPU]["latency_ms"]["p50"] / rows[ORT_CPU]["latency_ms"]["p50"]
    )
    assert any("random weights" in note for note in report["notes"])
    # PyTorch has the architecture but not the file's weights: no parity claimed against it
    assert report["parity"] == []


def test_a_preset_gets_onnx_rows_without_asking_for_pytorch_rows() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    report = run_bench(BenchConfig(size=32, repeats=1, models=("tiny",), backends=(ORT_CPU,)))
    rows = report["results"]
    assert rows and all(r["backend"] == ORT_CPU for r in rows)
    assert all(r["model"].startswith("tiny") for r in rows)
    assert "fp32" in {r["precision"] for r in rows}


def test_cli_bench_live_path_counts_every_group(tmp_path, capsys):
    out = tmp_path / "live.json"
    args = ["bench", "--live", "--method", "widefield", "--size", "32", "--groups", "6"]
    args += ["--policy", "all", "--frame-ms", "1", "--json", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["policy"] == "all"
    assert report["groups_acquired"] == 6 and report["errors"] == 0
    # policy "all" drops nothing: every acquired group is reconstructed
    assert report["groups_reconstructed"] == 6 and report["groups_dropped"] == 0
    assert report["hook_ms"]["p50"] is not None and report["latency_over_bare"] is not None
