"""`mlsim-live reconstruct`: offline reconstruction of raw SIM files and folders."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mlsim_live.constants import METHODS, ORDERS

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reconstruct`` subcommand."""
    p = sub.add_parser(
        "reconstruct",
        help="reconstruct raw SIM files or folders offline",
        description="Reconstruct raw SIM stacks (TIFF with 9*T frames, ImageJ hyperstacks, "
        "OME-TIFF) into DIR/<stem>_sr.tif (2D for one group, T x 2N x 2M for T groups) and "
        "DIR/<stem>_sr.json (method, model, provider, estimated parameters). Folders are "
        "searched recursively for *.tif/*.tiff; their sub-folders are kept under DIR. Existing "
        "outputs are skipped unless --overwrite. A bad file does not stop the run. --na and "
        "--wavelength-nm go together unless the file's metadata supplies the other. Exit "
        "code: 0 when every file was reconstructed; 1 when any file failed with an "
        "unexpected error (a bug: please report it); otherwise 2 when any file was bad input, "
        "failed to write, or was skipped.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="TIFF files or folders")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--method",
        choices=METHODS,
        help="wiener-rcan (default when its model is installed), rcan, wiener or widefield",
    )
    p.add_argument(
        "--model",
        type=Path,
        metavar="PATH",
        help="ONNX model for a learned method (wiener-rcan, rcan)",
    )
    p.add_argument(
        "--order",
        choices=ORDERS,
        default="angle-major",
        help="frame order of plain stacks: a0p0 a0p1 ... (default) or p0a0 p0a1 ...",
    )
    p.add_argument(
        "--angle-axis",
        metavar="AXIS",
        help="axis holding the 3 angles in ImageJ/OME files, e.g. C (with --phase-axis)",
    )
    p.add_argument(
        "--phase-axis",
        metavar="AXIS",
        help="axis holding the 3 phases in ImageJ/OME files, e.g. Z (with --angle-axis)",
    )
    p.add_argument("--na", type=float, help="numerical aperture (default: file metadata)")
    p.add_argument("--wavelength-nm", type=float, help="emission wavelength (default: metadata)")
    p.add_argument(
        "--pixel-size-um", type=float, help="camera pixel in the sample plane (default: metadata)"
    )
    p.add_argument("--offset", type=float, metavar="ADU", help="camera offset (default: estimated)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--trust",
        action="store_true",
        help="also write each reconstruction's trust map beside it: <stem>_trust.tif (1 = "
        "consistent with the raw data, below 0.5 = flagged), <stem>_trust.png, <stem>_trust.json",
    )
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="spread files and time points over a Dask cluster: a scheduler address "
        "(tcp://host:8786; workers must see the input paths) or 'local' (2 worker processes "
        "on 127.0.0.1)",
    )
    p.add_argument(
        "--dask-dashboard",
        metavar="HOST:PORT",
        help="with --dask local: serve the Dask dashboard there, e.g. 127.0.0.1:8787 "
        "(default: no dashboard)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Reconstruct every input; return 0, 1 if any file failed unexpectedly, else 2 if any
    file failed or was skipped."""
    from mlsim_live.batch import (
        LocalExecutor,
        ReadOptions,
        ReconConfig,
        cached_reconstructor,
        dask_executor,
        plan_jobs,
        reconstruct_files,
    )
    from mlsim_live.cli._options import check_optics, method_and_model
    from mlsim_live.errors import MLSimError

    method, model = method_and_model(args)
    check_optics(args)
    if args.out.exists() and not args.out.is_dir():
        raise MLSimError(f"--out {args.out} is a file; expected a folder")
    axes = (args.angle_axis, args.phase_axis)
    if (axes[0] is None) != (axes[1] is None):
        raise MLSimError(
            f"--angle-axis {axes[0]} --phase-axis {axes[1]}: expected both options or neither"
        )
    read = ReadOptions(order=args.order, angle_axis=axes[0], phase_axis=axes[1])
    config = ReconConfig(
        method=method,
        model=str(model) if model is not None else None,
        na=args.na,
        wavelength_nm=args.wavelength_nm,
        pixel_size_um=args.pixel_size_um,
        offset_adu=args.offset,
    )
    # Build the reconstructor once up front: a bad model fails here in one line, not per file.
    cached_reconstructor(config, None)
    jobs, failed = plan_jobs(args.inputs, args.out)
    progress = False if args.quiet else None
    if not jobs:
        outcomes = failed
    elif args.dask:
        with dask_executor(args.dask, getattr(args, "dask_dashboard", None)) as executor:
            outcomes = reconstruct_files(
                jobs,
                read,
                config,
                executor=executor,
                overwrite=args.overwrite,
                progress=progress,
                trust=args.trust,
            )
        outcomes += failed
    else:
        outcomes = reconstruct_files(
            jobs,
            read,
            config,
            executor=LocalExecutor(),
            overwrite=args.overwrite,
            progress=progress,
            trust=args.trust,
        )
        outcomes += failed
    if getattr(args, "method_fallback", False) and any(o.status == "done" for o in outcomes):
        log.warning("no default model installed; used --method wiener")
    return _report(outcomes)


def _report(outcomes: list) -> int:
    """Print failures and skips, one line each; return the exit code."""
    from mlsim_live.errors import MLSimError

    bad = [o for o in outcomes if o.status != "done"]
    if len(outcomes) == 1 and bad and not bad[0].unexpected:
        raise MLSimError(bad[0].message)  # the CLI prints the one line and exits 2
    for o in bad:
        kind = "skipped" if o.status == "skipped" else "error"
        print(f"mlsim-live reconstruct: {kind}: {o.message}", file=sys.stderr)
    if len(outcomes) > 1:
        n_done = sum(o.status == "done" for o in outcomes)
        n_skipped = sum(o.status == "skipped" for o in outcomes)
        n_failed = sum(o.status == "failed" for o in outcomes)
        log.info(
            "%d of %d files reconstructed, %d skipped, %d failed",
            n_done,
            len(outcomes),
            n_skipped,
            n_failed,
        )
    if any(o.unexpected for o in bad):
        return 1
    return 2 if bad else 0
