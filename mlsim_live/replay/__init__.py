"""Offline replay: recorded raw SIM data pushed through the live pipeline, as if acquired now."""

from mlsim_live.replay.runner import ReplayRun, ReplaySettings, ReplayStats, replay
from mlsim_live.replay.sources import FrameSource, NDTiffSource, TiffSource, open_source

__all__ = [
    "FrameSource",
    "NDTiffSource",
    "ReplayRun",
    "ReplaySettings",
    "ReplayStats",
    "TiffSource",
    "open_source",
    "replay",
]
