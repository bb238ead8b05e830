"""The one RCAN input normalization: same numbers on every path, for every dtype."""

from __future__ import annotations

import numpy as np
import pytest

from mlsim_live.normalization import (
    BACKGROUND_PERCENTILE,
    SCALE_PERCENTILE,
    normalization_for,
    normalize_target,
)


@pytest.mark.parametrize("seed", range(20))
def test_integer_fast_path_equals_numpy_percentile(seed):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, rng.integers(2, 65536), size=rng.integers(1, 5000)).astype(np.uint16)
    norm = normalization_for(group)
    lo, hi = np.percentile(group.astype(np.float64), [BACKGROUND_PERCENTILE, SCALE_PERCENTILE])
    assert norm.background == pytest.approx(lo, abs=1e-9)
    assert norm.scale == pytest.approx(max(hi - lo, 1e-6 * max(group.max(), 1)), abs=1e-9)
    as_float = normalization_for(group.astype(np.float32))
    assert as_float.background == pytest.approx(norm.background, rel=1e-6)
    assert as_float.scale == pytest.approx(norm.scale, rel=1e-5)


def test_apply_and_invert():
    rng = np.random.default_rng(0)
    group = (100 + rng.poisson(50, (9, 32, 32))).astype(np.uint16)
    norm = normalization_for(group)
    x = norm.apply(group)
    assert x.dtype == np.float32
    assert np.percentile(x, SCALE_PERCENTILE) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(norm.invert(x), group.astype(np.float32) - norm.background, atol=1e-3)


def test_constant_frames_do_not_divide_by_zero():
    norm = normalization_for(np.full((9, 8, 8), 500, dtype=np.uint16))
    assert norm.scale > 0 and np.all(np.isfinite(norm.apply(np.full((9, 8, 8), 500))))


def test_target_is_scaled_to_its_own_high_percentile():
    gt = np.linspace(0, 1000, 10000, dtype=np.float32).reshape(100, 100)
    assert np.percentile(normalize_target(gt), SCALE_PERCENTILE) == pytest.approx(1.0)
    assert np.all(normalize_target(np.zeros((4, 4))) == 0)
