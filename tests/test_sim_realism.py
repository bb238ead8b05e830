"""Realism terms of the simulator: aberrated pupil, patterned haze, frame jitter, ranges."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mlsim_live.errors import MLSimError
from mlsim_live.sim import (
    Optics,
    PhysicsRanges,
    Signal,
    SIMParams,
    random_params,
    realistic_ranges,
    simulate_group,
)
from mlsim_live.sim.optics import aberrated_otf, otf_2d


def test_aberration_free_pupil_gives_the_analytic_otf():
    numeric = aberrated_otf((128, 128), 0.04, 1.4, 525.0)
    analytic = otf_2d((128, 128), 0.04, 2 * 1.4 / 0.525)
    assert np.abs(numeric - analytic).max() < 0.01


def test_spherical_aberration_lowers_the_mid_and_high_frequencies_only():
    ideal = aberrated_otf((128, 128), 0.04, 1.4, 525.0)
    aberrated = aberrated_otf((128, 128), 0.04, 1.4, 525.0, spherical_waves=0.1)
    assert aberrated[0, 0] == pytest.approx(1.0)
    mid = 20  # about 0.75 of the cutoff (26.7 bins)
    assert aberrated[0, mid] < 0.8 * ideal[0, mid]
    assert aberrated[0, 60] == pytest.approx(0.0, abs=1e-6)  # nothing beyond the cutoff


def test_aberrations_are_range_checked():
    with pytest.raises(MLSimError, match="spherical_waves"):
        Optics(spherical_waves=3.0)


def test_default_ranges_draw_no_realism_terms_and_realistic_ranges_do():
    rng = np.random.default_rng(0)
    plain = [random_params(rng) for _ in range(20)]
    assert all(not p.optics.aberrated and p.signal.frame_jitter == 0 for p in plain)
    real = [random_params(rng, realistic_ranges()) for _ in range(50)]
    assert min(p.pattern.modulation for p in real) < 0.4  # below the default 0.4
    assert max(p.pattern.frequency_fraction for p in real) > 0.95
    assert any(p.optics.spherical_waves < 0 for p in real)  # both signs
    assert all(0 <= p.signal.haze_modulation <= 0.15 for p in real)
    assert isinstance(realistic_ranges(), PhysicsRanges)


def test_frame_jitter_changes_frame_intensities():
    base = SIMParams(signal=Signal(peak_photons=5000.0, background_photons=0.0, haze_fraction=0))
    flat = simulate_group(base, "natural", 64, seed=1).raw.astype(float)
    jit = simulate_group(
        replace(base, signal=replace(base.signal, frame_jitter=0.1)), "natural", 64, seed=1
    ).raw.astype(float)
    flat_means = flat.reshape(9, -1).mean(1)
    jit_means = jit.reshape(9, -1).mean(1)
    assert np.std(jit_means / flat_means) > 0.03


def test_patterned_haze_carries_the_pattern_into_the_background():
    """An empty sample under patterned haze: the 3 phases of an angle differ; without the
    pattern term they do not (beyond noise)."""
    sig = Signal(peak_photons=2000.0, background_photons=0.0, haze_fraction=0.5)
    empty = np.zeros((128, 128))
    empty[64, 64] = 1.0  # one point so the photon scale is defined
    plain = simulate_group(SIMParams(signal=sig), empty, seed=2)
    lit = simulate_group(SIMParams(signal=replace(sig, haze_modulation=0.5)), empty, seed=2)

    def phase_spread(raw: np.ndarray) -> float:
        frames = raw[:3].astype(float)
        return float(np.std(frames - frames.mean(0)))

    assert phase_spread(lit.raw) > 1.5 * phase_spread(plain.raw)
