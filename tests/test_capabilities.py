"""Optional reconstructor capabilities are declared by Protocols and found once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from mlsim_live.live.pipeline import Pipeline
from mlsim_live.recon.base import (
    Capabilities,
    Reconstructor,
    SupportsEstimate,
    SupportsFallback,
    SupportsOOD,
    SupportsWarmUp,
    warm_up,
)
from mlsim_live.recon.widefield import WidefieldReconstructor
from mlsim_live.recon.wiener import WienerReconstructor
from tests.test_prior_model import OPTICS, _identity_prior_model


class Plain:
    name, provider, scale = "plain", "numpy", 2

    def reconstruct(self, group: np.ndarray) -> np.ndarray:
        mean = np.asarray(group, np.float32).mean(axis=0)
        return np.repeat(np.repeat(mean, 2, axis=0), 2, axis=1)


class Checked(Plain):
    def __init__(self, ranges: object) -> None:
        self.training_ranges = ranges
        self.shapes: list[tuple[int, int]] = []

    def check_ood(self, group: np.ndarray, *, warn: bool = True, fresh: bool = False) -> list[str]:
        return ["too dim"]

    def warm_up(self, hw: tuple[int, int]) -> None:
        self.shapes.append(hw)


def test_a_plain_reconstructor_declares_nothing() -> None:
    caps = Capabilities.of(Plain())
    assert isinstance(Plain(), Reconstructor)
    assert caps == Capabilities()
    warm_up(Plain(), (8, 8))  # no warm-up: left alone


def test_protocols_are_detected_once() -> None:
    checked = Checked(ranges={"na": [1.0, 1.5]})
    caps = Capabilities.of(checked)
    assert isinstance(checked, SupportsOOD) and isinstance(checked, SupportsWarmUp)
    assert caps.ood is checked and not caps.ood_unavailable and caps.warm_up
    assert not caps.estimate and not caps.fallback
    warm_up(checked, (12, 16))
    assert checked.shapes == [(12, 16)]


def test_a_check_without_training_ranges_is_unavailable_not_zero() -> None:
    caps = Capabilities.of(Checked(ranges=None))
    assert caps.ood is None and caps.ood_unavailable
    pipeline = Pipeline(Checked(ranges=None), policy="all")
    summary = pipeline.close(timeout=10)
    assert summary["ood_groups"] is None and summary["ood_check"].startswith("unavailable")


def test_the_shipped_reconstructors_declare_their_capabilities() -> None:
    assert isinstance(WienerReconstructor(), SupportsEstimate)
    assert Capabilities.of(WienerReconstructor()).estimate
    assert Capabilities.of(WidefieldReconstructor()) == Capabilities()


def _groups(size: int = 48) -> np.ndarray:
    from mlsim_live.sim import SIMParams, simulate_group

    blank = (100 + np.random.default_rng(0).poisson(20.0, (9, size, size))).astype(np.uint16)
    good = simulate_group(SIMParams(optics=OPTICS), "filaments", size, seed=1).raw
    return np.stack([blank, good.astype(np.uint16)])


def test_fallback_groups_reach_the_run_summary_and_the_sidecar(tmp_path: Path) -> None:
    from mlsim_live.cli import main
    from mlsim_live.recon import make_reconstructor

    model = _identity_prior_model(tmp_path)
    rec = make_reconstructor("wiener-rcan", model=model, require_pattern=True)
    assert isinstance(rec, SupportsFallback) and Capabilities.of(rec).fallback
    groups = _groups()
    pipeline = Pipeline(rec, policy="all")
    for t, group in enumerate(groups):
        for slot, frame in enumerate(group):
            pipeline.push(frame, {"time": t, "angle": slot // 3, "phase": slot % 3})
    summary = pipeline.close(timeout=120)
    assert summary["groups_reconstructed"] == 2 and summary["fallback_groups"] == 1
    assert "fallback_groups" not in Pipeline(Plain()).close(timeout=10)

    raw = tmp_path / "cells.tif"
    tifffile.imwrite(raw, groups.reshape(-1, *groups.shape[-2:]))
    out = tmp_path / "out"
    args = ["reconstruct", str(raw), "--out", str(out), "--method", "wiener-rcan"]
    assert main([*args, "--model", str(model)]) == 0
    # the command's wiener-rcan does not require a pattern, but the blank group holds no fine
    # structure above the noise: it gets the widefield image, counted as a fallback
    assert json.loads((out / "cells_sr.json").read_text())["fallback_groups"] == 1
    assert main(["reconstruct", str(raw), "--out", str(tmp_path / "w"), "--method", "wiener"]) == 0
    assert "fallback_groups" not in json.loads((tmp_path / "w" / "cells_sr.json").read_text())


def test_low_signal_groups_reach_the_run_summary(tmp_path: Path) -> None:
    from mlsim_live.recon import make_reconstructor

    rec = make_reconstructor("wiener-rcan", model=_identity_prior_model(tmp_path))
    pipeline = Pipeline(rec, policy="all")
    for t, group in enumerate(_groups()):  # a blank field, then filaments
        for slot, frame in enumerate(group):
            pipeline.push(frame, {"time": t, "angle": slot // 3, "phase": slot % 3})
    summary = pipeline.close(timeout=120)
    assert summary["groups_reconstructed"] == 2
    assert summary["fallback_groups"] == 1 and summary["low_signal_groups"] == 1
    assert "low_signal_groups" not in Pipeline(Plain()).close(timeout=10)
