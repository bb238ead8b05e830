"""The reconstructor seam: anything that turns one 9-frame SIM group into an image."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from mlsim_live.constants import GROUP_SIZE, N_ANGLES, N_PHASES

__all__ = ["GROUP_SIZE", "N_ANGLES", "N_PHASES", "Reconstructor"]


@runtime_checkable
class Reconstructor(Protocol):
    """Reconstructs one SIM group.

    Attributes
    ----------
    name : str
        What it is, e.g. ``"wiener"``, ``"widefield"`` or ``"rcan:<model file name>"``.
    provider : str
        Where it runs, e.g. ``"numpy"`` or ``"CPUExecutionProvider"``.
    scale : int
        Output pixels per input pixel along each axis (2 for the 2x SR grid).
    """

    name: str
    provider: str
    scale: int

    def reconstruct(self, group: np.ndarray) -> np.ndarray:
        """Reconstruct a group.

        Parameters
        ----------
        group : ndarray, shape (9, H, W)
            Raw frames in angle-major order (a0p0 a0p1 a0p2 a1p0 ... a2p2), any numeric dtype,
            camera counts with offset.

        Returns
        -------
        ndarray, shape (scale*H, scale*W), float32
        """
        ...
