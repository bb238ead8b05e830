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

from mlsim_live.errors import MLSimError, one_line
from mlsim_live.latency import LatencyWindow
from mlsim_live.live.grouper import FrameGrouper, IncompleteGroup
from mlsim_live.live.results import GroupResult
from mlsim_live.live.sinks import Sink
from mlsim_live.live.stats import IncompleteGroupInfo, RunStats, SinkFailure
from mlsim_live.live.worker import ReconstructionWorker, reconstructor_name
from mlsim_live.recon.base import Reconstructor

log = logging.getLogger(__name__)

# Incomplete groups listed by key in the summary (all are counted).
_INCOMPLETE_LISTED = 100

INVARIANTS = (
    "frames_received == 9 * groups_acquired + frames_incomplete + (frames_rejected - "
    "frames_after_close) + duplicates",
    "groups_acquired == groups_reconstructed + groups_dropped + errors + groups_refused",
)
"""What every closed pipeline's summary satisfies: no frame and no group is ever unaccounted.

``frames_received`` counts every frame pushed before ``close``; ``frames_incomplete`` the frames
of groups that never completed; ``frames_rejected`` frames refused (bad axes or shape, or pushed
after ``close``: those are also ``frames_after_close``); ``duplicates`` repeated
frames; ``frames_pending`` the frames of groups still being filled (0 once closed).
``groups_acquired`` counts every complete group; each ends reconstructed, dropped (the worker
was behind, or closed in time), an error (bad raw data, a failed or non-finite reconstruction,
by reason in ``errors_by_reason``) or refused (it completed while the pipeline was closing).
While the pipeline runs, ``groups_pending`` (frames not yet complete), ``groups_waiting`` and
``groups_in_flight`` make up the difference.
"""


def invariant_violations(summary: Mapping[str, Any] | RunStats) -> list[str]:
    """The `INVARIANTS` a closed pipeline's stats (or summary dict) break (empty: none)."""
    s = summary.to_dict() if isinstance(summary, RunStats) else summary
    broken = []
    frames = (
        9 * s["groups_acquired"]
        + s["frames_incomplete"]
        + s["frames_rejected"]
        - s["frames_after_close"]
        + s["duplicates"]
        + s["frames_pending"]
    )
    if s["frames_received"] != frames:
        broken.append(f"{INVARIANTS[0]}: {s['frames_received']} != {frames}")
    groups = (
        s["groups_reconstructed"]
        + s["groups_dropped"]
        + s["errors"]
        + s["groups_refused"]
        + s["groups_waiting"]
        + s["groups_in_flight"]
    )
    if s["groups_acquired"] != groups:
        broken.append(f"{INVARIANTS[1]}: {s['groups_acquired']} != {groups}")
    return broken


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
    stages : {1, 2} or None
        2: one thread prepares a group (checks, normalization, the Wiener prior) while another
        infers the previous one (a reconstructor with ``prepare``/``finish``); 1: one thread.
        None (default): 2 when the reconstructor has the stages (see `ReconstructionWorker`).
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
        stages: int | None = None,
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
            stages=stages,
        )
        self._pixel_size_known = pixel_size_um is not None
        self._frames_received = 0
        self._frames_rejected = 0
        self._frames_after_close = 0
        self._groups_acquired = 0
        self._groups_refused = 0
        self._sink_errors = 0
        self._incomplete: list[IncompleteGroup] = []
        self._first_frame_at: float | None = None
        self._last_result_at: float | None = None
        self._closed = False
        self._close_done = threading.Event()
        # Pushes between grouping and submission: close() waits for them, so a group completed
        # just before close() is reconstructed (or counted), never lost.
        self._pushing = 0
        self._pushing_done = threading.Condition(self._lock)
        # Held while results go to the sinks; closing the sinks waits for it (up to the close
        # timeout), and no result reaches a sink after its close.
        self._dispatch_lock = threading.Lock()
        self._sinks_closed = False
        self._sinks_close_done = False
        # A sink that raised is fed no more results: its first error and the groups it lost.
        self._sink_failures: dict[int, dict[str, Any]] = {}
        self._failures_lock = threading.Lock()
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
                self._close_sinks_locked()
                return
            self._last_result_at = time.time()
            for sink in self._sinks:
                failure = self._sink_failures.get(id(sink))
                if failure is not None:
                    with self._failures_lock:
                        failure["groups_lost"] += 1
                    continue
                try:
                    sink.on_result(result)
                except Exception as exc:
                    self._sink_failed(sink, result, exc)
            if self._sinks_closed:  # close() timed out while a sink was busy: close them now
                self._close_sinks_locked()

    def _sink_failed(self, sink: Sink, result: GroupResult, exc: Exception) -> None:
        """Stop feeding a sink after its first failure; say why in one line."""
        self._sink_errors += 1
        cause = (
            exc.strerror.lower()
            if isinstance(exc, OSError) and exc.strerror
            else f"{type(exc).__name__}: {one_line(exc)}"
        )
        name = sink_name(sink)
        with self._failures_lock:
            self._sink_failures[id(sink)] = {
                "sink": name,
                "error": cause,
                "group": result.key,
                "groups_lost": 1,
            }
        log.error(
            "%s failed on group %s: %s; it gets no more results (the others go on)",
            name,
            result.key,
            cause,
        )
        log.debug("sink failure", exc_info=exc)

    def _close_sinks_locked(self) -> None:
        """Close every sink once; the caller holds the dispatch lock."""
        if self._sinks_close_done:
            return
        self._sinks_close_done = True
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:
                self._sink_errors += 1
                log.error("closing %s failed: %s", sink_name(sink), one_line(exc))
                log.debug("sink close failure", exc_info=exc)

    # ---- plain properties (no summary is assembled for them) ----
    @property
    def policy(self) -> str:
        """The worker's queue policy, ``latest`` or ``all``."""
        return self._worker.policy

    @property
    def stages(self) -> int:
        """1, or 2 when the worker prepares a group while it infers the previous one."""
        return self._worker.stages

    @property
    def waiting(self) -> int:
        """Complete groups waiting for the worker."""
        return self._worker.waiting

    @property
    def model(self) -> str:
        """The reconstructor's name (e.g. ``wiener`` or ``rcan:<model file>``)."""
        return reconstructor_name(self.reconstructor)

    @property
    def provider(self) -> str:
        """Where the reconstructor runs (e.g. ``CPUExecutionProvider``)."""
        return str(getattr(self.reconstructor, "provider", "unknown"))

    @property
    def latency(self) -> LatencyWindow:
        """End-to-end latencies (last raw frame in -> reconstruction out) of this run, in ms."""
        return self._worker.latencies_ms

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
                self._frames_after_close += 1
                self._frames_rejected += 1
                log.warning(
                    "frame %s pushed after the pipeline was closed; ignored", str(dict(axes))
                )
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
            if group is None:
                return
            self._groups_acquired += 1
            self._pushing += 1
        try:
            self._worker.submit(group)
        except MLSimError as exc:  # the worker closed meanwhile (close timed out)
            with self._lock:
                self._groups_refused += 1
            log.warning("group %s not reconstructed: %s", group.key, exc)
        finally:
            with self._lock:
                self._pushing -= 1
                self._pushing_done.notify_all()

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

        Idempotent and safe from several threads: a second call waits (up to ``timeout``) for
        the first to finish. Returns the final summary. When the worker does not finish within
        ``timeout`` seconds, the groups still waiting and the one in flight are counted as
        dropped, and a reconstruction that finishes later reaches no sink; a sink still busy at
        the deadline is closed when it returns.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            first = not self._closed
            self._closed = True
            if first:
                self._incomplete = self._grouper.finish()
                # a push between grouping and submission finishes first
                self._pushing_done.wait_for(lambda: self._pushing == 0, _left(deadline))
        if not first:
            self._close_done.wait(_left(deadline))
            return self.summary
        try:
            self._close(deadline)
        finally:
            self._close_done.set()
        stats = self.stats
        log.info(
            "%d groups acquired, %d reconstructed, %d dropped, %d errors; latency p50 %s ms",
            stats.groups_acquired,
            stats.groups_reconstructed,
            stats.groups_dropped,
            stats.errors,
            stats.latency_ms.p50,
        )
        return stats.to_dict()

    def _close(self, deadline: float | None) -> None:
        if self._incomplete:
            log.warning(
                "%d incomplete group(s) at the end, e.g. %s missing %s",
                len(self._incomplete),
                self._incomplete[0].key,
                self._incomplete[0].missing,
            )
        self._worker.close(_left(deadline))
        self._sinks_closed = True  # set first: a dispatch that holds the lock closes them
        left = _left(deadline)
        if self._dispatch_lock.acquire(timeout=-1 if left is None else left):
            try:
                self._close_sinks_locked()
            finally:
                self._dispatch_lock.release()
        else:
            log.warning(
                "a sink is still busy after the close timeout; the sinks are closed when it returns"
            )

    @property
    def stats(self) -> RunStats:
        """A frozen snapshot of the counters and latency figures, from any thread at any time.

        Exact once the pipeline is closed; while it runs, the latency percentiles of a long run
        may be up to half a second old (a status bar polls this for free).
        """
        worker = self._worker.stats(exact=self._closed)
        with self._lock:
            frames_received = self._frames_received
            frames_rejected = self._frames_rejected
            frames_after_close = self._frames_after_close
            groups_acquired = self._groups_acquired
            groups_refused = self._groups_refused
            duplicates = self._grouper.duplicates
            incomplete = self._grouper.incomplete
            pending = self._grouper.n_pending
            frames_pending = self._grouper.frames_pending
            first_at = self._first_frame_at
            pushing = self._pushing
        with self._failures_lock:
            sink_failures = tuple(SinkFailure(**f) for f in self._sink_failures.values())
        last_at = self._last_result_at
        rate = None
        if first_at is not None and last_at is not None and last_at > first_at:
            rate = round(worker.groups_reconstructed / (last_at - first_at), 3)
        return RunStats(
            groups_acquired=groups_acquired,
            groups_reconstructed=worker.groups_reconstructed,
            groups_dropped=worker.groups_dropped,
            errors=worker.errors,
            errors_by_reason=worker.errors_by_reason,
            groups_refused=groups_refused,
            latency_ms=worker.latency_ms,
            reconstruct_ms=worker.reconstruct_ms,
            provider=self.provider,
            model=self.model,
            incomplete_groups=len(incomplete),
            frames_incomplete=sum(9 - len(g.missing) for g in incomplete),
            incomplete=tuple(
                IncompleteGroupInfo(g.key, g.missing) for g in incomplete[:_INCOMPLETE_LISTED]
            ),
            duplicates=duplicates,
            ood_groups=worker.ood_groups,
            ood_checks=worker.ood_checks,
            ood_check=worker.ood_check,
            frames_received=frames_received,
            frames_rejected=frames_rejected,
            frames_after_close=frames_after_close,
            frames_pending=frames_pending,
            groups_pending=pending,
            groups_waiting=worker.groups_waiting,
            groups_in_flight=max(0, worker.groups_submitted - worker.groups_done) + pushing,
            backpressure_waits=worker.backpressure_waits,
            sink_errors=self._sink_errors,
            sink_failures=sink_failures,
            delivery_errors=worker.delivery_errors,
            policy=self._worker.policy,
            simulated=self.simulated,
            pixel_size_um=self._worker.pixel_size_um,
            sr_groups_per_s=rate,
            fallback_groups=worker.fallback_groups,
            low_signal_groups=worker.low_signal_groups,
            stages=worker.stages,
        )

    @property
    def summary(self) -> dict[str, Any]:
        """`stats` as the dict of the summary JSON (see `mlsim_live.live.stats.RunStats`)."""
        return self.stats.to_dict()

    def wait_finished(self, timeout: float | None = None) -> bool:
        """After `close`: wait for the reconstruction thread to end; True when it has.

        A reconstruction that outlived ``close``'s timeout ends the thread when it returns (its
        result reaches no sink).
        """
        return self._worker.join(timeout)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _left(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (None: no deadline)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def sink_name(sink: object) -> str:
    """A sink's class name, with the file it writes when it has a ``path``."""
    path = getattr(sink, "path", None)
    return f"{type(sink).__name__} ({path})" if path is not None else type(sink).__name__


def _check_sink(sink: object) -> None:
    if not isinstance(sink, Sink):
        raise MLSimError(
            f"{type(sink).__name__} is not a sink; expected an object with on_result(result) "
            "and close() methods"
        )
