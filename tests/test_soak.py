"""The soak of scripts/soak.py, short: 300 groups of the headless demo per method, memory flat
after warm-up, no raw frame lost, invariants held (the README gives the 10,000-group figures)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.mm]

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"


def load_soak():
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_soak_300_groups(tmp_path, capsys):
    from mlsim_live.paths import has_default_model

    methods = "wiener,rcan" if has_default_model() else "wiener"
    soak = load_soak()
    code = soak.main(
        ["--groups", "300", "--methods", methods, "--out", str(tmp_path), "--every-s", "0.2"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("0 raw frames lost; invariants hold; ok") == len(methods.split(","))
