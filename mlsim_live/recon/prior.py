"""The physics prior of the prior-fed models: the Wiener reconstruction, normalized like the raw
frames and pixel-unshuffled onto the camera grid, stacked behind the 9 frames.

One function builds the network input for training and for inference, so both see exactly the
same numbers.
"""

from __future__ import annotations

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.normalization import Normalization

#: Channels of the unshuffled prior: the 2x2 sub-pixels of each camera pixel.
PRIOR_CHANNELS = 4


def unshuffle2(image: np.ndarray) -> np.ndarray:
    """``(2H, 2W)`` -> ``(4, H, W)``: channel ``2 dy + dx`` holds pixels ``(2i + dy, 2j + dx)``.

    The inverse of `shuffle2` and of ``torch.nn.PixelShuffle(2)`` on one image.
    """
    img = np.asarray(image)
    if img.ndim != 2 or img.shape[0] % 2 or img.shape[1] % 2:
        raise MLSimError(f"image of shape {img.shape}; expected (2H, 2W) with even sides")
    return np.stack([img[dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)])


def shuffle2(channels: np.ndarray) -> np.ndarray:
    """``(4, H, W)`` -> ``(2H, 2W)``, the inverse of `unshuffle2`."""
    ch = np.asarray(channels)
    if ch.ndim != 3 or ch.shape[0] != PRIOR_CHANNELS:
        raise MLSimError(f"array of shape {ch.shape}; expected (4, H, W)")
    _, h, w = ch.shape
    out = np.empty((2 * h, 2 * w), dtype=ch.dtype)
    for c in range(PRIOR_CHANNELS):
        out[c // 2 :: 2, c % 2 :: 2] = ch[c]
    return out


def prior_input(group: np.ndarray, wiener_image: np.ndarray, norm: Normalization) -> np.ndarray:
    """Network input of a prior-fed model: ``(9 + 4, H, W)`` float32.

    Parameters
    ----------
    group : ndarray, (9, H, W)
        Raw frames.
    wiener_image : ndarray, (2H, 2W)
        Wiener reconstruction of the group (background removed, input units).
    norm : Normalization
        The group's normalization (`mlsim_live.normalization.normalization_for`): the frames
        become ``norm.apply(group)``, the Wiener image ``wiener_image / norm.scale``, so both
        are in the same units and the network output maps back with ``norm.invert``.
    """
    frames = norm.apply(group)
    if wiener_image.shape != (2 * frames.shape[1], 2 * frames.shape[2]):
        raise MLSimError(
            f"Wiener image of shape {wiener_image.shape} for frames {frames.shape[1:]}; "
            "expected twice the frame size"
        )
    prior = unshuffle2(np.asarray(wiener_image, np.float32) * np.float32(1.0 / norm.scale))
    return np.ascontiguousarray(np.concatenate([frames, prior]), dtype=np.float32)


def coarse_part(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """A Gaussian low-pass of ``image`` with standard deviation ``sigma_px`` (fast: computed on
    a grid binned by about ``sigma_px / 2`` and interpolated back; reflective borders)."""
    from scipy import ndimage

    img = np.asarray(image, np.float32)
    h, w = img.shape
    b = max(1, int(sigma_px // 2))
    hp, wp = -(-h // b) * b, -(-w // b) * b
    padded = np.pad(img, ((0, hp - h), (0, wp - w)), mode="reflect") if (hp, wp) != (h, w) else img
    small = padded.reshape(hp // b, b, wp).sum(axis=1).reshape(hp // b, wp // b, b).sum(axis=2)
    small *= np.float32(1.0 / (b * b))
    small = ndimage.gaussian_filter(small, sigma_px / b, mode="reflect").astype(np.float32)
    # back to the full grid, block centres aligned: separable linear interpolation
    # (columns first: the gathers along rows then copy whole contiguous rows)
    return _interpolate_axis(_interpolate_axis(small, w, b, axis=1), h, b, axis=0)


def _interpolate_axis(values: np.ndarray, n: int, b: int, axis: int) -> np.ndarray:
    """Linear interpolation of block centres (block size ``b``) along ``axis`` to ``n`` pixels
    (two gathers and a blend: the sparse form of a ``(n, m)`` interpolation matrix)."""
    m = values.shape[axis]
    pos = np.clip((np.arange(n) + 0.5) / b - 0.5, 0, m - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, m - 1)
    shape = [1, 1]
    shape[axis] = n
    frac = (pos - lo).astype(np.float32).reshape(shape)
    low = np.take(values, lo, axis=axis)
    return low + frac * (np.take(values, hi, axis=axis) - low)


def keep_measured_background(
    output: np.ndarray, wiener_image: np.ndarray, sigma_px: float
) -> np.ndarray:
    """Put a network ``output`` on the measured image's intensity scale.

    The prior-fed network was trained on ground truth without out-of-focus light and removes
    it, and its intensity scale follows the simulator's ground truth, not the Wiener filter's.
    A microscopist expects a SIM reconstruction to keep the intensities the camera recorded at
    scales far above the resolution limit, so:

    1. the detail (``output`` minus its Gaussian low-pass of ``sigma_px``) is scaled by the one
       least-squares gain that maps it onto the Wiener image's detail (limited to 0.1 to 10);
    2. the coarse intensity (scales above ``sigma_px``, the widefield band: out-of-focus light,
       uneven illumination) is the Wiener image's, i.e. the measurement's.

    Only the detail below ``sigma_px`` comes from the network.
    """
    out = np.asarray(output, np.float32)
    ref = np.asarray(wiener_image, np.float32)
    coarse_out = coarse_part(out, sigma_px)
    coarse_ref = coarse_part(ref, sigma_px)
    detail_out = out - coarse_out
    energy = float(np.sum(detail_out.astype(np.float64) ** 2))
    gain = (
        float(np.sum((ref - coarse_ref) * detail_out, dtype=np.float64) / energy)
        if energy > 0
        else 1.0
    )
    gain = float(np.clip(gain, 0.1, 10.0)) if np.isfinite(gain) else 1.0
    return (gain * detail_out + coarse_ref).astype(np.float32)
