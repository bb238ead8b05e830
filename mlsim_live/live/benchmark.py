"""Benchmark of the live path: hook time, end-to-end latency against bare reconstruction, drops.

Frames of simulated SIM groups are fed to a ``SIMProcessor`` at a camera-like frame rate, as
Pycro-Manager would, while the worker reconstructs. Run::

    mlsim-live bench --live --method rcan --size 512 --groups 30 --frame-ms 10

``--stages 1,2`` runs it once per worker mode, one after the other on the same reconstructor
(one thread; prepare beside inference), so both rows come from one run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.latency import percentiles_ms, time_calls
from mlsim_live.live.processor import SIMProcessor
from mlsim_live.recon.base import Reconstructor

log = logging.getLogger(__name__)


def bare_reconstruct_ms(
    reconstructor: Reconstructor, group: np.ndarray, repeats: int = 5
) -> dict[str, float | None]:
    """p50/p95 of ``reconstructor.reconstruct(group)`` alone (after one warm-up call)."""
    times = time_calls(lambda: reconstructor.reconstruct(group), repeats, max_time_s=float("inf"))
    return percentiles_ms(times)


def run_benchmark(
    reconstructor: Reconstructor,
    size: int = 512,
    groups: int = 30,
    frame_ms: float = 10.0,
    policy: str = "latest",
    repeats: int = 5,
    seed: int = 0,
    stages: Sequence[int | None] = (None,),
) -> dict[str, Any]:
    """Feed ``groups`` simulated groups frame by frame, one frame every ``frame_ms``.

    ``stages``: one run per entry, one after the other, with the worker in that mode (1: one
    thread; 2: prepare beside inference; None: the live default, 2 when the reconstructor has
    the stages). The bare reconstruction is timed once, before the runs.

    Returns
    -------
    dict
        ``hook_ms`` (p50, p95), ``latency_ms`` (p50, p95), ``reconstruct_ms`` (p50, p95, inside
        the reconstructor: both stages), ``bare_reconstruct_ms`` (p50, p95),
        ``latency_over_bare`` (p50 ratio), ``groups_acquired``, ``groups_reconstructed``,
        ``groups_dropped``, ``errors``, ``acquisition_groups_per_s``, ``sr_groups_per_s``,
        ``worker_groups_per_s`` (1000 / bare p50), ``stages`` and the settings, of the last
        run; with several runs also ``rows`` (each run's figures, and under ``over_first`` its
        ``sr_groups_per_s`` and latency p50/p95 as ratios over the first run's).
    """
    from mlsim_live.sim import simulate_group

    if not stages:
        raise MLSimError("no worker stages to benchmark; expected e.g. --stages 1,2")
    group = simulate_group(sample="mixture", size=size, seed=seed).raw
    bare = bare_reconstruct_ms(reconstructor, group, repeats)
    settings = {"size": size, "groups": groups, "frame_ms": frame_ms, "policy": policy}
    rows = [_live_run(reconstructor, group, bare, settings, mode) for mode in stages]
    report = dict(rows[-1])
    if len(rows) > 1:
        for row in rows:
            row["over_first"] = _ratios(row, rows[0])
        report["rows"] = rows
    return report


def _live_run(
    reconstructor: Reconstructor,
    group: np.ndarray,
    bare: dict[str, float | None],
    settings: dict[str, Any],
    stages: int | None,
) -> dict[str, Any]:
    """One run of the live path: ``settings['groups']`` copies of ``group`` through the hook."""
    size, groups, frame_ms, policy = (settings[k] for k in ("size", "groups", "frame_ms", "policy"))
    proc = SIMProcessor(reconstructor=reconstructor, policy=policy, stages=stages)
    period_s = frame_ms / 1e3
    start = time.perf_counter()
    next_at = start
    for t in range(groups):
        for i in range(9):
            next_at += period_s
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            metadata = {"Axes": {"time": t, "angle": i // 3, "phase": i % 3}}
            proc(group[i].copy(), metadata)
    acquisition_s = time.perf_counter() - start
    summary = proc.close()
    bare_p50 = bare["p50"] or float("nan")
    latency_p50 = summary["latency_ms"]["p50"]
    return {
        "size": size,
        "groups": groups,
        "frame_ms": frame_ms,
        "policy": policy,
        "model": summary["model"],
        "provider": summary["provider"],
        # what the learned model ran in (after --precision auto chose); None: no network
        "precision": getattr(reconstructor, "precision", None),
        "stages": summary["stages"],
        "hook_ms": summary["hook_ms"],
        "latency_ms": summary["latency_ms"],
        "reconstruct_ms": summary["reconstruct_ms"],
        "bare_reconstruct_ms": bare,
        "latency_over_bare": None if latency_p50 is None else round(latency_p50 / bare_p50, 3),
        "groups_acquired": summary["groups_acquired"],
        "groups_reconstructed": summary["groups_reconstructed"],
        "groups_dropped": summary["groups_dropped"],
        "errors": summary["errors"],
        "acquisition_groups_per_s": round(groups / acquisition_s, 3),
        "sr_groups_per_s": summary["sr_groups_per_s"],
        "worker_groups_per_s": round(1e3 / bare_p50, 3),
    }


def _ratios(row: dict[str, Any], first: dict[str, Any]) -> dict[str, float | None]:
    """``row``'s SR rate and latency p50/p95 over ``first``'s (None where one is missing)."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else round(a / b, 3)

    return {
        "sr_groups_per_s": ratio(row["sr_groups_per_s"], first["sr_groups_per_s"]),
        "latency_p50": ratio(row["latency_ms"]["p50"], first["latency_ms"]["p50"]),
        "latency_p95": ratio(row["latency_ms"]["p95"], first["latency_ms"]["p95"]),
    }
