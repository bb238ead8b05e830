"""Camera models: ideal, sCMOS (per-pixel maps) and EMCCD (electron multiplication)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from mlsim_live.errors import MLSimError

CameraKind = Literal["ideal", "scmos", "emccd"]
ADU_MAX = 65535


@dataclass(frozen=True)
class Camera:
    """Camera model; turns expected photons per pixel into uint16 counts.

    Attributes
    ----------
    kind : {"ideal", "scmos", "emccd"}
        ``ideal``: Poisson + Gaussian read noise, uniform gain and offset. ``scmos``: per-pixel
        offset, gain and read-noise maps. ``emccd``: electron multiplication (Gamma-distributed
        gain, excess noise factor sqrt(2)) before read-out.
    quantum_efficiency : float
        Photon to photo-electron conversion.
    offset_adu : float
        Mean dark level.
    gain_adu_per_e : float
        Counts per electron at read-out (after EM multiplication for an EMCCD).
    read_noise_e : float
        Read noise (rms, electrons at read-out). For sCMOS the median of the per-pixel map.
    em_gain : float
        Electron-multiplication gain (EMCCD only).
    map_spread : float
        Relative pixel-to-pixel spread of the sCMOS offset, gain and read-noise maps.
    """

    kind: CameraKind = "scmos"
    quantum_efficiency: float = 0.8
    offset_adu: float = 100.0
    gain_adu_per_e: float = 0.5
    read_noise_e: float = 1.5
    em_gain: float = 100.0
    map_spread: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in ("ideal", "scmos", "emccd"):
            raise MLSimError(
                f"camera kind {self.kind!r} is unknown; expected ideal, scmos or emccd"
            )
        if self.gain_adu_per_e <= 0 or not 0 < self.quantum_efficiency <= 1:
            raise MLSimError("camera gain must be positive and quantum efficiency in (0, 1]")

    def draw_maps(
        self, frame_shape: tuple[int, int], rng: np.random.Generator
    ) -> tuple[np.ndarray | float, np.ndarray | float, np.ndarray | float]:
        """Draw the camera's fixed pattern: per-pixel (offset ADU, gain ADU/e, read noise e).

        Uniform scalars except for an sCMOS, whose maps vary pixel to pixel.
        """
        if self.kind != "scmos":
            return self.offset_adu, self.gain_adu_per_e, self.read_noise_e
        spread = self.map_spread
        offset = self.offset_adu * (1 + spread * rng.standard_normal(frame_shape))
        gain = self.gain_adu_per_e * (1 + spread * rng.standard_normal(frame_shape))
        read = self.read_noise_e * rng.lognormal(0.0, 4 * spread, frame_shape)
        return offset, gain, read

    def expose(
        self,
        photons: np.ndarray,
        rng: np.random.Generator,
        maps: tuple[np.ndarray | float, np.ndarray | float, np.ndarray | float] | None = None,
    ) -> np.ndarray:
        """Record frames of expected photon counts; returns uint16 with the same shape.

        ``maps`` (from ``draw_maps``) fixes the camera's fixed pattern; without it, maps are
        drawn once per call and shared by all frames of ``photons``, as for one real camera.
        """
        lam = np.clip(np.asarray(photons, dtype=np.float64), 0.0, None) * self.quantum_efficiency
        electrons = rng.poisson(lam).astype(np.float64)
        if self.kind == "emccd":
            positive = electrons > 0
            amplified = np.zeros_like(electrons)
            amplified[positive] = rng.gamma(electrons[positive], self.em_gain)
            electrons = amplified
        offset, gain, read = maps if maps is not None else self.draw_maps(lam.shape[-2:], rng)
        electrons = electrons + read * rng.standard_normal(electrons.shape)
        adu = np.rint(electrons * gain + offset)
        return np.clip(adu, 0, ADU_MAX).astype(np.uint16)

    @property
    def adu_per_photon(self) -> float:
        """Mean counts per incident photon."""
        em = self.em_gain if self.kind == "emccd" else 1.0
        return self.quantum_efficiency * em * self.gain_adu_per_e
