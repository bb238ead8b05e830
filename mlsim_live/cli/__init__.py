"""The ``mlsim-live`` command line.

Each subcommand lives in its own module ``mlsim_live.cli.<name>`` with a ``register(subparsers)``
function that adds its parser and sets ``func`` to a runner. Registering imports nothing heavy:
runners import what they need when they run, so ``mlsim-live --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mlsim_live import __version__
from mlsim_live.errors import MLSimError, one_line

# Order shown in --help.
COMMANDS = (
    "simulate",
    "reconstruct",
    "demo",
    "live",
    "replay",
    "train",
    "export",
    "evaluate",
    "trust",
    "bench",
    "quantize",
)

#: Commands that take ``--precision`` (added here, one option for all of them).
PRECISION_COMMANDS = ("reconstruct", "demo", "live", "replay", "evaluate")

log = logging.getLogger("mlsim_live")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand that is installed."""
    parser = argparse.ArgumentParser(
        prog="mlsim-live",
        description="Live ML super-resolution for structured illumination microscopy (SIM).",
    )
    parser.add_argument("--version", action="version", version=f"mlsim-live {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mlsim_live.cli.{name}")
        except ModuleNotFoundError as exc:  # a command under construction is simply absent
            if exc.name == f"mlsim_live.cli.{name}":
                continue
            raise
        module.register(sub)
        if name in PRECISION_COMMANDS:
            _add_precision_option(sub.choices[name])
    return parser


def _add_precision_option(p: argparse.ArgumentParser) -> None:
    """``--precision`` of every command that reconstructs with a learned model."""
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8", "auto"),
        default="auto",
        help="arithmetic of the learned model on the CPU: int8 runs NAME.int8.onnx (made by "
        "mlsim-live quantize), bf16 is refused where ONNX Runtime cannot run it, auto "
        "(default) the fastest precision the model card records as accurate, else fp32",
    )


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 success, 1 unexpected failure, 2 bad input/usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, already one line)
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        commands = ", ".join(_commands(parser))
        print(
            f"mlsim-live: error: a command is required; expected one of {commands} "
            "(mlsim-live -h for help)",
            file=sys.stderr,
        )
        return 2
    _configure_logging(args.verbose, args.quiet)
    from mlsim_live.cli import _signals
    from mlsim_live.engine.precision import AUTO, default_precision, set_default_precision

    # the command runs with its own --precision (auto when it has none); the caller's default
    # (a Python program that calls main) is restored afterwards
    previous = default_precision()
    set_default_precision(getattr(args, "precision", None) or AUTO)
    try:
        with _signals.interrupts():
            result = args.func(args)
    except MLSimError as exc:
        print(f"mlsim-live {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that cannot be written (or read): no traceback
        print(f"mlsim-live {args.command}: error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        name = _signals.received() or "SIGINT"
        print(f"mlsim-live {args.command}: interrupted by {name}", file=sys.stderr)
        return _signals.exit_code()
    finally:
        set_default_precision(previous)
    return int(result or 0)


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    """Names of the registered subcommands, in --help order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def _os_error(exc: OSError) -> str:
    """``FILENAME: reason; expected a writable path`` for a file-system error, in one line."""
    reason = exc.strerror or one_line(exc)
    if exc.filename is None:
        return f"{one_line(exc)}; expected a writable path"
    names = str(exc.filename) if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    return one_line(f"{names}: {reason}; expected a writable path", limit=1000)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
