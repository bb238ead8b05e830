"""Widefield reference: the mean of the 9 frames, background removed, upsampled 2x."""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
from scipy import fft as sfft

from mlsim_live.errors import MLSimError
from mlsim_live.recon.measure import as_group, estimate_background

Upsampling = Literal["fourier", "linear"]
#: What `fourier_upsample2` precomputes for one frame shape: `border_factors` and the
#: quarter-pixel shift of the half spectrum.
UpsamplingFactors: TypeAlias = tuple[
    tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray
]
UPSAMPLINGS = ("fourier", "linear")


class WidefieldReconstructor:
    """Widefield image on the 2x grid, for comparison with SIM reconstructions.

    Parameters
    ----------
    offset_adu : float, optional
        Background to subtract (camera offset + constant background); estimated per group
        (1st percentile of the block-averaged mean image) when omitted.
    upsampling : {"fourier", "linear"}
        ``"fourier"``: zero-padding of the spectrum of the image's periodic part (band-limited)
        plus its smooth part upsampled by cubic interpolation, so the image borders do not
        ring; ``"linear"``: linear interpolation.

    Notes
    -----
    The output grid is the one of the Wiener reconstruction and of the simulator's ground truth:
    output pixels ``2i`` and ``2i + 1`` tile raw pixel ``i``.
    """

    name = "widefield"
    provider = "numpy"
    scale = 2

    def __init__(self, offset_adu: float | None = None, upsampling: Upsampling = "fourier") -> None:
        if upsampling not in UPSAMPLINGS:
            raise MLSimError(
                f"upsampling {upsampling!r} is unknown; expected one of {', '.join(UPSAMPLINGS)}"
            )
        self.offset_adu = offset_adu
        self.upsampling = upsampling
        self._cache: tuple[tuple[int, int], UpsamplingFactors] | None = None

    def reconstruct(self, group: np.ndarray) -> np.ndarray:
        """Mean of the frames minus the background, as a (2H, 2W) float32 image."""
        frames = as_group(group, np.float32)
        bg = self.offset_adu if self.offset_adu is not None else estimate_background(frames)
        wf = frames.mean(axis=0) - np.float32(bg)
        if self.upsampling == "linear":
            return upsample2_linear(wf).astype(np.float32, copy=False)
        return fourier_upsample2(wf, self._get_factors(wf.shape))

    def _get_factors(self, shape: tuple[int, int]) -> UpsamplingFactors:
        if self._cache is None or self._cache[0] != shape:
            self._cache = (shape, upsampling_factors(shape))
        return self._cache[1]


def upsampling_factors(shape: tuple[int, int]) -> UpsamplingFactors:
    """What `fourier_upsample2` precomputes for one frame shape."""
    h, w = shape
    fy = sfft.fftfreq(2 * h, d=0.5)[:, None]
    fx = sfft.rfftfreq(2 * w, d=0.5)[None, :]
    return border_factors(shape), (4.0 * quarter_pixel_shift(fy, fx)).astype(np.complex64)


def fourier_upsample2(img: np.ndarray, factors: UpsamplingFactors | None = None) -> np.ndarray:
    """Band-limited 2x upsampling of a real image onto the 2x grid (pixels 2i, 2i+1 tile i).

    The periodic part of the image (periodic-plus-smooth decomposition) is zero-padded in
    Fourier space; the smooth part, which carries the border discontinuities, is upsampled
    by cubic interpolation and added.
    """
    img = np.asarray(img, dtype=np.float32)
    h, w = img.shape
    border, shift = upsampling_factors((h, w)) if factors is None else factors
    spec = sfft.rfft2(img, workers=-1)
    smooth = smooth_spectrum(img, border, half=True)
    spec -= smooth
    big = pad_half_spectrum(spec, (2 * h, w + 1))
    big *= shift
    out = sfft.irfft2(big, s=(2 * h, 2 * w), workers=-1)
    out += upsample2_cubic(sfft.irfft2(smooth, s=(h, w), workers=-1).astype(np.float32))
    return out.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# The 2x grid and the periodic-plus-smooth decomposition (shared with the Wiener reconstruction)
# --------------------------------------------------------------------------------------------


def border_factors(
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Factors of the periodic-plus-smooth decomposition's smooth spectrum (Moisan 2011).

    ``S = [(1 - e^{2 pi i ky/H}) A(kx) + (1 - e^{2 pi i kx/W}) B(ky)] / D`` with ``A`` the FFT of
    the last-minus-first row, ``B`` of the last-minus-first column and
    ``D = 2 cos(2 pi ky/H) + 2 cos(2 pi kx/W) - 4``. Returns (row factor (H, 1), column factor
    (1, W), 1/D (H, W)) and 1/D on the half spectrum (H, W//2+1).
    """
    h, w = shape
    iy = np.arange(h)[:, None]
    ix = np.arange(w)[None, :]
    fy = (1.0 - np.exp(2j * np.pi * iy / h)).astype(np.complex64)
    fx = (1.0 - np.exp(2j * np.pi * ix / w)).astype(np.complex64)
    d = 2.0 * np.cos(2 * np.pi * iy / h) + 2.0 * np.cos(2 * np.pi * ix / w) - 4.0
    d[0, 0] = 1.0
    inv = 1.0 / d
    inv[0, 0] = 0.0
    inv = inv.astype(np.float32)
    return fy, fx, inv, np.ascontiguousarray(inv[:, : w // 2 + 1])


def smooth_spectrum(
    u: np.ndarray, factors: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], *, half: bool
) -> np.ndarray:
    """Spectrum of the smooth component of ``u`` (full, or rfft half spectrum when ``half``)."""
    fy, fx, inv, inv_half = factors
    rows = u[-1, :] - u[0, :]
    cols = u[:, -1] - u[:, 0]
    if half:
        a = sfft.rfft(rows)[None, :]
        b = sfft.fft(cols)[:, None]
        n = a.shape[1]
        return ((fy * a + fx[:, :n] * b) * inv_half).astype(np.complex64)
    a = sfft.fft(rows)[None, :]
    b = sfft.fft(cols)[:, None]
    return ((fy * a + fx * b) * inv).astype(np.complex64)


def pad_half_spectrum(spec: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad the rfft2 half spectrum (H, W//2+1) of an H x W image into the half spectrum
    ``out_shape = (2H, W+1)`` of the 2H x 2W grid, keeping frequencies.

    Nyquist rows and columns of an even-sized image are split evenly between the positive and
    negative frequency, as band-limited interpolation requires.
    """
    h, n = spec.shape
    w = out_shape[1] - 1
    out = np.zeros(out_shape, dtype=spec.dtype)
    hy = (h + 1) // 2
    out[:hy, :n] = spec[:hy]
    out[out_shape[0] - (h - hy) :, :n] = spec[hy:]
    if h % 2 == 0:
        out[h // 2, :n] = 0.5 * out[out_shape[0] - h // 2, :n]
        out[out_shape[0] - h // 2, :n] *= 0.5
    if w % 2 == 0:
        out[:, n - 1] *= 0.5
    return out


def quarter_pixel_shift(gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """Spectral factor that moves an image sampled at raw positions ``j / 2`` onto the 2x grid
    whose pixel centres sit at ``j / 2 - 1/4`` (pixels 2i and 2i+1 tile raw pixel i)."""
    return np.exp(-2j * np.pi * 0.25 * (gy + gx))


def upsample2_linear(img: np.ndarray) -> np.ndarray:
    """2x linear upsampling onto the 2x grid whose pixels 2i, 2i+1 tile raw pixel i.

    Output pixel ``2i`` sits a quarter raw pixel before the centre of raw pixel ``i`` and
    ``2i + 1`` a quarter after (weights 3/4, 1/4; edges clamped), as in the simulator's
    ground truth.
    """
    img = np.asarray(img)
    h, w = img.shape
    padded = np.pad(img, 1, mode="edge")
    three, one = img.dtype.type(0.75), img.dtype.type(0.25)
    rows = np.empty((2 * h, w + 2), dtype=img.dtype)
    rows[0::2] = three * padded[1:-1] + one * padded[:-2]
    rows[1::2] = three * padded[1:-1] + one * padded[2:]
    out = np.empty((2 * h, 2 * w), dtype=img.dtype)
    out[:, 0::2] = three * rows[:, 1:-1] + one * rows[:, :-2]
    out[:, 1::2] = three * rows[:, 1:-1] + one * rows[:, 2:]
    return out


#: Keys cubic (a = -1/2) weights of raw pixels i-1, i, i+1, i+2 for the output at i + 1/4.
_CUBIC_QUARTER = (-0.0703125, 0.8671875, 0.2265625, -0.0234375)


def upsample2_cubic(img: np.ndarray) -> np.ndarray:
    """2x cubic (Keys, a = -1/2) upsampling onto the 2x grid whose pixels 2i, 2i+1 tile raw
    pixel i (edges clamped)."""
    img = np.asarray(img)
    h, w = img.shape
    dt = img.dtype.type
    wm, w0, w1, w2 = (dt(c) for c in _CUBIC_QUARTER)
    p = np.pad(img, 2, mode="edge")
    # rows: output 2i sits at i - 1/4 (mirrored weights), 2i + 1 at i + 1/4
    rows = np.empty((2 * h, w + 4), dtype=img.dtype)
    rows[0::2] = w2 * p[:-4] + w1 * p[1:-3] + w0 * p[2:-2] + wm * p[3:-1]
    rows[1::2] = wm * p[1:-3] + w0 * p[2:-2] + w1 * p[3:-1] + w2 * p[4:]
    out = np.empty((2 * h, 2 * w), dtype=img.dtype)
    out[:, 0::2] = w2 * rows[:, :-4] + w1 * rows[:, 1:-3] + w0 * rows[:, 2:-2] + wm * rows[:, 3:-1]
    out[:, 1::2] = wm * rows[:, 1:-3] + w0 * rows[:, 2:-2] + w1 * rows[:, 3:-1] + w2 * rows[:, 4:]
    return out
