"""Soak test of the live path: a long headless demo per method, with the process's memory sampled.

Runs ``mlsim-live demo --headless`` (small frames, as fast as the camera goes) for many groups
with each method, samples the demo process's resident memory (RSS) throughout, and checks at the
end that memory stayed flat after warm-up, that no raw frame was lost (the NDTiff dataset holds
9 frames of every group queued) and that the pipeline's invariants hold. Prints one line per
method and writes the figures as JSON.

    python scripts/soak.py --groups 10000 --methods wiener,rcan --json soak.json

Exit code 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# Memory may grow by at most this much per group from the end of warm-up to the end of the run.
# The pipeline itself is flat (bounded queues and counters); what grows is the raw-data writer's
# in-memory index of every saved frame (NDTiff, in Pycro-Manager), about 6 KB per group.
MAX_GROWTH_KB_PER_GROUP = 10.0
# Warm-up: until this fraction of the groups is in the SR file (model load, first allocations).
WARM_UP_FRACTION = 0.1


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (Linux), or None once it has ended."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def sample(
    pid: int,
    sr_file: Path,
    every_s: float,
    samples: list[tuple[float, float, int]],
    done: threading.Event,
) -> None:
    """Append ``(seconds, RSS MB, SR file bytes)`` every ``every_s`` until ``done``."""
    started = time.monotonic()
    while not done.is_set():
        value = rss_mb(pid)
        if value is not None:
            size = sr_file.stat().st_size if sr_file.exists() else 0
            samples.append((time.monotonic() - started, value, size))
        done.wait(every_s)


def count_raw_frames(dataset: Path) -> int:
    import contextlib
    import io

    from ndtiff import Dataset

    with contextlib.redirect_stdout(io.StringIO()):  # ndtiff prints its progress
        data = Dataset(str(dataset))
    try:
        return len(data.get_image_coordinates_list())
    finally:
        data.close()


def soak(method: str, groups: int, size: int, out: Path, every_s: float) -> dict[str, Any]:
    """Run one demo and return its figures."""
    from mlsim_live.live.pipeline import invariant_violations

    folder = out / method
    cmd = [
        sys.executable,
        *("-m", "mlsim_live", "-q", "demo", "--headless"),
        *("--groups", str(groups), "--size", str(size), "--method", method),
        *("--exposure-ms", "1", "--out", str(folder), "--policy", "latest"),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float, int]] = []
    done = threading.Event()
    sr_file = folder / "demo_1_sr.tif"
    sampler = threading.Thread(target=sample, args=(proc.pid, sr_file, every_s, samples, done))
    sampler.start()
    _stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    wall_s = time.monotonic() - started
    if proc.returncode != 0:
        return {"method": method, "ok": False, "error": stderr.strip()[-2000:]}
    summary = json.loads((folder / "demo_1_summary.json").read_text())
    raw_saved = count_raw_frames(folder / "demo_1")
    raw_expected = 9 * summary["groups_submitted"]
    page_bytes = 4 * (2 * size) ** 2
    warm_bytes = WARM_UP_FRACTION * summary["groups_reconstructed"] * page_bytes
    warm = [v for _, v, b in samples if b >= warm_bytes] or [samples[-1][1]]
    figures = {
        "method": method,
        "model": summary["model"],
        "groups": summary["groups_submitted"],
        "frame_size": size,
        "wall_s": round(wall_s, 1),
        "groups_acquired": summary["groups_acquired"],
        "groups_reconstructed": summary["groups_reconstructed"],
        "groups_dropped": summary["groups_dropped"],
        "errors": summary["errors"],
        "raw_frames_saved": raw_saved,
        "raw_frames_lost": raw_expected - raw_saved,
        "rss_mb_start": round(samples[0][1], 1),
        "rss_mb_after_warm_up": round(warm[0], 1),
        "rss_mb_end": round(samples[-1][1], 1),
        "rss_mb_peak": round(max(v for _, v, _ in samples), 1),
        "rss_growth_after_warm_up_mb": round(samples[-1][1] - warm[0], 1),
        "rss_growth_kb_per_group": round((samples[-1][1] - warm[0]) * 1024 / max(1, groups), 2),
        "rss_samples": len(samples),
        "latency_ms": summary["latency_ms"],
        "invariant_violations": invariant_violations(summary),
    }
    figures["ok"] = (
        figures["raw_frames_lost"] == 0
        and not figures["invariant_violations"]
        and figures["rss_growth_after_warm_up_mb"] * 1024 <= MAX_GROWTH_KB_PER_GROUP * groups
        and summary["groups_submitted"] == groups
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=10_000, help="SIM groups per method")
    parser.add_argument("--methods", default="wiener,rcan", help="comma-separated methods")
    parser.add_argument("--size", type=int, default=64, help="camera frame size (default 64)")
    parser.add_argument("--every-s", type=float, default=0.5, help="RSS sampling period")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="mlsim-soak-") as tmp:
        out = args.out or Path(tmp)
        for method in args.methods.split(","):
            figures = soak(method, args.groups, args.size, out, args.every_s)
            results.append(figures)
            if "error" in figures:
                print(f"{method}: FAILED: {figures['error']}")
                continue
            print(
                f"{method}: {figures['groups']} groups in {figures['wall_s']} s, "
                f"{figures['groups_reconstructed']} reconstructed, "
                f"{figures['groups_dropped']} dropped, {figures['errors']} errors; "
                f"RSS {figures['rss_mb_after_warm_up']} MB after warm-up -> "
                f"{figures['rss_mb_end']} MB, peak {figures['rss_mb_peak']} MB; "
                f"{figures['raw_frames_lost']} raw frames lost; invariants "
                f"{'hold' if not figures['invariant_violations'] else 'BROKEN'}; "
                f"{'ok' if figures['ok'] else 'FAILED'}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
