"""Measure `mlsim-live replay`: throughput per method (raw frames/s, groups/s) and peak
resident memory of a fresh process replaying a small and a large TIFF (flat memory: same peak).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GROUP_FRAMES = 9


def make_stack(path: Path, n_groups: int, size: int, n_distinct: int = 4, seed: int = 0) -> Path:
    """Write ``n_groups`` simulated groups (``n_distinct`` distinct ones, repeated) to a TIFF."""
    import tifffile

    from mlsim_live.sim import Camera, Optics, Pattern, Signal, SIMParams, simulate_group

    params = SIMParams(
        optics=Optics(na=1.4, wavelength_nm=525, pixel_size_um=0.08),
        pattern=Pattern(frequency_fraction=0.85, angle_offset_deg=10.0, modulation=0.8),
        signal=Signal(peak_photons=1000, background_photons=20),
        camera=Camera(kind="scmos", offset_adu=100),
    )
    distinct = [
        simulate_group(params, sample="mixture", size=size, seed=seed + k).raw
        for k in range(min(n_distinct, n_groups))
    ]
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for t in range(n_groups):
            tif.write(distinct[t % len(distinct)], contiguous=True, metadata=None)
    return path


def replay_file(path: Path, out: Path, method: str, model: str | None) -> dict:
    """Replay ``path`` headless as fast as possible; return the summary."""
    from mlsim_live.replay import ReplayRun, ReplaySettings

    settings = ReplaySettings(
        input=path,
        out=out,
        method=method,
        model=Path(model) if model else None,
        na=1.4,
        wavelength_nm=525.0,
        pixel_size_um=0.08,
        overwrite=True,
    )
    return ReplayRun(settings).run()


def memory_mb() -> dict[str, float]:
    """Resident memory of this process in MB: now, its peak (VmHWM), and ``ru_maxrss``.

    ``ru_maxrss`` survives ``exec``: a child started from a large parent reports at least the
    parent's size at the fork. The orchestrating process therefore stays small and imports
    nothing heavy; VmHWM (Linux) is the peak of this process image alone.
    """
    figures = {"rss_mb": float("nan"), "hwm_mb": float("nan")}
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                figures["rss_mb"] = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                figures["hwm_mb"] = int(line.split()[1]) / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures["ru_maxrss_mb"] = maxrss / 1024 if sys.platform != "darwin" else maxrss / 1024**2
    return {k: round(v, 1) for k, v in figures.items()}


def child_make(path: str, n_groups: str, frame: str) -> dict:
    make_stack(Path(path), int(n_groups), int(frame))
    return {"file": path, "file_gb": round(os.path.getsize(path) / 1e9, 3)}


def child_throughput(path: str, out: str, method: str, model: str) -> dict:
    summary = replay_file(Path(path), Path(out), method, model or None)
    return {
        "groups": summary["groups_reconstructed"],
        "raw_frames_per_s": summary["raw_frames_per_s"],
        "groups_per_s": summary["groups_per_s"],
        "reconstruct_ms_p50": summary["reconstruct_ms"]["p50"],
        "latency_ms_p50": summary["latency_ms"]["p50"],
        "model": summary["model"],
        "provider": summary["provider"],
    }


def child_memory(path: str, out: str) -> dict:
    """Replay ``path`` with widefield; the memory figures before and after."""
    # imported first, so that the baseline holds the libraries and the peak adds the replay
    import tifffile  # noqa: F401

    import mlsim_live.recon.widefield
    import mlsim_live.replay  # noqa: F401

    before = memory_mb()
    started = time.perf_counter()
    summary = replay_file(Path(path), Path(out), "widefield", None)
    wall_s = time.perf_counter() - started
    after = memory_mb()
    return {
        "file_gb": round(os.path.getsize(path) / 1e9, 3),
        "sr_file_gb": round(os.path.getsize(summary["sr_file"]) / 1e9, 3),
        "rss_after_imports_mb": before["rss_mb"],
        "peak_rss_mb": after["hwm_mb"],
        "ru_maxrss_mb": after["ru_maxrss_mb"],
        "wall_s": round(wall_s, 2),
        "raw_frames": summary["raw_frames"],
        "groups_reconstructed": summary["groups_reconstructed"],
        "raw_frames_per_s": summary["raw_frames_per_s"],
        "groups_per_s": summary["groups_per_s"],
    }


CHILDREN = {"make": child_make, "throughput": child_throughput, "memory": child_memory}


def in_child(kind: str, *args: object) -> dict:
    """Run ``CHILDREN[kind](*args)`` in a fresh interpreter; return its JSON result."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, *map(str, args)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"{kind} {args} failed with exit code {result.returncode}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="Example: python scripts/replay_memory.py --size-gb 3 --model MODEL.onnx "
        "--json replay.json. The stacks are simulated SIM groups, repeated; every file made "
        "(raw stacks, reconstructions) is deleted at the end unless --keep. Each step runs in "
        "its own process, so each peak memory figure is that of the replay alone.",
    )
    parser.add_argument("--size-gb", type=float, default=3.0, help="large file size (default 3)")
    parser.add_argument("--small-gb", type=float, default=0.2, help="small file (default 0.2)")
    parser.add_argument("--frame", type=int, default=512, help="frame size N (default 512)")
    parser.add_argument(
        "--throughput-groups", type=int, default=20, help="groups per throughput run (default 20)"
    )
    parser.add_argument("--methods", default="widefield,wiener,rcan", help="throughput methods")
    parser.add_argument("--model", help="ONNX model for rcan (default: the shipped model)")
    parser.add_argument("--scratch", type=Path, help="scratch folder (default: system temp)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch files")
    parser.add_argument("--skip-memory", action="store_true", help="throughput only")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        print(json.dumps(CHILDREN[kind](*rest)))
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="mlsim_replay_", dir=args.scratch))
    group_bytes = GROUP_FRAMES * args.frame * args.frame * 2
    report: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "frame": [args.frame, args.frame],
        "throughput": {},
        "memory": [],
    }
    try:
        small = scratch / "throughput.tif"
        in_child("make", small, args.throughput_groups, args.frame)
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            model = args.model if method == "rcan" else None
            if method == "rcan" and model is None and not _has_default_model():
                print("rcan: skipped (no --model and no default model installed)")
                continue
            figures = in_child("throughput", small, scratch / f"out_{method}", method, model or "")
            report["throughput"][method] = figures
            print(f"throughput {method}: {json.dumps(figures)}", flush=True)
            shutil.rmtree(scratch / f"out_{method}")
        if not args.skip_memory:
            for size_gb in (args.small_gb, args.size_gb):
                n_groups = max(1, int(size_gb * 1e9 / group_bytes))
                path = scratch / f"raw_{size_gb:g}gb.tif"
                in_child("make", path, n_groups, args.frame)
                figures = in_child("memory", path, scratch / "out_memory")
                report["memory"].append(figures)
                print(f"memory: {json.dumps(figures)}", flush=True)
                if not args.keep:
                    path.unlink()
                    shutil.rmtree(scratch / "out_memory")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"kept {scratch}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _has_default_model() -> bool:
    from mlsim_live.paths import has_default_model  # light: no model is loaded

    return has_default_model()


if __name__ == "__main__":
    sys.exit(main())
