"""What a batch reconstruction is asked to do: how files are read, what reconstructs them, and
the task and output of one group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlsim_live.io.tiff import RawStack


@dataclass(frozen=True)
class ReadOptions:
    """How raw files are read (see `mlsim_live.io.read_raw_stack`)."""

    order: str = "angle-major"
    angle_axis: str | None = None
    phase_axis: str | None = None


@dataclass(frozen=True)
class ReconConfig:
    """What reconstructs the groups; the optics given here override the files' metadata.

    Attributes
    ----------
    method : str
        ``"rcan"``, ``"wiener"`` or ``"widefield"``.
    model : str or None
        ONNX model path for ``"rcan"``.
    na, wavelength_nm, pixel_size_um : float or None
        Optics; a value missing here is taken from the file's metadata when it has one.
    offset_adu : float or None
        Camera offset to subtract instead of the reconstructor's own estimate.
    """

    method: str = "wiener"
    model: str | None = None
    na: float | None = None
    wavelength_nm: float | None = None
    pixel_size_um: float | None = None
    offset_adu: float | None = None

    def optics_for(self, stack: RawStack) -> Any:
        """`Optics` from this config and the file's metadata, or None when any part is unknown.

        The one rule of `mlsim_live.sim.optics.resolve_optics`: a lone ``--na`` or
        ``--wavelength-nm`` whose partner the file's metadata does not supply raises.
        """
        from mlsim_live.sim.optics import OpticsValues, resolve_optics

        options = OpticsValues(self.na, self.wavelength_nm, self.pixel_size_um)
        recording = OpticsValues(stack.na, stack.wavelength_nm, stack.pixel_size_um)
        return resolve_optics(options, recording, where=str(stack.path))

    def pixel_size_for(self, stack: RawStack) -> float | None:
        """Raw pixel size of ``stack``: the configured one, else the file's."""
        return self.pixel_size_um if self.pixel_size_um is not None else stack.pixel_size_um


@dataclass(frozen=True)
class GroupTask:
    """One unit of work: reconstruct group ``t`` of the file at ``path``."""

    path: str
    read: ReadOptions
    t: int
    config: ReconConfig
    optics: Any = None


@dataclass(frozen=True)
class GroupOutput:
    """The reconstruction of one group, with what made it."""

    t: int
    sr: np.ndarray
    estimate: dict[str, Any] | None
    reconstructor: str
    provider: str
    scale: int
    ood: list[str] | None = None  # reasons outside the training ranges; None: not checked
    fallback: bool | None = None  # reconstructed the fallback way; None: the method has none
