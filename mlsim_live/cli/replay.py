"""`mlsim-live replay`: push recorded raw SIM data (TIFF or NDTiff) through the live pipeline."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlsim_live.cli._options import add_method_option, add_stages_option
from mlsim_live.constants import ORDERS

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``replay`` subcommand."""
    p = sub.add_parser(
        "replay",
        help="replay a recorded stack or NDTiff dataset through the live pipeline",
        description="Streams recorded raw frames (a plain multi-page TIFF, an ImageJ hyperstack, "
        "an OME-TIFF, or a Pycro-Manager NDTiff dataset folder as written by `demo` and `live`) "
        "through the same grouper, reconstruction worker, viewer and writer as a live "
        "acquisition, at --fps raw frames per second or as fast as possible. Writes "
        "DIR/<stem>_sr.tif and DIR/<stem>_summary.json. Files are streamed: memory stays flat "
        "whatever their size.",
    )
    p.add_argument(
        "input", type=Path, metavar="INPUT", help="a TIFF file or an NDTiff dataset folder"
    )
    p.add_argument(
        "--fps",
        type=float,
        metavar="F",
        help="raw frames per second (default: as fast as possible)",
    )
    p.add_argument("--headless", action="store_true", help="no viewer")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("mlsim_replay"),
        metavar="DIR",
        help="output folder (default mlsim_replay)",
    )
    p.add_argument("--name", help="output stem (default: the input's name)")
    add_method_option(p)
    add_stages_option(p)
    p.add_argument("--model", type=Path, metavar="PATH", help="ONNX model for --method rcan")
    p.add_argument(
        "--order",
        choices=ORDERS,
        default="angle-major",
        help="frame order of plain TIFF stacks: a0p0 a0p1 ... (default) or p0a0 p0a1 ...",
    )
    p.add_argument(
        "--angle-axis",
        metavar="AXIS",
        help="axis holding the 3 angles: a TIFF axis letter (e.g. C) or an NDTiff axis name "
        "(e.g. channel); with --phase-axis",
    )
    p.add_argument(
        "--phase-axis",
        metavar="AXIS",
        help="axis holding the 3 phases: a TIFF axis letter (e.g. Z) or an NDTiff axis name "
        "(e.g. z); with --angle-axis",
    )
    p.add_argument(
        "--policy",
        choices=("all", "latest"),
        help="all: reconstruct every group (default without --fps); latest: drop old groups "
        "when reconstruction is behind, as live (default with --fps)",
    )
    p.add_argument(
        "--pixel-size-um", type=float, help="camera pixel in the sample plane (default: recorded)"
    )
    p.add_argument("--na", type=float, help="objective NA (with --wavelength-nm: known optics)")
    p.add_argument("--wavelength-nm", type=float, help="emission wavelength")
    p.add_argument("--offset", type=float, metavar="ADU", help="camera offset (default: estimated)")
    p.add_argument("--screenshot", type=Path, help="save a picture of the viewer at the end")
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs and screenshot"
    )
    p.add_argument(
        "--trust",
        action="store_true",
        help="also map every reconstruction's trust (on its own low-priority thread) into "
        "<name>_trust.tif, .png and .json beside <name>_sr.tif",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay the input; print the outputs and the throughput."""
    from mlsim_live.cli._options import check_optics, interrupted_exit, live_method_and_model
    from mlsim_live.cli._summary import print_summary
    from mlsim_live.cli._viewer import run_replay_with_viewer, show_viewer
    from mlsim_live.replay import ReplayRun, ReplaySettings

    method, model = live_method_and_model(args)
    check_optics(args)
    show = show_viewer(args)
    settings = ReplaySettings(
        input=args.input,
        out=args.out,
        name=args.name,
        fps=args.fps,
        policy=args.policy,
        method=method,
        model=model,
        order=args.order,
        angle_axis=args.angle_axis,
        phase_axis=args.phase_axis,
        pixel_size_um=args.pixel_size_um,
        na=args.na,
        wavelength_nm=args.wavelength_nm,
        offset_adu=args.offset,
        overwrite=args.overwrite,
        trust=args.trust,
        stages=args.stages,
    )
    replay_run = ReplayRun(settings)
    summary: Mapping[str, Any]
    if show:
        summary = run_replay_with_viewer(replay_run, args.screenshot, args.overwrite)
    else:
        summary = replay_run.run()
    print_summary(summary, kind="replay")
    return interrupted_exit(summary, "replay")
