"""Fourier helpers of the SIM reconstructions: frequency grids, the detection OTF model,
windows, band separation, spectrum padding and DFTs at arbitrary frequencies."""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from mlsim_live.errors import MLSimError
from mlsim_live.sim.optics import incoherent_otf


def frequency_radius(shape: tuple[int, int], upsample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(fy, fx) grids in cycles per *raw* pixel of an FFT of ``upsample * shape`` (unshifted)."""
    fy = sfft.fftfreq(shape[0] * upsample, d=1.0 / upsample)
    fx = sfft.fftfreq(shape[1] * upsample, d=1.0 / upsample)
    return fy[:, None], fx[None, :]


def otf_model(
    shape: tuple[int, int],
    cutoff_cycles_per_px: float,
    *,
    shift_cycles_per_px: tuple[float, float] = (0.0, 0.0),
    upsample: int = 1,
    pixel_aperture: bool = True,
    rfft: bool = False,
    damping: float = 1.0,
) -> np.ndarray:
    """Detection OTF on an FFT grid: circular-pupil OTF times the camera-pixel aperture.

    Parameters
    ----------
    shape : (int, int)
        Raw frame shape.
    cutoff_cycles_per_px : float
        Widefield cutoff ``2 NA / lambda`` in cycles per raw pixel.
    shift_cycles_per_px : (float, float)
        Evaluate ``OTF(f + shift)`` (the OTF of a band moved by ``-shift``).
    upsample : int
        Grid refinement (2 for the reconstruction grid).
    pixel_aperture : bool
        Multiply by ``sinc(fy) sinc(fx)``, the integration over one camera pixel.
    rfft : bool
        Return only the half spectrum of ``rfft2`` (last axis ``n // 2 + 1``).
    damping : float
        Multiply by ``damping ** (|f + shift| / cutoff)`` (real OTFs fall faster than ideal).

    Returns
    -------
    ndarray of float64
    """
    fy, fx = frequency_radius(shape, upsample)
    if rfft:
        fx = fx[:, : shape[1] * upsample // 2 + 1]
    gy, gx = fy + shift_cycles_per_px[0], fx + shift_cycles_per_px[1]
    rho = np.hypot(gy, gx) / cutoff_cycles_per_px
    otf = incoherent_otf(rho)
    if damping != 1.0:
        otf = otf * np.power(damping, np.minimum(rho, 1.0))
    if pixel_aperture:
        otf = otf * np.sinc(gy) * np.sinc(gx)
    return otf


def tukey_window(shape: tuple[int, int], fraction: float = 0.25) -> np.ndarray:
    """Separable Tukey window; ``fraction`` of each axis is cosine-tapered (half at each end)."""

    def one(n: int) -> np.ndarray:
        w = np.ones(n)
        m = max(1, round(fraction * n / 2))
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(m) + 0.5) / m)
        w[:m] = ramp
        w[n - m :] = ramp[::-1]
        return w

    return one(shape[0])[:, None] * one(shape[1])[None, :]


def separation_matrix(phases_rad: np.ndarray) -> np.ndarray:
    """Inverse of the SIM mixing matrix for three frames.

    Frame ``p`` is ``B0 + 0.5 e^{i phi_p} B+ + 0.5 e^{-i phi_p} B-``; the returned (3, 3) matrix
    maps the three frames (or their spectra) to ``(B0, B+, B-)``.
    """
    phi = np.asarray(phases_rad, dtype=np.float64)
    mix = np.stack([np.ones(3), 0.5 * np.exp(1j * phi), 0.5 * np.exp(-1j * phi)], axis=1)
    cond = np.linalg.cond(mix)
    if not np.isfinite(cond) or cond > 1e3:
        raise MLSimError(
            f"phases {np.round(phi, 3).tolist()} rad cannot separate the bands; "
            "expected three distinct phases"
        )
    return np.linalg.inv(mix)


def pad_spectrum(spec: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad a full (unshifted) 2D spectrum into a larger grid, keeping frequencies.

    Nyquist rows and columns of an even-sized input are split evenly between the positive and
    negative frequency.
    """
    h, w = spec.shape[-2:]
    big_h, big_w = out_shape
    out = np.zeros((*spec.shape[:-2], *out_shape), dtype=spec.dtype)
    hy, hx = (h + 1) // 2, (w + 1) // 2  # non-negative frequencies
    out[..., :hy, :hx] = spec[..., :hy, :hx]
    out[..., :hy, big_w - (w - hx) :] = spec[..., :hy, hx:]
    out[..., big_h - (h - hy) :, :hx] = spec[..., hy:, :hx]
    out[..., big_h - (h - hy) :, big_w - (w - hx) :] = spec[..., hy:, hx:]
    if h % 2 == 0 and big_h > h:
        out[..., h // 2, :] = 0.5 * out[..., big_h - h // 2, :]
        out[..., big_h - h // 2, :] *= 0.5
    if w % 2 == 0 and big_w > w:
        out[..., :, w // 2] = 0.5 * out[..., :, big_w - w // 2]
        out[..., :, big_w - w // 2] *= 0.5
    return out


def dft_at(image: np.ndarray, ky: np.ndarray, kx: np.ndarray, step: float = 1.0) -> np.ndarray:
    """``sum_r image(r) exp(-2 pi i k.r)`` on the grid ky x kx (cycles per raw pixel).

    ``step`` is the raw-pixel distance between samples of ``image`` (0.5 on the 2x grid).
    Returns shape (len(ky), len(kx)).
    """
    y = np.arange(image.shape[0]) * step
    x = np.arange(image.shape[1]) * step
    ey = np.exp(-2j * np.pi * np.outer(ky, y))
    ex = np.exp(-2j * np.pi * np.outer(x, kx))
    return ey @ (image @ ex)
