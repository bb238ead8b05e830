"""`mlsim-live quantize`: the int8 copy of a model, with its accuracy recorded in the card."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` subcommand."""
    p = sub.add_parser(
        "quantize",
        help="make NAME.int8.onnx beside a model and record its accuracy in the card",
        description="Static int8 quantization (QDQ) of an exported model, calibrated on "
        "simulated groups of every sample kind and photon level through the model's own input "
        "path. Writes NAME.int8.onnx beside NAME.onnx and records under 'precisions' in "
        "NAME.json the held-out PSNR/SSIM change against fp32, the largest pixel difference, "
        "the speed-up measured here and (with --judge) the real-data FRC change; "
        "--precision auto uses int8 only when it loses <= 0.1 dB and changes the FRC <= 5 %%.",
    )
    p.add_argument("model", type=Path, help="the fp32 .onnx model (its card beside it)")
    p.add_argument(
        "--judge",
        type=Path,
        metavar="DIR",
        help="also judge fp32 and int8 on the real stacks in DIR (e.g. ../shared/data/real)",
    )
    p.add_argument("--calibration-size", type=int, default=96, help="calibration frame side")
    p.add_argument("--check-groups", type=int, default=5, help="held-out groups per photon level")
    p.add_argument("--check-size", type=int, default=128, help="held-out frame side")
    p.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing NAME.int8.onnx")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Quantize, measure, record; print the card entry."""
    from mlsim_live.engine.precision import INT8, variant_path
    from mlsim_live.engine.quantize import QuantizeConfig, make_int8
    from mlsim_live.errors import MLSimError
    from mlsim_live.io.atomic import check_writable

    if not args.model.is_file() or args.model.suffix != ".onnx":
        raise MLSimError(f"model {args.model} is not an .onnx file; expected an exported model")
    if args.judge is not None and not args.judge.is_dir():
        raise MLSimError(f"--judge {args.judge} is not a folder; expected the real stacks' folder")
    for name, value in (
        ("--check-groups", args.check_groups),
        ("--calibration-size", args.calibration_size),
        ("--check-size", args.check_size),
    ):
        if value < 1:
            raise MLSimError(f"{name} {value}; expected a positive number")
    check_writable(variant_path(args.model, INT8), args.overwrite)
    config = QuantizeConfig(
        calibration_size_px=args.calibration_size,
        check_size_px=args.check_size,
        check_per_level=args.check_groups,
        threads=args.threads,
    )
    entry = make_int8(args.model, config, judge_dir=args.judge, overwrite=args.overwrite)
    print(json.dumps(entry, indent=2))
    return 0
