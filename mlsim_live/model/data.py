"""Training data made on the fly by the simulator: random physics, mixed samples, patches.

Each example is one simulated SIM group, normalized exactly as at inference
(:func:`mlsim_live.normalization.normalization_for`), and its ground truth normalized by
:func:`mlsim_live.normalization.normalize_target`. Sample kinds are mixed evenly, including
sparse fields (structure in part of the field, empty elsewhere) and empty fields (background,
haze and noise only, target zero), so that the network learns not to invent structure in noise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

from mlsim_live.errors import MLSimError
from mlsim_live.normalization import normalization_for, normalize_target
from mlsim_live.recon.base import GROUP_SIZE
from mlsim_live.recon.prior import PRIOR_CHANNELS, prior_input, shuffle2, unshuffle2
from mlsim_live.sim import (
    SAMPLE_KINDS,
    PhysicsRanges,
    SIMParams,
    make_sample,
    random_params,
    simulate_group,
)
from mlsim_live.sim.simulate import bin2, smooth_field

log = logging.getLogger(__name__)

#: Extra kinds made here from the simulator's: ``sparse`` (a random kind masked to a few smooth
#: cell-like regions) and ``empty`` (no fluorophores at all).
EXTRA_KINDS = ("sparse", "empty")

#: Relative frequency of each sample kind in training.
DEFAULT_SAMPLE_WEIGHTS: dict[str, float] = {
    "filaments": 1.0,
    "beads": 1.0,
    "vesicles": 1.0,
    "natural": 1.0,
    "mixture": 1.0,
    "sparse": 1.0,
    "empty": 0.3,
}

#: Camera pixels simulated around each patch and cropped away, so that the periodic boundary of
#: the FFT-based simulation never reaches the patch.
MARGIN_PX = 4

#: Draws tried before a prior-fed example whose Wiener reconstruction fails is given up.
MAX_REDRAWS = 10

#: Seed root of the validation set; training streams are seeded from the user's seed instead.
VALIDATION_SEED = 9_173_551


@dataclass(frozen=True)
class DataConfig:
    """What the simulated training data covers.

    Attributes
    ----------
    patch_px : int
        Camera pixels per patch side (the target has ``scale * patch_px``).
    scale : int
        Output scale of the network (2: target on the 2x grid; 1: target binned to the camera).
    ranges : PhysicsRanges
        Physics drawn uniformly (photons log-uniformly) per example.
    sample_weights : dict
        Relative frequency of each sample kind.
    prior : str
        ``"none"`` (end-to-end: 9 frames in, target normalized by its own 99.9th percentile) or
        ``"wiener"`` (the frames plus the Wiener reconstruction that the project's estimator
        makes of the simulated group, see `mlsim_live.recon.prior`; target in the frames'
        normalized units).
    optics_known : float
        With a prior, the fraction of examples whose Wiener reconstruction is given the true
        NA, wavelength and pixel size (the rest estimate the OTF cutoff from the data, as
        users without optics metadata do). The pattern is always estimated, never given.
    """

    patch_px: int = 64
    scale: int = 2
    ranges: PhysicsRanges = field(default_factory=PhysicsRanges)
    sample_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SAMPLE_WEIGHTS))
    prior: str = "none"
    optics_known: float = 0.7

    def __post_init__(self) -> None:
        if self.patch_px < 16 or self.patch_px % 2:
            raise MLSimError(f"patch size {self.patch_px} px; expected an even size >= 16")
        if self.scale not in (1, 2):
            raise MLSimError(f"scale {self.scale}; expected 1 or 2")
        known = set(SAMPLE_KINDS) | set(EXTRA_KINDS)
        unknown = set(self.sample_weights) - known
        if unknown:
            raise MLSimError(
                f"unknown sample kinds {sorted(unknown)}; expected some of {sorted(known)}"
            )
        if self.prior not in ("none", "wiener"):
            raise MLSimError(f"prior {self.prior!r}; expected 'none' or 'wiener'")
        if self.prior != "none" and self.scale != 2:
            raise MLSimError(f"a {self.prior} prior needs scale 2; got {self.scale}")
        if not 0.0 <= self.optics_known <= 1.0:
            raise MLSimError(f"optics_known {self.optics_known}; expected 0 to 1")
        weights = np.array(list(self.sample_weights.values()), dtype=float)
        if weights.size == 0 or np.any(weights < 0) or weights.sum() <= 0:
            raise MLSimError("sample weights must be non-negative with a positive sum")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (physics ranges included)."""
        out = asdict(self)
        out["ranges"] = self.ranges.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        """Inverse of :meth:`to_dict`."""
        ranges: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in dict(data["ranges"]).items()
        }
        return cls(
            patch_px=int(data["patch_px"]),
            scale=int(data["scale"]),
            ranges=PhysicsRanges(**ranges),
            sample_weights={str(k): float(v) for k, v in dict(data["sample_weights"]).items()},
            prior=str(data.get("prior", "none")),
            optics_known=float(data.get("optics_known", 0.7)),
        )


def narrowed_ranges(
    ranges: PhysicsRanges,
    *,
    na: float | None = None,
    wavelength_nm: float | None = None,
    pixel_size_um: float | None = None,
) -> PhysicsRanges:
    """Fix the optics of ``ranges`` to one microscope; everything else stays randomized."""
    changes: dict[str, Any] = {}  # PhysicsRanges fields, (lo, hi) each
    if na is not None:
        changes["na"] = (float(na), float(na))
    if wavelength_nm is not None:
        changes["wavelength_nm"] = (float(wavelength_nm), float(wavelength_nm))
    if pixel_size_um is not None:
        changes["pixel_size_um"] = (float(pixel_size_um), float(pixel_size_um))
    return replace(ranges, **changes)


def _sparse_density(
    shape: tuple[int, int], pixel_size_um: float, rng: np.random.Generator
) -> np.ndarray:
    """A random simulator kind, kept only inside smooth blobs covering 15-60 % of the field."""
    kind = str(rng.choice(SAMPLE_KINDS))
    density = make_sample(kind, shape, pixel_size_um, rng)
    mask_field = smooth_field(shape, shape[0] / rng.uniform(1.5, 4.0), rng)
    keep = rng.uniform(0.15, 0.6)
    threshold = np.quantile(mask_field, 1.0 - keep)
    # soft edge over a few pixels, like a cell boundary
    mask = np.clip((mask_field - threshold) / 0.05 + 0.5, 0.0, 1.0)
    return density * mask


def make_example(
    params: SIMParams,
    kind: str,
    patch_px: int,
    scale: int,
    rng: np.random.Generator,
    *,
    flip: bool = True,
    prior: str = "none",
    optics_known: float = 0.7,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one normalized (input, target) pair.

    Parameters
    ----------
    params : SIMParams
        Physics of the group.
    kind : str
        A simulator sample kind or one of :data:`EXTRA_KINDS`.
    patch_px : int
        Camera pixels per side of the returned input.
    scale : int
        Target grid: 2 (the simulator's 2x grid) or 1 (binned to the camera grid).
    rng : Generator
        Source of all randomness.
    flip : bool
        Randomly mirror the pair along each axis (both chiralities of angle and phase order).
    prior : {"none", "wiener"}
        With ``"wiener"``, the project's Wiener reconstruction (pattern estimated on the whole
        simulated frame, estimation errors included) is appended as 4 unshuffled channels and
        the target is the ground truth in the frames' normalized units.
    optics_known : float
        Probability that the Wiener reconstruction is given the true optics.

    Returns
    -------
    x : ndarray, (9, patch_px, patch_px) float32 (13 channels with a prior)
        ``normalization_for(raw).apply(raw)`` (and the prior, `mlsim_live.recon.prior`).
    y : ndarray, (1, scale*patch_px, scale*patch_px) float32
        ``normalize_target(gt)``; with a prior ``gt * adu_per_photon / norm.scale``.
    """
    sim_px = patch_px + 2 * MARGIN_PX
    fine = (2 * sim_px, 2 * sim_px)
    fine_pixel_um = params.optics.pixel_size_um / 2
    if kind == "empty":
        sample: str | np.ndarray = np.zeros(fine)
    elif kind == "sparse":
        sample = _sparse_density(fine, fine_pixel_um, rng)
    else:
        sample = kind
    group = simulate_group(params, sample=sample, size=sim_px, seed=rng)
    m = MARGIN_PX
    raw = group.raw[:, m : m + patch_px, m : m + patch_px]
    gt = group.gt[2 * m : 2 * (m + patch_px), 2 * m : 2 * (m + patch_px)]
    if scale == 1:
        gt = bin2(gt) / 4  # mean of 2x2: the camera-grid truth
    norm = normalization_for(raw)
    if prior == "none":
        x = norm.apply(raw)
        y = normalize_target(gt)[None]
        if flip:
            if rng.random() < 0.5:
                x, y = x[:, ::-1, :], y[:, ::-1, :]
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, :, ::-1]
        return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32)
    wiener = _wiener_of(group.raw, params, rng.random() < optics_known)
    wiener = wiener[2 * m : 2 * (m + patch_px), 2 * m : 2 * (m + patch_px)]
    target = gt * np.float32(params.camera.adu_per_photon / norm.scale)
    if flip:
        # mirror on the 2x grid before unshuffling: pixels 2i, 2i+1 tile raw pixel i
        if rng.random() < 0.5:
            raw, wiener, target = raw[:, ::-1, :], wiener[::-1, :], target[::-1, :]
        if rng.random() < 0.5:
            raw, wiener, target = raw[:, :, ::-1], wiener[:, ::-1], target[:, ::-1]
    x = prior_input(raw, wiener, norm)
    return x, np.ascontiguousarray(target[None], np.float32)


def _wiener_of(raw: np.ndarray, params: SIMParams, optics_known: bool) -> np.ndarray:
    """The project's Wiener reconstruction of a simulated group, with its own estimation."""
    from mlsim_live.recon.wiener import WienerReconstructor

    optics = params.optics if optics_known else None
    if optics is not None and optics.aberrated:  # a user enters the nominal optics
        optics = replace(optics, defocus_waves=0.0, spherical_waves=0.0)
    with _quiet("mlsim_live.recon"):
        return WienerReconstructor(optics=optics, workers=1).reconstruct(raw)


class _quiet:
    """Silence a logger's warnings (pattern hardly found...) while training data is made."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def __enter__(self) -> None:
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)


class Sampler:
    """Draws random training examples from a :class:`DataConfig` with one generator."""

    def __init__(self, config: DataConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.rng = rng
        self.kinds = list(config.sample_weights)
        weights = np.array([config.sample_weights[k] for k in self.kinds], dtype=float)
        self.probabilities = weights / weights.sum()

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """One random (input, target) pair.

        With a prior, a group whose Wiener reconstruction fails (no signal above the noise
        floor: inference then falls back to the end-to-end model) is replaced by a new draw.
        """
        for _ in range(MAX_REDRAWS):
            try:
                return self._draw_once()
            except (MLSimError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
                log.debug("redrawing a training example: %s", exc)
        return self._draw_once()

    def _draw_once(self) -> tuple[np.ndarray, np.ndarray]:
        params = random_params(self.rng, self.config.ranges)
        kind = str(self.rng.choice(self.kinds, p=self.probabilities))
        return make_example(
            params,
            kind,
            self.config.patch_px,
            self.config.scale,
            self.rng,
            prior=self.config.prior,
            optics_known=self.config.optics_known,
        )


def dihedral(x: np.ndarray, y: np.ndarray, op: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply one of the 8 rotations/mirrors (``op`` in 0..7) to an (input, target) pair.

    Rotating or mirroring all 9 frames gives another valid SIM group (pattern angles rotated or
    mirrored), so this augments without leaving the physics.
    """
    k, mirror = op % 4, op >= 4
    prior = None
    if x.shape[0] == GROUP_SIZE + PRIOR_CHANNELS:  # rotate the prior on its 2x grid
        x, prior = x[:GROUP_SIZE], shuffle2(x[GROUP_SIZE:])
        prior = np.rot90(prior, k)
        if mirror:
            prior = prior[:, ::-1]
    x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
    if mirror:
        x, y = x[:, :, ::-1], y[:, :, ::-1]
    if prior is not None:
        x = np.concatenate([x, unshuffle2(prior)])
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


class SimulatedDataset(IterableDataset):
    """Endless stream of simulated examples for a ``torch.utils.data.DataLoader``.

    Every DataLoader worker gets its own generator, seeded from ``(seed, stream, worker id)``;
    ``stream`` is the training step the stream starts at, so a resumed run continues with fresh,
    reproducible data.

    With ``reuse > 1`` each worker keeps a pool of recent examples and simulates a new one for
    only one in ``reuse`` yields; the others are pool members under a random rotation/mirror.
    This divides the simulation cost by ``reuse`` where the CPU is scarce.
    """

    def __init__(
        self, config: DataConfig, seed: int, stream: int = 0, reuse: int = 1, pool: int = 256
    ) -> None:
        super().__init__()
        if reuse < 1 or pool < 1:
            raise MLSimError(f"reuse {reuse} and pool {pool}; expected both >= 1")
        self.config = config
        self.seed = int(seed)
        self.stream = int(stream)
        self.reuse = int(reuse)
        self.pool = int(pool)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        import torch
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.stream, worker]))
        sampler = Sampler(self.config, rng)
        pool: list[tuple[np.ndarray, np.ndarray]] = []
        while True:
            if self.reuse == 1:
                x, y = sampler.draw()
            elif len(pool) < self.pool // 4 or rng.random() < 1.0 / self.reuse:
                x, y = sampler.draw()
                if len(pool) < self.pool:
                    pool.append((x, y))
                else:
                    pool[int(rng.integers(self.pool))] = (x, y)
            else:
                x, y = dihedral(*pool[int(rng.integers(len(pool)))], int(rng.integers(8)))
            yield torch.from_numpy(x), torch.from_numpy(y)


@dataclass(frozen=True)
class ValidationSet:
    """A fixed set of simulated examples with their physics.

    Attributes
    ----------
    x : ndarray, (N, 9, P, P) float32
    y : ndarray, (N, 1, sP, sP) float32
    peak_photons : ndarray, (N,)
    kinds : tuple of str
    """

    x: np.ndarray
    y: np.ndarray
    peak_photons: np.ndarray
    kinds: tuple[str, ...]


def validation_set(config: DataConfig, n: int = 48, seed: int = VALIDATION_SEED) -> ValidationSet:
    """Build the fixed validation set: photons log-spaced over the range, kinds cycled.

    The same ``config`` and ``seed`` always give the same set. Its seed root is never used for
    training streams.
    """
    if n < 1:
        raise MLSimError(f"validation set size {n}; expected >= 1")

    kinds = list(config.sample_weights)
    lo, hi = config.ranges.peak_photons
    photons = np.exp(np.linspace(np.log(lo), np.log(hi), n))
    xs, ys = [], []
    used_kinds = []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        kind = kinds[i % len(kinds)]
        for attempt in range(MAX_REDRAWS + 1):
            params = random_params(rng, config.ranges)
            params = replace(params, signal=replace(params.signal, peak_photons=float(photons[i])))
            try:
                x, y = make_example(
                    params,
                    kind,
                    config.patch_px,
                    config.scale,
                    rng,
                    flip=False,
                    prior=config.prior,
                    optics_known=config.optics_known,
                )
                break
            except MLSimError:  # a prior whose reconstruction failed: redraw (see Sampler)
                if attempt == MAX_REDRAWS:
                    raise
        xs.append(x)
        ys.append(y)
        used_kinds.append(kind)
    return ValidationSet(np.stack(xs), np.stack(ys), photons, tuple(used_kinds))
