"""The reconstruction worker: one thread that reconstructs complete groups from a bounded queue."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.live.grouper import CompletedGroup
from mlsim_live.live.results import GroupResult
from mlsim_live.recon.base import Reconstructor

log = logging.getLogger(__name__)

Policy = Literal["latest", "all"]
POLICIES: tuple[str, ...] = ("latest", "all")
# Latencies kept for the percentiles (the most recent ones).
_LATENCIES_KEPT = 100_000


def percentiles_ms(values: deque[float] | list[float]) -> dict[str, float | None]:
    """``{"p50": ..., "p95": ...}`` of a list of milliseconds (None when empty)."""
    if not values:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


def reconstructor_name(reconstructor: object) -> str:
    """The reconstructor's ``name``, or its class name."""
    return str(getattr(reconstructor, "name", type(reconstructor).__name__))


def _reconstructor_ood_check(
    reconstructor: object,
) -> Callable[[np.ndarray], bool | list[str]] | None:
    for attr in ("check_ood", "ood_reasons", "is_out_of_distribution"):
        check = getattr(reconstructor, attr, None)
        if callable(check):
            return check
    return None


class ReconstructionWorker:
    """Reconstructs groups on its own thread and hands each result to ``on_result``.

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
        bool (True: outside). By default the reconstructor's own ``check_ood`` (RCAN) or
        ``is_out_of_distribution`` method, if it has one. Runs after the reconstruction, so it
        is not counted in the latency.
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
        ood_check: Callable[[np.ndarray], bool | list[str]] | None = None,
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
        self._ood_check = ood_check or _reconstructor_ood_check(reconstructor)
        self._cond = threading.Condition()
        self._queue: deque[CompletedGroup] = deque()
        self._waiting_bytes = 0
        self._closing = False
        self.submitted = 0
        self.reconstructed = 0
        self.dropped = 0
        self.errors = 0
        self.ood = 0
        self.backpressure_waits = 0
        self.latencies_ms: deque[float] = deque(maxlen=_LATENCIES_KEPT)
        self.reconstruct_ms: deque[float] = deque(maxlen=_LATENCIES_KEPT)
        self._thread = threading.Thread(target=self._run, name="mlsim-recon-worker", daemon=True)
        self._thread.start()

    # ---- producer side (acquisition thread) ----
    def submit(self, group: CompletedGroup) -> None:
        """Queue a complete group. Never blocks under ``latest``."""
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
            else:
                if self._queue and self._waiting_bytes + nbytes > self.max_waiting_bytes:
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
                            not self._queue
                            or self._waiting_bytes + nbytes <= self.max_waiting_bytes
                        )
                    )
            self._queue.append(group)
            self._waiting_bytes += nbytes
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Groups waiting for the worker."""
        with self._cond:
            return len(self._queue)

    def stats(self) -> dict[str, object]:
        """A consistent snapshot of the counters and latency percentiles."""
        with self._cond:
            return {
                "groups_submitted": self.submitted,
                "groups_reconstructed": self.reconstructed,
                "groups_dropped": self.dropped,
                "groups_waiting": len(self._queue),
                "errors": self.errors,
                "ood_groups": self.ood,
                "backpressure_waits": self.backpressure_waits,
                "latency_ms": percentiles_ms(list(self.latencies_ms)),
                "reconstruct_ms": percentiles_ms(list(self.reconstruct_ms)),
            }

    # ---- worker thread ----
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return
                group = self._queue.popleft()
                self._waiting_bytes -= group.frames.nbytes
                self._cond.notify_all()
            try:
                self._process(group)
            except Exception:  # keep the worker alive whatever happens downstream
                with self._cond:
                    self.errors += 1
                log.exception("handling the result of group %s failed", group.key)

    def _process(self, group: CompletedGroup) -> None:
        t0 = time.perf_counter()
        try:
            sr = np.asarray(self.reconstructor.reconstruct(group.frames), dtype=np.float32)
        except Exception as exc:  # a failed group never stops the acquisition
            with self._cond:
                self.errors += 1
                first = self.errors == 1
            log.error(
                "reconstruction of group %s failed: %s: %s",
                group.key,
                type(exc).__name__,
                exc,
                exc_info=first,
            )
            return
        t1 = time.perf_counter()
        latency_ms = (t1 - group.completed_perf) * 1e3
        reconstruct_ms = (t1 - t0) * 1e3
        ood, reasons = False, []
        if self._ood_check is not None:
            try:
                verdict = self._ood_check(group.frames)
            except Exception as exc:
                log.warning("out-of-distribution check failed on group %s: %s", group.key, exc)
            else:
                if isinstance(verdict, list | tuple):
                    reasons = [str(r) for r in verdict]
                    ood = bool(reasons)
                else:
                    ood = bool(verdict)
        with self._cond:
            index = self.reconstructed
            self.reconstructed += 1
            self.ood += int(ood)
            self.latencies_ms.append(latency_ms)
            self.reconstruct_ms.append(reconstruct_ms)
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
            },
        )
        self._on_result(result)

    # ---- shutdown ----
    def close(self, timeout: float | None = None) -> bool:
        """Reconstruct what is waiting, then stop the thread.

        Returns
        -------
        bool
            True when the worker finished within ``timeout`` seconds; otherwise the groups still
            waiting are counted as dropped and the thread is left to end on its own (daemon).
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                left = len(self._queue)
                self._queue.clear()
                self._waiting_bytes = 0
                self.dropped += left
            log.warning(
                "reconstruction worker did not finish within %.1f s; %d waiting groups dropped",
                timeout or 0.0,
                left,
            )
            return False
        return True
