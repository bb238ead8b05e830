"""The live worker's two-stage mode: one thread prepares group n+1 (checks, normalization, the
Wiener prior) while a second runs the inference of group n, through a hand-off of one group.

`ReconstructionWorker` runs it for reconstructors that declare
`mlsim_live.recon.base.SupportsStages`; the worker keeps the queue, the counting and the
delivery, and this module only the two threads and the hand-off between them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlsim_live.errors import one_line
from mlsim_live.latency import LatencyWindow
from mlsim_live.live.grouper import CompletedGroup
from mlsim_live.recon.base import SupportsStages
from mlsim_live.validation import group_problem

if TYPE_CHECKING:
    from mlsim_live.live.worker import ReconstructionWorker

log = logging.getLogger(__name__)

# Weight of the newest duration in the running estimates of each stage's time.
_SMOOTHING = 0.3
# Preparation starts this much earlier than the estimates say (relative, and seconds).
_START_MARGIN = 0.1
_START_MARGIN_S = 0.002


@dataclass(frozen=True)
class PreparedItem:
    """A group in the hand-off: its in-flight ticket, the group, what ``prepare`` returned, and
    how long preparing took (s)."""

    ticket: int
    group: CompletedGroup
    prepared: Any
    prepare_s: float


class _Smoothed:
    """An exponentially weighted running mean of a duration in seconds (None before the first)."""

    def __init__(self) -> None:
        self.value: float | None = None

    def add(self, seconds: float) -> None:
        self.value = (
            seconds if self.value is None else self.value + _SMOOTHING * (seconds - self.value)
        )


class TwoStages:
    """The two threads of a `ReconstructionWorker` in two-stage mode.

    Stage 1 (``mlsim-recon-prepare``) takes the oldest waiting group, checks it
    (`mlsim_live.validation`) and runs ``reconstructor.prepare``; stage 2
    (``mlsim-recon-infer``) runs ``reconstructor.finish`` and hands the result to the worker's
    delivery. Between them a hand-off holds at most one prepared group: stage 1 takes the next
    group only once the hand-off is empty, so groups wait in the worker's queue, where the
    ``latest`` policy can drop them.

    A prepared group is in flight, like the group in each stage: ``latest`` never drops it
    (its Wiener prior is paid for, on cores the inference needs). So that it does not wait long
    in the hand-off, under ``latest`` stage 1 starts a preparation just in time: while stage 2
    is busy it waits until the inference has about one preparation time left (running
    estimates of both, started a little early), then takes the newest waiting group. Under
    ``all`` it prepares at once. Both stages run groups one at a time and in acquisition order,
    so results leave in order.

    Every group a stage takes is counted once by the worker: an error in either stage (a bad
    group, ``prepare`` or ``finish`` raising, a non-finite output) is counted by reason;
    ``close`` lets stage 1 prepare what waits and stage 2 finish it, or, at its timeout, counts
    the groups in both stages and in the hand-off as dropped and discards whatever they return
    later.
    """

    def __init__(self, worker: ReconstructionWorker, reconstructor: SupportsStages) -> None:
        self._worker = worker
        self._cond = worker._cond  # one lock for the queue, the counters and the hand-off
        self._reconstructor = reconstructor
        self._handoff: PreparedItem | None = None
        self._preparing_ended = False
        self._finish_started: float | None = None  # perf_counter; None while stage 2 is idle
        self._prepare_s = _Smoothed()
        self._finish_s = _Smoothed()
        self.prepare_ms = LatencyWindow()
        self.finish_ms = LatencyWindow()
        self._threads = (
            threading.Thread(target=self._guarded(self._prepare_loop), name="mlsim-recon-prepare"),
            threading.Thread(target=self._guarded(self._finish_loop), name="mlsim-recon-infer"),
        )
        for thread in self._threads:
            thread.daemon = True

    def start(self) -> None:
        """Start both threads."""
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout`` s in all) for both threads to end; True when they have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def abandon_locked(self) -> None:
        """Empty the hand-off (close timed out); the caller holds the worker's lock and has
        counted its group as dropped."""
        self._handoff = None

    # ---- stage 1 ----
    def _prepare_loop(self) -> None:
        try:
            while True:
                taken = self._take()
                if taken is None:
                    return
                ticket, group = taken
                try:
                    item = self._prepare(ticket, group)
                except Exception as exc:  # keep the stage alive whatever happens
                    self._worker._count_error(ticket, group, type(exc).__name__, one_line(exc), exc)
                    continue
                if item is None:
                    continue
                with self._cond:
                    if not self._worker._holds(item.ticket):  # close() counted it as dropped
                        continue
                    self._handoff = item
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._preparing_ended = True
                self._cond.notify_all()

    def _take(self) -> tuple[int, CompletedGroup] | None:
        """The next group to prepare, once the hand-off is empty (None: the worker is done)."""
        worker = self._worker
        with self._cond:
            while True:
                self._cond.wait_for(
                    lambda: (
                        worker._abandoned
                        or (worker._closing and not worker._queue)
                        or (bool(worker._queue) and self._handoff is None)
                    )
                )
                if worker._abandoned or not worker._queue:
                    return None
                delay_s = self._start_delay_s()
                if delay_s <= 0:
                    return worker._pop_locked()
                self._cond.wait(delay_s)  # woken early when stage 2 ends its group or on close

    def _start_delay_s(self) -> float:
        """Seconds stage 1 should still wait before preparing (0: now). Caller holds the lock."""
        worker = self._worker
        if worker.policy != "latest" or worker._closing or self._finish_started is None:
            return 0.0
        finish_s, prepare_s = self._finish_s.value, self._prepare_s.value
        if finish_s is None or prepare_s is None:
            return 0.0
        lead_s = prepare_s * (1.0 + _START_MARGIN) + _START_MARGIN_S
        return self._finish_started + finish_s - lead_s - time.perf_counter()

    def _prepare(self, ticket: int, group: CompletedGroup) -> PreparedItem | None:
        """Check and prepare one group; None when it was counted as an error."""
        worker = self._worker
        problem = group_problem(group.frames)
        if problem is not None:  # the one rule for every source
            worker._count_error(ticket, group, "bad raw data", f"it {problem}")
            return None
        t0 = time.perf_counter()
        try:
            prepared = self._reconstructor.prepare(group.frames)
        except Exception as exc:  # a failed group never stops the acquisition
            name = type(exc).__name__
            worker._count_error(ticket, group, name, f"{name}: {one_line(exc)}", exc)
            return None
        prepare_s = time.perf_counter() - t0
        self.prepare_ms.add(prepare_s * 1e3)
        with self._cond:
            self._prepare_s.add(prepare_s)
        return PreparedItem(ticket, group, prepared, prepare_s)

    # ---- stage 2 ----
    def _finish_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: (
                        self._handoff is not None
                        or self._preparing_ended
                        or self._worker._abandoned
                    )
                )
                item, self._handoff = self._handoff, None
                if item is None or self._worker._abandoned:
                    return
                self._finish_started = time.perf_counter()
                self._cond.notify_all()  # the hand-off is free: stage 1 may take the next group
            try:
                self._finish(item)
            except Exception as exc:  # keep the stage alive whatever happens
                self._worker._count_error(
                    item.ticket, item.group, type(exc).__name__, one_line(exc), exc
                )
            finally:
                with self._cond:
                    self._finish_started = None
                    self._cond.notify_all()

    def _finish(self, item: PreparedItem) -> None:
        """Infer one prepared group and hand the image to the worker's delivery."""
        t0 = time.perf_counter()
        try:
            sr = np.asarray(self._reconstructor.finish(item.prepared), dtype=np.float32)
        except Exception as exc:  # a failed group never stops the acquisition
            name = type(exc).__name__
            self._worker._count_error(
                item.ticket, item.group, name, f"{name}: {one_line(exc)}", exc
            )
            return
        finish_s = time.perf_counter() - t0
        self.finish_ms.add(finish_s * 1e3)
        with self._cond:
            self._finish_s.add(finish_s)
        self._worker._deliver(item.ticket, item.group, sr, (item.prepare_s + finish_s) * 1e3)

    def _guarded(self, loop: Callable[[], None]) -> Callable[[], None]:
        """``loop``, logging (never raising) what escapes it, so a thread ends visibly."""

        def run() -> None:
            try:
                loop()
            except Exception:
                log.exception("the %s thread of the reconstruction worker failed", loop.__name__)

        return run
