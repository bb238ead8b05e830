"""Static int8 quantization of a model (QDQ), calibrated through the real input path.

``mlsim-live quantize MODEL`` writes ``NAME.int8.onnx`` beside ``NAME.onnx`` and records in the
card, under ``precisions``, the held-out accuracy change against fp32, the parity and the
speed-up measured here (and, with ``--judge DIR``, the real-data judge's FRC change). Re-run it
on every new model: the calibration and the figures belong to the weights.

Calibration groups are simulated over every sample kind and photon level and pass through the
reconstructor's own `prepare` (normalization, and for prior-fed models the Wiener
reconstruction pixel-unshuffled into the 13-channel input), so the quantization ranges are
those the network sees in use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.engine import precision as prec
from mlsim_live.errors import MLSimError

log = logging.getLogger(__name__)

#: Seed root of the calibration groups (neither training's nor the held-out set's).
CALIBRATION_SEED = 5_000_011
CALIBRATION_PHOTONS = (10.0, 30.0, 100.0, 300.0, 1000.0, 5000.0)
#: The card's parity tolerance: this many times the held-out set's largest difference.
PARITY_MARGIN = 2.0


@dataclass(frozen=True)
class QuantizeConfig:
    """How to calibrate and check an int8 copy.

    Attributes
    ----------
    calibration_size_px : int
        Frame side of the calibration groups.
    calibration_per_kind : int
        Groups per (sample kind, photon level) pair.
    check_size_px : int
        Frame side of the held-out groups the accuracy is measured on.
    check_per_level : int
        Held-out groups per photon level (`mlsim_live.evaluation.held_out_set`).
    speed_size_px : int
        Frame side the speed-up is timed at.
    threads : int or None
        CPU threads for ONNX Runtime.
    """

    calibration_size_px: int = 96
    calibration_per_kind: int = 1
    check_size_px: int = 128
    check_per_level: int = 5
    speed_size_px: int = 256
    threads: int | None = None


def learned_reconstructor(model: Path, precision: str | None, **kw: Any) -> Any:
    """The CPU reconstructor of ``model`` (end-to-end or prior-fed, from its card)."""
    from mlsim_live.recon import make_reconstructor, resolve_method

    kw.setdefault("warmup", False)
    return make_reconstructor(
        resolve_method("rcan", model), model=model, provider="cpu", precision=precision, **kw
    )


def calibration_inputs(
    reconstructor: Any, config: QuantizeConfig, seed: int = CALIBRATION_SEED
) -> list[np.ndarray]:
    """Network inputs ``(1, C, H, W)`` of simulated groups of every sample kind and photon
    level, made by ``reconstructor.prepare`` (groups it would send to a fallback are left out)."""
    from mlsim_live.sim import SAMPLE_KINDS, random_params, simulate_group

    rng = np.random.default_rng(seed)
    inputs = []
    for photons in CALIBRATION_PHOTONS:
        for kind in SAMPLE_KINDS:
            for _ in range(config.calibration_per_kind):
                params = random_params(rng)
                params = replace(params, signal=replace(params.signal, peak_photons=photons))
                group = simulate_group(
                    params, kind, config.calibration_size_px, int(rng.integers(2**31))
                )
                prepared = reconstructor.prepare(group.raw)
                if prepared.x is not None:
                    inputs.append(np.ascontiguousarray(prepared.x[None], dtype=np.float32))
    if not inputs:
        raise MLSimError("no calibration group could be prepared; expected simulated SIM groups")
    return inputs


def with_global_pooling(model: Any) -> Any:
    """``model`` with every ``ReduceMean`` over the two spatial axes (channel attention)
    replaced by the equivalent ``GlobalAveragePool``, which ONNX Runtime runs in int8
    (``QLinearGlobalAveragePool``); a quantized ``ReduceMean`` runs in float on NHWC data and
    costs more than the convolutions it sits between."""
    from onnx import helper

    nodes = list(model.graph.node)
    for i, node in enumerate(nodes):
        if node.op_type != "ReduceMean" or len(node.input) != 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if sorted(attrs.get("axes", [])) not in ([2, 3], [-2, -1]) or attrs.get("keepdims", 1) != 1:
            continue
        pool = helper.make_node(
            "GlobalAveragePool", [node.input[0]], list(node.output), name=node.name
        )
        model.graph.node.remove(node)
        model.graph.node.insert(i, pool)
    return model


def quantize_int8(
    model: Path, out: Path, inputs: Sequence[np.ndarray], *, overwrite: bool = False
) -> Path:
    """Write the static int8 QDQ copy of ``model`` to ``out`` (atomically).

    Activations are unsigned 8-bit, weights signed 8-bit per output channel (the u8s8 form
    that x86 VNNI and arm dot-product kernels run); ranges are the min/max over ``inputs``.
    """
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as exc:
        raise MLSimError(
            f"int8 quantization needs onnx and onnxruntime ({exc}); pip install onnx"
        ) from exc
    from mlsim_live.io.atomic import atomic_path

    input_name = onnx.load(str(model), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    with tempfile.TemporaryDirectory(prefix="mlsim-quantize-") as tmp:
        pooled = Path(tmp) / "pooled.onnx"
        onnx.save(with_global_pooling(onnx.load(str(model))), str(pooled))
        with atomic_path(out, overwrite=overwrite) as target:
            quantize_static(
                str(pooled),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
            )
    log.info("wrote %s (int8 QDQ, %d calibration inputs)", out, len(inputs))
    return out


def _interleaved_p50_ms(
    runs: dict[str, Callable[[], object]], repeats: int = 5
) -> dict[str, float]:
    """Median time of each run, the runs taking turns (a shared machine's load hits all alike)."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():
        run()  # warm-up
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def compare_precisions(reference: Any, candidate: Any, config: QuantizeConfig) -> dict[str, Any]:
    """Held-out figures of ``candidate`` against the fp32 ``reference`` reconstructor.

    Returns the mean PSNR (dB) and SSIM of both against the ground truth, their changes
    (candidate - fp32; the worst group's too), the largest pixel difference relative to the
    fp32 image's range (the parity tolerance tests hold a model to) and the speed-up.
    """
    from mlsim_live.evaluation import held_out_set, score
    from mlsim_live.sim import simulate_group

    groups = held_out_set(groups_per_level=config.check_per_level, size=config.check_size_px)
    psnr_ref, psnr_new, ssim_ref, ssim_new, rel = [], [], [], [], []
    for _, group in groups:
        a = reference.reconstruct(group.raw)
        b = candidate.reconstruct(group.raw)
        sa, sb = score(a, group), score(b, group)
        psnr_ref.append(sa.psnr_db)
        psnr_new.append(sb.psnr_db)
        ssim_ref.append(sa.ssim)
        ssim_new.append(sb.ssim)
        span = float(a.max() - a.min()) or 1.0
        rel.append(float(np.abs(b.astype(np.float64) - a).max()) / span)
    d_psnr = np.array(psnr_new) - np.array(psnr_ref)
    d_ssim = np.array(ssim_new) - np.array(ssim_ref)
    raw = simulate_group(sample="mixture", size=config.speed_size_px, seed=1).raw
    p50 = _interleaved_p50_ms(
        {"ref": lambda: reference.reconstruct(raw), "new": lambda: candidate.reconstruct(raw)}
    )
    return {
        "held_out_groups": len(groups),
        "held_out_size_px": config.check_size_px,
        "psnr_db": round(float(np.mean(psnr_new)), 3),
        "psnr_db_fp32": round(float(np.mean(psnr_ref)), 3),
        "psnr_delta_db": round(float(d_psnr.mean()), 4),
        "psnr_delta_db_worst": round(float(d_psnr.min()), 4),
        "ssim": round(float(np.mean(ssim_new)), 4),
        "ssim_delta": round(float(d_ssim.mean()), 5),
        "ssim_delta_worst": round(float(d_ssim.min()), 5),
        "max_abs_diff_rel": round(float(max(rel)), 5),
        # what a new group may differ by: the held-out worst with a margin for unseen groups
        "parity_tolerance_rel": round(PARITY_MARGIN * float(max(rel)), 4),
        "speedup_vs_fp32": round(p50["ref"] / p50["new"], 3),
        "speed_size_px": config.speed_size_px,
        "speed_note": "whole reconstruct() p50 (interleaved runs) on this machine",
    }


def judge_change(
    reference: Any, candidate: Any, real_dir: Path, n_rungs: int = 2
) -> dict[str, Any]:
    """The real-data judge's split-half FRC resolution of both reconstructors on every stack in
    ``real_dir``, and the largest relative change (candidate vs fp32)."""
    from mlsim_live.judge import judge_stack
    from mlsim_live.recon import make_reconstructor

    stacks = sorted(Path(real_dir).glob("*.tif"))
    if not stacks:
        raise MLSimError(f"no .tif stacks in {real_dir}; expected the real-data judge's folder")
    per_stack: dict[str, Any] = {}
    worst = 0.0
    for path in stacks:
        recons = {
            "widefield": make_reconstructor("widefield"),
            "wiener": make_reconstructor("wiener"),
            "fp32": reference,
            "candidate": candidate,
        }
        judged = judge_stack(path, reconstructors=recons, n_rungs=n_rungs)
        a = _frc_value(judged.method("fp32").frc)
        b = _frc_value(judged.method("candidate").frc)
        change = (b - a) / a if a and b else None
        per_stack[path.stem] = {"frc_fp32": a, "frc": b, "frc_change": change}
        if change is not None and abs(change) > abs(worst):
            worst = change
    return {"judge_frc_change": round(worst, 4), "judge_stacks": per_stack}


def _frc_value(frc: Any) -> float | None:
    value = getattr(frc, "frc_resolution_nm", None)
    if value is None:
        value = getattr(frc, "frc_resolution_px", None)
    return None if value is None else float(value)


def record_in_card(model: Path, precision: str, entry: dict[str, Any]) -> Path:
    """Write ``entry`` as ``card["precisions"][precision]`` of ``model``'s card (atomically)."""
    from mlsim_live.engine.rcan import model_card_path
    from mlsim_live.io.atomic import write_json_atomic

    card_path = model_card_path(Path(model))
    card: dict[str, Any] = {}
    if card_path.is_file():
        card = json.loads(card_path.read_text(encoding="utf-8"))
    precisions = card.setdefault("precisions", {})
    precisions.setdefault(prec.FP32, {"file": Path(model).name, "reference": True})
    precisions[precision] = entry
    card["precision_rule"] = (
        f"auto offers a precision only if it loses <= {prec.MAX_PSNR_LOSS_DB} dB held-out PSNR "
        f"and changes the judge's FRC resolution by <= {100 * prec.MAX_FRC_CHANGE:.0f} %"
    )
    write_json_atomic(card_path, card, overwrite=True)
    return card_path


def make_int8(
    model: Path,
    config: QuantizeConfig = QuantizeConfig(),
    *,
    out: Path | None = None,
    judge_dir: Path | None = None,
    overwrite: bool = False,
    write_card: bool = True,
) -> dict[str, Any]:
    """Quantize ``model`` to int8, measure it against fp32 and record it in the card.

    Returns the card entry (also written to the card unless ``write_card`` is False, or
    ``out`` is not the standard ``NAME.int8.onnx`` beside the model).
    """
    model = Path(model)
    out = Path(out) if out is not None else prec.variant_path(model, prec.INT8)
    reason = prec.int8_unsupported()
    if reason:
        log.warning("%s; the int8 copy is made, but this machine cannot time it fairly", reason)
    reference = learned_reconstructor(model, prec.FP32, threads=config.threads)
    inputs = calibration_inputs(reference, config)
    quantize_int8(model, out, inputs, overwrite=overwrite)
    candidate = learned_reconstructor(out, None, threads=config.threads)
    entry: dict[str, Any] = {
        "file": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "method": "static QDQ, u8 activations (min/max), s8 weights per channel; "
        "ReduceMean channel attention as GlobalAveragePool",
        "calibration": {
            "groups": len(inputs),
            "size_px": config.calibration_size_px,
            "photons": list(CALIBRATION_PHOTONS),
            "samples": "every kind of mlsim_live.sim.SAMPLE_KINDS",
            "path": "the reconstructor's prepare() (real normalization and prior input)",
        },
        "instructions": prec.instruction_sets()["int8"],
    }
    entry.update(compare_precisions(reference, candidate, config))
    if judge_dir is not None:
        entry.update(judge_change(reference, candidate, Path(judge_dir)))
    entry["auto_offers"] = prec.accuracy_verdict(entry) is None
    if write_card and out == prec.variant_path(model, prec.INT8):
        record_in_card(model, prec.INT8, entry)
    return entry
