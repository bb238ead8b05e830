"""The one input/output normalization shared by training, export and inference of the RCAN.

Raw SIM frames arrive in camera counts with an unknown offset and gain. The network sees

    x = (raw - background) / scale

with ``background`` the 0.5th percentile of the whole 9-frame group (camera offset plus
out-of-focus floor) and ``scale`` the 99.9th percentile of ``raw - background`` (floored at 1e-6
of the dynamic range so constant frames cannot divide by zero). Training targets are the ground
truth divided by its own 99.9th percentile. The network output ``y`` is mapped back to the input's
units as ``y * scale`` (background removed), so intensities stay comparable to widefield.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUND_PERCENTILE = 0.5
SCALE_PERCENTILE = 99.9


@dataclass(frozen=True)
class Normalization:
    """Background and scale of one group, in the input's units (ADU or photons)."""

    background: float
    scale: float

    def apply(self, group: np.ndarray) -> np.ndarray:
        """Return ``(group - background) / scale`` as float32."""
        out = np.asarray(group, dtype=np.float32) - np.float32(self.background)
        out *= np.float32(1.0 / self.scale)
        return out

    def invert(self, output: np.ndarray) -> np.ndarray:
        """Map a network output back to the input's units (background removed)."""
        return np.asarray(output, dtype=np.float32) * np.float32(self.scale)


def _percentiles_of_counts(values: np.ndarray, qs: tuple[float, ...]) -> tuple[float, ...]:
    """``np.percentile(values, qs)`` (linear interpolation) for unsigned integers up to 16 bit,
    read off a histogram: exact, and ~10x faster than sorting a 512x512x9 group."""
    cum = np.cumsum(np.bincount(values.ravel()))
    n = int(cum[-1])
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        lo = int(np.floor(pos))
        a = int(np.searchsorted(cum, lo, side="right"))
        b = int(np.searchsorted(cum, min(lo + 1, n - 1), side="right"))
        out.append(a + (pos - lo) * (b - a))
    return tuple(out)


def normalization_for(group: np.ndarray, background: float | None = None) -> Normalization:
    """Estimate the background and scale of a raw group (any shape, any numeric dtype).

    Parameters
    ----------
    group : ndarray
        The raw group.
    background : float, optional
        A known background (camera offset), in the group's units, used instead of the
        0.5th-percentile estimate; the scale is then the 99.9th percentile of
        ``group - background``, with the same floor.
    """
    arr = np.asarray(group)
    if arr.size == 0:
        return Normalization(background=0.0 if background is None else float(background), scale=1.0)
    qs = (BACKGROUND_PERCENTILE, SCALE_PERCENTILE)
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 2:
        low, high = _percentiles_of_counts(arr, qs)
        full = float(arr.max())
    else:
        flat = arr.astype(np.float32, copy=False).ravel()
        low, high = (float(v) for v in np.percentile(flat, qs))
        full = float(np.max(np.abs(flat)))
    if background is not None:
        low = float(background)
    span = float(high - low)
    scale = max(span, 1e-6 * max(full, 1.0))
    return Normalization(background=float(low), scale=scale)


def normalize_target(gt: np.ndarray) -> np.ndarray:
    """Normalize a ground-truth image for training: divide by its 99.9th percentile."""
    gt = np.asarray(gt, dtype=np.float32)
    high = float(np.percentile(gt, SCALE_PERCENTILE))
    return gt / max(high, 1e-6)
