"""Tests of the on-the-fly simulated training data."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mlsim_live.errors import MLSimError  # noqa: E402
from mlsim_live.model.data import (  # noqa: E402
    DEFAULT_SAMPLE_WEIGHTS,
    DataConfig,
    Sampler,
    SimulatedDataset,
    dihedral,
    make_example,
    narrowed_ranges,
    validation_set,
)
from mlsim_live.normalization import normalization_for, normalize_target  # noqa: E402
from mlsim_live.sim import SAMPLE_KINDS, PhysicsRanges, SIMParams, random_params  # noqa: E402

pytestmark = pytest.mark.torch


def test_sample_mix_covers_every_kind_and_empty_fields() -> None:
    assert set(SAMPLE_KINDS) <= set(DEFAULT_SAMPLE_WEIGHTS)
    assert {"sparse", "empty"} <= set(DEFAULT_SAMPLE_WEIGHTS)
    kinds = [k for k in SAMPLE_KINDS]
    assert len({DEFAULT_SAMPLE_WEIGHTS[k] for k in kinds}) == 1  # evenly mixed


@pytest.mark.parametrize("scale", [1, 2])
def test_make_example_shapes(scale: int) -> None:
    rng = np.random.default_rng(3)
    x, y = make_example(random_params(rng), "mixture", 32, scale, rng)
    assert x.shape == (9, 32, 32) and x.dtype == np.float32
    assert y.shape == (1, 32 * scale, 32 * scale) and y.dtype == np.float32
    assert np.isfinite(x).all() and np.isfinite(y).all()
    # the input normalization is the shared one: its 99.9th percentile maps to 1
    assert np.percentile(x, 99.9) == pytest.approx(1.0, abs=1e-3)
    assert np.percentile(y, 99.9) == pytest.approx(1.0, abs=1e-3)


def test_make_example_uses_shared_normalization(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlsim_live.model.data as data

    seen: dict[str, np.ndarray] = {}

    def spy_norm(raw: np.ndarray):  # type: ignore[no-untyped-def]
        seen["raw"] = np.array(raw)
        return normalization_for(raw)

    def spy_target(gt: np.ndarray) -> np.ndarray:
        seen["gt"] = np.array(gt)
        return normalize_target(gt)

    monkeypatch.setattr(data, "normalization_for", spy_norm)
    monkeypatch.setattr(data, "normalize_target", spy_target)
    rng = np.random.default_rng(0)
    x, y = make_example(SIMParams(), "beads", 32, 2, rng, flip=False)
    np.testing.assert_array_equal(x, normalization_for(seen["raw"]).apply(seen["raw"]))
    np.testing.assert_array_equal(y[0], normalize_target(seen["gt"]))
    assert seen["raw"].shape == (9, 32, 32) and seen["gt"].shape == (64, 64)


def test_scale_one_target_is_the_2x2_mean_of_the_2x_truth(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlsim_live.model.data as data
    from mlsim_live.sim.simulate import bin2

    img = np.arange(20, dtype=np.float32).reshape(4, 5)  # odd width: the last column is cut
    np.testing.assert_array_equal(bin2(img), [[12, 20], [52, 60]])
    targets: list[np.ndarray] = []

    def spy_target(gt: np.ndarray) -> np.ndarray:
        targets.append(np.array(gt))
        return normalize_target(gt)

    monkeypatch.setattr(data, "normalize_target", spy_target)
    for scale in (2, 1):  # the same seed simulates the same group
        make_example(SIMParams(), "beads", 32, scale, np.random.default_rng(5), flip=False)
    fine, coarse = targets
    assert coarse.shape == (32, 32) and coarse.dtype == np.float32
    np.testing.assert_allclose(coarse, fine.reshape(32, 2, 32, 2).mean(axis=(1, 3)), rtol=1e-6)


def test_empty_field_has_zero_target_and_noisy_input() -> None:
    rng = np.random.default_rng(1)
    x, y = make_example(SIMParams(), "empty", 32, 2, rng)
    assert np.all(y == 0)
    assert x.std() > 0  # background, haze and camera noise remain


def test_sparse_field_is_partly_empty() -> None:
    rng = np.random.default_rng(5)
    _, y = make_example(SIMParams(), "sparse", 48, 2, rng)
    assert y.max() > 0.5
    assert np.mean(y < 0.05) > 0.3  # the OTF leaves only a faint tail outside the cells


def test_dihedral_keeps_input_and_target_aligned() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((9, 6, 6), dtype=np.float32)
    y = np.kron(x[:1], np.ones((2, 2), np.float32))
    for op in range(8):
        xt, yt = dihedral(x, y, op)
        np.testing.assert_array_equal(yt, np.kron(xt[:1], np.ones((2, 2), np.float32)))
    np.testing.assert_array_equal(dihedral(x, y, 0)[0], x)
    assert len({dihedral(x, y, op)[0].tobytes() for op in range(8)}) == 8


def _first(dataset: SimulatedDataset, n: int) -> list[np.ndarray]:
    it = iter(dataset)
    return [next(it)[0].numpy() for _ in range(n)]


def test_dataset_streams_are_seeded() -> None:
    cfg = DataConfig(patch_px=32)
    a = _first(SimulatedDataset(cfg, seed=7), 2)
    b = _first(SimulatedDataset(cfg, seed=7), 2)
    c = _first(SimulatedDataset(cfg, seed=8), 2)
    d = _first(SimulatedDataset(cfg, seed=7, stream=100), 2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], d[0])


@pytest.mark.slow
def test_dataloader_workers_get_distinct_streams() -> None:
    from torch.utils.data import DataLoader

    cfg = DataConfig(patch_px=24)
    loader = DataLoader(SimulatedDataset(cfg, seed=1), batch_size=2, num_workers=2)
    it = iter(loader)
    first, second = next(it)[0], next(it)[0]  # batches alternate between the two workers
    assert first.shape == (2, 9, 24, 24)
    assert not torch.equal(first, second)
    del it


def test_reuse_pool_repeats_examples_under_symmetries() -> None:
    cfg = DataConfig(patch_px=16)
    xs = _first(SimulatedDataset(cfg, seed=2, reuse=4, pool=8), 40)
    canon = [min(dihedral(x, x[:1], op)[0].tobytes() for op in range(8)) for x in xs]
    distinct = len(set(canon))
    assert distinct < len(xs)  # some examples were reused
    assert distinct > 4  # but fresh ones keep coming


def test_validation_set_is_fixed_and_spans_photons() -> None:
    cfg = DataConfig(patch_px=16)
    a = validation_set(cfg, n=7)
    b = validation_set(cfg, n=7)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.x.shape == (7, 9, 16, 16) and a.y.shape == (7, 1, 32, 32)
    lo, hi = cfg.ranges.peak_photons
    assert a.peak_photons[0] == pytest.approx(lo) and a.peak_photons[-1] == pytest.approx(hi)
    assert set(a.kinds) == set(DEFAULT_SAMPLE_WEIGHTS)


def test_narrowed_ranges_fix_the_optics_only() -> None:
    ranges = narrowed_ranges(PhysicsRanges(), na=1.2, wavelength_nm=600, pixel_size_um=0.1)
    rng = np.random.default_rng(0)
    draws = [random_params(rng, ranges) for _ in range(5)]
    assert {d.optics.na for d in draws} == {1.2}
    assert {d.optics.wavelength_nm for d in draws} == {600.0}
    assert {d.optics.pixel_size_um for d in draws} == {0.1}
    assert len({d.signal.peak_photons for d in draws}) == 5
    assert ranges.peak_photons == PhysicsRanges().peak_photons


def test_data_config_roundtrip_and_errors() -> None:
    cfg = DataConfig(patch_px=48, scale=1, ranges=narrowed_ranges(PhysicsRanges(), na=1.3))
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(MLSimError, match="unknown sample kinds"):
        DataConfig(sample_weights={"cells": 1.0})
    with pytest.raises(MLSimError, match="patch"):
        DataConfig(patch_px=15)


def test_sampler_draws_pairs() -> None:
    x, y = Sampler(DataConfig(patch_px=16, scale=1), np.random.default_rng(0)).draw()
    assert x.shape == (9, 16, 16) and y.shape == (1, 16, 16)
