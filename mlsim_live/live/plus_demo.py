"""Demo mode on pymmcore-plus: the same SIMULATED SIM demo as `mlsim_live.live.demo`, driven by
a useq MDA instead of Pycro-Manager.

A ``CMMCorePlus`` loads the same demo configuration (DemoCamera of ``mm-test-adapters`` plus the
``SIM`` config group). The 9 presets are the MDA's channels; after each preset is set,
:class:`~mlsim_live.live.sim_optics.SimulatedSIMOptics` reads the pattern device, and the camera
frame is replaced by the simulated SIM frame of that pattern before pymmcore-plus saves it
(OME-TIFF ``<out>/<name>_N.ome.tif``) and emits ``frameReady`` to the pipeline.
"""

from __future__ import annotations

import logging
from typing import Any

from mlsim_live.live.acquire import StageChain, chain
from mlsim_live.live.demo import DEMO_START_BUFFER_MB, DemoRun, demo_config_path
from mlsim_live.live.plus_acquire import (
    ENGINE_NAME,
    PlusAcquisition,
    SnakeCaseCore,
    start_plus_core,
)
from mlsim_live.live.plus_handler import event_pattern, group_axes
from mlsim_live.live.sim_optics import PATTERN_GROUP, SimulatedSIMOptics

log = logging.getLogger(__name__)

_DEMO_CORE: Any = None


def start_plus_demo_core() -> Any:
    """The ``CMMCorePlus`` with the demo configuration (started once per process, then reused)."""
    global _DEMO_CORE
    if _DEMO_CORE is None:
        import mm_test_adapters

        core = start_plus_core(mm_test_adapters.device_adapter_path(), demo_config_path())
        core.setCircularBufferMemoryFootprint(DEMO_START_BUFFER_MB)
        _DEMO_CORE = core
    return _DEMO_CORE


class OpticsStage:
    """The simulated optics as pymmcore-plus engine hooks (see `SIMEngine`).

    ``after_setup`` tells the optics which pattern the device shows once the event's preset is
    set (the Pycro-Manager demo's post-hardware hook); the call replaces the camera frame by the
    simulated frame of that pattern. A failure passes the camera frame on and is counted in
    ``errors`` (as `mlsim_live.live.acquire.StageChain` does for Pycro-Manager).
    """

    def __init__(self, optics: SimulatedSIMOptics, pattern_group: str = PATTERN_GROUP) -> None:
        self.optics = optics
        self.pattern_group = pattern_group
        self._chain: StageChain = chain(optics)

    @property
    def errors(self) -> int:
        """Frames the optics failed on (passed on as camera frames)."""
        return self._chain.errors

    def _axes(self, event: Any) -> dict[str, Any]:
        pattern = event_pattern(event, self.pattern_group)
        return group_axes(event, pattern) if pattern is not None else {}

    def after_setup(self, event: Any) -> None:
        """Remember the pattern the device shows for this event."""
        self.optics.post_hardware_hook({"axes": self._axes(event)})

    def __call__(self, image: Any, event: Any) -> Any:
        frame, _ = self._chain(image, {"Axes": self._axes(event)})
        return frame


class PlusDemoRun(DemoRun):
    """:class:`~mlsim_live.live.demo.DemoRun` on pymmcore-plus: same settings, outputs and
    summary keys (plus the frame handler's figures); the raw frames go to
    ``<out>/<name>_N.ome.tif``."""

    engine = ENGINE_NAME

    def _start_core(self) -> Any:
        return start_plus_demo_core()

    def _snake_case_core(self) -> Any:
        return SnakeCaseCore(self.core)

    def _make_acquisition(self) -> Any:
        # the simulated camera's pixels, so the OME-TIFF and the frames carry the right size
        self.core.setPixelSizeUm(self.core.getCurrentPixelSizeConfig(), self.optics.pixel_size_um)
        stage = OpticsStage(self.optics, self.settings.pattern_group or PATTERN_GROUP)
        return PlusAcquisition(
            self.core,
            self.processor,
            self.settings,
            frame_stage=stage,
            after_setup=stage.after_setup,
            dataset_name=self.name,
            # the optics reads the pattern device per frame, so frames are never sequenced
            use_hardware_sequencing=False,
        )
