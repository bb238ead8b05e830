"""Benchmark of the live path: hook time, end-to-end latency against bare reconstruction, drops.

Frames of simulated SIM groups are fed to a ``SIMProcessor`` at a camera-like frame rate, as
Pycro-Manager would, while the worker reconstructs. Run::

    mlsim-live bench --live --method rcan --size 512 --groups 30 --frame-ms 10
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

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
) -> dict[str, Any]:
    """Feed ``groups`` simulated groups frame by frame, one frame every ``frame_ms``.

    Returns
    -------
    dict
        ``hook_ms`` (p50, p95), ``latency_ms`` (p50, p95), ``bare_reconstruct_ms`` (p50, p95),
        ``latency_over_bare`` (p50 ratio), ``groups_acquired``, ``groups_reconstructed``,
        ``groups_dropped``, ``errors``, ``acquisition_groups_per_s``, ``sr_groups_per_s``,
        ``worker_groups_per_s`` (1000 / bare p50), and the settings.
    """
    from mlsim_live.sim import simulate_group

    group = simulate_group(sample="mixture", size=size, seed=seed).raw
    bare = bare_reconstruct_ms(reconstructor, group, repeats)
    proc = SIMProcessor(reconstructor=reconstructor, policy=policy)
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
        "hook_ms": summary["hook_ms"],
        "latency_ms": summary["latency_ms"],
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
