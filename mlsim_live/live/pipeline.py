"""The one live data path: raw frames -> grouper -> reconstruction worker -> sinks.

Live acquisition (``SIMProcessor``), the demo and offline replay all push frames through a
:class:`Pipeline`; only the frame source differs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.live.grouper import FrameGrouper, IncompleteGroup
from mlsim_live.live.results import GroupResult
from mlsim_live.live.sinks import Sink
from mlsim_live.live.worker import ReconstructionWorker, reconstructor_name
from mlsim_live.recon.base import Reconstructor

log = logging.getLogger(__name__)

# Incomplete groups listed by key in the summary (all are counted).
_INCOMPLETE_LISTED = 100


class Pipeline:
    """Groups pushed frames and reconstructs complete groups on a worker thread.

    Parameters
    ----------
    reconstructor : Reconstructor
        Reconstructs one (9, H, W) group.
    sinks : iterable of Sink
        Receive every result, on the worker thread, in order.
    policy : {"latest", "all"}
        ``latest`` (live default): when reconstruction falls behind, the oldest waiting groups
        are dropped (counted) and the newest is always reconstructed. ``all``: every group is
        reconstructed; ``push`` blocks only when ``max_waiting_bytes`` of groups wait.
    pixel_size_um : float, optional
        Raw camera pixel size in the sample plane. When None, it is taken from the first
        frame's ``PixelSize_um`` metadata (Micro-Manager's calibration), if positive.
    simulated : bool
        The frames come from simulated optics (demo); marked in every result and the summary.
    angle_axis, phase_axis : str
        Axis names of the pattern angle and phase.
    max_waiting : int
        Queue length under ``latest``.
    max_waiting_bytes : int
        Memory bound of waiting groups under ``all``.
    max_pending : int
        Groups being filled at once before the oldest is abandoned as incomplete.
    """

    def __init__(
        self,
        reconstructor: Reconstructor,
        sinks: Iterable[Sink] = (),
        policy: str = "latest",
        pixel_size_um: float | None = None,
        simulated: bool = False,
        angle_axis: str = "angle",
        phase_axis: str = "phase",
        max_waiting: int = 1,
        max_waiting_bytes: int = 1 << 30,
        max_pending: int = 64,
    ) -> None:
        sinks = tuple(sinks)
        for sink in sinks:
            _check_sink(sink)
        self.reconstructor = reconstructor
        self.simulated = simulated
        self._sinks: tuple[Sink, ...] = sinks
        self._lock = threading.Lock()
        self._grouper = FrameGrouper(angle_axis, phase_axis, max_pending=max_pending)
        self._worker = ReconstructionWorker(
            reconstructor,
            self._dispatch,
            policy=policy,  # type: ignore[arg-type]
            max_waiting=max_waiting,
            max_waiting_bytes=max_waiting_bytes,
            pixel_size_um=pixel_size_um,
            simulated=simulated,
        )
        self._pixel_size_known = pixel_size_um is not None
        self._frames_received = 0
        self._frames_rejected = 0
        self._sink_errors = 0
        self._incomplete: list[IncompleteGroup] = []
        self._first_frame_at: float | None = None
        self._last_result_at: float | None = None
        self._closed = False
        # Held while results go to the sinks; closing the sinks waits for it, and no result
        # reaches a sink after its close.
        self._dispatch_lock = threading.Lock()
        self._sinks_closed = False
        if simulated:
            log.info("SIMULATED data: frames come from simulated SIM optics, not a microscope")

    # ---- sinks ----
    @property
    def sinks(self) -> tuple[Sink, ...]:
        """The sinks, in the order they receive results."""
        return self._sinks

    def add_sink(self, sink: Sink) -> None:
        """Attach another sink (e.g. the viewer); it receives the results from now on."""
        _check_sink(sink)
        with self._lock:
            self._sinks = (*self._sinks, sink)

    def _dispatch(self, result: GroupResult) -> None:
        with self._dispatch_lock:
            if self._sinks_closed:  # a result after close (the worker timed out): never written
                log.warning(
                    "group %s reconstructed after the sinks were closed; discarded", result.key
                )
                return
            self._last_result_at = time.time()
            for sink in self._sinks:
                try:
                    sink.on_result(result)
                except Exception:
                    self._sink_errors += 1
                    log.exception("sink %s failed on group %s", type(sink).__name__, result.key)

    # ---- frames in ----
    @property
    def pixel_size_um(self) -> float | None:
        """Raw camera pixel size, when known."""
        return self._worker.pixel_size_um

    def push(
        self,
        frame: np.ndarray,
        axes: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Add one raw frame and return at once.

        Never raises for a bad frame (it is logged and counted in ``frames_rejected``), so an
        acquisition is never aborted by the pipeline. Under ``policy="all"`` it may block while
        the waiting groups exceed the memory bound.
        """
        with self._lock:
            if self._closed:
                self._frames_rejected += 1
                log.warning("frame %s pushed after the pipeline was closed; ignored", dict(axes))
                return
            self._frames_received += 1
            if self._first_frame_at is None:
                self._first_frame_at = time.time()
            if not self._pixel_size_known:
                self._take_pixel_size(metadata)
            try:
                group = self._grouper.add(frame, axes, metadata)
            except MLSimError as exc:
                self._frames_rejected += 1
                log.warning("frame rejected: %s", exc)
                return
        if group is not None:
            try:
                self._worker.submit(group)
            except MLSimError as exc:  # closed between grouping and submission
                log.warning("group %s not reconstructed: %s", group.key, exc)

    def _take_pixel_size(self, metadata: Mapping[str, Any] | None) -> None:
        self._pixel_size_known = True
        try:
            value = float((metadata or {}).get("PixelSize_um", 0.0))
        except (TypeError, ValueError):
            return
        if value > 0:
            self._worker.pixel_size_um = value

    # ---- end ----
    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    def close(self, timeout: float | None = None) -> dict[str, Any]:
        """End of acquisition: report incomplete groups, reconstruct what waits, close sinks.

        Idempotent. Returns the final summary. When the worker does not finish within
        ``timeout`` seconds, the groups still waiting and the one in flight are counted as
        dropped, and a reconstruction that finishes later reaches no sink.
        """
        with self._lock:
            if self._closed:
                return self.summary
            self._closed = True
            self._incomplete = self._grouper.finish()
        if self._incomplete:
            log.warning(
                "%d incomplete group(s) at the end, e.g. %s missing %s",
                len(self._incomplete),
                self._incomplete[0].key,
                self._incomplete[0].missing,
            )
        self._worker.close(timeout)
        with self._dispatch_lock:
            self._sinks_closed = True
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                self._sink_errors += 1
                log.exception("closing sink %s failed", type(sink).__name__)
        summary = self.summary
        log.info(
            "%d groups acquired, %d reconstructed, %d dropped, %d errors; latency p50 %s ms",
            summary["groups_acquired"],
            summary["groups_reconstructed"],
            summary["groups_dropped"],
            summary["errors"],
            summary["latency_ms"]["p50"],
        )
        return summary

    @property
    def summary(self) -> dict[str, Any]:
        """Counters and latency figures, safe to read from any thread at any time.

        The keys of interface.md: ``groups_acquired``, ``groups_reconstructed``,
        ``groups_dropped``, ``errors`` (failed reconstructions), ``latency_ms`` (``p50``,
        ``p95``: last raw frame of a group in -> its reconstruction out), ``provider``,
        ``model``; and ``incomplete_groups`` (with ``incomplete``: key and missing frames of the
        first 100), ``duplicates``, ``ood_groups`` (of the ``ood_checks`` groups checked, those
        outside the model's trained ranges), ``reconstruct_ms`` (inside the
        reconstructor), ``frames_received``, ``frames_rejected``, ``groups_pending`` (being
        filled), ``groups_waiting`` (for the worker), ``backpressure_waits``, ``sink_errors``,
        ``policy``, ``simulated``, ``pixel_size_um``, ``sr_groups_per_s``.
        """
        stats = self._worker.stats()
        with self._lock:
            frames_received = self._frames_received
            frames_rejected = self._frames_rejected
            duplicates = self._grouper.duplicates
            incomplete = self._grouper.incomplete
            pending = self._grouper.n_pending
            first_at = self._first_frame_at
        last_at = self._last_result_at
        reconstructed = int(stats["groups_reconstructed"])  # type: ignore[call-overload]
        rate = None
        if first_at is not None and last_at is not None and last_at > first_at:
            rate = round(reconstructed / (last_at - first_at), 3)
        return {
            "groups_acquired": stats["groups_submitted"],
            "groups_reconstructed": reconstructed,
            "groups_dropped": stats["groups_dropped"],
            "errors": stats["errors"],
            "latency_ms": stats["latency_ms"],
            "reconstruct_ms": stats["reconstruct_ms"],
            "provider": str(getattr(self.reconstructor, "provider", "unknown")),
            "model": reconstructor_name(self.reconstructor),
            "incomplete_groups": len(incomplete),
            "incomplete": [
                {"key": g.key, "missing": [list(m) for m in g.missing]}
                for g in incomplete[:_INCOMPLETE_LISTED]
            ],
            "duplicates": duplicates,
            "ood_groups": stats["ood_groups"],
            "ood_checks": stats["ood_checks"],
            "frames_received": frames_received,
            "frames_rejected": frames_rejected,
            "groups_pending": pending,
            "groups_waiting": stats["groups_waiting"],
            "backpressure_waits": stats["backpressure_waits"],
            "sink_errors": self._sink_errors,
            "policy": self._worker.policy,
            "simulated": self.simulated,
            "pixel_size_um": self._worker.pixel_size_um,
            "sr_groups_per_s": rate,
        }

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_sink(sink: object) -> None:
    if not isinstance(sink, Sink):
        raise MLSimError(
            f"{type(sink).__name__} is not a sink; expected an object with on_result(result) "
            "and close() methods"
        )
