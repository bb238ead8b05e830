"""What the pattern estimator found: `PatternEstimate` per angle and `GroupEstimate` per group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PatternEstimate:
    """Estimated illumination pattern of one angle.

    The pattern is ``1 + modulation * cos(2 pi k.r + phases_rad[p])`` with ``r = (y, x)``
    measured from the centre of pixel (0, 0), ``y`` along rows and ``x`` along columns.
    ``k`` is chosen with ``angle_deg`` in ``[0, 180)``.

    Attributes
    ----------
    k_cycles_per_px : (float, float)
        Pattern vector (ky, kx) in cycles per camera pixel.
    k_bins : (float, float)
        Pattern vector (ky, kx) in FFT bins of the raw frame (cycles per frame height/width).
    k_per_um : (float, float) or None
        Pattern vector (ky, kx) in cycles/um; None when the pixel size is unknown.
    angle_deg : float
        Direction of k, from the x axis (columns) towards y (rows), in [0, 180).
    frequency_cycles_per_px : float
        ``|k|`` in cycles per pixel.
    frequency_per_um : float or None
        ``|k|`` in cycles/um.
    period_px : float
        Pattern period in camera pixels.
    period_nm : float or None
        Pattern period in nanometres.
    frequency_fraction : float
        ``|k|`` as a fraction of the OTF cutoff used for the estimate.
    phase_rad : float
        Phase of the first frame of this angle, in [0, 2 pi).
    phases_rad : (float, float, float)
        Phases of the three frames (unwrapped around the first).
    modulation : float
        Modulation depth from the overlap of band 0 and band 1 (not clipped; NaN when the
        bands do not overlap).
    peak_contrast : float
        Height of the cross-correlation peak over the median of the searched annulus; a
        confidence figure (below ~4 the pattern was hardly found; 10 to 100 is typical).
    phases_fitted : bool
        Whether the phase steps were measured (True) or the nominal 2pi/3 steps were used.
    """

    k_cycles_per_px: tuple[float, float]
    k_bins: tuple[float, float]
    k_per_um: tuple[float, float] | None
    angle_deg: float
    frequency_cycles_per_px: float
    frequency_per_um: float | None
    period_px: float
    period_nm: float | None
    frequency_fraction: float
    phase_rad: float
    phases_rad: tuple[float, float, float]
    modulation: float
    peak_contrast: float
    phases_fitted: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "k_cycles_per_px": list(self.k_cycles_per_px),
            "k_bins": list(self.k_bins),
            "k_per_um": None if self.k_per_um is None else list(self.k_per_um),
            "angle_deg": self.angle_deg,
            "frequency_cycles_per_px": self.frequency_cycles_per_px,
            "frequency_per_um": self.frequency_per_um,
            "period_px": self.period_px,
            "period_nm": self.period_nm,
            "frequency_fraction": self.frequency_fraction,
            "phase_rad": self.phase_rad,
            "phases_rad": list(self.phases_rad),
            "modulation": _finite_or_none(self.modulation),
            "peak_contrast": self.peak_contrast,
            "phases_fitted": self.phases_fitted,
        }


@dataclass(frozen=True)
class GroupEstimate:
    """Pattern estimates of the three angles of a group plus what was measured around them.

    Attributes
    ----------
    patterns : tuple of PatternEstimate
        One per angle, in the group's angle order.
    shape : (int, int)
        Raw frame shape the estimate was made on.
    background_adu : float
        Background (camera offset plus constant background) that was subtracted.
    signal_adu : float
        Peak signal above background: 99.9th percentile of the widefield image minus background.
    noise_adu : float or None
        Per-frame noise standard deviation from the spectral noise floor (None when the OTF
        fills the whole spectrum).
    cutoff_cycles_per_px : float
        Widefield OTF cutoff used, in cycles per pixel.
    cutoff_source : {"optics", "data"}
        Whether the cutoff came from the optics (NA, wavelength, pixel size) or from the data.
    pixel_size_um : float or None
        Pixel size, when known.
    otf_damping : float
        The real OTF is modelled as the ideal one times ``otf_damping ** (|f| / cutoff)``
        (1: ideal; real objectives often give 0.3 to 0.7).
    """

    patterns: tuple[PatternEstimate, ...]
    shape: tuple[int, int]
    background_adu: float
    signal_adu: float
    noise_adu: float | None
    cutoff_cycles_per_px: float
    cutoff_source: str
    pixel_size_um: float | None
    otf_damping: float = 1.0

    @property
    def cutoff_per_um(self) -> float | None:
        """OTF cutoff in cycles/um, when the pixel size is known."""
        if self.pixel_size_um is None:
            return None
        return self.cutoff_cycles_per_px / self.pixel_size_um

    @property
    def angles_deg(self) -> tuple[float, ...]:
        """Pattern directions in [0, 180) degrees."""
        return tuple(p.angle_deg for p in self.patterns)

    @property
    def frequency_fraction(self) -> float:
        """Mean pattern frequency as a fraction of the OTF cutoff."""
        return float(np.mean([p.frequency_fraction for p in self.patterns]))

    @property
    def modulation(self) -> float:
        """Mean modulation depth over the angles."""
        return float(np.mean([p.modulation for p in self.patterns]))

    @property
    def snr(self) -> float | None:
        """Peak signal over per-frame noise (None without a noise estimate)."""
        if self.noise_adu is None or self.noise_adu <= 0:
            return None
        return self.signal_adu / self.noise_adu

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict for the reconstruction's sidecar."""
        return {
            "patterns": [p.to_dict() for p in self.patterns],
            "angles_deg": list(self.angles_deg),
            "frequency_fraction": self.frequency_fraction,
            "modulation": _finite_or_none(self.modulation),
            "shape": list(self.shape),
            "background_adu": self.background_adu,
            "signal_adu": self.signal_adu,
            "noise_adu": self.noise_adu,
            "snr": self.snr,
            "cutoff_cycles_per_px": self.cutoff_cycles_per_px,
            "cutoff_per_um": self.cutoff_per_um,
            "cutoff_source": self.cutoff_source,
            "pixel_size_um": self.pixel_size_um,
            "otf_damping": self.otf_damping,
        }


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a modulation that could not be measured is written as null."""
    return float(value) if np.isfinite(value) else None


def format_estimate(est: GroupEstimate) -> str:
    """One-line summary of an estimate for logs."""
    parts = []
    for p in est.patterns:
        per = f"{p.period_nm:.1f} nm" if p.period_nm is not None else f"{p.period_px:.3f} px"
        parts.append(
            f"{p.angle_deg:.2f} deg, {per} ({p.frequency_fraction:.3f} of cutoff), "
            f"phase {p.phase_rad:.2f} rad, m {p.modulation:.2f}"
        )
    return "; ".join(parts) + f"; OTF damping {est.otf_damping:.2f}"
