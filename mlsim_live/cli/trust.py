"""`mlsim-live trust`: the trust map of any reconstruction against its raw stack."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mlsim_live.constants import ORDERS

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``trust`` subcommand."""
    p = sub.add_parser(
        "trust",
        help="trust map of a reconstruction against its raw stack",
        description="Re-image a reconstruction (from this tool, fairSIM, ML-SIM or any other; "
        "2N x 2M for one group, T x 2N x 2M for T groups) through the SIM forward model "
        "estimated from the raw stack (T groups of 9 frames) and compare it with the measured "
        "frames, normalized by the camera noise fitted from the data; also measure the "
        "reconstruction's energy beyond the SIM passband. Writes DIR/<SR stem>_trust.tif "
        "(float32 in [0, 1] on the reconstruction's grid; 1 = consistent with the raw data, "
        "below 0.5 = flagged), DIR/<SR stem>_trust.png (the first group: reconstruction in "
        "grey, flagged pixels in colour) and DIR/<SR stem>_trust.json (per-group figures: "
        "flagged fraction, median chi). Existing outputs are kept unless --overwrite.",
    )
    p.add_argument("raw", type=Path, metavar="RAW", help="raw SIM stack (TIFF, 9*T frames)")
    p.add_argument("sr", type=Path, metavar="SR", help="its reconstruction (TIFF, 2x grid)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--order",
        choices=ORDERS,
        default="angle-major",
        help="frame order of a plain raw stack: a0p0 a0p1 ... (default) or p0a0 p0a1 ...",
    )
    p.add_argument("--angle-axis", metavar="AXIS", help="axis of the 3 angles, e.g. C")
    p.add_argument("--phase-axis", metavar="AXIS", help="axis of the 3 phases, e.g. Z")
    p.add_argument("--na", type=float, help="numerical aperture (default: file metadata)")
    p.add_argument("--wavelength-nm", type=float, help="emission wavelength (default: metadata)")
    p.add_argument(
        "--pixel-size-um", type=float, help="camera pixel in the sample plane (default: metadata)"
    )
    p.add_argument("--offset", type=float, metavar="ADU", help="camera offset (default: estimated)")
    p.add_argument(
        "--resolution",
        choices=("sim", "widefield"),
        default="sim",
        help="what the reconstruction claims to show: the sample through the SIM OTF "
        "(default; any SIM reconstruction) or through the widefield OTF (a widefield image)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Map every group of RAW against SR; 0 on success (bad input raises `MLSimError`)."""
    from mlsim_live.cli._options import check_optics
    from mlsim_live.errors import MLSimError
    from mlsim_live.io import read_raw_stack
    from mlsim_live.io.atomic import check_folder_writable, remove_orphans
    from mlsim_live.io.tiff import output_stem
    from mlsim_live.sim.optics import OpticsValues, resolve_optics
    from mlsim_live.trust import TrustSettings
    from mlsim_live.trust.output import (
        ReconstructionFile,
        TrustPaths,
        check_match,
        check_outputs,
        trust_for_stack,
    )

    check_optics(args)
    axes = (args.angle_axis, args.phase_axis)
    if (axes[0] is None) != (axes[1] is None):
        raise MLSimError(
            f"--angle-axis {axes[0]} --phase-axis {axes[1]}: expected both options or neither"
        )
    for name, path in (("RAW", args.raw), ("SR", args.sr)):
        if not path.is_file():
            raise MLSimError(f"{name} {path}: no such file; expected a TIFF")
    if args.out.exists() and not args.out.is_dir():
        raise MLSimError(f"--out {args.out} is a file; expected a folder")
    paths = TrustPaths.beside(args.out, output_stem(args.sr))
    if args.out.is_dir():
        check_outputs(paths, args.overwrite)
    stack = read_raw_stack(
        args.raw, args.order, angle_axis=args.angle_axis, phase_axis=args.phase_axis
    )
    with stack:
        optics = resolve_optics(
            OpticsValues(args.na, args.wavelength_nm, args.pixel_size_um),
            OpticsValues(stack.na, stack.wavelength_nm, stack.pixel_size_um),
            where=str(args.raw),
        )
        if optics is None:
            log.warning(
                "optics unknown (give --na, --wavelength-nm and --pixel-size-um): the OTF "
                "cutoff is estimated from the data"
            )
        sr = ReconstructionFile.open(args.sr)
        check_match(stack, sr)  # bad input says so before the output folder appears
        args.out.mkdir(parents=True, exist_ok=True)
        check_folder_writable(args.out)
        remove_orphans(args.out, [p.name for p in paths.all()])
        pixel = stack.pixel_size_um if args.pixel_size_um is None else args.pixel_size_um
        doc = trust_for_stack(
            stack,
            sr,
            paths,
            optics=optics,
            offset_adu=args.offset,
            settings=TrustSettings(resolution=args.resolution),
            pixel_size_um=pixel / 2 if pixel is not None else None,
            overwrite=args.overwrite,
        )
    summary = doc["summary"]
    if not args.quiet:
        print(
            f"{paths.tif}: flagged fraction {summary['flagged_fraction']['p50']:.3f} "
            f"(p95 {summary['flagged_fraction']['p95']:.3f}), median chi "
            f"{summary['chi_median']['p50']:.2f} over {summary['groups']} group(s)"
        )
    return 0
