"""SIMULATED SIM optics for demo mode: patterned illumination seen by Micro-Manager's DemoCamera.

A real SIM microscope sets the pattern (angle, phase) through a device before each exposure, and
the camera records the sample under that pattern. In demo mode the pattern device is a
DemoCamera state device ("SIM Pattern", set per event through the ``SIM`` config group), and
this module plays the optics: a post-hardware hook reads which pattern the device is showing, and
an image-processor stage placed ahead of the ``SIMProcessor`` replaces the DemoCamera's frame by a
physically simulated raw frame of a fixed sample under that pattern (fresh camera noise each
exposure). Every frame is marked as simulated in its metadata, with the simulated NA, emission
wavelength and pixel size.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.live.acquire import preset_name
from mlsim_live.sim import Camera, FrameRenderer, Optics, Pattern, Signal, SIMParams

log = logging.getLogger(__name__)

PATTERN_DEVICE = "SIM Pattern"
PATTERN_GROUP = "SIM"
SIMULATED_TAG = "mlsim-live-Simulated"
PATTERN_TAG = "mlsim-live-SIMPattern"
# The simulated optics, so a replay of the recording reconstructs as the live run did.
NA_TAG = "mlsim-live-NA"
WAVELENGTH_TAG = "mlsim-live-EmissionWavelength_nm"
_PRESET = re.compile(r"^A(\d)P(\d)$")

# The simulated instrument: a 1.4 NA oil objective, green emission, 80 nm camera pixels,
# a pattern at 85 % of the widefield cutoff, a moderately bright sample on an sCMOS camera.
DEMO_PARAMS = SIMParams(
    optics=Optics(na=1.4, wavelength_nm=525.0, pixel_size_um=0.08),
    pattern=Pattern(frequency_fraction=0.85, angle_offset_deg=10.0, modulation=0.8),
    signal=Signal(peak_photons=1000.0, background_photons=20.0, haze_fraction=0.2),
    camera=Camera(kind="scmos", offset_adu=100.0, gain_adu_per_e=0.5, read_noise_e=1.5),
)


def parse_preset(name: str) -> tuple[int, int] | None:
    """``"A1P2"`` -> ``(1, 2)``; None for anything else."""
    match = _PRESET.match(str(name).strip())
    if not match:
        return None
    angle, phase = int(match.group(1)), int(match.group(2))
    return (angle, phase) if angle < 3 and phase < 3 else None


def _axes_key(axes: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(axes.items()))


class SimulatedSIMOptics:
    """Replaces camera frames by SIMULATED SIM raw frames of the pattern the device shows.

    Parameters
    ----------
    size : int
        Frame size N (N x N camera pixels).
    params : SIMParams
        The simulated instrument (optics, pattern, photon budget, camera).
    sample : str
        Sample kind of ``mlsim_live.sim.SAMPLE_KINDS``; fixed for the whole run.
    seed : int
        Seed of the sample, pattern phases and noise.
    core : object, optional
        Micro-Manager core (pymmcore or Pycro-Manager ``Core``) to read the pattern device from;
        without it, the pattern comes from the frame's angle/phase axes.
    pattern_device : str
        State device whose label (``A0P0`` .. ``A2P2``) tells the active pattern.
    angle_axis, phase_axis : str
        Axis names, used when the device cannot be read.
    """

    def __init__(
        self,
        size: int = 512,
        params: SIMParams = DEMO_PARAMS,
        sample: str = "mixture",
        seed: int = 0,
        core: Any = None,
        pattern_device: str = PATTERN_DEVICE,
        angle_axis: str = "angle",
        phase_axis: str = "phase",
    ) -> None:
        if size < 16:
            raise MLSimError(f"demo frame size {size} is too small; expected at least 16 pixels")
        self.size = size
        self.params = params
        self.sample = sample
        self.core = core
        self.pattern_device = pattern_device
        self.angle_axis = angle_axis
        self.phase_axis = phase_axis
        self._renderer = FrameRenderer(params, sample=sample, size=size, seed=seed)
        self._lock = threading.Lock()
        self._states: dict[tuple[tuple[str, Any], ...], tuple[int, int]] = {}
        self._warned_mismatch = False
        self.frames_rendered = 0
        log.info(
            "SIMULATED SIM optics: %s sample, %d x %d px of %.0f nm, NA %.2f, %.0f nm emission",
            sample,
            size,
            size,
            params.optics.pixel_size_um * 1e3,
            params.optics.na,
            params.optics.wavelength_nm,
        )

    @property
    def pixel_size_um(self) -> float:
        """Camera pixel size of the simulated instrument."""
        return self.params.optics.pixel_size_um

    @property
    def ground_truth(self) -> np.ndarray:
        """The sample seen through the ideal SIM passband, on the 2x grid."""
        return self._renderer.ground_truth

    def describe(self) -> dict[str, Any]:
        """JSON-able description for summaries: what was simulated."""
        return {
            "simulated": True,
            "sample": self.sample,
            "size": self.size,
            "params": self.params.to_dict(),
            "angles_rad": [float(a) for a in self._renderer.angles_rad],
            "phases_rad": [[float(p) for p in row] for row in self._renderer.phases_rad],
        }

    # ---- pattern state ----
    def read_pattern(self) -> tuple[int, int] | None:
        """The pattern state the device shows now, or None when it cannot be read."""
        if self.core is None:
            return None
        try:
            label = self.core.get_property(self.pattern_device, "Label")
        except Exception as exc:
            log.debug("cannot read %s: %s", self.pattern_device, exc)
            return None
        return parse_preset(label)

    def post_hardware_hook(self, event: dict[str, Any]) -> dict[str, Any]:
        """Pycro-Manager post-hardware hook: remember the pattern shown for this event.

        Runs after the event's hardware (the ``SIM`` preset) is set and before the exposure.
        """
        axes = event.get("axes")
        state = self.read_pattern()
        if isinstance(axes, Mapping) and state is not None:
            with self._lock:
                self._states[_axes_key(axes)] = state
        return event

    def _state_for(self, axes: Mapping[str, Any]) -> tuple[int, int] | None:
        with self._lock:
            state = self._states.pop(_axes_key(axes), None)
        try:
            from_axes = (int(axes[self.angle_axis]), int(axes[self.phase_axis]))
        except (KeyError, TypeError, ValueError):
            return state
        if state is None:
            return from_axes if max(from_axes) < 3 and min(from_axes) >= 0 else None
        if state != from_axes and not self._warned_mismatch:
            self._warned_mismatch = True
            log.warning(
                "the pattern device shows %s for a frame with axes %s: the pattern is set by the "
                "device, as on real hardware (is the SIM config group set per event?)",
                preset_name(*state),
                dict(axes),
            )
        return state

    # ---- the camera stage ----
    def __call__(
        self, image: np.ndarray, metadata: dict[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Image-processor stage: return the simulated frame and its (labelled) metadata.

        Run it through `mlsim_live.live.acquire.chain`, which passes the camera frame on when
        a stage fails.
        """
        state = self._state_for(metadata.get("Axes") or {})
        if state is None:
            log.warning("no SIM pattern known for frame %s: camera frame passed on", metadata)
            return image, metadata
        angle, phase = state
        frame = self._renderer.render(angle, phase)
        metadata[SIMULATED_TAG] = True
        metadata[PATTERN_TAG] = preset_name(angle, phase)
        metadata["PixelSize_um"] = self.pixel_size_um
        metadata[NA_TAG] = self.params.optics.na
        metadata[WAVELENGTH_TAG] = self.params.optics.wavelength_nm
        metadata["Height"], metadata["Width"] = frame.shape
        self.frames_rendered += 1
        return frame, metadata
