"""Latency figures in ms: timed calls, their summary, and the rolling window of the live path.

The live worker, the hook and the benchmarks all summarize latencies here, so a p50 means the
same everywhere. Only numpy is imported.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

#: Timed runs ``time_calls`` makes at least before it stops on its time budget.
MIN_REPEATS = 3
#: Latencies a `LatencyWindow` keeps (the most recent ones).
WINDOW_KEPT = 100_000
# A window of more values than this recomputes its percentiles at most every `REFRESH_S` while
# the run goes on (a status bar polls often); an exact read always recomputes after a change.
_SMALL_WINDOW = 1_000
REFRESH_S = 0.5


def time_calls(
    fn: Callable[[], Any], repeats: int, max_time_s: float, warmup: int = 1
) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then up to ``repeats`` timed runs; return ms.

    Stops early after ``max_time_s`` once ``min(MIN_REPEATS, repeats)`` runs are done.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= min(MIN_REPEATS, repeats) and time.perf_counter() - start > max_time_s:
            break
    return times


def summarize_ms(times: Iterable[float]) -> dict[str, float]:
    """p50, p95, mean, min and max of latencies in ms (``times`` must not be empty)."""
    arr = np.asarray(list(times) if not isinstance(times, np.ndarray) else times, np.float64)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "mean": float(arr.mean()),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def percentiles_ms(values: Iterable[float]) -> dict[str, float | None]:
    """``{"p50", "p95"}`` of milliseconds, rounded to the microsecond (None when empty)."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, np.float64)
    if arr.size == 0:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(arr, (50, 95))
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


class LatencyWindow:
    """The most recent latencies (ms) of a run and their p50/p95, cheap to read at any rate.

    ``add`` stores a value in a fixed ring buffer (no allocation). ``percentiles`` recomputes
    only when values were added since the last computation; on a large window, a non-exact
    read reuses figures younger than `REFRESH_S`, so a status bar that polls many times a
    second costs nothing. The values are copied under the window's own lock and the
    percentiles computed after it is released, so ``add`` is never held up by a read.

    Parameters
    ----------
    kept : int
        Values kept (the most recent ones).
    clock : callable
        Seconds, monotonic (tests pass a fake).
    """

    def __init__(self, kept: int = WINDOW_KEPT, clock: Callable[[], float] = time.monotonic):
        if kept < 1:
            raise ValueError(f"kept={kept}; expected a positive number of values")
        self._values = np.empty(kept, dtype=np.float64)
        self._added = 0
        self._lock = threading.Lock()
        self._clock = clock
        self._cached: dict[str, float | None] = {"p50": None, "p95": None}
        self._cached_added = 0
        self._cached_at = float("-inf")
        self.computations = 0  # how often the percentiles were computed (for tests and tuning)

    def add(self, value_ms: float) -> None:
        """Record one latency."""
        with self._lock:
            self._values[self._added % self._values.size] = value_ms
            self._added += 1

    @property
    def added(self) -> int:
        """Values recorded since the start (also those no longer kept)."""
        with self._lock:
            return self._added

    def __len__(self) -> int:
        with self._lock:
            return min(self._added, self._values.size)

    def percentiles(self, exact: bool = True) -> dict[str, float | None]:
        """``{"p50", "p95"}`` of the kept values, rounded to the microsecond (None when empty).

        Parameters
        ----------
        exact : bool
            True: figures of every value recorded so far. False: figures at most `REFRESH_S`
            old on a window of more than 1,000 values (for a running status).
        """
        with self._lock:
            added = self._added
            if added == self._cached_added:
                return dict(self._cached)
            n = min(added, self._values.size)
            now = self._clock()
            if not exact and n > _SMALL_WINDOW and now - self._cached_at < REFRESH_S:
                return dict(self._cached)
            values = self._values[:n].copy()
        figures = percentiles_ms(values)
        with self._lock:
            if added >= self._cached_added:
                self._cached, self._cached_added, self._cached_at = figures, added, now
            self.computations += 1
        return dict(figures)
