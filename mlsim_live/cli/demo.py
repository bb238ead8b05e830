"""`mlsim-live demo`: live SIM on Micro-Manager's DemoCamera with SIMULATED SIM optics."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mlsim_live.cli._options import (
    add_engine_option,
    add_live_outputs,
    add_method_option,
    add_stages_option,
)
from mlsim_live.constants import POLICIES

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="live SIM demo on Micro-Manager's simulated camera (SIMULATED optics)",
        description="Runs a real Micro-Manager core headless (pymmcore + the DemoCamera of "
        "mm-test-adapters) through Pycro-Manager's Python backend. The SIM config group of the "
        "demo configuration sets the pattern per event; SIMULATED SIM optics turn each camera "
        "frame into a physically simulated raw frame of that pattern. Frames are reconstructed "
        "live, shown, and saved as in a real acquisition: the raw NDTiff dataset DIR/<name>_N, "
        "DIR/<name>_N_sr.tif and DIR/<name>_N_summary.json. With --engine pymmcore-plus a "
        "pymmcore-plus core runs a useq MDA whose channels are the 9 SIM presets instead, and "
        "the raw frames go to DIR/<name>_N.ome.tif.",
    )
    add_engine_option(p)
    p.add_argument(
        "--groups",
        type=int,
        help="stop after N SIM groups (default: until the viewer closes; 20 when headless)",
    )
    p.add_argument("--headless", action="store_true", help="no viewer")
    p.add_argument(
        "--out", type=Path, default=Path("mlsim_demo"), help="output folder (default mlsim_demo)"
    )
    p.add_argument("--name", default="demo", help="dataset name prefix (default demo)")
    p.add_argument("--model", type=Path, help="ONNX model (default: the shipped model)")
    add_method_option(p)
    add_stages_option(p)
    p.add_argument("--size", type=int, default=512, help="camera frame size N (default 512)")
    p.add_argument(
        "--policy",
        choices=POLICIES,
        default="latest",
        help="latest: drop old groups when reconstruction is behind (default); all: every group",
    )
    p.add_argument("--exposure-ms", type=float, default=10.0, help="exposure (default 10 ms)")
    p.add_argument(
        "--interval-s", type=float, default=0.0, help="time between groups (default 0: no wait)"
    )
    p.add_argument("--sample", default="mixture", help="simulated sample kind (default mixture)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated sample and noise")
    add_live_outputs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; print where the outputs are and the summary figures."""
    from mlsim_live.cli._options import interrupted_exit, live_method_and_model
    from mlsim_live.cli._summary import print_summary
    from mlsim_live.cli._viewer import run_acquisition_with_viewer, show_viewer
    from mlsim_live.errors import MLSimError
    from mlsim_live.live.demo import HEADLESS_DEFAULT_GROUPS, DemoRun, DemoSettings
    from mlsim_live.sim import SAMPLE_KINDS

    if args.sample not in SAMPLE_KINDS:
        raise MLSimError(f"--sample {args.sample!r}; expected one of {', '.join(SAMPLE_KINDS)}")
    method, model = live_method_and_model(args)
    show = show_viewer(args)
    groups = args.groups
    if groups is None and not show:
        groups = HEADLESS_DEFAULT_GROUPS
    settings = DemoSettings(
        groups=groups,
        size=args.size,
        exposure_ms=args.exposure_ms,
        interval_s=args.interval_s,
        out=args.out,
        name=args.name,
        method=method,
        model=model,
        policy=args.policy,
        sample=args.sample,
        seed=args.seed,
        trust=args.trust,
        stages=args.stages,
    )
    if args.engine == "pymmcore-plus":
        from mlsim_live.live.plus_demo import PlusDemoRun

        demo: DemoRun = PlusDemoRun(settings)
    else:
        demo = DemoRun(settings)
    if show:
        summary = run_acquisition_with_viewer(demo, args.screenshot, args.overwrite)
    else:
        summary = demo.run()
    print_summary(summary)
    return interrupted_exit(summary, "demo")
