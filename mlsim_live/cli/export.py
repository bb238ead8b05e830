"""``mlsim-live export``: a trained checkpoint (or ML-SIM's published one) to ONNX + model card."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Export an RCAN to ONNX (dynamic height and width, opset >= 17, checked with onnx.checker and
compared with PyTorch) and write its model card next to it (NAME.json: architecture, scale,
normalization, training physics ranges and steps, validation metrics, sha256).
  mlsim-live export runs/fast/best.pt --out models/rcan_fast.onnx
  mlsim-live export --from-mlsim DIV2K_randomised_3x3_20200317.pth --preset paper \
      --out models/mlsim_paper.onnx
ML-SIM checkpoints are read with torch.load(weights_only=True): they never run code.
Needs the train extra (torch, onnx)."""


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX with its model card (needs torch)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", nargs="?", help="checkpoint from mlsim-live train (.pt)")
    p.add_argument("--out", required=True, help="ONNX file to write (NAME.onnx; card NAME.json)")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute, fp32 I/O")
    p.add_argument(
        "--from-mlsim", metavar="FILE.pth", default=None, help="ML-SIM's published checkpoint"
    )
    p.add_argument(
        "--preset",
        default=None,
        help="with --from-mlsim: architecture the checkpoint must have (paper)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``export``."""
    from mlsim_live.errors import MLSimError

    if (args.checkpoint is None) == (args.from_mlsim is None):
        raise MLSimError("give either CHECKPOINT or --from-mlsim FILE.pth; expected exactly one")
    if args.preset is not None and args.from_mlsim is None:
        raise MLSimError("--preset applies to --from-mlsim; a checkpoint knows its architecture")
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise MLSimError(
            "export needs torch and onnx; expected pip install 'mlsim-live[train]'"
        ) from None
    from mlsim_live.model.export import export_checkpoint, export_mlsim

    if args.from_mlsim is not None:
        card = export_mlsim(
            args.from_mlsim,
            args.out,
            preset=args.preset or "paper",
            fp16=args.fp16,
            opset=args.opset,
            overwrite=args.overwrite,
        )
    else:
        card = export_checkpoint(
            args.checkpoint, args.out, fp16=args.fp16, opset=args.opset, overwrite=args.overwrite
        )
    print(
        f"wrote {args.out} (scale {card['scale']}, {card['precision']}, "
        f"parity {card['parity']['max_abs_diff']:.2g}, sha256 {card['sha256'][:12]}...)"
    )
    return 0
