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


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB (Linux /proc, ru_maxrss)."""
    current = float("nan")
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak_kb / 1024 if sys.platform != "darwin" else peak_kb / 1024**2
    return current, peak


def child_memory(path: str, out: str) -> None:
    """In a fresh process: replay ``path`` with widefield, print JSON with the memory figures."""
    # imported first, so that the baseline holds the libraries and the peak adds the replay
    import tifffile  # noqa: F401

    import mlsim_live.recon.widefield
    import mlsim_live.replay  # noqa: F401

    before_mb, _ = rss_mb()
    started = time.perf_counter()
    summary = replay_file(Path(path), Path(out), "widefield", None)
    wall_s = time.perf_counter() - started
    _, peak_mb = rss_mb()
    print(
        json.dumps(
            {
                "file": path,
                "file_gb": round(os.path.getsize(path) / 1e9, 3),
                "sr_file_gb": round(os.path.getsize(summary["sr_file"]) / 1e9, 3),
                "rss_after_imports_mb": round(before_mb, 1),
                "peak_rss_mb": round(peak_mb, 1),
                "wall_s": round(wall_s, 2),
                "raw_frames": summary["raw_frames"],
                "groups_reconstructed": summary["groups_reconstructed"],
                "raw_frames_per_s": summary["raw_frames_per_s"],
                "groups_per_s": summary["groups_per_s"],
            }
        )
    )


def measure_memory(path: Path, out: Path) -> dict:
    """Run `child_memory` in a fresh interpreter so that its peak RSS is its own."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(path), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="Example: python scripts/replay_memory.py --size-gb 3 --model MODEL.onnx "
        "--json replay.json. The stacks are simulated SIM groups, repeated; every file made "
        "(raw stacks, reconstructions) is deleted at the end unless --keep.",
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
    parser.add_argument("--child", nargs=2, metavar=("FILE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_memory(*args.child)
        return 0

    from mlsim_live.paths import has_default_model

    scratch = Path(tempfile.mkdtemp(prefix="mlsim_replay_", dir=args.scratch))
    group_bytes = GROUP_FRAMES * args.frame * args.frame * 2
    report: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "frame": [args.frame, args.frame],
        "throughput": {},
        "memory": [],
    }
    try:
        small = make_stack(scratch / "throughput.tif", args.throughput_groups, args.frame)
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            if method == "rcan" and not (args.model or has_default_model()):
                print("rcan: skipped (no --model and no default model installed)")
                continue
            model = args.model if method == "rcan" else None
            summary = replay_file(small, scratch / f"out_{method}", method, model)
            figures = {
                "groups": summary["groups_reconstructed"],
                "raw_frames_per_s": summary["raw_frames_per_s"],
                "groups_per_s": summary["groups_per_s"],
                "reconstruct_ms_p50": summary["reconstruct_ms"]["p50"],
                "model": summary["model"],
                "provider": summary["provider"],
            }
            report["throughput"][method] = figures
            print(f"throughput {method}: {json.dumps(figures)}")
            shutil.rmtree(scratch / f"out_{method}")
        if not args.skip_memory:
            for size_gb in (args.small_gb, args.size_gb):
                n_groups = max(1, int(size_gb * 1e9 / group_bytes))
                path = make_stack(scratch / f"raw_{size_gb:g}gb.tif", n_groups, args.frame)
                figures = measure_memory(path, scratch / "out_memory")
                report["memory"].append(figures)
                print(f"memory: {json.dumps(figures)}")
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


if __name__ == "__main__":
    sys.exit(main())
