"""`run_bench`: every requested and available backend and precision, side by side."""

from __future__ import annotations

import datetime
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.bench.backends import (
    ORT_VARIANTS,
    _add_ratios,
    _bench_model_backend,
    _bench_trust,
    _bench_wiener,
    _ort_available,
    _parity,
)
from mlsim_live.bench.config import (
    ORT_CPU,
    TORCH_CPU,
    TORCH_CUDA,
    TRUST,
    WIENER,
    BenchConfig,
    BenchModel,
    BenchRow,
)
from mlsim_live.bench.machine import machine_info
from mlsim_live.bench.models import _import_torch, bench_group, prepare_models
from mlsim_live.bench.roofline import count_flops, peak_gflops, roofline_fields
from mlsim_live.errors import MLSimError

log = logging.getLogger(__name__)

NOTES = [
    "latency = one whole reconstruct() call: normalization, padding, copies, inference "
    "(and the Wiener prior for prior-fed models)",
    "ratio_vs_torch_eager = PyTorch eager p50 on the same device / this p50",
    "peak_mem_mb: rss_hwm = peak resident memory above the start of this backend "
    "(session, weights, buffers); torch_cuda = torch.cuda.max_memory_allocated; "
    "gpu_device = rise of used GPU memory",
    "roofline: flops_per_group counts Conv/MatMul/Gemm of the ONNX graph at this input size "
    "(a multiply-add = 2; int8: integer ops); achieved_gflops = flops / p50 of the whole call; "
    "peak_gflops = best of a 1024^3 MatMul (fp32) or MatMulInteger u8s8 (int8) probe on ONNX "
    "Runtime with the same threads, run by this bench under the machine's current load",
]


@dataclass
class _Context:
    """What every model's rows share."""

    config: BenchConfig
    group: np.ndarray
    threads: int
    torch: Any
    available: list[str]
    unavailable: dict[str, str]
    peaks: dict[str, float | None] = field(default_factory=dict)
    rows: list[BenchRow] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    parity: list[dict[str, Any]] = field(default_factory=list)

    def peak(self, precision: str) -> float | None:
        """The measured peak for ``precision`` (probed once per run)."""
        if precision not in self.peaks:
            self.peaks[precision] = peak_gflops(precision, self.threads)
        return self.peaks[precision]


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Benchmark every requested and available backend; return the JSON-able report."""
    from mlsim_live.engine import providers as prov

    threads = config.threads or prov.physical_cores()
    started = datetime.datetime.now(datetime.timezone.utc).astimezone()
    machine = machine_info()
    group, input_info = bench_group(config.size, config.seed)
    skipped: list[dict[str, str]] = []
    try:
        available = prov.available_providers()
    except MLSimError as exc:
        available = []
        skipped.append({"model": "*", "backend": "ort-*", "reason": str(exc)})
    want_torch = any(b.startswith("torch") for b in config.backends) or config.parity
    # torch also measures GPU memory for the ONNX Runtime GPU rows; importing it costs seconds
    gpu_rows = any(
        b in ORT_VARIANTS and b != ORT_CPU and _ort_available(b, available) is None
        for b in config.backends
    )
    torch = _import_torch() if want_torch or gpu_rows else None
    unavailable = _unavailable_backends(config.backends, torch, available)
    ctx = _Context(config, group, threads, torch, available, unavailable, skipped=skipped)
    with tempfile.TemporaryDirectory(prefix="mlsim-bench-") as tmp:
        models, model_skips = prepare_models(
            config.models, Path(tmp), config.seed, want_torch=want_torch
        )
        ctx.skipped.extend(model_skips)
        ctx.skipped.extend(
            {"model": "*", "backend": b, "reason": r} for b, r in unavailable.items()
        )
        for model in models:
            model.extra["tmp"] = tmp
            _bench_one_model(ctx, model)
        _bench_classical(ctx, input_info)
    _add_ratios(ctx.rows)
    try:
        load_end = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load_end = None
    report: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine,
        "load_avg_at_end": load_end,
        "config": {**asdict(config), "threads": threads},
        "input": input_info,
        "peak_gflops": ctx.peaks,
        "results": [asdict(r) for r in ctx.rows],
        "skipped": ctx.skipped,
        "notes": list(NOTES) + [f"{m.label}: {m.note}" for m in models if m.note],
    }
    if config.parity:
        report["parity"] = ctx.parity
    return report


def _bench_one_model(ctx: _Context, model: BenchModel) -> None:
    """Every backend (and on the CPU every precision) of one model, with its roofline."""
    config = ctx.config
    flops = _model_flops(model, config.size)
    outputs: dict[str, np.ndarray] = {}
    for backend in config.backends:
        if backend.startswith(WIENER) or backend == TRUST or backend in ctx.unavailable:
            continue
        precisions = config.precisions if backend == ORT_CPU else ("fp32",)
        for precision in precisions:
            row, out, reason = _bench_model_backend(
                model, backend, ctx.group, config, ctx.threads, ctx.torch, ctx.available, precision
            )
            name = (
                backend if backend != ORT_CPU or precision == "fp32" else f"{backend} {precision}"
            )
            if reason:
                ctx.skipped.append({"model": model.label, "backend": name, "reason": reason})
                continue
            assert row is not None
            on_cpu = backend in (ORT_CPU, TORCH_CPU)
            peak = ctx.peak(row.precision) if on_cpu else None
            fields = roofline_fields(flops, row.latency_ms["p50"], peak)
            row.flops_per_group = fields["flops_per_group"]
            row.achieved_gflops = fields["achieved_gflops"]
            row.fraction_of_peak = fields["fraction_of_peak"]
            row.peak_gflops = None if peak is None else round(peak, 1)
            ctx.rows.append(row)
            same_weights = backend not in (TORCH_CPU, TORCH_CUDA) or model.torch_same_weights
            if out is not None and same_weights and precision == "fp32":
                outputs[backend] = out
    if config.parity and len(outputs) > 1:
        ctx.parity.append(_parity(model.label, outputs))


def _model_flops(model: BenchModel, size: int) -> float | None:
    """FLOPs of one group through the model's graph (padded as the reconstructor pads)."""
    from mlsim_live.engine.rcan import DEFAULT_SIZE_MULTIPLE, MIN_INPUT_SIZE
    from mlsim_live.engine.tiling import padded_length

    if model.onnx_path is None:
        return None
    channels = int((model.architecture or {}).get("in_channels", 9))
    side = padded_length(size, DEFAULT_SIZE_MULTIPLE, MIN_INPUT_SIZE)
    counted = count_flops(model.onnx_path, (1, channels, side, side))
    if counted is None:
        return None
    model.extra["flops"] = counted
    return counted["total"]


def _bench_classical(ctx: _Context, input_info: dict[str, Any]) -> None:
    """The Wiener and trust rows."""
    wiener_wanted = [b for b in ctx.config.backends if b.startswith(WIENER)]
    if wiener_wanted:
        rows_w, skips_w = _bench_wiener(wiener_wanted, ctx.group, input_info, ctx.config)
        ctx.rows.extend(rows_w)
        ctx.skipped.extend(skips_w)
    if TRUST in ctx.config.backends:
        rows_t, skips_t = _bench_trust(ctx.group, input_info, ctx.config)
        ctx.rows.extend(rows_t)
        ctx.skipped.extend(skips_t)


def _unavailable_backends(
    backends: tuple[str, ...], torch: Any, available: list[str]
) -> dict[str, str]:
    """Backends that cannot run on this machine at all, with the reason."""
    out: dict[str, str] = {}
    for backend in backends:
        if backend in (TORCH_CPU, TORCH_CUDA) and torch is None:
            out[backend] = "torch is not installed (pip install 'mlsim-live[train]')"
        elif backend == TORCH_CUDA and not torch.cuda.is_available():
            out[backend] = "PyTorch sees no CUDA device"
        elif backend in ORT_VARIANTS:
            reason = _ort_available(backend, available) if available else "no onnxruntime"
            if reason:
                out[backend] = reason
    return out
