"""Physically simulated SIM raw groups with a consistent 2x ground truth.

Image formation, on a grid twice as fine as the camera (pixel ``p/2``):

1. the sample density ``s`` is band-limited to the SIM passband ``|f| <= fc + k``;
2. each of the 9 frames is ``s * I_ap * U`` with ``I_ap = 1 + m cos(2 pi k_a.r + phi_ap)`` and a
   smooth uneven-illumination field ``U``, blurred by the incoherent OTF
   (cutoff ``fc = 2NA/lambda``);
3. camera-pixel integration sums 2x2 fine pixels; smooth out-of-focus haze and a constant
   background are added in photons; the camera model adds shot, excess and read noise.

The ground truth is ``s`` seen through the ideal SIM OTF (circular-pupil OTF with cutoff
``fc + k``), scaled to the same photons per camera pixel as the widefield image, so the raw frames
and the 2x ground truth describe the same object.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from mlsim_live.errors import MLSimError
from mlsim_live.sim.camera import Camera
from mlsim_live.sim.optics import (
    Optics,
    aberrated_otf,
    frequency_grid,
    incoherent_otf,
    otf_2d,
)
from mlsim_live.sim.pattern import N_ANGLES, N_PHASES, Pattern, draw_angles_phases, illumination
from mlsim_live.sim.samples import SAMPLE_KINDS, make_sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signal:
    """Photon budget and backgrounds.

    Attributes
    ----------
    peak_photons : float
        In-focus signal of the brightest structures (99.9th percentile of the noiseless
        widefield image), photons per camera pixel per frame above background.
    background_photons : float
        Constant background (autofluorescence, stray light) per pixel per frame.
    haze_fraction : float
        Peak of the smooth out-of-focus haze, as a fraction of ``peak_photons``.
    unevenness : float
        Peak-to-valley relative variation of the illumination across the field.
    haze_modulation : float
        Modulation depth of the pattern that the out-of-focus haze still carries (0: the haze
        is the same in all 9 frames; real thick samples leave a weak residual).
    frame_jitter : float
        Relative standard deviation of the illumination intensity from frame to frame (laser
        power, shutter timing): each frame's illuminated light is scaled by ``1 + N(0, jitter)``.
    """

    peak_photons: float = 1000.0
    background_photons: float = 10.0
    haze_fraction: float = 0.1
    unevenness: float = 0.1
    haze_modulation: float = 0.0
    frame_jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.peak_photons <= 0 or self.background_photons < 0:
            raise MLSimError("peak photons must be positive and background photons non-negative")
        if not 0 <= self.unevenness < 1:
            raise MLSimError(f"unevenness {self.unevenness} is out of range; expected 0 to <1")
        if not 0 <= self.haze_modulation <= 1:
            raise MLSimError(
                f"haze modulation {self.haze_modulation} is out of range; expected 0 to 1"
            )
        if not 0 <= self.frame_jitter < 0.5:
            raise MLSimError(
                f"frame jitter {self.frame_jitter} is out of range; expected 0 to <0.5"
            )


@dataclass(frozen=True)
class SIMParams:
    """Everything that defines a simulated SIM acquisition."""

    optics: Optics = field(default_factory=Optics)
    pattern: Pattern = field(default_factory=Pattern)
    signal: Signal = field(default_factory=Signal)
    camera: Camera = field(default_factory=Camera)

    @property
    def pattern_frequency_per_um(self) -> float:
        """Nominal pattern frequency in cycles/um."""
        return self.pattern.frequency_per_um(self.optics.cutoff_per_um)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of all parameters."""
        return asdict(self)


@dataclass(frozen=True)
class PhysicsRanges:
    """Ranges that real instruments produce; ``random_params`` draws uniformly inside them.

    Combinations whose pattern would alias on the camera (pattern frequency above
    ``max_pattern_of_nyquist`` of the camera Nyquist) are redrawn: no real SIM is built that way.
    """

    na: tuple[float, float] = (1.0, 1.5)
    wavelength_nm: tuple[float, float] = (450.0, 700.0)
    pixel_size_um: tuple[float, float] = (0.060, 0.110)
    frequency_fraction: tuple[float, float] = (0.70, 0.95)
    modulation: tuple[float, float] = (0.4, 1.0)
    peak_photons: tuple[float, float] = (10.0, 5000.0)  # drawn log-uniformly
    background_photons: tuple[float, float] = (0.0, 50.0)
    haze_fraction: tuple[float, float] = (0.0, 0.5)
    unevenness: tuple[float, float] = (0.0, 0.3)
    angle_error_deg: tuple[float, float] = (0.0, 1.0)
    phase_error_rad: tuple[float, float] = (0.0, 0.15)
    max_pattern_of_nyquist: float = 0.98
    # realism terms, off by default (drawn only when a range's upper end is above 0)
    defocus_waves: tuple[float, float] = (0.0, 0.0)
    spherical_waves: tuple[float, float] = (0.0, 0.0)
    haze_modulation: tuple[float, float] = (0.0, 0.0)
    frame_jitter: tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class SimGroup:
    """One simulated SIM group.

    Attributes
    ----------
    raw : ndarray, (9, N, M) uint16
        Camera frames, angle-major.
    gt : ndarray, (2N, 2M) float32
        Ground truth on the 2x grid, photons per camera pixel.
    params : SIMParams
        Parameters used.
    angles_rad : ndarray, (3,)
        True pattern angles (with the drawn errors).
    phases_rad : ndarray, (3, 3)
        True pattern phases.
    pattern_frequency_per_um : float
        True pattern frequency.
    seed : int or None
        Seed of the draw.
    sample_kind : str
        Sample generator used (``"custom"`` for a given array).
    """

    raw: np.ndarray
    gt: np.ndarray
    params: SIMParams
    angles_rad: np.ndarray
    phases_rad: np.ndarray
    pattern_frequency_per_um: float
    seed: int | None = None
    sample_kind: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of all physical parameters of this group."""
        return {
            "params": self.params.to_dict(),
            "angles_rad": [float(a) for a in self.angles_rad],
            "angles_deg": [float(np.rad2deg(a)) for a in self.angles_rad],
            "phases_rad": [[float(p) for p in row] for row in self.phases_rad],
            "pattern_frequency_per_um": float(self.pattern_frequency_per_um),
            "pattern_period_nm": float(1e3 / self.pattern_frequency_per_um),
            "cutoff_per_um": float(self.params.optics.cutoff_per_um),
            "raw_shape": list(self.raw.shape),
            "gt_shape": list(self.gt.shape),
            "gt_pixel_size_um": self.params.optics.pixel_size_um / 2,
            "frame_order": "angle-major",
            "seed": self.seed,
            "sample_kind": self.sample_kind,
        }


#: The ranges real SIM data shows, beyond the default ones: modulation down to 0.2, patterns up
#: to 0.98 of the cutoff, a little defocus and spherical aberration (a symmetric range: either
#: sign), out-of-focus light that still carries a weak pattern, and frame-to-frame intensity
#: jitter. Training of the physics-informed models draws from these.
REALISTIC_RANGES_OVERRIDES: dict[str, tuple[float, float]] = {
    "frequency_fraction": (0.70, 0.98),
    "modulation": (0.2, 1.0),
    "defocus_waves": (0.0, 0.1),
    "spherical_waves": (0.0, 0.1),
    "haze_modulation": (0.0, 0.15),
    "frame_jitter": (0.0, 0.05),
}


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _optional(rng: np.random.Generator, lo_hi: tuple[float, float], signed: bool = False) -> float:
    """A draw from a realism range; no draw at all (so seeded streams stay as they were) when
    the range is (0, 0). ``signed`` gives the value a random sign."""
    if lo_hi[1] <= 0:
        return 0.0
    value = float(rng.uniform(*lo_hi))
    return -value if signed and rng.random() < 0.5 else value


def realistic_ranges(base: PhysicsRanges | None = None) -> PhysicsRanges:
    """``base`` (default `PhysicsRanges()`) widened by `REALISTIC_RANGES_OVERRIDES`."""
    from dataclasses import replace

    overrides: dict[str, Any] = dict(REALISTIC_RANGES_OVERRIDES)  # keys checked at run time
    return replace(base or PhysicsRanges(), **overrides)


def random_params(rng: np.random.Generator, ranges: PhysicsRanges | None = None) -> SIMParams:
    """Draw physically consistent parameters uniformly over ``ranges``."""
    r = ranges or PhysicsRanges()
    for _ in range(1000):
        optics = Optics(
            na=_uniform(rng, r.na),
            wavelength_nm=_uniform(rng, r.wavelength_nm),
            pixel_size_um=_uniform(rng, r.pixel_size_um),
            defocus_waves=_optional(rng, r.defocus_waves, signed=True),
            spherical_waves=_optional(rng, r.spherical_waves, signed=True),
        )
        fraction = _uniform(rng, r.frequency_fraction)
        if fraction * optics.cutoff_per_um <= r.max_pattern_of_nyquist * optics.nyquist_per_um:
            break
    else:  # pragma: no cover - only for impossible user ranges
        raise MLSimError("the physics ranges allow no pattern below the camera Nyquist frequency")
    lo, hi = np.log(r.peak_photons[0]), np.log(r.peak_photons[1])
    peak = float(np.exp(rng.uniform(lo, hi)))
    kind = "emccd" if rng.random() < 0.3 else "scmos"
    if kind == "emccd":
        em_gain = float(rng.uniform(50, 300))
        # keep the brightest pixels inside 16 bits, as a user sets an EMCCD up
        gain = min(1.0, 30000.0 / (em_gain * (peak * 1.5 + 60)))
        camera = Camera(
            kind="emccd",
            offset_adu=float(rng.uniform(100, 500)),
            em_gain=em_gain,
            gain_adu_per_e=gain,
            read_noise_e=float(rng.uniform(20, 60)) * gain,
            quantum_efficiency=float(rng.uniform(0.8, 0.95)),
        )
    else:
        camera = Camera(
            kind="scmos",
            offset_adu=float(rng.uniform(50, 400)),
            gain_adu_per_e=float(rng.uniform(0.3, 2.5)),
            read_noise_e=float(rng.uniform(0.8, 2.5)),
            quantum_efficiency=float(rng.uniform(0.6, 0.95)),
        )
    return SIMParams(
        optics=optics,
        pattern=Pattern(
            frequency_fraction=fraction,
            angle_offset_deg=float(rng.uniform(0, 60)),
            modulation=_uniform(rng, r.modulation),
            angle_error_deg=_uniform(rng, r.angle_error_deg),
            phase_error_rad=_uniform(rng, r.phase_error_rad),
        ),
        signal=Signal(
            peak_photons=peak,
            background_photons=_uniform(rng, r.background_photons),
            haze_fraction=_uniform(rng, r.haze_fraction),
            unevenness=_uniform(rng, r.unevenness),
            haze_modulation=_optional(rng, r.haze_modulation),
            frame_jitter=_optional(rng, r.frame_jitter),
        ),
        camera=camera,
    )


def smooth_field(
    shape: tuple[int, int], correlation_px: float, rng: np.random.Generator
) -> np.ndarray:
    """A smooth random field in [0, 1] with features of about ``correlation_px`` pixels."""
    small = (
        max(2, int(np.ceil(shape[0] / correlation_px)) + 2),
        max(2, int(np.ceil(shape[1] / correlation_px)) + 2),
    )
    coarse = rng.random(small)
    zoomed = ndimage.zoom(coarse, (shape[0] / (small[0] - 1), shape[1] / (small[1] - 1)), order=3)
    f = zoomed[: shape[0], : shape[1]]
    f = ndimage.gaussian_filter(f, correlation_px / 4)
    f -= f.min()
    return f / f.max() if f.max() > 0 else f


@dataclass(frozen=True)
class _Scene:
    """Everything about a group that does not change between its 9 frames."""

    sample_hat: np.ndarray  # band-limited sample spectrum on the fine grid
    sample: np.ndarray  # band-limited sample on the fine grid
    uneven: np.ndarray  # fine grid
    otf_fine: np.ndarray
    photons_per_unit: float  # fine-grid density -> photons per camera pixel
    background: np.ndarray  # camera grid, photons (constant + haze)
    frequency_per_um: float
    haze: np.ndarray | None = None  # camera grid, photons: the part of ``background`` that is lit


def bin2(img: np.ndarray) -> np.ndarray:
    """Sum 2x2 blocks: integration over one camera pixel."""
    h, w = img.shape[-2] // 2, img.shape[-1] // 2
    return img[..., : 2 * h, : 2 * w].reshape(*img.shape[:-2], h, 2, w, 2).sum(axis=(-3, -1))


def _prepare(sample: np.ndarray, params: SIMParams, rng: np.random.Generator) -> _Scene:
    optics, signal = params.optics, params.signal
    fine_px = optics.pixel_size_um / 2
    fc = optics.cutoff_per_um
    k = params.pattern_frequency_per_um
    if k > optics.nyquist_per_um:
        log.warning(
            "pattern frequency %.2f/um is above the camera Nyquist %.2f/um: raw frames alias",
            k,
            optics.nyquist_per_um,
        )
    ky, kx = frequency_grid(sample.shape, fine_px)
    rho = np.hypot(ky, kx)
    # Band-limit to the SIM passband, and below the fine grid's alias limit for shifted bands.
    limit = min(fc + k, 2.0 / optics.pixel_size_um - fc - k)
    s_hat = sfft.fft2(sample) * (rho <= limit)
    s = np.clip(sfft.ifft2(s_hat).real, 0, None)
    s_hat = sfft.fft2(s)
    uneven = 1.0 - signal.unevenness * smooth_field(sample.shape, sample.shape[0] / 1.5, rng)
    if optics.aberrated:
        otf_fine = aberrated_otf(
            sample.shape,
            fine_px,
            optics.na,
            optics.wavelength_nm,
            defocus_waves=optics.defocus_waves,
            spherical_waves=optics.spherical_waves,
        )
    else:
        otf_fine = otf_2d(sample.shape, fine_px, fc)
    widefield = bin2(sfft.ifft2(sfft.fft2(s * uneven) * otf_fine).real)
    high = float(np.percentile(widefield, 99.9))
    photons_per_unit = signal.peak_photons / high if high > 0 else 0.0
    cam_shape = (sample.shape[0] // 2, sample.shape[1] // 2)
    haze = (
        signal.haze_fraction
        * signal.peak_photons
        * smooth_field(cam_shape, cam_shape[0] / 2.0, rng)
    )
    background = signal.background_photons + haze
    return _Scene(s_hat, s, uneven, otf_fine, photons_per_unit, background, k, haze)


def _frame_photons(
    scene: _Scene,
    params: SIMParams,
    angle_rad: float,
    phase_rad: float,
    power: float = 1.0,
) -> np.ndarray:
    """Expected photons of one frame; ``power`` scales the illumination (frame jitter)."""
    fine_px = params.optics.pixel_size_um / 2
    illum = illumination(
        scene.sample.shape,
        fine_px,
        scene.frequency_per_um,
        angle_rad,
        phase_rad,
        params.pattern.modulation,
    )
    emitted = scene.sample * illum * scene.uneven
    blurred = sfft.ifft2(sfft.fft2(emitted) * scene.otf_fine).real
    photons = np.clip(bin2(blurred), 0, None) * (scene.photons_per_unit * power)
    m_haze = params.signal.haze_modulation
    if scene.haze is not None and (m_haze > 0 or power != 1.0):
        # the lit haze: scaled with the illumination, and weakly patterned
        lit = scene.haze * power
        if m_haze > 0:
            carrier = illumination(
                scene.sample.shape, fine_px, scene.frequency_per_um, angle_rad, phase_rad, 1.0
            )
            lit = lit * (1.0 + m_haze * (bin2(carrier) / 4.0 - 1.0))
        return photons + lit + (scene.background - scene.haze)
    return photons + scene.background


def _ground_truth(scene: _Scene, params: SIMParams) -> np.ndarray:
    fc = params.optics.cutoff_per_um
    ky, kx = frequency_grid(scene.sample.shape, params.optics.pixel_size_um / 2)
    otf_sim = incoherent_otf(np.hypot(ky, kx) / (fc + scene.frequency_per_um))
    gt = sfft.ifft2(scene.sample_hat * otf_sim).real
    # photons per camera pixel: a camera pixel integrates 4 fine pixels
    return (np.clip(gt, 0, None) * 4.0 * scene.photons_per_unit).astype(np.float32)


def simulate_group(
    params: SIMParams | None = None,
    sample: str | np.ndarray = "filaments",
    size: int | tuple[int, int] = 256,
    seed: int | np.random.Generator | None = 0,
) -> SimGroup:
    """Simulate one SIM group (9 raw frames) and its 2x ground truth.

    Parameters
    ----------
    params : SIMParams, optional
        Physics; defaults to ``SIMParams()``.
    sample : str or ndarray
        A kind in ``SAMPLE_KINDS`` or a density array of shape ``(2N, 2M)`` on the 2x grid.
    size : int or (int, int)
        Camera frame size ``N`` (or ``(N, M)``). Ignored when ``sample`` is an array.
    seed : int, Generator or None
        Seed for sample, pattern errors, backgrounds and noise; the same seed gives the same group.

    Returns
    -------
    SimGroup
    """
    params = params or SIMParams()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if isinstance(sample, str):
        n = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(n) < 8:
            raise MLSimError(f"frame size {n} is too small; expected at least 8 x 8 pixels")
        kind = sample
        density = make_sample(kind, (2 * n[0], 2 * n[1]), params.optics.pixel_size_um / 2, rng)
    else:
        density = np.asarray(sample, dtype=np.float64)
        kind = "custom"
        if density.ndim != 2 or density.shape[0] % 2 or density.shape[1] % 2:
            raise MLSimError(
                f"sample array has shape {density.shape}; expected (2N, 2M), even sizes"
            )
    scene = _prepare(density, params, rng)
    angles, phases = draw_angles_phases(params.pattern, rng)
    jitter = params.signal.frame_jitter
    powers = (
        1.0 + jitter * rng.standard_normal(N_ANGLES * N_PHASES)
        if jitter > 0
        else np.ones(N_ANGLES * N_PHASES)
    )
    photons = np.stack(
        [
            _frame_photons(scene, params, angles[a], phases[a, p], float(powers[N_PHASES * a + p]))
            for a in range(N_ANGLES)
            for p in range(N_PHASES)
        ]
    )
    raw = params.camera.expose(photons, rng)
    return SimGroup(
        raw=raw,
        gt=_ground_truth(scene, params),
        params=params,
        angles_rad=angles,
        phases_rad=phases,
        pattern_frequency_per_um=scene.frequency_per_um,
        seed=seed if isinstance(seed, int) else None,
        sample_kind=kind,
    )


class FrameRenderer:
    """Renders single SIM frames of one fixed scene on demand (demo mode's simulated optics).

    The scene (sample, haze, illumination field) is prepared once; each call renders one
    angle/phase with fresh noise, as a camera exposure would.
    """

    def __init__(
        self,
        params: SIMParams,
        sample: str | np.ndarray = "mixture",
        size: int | tuple[int, int] = 512,
        seed: int = 0,
    ) -> None:
        self.params = params
        self._rng = np.random.default_rng(seed)
        n = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        density = (
            make_sample(sample, (2 * n[0], 2 * n[1]), params.optics.pixel_size_um / 2, self._rng)
            if isinstance(sample, str)
            else np.asarray(sample, float)
        )
        self._scene = _prepare(density, params, self._rng)
        self.angles_rad, self.phases_rad = draw_angles_phases(params.pattern, self._rng)
        self.ground_truth = _ground_truth(self._scene, params)
        self._noiseless: dict[tuple[int, int], np.ndarray] = {}
        self._camera_maps = params.camera.draw_maps(n, self._rng)

    def render(self, angle: int, phase: int, sample_scale: float = 1.0) -> np.ndarray:
        """One noisy uint16 frame for pattern state (angle, phase); ``sample_scale`` dims it.

        The 9 noiseless frames are computed once and cached; each call draws fresh noise through
        one camera whose fixed-pattern maps stay the same for the renderer's lifetime.
        """
        key = (angle, phase)
        photons = self._noiseless.get(key)
        if photons is None:
            photons = _frame_photons(
                self._scene, self.params, self.angles_rad[angle], self.phases_rad[angle, phase]
            )
            self._noiseless[key] = photons
        if sample_scale != 1.0:
            bg = self._scene.background
            photons = bg + (photons - bg) * sample_scale
        return self.params.camera.expose(photons, self._rng, maps=self._camera_maps)


__all__ = [
    "SAMPLE_KINDS",
    "FrameRenderer",
    "PhysicsRanges",
    "SIMParams",
    "Signal",
    "SimGroup",
    "bin2",
    "random_params",
    "realistic_ranges",
    "simulate_group",
    "smooth_field",
]
