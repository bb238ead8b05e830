"""Timing one model on one backend (PyTorch, ONNX Runtime variants), Wiener and trust rows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.bench.config import (
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
from mlsim_live.bench.machine import PeakMemory, _gpu_peak
from mlsim_live.bench.models import _torch_runner
from mlsim_live.errors import MLSimError
from mlsim_live.latency import summarize_ms, time_calls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _OrtVariant:
    provider: str
    fp16: bool | None
    precision: str


ORT_VARIANTS = {
    ORT_CPU: _OrtVariant("cpu", False, "fp32"),
    ORT_CUDA: _OrtVariant("cuda", False, "fp32"),
    ORT_CUDA_FP16: _OrtVariant("cuda", True, "fp16"),
    ORT_TRT_FP16: _OrtVariant("tensorrt", True, "fp16"),
}


def _ort_available(backend: str, available: list[str]) -> str | None:
    """None when ``backend`` can run here, else the reason it cannot."""
    from mlsim_live.engine import providers as prov

    need = {
        ORT_CPU: prov.CPU,
        ORT_CUDA: prov.CUDA,
        ORT_CUDA_FP16: prov.CUDA,
        ORT_TRT_FP16: prov.TENSORRT,
    }[backend]
    if need not in available:
        return f"{need} is not in this onnxruntime build ({', '.join(available)})"
    return None


def _wiener_runners(optics: Any) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]]:
    """The Wiener reconstruction with its estimate reused (live use) and estimated each time."""

    def make(reuse: bool) -> Any:
        try:
            from mlsim_live.recon import make_reconstructor

            return make_reconstructor("wiener", optics=optics, reuse_estimate=reuse)
        except (ImportError, TypeError):
            from mlsim_live.recon.wiener import WienerReconstructor

            return WienerReconstructor(optics=optics, reuse_estimate=reuse)

    reused = make(True)
    fresh = make(False)
    return {
        WIENER: (reused.reconstruct, "pattern estimate reused between groups (live use)"),
        WIENER_ESTIMATE: (fresh.reconstruct, "pattern estimated on every group"),
    }


def _bench_model_backend(
    model: BenchModel,
    backend: str,
    group: np.ndarray,
    config: BenchConfig,
    threads: int,
    torch: Any,
    available: list[str],
    precision: str = "fp32",
) -> tuple[BenchRow | None, np.ndarray | None, str]:
    """Time one model on one backend; return (row, output, reason it was skipped)."""
    if backend in (TORCH_CPU, TORCH_CUDA):
        return _bench_torch(model, backend, group, config, threads, torch)
    if model.onnx_path is None:
        return None, None, "no ONNX file for this model"
    reason = _ort_available(backend, available)
    if reason:
        return None, None, reason
    variant = ORT_VARIANTS[backend]
    on_gpu = backend != ORT_CPU
    with PeakMemory() as mem, _gpu_peak(torch if on_gpu else None) as gpu:
        t0 = time.perf_counter()
        try:
            recon, note = _ort_reconstructor(model, variant, precision, config, threads)
        except MLSimError as exc:
            return None, None, str(exc)
        init_s = time.perf_counter() - t0
        expected = {
            "cpu": "CPUExecutionProvider",
            "cuda": "CUDAExecutionProvider",
            "tensorrt": "TensorrtExecutionProvider",
        }[variant.provider]
        if recon.provider != expected:
            return None, None, f"{expected} could not start; it fell back to {recon.provider}"
        if variant.fp16 and not recon.fp16:
            return None, None, "no fp16 model could be made (needs onnx, or NAME_fp16.onnx)"
        out = recon.reconstruct(group)
        times = time_calls(
            lambda: recon.reconstruct(group), config.repeats, config.max_time_s, warmup=0
        )
    peak: float | None
    if on_gpu and gpu["device_mb"] is not None:
        peak, kind = gpu["device_mb"], "gpu_device"
    else:
        peak, kind = mem.mb, mem.kind
    label = variant.precision if on_gpu else precision
    row = _row(model.label, backend, expected, label, times, init_s, peak, kind)
    row.note = note
    return row, out, ""


def _bench_torch(
    model: BenchModel,
    backend: str,
    group: np.ndarray,
    config: BenchConfig,
    threads: int,
    torch: Any,
) -> tuple[BenchRow | None, np.ndarray | None, str]:
    """Time PyTorch eager (fp32) on the CPU or CUDA."""
    if torch is None:
        return None, None, "torch is not installed"
    if model.torch_module is None:
        return None, None, "no PyTorch module for this model (architecture unknown)"
    if backend == TORCH_CUDA and not torch.cuda.is_available():
        return None, None, "no CUDA device for PyTorch"
    device = "cuda" if backend == TORCH_CUDA else "cpu"
    with PeakMemory() as mem, _gpu_peak(torch if device == "cuda" else None) as gpu:
        t0 = time.perf_counter()
        run = _torch_runner(model.torch_module, device, threads)
        init_s = time.perf_counter() - t0
        out = run(group)  # also the warm-up
        times = time_calls(lambda: run(group), config.repeats, config.max_time_s, warmup=0)
    model.torch_module.to("cpu")
    if device == "cuda":
        peak, kind = gpu["torch_mb"], "torch_cuda"
    else:
        peak, kind = mem.mb, mem.kind
    return (
        _row(model.label, backend, f"torch {device}", "fp32", times, init_s, peak, kind),
        out,
        "",
    )


def _ort_reconstructor(
    model: BenchModel, variant: _OrtVariant, precision: str, config: BenchConfig, threads: int
) -> tuple[Any, str]:
    """The method's reconstructor of ``model`` on ``variant`` in ``precision``, and a note.

    A prior-fed model runs its whole method (Wiener prior with the estimate reused, as live).
    int8 takes ``NAME.int8.onnx`` when the card records one, else a copy quantized now
    (`mlsim_live.engine.quantize`) in the bench's temporary folder; bf16 is refused with the
    reason (`mlsim_live.engine.precision.bf16_unsupported`).
    """
    from mlsim_live.engine import precision as prec
    from mlsim_live.recon import make_reconstructor, resolve_method

    assert model.onnx_path is not None
    path, note = model.onnx_path, ""
    if variant.provider != "cpu":
        precision = prec.FP32  # GPU rows: fp32 or fp16 by the backend
    elif precision == prec.BF16:
        raise MLSimError(f"bf16 refused: {prec.bf16_unsupported()}")
    elif precision == prec.INT8:
        reason = prec.int8_unsupported()
        if reason:
            raise MLSimError(f"int8 refused: {reason}")
        path, note = _int8_file(model, config)
    method = resolve_method("rcan", path)
    kw: dict[str, Any] = {"reuse_estimate": True} if method == "wiener-rcan" else {}
    recon = make_reconstructor(
        method,
        model=path,
        provider=variant.provider,
        fp16=variant.fp16,
        threads=threads,
        warmup=(config.size, config.size),
        tile_size=max(1024, config.size),
        precision=prec.AUTO if precision == prec.INT8 else prec.FP32,
        **kw,
    )
    return recon, note


def _int8_file(model: BenchModel, config: BenchConfig) -> tuple[Path, str]:
    """The int8 copy of ``model``: its own ``NAME.int8.onnx``, else quantized into the bench's
    temporary folder (beside a copy of the card, so the method and scale are known)."""
    import shutil

    from mlsim_live.engine import precision as prec
    from mlsim_live.engine import quantize as q
    from mlsim_live.engine.rcan import model_card_path, read_model_card

    assert model.onnx_path is not None
    own = prec.variant_path(model.onnx_path, prec.INT8)
    if own.is_file() and prec.INT8 in prec.card_precisions(read_model_card(model.onnx_path, False)):
        return own, f"{own.name}"
    tmp = Path(model.extra["tmp"]) / f"int8-{abs(hash(model.label))}"
    tmp.mkdir(parents=True, exist_ok=True)
    base = tmp / model.onnx_path.name
    target = prec.variant_path(base, prec.INT8)
    if not target.is_file():
        shutil.copyfile(model.onnx_path, base)
        card = model_card_path(model.onnx_path)
        if card.is_file():
            shutil.copyfile(card, base.with_suffix(".json"))
        qconfig = q.QuantizeConfig(calibration_size_px=64, calibration_per_kind=1)
        reference = q.learned_reconstructor(base, prec.FP32, threads=config.threads)
        q.quantize_int8(base, target, q.calibration_inputs(reference, qconfig))
    return target, "int8 quantized by the bench (no NAME.int8.onnx in the card)"


def _bench_wiener(
    wanted: list[str], group: np.ndarray, input_info: dict[str, Any], config: BenchConfig
) -> tuple[list[BenchRow], list[dict[str, str]]]:
    from mlsim_live.sim import Optics

    optics_dict = input_info["params"].get("optics", {})
    known = {
        k: optics_dict[k] for k in ("na", "wavelength_nm", "pixel_size_um") if k in optics_dict
    }
    optics = Optics(**known) if known else None
    try:
        runners = _wiener_runners(optics)
    except (ImportError, MLSimError) as exc:
        return [], [
            {"model": "-", "backend": b, "reason": f"Wiener unavailable: {exc}"} for b in wanted
        ]
    rows = []
    for backend in wanted:
        run, note = runners[backend]
        with PeakMemory() as mem:
            times = time_calls(partial(run, group), config.repeats, config.max_time_s)
        row = _row("wiener", backend, "numpy", "fp32/fp64", times, 0.0, mem.mb, mem.kind)
        row.note = note
        rows.append(row)
    return rows, []


def _bench_trust(
    group: np.ndarray, input_info: dict[str, Any], config: BenchConfig
) -> tuple[list[BenchRow], list[dict[str, str]]]:
    """The trust map of the group's Wiener reconstruction, with the pattern estimate and the
    camera noise reused (live use: both are measured once per acquisition)."""
    from mlsim_live.recon.wiener import WienerReconstructor
    from mlsim_live.sim import Optics
    from mlsim_live.trust import TrustMapper

    optics_dict = input_info["params"].get("optics", {})
    known = {
        k: optics_dict[k] for k in ("na", "wavelength_nm", "pixel_size_um") if k in optics_dict
    }
    try:
        wiener = WienerReconstructor(optics=Optics(**known) if known else None)
        estimate = wiener.estimate(group)
        sr = wiener.reconstruct(group)
        start = time.perf_counter()
        mapper = TrustMapper(estimate, workers=config.threads or -1)
        mapper.compute(group, sr)  # fits the camera noise, builds the plan
        init_s = time.perf_counter() - start
    except MLSimError as exc:
        return [], [{"model": "trust", "backend": TRUST, "reason": str(exc)}]
    with PeakMemory() as mem:
        times = time_calls(lambda: mapper.compute(group, sr), config.repeats, config.max_time_s)
    row = _row("trust", TRUST, "numpy", "fp32", times, init_s, mem.mb, mem.kind)
    row.note = "trust map of the Wiener reconstruction; pattern estimate and camera noise reused"
    return [row], []


def _row(
    model: str,
    backend: str,
    provider: str,
    precision: str,
    times: list[float],
    init_s: float,
    peak_mb: float | None,
    kind: str,
) -> BenchRow:
    stats = summarize_ms(times)
    return BenchRow(
        model=model,
        backend=backend,
        provider=provider,
        precision=precision,
        latency_ms=stats,
        groups_per_s=1e3 / stats["p50"] if stats["p50"] > 0 else float("inf"),
        n=len(times),
        init_s=init_s,
        peak_mem_mb=None if peak_mb is None else round(float(peak_mb), 1),
        peak_mem_kind=kind,
    )


def _add_ratios(rows: list[BenchRow]) -> None:
    by_key = {(r.model, r.backend): r for r in rows}
    for r in rows:
        ref = RATIO_REFERENCE.get(r.backend)
        base = by_key.get((r.model, ref)) if ref else None
        if base is not None and r.latency_ms["p50"] > 0:
            r.ratio_vs_torch_eager = base.latency_ms["p50"] / r.latency_ms["p50"]


def _parity(label: str, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Max abs differences of every backend's output against the first (reference) one."""
    ref_name = TORCH_CPU if TORCH_CPU in outputs else next(iter(outputs))
    ref = outputs[ref_name]
    span = float(np.abs(ref).max()) or 1.0
    diffs = {}
    for name, out in outputs.items():
        if name == ref_name:
            continue
        d = float(np.abs(out.astype(np.float64) - ref).max())
        diffs[name] = {"max_abs": d, "max_abs_rel": d / span}
    return {"model": label, "reference": ref_name, "output_max": span, "diffs": diffs}
