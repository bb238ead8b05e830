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
