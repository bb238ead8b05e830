"""Image-quality figures for judging reconstructions against a ground truth.

Reconstructions come in different units (ADU, photons, normalized), so every figure first maps
the image onto the ground truth with the least-squares affine fit ``a * img + b``; the fit can
only help a method, never invent structure.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mlsim_live.sim.optics import frequency_grid


def fit_to(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Least-squares affine map of ``img`` onto ``ref`` (float64)."""
    x = np.asarray(img, dtype=np.float64).ravel()
    y = np.asarray(ref, dtype=np.float64).ravel()
    xm, ym = x.mean(), y.mean()
    var = np.mean((x - xm) ** 2)
    a = np.mean((x - xm) * (y - ym)) / var if var > 0 else 0.0
    return (a * (np.asarray(img, dtype=np.float64) - xm) + ym).reshape(np.shape(img))


def psnr(img: np.ndarray, gt: np.ndarray) -> float:
    """PSNR in dB after the affine fit, peak = ground-truth range."""
    fitted = fit_to(img, gt)
    mse = float(np.mean((fitted - gt) ** 2))
    peak = float(np.max(gt) - np.min(gt))
    return float(10 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")


def match_percentiles(
    img: np.ndarray, ref: np.ndarray, lo: float = 0.1, hi: float = 99.9
) -> np.ndarray:
    """Map the [lo, hi] percentiles of ``img`` linearly onto those of ``ref`` (float64)."""
    a0, a1 = np.percentile(img, [lo, hi])
    b0, b1 = np.percentile(ref, [lo, hi])
    scale = (b1 - b0) / (a1 - a0) if a1 > a0 else 0.0
    return (np.asarray(img, dtype=np.float64) - a0) * scale + b0


def ssim(img: np.ndarray, gt: np.ndarray, sigma: float = 1.5) -> float:
    """Mean structural similarity (Gaussian window, Wang et al. 2004).

    The image is first mapped onto the ground truth by matching percentiles (0.1, 99.9): unlike
    a least-squares fit, this does not shrink a noisy image towards its mean, which SSIM would
    reward.
    """
    x = match_percentiles(img, gt)
    y = np.asarray(gt, dtype=np.float64)
    data_range = float(y.max() - y.min()) or 1.0
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma, truncate=3.5)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def band_correlation(
    img: np.ndarray, gt: np.ndarray, pixel_size_um: float, lo_per_um: float, hi_per_um: float
) -> float:
    """Correlation of ``img`` and ``gt`` restricted to spatial frequencies in [lo, hi) cycles/um.

    Near 0 when ``img`` holds no information about the ground truth in that band (or only
    noise); near 1 when it recovers the band. Used beyond the widefield cutoff to tell real
    super-resolution from sharpening and invented texture.
    """
    ky, kx = frequency_grid(gt.shape, pixel_size_um)
    rho = np.hypot(ky, kx)
    band = (rho >= lo_per_um) & (rho < hi_per_um)
    a = np.fft.fft2(np.asarray(img, dtype=np.float64))[band]
    b = np.fft.fft2(np.asarray(gt, dtype=np.float64))[band]
    denom = np.sqrt(np.sum(np.abs(a) ** 2) * np.sum(np.abs(b) ** 2))
    return float(np.real(np.sum(a * np.conj(b))) / denom) if denom > 0 else 0.0


def background_mask(gt: np.ndarray, fraction: float = 0.05, margin_px: int = 6) -> np.ndarray:
    """Pixels of the ground truth that are background: below ``fraction`` of its 99.9th
    percentile, and at least ``margin_px`` away from any structure."""
    high = float(np.percentile(gt, 99.9))
    structure = gt > fraction * high
    return ~ndimage.binary_dilation(structure, iterations=margin_px)


def background_level(img: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute level of ``img`` in the ground truth's background, after percentile matching,
    as a fraction of the ground truth's 99.9th percentile.

    The ground truth itself scores ~0 (its background is clean); a network that paints
    texture into empty regions scores higher. NaN when the field has no background.
    """
    mask = background_mask(gt)
    if mask.sum() < 16:
        return float("nan")
    fitted = match_percentiles(img, gt)
    floor = float(np.median(gt[mask]))
    high = float(np.percentile(gt, 99.9)) - floor
    return float(np.mean(np.abs(fitted[mask] - floor)) / high) if high > 0 else float("nan")
