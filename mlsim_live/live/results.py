"""What the reconstruction worker hands to its sinks (viewer, writer, metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GroupResult:
    """One reconstructed SIM group.

    Attributes
    ----------
    index : int
        Running number of the reconstruction (0, 1, ...).
    key : dict
        The group's axes other than angle and phase, e.g. ``{"time": 3, "position": 0}``.
    raw : ndarray, shape (9, H, W)
        The raw frames, angle-major.
    widefield : ndarray, shape (H, W), float32
        Mean of the 9 frames.
    sr : ndarray, shape (s*H, s*W), float32
        The reconstruction.
    latency_ms : float
        Last raw frame of the group in -> reconstruction out.
    reconstruct_ms : float
        Time inside the reconstructor alone.
    completed_at : float
        ``time.time()`` when the group's last frame arrived.
    reconstructor : str
        Reconstructor name (e.g. ``"rcan:rcan_default.onnx"``).
    provider : str
        Where it ran (e.g. ``"CPUExecutionProvider"``).
    pixel_size_um : float or None
        Raw camera pixel size in the sample plane, when known.
    simulated : bool
        True when the raw frames came from simulated optics (demo mode).
    ood : bool
        The latest out-of-distribution verdict when this result was made: True when the most
        recently checked earlier group fell outside the model's trained ranges (the check runs
        off the reconstruction thread, on the newest group whenever it is free).
    extra : dict
        ``first_frame_at``, ``metadata`` (of the group's last frame), ``ood_reasons`` and
        ``ood_checked_key`` (the key of the group the verdict was made on, None before the
        first check).
    """

    index: int
    key: dict[str, Any]
    raw: np.ndarray
    widefield: np.ndarray
    sr: np.ndarray
    latency_ms: float
    reconstruct_ms: float
    completed_at: float
    reconstructor: str
    provider: str
    pixel_size_um: float | None = None
    simulated: bool = False
    ood: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
