"""Latency of every available reconstruction backend on one simulated group, side by side.

Models: the default shipped model and the ``paper`` architecture (random weights: timing does
not depend on them). Backends: PyTorch eager fp32 (CPU, and CUDA when present), ONNX Runtime
on CPU in every precision the CPU supports (fp32, int8; bf16 refused with the reason), CUDA
fp32/fp16 and TensorRT fp16 (when available), and the Wiener reconstruction (with its pattern
estimate reused, as in live use, and with estimation on every group). Every figure covers the
whole ``reconstruct`` call (normalization, padding and copies included); each model row also
carries the roofline column (`mlsim_live.bench.roofline`).

Modules: `config` (names, configuration, rows), `machine` (machine facts, peak memory),
`models` (input group, models), `backends` (timing one row), `roofline` (FLOPs and measured
peak), `run` (`run_bench`) and `report` (`format_table`).
"""

from mlsim_live.bench.backends import ORT_VARIANTS
from mlsim_live.bench.config import (
    ALL_BACKENDS,
    DEFAULT_MODELS,
    MODEL_BACKENDS,
    ORT_CPU,
    ORT_CUDA,
    ORT_CUDA_FP16,
    ORT_TRT_FP16,
    RATIO_REFERENCE,
    TORCH_CPU,
    TORCH_CUDA,
    TRUST,
    WIENER,
    WIENER_ESTIMATE,
    BenchConfig,
    BenchModel,
    BenchRow,
)
from mlsim_live.bench.machine import PeakMemory, machine_info
from mlsim_live.bench.models import bench_group, export_random_onnx, prepare_models
from mlsim_live.bench.report import format_table
from mlsim_live.bench.roofline import count_flops, peak_gflops
from mlsim_live.bench.run import run_bench
from mlsim_live.latency import MIN_REPEATS, summarize_ms, time_calls

__all__ = [
    "ALL_BACKENDS",
    "DEFAULT_MODELS",
    "MIN_REPEATS",
    "MODEL_BACKENDS",
    "ORT_CPU",
    "ORT_CUDA",
    "ORT_CUDA_FP16",
    "ORT_TRT_FP16",
    "ORT_VARIANTS",
    "RATIO_REFERENCE",
    "TORCH_CPU",
    "TORCH_CUDA",
    "TRUST",
    "WIENER",
    "WIENER_ESTIMATE",
    "BenchConfig",
    "BenchModel",
    "BenchRow",
    "PeakMemory",
    "bench_group",
    "count_flops",
    "export_random_onnx",
    "format_table",
    "machine_info",
    "peak_gflops",
    "prepare_models",
    "run_bench",
    "summarize_ms",
    "time_calls",
]
