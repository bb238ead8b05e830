"""Bead measurements: find beads, fit 2D Gaussians to the isolated ones, report their size."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

from mlsim_live.errors import MLSimError
from mlsim_live.sim.optics import incoherent_otf

log = logging.getLogger(__name__)

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: A bead is a local maximum standing above the background by this fraction of the image's
#: bright beads (99.95th percentile over the median): the same rule for every method.
DETECTION_FRACTION = 0.15


@dataclass(frozen=True)
class BeadStats:
    """Beads found in one reconstruction and the sizes of the isolated ones.

    Attributes
    ----------
    n_beads : int
        Local maxima above the detection level (a method that splits beads finds more, one
        that merges them fewer).
    n_fitted : int
        Isolated beads (chosen on the reference image) whose Gaussian fit succeeded here.
    fwhm_px : tuple of float
        FWHM of each fitted bead, in pixels of the image.
    pixel_size_um : float or None
        Pixel size of the image, when known.
    """

    n_beads: int
    n_fitted: int
    fwhm_px: tuple[float, ...]
    pixel_size_um: float | None

    def _nm(self, px: float) -> float | None:
        return None if self.pixel_size_um is None else px * self.pixel_size_um * 1e3

    @property
    def fwhm_median_px(self) -> float:
        """Median FWHM (NaN without fitted beads)."""
        return float(np.median(self.fwhm_px)) if self.fwhm_px else float("nan")

    @property
    def fwhm_quartiles_px(self) -> tuple[float, float]:
        """25th and 75th percentiles of the FWHM: the spread."""
        if not self.fwhm_px:
            return float("nan"), float("nan")
        q1, q3 = np.percentile(self.fwhm_px, [25, 75])
        return float(q1), float(q3)

    @property
    def fwhm_median_nm(self) -> float | None:
        """Median FWHM in nanometres, when the pixel size is known."""
        return self._nm(self.fwhm_median_px)

    def to_dict(self) -> dict[str, object]:
        """JSON-able dict: counts, median FWHM and quartiles (nm when known, px always)."""
        q1, q3 = self.fwhm_quartiles_px
        d: dict[str, object] = {
            "n_beads": self.n_beads,
            "n_fitted": self.n_fitted,
            "fwhm_median_px": self.fwhm_median_px,
            "fwhm_quartiles_px": [q1, q3],
        }
        if self.pixel_size_um is not None:
            d["fwhm_median_nm"] = self.fwhm_median_nm
            d["fwhm_quartiles_nm"] = [self._nm(q1), self._nm(q3)]
        return d


def find_beads(image: np.ndarray, min_separation_px: float) -> np.ndarray:
    """Positions (row, col) of beads: local maxima above the detection level.

    Parameters
    ----------
    image : ndarray (H, W)
    min_separation_px : float
        Two maxima closer than this count as one (about the best resolution expected).

    Returns
    -------
    ndarray (n, 2) of int
    """
    img = np.asarray(image, dtype=np.float64)
    smooth = ndimage.gaussian_filter(img, 1.0)
    bg = float(np.median(smooth))
    high = float(np.percentile(smooth, 99.95))
    if not high > bg:
        return np.zeros((0, 2), dtype=int)
    level = bg + DETECTION_FRACTION * (high - bg)
    size = max(3, 2 * int(np.floor(min_separation_px / 2)) + 1)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=size)) & (smooth > level)
    return np.argwhere(peaks)


def isolated(positions: np.ndarray, shape: tuple[int, int], radius_px: float) -> np.ndarray:
    """The positions with no other position within ``radius_px`` and that far from the border."""
    if len(positions) == 0:
        return positions
    pos = positions.astype(np.float64)
    d = np.hypot(pos[:, None, 0] - pos[None, :, 0], pos[:, None, 1] - pos[None, :, 1])
    np.fill_diagonal(d, np.inf)
    alone = d.min(axis=1) > radius_px if len(pos) > 1 else np.ones(1, bool)
    r = int(np.ceil(radius_px))
    inside = (
        (positions[:, 0] >= r)
        & (positions[:, 1] >= r)
        & (positions[:, 0] < shape[0] - r)
        & (positions[:, 1] < shape[1] - r)
    )
    return positions[alone & inside]


def fit_gaussian(image: np.ndarray, center: tuple[int, int], half_width_px: int) -> float | None:
    """FWHM (pixels) of an isotropic 2D Gaussian plus constant fitted around ``center``.

    Returns None when the fit fails, drifts away (more than 2 px) or hits its width limits.
    """
    y0, x0 = int(center[0]), int(center[1])
    hw = int(half_width_px)
    patch = np.asarray(image[y0 - hw : y0 + hw + 1, x0 - hw : x0 + hw + 1], dtype=np.float64)
    if patch.shape != (2 * hw + 1, 2 * hw + 1):
        return None
    yy, xx = np.mgrid[-hw : hw + 1, -hw : hw + 1].astype(np.float64)
    base = float(np.percentile(patch, 10))
    amp = float(patch[hw, hw] - base)
    if not amp > 0:
        return None

    def residual(p: np.ndarray) -> np.ndarray:
        a, dy, dx, s, c = p
        model = a * np.exp(-((yy - dy) ** 2 + (xx - dx) ** 2) / (2 * s * s)) + c
        return (model - patch).ravel()

    s_max = hw
    start = np.array([amp, 0.0, 0.0, min(max(hw / 3, 0.8), s_max * 0.9), base])
    lower = [0.0, -2.5, -2.5, 0.3, -np.inf]
    upper = [np.inf, 2.5, 2.5, s_max, np.inf]
    try:
        fit = optimize.least_squares(residual, start, bounds=(lower, upper), x_scale="jac")
    except (ValueError, np.linalg.LinAlgError):  # pragma: no cover - degenerate patch
        return None
    _a, dy, dx, s, _ = fit.x
    if not fit.success or abs(dy) > 2 or abs(dx) > 2 or s >= 0.98 * s_max or s <= 0.31:
        return None
    return float(FWHM_PER_SIGMA * s)


def measure_beads(
    image: np.ndarray,
    centers: np.ndarray,
    half_width_px: int,
    min_separation_px: float,
    pixel_size_um: float | None,
) -> BeadStats:
    """Count beads in ``image`` and fit those at ``centers`` (isolated beads of the reference)."""
    n_beads = len(find_beads(image, min_separation_px))
    fwhm = [fit_gaussian(image, tuple(c), half_width_px) for c in centers]
    good = tuple(float(f) for f in fwhm if f is not None)
    return BeadStats(n_beads=n_beads, n_fitted=len(good), fwhm_px=good, pixel_size_um=pixel_size_um)


def sphere_projection(
    diameter_nm: float, pixel_nm: float, size: int, supersample: int = 5
) -> np.ndarray:
    """Projected (column-integrated) uniform sphere of ``diameter_nm``, centred on a grid."""
    if diameter_nm <= 0:
        out = np.zeros((size, size))
        out[size // 2, size // 2] = 1.0
        return out
    n = size * supersample
    c = (np.arange(n) - (n - 1) / 2) * pixel_nm / supersample
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    radius = diameter_nm / 2
    fine = np.sqrt(np.clip(radius**2 - r2, 0.0, None))
    return fine.reshape(size, supersample, size, supersample).sum(axis=(1, 3))


def expected_bead_fwhm_nm(
    bead_diameter_nm: float,
    cutoff_per_um: float,
    pixel_box_um: float | None = None,
    half_width_nm: float | None = None,
) -> float:
    """FWHM of a Gaussian fitted to the image of a bead through an ideal optical transfer.

    The projected sphere is blurred by the aberration-free circular-pupil OTF of
    ``cutoff_per_um`` (``2 NA / lambda`` for widefield; ``2 NA / lambda + k`` for SIM with the
    pattern frequency ``k``, the transfer of an OTF-apodized Wiener reconstruction) and, when
    given, by a camera pixel of ``pixel_box_um``; then fitted as `fit_gaussian` fits beads.
    """
    if not cutoff_per_um > 0:
        raise MLSimError(f"OTF cutoff {cutoff_per_um}/um; expected a positive number")
    pixel_nm = 5.0
    airy_fwhm_nm = 1.03e3 / cutoff_per_um
    hw_nm = (
        half_width_nm if half_width_nm is not None else 1.2 * max(airy_fwhm_nm, bead_diameter_nm)
    )
    size = int(2 ** np.ceil(np.log2(max(8 * hw_nm / pixel_nm, 64))))
    obj = sphere_projection(bead_diameter_nm, pixel_nm, size)
    f = np.fft.fftfreq(size, d=pixel_nm * 1e-3)
    rho = np.hypot(f[:, None], f[None, :])
    transfer = incoherent_otf(rho / cutoff_per_um)
    if pixel_box_um:
        transfer = (
            transfer * np.sinc(f[:, None] * pixel_box_um) * np.sinc(f[None, :] * pixel_box_um)
        )
    img = np.real(np.fft.ifft2(np.fft.fft2(np.fft.ifftshift(obj)) * transfer))
    img = np.fft.fftshift(img)
    # fit on a grid of ~1/10 of the FWHM, as a reconstruction samples it
    step = max(1, round(airy_fwhm_nm / 10 / pixel_nm))
    centre = size // 2
    sampled = img[centre % step :: step, centre % step :: step]
    c = centre // step
    hw = round(hw_nm / (pixel_nm * step))
    fwhm = fit_gaussian(sampled, (c, c), hw)
    if fwhm is None:  # pragma: no cover - an ideal bead always fits
        raise MLSimError("the ideal bead image could not be fitted")
    return fwhm * pixel_nm * step
