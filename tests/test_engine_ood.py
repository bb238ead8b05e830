"""Out-of-distribution check of the RCAN engine against the model card's training ranges."""

from __future__ import annotations

import numpy as np
import pytest

from mlsim_live.engine.ood import OODChecker, TrainingRanges, find_ranges, optics_reasons
from mlsim_live.errors import MLSimError
from mlsim_live.sim import (
    Camera,
    Optics,
    Pattern,
    PhysicsRanges,
    Signal,
    SIMParams,
    simulate_group,
)

TRAINED = TrainingRanges.from_dict(PhysicsRanges().to_dict())


def simulated(
    frequency_fraction: float = 0.85,
    na: float = 1.4,
    photons: float = 1000.0,
    camera: str = "scmos",
    seed: int = 0,
) -> tuple[np.ndarray, Optics]:
    params = SIMParams(
        optics=Optics(na=na, wavelength_nm=525, pixel_size_um=0.08),
        pattern=Pattern(
            frequency_fraction=frequency_fraction, angle_offset_deg=10.0, modulation=0.8
        ),
        signal=Signal(
            peak_photons=photons, background_photons=20, haze_fraction=0.3, unevenness=0.2
        ),
        camera=Camera(kind=camera, offset_adu=100, gain_adu_per_e=0.5, read_noise_e=1.5),
    )
    return simulate_group(params, sample="filaments", size=128, seed=seed).raw, params.optics


def test_find_ranges_anywhere_in_the_card() -> None:
    card = {
        "architecture": {"n_feats": 8},
        "training": {"data": {"ranges": PhysicsRanges().to_dict()}},
    }
    ranges = find_ranges(card)
    assert ranges == TRAINED
    assert ranges.frequency_fraction == (0.70, 0.95)
    assert find_ranges({"scale": 2}) is None


def test_cycles_per_pixel_span() -> None:
    lo, hi = TRAINED.cycles_per_px()
    # 0.7 * 2 * 1.0 / 0.7 um * 0.06 um and the Nyquist cap
    assert lo == pytest.approx(0.12)
    assert hi == pytest.approx(0.49)
    assert TrainingRanges(modulation=(0.4, 1.0)).cycles_per_px() is None


def test_optics_outside_trained_ranges() -> None:
    reasons = optics_reasons(TRAINED, Optics(na=0.8, wavelength_nm=525, pixel_size_um=0.2))
    assert any(r.startswith("na 0.80") for r in reasons)
    assert any(r.startswith("pixel_size_um 0.200") for r in reasons)
    assert optics_reasons(TRAINED, Optics(na=1.4, wavelength_nm=525, pixel_size_um=0.08)) == []


def test_in_range_group_passes_and_low_pattern_frequency_is_flagged() -> None:
    raw, optics = simulated(0.85)
    assert OODChecker(TRAINED, optics=optics).evaluate(raw) == []
    raw, optics = simulated(0.5)
    reasons = OODChecker(TRAINED, optics=optics).evaluate(raw)
    assert len(reasons) == 1 and reasons[0].startswith("pattern frequency 0.50 of the OTF cutoff")


def test_untrained_optics_are_flagged() -> None:
    raw, optics = simulated(0.85, na=0.8)
    reasons = OODChecker(TRAINED, optics=optics).evaluate(raw)
    assert reasons == ["na 0.80 is outside the trained 1.00-1.50"]


def test_pure_noise_is_flagged_without_a_pattern_claim() -> None:
    optics = Optics(na=1.4, wavelength_nm=525, pixel_size_um=0.08)
    for seed in range(2):
        noise = (100 + np.random.default_rng(seed).poisson(40, (9, 128, 128))).astype(np.uint16)
        reasons = OODChecker(TRAINED, optics=optics).evaluate(noise)
        assert reasons, "a group of pure noise is outside any training range"
        assert all("signal" in r for r in reasons), reasons  # no pattern frequency from noise


def test_estimate_runs_once_every_n_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = OODChecker(TRAINED, every=3)
    calls = []

    def fake_evaluate(group: np.ndarray) -> list[str]:
        calls.append(1)
        return [f"reason {len(calls)}"]

    monkeypatch.setattr(checker, "evaluate", fake_evaluate)
    group = np.zeros((9, 32, 32))
    verdicts = [checker.check(group) for _ in range(7)]
    assert len(calls) == 3  # groups 0, 3 and 6
    assert (
        verdicts[2] == ["reason 1"] and verdicts[3] == ["reason 2"] and verdicts[6] == ["reason 3"]
    )
    with pytest.raises(MLSimError, match="expected >= 1"):
        OODChecker(TRAINED, every=0)
