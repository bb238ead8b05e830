"""Out-of-distribution check: is a group's physics inside the ranges the model was trained on?

The model card records the physics ranges of the training data. For a group, the Wiener
parameter estimator (`mlsim_live.recon.estimate.estimate_pattern`) measures the pattern
frequency, the modulation and the signal-to-noise ratio on a central crop (a crop, not a
decimated frame: decimating would alias the pattern, which lies close to the cutoff). The
estimate costs about 0.2-1 s on 2 CPU cores, so `OODChecker.check` runs it on the first group
and then once every ``every`` groups, and returns the last verdict in between: the physics of
an acquisition changes slowly.

What can be checked, and how reliably:

- **Optics** (NA, wavelength, pixel size), when the caller knows them: exact.
- **Pattern frequency**: as a fraction of the OTF cutoff when the optics are known; otherwise
  in cycles per pixel against the range that the trained optics and fractions span (wide, so
  only gross mismatches show). Only trusted when the pattern peak stands out (contrast >= 8
  without optics, >= 6 with them; pure noise gives 3-5): a weak peak is no measurement.
- **Modulation**: the estimate is biased low at low SNR, so it is checked only at SNR >= 15
  and flagged below 60 % of the trained minimum.
- **Signal**: flagged when the estimator's SNR is below 1.5, i.e. the group can hardly be told
  from pure noise (which gives about 1.25; the weakest training data, 10 photons, gives 2-3.5),
  or when no signal can be measured at all. Photon counts themselves cannot be measured without
  the camera gain, so brighter-than-trained data is not flagged (it is also harmless).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError

log = logging.getLogger(__name__)

#: Keys of the physics ranges this check understands (a subset of `mlsim_live.sim.PhysicsRanges`).
RANGE_KEYS = (
    "na",
    "wavelength_nm",
    "pixel_size_um",
    "frequency_fraction",
    "modulation",
    "peak_photons",
)
MIN_CONTRAST_WITH_OPTICS = 6.0
MIN_CONTRAST_WITHOUT_OPTICS = 8.0
MIN_SNR_FOR_MODULATION = 15.0
MODULATION_FACTOR = 0.6
MIN_SNR = 1.5
FREQUENCY_MARGIN = 0.03  # fraction of the cutoff
CYCLES_MARGIN = 0.05  # relative


@dataclass(frozen=True)
class TrainingRanges:
    """Physics ranges a model was trained on (each ``(low, high)`` or None when unknown)."""

    na: tuple[float, float] | None = None
    wavelength_nm: tuple[float, float] | None = None
    pixel_size_um: tuple[float, float] | None = None
    frequency_fraction: tuple[float, float] | None = None
    modulation: tuple[float, float] | None = None
    peak_photons: tuple[float, float] | None = None
    max_pattern_of_nyquist: float = 0.98

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingRanges:
        """Read ranges from a dict like ``PhysicsRanges.to_dict()``; unknown keys are ignored."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            value = data.get(f.name)
            if value is None:
                continue
            if f.name == "max_pattern_of_nyquist":
                kwargs[f.name] = float(value)
            elif isinstance(value, list | tuple) and len(value) == 2:
                kwargs[f.name] = (float(value[0]), float(value[1]))
        return cls(**kwargs)

    @property
    def empty(self) -> bool:
        """True when no range is known."""
        return all(getattr(self, k) is None for k in RANGE_KEYS)

    def cycles_per_px(self) -> tuple[float, float] | None:
        """Pattern frequency range in cycles per camera pixel that the trained physics spans."""
        if None in (self.na, self.wavelength_nm, self.pixel_size_um, self.frequency_fraction):
            return None
        assert self.na and self.wavelength_nm and self.pixel_size_um and self.frequency_fraction
        lo = (
            self.frequency_fraction[0]
            * 2.0
            * self.na[0]
            / (self.wavelength_nm[1] * 1e-3)
            * self.pixel_size_um[0]
        )
        hi = (
            self.frequency_fraction[1]
            * 2.0
            * self.na[1]
            / (self.wavelength_nm[0] * 1e-3)
            * self.pixel_size_um[1]
        )
        return lo, min(hi, 0.5 * self.max_pattern_of_nyquist)


def find_ranges(card: dict[str, Any]) -> TrainingRanges | None:
    """Find the training physics ranges anywhere in a model card (None when absent).

    Looks for a dict with a ``frequency_fraction`` pair, first under the usual keys
    (``training_ranges``, ``physics_ranges``, ``ranges``), then anywhere in the card.
    """

    def looks_like(d: Any) -> bool:
        return isinstance(d, dict) and isinstance(d.get("frequency_fraction"), list | tuple)

    for key in ("training_ranges", "physics_ranges", "ranges"):
        if looks_like(card.get(key)):
            return TrainingRanges.from_dict(card[key])
    stack: list[Any] = [card]
    while stack:
        item = stack.pop(0)
        if looks_like(item):
            return TrainingRanges.from_dict(item)
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(x for x in item if isinstance(x, dict))
    return None


def _fmt_range(r: tuple[float, float], digits: int = 2) -> str:
    return f"{r[0]:.{digits}f}-{r[1]:.{digits}f}"


def optics_reasons(ranges: TrainingRanges, optics: Any) -> list[str]:
    """Reasons why given optics (``na``, ``wavelength_nm``, ``pixel_size_um``) are untrained."""
    reasons = []
    for key, digits, unit in (
        ("na", 2, ""),
        ("wavelength_nm", 0, " nm"),
        ("pixel_size_um", 3, " um"),
    ):
        trained = getattr(ranges, key)
        value = getattr(optics, key, None)
        if trained is None or value is None:
            continue
        if not trained[0] * 0.999 <= float(value) <= trained[1] * 1.001:
            reasons.append(
                f"{key} {float(value):.{digits}f}{unit} is outside the trained "
                f"{_fmt_range(trained, digits)}{unit}"
            )
    return reasons


def central_crop(group: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` part of ``(9, H, W)`` (the whole frame when smaller)."""
    _, h, w = group.shape
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return group[:, y0 : y0 + size, x0 : x0 + size]


class OODChecker:
    """Compares estimated physics of groups with a model's training ranges.

    Parameters
    ----------
    ranges : TrainingRanges
        From the model card (`find_ranges`).
    optics : Optics, optional
        The microscope's optics when known: gives the exact OTF cutoff (pattern frequency as a
        fraction of it) and is itself checked against the trained optics.
    every : int
        Estimate on the first group and then every ``every``-th; in between the last verdict
        is returned.
    crop : int
        Side of the central crop the estimate is made on.
    """

    def __init__(
        self, ranges: TrainingRanges, optics: Any = None, every: int = 10, crop: int = 256
    ) -> None:
        if every < 1:
            raise MLSimError(f"OOD check interval is {every}; expected >= 1")
        self.ranges = ranges
        self.optics = optics
        self.every = int(every)
        self.crop = int(crop)
        self._calls = 0
        self._last: list[str] = []
        self._static = optics_reasons(ranges, optics) if optics is not None else []
        self.last_estimate: Any = None

    def reset(self) -> None:
        """Estimate on the next group checked (a new file or acquisition begins)."""
        self._calls = 0

    def check(self, group: np.ndarray) -> list[str]:
        """Reasons why ``group`` is outside the trained ranges (empty: inside), estimated once
        every ``every`` calls."""
        if self._calls % self.every == 0:
            self._last = self.evaluate(group)
        self._calls += 1
        return list(self._last)

    def evaluate(self, group: np.ndarray) -> list[str]:
        """Estimate the physics of ``group`` now and return the reasons (empty: inside)."""
        from mlsim_live.recon.estimate import estimate_pattern

        reasons = list(self._static)
        frames = central_crop(np.asarray(group), self.crop)
        try:
            est = estimate_pattern(frames, optics=self.optics)
        except MLSimError as exc:
            self.last_estimate = None
            return [*reasons, f"no SIM signal could be measured ({exc})"]
        self.last_estimate = est
        snr = est.snr
        if snr is not None and snr < MIN_SNR:
            low = self.ranges.peak_photons[0] if self.ranges.peak_photons else None
            trained = f"; trained down to {low:g} photons" if low is not None else ""
            reasons.append(f"signal is at the noise level (SNR {snr:.2f}{trained})")
        contrast = min(p.peak_contrast for p in est.patterns)
        if self.optics is not None:
            ff = self.ranges.frequency_fraction
            if ff is not None and contrast >= MIN_CONTRAST_WITH_OPTICS:
                value = est.frequency_fraction
                if not ff[0] - FREQUENCY_MARGIN <= value <= ff[1] + FREQUENCY_MARGIN:
                    reasons.append(
                        f"pattern frequency {value:.2f} of the OTF cutoff is outside the "
                        f"trained {_fmt_range(ff)}"
                    )
        else:
            span = self.ranges.cycles_per_px()
            if span is not None and contrast >= MIN_CONTRAST_WITHOUT_OPTICS:
                value = float(np.mean([p.frequency_cycles_per_px for p in est.patterns]))
                lo, hi = span[0] * (1 - CYCLES_MARGIN), span[1] * (1 + CYCLES_MARGIN)
                if not lo <= value <= hi:
                    reasons.append(
                        f"pattern frequency {value:.3f} cycles/pixel is outside the "
                        f"{_fmt_range(span, 3)} that the trained optics span"
                    )
        mod = self.ranges.modulation
        if (
            mod is not None
            and snr is not None
            and snr >= MIN_SNR_FOR_MODULATION
            and math.isfinite(est.modulation)
            and est.modulation < MODULATION_FACTOR * mod[0]
        ):
            reasons.append(
                f"pattern modulation {est.modulation:.2f} is below the trained {_fmt_range(mod)}"
            )
        return reasons
