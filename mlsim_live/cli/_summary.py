"""What the live-path commands (`demo`, `live`, `replay`) print at the end of a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def print_summary(summary: Mapping[str, Any], kind: str = "SIM acquisition") -> None:
    """Print the counts, latency and throughput, and the output files of a live-path run.

    ``kind`` names the run (e.g. ``"SIM acquisition"``, ``"replay"``); data from simulated
    optics is labelled SIMULATED.
    """
    latency = summary.get("latency_ms") or {}
    label = "SIMULATED " if summary.get("simulated") else ""
    raw = f" of {summary['raw_frames']} raw frames" if summary.get("raw_frames") is not None else ""
    counts = (
        f"{label}{kind}{raw}: {summary['groups_acquired']} groups acquired, "
        f"{summary['groups_reconstructed']} reconstructed, {summary['groups_dropped']} dropped, "
        f"{summary['errors']} errors, {summary.get('incomplete_groups', 0)} incomplete"
    )
    if summary.get("stage_errors"):
        counts += f", {summary['stage_errors']} frame-processing errors"
    print(counts)
    figures = [f"latency p50 {latency.get('p50')} ms, p95 {latency.get('p95')} ms"]
    if summary.get("hook_ms"):
        figures.append(f"hook p50 {summary['hook_ms'].get('p50')} ms")
    if summary.get("raw_frames_per_s") is not None:
        figures.append(
            f"{summary['raw_frames_per_s']} raw frames/s, {summary.get('groups_per_s')} groups/s"
        )
    print(f"{'; '.join(figures)}; {summary['model']} on {summary['provider']}")
    for key, name in (("raw_dataset", "raw"), ("sr_file", "SR"), ("summary_file", "summary")):
        if summary.get(key):
            print(f"{name}: {summary[key]}")
