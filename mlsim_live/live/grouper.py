"""Collect raw frames, in any arrival order, into complete 9-frame SIM groups."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.recon.base import N_ANGLES, N_PHASES

log = logging.getLogger(__name__)

GroupKey = tuple[tuple[str, Any], ...]
# How many emitted group keys are remembered to recognize late duplicates (bounded memory).
_DONE_KEYS_KEPT = 100_000


@dataclass(frozen=True)
class CompletedGroup:
    """A complete SIM group, ready for reconstruction.

    Attributes
    ----------
    key : dict
        The group's axes other than angle and phase, e.g. ``{"time": 3}``.
    frames : ndarray, shape (9, H, W)
        The raw frames, angle-major (a0p0 a0p1 a0p2 a1p0 ... a2p2), in the camera's dtype.
    first_frame_at : float
        ``time.time()`` when the group's first frame arrived.
    completed_at : float
        ``time.time()`` when the group's last frame arrived.
    completed_perf : float
        ``time.perf_counter()`` at the same moment, for latency measurement.
    metadata : dict
        Metadata of the last frame that arrived (may be empty).
    """

    key: dict[str, Any]
    frames: np.ndarray
    first_frame_at: float
    completed_at: float
    completed_perf: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IncompleteGroup:
    """A group that never received all 9 frames.

    Attributes
    ----------
    key : dict
        The group's axes other than angle and phase.
    missing : tuple of (angle, phase)
        The frames that never arrived.
    """

    key: dict[str, Any]
    missing: tuple[tuple[int, int], ...]


class _Pending:
    __slots__ = ("first_frame_at", "frames", "present")

    def __init__(self, shape: tuple[int, int], dtype: np.dtype, now: float) -> None:
        self.frames = np.empty((N_ANGLES * N_PHASES, *shape), dtype=dtype)
        self.present = np.zeros(N_ANGLES * N_PHASES, dtype=bool)
        self.first_frame_at = now


def _axis_index(axes: Mapping[str, Any], name: str, size: int) -> int:
    if name not in axes:
        raise MLSimError(
            f"frame axes {dict(axes)} have no {name!r} axis; expected {name} 0..{size - 1}"
        )
    value = axes[name]
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise MLSimError(f"{name} axis value {value!r} is not an integer 0..{size - 1}") from None
    if index != value or not 0 <= index < size:
        raise MLSimError(f"{name} axis value {value!r} is out of range; expected 0..{size - 1}")
    return index


class FrameGrouper:
    """Groups raw frames by their angle and phase axes under a key of all other axes.

    Frames may arrive in any order and groups may interleave. A group is emitted, angle-major,
    as soon as its 9th distinct frame arrives. Duplicates are handled deterministically: a frame
    that repeats an (angle, phase) of a group still being filled replaces the earlier one (the
    last one wins); a frame for a group already emitted is ignored. Both are counted in
    ``duplicates``. Not thread-safe: callers serialize ``add`` (the pipeline holds a lock).

    Parameters
    ----------
    angle_axis, phase_axis : str
        Names of the axes that carry the pattern angle (0..2) and phase (0..2).
    max_pending : int
        Groups being filled at once; beyond it the oldest is abandoned as incomplete, so that
        missing frames cannot make memory grow without bound.
    """

    def __init__(
        self, angle_axis: str = "angle", phase_axis: str = "phase", max_pending: int = 64
    ) -> None:
        if angle_axis == phase_axis:
            raise MLSimError(f"angle and phase axes must differ; both are {angle_axis!r}")
        if max_pending < 1:
            raise MLSimError(f"max_pending must be at least 1; got {max_pending}")
        self.angle_axis = angle_axis
        self.phase_axis = phase_axis
        self.max_pending = max_pending
        self.duplicates = 0
        self.groups_completed = 0
        self._pending: OrderedDict[GroupKey, _Pending] = OrderedDict()
        # Keys of groups already emitted or abandoned, newest last, to recognize late duplicates.
        self._done: OrderedDict[GroupKey, None] = OrderedDict()
        self._abandoned: list[IncompleteGroup] = []

    def key_of(self, axes: Mapping[str, Any]) -> GroupKey:
        """The group key of a frame: its axes other than angle and phase, sorted by name."""
        return tuple(
            sorted((k, v) for k, v in axes.items() if k not in (self.angle_axis, self.phase_axis))
        )

    def add(
        self,
        frame: np.ndarray,
        axes: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> CompletedGroup | None:
        """Add one raw frame; return the completed group when this frame completes one.

        The frame is copied, so the caller may reuse or hand on its array.

        Raises
        ------
        MLSimError
            When the frame has no valid angle or phase axis, is not 2D, or its shape or dtype
            differs from the other frames of its group.
        """
        angle = _axis_index(axes, self.angle_axis, N_ANGLES)
        phase = _axis_index(axes, self.phase_axis, N_PHASES)
        frame = np.asarray(frame)
        if frame.ndim != 2:
            raise MLSimError(f"frame has shape {frame.shape}; expected a 2D image (H, W)")
        key = self.key_of(axes)
        if key in self._done:
            self.duplicates += 1
            log.debug("frame %s of group %s arrived after the group was complete", axes, key)
            return None
        now = time.time()
        pending = self._pending.get(key)
        if pending is None:
            pending = _Pending(frame.shape, frame.dtype, now)
            self._pending[key] = pending
            self._evict_overflow()
        elif pending.frames.shape[1:] != frame.shape or pending.frames.dtype != frame.dtype:
            raise MLSimError(
                f"frame {dict(axes)} is {frame.shape} {frame.dtype}; expected "
                f"{pending.frames.shape[1:]} {pending.frames.dtype} like the rest of its group"
            )
        slot = angle * N_PHASES + phase
        if pending.present[slot]:
            self.duplicates += 1
            log.debug("duplicate frame %s: the last one wins", str(dict(axes)))
        pending.frames[slot] = frame
        pending.present[slot] = True
        if not pending.present.all():
            return None
        del self._pending[key]
        self._mark_done(key)
        self.groups_completed += 1
        return CompletedGroup(
            key=dict(key),
            frames=pending.frames,
            first_frame_at=pending.first_frame_at,
            completed_at=now,
            completed_perf=time.perf_counter(),
            metadata=dict(metadata) if metadata else {},
        )

    def _mark_done(self, key: GroupKey) -> None:
        self._done[key] = None
        if len(self._done) > _DONE_KEYS_KEPT:
            self._done.popitem(last=False)

    def _evict_overflow(self) -> None:
        while len(self._pending) > self.max_pending:
            key, pending = self._pending.popitem(last=False)
            self._mark_done(key)
            group = self._incomplete(key, pending)
            self._abandoned.append(group)
            log.warning(
                "group %s abandoned with frames %s missing: more than %d groups pending",
                group.key,
                group.missing,
                self.max_pending,
            )

    def _incomplete(self, key: GroupKey, pending: _Pending) -> IncompleteGroup:
        missing = tuple(divmod(int(slot), N_PHASES) for slot in np.flatnonzero(~pending.present))
        return IncompleteGroup(key=dict(key), missing=missing)

    @property
    def incomplete(self) -> list[IncompleteGroup]:
        """Groups given up so far: abandoned on overflow, and after ``finish`` all unfinished."""
        return list(self._abandoned)

    @property
    def frames_pending(self) -> int:
        """Frames held in groups being filled."""
        return sum(int(p.present.sum()) for p in self._pending.values())

    @property
    def n_pending(self) -> int:
        """Groups currently being filled."""
        return len(self._pending)

    def finish(self) -> list[IncompleteGroup]:
        """End of acquisition: return every group that never completed (also those abandoned).

        Pending groups are cleared; calling ``finish`` again returns the same list.
        """
        for key, pending in self._pending.items():
            self._mark_done(key)
            self._abandoned.append(self._incomplete(key, pending))
        self._pending.clear()
        return list(self._abandoned)
