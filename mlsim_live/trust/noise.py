"""The camera noise the trust map expects: photon transfer, read noise and fixed pattern."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.recon.base import GROUP_SIZE, N_PHASES
from mlsim_live.recon.estimate import GroupEstimate, as_group

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraNoise:
    """Expected noise variance of each raw frame, in ADU^2, as a function of its level.

    ``var = gain_f * max(level - offset_f, 0) + floor``: the photon-transfer line (its
    intercept holds the read noise, see `mlsim_live.judge.photons`) plus the camera's fixed
    pattern and the quantization.

    Attributes
    ----------
    gain_adu_per_photon : tuple of float
        Per frame (9).
    offset_adu : tuple of float
        Per frame (9): the level where the photon-transfer line reaches zero variance.
    floor_adu2 : float
        Variance added everywhere (fixed pattern and quantization).
    fixed_pattern_adu2 : float
        The part of it that is the camera's fixed pattern, the same in all 9 frames.
    source : str
        ``"photon transfer"``, ``"given"`` or ``"constant"`` (no photon-transfer fit: one
        variance for all levels).
    """

    gain_adu_per_photon: tuple[float, ...]
    offset_adu: tuple[float, ...]
    floor_adu2: float
    source: str
    fixed_pattern_adu2: float = 0.0

    @classmethod
    def from_calibration(cls, calibration: Any) -> CameraNoise:
        """From a `mlsim_live.judge.photons.PhotonCalibration`."""
        if calibration.per_angle:
            gains = np.repeat(calibration.gain_per_angle_adu_per_photon, N_PHASES)
            offsets = np.repeat(calibration.offset_per_angle_adu, N_PHASES)
        else:
            gains = np.full(GROUP_SIZE, calibration.gain_adu_per_photon)
            offsets = np.full(GROUP_SIZE, calibration.offset_adu)
        fixed = calibration.fixed_pattern_photons * calibration.gain_adu_per_photon
        fixed2 = float(fixed) ** 2 if np.isfinite(fixed) else 0.0
        return cls(
            gain_adu_per_photon=tuple(float(g) for g in gains),
            offset_adu=tuple(float(o) for o in offsets),
            floor_adu2=fixed2 + 1.0 / 12.0,
            source=str(calibration.source),
            fixed_pattern_adu2=fixed2,
        )

    @classmethod
    def constant(cls, std_adu: float) -> CameraNoise:
        """One noise level for every pixel (when the photon transfer cannot be fitted)."""
        return cls(
            gain_adu_per_photon=(0.0,) * GROUP_SIZE,
            offset_adu=(0.0,) * GROUP_SIZE,
            floor_adu2=float(std_adu) ** 2 + 1.0 / 12.0,
            source="constant",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "gain_adu_per_photon": list(self.gain_adu_per_photon),
            "offset_adu": list(self.offset_adu),
            "floor_adu2": self.floor_adu2,
            "fixed_pattern_adu2": self.fixed_pattern_adu2,
            "source": self.source,
        }


def estimate_noise(group: np.ndarray, estimate: GroupEstimate) -> CameraNoise:
    """The camera noise of a raw group: the judge's photon-transfer fit, or when that fails
    (too little signal range) the estimate's spectral noise floor as one constant level."""
    from mlsim_live.judge.photons import estimate_photon_calibration

    try:
        calib = estimate_photon_calibration(group, estimate.cutoff_cycles_per_px)
    except MLSimError as exc:
        std = estimate.noise_adu
        if std is None or not std > 0:
            frames = as_group(group, np.float64)
            std = float(np.std(frames - frames.mean(axis=0)) * np.sqrt(N_PHASES / 2.0))
        log.warning("camera noise fit failed (%s); using one noise level of %.3g ADU", exc, std)
        return CameraNoise.constant(std)
    log.debug("trust noise model: %s", calib.describe())
    return CameraNoise.from_calibration(calib)


def noise_variance(
    noise: CameraNoise, f: int, level: np.ndarray, signal: np.ndarray, eps: float
) -> np.ndarray:
    """Expected variance of frame ``f`` at ``level`` (ADU) with model error ``eps * signal``."""
    gain = noise.gain_adu_per_photon[f]
    var = np.float32(noise.floor_adu2) + (np.float32(eps) * signal) ** 2
    if gain > 0:
        var = var + np.float32(gain) * np.maximum(level - np.float32(noise.offset_adu[f]), 0.0)
    return var


def frame_variances(
    noise: CameraNoise, level: np.ndarray, signal: np.ndarray | None, eps: float
) -> np.ndarray:
    """`noise_variance` of all 9 frames at once: ``level`` and ``signal`` (9, n); ``signal``
    None: no model error."""
    gains = np.asarray(noise.gain_adu_per_photon, level.dtype)[:, None]
    offsets = np.asarray(noise.offset_adu, level.dtype)[:, None]
    var = np.maximum(level - offsets, 0.0)
    var *= gains
    var += level.dtype.type(noise.floor_adu2)
    if signal is not None and eps > 0:
        var += (level.dtype.type(eps) * signal) ** 2
    return var


__all__ = ["CameraNoise", "estimate_noise", "frame_variances", "noise_variance"]
