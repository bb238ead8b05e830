"""Fourier ring correlation (FRC) of two independent reconstructions and its 1/7 resolution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import windows

from mlsim_live.errors import MLSimError

#: The fixed 1/7 threshold of the FRC resolution (Nieuwenhuizen et al., Nat. Methods 2013).
FRC_THRESHOLD = 1.0 / 7.0
#: Crossings below this frequency (cycles/px) are ignored: the lowest rings hold few pixels and
#: the background level, not resolution.
MIN_CROSSING_CYCLES_PER_PX = 0.02
#: A ring whose half-difference power is below this fraction of its peak holds nothing that
#: came from the data (neither signal nor noise reached it): its FRC counts as 0.
MIN_DIFFERENCE_POWER = 1e-4


@dataclass(frozen=True)
class FRCResult:
    """FRC curve of two reconstructions and the resolution where it falls below 1/7.

    Attributes
    ----------
    frequency_cycles_per_px : tuple of float
        Ring centres in cycles per pixel of the reconstructions' grid.
    frc : tuple of float
        Correlation per ring (smoothed over 3 rings); 0 in rings no data reached.
    frc_resolution_px : float
        ``1 / frequency`` at the first crossing of 1/7, in pixels of the reconstructions'
        grid; ``2.0`` (the grid's Nyquist limit) when the curve never crosses.
    pixel_size_um : float or None
        Pixel size of that grid, when known.
    limited_by_sampling : bool
        True when the curve stays above 1/7 up to the grid's Nyquist frequency.
    """

    frequency_cycles_per_px: tuple[float, ...]
    frc: tuple[float, ...]
    frc_resolution_px: float
    pixel_size_um: float | None
    limited_by_sampling: bool

    @property
    def frc_resolution_nm(self) -> float | None:
        """The resolution in nanometres, when the pixel size is known."""
        if self.pixel_size_um is None:
            return None
        return self.frc_resolution_px * self.pixel_size_um * 1e3

    @property
    def frequency_per_um(self) -> tuple[float, ...] | None:
        """Ring centres in cycles per micrometre, when the pixel size is known."""
        if self.pixel_size_um is None:
            return None
        return tuple(f / self.pixel_size_um for f in self.frequency_cycles_per_px)

    def to_dict(self) -> dict[str, object]:
        """JSON-able dict: the resolution (nm and/or px) and the curve."""
        d: dict[str, object] = {"frc_resolution_px": self.frc_resolution_px}
        if self.pixel_size_um is not None:
            d["frc_resolution_nm"] = self.frc_resolution_nm
        d["limited_by_sampling"] = self.limited_by_sampling
        d["threshold"] = FRC_THRESHOLD
        d["curve"] = {
            "frequency_cycles_per_px": list(self.frequency_cycles_per_px),
            "frc": list(self.frc),
        }
        if self.pixel_size_um is not None:
            d["curve"]["frequency_per_um"] = list(self.frequency_per_um or ())  # type: ignore[index]
        return d


def frc_curve(
    image1: np.ndarray, image2: np.ndarray, pixel_size_um: float | None = None
) -> FRCResult:
    """Fourier ring correlation of two images of the same field, and its 1/7 resolution.

    Parameters
    ----------
    image1, image2 : ndarray (H, W)
        Two reconstructions from independent halves of the photons.
    pixel_size_um : float, optional
        Pixel size of the images (for a 2x SR grid: half the camera pixel).

    Returns
    -------
    FRCResult

    Notes
    -----
    Both images lose their mean and get a Tukey window (tapers over 1/8 of each side) so the
    borders leave no cross in the spectrum. Rings that no data reached, where the power of
    the difference of the two images is below `MIN_DIFFERENCE_POWER` of its peak (beyond a
    reconstruction's passband, where only interpolation and window leakage shared by both
    images live and would read as perfect correlation), count as 0. Rings are one bin wide
    (``1 / min(H, W)`` cycles per pixel, physical frequency on non-square images); the curve is
    smoothed over 3 rings before the first crossing of 1/7 is found by linear interpolation.
    """
    a = np.asarray(image1, dtype=np.float64)
    b = np.asarray(image2, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise MLSimError(
            f"FRC of images of shape {a.shape} and {b.shape}; expected two 2D images of one shape"
        )
    h, w = a.shape
    if min(h, w) < 16:
        raise MLSimError(f"FRC of {h} x {w} images; expected at least 16 x 16 pixels")
    window = np.outer(windows.tukey(h, 0.25), windows.tukey(w, 0.25))
    fa = np.fft.rfft2((a - a.mean()) * window)
    fb = np.fft.rfft2((b - b.mean()) * window)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    radius = np.hypot(fy, fx)
    step = 1.0 / min(h, w)
    ring = np.rint(radius / step).astype(int)
    # rfft holds each frequency once, except the kx = 0 (and Nyquist) columns: count them half
    weight = np.ones_like(radius)
    weight[:, 0] = 0.5
    if w % 2 == 0:
        weight[:, -1] = 0.5
    n_rings = int(0.5 / step) + 1
    sel = ring < n_rings
    idx = ring[sel]
    cross = np.bincount(idx, (weight * np.real(fa * np.conj(fb)))[sel], n_rings)
    pa = np.bincount(idx, (weight * np.abs(fa) ** 2)[sel], n_rings)
    pb = np.bincount(idx, (weight * np.abs(fb) ** 2)[sel], n_rings)
    pd = np.bincount(idx, (weight * np.abs(fa - fb) ** 2)[sel], n_rings)
    counts = np.bincount(idx, weight[sel], n_rings)
    pd_mean = pd / np.maximum(counts, 1e-12)
    empty = pd_mean < MIN_DIFFERENCE_POWER * pd_mean[1:].max()
    empty[0] = False
    kernel = np.ones(3)
    num = np.convolve(cross, kernel, mode="same")
    den = np.sqrt(np.convolve(pa, kernel, mode="same") * np.convolve(pb, kernel, mode="same"))
    frc = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    frc[empty] = 0.0
    freqs = np.arange(n_rings) * step
    resolution_px, limited = _first_crossing(freqs, frc)
    return FRCResult(
        frequency_cycles_per_px=tuple(float(f) for f in freqs[1:]),
        frc=tuple(float(v) for v in frc[1:]),
        frc_resolution_px=resolution_px,
        pixel_size_um=pixel_size_um,
        limited_by_sampling=limited,
    )


def _first_crossing(freqs: np.ndarray, frc: np.ndarray) -> tuple[float, bool]:
    """``(1 / frequency, False)`` at the first fall below 1/7, or ``(2.0, True)`` when none."""
    start = int(np.searchsorted(freqs, MIN_CROSSING_CYCLES_PER_PX))
    for i in range(max(start, 1), len(freqs)):
        if frc[i] < FRC_THRESHOLD <= frc[i - 1]:
            t = (frc[i - 1] - FRC_THRESHOLD) / (frc[i - 1] - frc[i])
            f = freqs[i - 1] + t * (freqs[i] - freqs[i - 1])
            return float(1.0 / f), False
        if frc[i] < FRC_THRESHOLD and i == max(start, 1):
            return float(1.0 / freqs[i]), False
    return 2.0, True
