"""mypy passes on the package with the settings in pyproject.toml, strict on the pure modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = ("mlsim_live.sim", "mlsim_live.recon", "mlsim_live.trust", "mlsim_live.judge")
STRICT_FLAGS = (
    "disallow_any_generics",
    "disallow_untyped_calls",
    "disallow_untyped_defs",
    "disallow_incomplete_defs",
    "check_untyped_defs",
    "no_implicit_reexport",
    "strict_equality",
)


def test_pure_modules_are_checked_strictly() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert config["files"] == ["mlsim_live"]
    strict = [o for o in config.get("overrides", []) if o.get("disallow_untyped_defs")]
    covered = {m for o in strict for m in o["module"]}
    for package in PURE:
        assert {package, f"{package}.*"} <= covered, f"{package} is not checked strictly"
    for override in strict:
        missing = [flag for flag in STRICT_FLAGS if not override.get(flag)]
        assert not missing, f"strict override lacks {missing}"


def test_no_module_is_exempt_from_mypy() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    exempt = [o["module"] for o in config.get("overrides", []) if o.get("ignore_errors")]
    assert not exempt, f"modules whose type errors mypy ignores: {exempt}"


@pytest.mark.slow
def test_mypy_finds_no_errors() -> None:
    pytest.importorskip("mypy")
    done = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
