"""`GroupResult` objects for the viewer, napari and trust tests."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mlsim_live.live.results import GroupResult


def group_result(raw: np.ndarray, sr: np.ndarray, index: int = 0, **fields: Any) -> GroupResult:
    """A result of the raw group ``raw`` (9, h, w) and its reconstruction ``sr``: key
    ``{"time": index}``, the widefield mean of ``raw``, plausible timings, a Wiener
    reconstructor and 0.1 µm pixels; ``fields`` replace any of these."""
    values: dict[str, Any] = {
        "index": index,
        "key": {"time": index},
        "raw": raw,
        "widefield": np.asarray(raw).mean(axis=0, dtype=np.float32),
        "sr": sr,
        "latency_ms": 40.0,
        "reconstruct_ms": 30.0,
        "completed_at": time.time(),
        "reconstructor": "wiener",
        "provider": "numpy",
        "pixel_size_um": 0.1,
    }
    values.update(fields)
    return GroupResult(**values)
