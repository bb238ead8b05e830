"""What `mlsim-live bench` times: backend names, the configuration and the result rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsim_live.errors import MLSimError

log = logging.getLogger(__name__)


TORCH_CPU = "torch-cpu"
TORCH_CUDA = "torch-cuda"
ORT_CPU = "ort-cpu"
ORT_CUDA = "ort-cuda"
ORT_CUDA_FP16 = "ort-cuda-fp16"
ORT_TRT_FP16 = "ort-tensorrt-fp16"
WIENER = "wiener"
WIENER_ESTIMATE = "wiener-estimate"
TRUST = "trust"

MODEL_BACKENDS = (TORCH_CPU, TORCH_CUDA, ORT_CPU, ORT_CUDA, ORT_CUDA_FP16, ORT_TRT_FP16)
ALL_BACKENDS = (*MODEL_BACKENDS, WIENER, WIENER_ESTIMATE, TRUST)
DEFAULT_MODELS = ("default", "paper")
#: Which PyTorch eager row a backend's ratio refers to (same device).
RATIO_REFERENCE = {
    TORCH_CPU: TORCH_CPU,
    ORT_CPU: TORCH_CPU,
    TORCH_CUDA: TORCH_CUDA,
    ORT_CUDA: TORCH_CUDA,
    ORT_CUDA_FP16: TORCH_CUDA,
    ORT_TRT_FP16: TORCH_CUDA,
}


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark.

    Attributes
    ----------
    size : int
        Frame side in pixels (the group is 9 x size x size).
    repeats : int
        Timed runs per backend (after one untimed warm-up run).
    max_time_s : float
        Stop a backend's timed runs after this long, once ``min(3, repeats)`` are done.
    models : tuple of str
        ``"default"``, ``"paper"`` (or another preset name), or paths of ``.onnx`` files.
    backends : tuple of str
        Subset of `ALL_BACKENDS`.
    threads : int or None
        CPU threads for ONNX Runtime and PyTorch; None: physical cores.
    seed : int
        Seed of the simulated input group and of the random weights.
    parity : bool
        Also compare the outputs of the backends on the same weights (max abs difference).
    precisions : tuple of str
        Precisions of the ONNX Runtime CPU rows: ``fp32``, ``int8`` (the model's
        ``NAME.int8.onnx``, else quantized on the fly), ``bf16`` (refused where ONNX Runtime
        cannot run it: a skipped row with the reason).
    """

    size: int = 512
    repeats: int = 10
    max_time_s: float = 60.0
    models: tuple[str, ...] = DEFAULT_MODELS
    backends: tuple[str, ...] = ALL_BACKENDS
    threads: int | None = None
    seed: int = 0
    parity: bool = False
    precisions: tuple[str, ...] = ("fp32", "bf16", "int8")

    def __post_init__(self) -> None:
        if self.size < 16:
            raise MLSimError(f"bench size is {self.size}; expected >= 16 pixels")
        if self.repeats < 1:
            raise MLSimError(f"bench repeats is {self.repeats}; expected >= 1")
        unknown = [b for b in self.backends if b not in ALL_BACKENDS]
        if unknown:
            raise MLSimError(f"unknown backends {unknown}; expected some of {list(ALL_BACKENDS)}")
        bad = [p for p in self.precisions if p not in ("fp32", "bf16", "int8")]
        if bad:
            raise MLSimError(f"bench precisions {bad}; expected some of fp32, bf16, int8")
        if not self.models and not any(b.startswith(WIENER) or b == TRUST for b in self.backends):
            raise MLSimError("nothing to benchmark; expected at least one model or wiener")


@dataclass
class BenchRow:
    """Figures of one (model, backend, precision) row; the roofline fields are None where the
    FLOPs are not counted (Wiener, trust) or the peak is not measured (GPU)."""

    model: str
    backend: str
    provider: str
    precision: str
    latency_ms: dict[str, float]
    groups_per_s: float
    n: int
    init_s: float
    peak_mem_mb: float | None
    peak_mem_kind: str
    ratio_vs_torch_eager: float | None = None
    note: str = ""
    flops_per_group: float | None = None
    achieved_gflops: float | None = None
    peak_gflops: float | None = None
    fraction_of_peak: float | None = None


@dataclass
class BenchModel:
    """A model to time: its ONNX file and, with torch, an equivalent PyTorch module."""

    label: str
    onnx_path: Path | None
    torch_module: Any = None
    architecture: dict[str, Any] | None = None
    note: str = ""
    torch_same_weights: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
