"""The one rule that decides whether a raw SIM group, or its reconstruction, is usable.

Every source (a TIFF read by ``reconstruct``, a replayed stack or dataset, a live camera) and
every reconstructor go through these checks, so a group is accepted or refused the same way
whatever its path.
"""

from __future__ import annotations

import os

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.recon.base import GROUP_SIZE, N_PHASES

#: Environment variable that sets the memory (MB) one group may need; default: the memory free.
MEMORY_LIMIT_ENV = "MLSIM_LIVE_MEMORY_LIMIT_MB"
# Bytes a reconstruction needs per raw pixel of a group beyond the raw frames themselves: a
# float32 copy of the 9 frames, Fourier work arrays of the 9 frames (complex64) and the 2x SR
# image and its intermediates (a few float32 images of 4 pixels per raw pixel).
_WORK_BYTES_PER_GROUP_PIXEL = 4 + 8
_WORK_BYTES_PER_FRAME_PIXEL = 4 * 4 * 4


def group_problem(group: np.ndarray) -> str | None:
    """Why a ``(9, H, W)`` raw group cannot be reconstructed, or None when it can.

    The rule: finite intensities (no NaN/Inf) and no constant frame. The reason reads after
    "group T", e.g. ``"has 3 NaN/Inf pixels; expected finite intensities"``.
    """
    if group.dtype.kind == "f":
        finite = np.isfinite(group)
        if not finite.all():
            n_bad = int(group.size - np.count_nonzero(finite))
            return f"has {n_bad} NaN/Inf pixels; expected finite intensities"
    flat = group.reshape(group.shape[0], -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    constant = np.flatnonzero(lo == hi)
    if constant.size:
        k = int(constant[0])
        what = (
            f"has only constant frames: all {group.shape[0]} frames are constant"
            if constant.size == group.shape[0]
            else f"has a constant frame: frame {k} (angle {k // N_PHASES}, phase "
            f"{k % N_PHASES}) is constant"
        )
        return f"{what} (value {float(lo[k]):g}); expected camera frames with varying signal"
    return None


def output_problem(sr: np.ndarray) -> str | None:
    """Why a reconstruction cannot be used (NaN/Inf pixels), or None when it can."""
    finite = np.isfinite(sr)
    if finite.all():
        return None
    n_bad = int(sr.size - np.count_nonzero(finite))
    return (
        f"the reconstruction has {n_bad} NaN/Inf pixels of {sr.size}; expected finite values "
        "(the model or method failed on this group)"
    )


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def memory_limit_bytes() -> int | None:
    """The memory one group may need: ``$MLSIM_LIVE_MEMORY_LIMIT_MB``, else the memory free."""
    value = os.environ.get(MEMORY_LIMIT_ENV)
    if value:
        try:
            limit_mb = float(value)
        except ValueError:
            raise MLSimError(
                f"{MEMORY_LIMIT_ENV}={value!r}; expected a number of megabytes"
            ) from None
        if not limit_mb > 0:
            raise MLSimError(f"{MEMORY_LIMIT_ENV}={value!r}; expected a positive number")
        return int(limit_mb * 1e6)
    return available_memory_bytes()


def group_memory_bytes(frame_shape: tuple[int, int], itemsize: int) -> int:
    """Bytes reading and reconstructing one group of ``frame_shape`` frames needs, roughly."""
    pixels = int(frame_shape[0]) * int(frame_shape[1])
    group_pixels = GROUP_SIZE * pixels
    return group_pixels * (int(itemsize) + _WORK_BYTES_PER_GROUP_PIXEL) + (
        pixels * _WORK_BYTES_PER_FRAME_PIXEL
    )


def check_frame_memory(frame_shape: tuple[int, int], itemsize: int, what: str) -> None:
    """Raise `MLSimError`, before anything is allocated, when one group would not fit in memory.

    The limit is the memory free now, or ``$MLSIM_LIVE_MEMORY_LIMIT_MB`` when set (to raise or
    lower it).
    """
    limit = memory_limit_bytes()
    if limit is None:
        return
    need = group_memory_bytes(frame_shape, itemsize)
    if need > limit:
        h, w = frame_shape
        raise MLSimError(
            f"{what}: frames of {h} x {w} need about {need / 1e9:.1f} GB per group but "
            f"{limit / 1e9:.1f} GB are available; expected smaller frames (or set "
            f"{MEMORY_LIMIT_ENV} to allow more)"
        )
