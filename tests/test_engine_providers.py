"""Execution-provider choice, install checks and CPU core counting of the inference engine."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from mlsim_live.engine import providers as prov
from mlsim_live.errors import MLSimError

pytest.importorskip("onnxruntime")


def test_cuda_requested_but_unavailable_falls_back_to_cpu_with_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="mlsim_live.engine.providers"):
        plans = prov.plan_providers(
            "cuda", [prov.CPU], fp16=None, input_name="input", opt_hw=(64, 64), max_hw=(64, 64)
        )
    assert [p.primary for p in plans] == [prov.CPU]
    assert any(
        "CUDAExecutionProvider" in r.message and "CPU" in r.message
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


def test_auto_orders_tensorrt_cuda_cpu(tmp_path: Path) -> None:
    plans = prov.plan_providers(
        "auto",
        [prov.TENSORRT, prov.CUDA, prov.CPU],
        fp16=None,
        input_name="x",
        opt_hw=(512, 512),
        max_hw=(1024, 1024),
        cache_dir=tmp_path / "trt",
    )
    assert [p.primary for p in plans] == [prov.TENSORRT, prov.CUDA, prov.CPU]
    trt, cuda, cpu = plans
    opts = dict(trt.providers)[prov.TENSORRT]
    assert opts["trt_fp16_enable"] is True and trt.fp16  # fp16 engine by default
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == str(
        tmp_path / "trt"
    )
    assert opts["trt_profile_max_shapes"] == "x:1x9x1024x1024"
    assert (tmp_path / "trt").is_dir()
    cuda_opts = dict(cuda.providers)[prov.CUDA]
    assert cuda_opts["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert not cuda.fp16_model  # fp16=None: fp32 on CUDA
    assert cpu.providers == [(prov.CPU, {})]
    fp16_plans = prov.plan_providers(
        "cuda",
        [prov.CUDA, prov.CPU],
        fp16=True,
        input_name="x",
        opt_hw=(64, 64),
        max_hw=(64, 64),
    )
    assert fp16_plans[0].fp16_model and fp16_plans[0].fp16
    assert not fp16_plans[-1].fp16  # the CPU fallback stays fp32


def test_resolve_provider_names() -> None:
    assert prov.resolve_provider("AUTO") == "auto"
    assert prov.resolve_provider("trt") == prov.TENSORRT
    assert prov.resolve_provider(prov.CUDA) == prov.CUDA
    with pytest.raises(MLSimError, match="expected auto, cpu, cuda"):
        prov.resolve_provider("opencl")


def test_double_install_in_one_folder_is_an_error(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    with pytest.raises(MLSimError, match=r"onnxruntime 1\.20\.0 and onnxruntime-gpu 1\.20\.0"):
        prov.check_single_install(
            [("onnxruntime", "1.20.0", site), ("onnxruntime-gpu", "1.20.0", site)]
        )
    # separate folders (a venv over system packages) work: the first on sys.path wins
    prov.check_single_install(
        [("onnxruntime", "1.20.0", site), ("onnxruntime-gpu", "1.20.0", tmp_path / "venv")]
    )
    prov.check_single_install([("onnxruntime", "1.20.0", site)])


def test_this_environment_has_a_single_onnxruntime() -> None:
    dists = prov.installed_ort_distributions()
    assert dists, "onnxruntime is importable, so one distribution must be installed"
    prov.check_single_install(dists)


def test_physical_cores_is_within_usable_cpus() -> None:
    cores = prov.physical_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)


def test_cpu_session_options_use_physical_cores() -> None:
    ort = prov.import_onnxruntime()
    so = prov.cpu_session_options()
    assert so.intra_op_num_threads == prov.physical_cores()
    assert so.inter_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert prov.cpu_session_options(threads=3).intra_op_num_threads == 3
