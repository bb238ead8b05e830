"""`mlsim-live simulate`: write physically simulated SIM groups with their ground truth."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` subcommand."""
    p = sub.add_parser(
        "simulate",
        help="write simulated SIM raw groups, 2x ground truth and parameters",
        description="Physically simulated 3-angle x 3-phase SIM groups. Each group i writes "
        "DIR/sim_<i>_raw.tif (9 x N x N uint16, angle-major), DIR/sim_<i>_gt.tif "
        "(2N x 2N float32) and DIR/sim_<i>.json (all physical parameters), the JSON last. "
        "Physics are drawn at random over realistic ranges unless given. Nothing is written "
        "when any target exists (without --overwrite); a group whose files cannot all be "
        "written leaves none of them.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--n", type=int, default=10, help="number of groups (default 10)")
    p.add_argument("--size", type=int, default=256, help="camera frame size N (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--sample",
        default="mixture",
        help="filaments, beads, vesicles, natural or mixture (default)",
    )
    p.add_argument("--na", type=float, help="numerical aperture (default: random 1.0-1.5)")
    p.add_argument("--wavelength-nm", type=float, help="emission wavelength (default: random)")
    p.add_argument("--pixel-size-um", type=float, help="camera pixel in the sample plane")
    p.add_argument("--photons", type=float, help="peak signal, photons per pixel per frame")
    p.add_argument("--modulation", type=float, help="pattern modulation depth 0-1")
    p.add_argument(
        "--pattern-fraction",
        type=float,
        help="pattern frequency as a fraction of the widefield cutoff",
    )
    p.add_argument("--camera", choices=("scmos", "emccd", "ideal"), help="camera model")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=run)


def group_paths(stem: Path) -> tuple[Path, Path, Path]:
    """The raw TIFF, ground-truth TIFF and JSON of one simulated group."""
    return Path(f"{stem}_raw.tif"), Path(f"{stem}_gt.tif"), Path(f"{stem}.json")


def run(args: argparse.Namespace) -> int:
    """Simulate and write ``args.n`` groups."""
    from dataclasses import replace

    import numpy as np
    from tqdm import tqdm

    from mlsim_live.errors import MLSimError
    from mlsim_live.io import write_json_atomic, write_tiff_atomic
    from mlsim_live.io.atomic import check_writable
    from mlsim_live.sim import SAMPLE_KINDS, Camera, Optics, random_params, simulate_group

    if args.n < 1 or args.size < 16:
        raise MLSimError(f"--n {args.n} / --size {args.size}: expected n >= 1 and size >= 16")
    if args.sample not in SAMPLE_KINDS:
        raise MLSimError(
            f"--sample {args.sample!r} is unknown; expected one of {', '.join(SAMPLE_KINDS)}"
        )
    if args.out.exists() and not args.out.is_dir():
        raise MLSimError(f"--out {args.out} is a file; expected a folder")
    stems = [args.out / f"sim_{i:04d}" for i in range(args.n)]
    for stem in stems:  # fail before the first write, not after some groups
        for path in group_paths(stem):
            check_writable(path, args.overwrite)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in tqdm(range(args.n), desc="simulate", unit="group", disable=args.quiet):
        params = random_params(rng)
        optics = params.optics
        optics = Optics(
            na=args.na or optics.na,
            wavelength_nm=args.wavelength_nm or optics.wavelength_nm,
            pixel_size_um=args.pixel_size_um or optics.pixel_size_um,
        )
        params = replace(params, optics=optics)
        if args.photons is not None:
            params = replace(params, signal=replace(params.signal, peak_photons=args.photons))
        if args.modulation is not None:
            params = replace(params, pattern=replace(params.pattern, modulation=args.modulation))
        if args.pattern_fraction is not None:
            params = replace(
                params, pattern=replace(params.pattern, frequency_fraction=args.pattern_fraction)
            )
        if args.camera is not None:
            params = replace(params, camera=Camera(kind=args.camera))
        group = simulate_group(
            params, sample=args.sample, size=args.size, seed=int(rng.integers(2**31))
        )
        raw_path, gt_path, json_path = group_paths(stems[i])
        pixel = optics.pixel_size_um
        written: list[Path] = []
        try:
            write_tiff_atomic(raw_path, group.raw, pixel_size_um=pixel, overwrite=args.overwrite)
            written.append(raw_path)
            write_tiff_atomic(gt_path, group.gt, pixel_size_um=pixel / 2, overwrite=args.overwrite)
            written.append(gt_path)
            write_json_atomic(json_path, group.to_dict(), overwrite=args.overwrite)
        except BaseException:
            for path in written:  # a group is complete or absent
                path.unlink(missing_ok=True)
            raise
    log.info("wrote %d simulated groups to %s", args.n, args.out)
    return 0
