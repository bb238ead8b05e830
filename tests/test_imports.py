"""Pure computation imports no heavy framework, and `mlsim-live --help` stays instant."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "onnxruntime", "PyQt5", "pyqtgraph", "pycromanager", "pymmcore", "dask")


@pytest.mark.parametrize(
    "module",
    [
        "mlsim_live.sim",
        "mlsim_live.recon",
        "mlsim_live.normalization",
        "mlsim_live.metrics",
        "mlsim_live.cli",
    ],
)
def test_module_imports_no_heavy_framework(module):
    code = (
        f"import sys, {module}; from mlsim_live.cli import build_parser; build_parser(); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"{module} pulled in {loaded}"


def test_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "mlsim_live", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in (
        "simulate",
        "reconstruct",
        "demo",
        "live",
        "replay",
        "train",
        "export",
        "evaluate",
        "bench",
    ):
        assert command in out
