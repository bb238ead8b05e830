"""pymmcore-plus frameReady handler: SIM frames of a useq MDA go into the live pipeline without
ever blocking the MDA thread.

How the SIM pattern is read from a useq event
---------------------------------------------
The pattern is a **channel**: a Micro-Manager config group (e.g. ``SIM``) with 9 presets named
``A<angle>P<phase>`` (``A0P0`` .. ``A2P2``, angle-major), used as the 9 channels of a
``useq.MDASequence`` with the channel axis innermost (``axis_order="tpgcz"``, see
:func:`sim_sequence`). pymmcore-plus's engine sets the preset before each exposure, exactly as for
fluorescence channels, and every frame's event carries ``event.channel.config == "A1P2"``, from
which angle 1 and phase 2 are read. This is the one per-frame setting useq-schema models
natively: the pattern then shows in the OME metadata of the raw file (the channel names) and
pymmcore-plus can hardware-sequence the presets when the pattern device supports it.

A hand-built event without a pattern channel may instead carry ``metadata={"sim_angle": a,
"sim_phase": p}`` (useq's free per-event metadata). A frame with neither is not reconstructed
(counted in ``frames_without_pattern``); its raw frame is still saved by pymmcore-plus.

Every event index but the channel (``t``, ``p``, ``g``, ``z``) keys the group, so each time
point (and position, z plane) is one SIM group.

Never blocking
--------------
pymmcore-plus emits ``frameReady`` on its acquisition thread, after its data sink has stored the
raw frame. :meth:`SIMFrameHandler.frameReady` copies the frame, appends it to a queue and
returns; a relay thread pushes queued frames into the ``SIMProcessor`` (grouper, reconstruction
worker, sinks), where a slow reconstruction or the ``all`` policy's backpressure may wait without
holding up the camera. The queue is bounded in bytes: frames beyond the bound are not
reconstructed (counted in ``frames_not_relayed``), never waited for.
"""

from __future__ import annotations

import datetime
import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlsim_live.constants import N_ANGLES, N_PHASES
from mlsim_live.errors import one_line
from mlsim_live.latency import LatencyWindow
from mlsim_live.live.acquire import pattern_presets
from mlsim_live.live.processor import SIMProcessor
from mlsim_live.live.sim_optics import PATTERN_GROUP, parse_preset
from mlsim_live.live.stats import Percentiles, RunSummary, StatsSection

log = logging.getLogger(__name__)

ANGLE_KEY = "sim_angle"
PHASE_KEY = "sim_phase"
CHANNEL_INDEX = "c"
DEFAULT_MAX_QUEUED_BYTES = 1 << 30
_STOP = object()


def event_pattern(event: Any, pattern_group: str | None = None) -> tuple[int, int] | None:
    """The (angle, phase) of a useq event: its channel preset ``A<a>P<p>``, else its metadata.

    Parameters
    ----------
    event : useq.MDAEvent
        The event of a frame.
    pattern_group : str, optional
        Only channels of this config group count as patterns (None: any group).

    Returns
    -------
    (angle, phase), or None when the event names no pattern.
    """
    channel = getattr(event, "channel", None)
    if channel is not None and (pattern_group is None or channel.group == pattern_group):
        state = parse_preset(channel.config)
        if state is not None:
            return state
    metadata = getattr(event, "metadata", None) or {}
    try:
        angle, phase = int(metadata[ANGLE_KEY]), int(metadata[PHASE_KEY])
    except (KeyError, TypeError, ValueError):
        return None
    if 0 <= angle < N_ANGLES and 0 <= phase < N_PHASES:
        return angle, phase
    return None


def group_axes(event: Any, pattern: tuple[int, int]) -> dict[str, Any]:
    """The pipeline axes of a frame: the event's index without the channel, plus angle/phase."""
    axes = {k: v for k, v in dict(event.index).items() if k != CHANNEL_INDEX}
    axes["angle"], axes["phase"] = pattern
    return axes


def sim_sequence(
    groups: int,
    pattern_group: str = PATTERN_GROUP,
    exposure_ms: float | None = None,
    interval_s: float = 0.0,
) -> Any:
    """A ``useq.MDASequence`` of ``groups`` SIM groups: time points x the 9 pattern channels.

    The channels are the presets ``A0P0`` .. ``A2P2`` of ``pattern_group`` in angle-major order,
    innermost (``axis_order="tpgcz"``): the 9 frames of a group follow one another, and a group
    starts every ``interval_s`` (0: as fast as possible).
    """
    import useq

    return useq.MDASequence(
        axis_order=tuple("tpgcz"),
        time_plan=useq.TIntervalLoops(
            interval=datetime.timedelta(seconds=float(interval_s)), loops=int(groups)
        ),
        channels=tuple(sim_channels(pattern_group, exposure_ms)),
    )


def sim_channels(pattern_group: str = PATTERN_GROUP, exposure_ms: float | None = None) -> list[Any]:
    """The 9 ``useq.Channel`` pattern presets of ``pattern_group``, angle-major."""
    import useq

    return [
        useq.Channel(config=name, group=pattern_group, exposure=exposure_ms)
        for name in pattern_presets()
    ]


@dataclass(frozen=True)
class FrameHandlerStats:
    """The frame handler's counts: every delivered frame is relayed to the pipeline, not relayed
    (the queue was full or the handler closed), without a pattern, or a handler failure (or
    still queued: ``frames_queued``). ``frame_ready_ms``: time spent in ``frameReady`` on the
    MDA thread; ``max_queued_frames``: the longest the queue grew."""

    frames_ready: int
    frames_relayed: int
    frames_queued: int
    frames_not_relayed: int
    frames_without_pattern: int
    handler_failures: int
    max_queued_frames: int
    frame_ready_ms: Percentiles

    def to_dict(self) -> dict[str, Any]:
        """Their keys of the summary JSON."""
        return {
            "frames_ready": self.frames_ready,
            "frames_relayed": self.frames_relayed,
            "frames_queued": self.frames_queued,
            "frames_not_relayed": self.frames_not_relayed,
            "frames_without_pattern": self.frames_without_pattern,
            "handler_failures": self.handler_failures,
            "max_queued_frames": self.max_queued_frames,
            "frame_ready_ms": self.frame_ready_ms.to_dict(),
        }


def _is_qt_signal(signal: Any) -> bool:
    """A Qt signal instance (PyQt or PySide), not a psygnal one."""
    module = type(signal).__module__ or ""
    return "Qt" in module or "Shiboken" in module


class SIMFrameHandler:
    """Connect ``frameReady`` to this: each frame goes to a ``SIMProcessor``, off the MDA thread.

    Parameters
    ----------
    processor : SIMProcessor
        Groups, reconstructs and saves (``<name>_sr.tif``, summary JSON); closed by
        :meth:`close`.
    pattern_group : str, optional
        Only channels of this config group are patterns (None: any channel named ``A<a>P<p>``).
    max_queued_bytes : int
        Frames waiting for the relay thread, at most (frames beyond are not reconstructed and
        counted in ``frames_not_relayed``; the MDA thread never waits).

    Examples
    --------
    >>> handler = SIMFrameHandler(SIMProcessor(method="wiener", out="data", name="cells"))
    >>> handler.connect(mmc.mda.events)  # frameReady, run on the MDA thread
    >>> mmc.mda.run(sim_sequence(10, "SIM", exposure_ms=10), output="data/cells.ome.tif")
    >>> summary = handler.close()  # reconstruct what waits, write the summary
    """

    def __init__(
        self,
        processor: SIMProcessor,
        pattern_group: str | None = None,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
    ) -> None:
        self.processor = processor
        self.pattern_group = pattern_group
        self.max_queued_bytes = int(max_queued_bytes)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self._frames_ready = 0
        self._frames_relayed = 0
        self._frames_not_relayed = 0
        self._frames_without_pattern = 0
        self._handler_failures = 0
        self._max_queued_frames = 0
        self._queued_frames = 0
        self._frame_ready_ms = LatencyWindow()
        self._closed = False
        self._frame_seen = threading.Condition(self._lock)
        self.last_frame_at = time.monotonic()
        self._relay = threading.Thread(target=self._run_relay, name="mlsim-frame-relay")
        self._relay.daemon = True
        self._relay.start()

    # ---- connection ----
    def connect(self, mda_events: Any) -> None:
        """Connect :meth:`frameReady` to ``mda_events.frameReady`` (``mmc.mda.events``).

        With pymmcore-plus's Qt signals (chosen when a QApplication exists, as under
        napari-micromanager) the connection is direct, so the handler runs on the MDA thread
        as with psygnal, never queued to a GUI event loop that may not be running.
        """
        signal = mda_events.frameReady
        if _is_qt_signal(signal):
            from qtpy.QtCore import Qt

            signal.connect(self.frameReady, Qt.ConnectionType.DirectConnection)
        else:
            signal.connect(self.frameReady)

    def disconnect(self, mda_events: Any) -> None:
        """Undo :meth:`connect`."""
        mda_events.frameReady.disconnect(self.frameReady)

    # ---- the MDA thread ----
    def frameReady(  # pymmcore-plus's signal name
        self, img: np.ndarray, event: Any, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Copy the frame, queue it for the pipeline and return; never raises, never waits."""
        t0 = time.perf_counter()
        try:
            self._take(img, event, meta or {})
        except Exception as exc:
            with self._lock:
                self._handler_failures += 1
                first = self._handler_failures == 1
            log.log(
                logging.ERROR if first else logging.DEBUG,
                "frameReady handler could not take a frame: %s",
                one_line(exc),
                exc_info=first,
            )
        self._frame_ready_ms.add((time.perf_counter() - t0) * 1e3)

    def _take(self, img: np.ndarray, event: Any, meta: Mapping[str, Any]) -> None:
        with self._frame_seen:
            self._frames_ready += 1
            self.last_frame_at = time.monotonic()
            self._frame_seen.notify_all()
        pattern = event_pattern(event, self.pattern_group)
        if pattern is None:
            with self._lock:
                self._frames_without_pattern += 1
                first = self._frames_without_pattern == 1
            if first:
                log.warning(
                    "frame %s names no SIM pattern (channel %s); expected a channel preset "
                    "A<angle>P<phase>%s or event metadata sim_angle/sim_phase; such frames are "
                    "saved but not reconstructed",
                    dict(event.index),
                    getattr(getattr(event, "channel", None), "config", None),
                    f" of group {self.pattern_group}" if self.pattern_group else "",
                )
            return
        nbytes = int(img.nbytes)
        first_lost: bool | None = None  # None: relayed; else whether it is the first lost
        with self._lock:
            if self._closed or self._queued_bytes + nbytes > self.max_queued_bytes:
                self._frames_not_relayed += 1
                first_lost = self._frames_not_relayed == 1
                closed = self._closed
            else:
                self._queued_bytes += nbytes
                self._queued_frames += 1
                self._max_queued_frames = max(self._max_queued_frames, self._queued_frames)
        if first_lost is not None:
            if first_lost:
                log.error(
                    "frame %s not reconstructed: %s; the raw frame is saved",
                    dict(event.index),
                    "the handler is closed"
                    if closed
                    else f"{self.max_queued_bytes / 2**20:.0f} MB of frames wait for the pipeline",
                )
            return
        metadata: dict[str, Any] = {"Axes": group_axes(event, pattern)}
        pixel_size_um = meta.get("pixel_size_um")
        if pixel_size_um:
            metadata["PixelSize_um"] = pixel_size_um
        self._queue.put((np.array(img, copy=True), metadata, nbytes))

    # ---- the relay thread ----
    def _run_relay(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            frame, metadata, nbytes = item
            try:
                self.processor(frame, metadata)  # never raises; may wait under policy "all"
            finally:
                with self._lock:
                    self._queued_bytes -= nbytes
                    self._queued_frames -= 1
                    self._frames_relayed += 1

    # ---- figures and end ----
    @property
    def frames_ready(self) -> int:
        """``frameReady`` calls so far (every frame pymmcore-plus delivered)."""
        with self._lock:
            return self._frames_ready

    def wait_for_frames(self, count: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s until ``count`` frames were delivered; True when reached."""
        with self._frame_seen:
            return self._frame_seen.wait_for(lambda: self._frames_ready >= count, timeout)

    def idle_s(self) -> float:
        """Seconds since the last frame (or since :meth:`restart_idle`)."""
        with self._lock:
            return time.monotonic() - self.last_frame_at

    def restart_idle(self) -> None:
        """Count the idle time from now (the start of an acquisition)."""
        with self._lock:
            self.last_frame_at = time.monotonic()

    @property
    def stats(self) -> FrameHandlerStats:
        """The handler's counts so far (see `FrameHandlerStats`)."""
        with self._lock:
            closed = self._closed
            counts = (
                self._frames_ready,
                self._frames_relayed,
                self._queued_frames,
                self._frames_not_relayed,
                self._frames_without_pattern,
                self._handler_failures,
                self._max_queued_frames,
            )
        return FrameHandlerStats(
            *counts,
            frame_ready_ms=Percentiles.of(self._frame_ready_ms.percentiles(exact=closed)),
        )

    @property
    def summary(self) -> dict[str, Any]:
        """The processor's running summary plus the handler's counts, as a dict."""
        return self.processor.stats.with_sections(self.stats).to_dict()

    def finish(
        self, timeout: float | None = None, sections: Iterable[StatsSection] = ()
    ) -> RunSummary:
        """End: relay the frames still queued, then finish the processor with the handler's
        counts and ``sections`` in the summary (written as JSON); return it typed.

        Frames delivered after this are counted in ``frames_not_relayed``. Idempotent.
        """
        with self._lock:
            first = not self._closed
            self._closed = True
        if first:
            self._queue.put(_STOP)
        self._relay.join(timeout)
        if self._relay.is_alive():
            log.warning("the frame relay is still busy after %s s; closing the pipeline", timeout)
        return self.processor.finish(timeout, (self.stats, *sections))

    def close(self, timeout: float | None = None) -> dict[str, Any]:
        """:meth:`finish`, returning the summary as the dict of ``<name>_summary.json``."""
        return self.finish(timeout).to_dict()

    def __enter__(self) -> SIMFrameHandler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
