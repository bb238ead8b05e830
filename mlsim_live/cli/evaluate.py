"""`mlsim-live evaluate`: judge a model against widefield and Wiener, with tables and pictures."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = sub.add_parser(
        "evaluate",
        help="compare a model with widefield and Wiener on held-out simulations and real data",
        description="Reconstructs a held-out simulated set (a seed training never uses, photon "
        "levels 10 to 5000) with widefield, Wiener and the RCAN model, and writes "
        "DIR/evaluation.json, DIR/evaluation.md (PSNR / SSIM / correlation with the ground "
        "truth beyond the widefield cutoff / level in empty background, per photon level) and "
        "PNG panels widefield | Wiener | RCAN | ground truth. With --real DIR it also draws "
        "panels for each real raw stack in DIR (TIFF with a JSON of its optics beside it).",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--model", type=Path, help="ONNX model (default: the shipped model)")
    p.add_argument("--groups-per-level", type=int, default=8, help="groups per photon level")
    p.add_argument("--size", type=int, default=128, help="camera frame size of held-out groups")
    p.add_argument("--real", type=Path, help="folder of real raw stacks with JSON sidecars")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and write tables and pictures."""
    from mlsim_live.evaluation import run_evaluation

    result = run_evaluation(
        args.out,
        model=args.model,
        groups_per_level=args.groups_per_level,
        size=args.size,
        real_dir=args.real,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(result["markdown"])
    return 0
