"""`mlsim-live evaluate`: judge reconstructions on held-out simulations or on real data."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = sub.add_parser(
        "evaluate",
        help="judge methods on real data (split-half FRC, photon ladder, beads) or on "
        "held-out simulations",
        description="With --real DIR: the real-data fidelity judge. For every raw SIM stack "
        "in DIR (optics from a <stem>.json beside it when present; results in pixels "
        "without one) it estimates the camera offset and gain from the data's own noise, "
        "splits the photons into two halves and reports each method's split-half FRC "
        "resolution (1/7 threshold), thins the photons to 1/2 ... 1/64 of the dose and scores "
        "every rung against the full-dose Wiener reconstruction (PSNR, SSIM, correlation, "
        "correlation beyond the widefield cutoff), and on bead stacks (sidecar sample_kind "
        "beads) fits the isolated beads. Writes OUT/real_fidelity.json, OUT/real_fidelity.md "
        "and PNGs. Without --real (or with --simulated): reconstructs a held-out simulated set "
        "(photon levels 10 to 5000) with widefield, Wiener and the RCAN model and writes "
        "OUT/evaluation.json, OUT/evaluation.md and panels.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--model", type=Path, help="model file for the learned methods")
    p.add_argument("--real", type=Path, help="folder of real raw stacks (or one stack) to judge")
    p.add_argument(
        "--methods",
        help="comma-separated methods to judge with --real (default: widefield, wiener and "
        "every learned method available); widefield and wiener are always judged",
    )
    p.add_argument(
        "--rungs",
        type=int,
        default=6,
        help="photon ladder rungs 1/2 ... 1/2**N with --real (default 6: down to 1/64)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the photon splits and thinning")
    p.add_argument(
        "--simulated",
        action="store_true",
        help="with --real, also run the held-out simulated evaluation (and its real panels)",
    )
    p.add_argument("--groups-per-level", type=int, default=8, help="simulated groups per level")
    p.add_argument("--size", type=int, default=128, help="camera frame size of simulated groups")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def _methods(text: str | None) -> list[str] | None:
    from mlsim_live.constants import METHODS
    from mlsim_live.errors import MLSimError

    if not text:
        return None
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise MLSimError(
            f"--methods {text!r} names unknown method(s) {', '.join(unknown)}; "
            f"expected a comma-separated list of {', '.join(METHODS)}"
        )
    return names


def run(args: argparse.Namespace) -> int:
    """Judge real data and/or evaluate on held-out simulations; print the Markdown."""
    progress = not args.quiet
    if args.real is not None:
        from mlsim_live.judge import judge_folder, report_markdown

        result = judge_folder(
            args.real,
            args.out,
            _methods(args.methods),
            model=args.model,
            n_rungs=args.rungs,
            seed=args.seed,
            overwrite=args.overwrite,
            progress=progress,
        )
        print(report_markdown(result.stacks, result.skipped))
        print(f"judged {len(result.stacks)} stack(s) in {result.seconds:.0f} s; wrote {args.out}")
        if not args.simulated:
            return 2 if result.skipped else 0
    from mlsim_live.evaluation import run_evaluation

    evaluation = run_evaluation(
        args.out,
        model=args.model,
        groups_per_level=args.groups_per_level,
        size=args.size,
        real_dir=args.real,
        overwrite=args.overwrite,
        progress=progress,
    )
    print(evaluation["markdown"])
    return 0
