"""``mlsim-live train``: train (or fine-tune) the RCAN on data simulated on the fly."""

from __future__ import annotations

import argparse
import signal
from dataclasses import replace
from typing import Any

DESCRIPTION = """\
Train an RCAN on SIM groups simulated on the fly over the realistic physics range (NA,
wavelength, pixel size, pattern, 10-5000 photons, sCMOS/EMCCD noise, haze) with mixed samples.
Writes RUN_DIR/last.pt (checkpoint, every --checkpoint-every steps and on Ctrl-C), best.pt,
train_log.csv, val_log.csv, metrics.json and training.png. --resume continues an interrupted run.
Fine-tune to one microscope: --init CHECKPOINT --na 1.2 --wavelength-nm 600 --pixel-size-um 0.1.
Needs the train extra (torch)."""


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train the RCAN on simulated data (needs torch)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument(
        "--preset",
        default=None,
        help="architecture: fast (default, end-to-end), prior (refines the Wiener "
        "reconstruction), prior-fast (the same, shaped for the live rate on a CPU), paper, "
        "tiny, prior-tiny",
    )
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps (10000)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace a run in RUN_DIR")
    p.add_argument("--batch-size", type=int, default=None, help="examples per step (16)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (5e-4)")
    p.add_argument("--val-every", type=int, default=None, help="steps between validations (500)")
    p.add_argument(
        "--checkpoint-every", type=int, default=None, help="steps between checkpoints (250)"
    )
    p.add_argument("--val-size", type=int, default=None, help="validation examples (48)")
    p.add_argument("--seed", type=int, default=None, help="seed of weights and data (0)")
    p.add_argument(
        "--workers", type=int, default=None, help="DataLoader processes simulating data (1)"
    )
    p.add_argument(
        "--data-reuse",
        type=int,
        default=None,
        help="use each simulated example about this many times, rotated/mirrored (4)",
    )
    p.add_argument("--patch", type=int, default=64, help="patch size in camera pixels (64)")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default=None,
        help="forward-pass arithmetic: bf16 autocast on CPUs with AMX/AVX512-BF16 (auto)",
    )
    p.add_argument(
        "--physics",
        choices=("default", "realistic"),
        default=None,
        help="simulated physics ranges: realistic adds modulation down to 0.2, patterns up to "
        "0.98 of the cutoff, aberrations, patterned haze and frame jitter (default for the "
        "prior presets)",
    )
    p.add_argument(
        "--photons",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="peak photons per pixel drawn log-uniformly between LO and HI (10 5000)",
    )
    p.add_argument(
        "--sample-weight",
        action="append",
        default=None,
        metavar="KIND=W",
        help="relative frequency of one sample kind (repeatable), e.g. beads=2",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--init", default=None, metavar="CHECKPOINT", help="start from these weights")
    p.add_argument("--na", type=float, default=None, help="fine-tune: the objective's NA")
    p.add_argument("--wavelength-nm", type=float, default=None, help="fine-tune: emission")
    p.add_argument(
        "--pixel-size-um", type=float, default=None, help="fine-tune: camera pixel in the sample"
    )
    p.set_defaults(func=run)


_SETTINGS = {
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "lr",
    "val_every": "val_every",
    "checkpoint_every": "checkpoint_every",
    "val_size": "val_size",
    "seed": "seed",
    "workers": "workers",
    "data_reuse": "data_reuse",
    "precision": "precision",
}


def _photon_range(values: list[float]) -> tuple[float, float]:
    """Check ``--photons LO HI``."""
    from mlsim_live.errors import MLSimError

    lo, hi = float(values[0]), float(values[1])
    if not 0 < lo <= hi:
        raise MLSimError(f"--photons {lo:g} {hi:g}: expected 0 < LO <= HI")
    return lo, hi


def _sample_weights(base: dict[str, float], items: list[str]) -> dict[str, float]:
    """Apply ``--sample-weight KIND=W`` items to the default weights."""
    from mlsim_live.errors import MLSimError

    weights = dict(base)
    for item in items:
        kind, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or kind not in weights or weight < 0:
            raise MLSimError(
                f"--sample-weight {item!r}: expected KIND=W with W >= 0 and KIND one of "
                f"{sorted(weights)}"
            )
        weights[kind] = weight
    return weights


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Run ``train``."""
    from mlsim_live.errors import MLSimError

    try:
        import torch
    except ImportError:
        raise MLSimError("train needs torch; expected pip install 'mlsim-live[train]'") from None
    from mlsim_live.model.data import DataConfig, narrowed_ranges
    from mlsim_live.model.train import train

    optics = {
        "na": args.na,
        "wavelength_nm": args.wavelength_nm,
        "pixel_size_um": args.pixel_size_um,
    }
    if args.resume and (
        any(v is not None for v in optics.values()) or args.photons or args.sample_weight
    ):
        raise MLSimError(
            "--na/--wavelength-nm/--pixel-size-um/--photons/--sample-weight start a run; "
            "expected no --resume"
        )
    data_config = None
    if not args.resume:
        from mlsim_live.sim import realistic_ranges

        base = DataConfig(patch_px=args.patch)
        physics = args.physics or (
            "realistic" if str(args.preset or "").startswith("prior") else "default"
        )
        ranges = realistic_ranges(base.ranges) if physics == "realistic" else base.ranges
        if args.photons is not None:
            ranges = replace(ranges, peak_photons=_photon_range(args.photons))
        data_config = DataConfig(
            patch_px=args.patch,
            ranges=narrowed_ranges(ranges, **optics),
            sample_weights=_sample_weights(base.sample_weights, args.sample_weight or []),
        )
    elif args.physics is not None:
        raise MLSimError("--physics starts a run; expected no --resume")
    settings = {
        field: getattr(args, attr)
        for attr, field in _SETTINGS.items()
        if getattr(args, attr) is not None
    }
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.init is not None:  # fine-tuning: gentler and shorter unless told otherwise
        settings.setdefault("lr", 1e-4)
        settings.setdefault("steps", 1000)
        settings.setdefault("warmup_steps", 50)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        metrics = train(
            args.out,
            preset=args.preset,
            settings=settings,
            data_config=data_config,
            resume=args.resume,
            overwrite=args.overwrite,
            init=args.init,
            device=args.device,
            progress=True,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    text = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    print(f"trained {args.out}: {text}")
    return 0
