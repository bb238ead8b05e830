"""The latency window: exact figures, cheap reads, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from mlsim_live.latency import REFRESH_S, LatencyWindow, percentiles_ms, summarize_ms


def test_percentiles_match_numpy() -> None:
    window = LatencyWindow(kept=10)
    assert window.percentiles() == {"p50": None, "p95": None}
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    for v in values:
        window.add(v)
    assert window.percentiles() == percentiles_ms(values)
    assert window.percentiles()["p50"] == pytest.approx(float(np.percentile(values, 50)))
    assert summarize_ms(values)["p95"] == pytest.approx(window.percentiles()["p95"])


def test_keeps_the_most_recent_values() -> None:
    window = LatencyWindow(kept=3)
    for v in (100.0, 100.0, 1.0, 2.0, 3.0):
        window.add(v)
    assert len(window) == 3 and window.added == 5
    assert window.percentiles()["p50"] == 2.0


def test_reads_reuse_figures_until_a_value_arrives() -> None:
    window = LatencyWindow(kept=10)
    window.add(1.0)
    window.percentiles()
    for _ in range(50):
        window.percentiles()
    assert window.computations == 1
    window.add(2.0)
    assert window.percentiles()["p50"] == 1.5
    assert window.computations == 2


def test_running_reads_of_a_long_window_refresh_at_most_every_refresh_s() -> None:
    now = [0.0]
    window = LatencyWindow(kept=5000, clock=lambda: now[0])
    for i in range(2000):
        window.add(float(i))
    window.percentiles(exact=False)
    window.add(1e6)
    stale = window.percentiles(exact=False)
    assert window.computations == 1  # younger than REFRESH_S: reused
    now[0] += REFRESH_S
    fresh = window.percentiles(exact=False)
    assert window.computations == 2 and fresh != stale
    window.add(2e6)
    assert window.percentiles(exact=True)["p95"] == percentiles_ms(window_values(window))["p95"]


def window_values(window: LatencyWindow) -> list[float]:
    return [*[float(i) for i in range(2000)], 1e6, 2e6]
