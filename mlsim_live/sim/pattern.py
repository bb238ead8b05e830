"""Sinusoidal SIM illumination: 3 angles 60 degrees apart, 3 phases 2pi/3 apart."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlsim_live.errors import MLSimError

N_ANGLES = 3
N_PHASES = 3


@dataclass(frozen=True)
class Pattern:
    """Illumination pattern.

    Attributes
    ----------
    frequency_fraction : float
        Pattern spatial frequency as a fraction of the widefield cutoff 2 NA / lambda.
        Ignored when ``period_nm`` is given.
    period_nm : float or None
        Pattern period in the sample plane; overrides ``frequency_fraction``.
    angle_offset_deg : float
        Orientation of the first angle; the others follow at +60 and +120 degrees.
    modulation : float
        Modulation depth m of ``1 + m cos(...)``, 0 to 1.
    angle_error_deg : float
        Standard deviation of a random error added to each angle.
    phase_error_rad : float
        Standard deviation of a random error added to each phase step.
    """

    frequency_fraction: float = 0.85
    period_nm: float | None = None
    angle_offset_deg: float = 8.0
    modulation: float = 0.8
    angle_error_deg: float = 0.0
    phase_error_rad: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.modulation <= 1.0:
            raise MLSimError(f"modulation {self.modulation} is out of range; expected 0 to 1")
        if self.period_nm is None and not 0.05 <= self.frequency_fraction <= 1.0:
            raise MLSimError(
                f"pattern frequency {self.frequency_fraction} of the cutoff is out of range; "
                "expected 0.05 to 1.0"
            )
        if self.period_nm is not None and self.period_nm <= 0:
            raise MLSimError(f"pattern period {self.period_nm} nm must be positive")

    def frequency_per_um(self, cutoff_per_um: float) -> float:
        """Pattern frequency in cycles/um for an optical cutoff in cycles/um."""
        if self.period_nm is not None:
            return 1e3 / self.period_nm
        return self.frequency_fraction * cutoff_per_um


def draw_angles_phases(pattern: Pattern, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw the actual angles (3,) and phases (3, 3) in radians, with the pattern's errors."""
    angles = np.deg2rad(pattern.angle_offset_deg + 60.0 * np.arange(N_ANGLES))
    angles = angles + np.deg2rad(pattern.angle_error_deg) * rng.standard_normal(N_ANGLES)
    start = rng.uniform(0.0, 2.0 * np.pi, size=(N_ANGLES, 1))
    steps = 2.0 * np.pi / N_PHASES * np.arange(N_PHASES)[None, :]
    phases = start + steps + pattern.phase_error_rad * rng.standard_normal((N_ANGLES, N_PHASES))
    return angles, phases


def illumination(
    shape: tuple[int, int],
    pixel_size_um: float,
    frequency_per_um: float,
    angle_rad: float,
    phase_rad: float,
    modulation: float,
) -> np.ndarray:
    """``1 + m cos(2 pi k.r + phase)`` sampled at pixel centres, r in micrometres."""
    y = (np.arange(shape[0]) + 0.5) * pixel_size_um
    x = (np.arange(shape[1]) + 0.5) * pixel_size_um
    kx = frequency_per_um * np.cos(angle_rad)
    ky = frequency_per_um * np.sin(angle_rad)
    arg = 2.0 * np.pi * (ky * y[:, None] + kx * x[None, :]) + phase_rad
    return 1.0 + modulation * np.cos(arg)
