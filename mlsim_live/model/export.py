"""ONNX export of a trained (or imported) RCAN, with its parity check and model card."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlsim_live import __version__
from mlsim_live.errors import MLSimError
from mlsim_live.io.atomic import atomic_path, write_text_atomic
from mlsim_live.model.rcan import RCAN, count_parameters
from mlsim_live.model.train import load_checkpoint, model_from_checkpoint

log = logging.getLogger(__name__)

INPUT_NAME = "raw"
OUTPUT_NAME = "sr"
DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4
PARITY_TOLERANCE_FP16 = 5e-2


class _HalfPrecision(torch.nn.Module):
    """Runs a model in float16 behind float32 inputs and outputs."""

    def __init__(self, model: RCAN) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def normalization_card(prior: str = "none") -> dict[str, Any]:
    """How inputs must be normalized for the network: :mod:`mlsim_live.normalization` (and
    :mod:`mlsim_live.recon.prior` for a prior-fed network)."""
    from mlsim_live import normalization

    if prior != "none":
        return {
            "module": "mlsim_live.recon.prior",
            "input": (
                "x = prior_input(raw, wiener, normalization_for(raw)): the 9 frames as "
                "(raw - background) / scale, then the Wiener reconstruction of the group "
                "(mlsim_live.recon.wiener, pattern estimated on the data) / scale, "
                "pixel-unshuffled to 4 channels (channel 2 dy + dx holds pixels 2i + dy, "
                "2j + dx); background = "
                f"{normalization.BACKGROUND_PERCENTILE}th percentile of the group, scale = "
                f"{normalization.SCALE_PERCENTILE}th percentile of raw - background"
            ),
            "output": "sr = y * scale (Normalization.invert): background removed, input units",
            "target": (
                "training target = ground truth in ADU (photons x camera ADU per photon) / "
                "scale: the frames' own units"
            ),
            "prior": prior,
            "background_percentile": normalization.BACKGROUND_PERCENTILE,
            "scale_percentile": normalization.SCALE_PERCENTILE,
            "frame_order": "angle-major (a0p0 a0p1 a0p2 a1p0 ... a2p2)",
        }
    return {
        "module": "mlsim_live.normalization",
        "input": (
            "x = (raw - background) / scale per 9-frame group; background = "
            f"{normalization.BACKGROUND_PERCENTILE}th percentile of the group, scale = "
            f"{normalization.SCALE_PERCENTILE}th percentile of raw - background "
            "(normalization_for(group).apply(group))"
        ),
        "output": "sr = y * scale (Normalization.invert): background removed, input units",
        "target": (
            f"training target = ground truth / its {normalization.SCALE_PERCENTILE}th "
            "percentile (normalize_target)"
        ),
        "background_percentile": normalization.BACKGROUND_PERCENTILE,
        "scale_percentile": normalization.SCALE_PERCENTILE,
        "frame_order": "angle-major (a0p0 a0p1 a0p2 a1p0 ... a2p2)",
    }


def _onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity_inputs(
    model: RCAN, sizes: tuple[int, ...] = (24, 37), seed: int = 0
) -> list[np.ndarray]:
    """Random and simulated normalized inputs of two sizes, shaped ``(1, 9, H, W)``."""
    from mlsim_live.normalization import normalization_for
    from mlsim_live.sim import random_params, simulate_group

    rng = np.random.default_rng(seed)
    c = model.config.in_channels
    out = []
    for size in sizes:
        out.append(rng.random((1, c, size, size + 2), dtype=np.float32))
        if c == 9:
            group = simulate_group(random_params(rng), sample="mixture", size=size, seed=rng)
            out.append(normalization_for(group.raw).apply(group.raw)[None])
    return out


def parity_check(
    model: RCAN, onnx_path: str | os.PathLike[str], inputs: list[np.ndarray], fp16: bool = False
) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch (float32) outputs."""
    session = _onnx_session(Path(onnx_path))
    model = model.float().eval()
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            expected = model(torch.from_numpy(x)).numpy()
            got = session.run(None, {INPUT_NAME: x})[0]
            if got.shape != expected.shape:
                raise MLSimError(
                    f"ONNX output shape {got.shape} for input {x.shape}; expected {expected.shape}"
                )
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - expected))))
    tolerance = PARITY_TOLERANCE_FP16 if fp16 else PARITY_TOLERANCE
    if not worst < tolerance:
        raise MLSimError(
            f"ONNX Runtime and PyTorch differ by {worst:.3g}; expected less than {tolerance:g}"
        )
    return worst


def export_onnx(
    model: RCAN,
    out_path: str | os.PathLike[str],
    *,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    card: dict[str, Any] | None = None,
    parity_sizes: tuple[int, ...] = (24, 37),
) -> dict[str, Any]:
    """Export ``model`` to ONNX with its model card next to it; return the card.

    The graph takes ``raw`` ``(N, 9, H, W)`` float32 (normalized) and returns ``sr``
    ``(N, 1, scale*H, scale*W)`` float32, with dynamic N, H and W. It is checked with
    ``onnx.checker`` and compared with PyTorch on random and simulated inputs of two sizes; the
    card (``out_path`` with ``.json``) records architecture, normalization, training, metrics,
    opset and the sha256 of the ``.onnx``. Both files are written atomically.

    Parameters
    ----------
    model : RCAN
    out_path : path
        ``.onnx`` file to write.
    fp16 : bool
        Store weights and compute in float16 (inputs and outputs stay float32).
    opset : int
        ONNX opset, >= 17.
    overwrite : bool
        Replace existing files.
    card : dict, optional
        Extra model-card entries (preset, training, validation, source...).
    """
    out_path = Path(out_path)
    card_path = out_path.with_suffix(".json")
    _check_export_request(out_path, card_path, opset, overwrite)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    reference = RCAN(model.config)
    reference.load_state_dict(model.state_dict())
    reference.eval()
    try:
        inputs = parity_inputs(reference, parity_sizes)
        max_diff, digest = _write_checked_onnx(
            model, reference, out_path, inputs, fp16=fp16, opset=opset
        )
    finally:
        if fp16:  # _HalfPrecision converted the caller's model in place
            model.float()
    info = _model_card(model, out_path, digest, opset=opset, fp16=fp16)
    info["parity"] = {"max_abs_diff": max_diff, "inputs": [list(x.shape) for x in inputs]}
    info["created_utc"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    info["mlsim_live_version"] = __version__
    info["torch_version"] = torch.__version__
    for key, value in (card or {}).items():
        info.setdefault(key, value)
    try:
        write_text_atomic(card_path, json.dumps(info, indent=2) + "\n", overwrite=True)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    log.info("exported %s (sha256 %s..., parity %.2g)", out_path, digest[:12], max_diff)
    return info


def _check_export_request(out_path: Path, card_path: Path, opset: int, overwrite: bool) -> None:
    if out_path.suffix != ".onnx":
        raise MLSimError(f"output {out_path} does not end in .onnx; expected NAME.onnx")
    if opset < 17:
        raise MLSimError(f"opset {opset}; expected 17 or newer")
    for path in (out_path, card_path):
        if path.exists() and not overwrite:
            raise MLSimError(f"{path} exists; expected a new name or --overwrite")


def _write_checked_onnx(
    model: RCAN,
    reference: RCAN,
    out_path: Path,
    inputs: list[np.ndarray],
    *,
    fp16: bool,
    opset: int,
) -> tuple[float, str]:
    """Export ``model`` to ``out_path`` atomically, checked by ``onnx.checker`` and against
    ``reference`` on ``inputs``; return the largest difference and the file's sha256."""
    import onnx

    module: torch.nn.Module = _HalfPrecision(model) if fp16 else model
    c = model.config.in_channels
    dummy = torch.zeros(1, c, 16, 16, dtype=torch.float32)
    with atomic_path(out_path, overwrite=True) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter
            torch.onnx.export(
                module,
                (dummy,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                    OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"},
                },
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto, full_check=True)
        max_diff = parity_check(reference, tmp, inputs, fp16=fp16)
        digest = sha256_of(tmp)
    return max_diff, digest


def _model_card(
    model: RCAN, out_path: Path, digest: str, *, opset: int, fp16: bool
) -> dict[str, Any]:
    """The model card's file, graph, architecture and normalization entries."""
    cfg = model.config
    return {
        "name": out_path.stem,
        "file": out_path.name,
        "format": "onnx",
        "sha256": digest,
        "onnx_opset": opset,
        "precision": "float16" if fp16 else "float32",
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", cfg.in_channels, "height", "width"],
            "dtype": "float32",
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", cfg.out_channels, f"{cfg.scale}*height", f"{cfg.scale}*width"],
            "dtype": "float32",
        },
        "scale": cfg.scale,
        "architecture": {"type": "RCAN", **cfg.to_dict(), "parameters": count_parameters(model)},
        "normalization": normalization_card(cfg.prior),
    }


def card_from_checkpoint(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Model-card entries describing how a checkpoint of ours was trained."""
    train = dict(data.get("train", {}))
    data_cfg = dict(data.get("data", {}))
    return {
        "preset": data.get("preset", "custom"),
        "source": {"kind": "mlsim-live train", "checkpoint": source},
        "training": {
            "steps": int(data["step"]),
            "train_seconds": float(data.get("train_seconds", 0.0)),
            "batch_size": train.get("batch_size"),
            "patch_px": data_cfg.get("patch_px"),
            "lr": train.get("lr"),
            "loss": f"L1 + {train.get('ssim_weight', 0)} * (1 - SSIM)",
            "seed": train.get("seed"),
            "data_reuse": train.get("data_reuse"),
            "arithmetic": train.get("precision", "fp32"),
            "init": data.get("init"),
            "physics_ranges": data_cfg.get("ranges"),
            "sample_weights": data_cfg.get("sample_weights"),
        },
        "validation": {k: float(v) for k, v in dict(data.get("val", {})).items()},
    }


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export one of our training checkpoints (``last.pt``/``best.pt``) to ONNX + card."""
    data = load_checkpoint(checkpoint)
    model = model_from_checkpoint(data, f"checkpoint {checkpoint}")
    return export_onnx(
        model,
        out_path,
        fp16=fp16,
        opset=opset,
        overwrite=overwrite,
        card=card_from_checkpoint(data, Path(checkpoint).name),
    )


def export_mlsim(
    pth: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    preset: str | None = "paper",
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Import ML-SIM's published checkpoint and export it to ONNX + card."""
    from mlsim_live.model.mlsim_import import load_mlsim_model

    model = load_mlsim_model(pth, preset)
    card = {
        "preset": preset or "custom",
        "source": {
            "kind": "ML-SIM published checkpoint (Christensen et al. 2021)",
            "file": Path(pth).name,
            "sha256": sha256_of(pth),
        },
        "training": {
            "note": (
                "trained by ML-SIM on DIV2K images through its SIM simulator; ML-SIM normalized "
                "each frame by min-max, here inputs use mlsim_live.normalization (close to it)"
            ),
            "physics_ranges": None,
        },
        "validation": {},
    }
    return export_onnx(model, out_path, fp16=fp16, opset=opset, overwrite=overwrite, card=card)
