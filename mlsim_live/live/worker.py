"""The reconstruction worker: one thread that reconstructs complete groups from a bounded queue."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np

from mlsim_live.constants import POLICIES
from mlsim_live.errors import MLSimError, one_line
from mlsim_live.latency import LatencyWindow
from mlsim_live.latency import percentiles_ms as percentiles_ms
from mlsim_live.live.grouper import CompletedGroup
from mlsim_live.live.results import GroupResult
from mlsim_live.live.stats import Percentiles, WorkerStats
from mlsim_live.recon.base import Capabilities, Reconstructor, SupportsStages
from mlsim_live.validation import group_problem, output_problem

if TYPE_CHECKING:
    from mlsim_live.live.stages import TwoStages

log = logging.getLogger(__name__)

Policy = Literal["latest", "all"]
OODCheck = Callable[[np.ndarray], bool | list[str]]
# Niceness of the out-of-distribution thread (Linux: per thread), so it yields to reconstruction.
_OOD_NICENESS = 10


def reconstructor_name(reconstructor: object) -> str:
    """The reconstructor's ``name``, or its class name."""
    return str(getattr(reconstructor, "name", type(reconstructor).__name__))


#: ``ood_check`` of the summary when the model has no card with training ranges.
OOD_UNAVAILABLE = "unavailable: the model has no card with its training ranges"


class OODMonitor:
    """Runs an out-of-distribution check on its own low-priority thread, on the newest group only.

    The check estimates the physics of a group (0.2-1 s), far longer than a reconstruction, so
    it must not run on the reconstruction thread. Groups are offered through a one-slot mailbox:
    an offer replaces a group not yet checked, so the thread always checks the newest group and
    never builds a backlog. Results carry the latest verdict.

    Parameters
    ----------
    check : callable
        ``check(frames)`` returns a list of reasons (empty: inside the trained ranges) or a bool
        (True: outside).
    """

    def __init__(self, check: OODCheck) -> None:
        self._check = check
        self._cond = threading.Condition()
        self._slot: CompletedGroup | None = None
        self._closing = False
        self.checked = 0
        self.outside = 0
        self.failures = 0
        self._verdict: tuple[bool, list[str], dict | None] = (False, [], None)
        self._thread = threading.Thread(target=self._run, name="mlsim-ood-check", daemon=True)
        self._thread.start()

    def offer(self, group: CompletedGroup) -> None:
        """Hand over a group to check; replaces the one waiting, if any. Never blocks."""
        with self._cond:
            if self._closing:
                return
            self._slot = group
            self._cond.notify_all()

    @property
    def verdict(self) -> tuple[bool, list[str], dict | None]:
        """``(outside, reasons, key of the group checked)`` of the latest check."""
        with self._cond:
            ood, reasons, key = self._verdict
            return ood, list(reasons), key

    def counts(self) -> tuple[int, int]:
        """``(groups checked, groups found outside)``."""
        with self._cond:
            return self.checked, self.outside

    def _run(self) -> None:
        _lower_thread_priority()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._slot is not None or self._closing)
                group, self._slot = self._slot, None
            if group is None:
                return
            try:
                verdict = self._check(group.frames)
            except Exception as exc:
                with self._cond:
                    self.failures += 1
                    first = self.failures == 1
                log.warning(
                    "out-of-distribution check failed on group %s: %s",
                    group.key,
                    one_line(exc),
                    exc_info=first,
                )
                continue
            if isinstance(verdict, list | tuple):
                reasons = [str(r) for r in verdict]
                ood = bool(reasons)
            else:
                reasons, ood = [], bool(verdict)
            with self._cond:
                self.checked += 1
                self.outside += int(ood)
                self._verdict = (ood, reasons, dict(group.key))

    def close(self, timeout: float | None = None) -> bool:
        """Check the group still waiting, then stop; True when the thread ended in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _stages_for(reconstructor: object, caps: Capabilities, stages: int | None) -> int:
    """The worker's stages: ``stages`` checked against the reconstructor, or the default."""
    if stages is None:
        return 2 if caps.stages else 1
    if stages not in (1, 2):
        raise MLSimError(f"stages {stages!r}; expected 1 or 2")
    if stages == 2 and not caps.stages:
        raise MLSimError(
            f"{reconstructor_name(reconstructor)} has no prepare/finish stages; expected "
            "stages=1, or a reconstructor with them (rcan, wiener-rcan)"
        )
    return stages


def _lower_thread_priority() -> None:
    """Raise the calling thread's niceness where the OS allows it per thread (Linux)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _OOD_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
        pass


class ReconstructionWorker:
    """Reconstructs groups on its own thread and hands each result to ``on_result``.

    Every submitted group ends up counted once: reconstructed, dropped, or an error, so
    ``submitted == reconstructed + dropped + errors`` once the worker is closed. A group that
    breaks `mlsim_live.validation`'s rule (NaN/Inf, a constant frame) is refused before
    reconstruction, and a reconstruction with NaN/Inf pixels is refused after: both are errors,
    counted by reason in ``errors_by_reason``. A failing ``on_result`` leaves the group counted
    as reconstructed and is counted in ``delivery_errors``. Each group taken from the queue is
    in flight under its own ticket until it is counted, so several groups can be in flight.

    With a reconstructor that `mlsim_live.recon.base.SupportsStages` (``prepare``/``finish``),
    the worker runs two stages by default (`mlsim_live.live.stages.TwoStages`): one thread
    prepares the next group (checks, normalization, the Wiener prior) while another runs the
    inference of the previous one, with at most one prepared group handed over between them.
    A prepared group is in flight: ``latest`` drops only groups still waiting in the queue.

    Parameters
    ----------
    reconstructor : Reconstructor
        Turns a (9, H, W) group into the SR image.
    on_result : callable
        Called on the worker thread with each :class:`GroupResult`.
    policy : {"latest", "all"}
        ``latest``: at most ``max_waiting`` groups wait; when a new group arrives and the queue is
        full, the oldest waiting group is dropped and counted, so the newest is always
        reconstructed and latency stays bounded. ``all``: every group is reconstructed;
        ``submit`` blocks (backpressure on the acquisition, logged) only while the waiting
        groups hold more than ``max_waiting_bytes``.
    max_waiting : int
        Queue length under ``latest``.
    max_waiting_bytes : int
        Memory bound of the waiting groups under ``all``.
    pixel_size_um, simulated : float or None, bool
        Copied into every result.
    ood_check : callable, optional
        ``ood_check(frames)`` returns a list of reasons (empty: inside the trained ranges) or a
        bool (True: outside). By default the reconstructor's own ``check_ood`` when it
        implements `mlsim_live.recon.base.SupportsOOD` with training ranges. It runs on its own
        low-priority thread (:class:`OODMonitor`) on the newest reconstructed group whenever
        that thread is free, never on the reconstruction thread; each result carries the latest
        verdict made so far (on an earlier group), and ``ood_groups`` counts the checked groups
        found outside (of ``ood_checks`` checked).
    stages : {1, 2} or None
        2: prepare and infer on two threads (needs `SupportsStages`); 1: one thread calls
        ``reconstruct``. None (default): 2 when the reconstructor has the stages, else 1.
    """

    def __init__(
        self,
        reconstructor: Reconstructor,
        on_result: Callable[[GroupResult], None],
        policy: Policy = "latest",
        max_waiting: int = 1,
        max_waiting_bytes: int = 1 << 30,
        pixel_size_um: float | None = None,
        simulated: bool = False,
        ood_check: OODCheck | None = None,
        stages: int | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise MLSimError(f"policy {policy!r} is unknown; expected one of {', '.join(POLICIES)}")
        if max_waiting < 1 or max_waiting_bytes < 1:
            raise MLSimError("max_waiting and max_waiting_bytes must be positive")
        self.reconstructor = reconstructor
        self.policy: Policy = policy
        self.max_waiting = max_waiting
        self.max_waiting_bytes = max_waiting_bytes
        self.pixel_size_um = pixel_size_um
        self.simulated = simulated
        self._on_result = on_result
        self.capabilities = Capabilities.of(reconstructor)
        caps = self.capabilities
        self.stages = _stages_for(reconstructor, caps, stages)
        check = ood_check or (caps.ood.check_ood if caps.ood is not None else None)
        self._ood = OODMonitor(check) if check is not None else None
        self.ood_available = ood_check is not None or not caps.ood_unavailable
        if not self.ood_available:
            log.warning(
                "%s has no model card with training ranges: the out-of-distribution check is "
                "unavailable for this run",
                reconstructor_name(reconstructor),
            )
        self._cond = threading.Condition()
        self._queue: deque[CompletedGroup] = deque()
        self._waiting_bytes = 0
        self._closing = False
        self._in_flight: set[int] = set()  # tickets of the groups taken and not yet counted
        self._next_ticket = 0
        self._abandoned = False  # close timed out: results that come later are discarded
        self.submitted = 0
        self.reconstructed = 0
        self.dropped = 0
        self.errors = 0
        self.errors_by_reason: dict[str, int] = {}
        self.delivery_errors = 0
        self.backpressure_waits = 0
        self.latencies_ms = LatencyWindow()
        self.reconstruct_ms = LatencyWindow()
        self._two_stages: TwoStages | None = None
        self._thread: threading.Thread | None = None
        if self.stages == 2:
            from mlsim_live.live.stages import TwoStages

            assert isinstance(reconstructor, SupportsStages)
            self._two_stages = TwoStages(self, reconstructor)
            self._two_stages.start()
        else:
            self._thread = threading.Thread(
                target=self._run, name="mlsim-recon-worker", daemon=True
            )
            self._thread.start()

    # ---- producer side (acquisition thread) ----
    def submit(self, group: CompletedGroup) -> None:
        """Queue a complete group. Never blocks under ``latest``.

        Raises MLSimError when the worker was closed before the call. A group whose submission
        waited for room under ``all`` while the worker was closed is counted as dropped.
        """
        nbytes = group.frames.nbytes
        with self._cond:
            if self._closing:
                raise MLSimError("the reconstruction worker is closed; no more groups accepted")
            self.submitted += 1
            if self.policy == "latest":
                while len(self._queue) >= self.max_waiting:
                    old = self._queue.popleft()
                    self._waiting_bytes -= old.frames.nbytes
                    self.dropped += 1
                    log.debug("dropped group %s: the worker is behind", old.key)
            elif self._queue and self._waiting_bytes + nbytes > self.max_waiting_bytes:
                self.backpressure_waits += 1
                log.warning(
                    "reconstruction is behind: %d groups (%.0f MB) waiting; the acquisition "
                    "waits until the queue drains below %.0f MB",
                    len(self._queue),
                    self._waiting_bytes / 1e6,
                    self.max_waiting_bytes / 1e6,
                )
                self._cond.wait_for(
                    lambda: (
                        self._closing
                        or not self._queue
                        or self._waiting_bytes + nbytes <= self.max_waiting_bytes
                    )
                )
                if self._closing:  # closed while waiting: it will never be reconstructed
                    self.dropped += 1
                    log.warning(
                        "group %s dropped: the worker was closed while it waited", group.key
                    )
                    return
            self._queue.append(group)
            self._waiting_bytes += nbytes
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Groups waiting for the worker."""
        with self._cond:
            return len(self._queue)

    def stats(self, exact: bool = True) -> WorkerStats:
        """A consistent snapshot of the counters and latency percentiles.

        The counters are copied under the lock; the percentiles come from the latency windows
        (their own locks, recomputed only after a change), so ``submit`` is never held up by a
        status refresh. ``exact=False`` accepts percentiles up to half a second old on a long
        run (see `mlsim_live.latency.LatencyWindow`).
        """
        with self._cond:
            submitted, reconstructed, dropped = self.submitted, self.reconstructed, self.dropped
            waiting, errors, by_reason = len(self._queue), self.errors, dict(self.errors_by_reason)
            delivery_errors, backpressure_waits = self.delivery_errors, self.backpressure_waits
        checked, outside = self._ood.counts() if self._ood is not None else (0, 0)
        if not self.ood_available:
            ood_check = OOD_UNAVAILABLE
        else:
            ood_check = "on" if self._ood is not None else "none"
        fallback = low_signal = None
        if self.capabilities.fallback:
            fallback = int(self.reconstructor.fallback_groups)  # type: ignore[attr-defined]
            low_signal = getattr(self.reconstructor, "low_signal_groups", None)
        return WorkerStats(
            groups_submitted=submitted,
            groups_reconstructed=reconstructed,
            groups_dropped=dropped,
            groups_waiting=waiting,
            errors=errors,
            errors_by_reason=by_reason,
            delivery_errors=delivery_errors,
            backpressure_waits=backpressure_waits,
            ood_groups=outside if self.ood_available else None,
            ood_checks=checked,
            ood_check=ood_check,
            latency_ms=Percentiles.of(self.latencies_ms.percentiles(exact)),
            reconstruct_ms=Percentiles.of(self.reconstruct_ms.percentiles(exact)),
            fallback_groups=fallback,
            low_signal_groups=None if low_signal is None else int(low_signal),
            stages=self.stages,
        )

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread to end (after `close`); True when it has ended.

        A reconstruction that outlived ``close``'s timeout ends the thread when it returns.
        """
        if self._two_stages is not None:
            return self._two_stages.join(timeout)
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- worker thread(s) ----
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue or self._abandoned:
                    return
                ticket, group = self._pop_locked()
            try:
                self._process(ticket, group)
            except Exception as exc:  # keep the worker alive whatever happens
                self._count_error(ticket, group, type(exc).__name__, one_line(exc), exc)

    def _pop_locked(self) -> tuple[int, CompletedGroup]:
        """Take the oldest waiting group in flight under a new ticket; the caller holds the lock."""
        group = self._queue.popleft()
        self._waiting_bytes -= group.frames.nbytes
        ticket = self._next_ticket
        self._next_ticket += 1
        self._in_flight.add(ticket)
        self._cond.notify_all()
        return ticket, group

    def _holds(self, ticket: int) -> bool:
        """The group of ``ticket`` is still in flight (not counted, not dropped by close)."""
        return ticket in self._in_flight and not self._abandoned

    def _count_error(
        self,
        ticket: int,
        group: CompletedGroup,
        reason: str,
        message: str,
        exc: BaseException | None = None,
    ) -> None:
        """Count a group that was not reconstructed (unless close() counted it as dropped)."""
        with self._cond:
            if ticket not in self._in_flight:  # counted already, or counted as dropped by close()
                return
            self._in_flight.discard(ticket)
            self.errors += 1
            self.errors_by_reason[reason] = self.errors_by_reason.get(reason, 0) + 1
            first = self.errors_by_reason[reason] == 1
        log.log(
            logging.ERROR if first else logging.WARNING,
            "group %s not reconstructed: %s",
            group.key,
            message,
            exc_info=first and exc is not None and not isinstance(exc, MLSimError),
        )

    def _process(self, ticket: int, group: CompletedGroup) -> None:
        problem = group_problem(group.frames)
        if problem is not None:  # the one rule for every source
            self._count_error(ticket, group, "bad raw data", f"it {problem}")
            return
        t0 = time.perf_counter()
        try:
            sr = np.asarray(self.reconstructor.reconstruct(group.frames), dtype=np.float32)
        except Exception as exc:  # a failed group never stops the acquisition
            self._count_error(
                ticket, group, type(exc).__name__, f"{type(exc).__name__}: {one_line(exc)}", exc
            )
            return
        self._deliver(ticket, group, sr, (time.perf_counter() - t0) * 1e3)

    def _deliver(
        self, ticket: int, group: CompletedGroup, sr: np.ndarray, reconstruct_ms: float
    ) -> None:
        """Count a reconstructed group (or its non-finite output) and hand on its result."""
        problem = output_problem(sr)
        if problem is not None:
            self._count_error(ticket, group, "non-finite output", problem)
            return
        latency_ms = (time.perf_counter() - group.completed_perf) * 1e3
        reasons: list[str] = []
        ood, ood_key = False, None
        if self._ood is not None:
            ood, reasons, ood_key = self._ood.verdict  # the latest so far; this group is next
        with self._cond:
            if not self._holds(ticket):  # close() counted it as dropped
                log.info("group %s finished after the worker was closed; discarded", group.key)
                return
            index = self.reconstructed
            self.reconstructed += 1
            self._in_flight.discard(ticket)
            self.latencies_ms.add(latency_ms)
            self.reconstruct_ms.add(reconstruct_ms)
        if self._ood is not None:
            self._ood.offer(group)
        result = GroupResult(
            index=index,
            key=group.key,
            raw=group.frames,
            widefield=group.frames.mean(axis=0, dtype=np.float32),
            sr=sr,
            latency_ms=latency_ms,
            reconstruct_ms=reconstruct_ms,
            completed_at=group.completed_at,
            reconstructor=reconstructor_name(self.reconstructor),
            provider=str(getattr(self.reconstructor, "provider", "unknown")),
            pixel_size_um=self.pixel_size_um,
            simulated=self.simulated,
            ood=ood,
            extra={
                "first_frame_at": group.first_frame_at,
                "metadata": group.metadata,
                "ood_reasons": reasons,
                "ood_checked_key": ood_key,
            },
        )
        try:
            self._on_result(result)
        except Exception as exc:  # reconstructed all the same: counted once, as reconstructed
            with self._cond:
                self.delivery_errors += 1
                first = self.delivery_errors == 1
            log.error(
                "handing on the result of group %s failed: %s: %s",
                group.key,
                type(exc).__name__,
                one_line(exc),
                exc_info=first,
            )

    # ---- shutdown ----
    def close(self, timeout: float | None = None) -> bool:
        """Reconstruct what is waiting, then stop the thread (and the OOD check's).

        Returns
        -------
        bool
            True when the worker finished within ``timeout`` seconds; otherwise the groups still
            waiting and those in flight (in either stage, or prepared and handed over) are
            counted as dropped (a result that comes later is discarded) and the threads are left
            to end on their own (daemon).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        finished = self.join(timeout)
        if not finished:
            with self._cond:
                left = len(self._queue) + len(self._in_flight)
                self._queue.clear()
                self._waiting_bytes = 0
                self.dropped += left
                self._abandoned = True
                self._in_flight.clear()
                if self._two_stages is not None:
                    self._two_stages.abandon_locked()
                self._cond.notify_all()  # a submit waiting for room ends (and counts its drop)
            log.warning(
                "reconstruction worker did not finish within %.1f s; %d groups dropped",
                timeout or 0.0,
                left,
            )
        if self._ood is not None:
            left_s = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._ood.close(left_s):
                log.info("the out-of-distribution check still runs; it ends on its own")
        return finished
