"""`mlsim-live live`: live SIM super-resolution during an acquisition on a real microscope."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from mlsim_live.cli._options import (
    add_engine_option,
    add_live_outputs,
    add_method_option,
    add_stages_option,
)
from mlsim_live.constants import POLICIES

log = logging.getLogger(__name__)

DEFAULT_JAVA_PORT = 4827


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``live`` subcommand."""
    p = sub.add_parser(
        "live",
        help="live SIM reconstruction during a Micro-Manager acquisition (real microscope)",
        description="Acquires a SIM time series through Pycro-Manager and reconstructs each "
        "3-angle x 3-phase group live. Connect either to a running Micro-Manager (--java, with "
        "the Pycro-Manager server enabled in Tools > Options) or start a headless core "
        "(--mm-app-path DIR --config CFG). The pattern is set per frame through a config "
        "group whose presets are A0P0 A0P1 A0P2 A1P0 .. A2P2 (--pattern-group NAME), or the "
        "pattern device runs its own 9-step sequence triggered by the camera "
        "(--hardware-sequencing; the events then carry only axes). Writes the raw NDTiff "
        "dataset OUT/<name>_N, OUT/<name>_N_sr.tif and OUT/<name>_N_summary.json. With "
        "--engine pymmcore-plus a pymmcore-plus core (--mm-app-path, --config) runs a useq MDA "
        "whose channels are the presets of --pattern-group, and the raw frames go to "
        "OUT/<name>_N.ome.tif.",
    )
    add_engine_option(p)
    conn = p.add_mutually_exclusive_group(required=True)
    conn.add_argument(
        "--java", action="store_true", help="attach to a running Micro-Manager (Java backend)"
    )
    conn.add_argument(
        "--mm-app-path",
        type=Path,
        help="Micro-Manager installation (device adapters) for a headless Python-backend core",
    )
    p.add_argument("--config", type=Path, help="hardware configuration (.cfg) for --mm-app-path")
    p.add_argument(
        "--port", type=int, default=DEFAULT_JAVA_PORT, help="Pycro-Manager server port (--java)"
    )
    pattern = p.add_mutually_exclusive_group(required=True)
    pattern.add_argument(
        "--pattern-group", metavar="NAME", help="config group with presets A0P0..A2P2"
    )
    pattern.add_argument(
        "--hardware-sequencing",
        action="store_true",
        help="the pattern device sequences itself, triggered by the camera",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--name", default="sim", help="dataset name prefix (default sim)")
    p.add_argument("--exposure-ms", type=float, help="exposure per raw frame (default: as set)")
    p.add_argument(
        "--interval-s", type=float, default=0.0, help="time between groups (default 0: no wait)"
    )
    p.add_argument(
        "--time-points",
        type=int,
        help="SIM groups to acquire (default: until the viewer closes, or Ctrl+C)",
    )
    p.add_argument("--model", type=Path, help="ONNX model (default: the shipped model)")
    add_method_option(p)
    add_stages_option(p)
    p.add_argument(
        "--policy",
        choices=POLICIES,
        default="latest",
        help="latest: drop old groups when reconstruction is behind (default); all: every group",
    )
    p.add_argument("--pixel-size-um", type=float, help="override Micro-Manager's pixel size")
    p.add_argument("--na", type=float, help="objective NA (with --wavelength-nm: known optics)")
    p.add_argument("--wavelength-nm", type=float, help="emission wavelength")
    p.add_argument("--headless", action="store_true", help="no viewer")
    add_live_outputs(p)
    p.set_defaults(func=run)


def check_engine_options(args: argparse.Namespace) -> None:
    """Refuse what ``--engine pymmcore-plus`` cannot do, before anything is touched."""
    from mlsim_live.errors import MLSimError

    if args.engine != "pymmcore-plus":
        return
    if args.java:
        raise MLSimError(
            "--engine pymmcore-plus runs its own core; expected --mm-app-path DIR --config CFG "
            "instead of --java"
        )
    if args.hardware_sequencing:
        raise MLSimError(
            "--engine pymmcore-plus takes the pattern from a config group used as channels; "
            "expected --pattern-group NAME (presets A0P0..A2P2) instead of --hardware-sequencing"
        )


def connect(args: argparse.Namespace) -> Any:
    """The Micro-Manager core: attached over Pycro-Manager's bridge, or started headless (on
    Pycro-Manager's Python backend, or a ``CMMCorePlus`` with ``--engine pymmcore-plus``)."""
    from mlsim_live.errors import MLSimError

    if args.java:
        from pycromanager import Core

        try:
            return Core(port=args.port)
        except Exception as exc:
            raise MLSimError(
                f"no Micro-Manager answered on port {args.port} ({exc}); expected Micro-Manager "
                "running with the Pycro-Manager server enabled"
            ) from exc
    if args.config is None:
        raise MLSimError("--mm-app-path needs --config CFG, the hardware configuration to load")
    if not args.mm_app_path.is_dir():
        raise MLSimError(f"--mm-app-path {args.mm_app_path} is not a folder")
    if args.engine == "pymmcore-plus":
        from mlsim_live.live.plus_acquire import start_plus_core

        return start_plus_core(args.mm_app_path, args.config)
    from mlsim_live.live.demo import start_python_backend

    return start_python_backend(args.mm_app_path, args.config)


def known_optics(args: argparse.Namespace, core: Any) -> Any:
    """Optics by the one rule (`mlsim_live.sim.optics.resolve_optics`): NA and wavelength from
    the options, the pixel size from the option or Micro-Manager's calibration."""
    from mlsim_live.errors import MLSimError
    from mlsim_live.sim.optics import OpticsValues, resolve_optics

    options = OpticsValues(args.na, args.wavelength_nm, args.pixel_size_um)
    if args.na is None and args.wavelength_nm is None:
        return None
    calibrated = float(core.get_pixel_size_um())
    if args.pixel_size_um is None and not calibrated > 0:
        raise MLSimError(
            "Micro-Manager has no pixel size calibration; pass --pixel-size-um with --na"
        )
    return resolve_optics(options, OpticsValues(pixel_size_um=calibrated or None))


def _check_options(args: argparse.Namespace) -> None:
    """Refuse inconsistent options (one line) before anything is connected or changed."""
    from mlsim_live.errors import MLSimError

    if args.config is not None and args.java:
        raise MLSimError("--config is for --mm-app-path; with --java Micro-Manager has its own")
    if args.time_points is not None and args.time_points < 1:
        raise MLSimError(f"--time-points {args.time_points}; expected at least 1")
    check_engine_options(args)


def run(args: argparse.Namespace) -> int:
    """Connect, acquire and reconstruct; print the outputs and figures."""
    from mlsim_live.cli._options import live_method_and_model
    from mlsim_live.cli._summary import print_summary
    from mlsim_live.cli._viewer import run_acquisition_with_viewer, show_viewer
    from mlsim_live.live.acquire import (
        AcquisitionSettings,
        SIMAcquisition,
        check_pattern_group,
        next_dataset_name,
    )
    from mlsim_live.live.processor import SIMProcessor
    from mlsim_live.sim.optics import OpticsValues, resolve_optics

    _check_options(args)
    # Every option is checked before anything on the microscope is changed.
    settings = AcquisitionSettings(
        groups=args.time_points,
        exposure_ms=args.exposure_ms,
        interval_s=args.interval_s,
        out=args.out,
        name=args.name,
        pattern_group=args.pattern_group,
    )
    method, model = live_method_and_model(args)
    # pairs and ranges, before the microscope is touched (a live recording brings no NA)
    resolve_optics(OpticsValues(args.na, args.wavelength_nm, args.pixel_size_um))
    show = show_viewer(args)
    mm_core = connect(args)
    core = mm_core  # Pycro-Manager's snake_case names, which the checks below use
    if args.engine == "pymmcore-plus":
        from mlsim_live.live.plus_acquire import SnakeCaseCore

        core = SnakeCaseCore(mm_core)
    optics = known_optics(args, core)
    if args.pattern_group:
        check_pattern_group(core, args.pattern_group)
        log.info("pattern control: config group %s (presets A0P0..A2P2)", args.pattern_group)
    else:
        log.info("pattern control: hardware sequencing (events carry only axes)")
    if settings.exposure_ms is not None:
        core.set_exposure(float(settings.exposure_ms))
    args.out.mkdir(parents=True, exist_ok=True)
    name = next_dataset_name(args.out, args.name)
    frame_shape = (int(core.get_image_height()), int(core.get_image_width()))
    processor = SIMProcessor(
        model=model,
        method=method,
        policy=args.policy,
        out=args.out,
        name=name,
        pixel_size_um=args.pixel_size_um,
        optics=optics,
        frame_shape=frame_shape,
        trust=args.trust,
        stages=args.stages,
    )
    acquisition: Any
    if args.engine == "pymmcore-plus":
        from mlsim_live.live.plus_acquire import PlusAcquisition

        acquisition = PlusAcquisition(mm_core, processor, settings, dataset_name=name)
    else:
        acquisition = SIMAcquisition(
            processor,
            settings,
            dataset_name=name,
            acquisition_kwargs={"port": args.port} if args.java else None,
        )
    if args.time_points is None and not show:
        log.info("acquiring until Ctrl+C")
    if show:
        summary = run_acquisition_with_viewer(acquisition, args.screenshot, args.overwrite)
    else:
        summary = acquisition.run()
    print_summary(summary)
    return 0
