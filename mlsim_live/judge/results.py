"""What the real-data judge found: `MethodJudgement` per method, `StackJudgement` per stack and
`FolderJudgement` per run, and the roles of the classical methods (baseline and reference)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.judge.beads import BeadStats
from mlsim_live.judge.frc import FRCResult
from mlsim_live.judge.ladder import LadderScore
from mlsim_live.judge.photons import PhotonCalibration
from mlsim_live.sim.optics import Optics

#: Methods that learn nothing: the baseline and the reference are always judged.
CLASSICAL_METHODS = ("widefield", "wiener")
REFERENCE_METHOD = "wiener"
BASELINE_METHOD = "widefield"


@dataclass(frozen=True)
class MethodJudgement:
    """Everything measured for one method on one stack.

    Attributes
    ----------
    method : str
        The name it was built with (e.g. ``"rcan"``).
    reconstructor : str
        The reconstructor's own name (e.g. ``"rcan:rcan_default.onnx"``).
    frc : FRCResult
        Split-half FRC of the method's reconstructions of the two halves.
    ladder : tuple of LadderScore
        Scores per rung against the full-dose Wiener reconstruction, full dose first.
    beads : BeadStats or None
        Bead counts and sizes on the full-dose reconstruction (bead stacks only).
    fallback : tuple of float or str
        Inputs the method did not reconstruct its own way but sent to its fallback (e.g.
        wiener-rcan where the Wiener path finds no signal): ladder dose fractions, and
        ``"halves"`` when a split-half FRC input did. Empty for most methods.
    """

    method: str
    reconstructor: str
    frc: FRCResult
    ladder: tuple[LadderScore, ...]
    beads: BeadStats | None = None
    fallback: tuple[float | str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        d: dict[str, Any] = {"reconstructor": self.reconstructor}
        frc = self.frc.to_dict()
        d["frc_resolution_px"] = frc.pop("frc_resolution_px")
        if "frc_resolution_nm" in frc:
            d["frc_resolution_nm"] = frc.pop("frc_resolution_nm")
        d["frc"] = frc
        d["ladder"] = [s.to_dict() for s in self.ladder]
        if self.beads is not None:
            d["beads"] = self.beads.to_dict()
        if self.fallback:
            d["fallback"] = list(self.fallback)
        return d


@dataclass(frozen=True)
class StackJudgement:
    """The judge's results for one raw group.

    Attributes
    ----------
    name : str
        Stack name (file stem).
    frame_shape : (int, int)
        Camera frame size.
    pixel_size_um : float or None
        Camera pixel size; the reconstructions' grid has half of it (``sr_pixel_size_um``).
    optics : Optics or None
        Optics from the sidecar.
    calibration : PhotonCalibration
        Camera offset and gain from the data.
    cutoff_cycles_per_px, pattern_cycles_per_px : float
        Widefield OTF cutoff and mean pattern frequency, per camera pixel (optics or estimate).
    methods : tuple of MethodJudgement
    expected : dict
        Theoretical figures: widefield and SIM resolution limits (``1 / fc``, ``1 / (fc + k)``)
        and, for beads, the expected bead FWHM through ideal widefield and SIM optics.
    seed : int
    seconds : float
        Wall time of the judgement.
    crops : dict
        ``{method: {dose fraction: 2D image}}`` centre crops for pictures (not in the JSON).
    """

    name: str
    frame_shape: tuple[int, int]
    pixel_size_um: float | None
    optics: Optics | None
    calibration: PhotonCalibration
    cutoff_cycles_per_px: float
    pattern_cycles_per_px: float
    methods: tuple[MethodJudgement, ...]
    expected: dict[str, float | None]
    seed: int
    seconds: float
    sample_kind: str | None = None
    crops: dict[str, dict[float, np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def sr_pixel_size_um(self) -> float | None:
        """Pixel size of the reconstructions (the 2x grid)."""
        return None if self.pixel_size_um is None else self.pixel_size_um / 2

    def method(self, name: str) -> MethodJudgement:
        """The judgement of one method."""
        for m in self.methods:
            if m.method == name:
                return m
        raise MLSimError(f"method {name!r} was not judged; judged: {self.method_names}")

    @property
    def method_names(self) -> tuple[str, ...]:
        """Names of the judged methods, in order."""
        return tuple(m.method for m in self.methods)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: units in the key names."""
        d: dict[str, Any] = {
            "stack": self.name,
            "frame_shape": list(self.frame_shape),
            "pixel_size_um": self.pixel_size_um,
            "sr_pixel_size_um": self.sr_pixel_size_um,
            "units": "nm" if self.pixel_size_um is not None else "px",
            "optics": None
            if self.optics is None
            else {
                "na": self.optics.na,
                "emission_nm": self.optics.wavelength_nm,
                "pixel_size_um": self.optics.pixel_size_um,
            },
            "sample_kind": self.sample_kind,
            "photons": self.calibration.to_dict(),
            "cutoff_cycles_per_px": self.cutoff_cycles_per_px,
            "pattern_cycles_per_px": self.pattern_cycles_per_px,
            "expected": self.expected,
            "reference": f"{REFERENCE_METHOD} at full dose",
            "seed": self.seed,
            "seconds": self.seconds,
            "methods": {m.method: m.to_dict() for m in self.methods},
        }
        return d


@dataclass(frozen=True)
class FolderJudgement:
    """The judge's results for a folder of stacks and the files written.

    Attributes
    ----------
    stacks : tuple of StackJudgement
    skipped : tuple of (path, reason)
        Stacks that could not be judged, each with a one-line reason.
    written : tuple of Path
        Output files.
    seconds : float
        Wall time of the whole run.
    """

    stacks: tuple[StackJudgement, ...]
    skipped: tuple[tuple[str, str], ...]
    written: tuple[Path, ...]
    seconds: float
