"""Options and checks that several commands share (method and model, optics, exit codes).

Every command takes these from here, never from a sibling command's module. Only light imports
at module level: registering the commands keeps ``--help`` instant.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlsim_live.constants import ENGINES, LEARNED_METHODS, METHODS

log = logging.getLogger(__name__)


def add_method_option(p: argparse.ArgumentParser) -> None:
    """``--method`` of the live-path commands: the default learned method, else wiener."""
    p.add_argument(
        "--method",
        choices=METHODS,
        help="reconstruction method (default: wiener-rcan, or the method of the --model given; "
        "wiener when no default model is installed)",
    )


def add_engine_option(p: argparse.ArgumentParser) -> None:
    """``--engine`` of ``demo`` and ``live``: who runs the acquisition."""
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=ENGINES[0],
        help="pycromanager: Pycro-Manager's acquisition engine, raw NDTiff dataset (default); "
        "pymmcore-plus: a useq MDA on pymmcore-plus, the pattern presets as channels, raw "
        "OME-TIFF",
    )


def add_stages_option(p: argparse.ArgumentParser) -> None:
    """``--stages`` of the live-path commands (demo, live, replay)."""
    p.add_argument(
        "--stages",
        type=int,
        choices=(1, 2),
        default=None,
        help="2: prepare the next group (the Wiener prior) while the network infers the current "
        "one (default for rcan and wiener-rcan); 1: one group at a time (lower latency on "
        "2 cores, where ONNX Runtime already fills both)",
    )


def add_live_outputs(p: argparse.ArgumentParser) -> None:
    """``--screenshot``, ``--overwrite`` and ``--trust`` of the acquiring commands (demo, live)."""
    p.add_argument("--screenshot", type=Path, help="save a picture of the viewer at the end")
    p.add_argument("--overwrite", action="store_true", help="replace an existing screenshot")
    p.add_argument(
        "--trust",
        action="store_true",
        help="also map the newest reconstruction's trust (on its own low-priority thread, never "
        "delaying reconstruction or acquisition) into <name>_trust.tif, .png and .json beside "
        "the SR file; the summary gains trust_flagged_fraction",
    )


def method_and_model(args: argparse.Namespace) -> tuple[str, Path | None]:
    """The method, and the model file of a learned method (its shipped model when none is
    given)."""
    from mlsim_live.errors import MLSimError
    from mlsim_live.paths import default_model_path
    from mlsim_live.recon import default_method

    method = args.method
    if method is None:
        method = default_method(None, args.model, warn=False)
        # said once files are done, not before a bad-input line
        args.method_fallback = method == "wiener"
    if method not in LEARNED_METHODS:
        if args.model is not None:
            raise MLSimError(
                f"--model applies to the learned methods ({', '.join(LEARNED_METHODS)}); "
                f"got --method {method}"
            )
        return method, None
    if args.model is None:
        return method, default_model_path(method)
    if not args.model.is_file():
        raise MLSimError(f"--model {args.model}: no such file; expected an .onnx model")
    return method, args.model


def live_method_and_model(args: argparse.Namespace) -> tuple[str, Path | None]:
    """The method and model of ``--method``/``--model``, by the rule of ``reconstruct``.

    Without ``--method``: the method of ``--model`` when given, else the default learned method
    when its model is installed, else wiener, said in a warning before the run starts.
    """
    method, model = method_and_model(args)
    if getattr(args, "method_fallback", False):
        log.warning(
            "no default model is installed; reconstructing with --method wiener "
            "(--model PATH for a learned method)"
        )
    return method, model


def check_optics(args: argparse.Namespace) -> None:
    """Range-check the optics options once, before any file is read."""
    from dataclasses import replace

    from mlsim_live.errors import MLSimError
    from mlsim_live.sim.optics import Optics

    optics = Optics()
    for name, value in (
        ("na", args.na),
        ("wavelength_nm", args.wavelength_nm),
        ("pixel_size_um", args.pixel_size_um),
    ):
        if value is not None:
            replace(optics, **{name: value})  # raises MLSimError when out of range
    if getattr(args, "offset", None) is not None and not math.isfinite(args.offset):
        raise MLSimError(f"--offset {args.offset}; expected a finite number of ADU")


def interrupted_exit(summary: Mapping[str, Any], command: str) -> int:
    """0, or after an interrupt one line on stderr and the signal's exit code (130, 143)."""
    from mlsim_live.cli import _signals

    if not (summary.get("interrupted") or summary.get("acquisition_ended") == "interrupted"):
        return 0
    saved = summary.get("sr_file") or "no SR file"
    print(
        f"mlsim-live {command}: interrupted by {_signals.received() or 'SIGINT'}; "
        f"{summary['groups_reconstructed']} finished group(s) saved ({saved})",
        file=sys.stderr,
    )
    return _signals.exit_code()
