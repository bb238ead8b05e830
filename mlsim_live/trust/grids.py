"""The trust map's grids: the reconstruction's 2x grid, the camera grid and the half grid of
2 x 2 camera pixels on which the smooth maps are made, and the smoothing over the PSF scale."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mlsim_live.recon.widefield import upsample2_linear
from mlsim_live.trust.settings import SMOOTH_TRUNCATE


def block_mean2(img: np.ndarray) -> np.ndarray:
    """Mean of 2x2 blocks: the 2x grid onto the camera grid."""
    out = img[0::2, 0::2] + img[1::2, 0::2]
    out += img[0::2, 1::2]
    out += img[1::2, 1::2]
    out *= np.float32(0.25)
    return out.astype(np.float32, copy=False)


def to_half(img: np.ndarray) -> np.ndarray:
    """Mean of 2x2 blocks of a camera-grid map (an odd size repeats its last row/column)."""
    h, w = img.shape
    if h % 2 or w % 2:
        img = np.pad(img, ((0, h % 2), (0, w % 2)), mode="edge")
    return block_mean2(img)


def fine_to_half(img: np.ndarray) -> np.ndarray:
    """Mean of 4 x 4 blocks of a map on the reconstruction's 2x grid: the half grid of 2 x 2
    camera pixels (``to_half(block_mean2(img))``, in one pass where the size allows)."""
    h, w = img.shape
    if h % 4 or w % 4:
        return to_half(block_mean2(img))
    rows = img[0::4] + img[1::4]
    rows += img[2::4]
    rows += img[3::4]
    out = rows[:, 0::4] + rows[:, 1::4]
    out += rows[:, 2::4]
    out += rows[:, 3::4]
    out *= np.float32(1.0 / 16.0)
    return out.astype(np.float32, copy=False)


def from_half(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A half-grid map back on the camera grid (linear interpolation)."""
    return upsample2_linear(img)[: shape[0], : shape[1]]


def half_to_fine(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A half-grid map on the reconstruction's 2x grid ``shape``: the same as
    ``upsample2_linear(from_half(img, camera shape))``, in one pass of 4 phases per axis
    where ``shape`` is 4 times ``img``'s."""
    h, w = img.shape
    if shape != (4 * h, 4 * w):
        return upsample2_linear(from_half(img, (shape[0] // 2, shape[1] // 2)))
    padded = np.pad(img.astype(np.float32, copy=False), 1, mode="edge")
    rows = np.empty((4 * h, w + 2), np.float32)
    _four_phases(padded[1:-1], padded[:-2], padded[2:], rows, 0)
    out = np.empty((4 * h, 4 * w), np.float32)
    _four_phases(rows[:, 1:-1], rows[:, :-2], rows[:, 2:], out, 1)
    return out


def _four_phases(
    cur: np.ndarray, prev: np.ndarray, nxt: np.ndarray, out: np.ndarray, axis: int
) -> None:
    """Twice 2x linear upsampling along ``axis`` as 4 phases of the half-grid samples: the
    fine pixels 4i .. 4i+3 of ``out`` from the samples i-1, i, i+1."""
    dp = prev - cur
    dn = nxt - cur
    f = np.float32
    phases = (
        cur + f(0.375) * dp,
        cur + f(0.1875) * dp + f(0.0625) * dn,
        cur + f(0.0625) * dp + f(0.1875) * dn,
        cur + f(0.375) * dn,
    )
    for k, phase in enumerate(phases):
        if axis == 0:
            out[k::4] = phase
        else:
            out[:, k::4] = phase


def smooth(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing over the PSF scale (kernel cut at 3 sigma)."""
    return ndimage.gaussian_filter(img, sigma_px, mode="nearest", truncate=SMOOTH_TRUNCATE)


__all__ = ["block_mean2", "fine_to_half", "from_half", "half_to_fine", "smooth", "to_half"]
