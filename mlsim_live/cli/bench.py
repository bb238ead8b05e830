"""`mlsim-live bench`: latency of every available reconstruction backend, side by side."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mlsim_live.constants import LEARNED_METHODS, METHODS

log = logging.getLogger(__name__)

BACKEND_HELP = (
    "torch-cpu, torch-cuda, ort-cpu, ort-cuda, ort-cuda-fp16, ort-tensorrt-fp16, wiener, "
    "wiener-estimate, trust (the trust map, estimate reused)"
)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _stages(text: str) -> tuple[int, ...]:
    parts = _csv(text)
    if not parts or any(part not in ("1", "2") for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected 1, 2 or a list such as 1,2")
    return tuple(int(part) for part in parts)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    p = sub.add_parser(
        "bench",
        help="latency of every available backend on one simulated group",
        description="Times one simulated SIM group (9 x SIZE x SIZE) on every backend that is "
        "available here: PyTorch eager, ONNX Runtime CPU / CUDA fp32 / CUDA fp16 / TensorRT "
        "fp16, and the Wiener reconstruction, for the default model and the 'paper' "
        "architecture (random weights). Prints a table (p50/p95 latency, groups/s, peak "
        "memory, speed-up over PyTorch eager) and optionally writes it as JSON.",
    )
    p.add_argument("--size", type=int, default=512, help="frame size in pixels (default 512)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per backend (default 10)")
    p.add_argument(
        "--max-time-s",
        type=float,
        default=60.0,
        help="stop a backend after this many seconds once 3 runs are done (default 60)",
    )
    p.add_argument(
        "--models",
        type=_csv,
        default=("default", "paper"),
        help="comma-separated: default, a preset name (paper, fast, ...; random weights, "
        "needs torch) or .onnx paths (default: default,paper)",
    )
    p.add_argument(
        "--backends",
        type=_csv,
        default=None,
        help=f"comma-separated subset of: {BACKEND_HELP} (default: all available)",
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the input and weights")
    p.add_argument(
        "--precisions",
        type=_csv,
        default=("fp32", "bf16", "int8"),
        help="comma-separated precisions of the ONNX Runtime CPU rows (default: fp32,bf16,int8; "
        "one that this CPU or ONNX Runtime cannot run is listed as skipped with the reason)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8", "auto"),
        default="auto",
        help="precision of the learned model for --live (default auto)",
    )
    p.add_argument(
        "--parity",
        action="store_true",
        help="also report the max abs difference between backends' outputs (same weights)",
    )
    live = p.add_argument_group(
        "live path",
        "--live times the live path instead: simulated frames are fed to the Pycro-Manager hook "
        "at --frame-ms per frame; it reports the time inside the hook, the end-to-end latency "
        "against the bare reconstruction time, and dropped groups",
    )
    live.add_argument("--live", action="store_true", help="benchmark the live path")
    live.add_argument(
        "--method",
        default="rcan",
        choices=METHODS,
        help="reconstruction method for --live (default rcan, the end-to-end model)",
    )
    live.add_argument("--model", type=Path, help="ONNX model for --live (default: shipped model)")
    live.add_argument("--groups", type=int, default=30, help="groups for --live (default 30)")
    live.add_argument("--frame-ms", type=float, default=10.0, help="camera frame period")
    live.add_argument("--policy", default="latest", choices=("latest", "all"))
    live.add_argument(
        "--stages",
        type=_stages,
        default=None,
        help="worker modes for --live, one run each, e.g. 1,2: 1 = one thread, 2 = the next "
        "group prepared (Wiener prior) beside inference (default: the live default, 2 when the "
        "method has the stages)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write JSON."""
    from mlsim_live.bench import ALL_BACKENDS, BenchConfig, format_table, run_bench
    from mlsim_live.io.atomic import check_writable, write_json_atomic

    if args.json is not None:
        check_writable(args.json, args.overwrite)  # fail before minutes of timing, not after
    if args.live:
        return _run_live(args)
    config = BenchConfig(
        size=args.size,
        repeats=args.repeats,
        max_time_s=args.max_time_s,
        models=tuple(args.models),
        backends=tuple(args.backends) if args.backends else ALL_BACKENDS,
        threads=args.threads,
        seed=args.seed,
        parity=args.parity,
        precisions=tuple(args.precisions),
    )
    report = run_bench(config)
    print(format_table(report))
    if args.json is not None:
        write_json_atomic(args.json, report, overwrite=args.overwrite)
        log.info("wrote %s", args.json)
    return 0


def _run_live(args: argparse.Namespace) -> int:
    """The live-path benchmark: hook time, latency over bare reconstruction, drops."""
    import json

    from mlsim_live.io.atomic import write_json_atomic
    from mlsim_live.live.benchmark import run_benchmark
    from mlsim_live.recon import make_stream_reconstructor

    model = args.model if args.method in LEARNED_METHODS else None
    reconstructor = make_stream_reconstructor(args.method, model=model, precision=args.precision)
    report = run_benchmark(
        reconstructor,
        args.size,
        args.groups,
        args.frame_ms,
        args.policy,
        seed=args.seed,
        stages=args.stages or (None,),
    )
    print(json.dumps(report, indent=2))
    if args.json is not None:
        write_json_atomic(args.json, report, overwrite=args.overwrite)
    return 0
