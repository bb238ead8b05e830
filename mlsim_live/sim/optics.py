"""Widefield optics: the incoherent OTF of a circular pupil, in physical units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlsim_live.errors import MLSimError


@dataclass(frozen=True)
class Optics:
    """Detection optics and camera sampling.

    Attributes
    ----------
    na : float
        Numerical aperture of the detection objective.
    wavelength_nm : float
        Emission wavelength.
    pixel_size_um : float
        Camera pixel size in the sample plane.
    defocus_waves : float
        Zernike defocus (Noll 4, RMS-normalized) coefficient of the pupil phase, in waves.
    spherical_waves : float
        Zernike primary spherical aberration (Noll 11, RMS-normalized) coefficient, in waves
        (refractive-index mismatch, a wrong coverslip or collar setting).
    """

    na: float = 1.4
    wavelength_nm: float = 525.0
    pixel_size_um: float = 0.08
    defocus_waves: float = 0.0
    spherical_waves: float = 0.0

    def __post_init__(self) -> None:
        if not 0.1 <= self.na <= 1.7:
            raise MLSimError(f"NA {self.na} is out of range; expected 0.1 to 1.7")
        if not 200.0 <= self.wavelength_nm <= 1200.0:
            raise MLSimError(
                f"wavelength {self.wavelength_nm} nm is out of range; expected 200 to 1200 nm"
            )
        if not 0.005 <= self.pixel_size_um <= 2.0:
            raise MLSimError(
                f"pixel size {self.pixel_size_um} um is out of range; expected 0.005 to 2 um"
            )
        for name in ("defocus_waves", "spherical_waves"):
            if not abs(getattr(self, name)) <= 2.0:
                raise MLSimError(
                    f"{name} {getattr(self, name)} is out of range; expected -2 to 2 waves"
                )

    def to_dict(self) -> dict[str, float]:
        """JSON-able dict; the aberration terms only when present."""
        out = {
            "na": self.na,
            "wavelength_nm": self.wavelength_nm,
            "pixel_size_um": self.pixel_size_um,
        }
        if self.aberrated:
            out["defocus_waves"] = self.defocus_waves
            out["spherical_waves"] = self.spherical_waves
        return out

    @property
    def aberrated(self) -> bool:
        """True when the pupil carries a phase aberration (defocus or spherical)."""
        return self.defocus_waves != 0.0 or self.spherical_waves != 0.0

    @property
    def cutoff_per_um(self) -> float:
        """Widefield OTF cutoff 2 NA / lambda, in cycles per micrometre."""
        return 2.0 * self.na / (self.wavelength_nm * 1e-3)

    @property
    def nyquist_per_um(self) -> float:
        """Camera Nyquist frequency 1 / (2 pixel), in cycles per micrometre."""
        return 0.5 / self.pixel_size_um


def frequency_grid(shape: tuple[int, int], pixel_size_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the (ky, kx) spatial-frequency grids of an FFT of ``shape``, in cycles/um.

    Unshifted (numpy FFT) order.
    """
    ky = np.fft.fftfreq(shape[0], d=pixel_size_um)
    kx = np.fft.fftfreq(shape[1], d=pixel_size_um)
    return ky[:, None], kx[None, :]


def incoherent_otf(rho_norm: np.ndarray) -> np.ndarray:
    """OTF of an aberration-free circular pupil at normalized frequency ``rho / cutoff``.

    ``(2/pi) (acos(r) - r sqrt(1 - r^2))`` for ``r < 1``, zero beyond; 1 at ``r = 0``.
    """
    r = np.clip(np.asarray(rho_norm, dtype=np.float64), 0.0, 1.0)
    return (2.0 / np.pi) * (np.arccos(r) - r * np.sqrt(1.0 - r * r))


def otf_2d(
    shape: tuple[int, int],
    pixel_size_um: float,
    cutoff_per_um: float,
    *,
    shift_per_um: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Sample the circular-pupil OTF on an FFT grid (unshifted order).

    Parameters
    ----------
    shape : (int, int)
        Grid shape.
    pixel_size_um : float
        Pixel size of the grid.
    cutoff_per_um : float
        OTF cutoff, ``2 NA / lambda`` for widefield.
    shift_per_um : (float, float)
        Centre of the OTF as (ky, kx), for shifted SIM bands.

    Returns
    -------
    ndarray of float64, values in [0, 1].
    """
    ky, kx = frequency_grid(shape, pixel_size_um)
    rho = np.hypot(ky - shift_per_um[0], kx - shift_per_um[1])
    return incoherent_otf(rho / cutoff_per_um)


def aberrated_otf(
    shape: tuple[int, int],
    pixel_size_um: float,
    na: float,
    wavelength_nm: float,
    *,
    defocus_waves: float = 0.0,
    spherical_waves: float = 0.0,
) -> np.ndarray:
    """Incoherent OTF of a circular pupil with a defocus and spherical phase, on an FFT grid.

    The pupil ``P(f) = circ(|f| <= NA/lambda) exp(2 pi i W(rho))`` with
    ``W = a_d sqrt(3)(2 rho^2 - 1) + a_s sqrt(5)(6 rho^4 - 6 rho^2 + 1)`` (RMS-normalized
    Zernike terms, in waves); PSF ``|F^-1 P|^2``; OTF its Fourier transform, 1 at zero
    frequency. Without aberrations this is `otf_2d` up to sampling.

    Returns
    -------
    ndarray of float64 (real: both terms are radially symmetric), unshifted order.
    """
    ky, kx = frequency_grid(shape, pixel_size_um)
    rho = np.hypot(ky, kx) / (na / (wavelength_nm * 1e-3))
    inside = rho <= 1.0
    r2 = rho * rho
    phase = defocus_waves * np.sqrt(3.0) * (2 * r2 - 1) + spherical_waves * np.sqrt(5.0) * (
        6 * r2 * r2 - 6 * r2 + 1
    )
    pupil = np.where(inside, np.exp(2j * np.pi * phase), 0.0)
    psf = np.abs(np.fft.ifft2(pupil)) ** 2
    otf = np.fft.fft2(psf).real
    return np.clip(otf / otf[0, 0], -1.0, 1.0)


def optics_from(
    na: float | None, wavelength_nm: float | None, pixel_size_um: float | None
) -> Optics | None:
    """`Optics` when NA, emission wavelength and pixel size are all known, else None.

    Raises `MLSimError` when only one of NA and wavelength is given: the OTF needs both.
    """
    if (na is None) != (wavelength_nm is None):
        raise MLSimError(
            "NA and emission wavelength go together; expected both --na and --wavelength-nm "
            "or neither"
        )
    if na is None or wavelength_nm is None or pixel_size_um is None:
        return None
    return Optics(
        na=float(na), wavelength_nm=float(wavelength_nm), pixel_size_um=float(pixel_size_um)
    )


@dataclass(frozen=True)
class OpticsValues:
    """NA, emission wavelength and pixel size as far as one place knows them (None: unknown).

    The options a user gave are one; what a recording says about itself (file metadata, a
    dataset's tags, Micro-Manager's pixel calibration) is another. `resolve_optics` combines
    them by the one rule every command follows.
    """

    na: float | None = None
    wavelength_nm: float | None = None
    pixel_size_um: float | None = None


def resolve_optics(
    options: OpticsValues, recording: OpticsValues | None = None, where: str | None = None
) -> Optics | None:
    """The one rule for optics, for every command (reconstruct, replay, demo, live).

    Each value comes from the option when given, else from the recording. The result is an
    `Optics` when all three are known, else None (reconstruct without known optics). An NA or
    wavelength option whose partner neither option nor recording supplies raises: a lone
    ``--na`` or ``--wavelength-nm`` is never silently ignored.

    Parameters
    ----------
    options : OpticsValues
        The values the user gave.
    recording : OpticsValues, optional
        The values the recording carries.
    where : str, optional
        Prefix of the error message (e.g. the file path).

    Raises
    ------
    MLSimError
        A lone NA or wavelength option, or a value out of range.
    """
    rec = recording or OpticsValues()
    na = options.na if options.na is not None else rec.na
    wavelength_nm = (
        options.wavelength_nm if options.wavelength_nm is not None else rec.wavelength_nm
    )
    pixel_size_um = (
        options.pixel_size_um if options.pixel_size_um is not None else rec.pixel_size_um
    )
    lone_option = (options.na is None) != (options.wavelength_nm is None)
    if not lone_option and (na is None or wavelength_nm is None):
        return None  # incomplete recording alone: reconstruct without known optics
    try:
        return optics_from(na, wavelength_nm, pixel_size_um)
    except MLSimError as exc:
        raise MLSimError(f"{where}: {exc}" if where else str(exc)) from exc
