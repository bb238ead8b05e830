"""The viewer's trust overlay without Qt: the newest map handed from the trust thread to the
GUI thread, its colours and its status-bar text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlsim_live.live.newest import Newest


@dataclass(frozen=True)
class TrustMap:
    """One group's trust map as the viewer shows it.

    Attributes
    ----------
    index : int
        Running number of the group it maps.
    trust : ndarray, float
        Trust per pixel in [0, 1]; below 0.5 is flagged.
    flagged_fraction : float
        Fraction of the pixels flagged.
    """

    index: int
    trust: np.ndarray
    flagged_fraction: float


class NewestTrust(Newest[TrustMap]):
    """The one-slot mailbox (`mlsim_live.live.newest.Newest`) between the trust thread, which
    puts maps, and the GUI thread, which takes the newest."""


def trust_rgba(trust: np.ndarray) -> np.ndarray:
    """RGBA uint8 overlay of a trust map: flagged pixels (below 0.5) in red, the more opaque
    the lower their trust; the rest transparent."""
    t = np.asarray(trust, dtype=np.float32)
    rgba = np.zeros((*t.shape, 4), np.uint8)
    flagged = t < 0.5
    rgba[flagged, 0], rgba[flagged, 1], rgba[flagged, 2] = 255, 60, 30
    depth = np.clip((0.5 - t) / 0.5, 0.0, 1.0)
    rgba[..., 3] = np.where(flagged, 90 + 130 * depth, 0).astype(np.uint8)
    return rgba


def trust_status(shown: TrustMap | None) -> str:
    """The status bar's trust part while the overlay is on: the flagged fraction of the map
    shown, or that the first map is being made."""
    if shown is None:
        return " · trust: mapping…"
    return f" · trust: {shown.flagged_fraction:.1%} flagged (group #{shown.index})"
