"""Padding and overlapping-tile blending of the inference engine (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from mlsim_live.engine.tiling import (
    axis_weights,
    fit_tile,
    pad_group,
    padded_length,
    run_tiled,
    tile_starts,
)
from mlsim_live.errors import MLSimError


@pytest.mark.parametrize(
    ("length", "multiple", "minimum", "expected"),
    [(65, 8, 16, 72), (64, 8, 16, 64), (5, 8, 16, 16), (130, 1, 1, 130)],
)
def test_padded_length(length: int, multiple: int, minimum: int, expected: int) -> None:
    assert padded_length(length, multiple, minimum) == expected


def test_pad_group_reflects_and_keeps_original() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((9, 65, 67), dtype=np.float32)
    p = pad_group(x, 8)
    assert p.shape == (9, 72, 72)
    np.testing.assert_array_equal(p[:, :65, :67], x)
    # reflection about the last row/column (not edge repetition, not zeros)
    np.testing.assert_array_equal(p[:, 65, :67], x[:, 63, :])
    np.testing.assert_array_equal(p[:, :65, 67], x[:, :, 65])
    assert pad_group(p, 8) is p


def test_tile_starts_cover_with_overlap() -> None:
    for length, tile, overlap in [(256, 96, 16), (1000, 128, 32), (2048, 1024, 32), (97, 96, 8)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile == length
        shared = [starts[i - 1] + tile - starts[i] for i in range(1, len(starts))]
        assert min(shared) >= overlap
    assert tile_starts(64, 96, 16) == [0]
    with pytest.raises(MLSimError, match="overlap"):
        tile_starts(300, 32, 32)


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "scale"),
    [(256, 96, 16, 2), (1000, 128, 32, 1), (300, 120, 40, 2)],
)
def test_axis_weights_partition_of_unity(length: int, tile: int, overlap: int, scale: int) -> None:
    total = np.zeros(scale * length)
    for start, w in axis_weights(length, tile, overlap, scale):
        assert w.shape == (scale * tile,)
        assert w.min() >= 0 and w.max() <= 1 + 1e-6
        # the tile edges that touch another tile carry no weight
        total[start : start + w.size] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    weights = axis_weights(length, tile, overlap, scale)
    margin = scale * overlap // 4  # the outer quarter-overlap of a tile is not used
    first, last = weights[0][1], weights[-1][1]
    assert first[0] == pytest.approx(1.0) and np.all(first[-margin:] == 0)
    assert np.all(last[:margin] == 0) and last[-1] == pytest.approx(1.0)


def test_run_tiled_equals_untiled_for_a_pointwise_model() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((9, 200, 300), dtype=np.float32)

    def model(a: np.ndarray) -> np.ndarray:  # 2x nearest upsampling of a weighted channel sum
        y = np.tensordot(np.arange(1, 10, dtype=np.float32), a, axes=1)
        return np.repeat(np.repeat(y, 2, axis=0), 2, axis=1)

    tiled = run_tiled(x, model, scale=2, tile=64, overlap=16)
    np.testing.assert_allclose(tiled, model(x), rtol=1e-5, atol=1e-5)


def test_run_tiled_rejects_wrong_output_shape() -> None:
    x = np.zeros((9, 100, 100), dtype=np.float32)
    with pytest.raises(MLSimError, match="expected"):
        run_tiled(x, lambda a: a[0], scale=2, tile=64, overlap=8)


def test_fit_tile_repeats_little_work() -> None:
    assert fit_tile(1104, 1024, 32, 8) == 568  # two tiles of 568, not two of 1024
    assert fit_tile(500, 1024, 32, 8) == 500  # no tiling
    for length, tile, overlap, multiple in [
        (1104, 1024, 32, 8),
        (2048, 1024, 32, 8),
        (3001, 512, 48, 1),
        (700, 96, 16, 8),
    ]:
        fitted = fit_tile(length, tile, overlap, multiple)
        assert fitted <= tile and fitted % multiple == 0
        starts = tile_starts(length, fitted, overlap)
        assert starts[-1] + fitted == length
        assert len(starts) == len(tile_starts(length, tile, overlap))  # no extra tiles
