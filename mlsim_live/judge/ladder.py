"""The photon ladder: each method's reconstruction of thinned data against a full-dose reference."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from mlsim_live.metrics import band_correlation, psnr, ssim


@dataclass(frozen=True)
class LadderScore:
    """One method at one rung of the ladder, scored against the full-dose reference.

    Attributes
    ----------
    method : str
    dose_fraction : float
        Fraction of the recorded photons kept (1, 1/2, ... 1/64).
    peak_photons : float
        Peak signal at this rung, photons per pixel per frame (the calibration's peak times
        the fraction).
    psnr_db : float
        PSNR against the reference after the least-squares affine fit of the image onto it
        (`mlsim_live.metrics.psnr`). All figures are NaN for the reference itself.
    ssim : float
        SSIM after mapping the image's 0.1 and 99.9 percentiles onto the reference's (an
        affine map that does not reward shrinking towards the mean; `mlsim_live.metrics.ssim`).
    correlation : float
        Pearson correlation with the reference over all pixels.
    beyond_cutoff_correlation : float
        Correlation with the reference restricted to spatial frequencies between 1.05 times
        the widefield cutoff and the cutoff plus 0.9 times the pattern frequency: agreement on
        the super-resolved band only (widefield holds ~0 there).
    below_widefield : bool
        True when this reconstruction correlates less with the reference (overall) than
        widefield's reconstruction of the same rung does: it lost more than it added.
    """

    method: str
    dose_fraction: float
    peak_photons: float
    psnr_db: float
    ssim: float
    correlation: float
    beyond_cutoff_correlation: float
    below_widefield: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON-able dict (NaN as None)."""
        out: dict[str, object] = {}
        for key, value in self.__dict__.items():
            out[key] = None if isinstance(value, float) and math.isnan(value) else value
        return out


@dataclass(frozen=True)
class Band:
    """The super-resolved band, in cycles per pixel of the reconstruction grid."""

    lo_cycles_per_px: float
    hi_cycles_per_px: float


def beyond_cutoff_band(cutoff_cycles_per_px: float, pattern_cycles_per_px: float) -> Band:
    """The band between ``1.05 fc`` and ``fc + 0.9 k`` on the reconstruction grid (as the
    simulated evaluation in `mlsim_live.evaluation` scores it)."""
    lo = 1.05 * cutoff_cycles_per_px
    hi = max(cutoff_cycles_per_px + 0.9 * pattern_cycles_per_px, lo + 1e-3)
    return Band(lo, hi)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images over all pixels (0 for a constant image)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x = x - x.mean()
    y = y - y.mean()
    denom = float(np.sqrt((x @ x) * (y @ y)))
    return float(x @ y) / denom if denom > 0 else 0.0


def score_rung(
    method: str,
    image: np.ndarray,
    reference: np.ndarray,
    band: Band,
    dose_fraction: float,
    peak_photons: float,
    is_reference: bool = False,
) -> LadderScore:
    """Score one reconstruction against the full-dose reference."""
    if is_reference:
        nan = float("nan")
        return LadderScore(method, dose_fraction, peak_photons, nan, nan, nan, nan)
    return LadderScore(
        method=method,
        dose_fraction=float(dose_fraction),
        peak_photons=float(peak_photons),
        psnr_db=psnr(image, reference),
        ssim=ssim(image, reference),
        correlation=pearson(image, reference),
        beyond_cutoff_correlation=band_correlation(
            image, reference, 1.0, band.lo_cycles_per_px, band.hi_cycles_per_px
        ),
    )


def flag_below_widefield(
    scores: list[LadderScore], widefield: str = "widefield"
) -> list[LadderScore]:
    """Set ``below_widefield`` on every score that correlates less with the reference than
    widefield's score at the same rung."""
    base = {s.dose_fraction: s for s in scores if s.method == widefield}
    out = []
    for s in scores:
        wf = base.get(s.dose_fraction)
        below = wf is not None and s.method != widefield and s.correlation < wf.correlation
        out.append(replace(s, below_widefield=bool(below)))
    return out
