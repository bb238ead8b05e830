"""Numbers behind the viewer's pictures: log power spectra, display levels, scale-bar lengths.

Pure numpy/scipy, no Qt, so they are tested and reused without a display.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.fft

# Auto-level percentiles: images clip the extreme tails, spectra show the floor dark and keep
# the pattern peaks (a handful of pixels) bright.
IMAGE_PERCENTILES = (0.1, 99.95)
SPECTRUM_PERCENTILES = (30.0, 100.0)
_MAX_LEVEL_SAMPLES = 65_536


@lru_cache(maxsize=8)
def _edge_window(shape: tuple[int, int], fraction: float) -> np.ndarray:
    """Separable Tukey window: flat centre, cosine taper over ``fraction`` of each edge."""
    axes = []
    for n in shape:
        w = np.ones(n, dtype=np.float32)
        taper = max(1, round(fraction * n))
        if 2 * taper < n:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(taper) + 0.5) / taper)
            w[:taper] = ramp
            w[n - taper :] = ramp[::-1]
        axes.append(w)
    window = axes[0][:, None] * axes[1][None, :]
    window.setflags(write=False)
    return window


def log_power_spectrum(image: np.ndarray, *, taper: float = 0.125) -> np.ndarray:
    """Return ``log10`` of the power spectrum of a 2D image, zero frequency at the centre.

    The mean is removed and the edges are tapered (Tukey window) first, so the image border
    does not paint a bright cross over the SIM pattern peaks and the OTF support.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Any real dtype.
    taper : float
        Fraction of each edge that is tapered; 0 disables the window.

    Returns
    -------
    ndarray, shape (H, W), float32
        ``log10(|FFT|^2)``, ``fftshift``-ed: zero frequency at ``(H // 2, W // 2)``.
    """
    data = np.asarray(image, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"log_power_spectrum needs a 2D image, got shape {data.shape}")
    data = data - np.float32(data.mean())
    if taper > 0:
        data = data * _edge_window(data.shape, float(taper))
    spectrum = scipy.fft.fftshift(scipy.fft.fft2(data))
    power = spectrum.real**2 + spectrum.imag**2
    floor = max(float(power.max()), 1e-30) * 1e-12
    return np.log10(power + floor).astype(np.float32)


def auto_levels(
    data: np.ndarray, percentiles: tuple[float, float] = IMAGE_PERCENTILES
) -> tuple[float, float]:
    """Return display levels ``(low, high)`` at two percentiles of the finite pixel values.

    Large images are subsampled on a regular grid. The result always has ``high > low``.
    """
    flat = np.asarray(data).reshape(-1)
    step = max(1, flat.size // _MAX_LEVEL_SAMPLES)
    sample = flat[::step].astype(np.float32, copy=False)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, percentiles))
    if not high > low:
        spread = abs(low) * 1e-3 or 1.0
        low, high = low - spread, high + spread
    return low, high


def scale_bar_um(field_um: float, fraction: float = 0.2) -> float:
    """Return a round scale-bar length (1, 2 or 5 times a power of ten, in um).

    The length is the largest round value not above ``fraction`` of the field of view.
    """
    if not field_um > 0:
        raise ValueError(f"field of view must be positive, got {field_um} um")
    target = field_um * fraction
    exponent = math.floor(math.log10(target))
    best = 10.0**exponent
    for mantissa in (2.0, 5.0, 10.0):
        if mantissa * 10.0**exponent <= target * (1 + 1e-9):
            best = mantissa * 10.0**exponent
    return best


def format_length_um(length_um: float) -> str:
    """Format a length for a scale bar: ``"500 nm"``, ``"2 µm"``, ``"1.5 mm"``."""
    if length_um < 1:
        return f"{length_um * 1000:g} nm"
    if length_um >= 1000:
        return f"{length_um / 1000:g} mm"
    return f"{length_um:g} µm"
