"""Demo mode: a live SIM acquisition on Micro-Manager's DemoCamera with SIMULATED SIM optics.

A real Micro-Manager core (pymmcore + the ``mm-test-adapters`` DemoCamera) runs headless through
Pycro-Manager's Python backend with the demo configuration in ``acquisition/``, whose ``SIM``
config group is set per event like real pattern hardware. The simulated optics
(:mod:`mlsim_live.live.sim_optics`) turn each camera frame into a SIM raw frame of the active
pattern; the :class:`~mlsim_live.live.processor.SIMProcessor` reconstructs and saves as it would
on a microscope.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsim_live.errors import MLSimError, one_line
from mlsim_live.live.acquire import AcquisitionSettings, SIMAcquisition, next_dataset_name
from mlsim_live.live.processor import SIMProcessor
from mlsim_live.live.sim_optics import PATTERN_GROUP, SimulatedSIMOptics
from mlsim_live.live.sinks import Sink
from mlsim_live.recon.base import Reconstructor

log = logging.getLogger(__name__)

DEMO_CONFIG_NAME = "MMConfig_demo_sim.cfg"
HEADLESS_DEFAULT_GROUPS = 20
# The core's circular buffer: the demo's frames go straight on to the processor, so it holds
# only the groups queued ahead (see `AcquisitionSettings.lookahead_groups`) and a few spare.
DEMO_START_BUFFER_MB = 32
DEMO_BUFFER_GROUPS = 8


def demo_buffer_mb(size: int, groups: int = DEMO_BUFFER_GROUPS) -> int:
    """Circular buffer (MB) for ``groups`` SIM groups of ``size`` x ``size`` 16-bit frames."""
    return max(8, math.ceil(groups * 9 * size * size * 2 / 2**20))


def demo_config_path() -> Path:
    """The demo configuration: ``acquisition/`` of a source checkout, or the installed copy."""
    candidates = (
        Path(__file__).resolve().parents[2] / "acquisition" / DEMO_CONFIG_NAME,
        Path(sys.prefix) / "share" / "mlsim-live" / "acquisition" / DEMO_CONFIG_NAME,
    )
    for path in candidates:
        if path.is_file():
            return path
    raise MLSimError(
        f"the demo configuration {DEMO_CONFIG_NAME} was not found in "
        f"{', '.join(str(p.parent) for p in candidates)}; reinstall mlsim-live"
    )


def start_python_backend(
    adapter_path: str | os.PathLike[str],
    config: str | os.PathLike[str],
    buffer_size_mb: int = 1024,
) -> Any:
    """Start (once per process) a headless Micro-Manager core on Pycro-Manager's Python backend.

    When a Python-backend core runs already (the backend allows one per process), it is reused
    and ``config`` is loaded into it. ``buffer_size_mb`` is the core's circular buffer
    (Pycro-Manager's default, 1 GB, for real cameras; the demo asks for far less).

    Returns
    -------
    The core (pymmcore with Pycro-Manager's snake_case method names).
    """
    from mmpycorex import is_pymmcore_active
    from pycromanager import Core, start_headless

    cfg = Path(config)
    if not cfg.is_file():
        raise MLSimError(f"Micro-Manager configuration {cfg} does not exist; expected a .cfg file")
    try:
        if not is_pymmcore_active():
            start_headless(
                str(adapter_path), str(cfg), python_backend=True, buffer_size_mb=buffer_size_mb
            )
            log.info("Micro-Manager core started headless (Python backend) with %s", cfg.name)
            return Core()
        core = Core()
        core.load_system_configuration(str(cfg))
        return core
    except Exception as exc:  # the core's own message says what failed (e.g. an adapter version)
        raise MLSimError(
            f"Micro-Manager could not load {cfg.name} with the adapters in {adapter_path}: "
            f"{one_line(exc)}; expected pymmcore and device adapters of the same device "
            "interface version"
        ) from exc


def start_demo_core() -> Any:
    """The headless core with the demo configuration (started once, then reused)."""
    import mm_test_adapters
    from mmpycorex import is_pymmcore_active

    if is_pymmcore_active():
        from pycromanager import Core

        core = Core()
        if PATTERN_GROUP in core.get_available_config_groups():
            return core
    return start_python_backend(
        mm_test_adapters.device_adapter_path(), demo_config_path(), DEMO_START_BUFFER_MB
    )


def configure_camera(core: Any, size: int, exposure_ms: float) -> None:
    """Make the DemoCamera a 16-bit ``size`` x ``size`` camera with cheap frame generation."""
    camera = core.get_camera_device()
    for prop, value in (
        ("PixelType", "16bit"),
        ("BitDepth", "16"),
        ("Binning", "1"),
        ("OnCameraCCDXSize", str(size)),
        ("OnCameraCCDYSize", str(size)),
        ("FastImage", "1"),
    ):
        core.set_property(camera, prop, value)
    core.clear_roi()
    core.set_exposure(float(exposure_ms))
    core.set_circular_buffer_memory_footprint(demo_buffer_mb(size))


@dataclass(frozen=True)
class DemoSettings(AcquisitionSettings):
    """What a demo run does: a SIM time series (`AcquisitionSettings`) plus the demo's camera,
    sample and reconstruction.

    Attributes
    ----------
    size : int
        Camera frame size (N x N); the SR image is 2N x 2N.
    method, model : str, path or None
        Reconstruction method and ONNX model (see ``make_stream_reconstructor``); method None
        picks rcan when a model is given or installed, else wiener (see
        `mlsim_live.recon.default_method`).
    policy : {"latest", "all"}
        Reconstruction queue policy.
    sample : str
        Simulated sample kind.
    seed : int
        Seed of the simulated sample and noise.
    trust : bool
        Also map the newest reconstruction's trust on its own low-priority thread (see
        `SIMProcessor`): ``<name>_trust.tif``, ``.png`` and ``.json`` beside the SR file, and
        ``trust_flagged_fraction`` in the summary.
    stages : {1, 2} or None
        Worker stages (see `mlsim_live.live.pipeline.Pipeline`); None: the default.

    The acquisition fields keep their meaning with demo defaults: ``groups`` 20, ``exposure_ms``
    10 (required: it is set on the DemoCamera), ``name`` ``"demo"``, and ``pattern_group`` the
    demo configuration's ``SIM`` group. ``out`` None keeps the raw data in memory and writes
    nothing.
    """

    groups: int | None = HEADLESS_DEFAULT_GROUPS
    exposure_ms: float | None = 10.0
    name: str = "demo"
    pattern_group: str | None = PATTERN_GROUP
    size: int = 512
    method: str | None = None
    model: Path | None = None
    policy: str = "latest"
    sample: str = "mixture"
    seed: int = 0
    trust: bool = False
    stages: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.exposure_ms is None:
            raise MLSimError("the demo needs an exposure; expected exposure_ms > 0")
        if self.size < 16 or self.size % 2:
            raise MLSimError(f"frame size {self.size}; expected an even size of at least 16")


@dataclass(frozen=True)
class SimulationFigures:
    """What the demo adds to a run's summary: ``simulation``, the simulated optics and sample
    (`SimulatedSIMOptics.describe`)."""

    description: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Its key of the summary JSON."""
        return {"simulation": dict(self.description)}


class DemoRun:
    """One demo acquisition: core, simulated optics, processor and the acquisition loop.

    Build it in the main thread (the model loads here), attach sinks (the viewer) through
    ``processor.add_sink``, then call :meth:`run` (blocking, any thread); :meth:`stop` ends the
    run early from any thread, after the groups already queued.

    Parameters
    ----------
    settings : DemoSettings
        What to acquire.
    sinks : iterable of Sink
        Extra receivers of each reconstruction.
    reconstructor : Reconstructor, optional
        Instead of ``settings.method``/``settings.model`` (tests inject fakes here).
    """

    engine = "pycromanager"

    def __init__(
        self,
        settings: DemoSettings,
        sinks: tuple[Sink, ...] = (),
        reconstructor: Reconstructor | None = None,
    ) -> None:
        self.settings = settings
        self.core = self._start_core()
        camera_core = self._snake_case_core()
        configure_camera(camera_core, settings.size, float(settings.exposure_ms or 0.0))
        self.optics = SimulatedSIMOptics(
            size=settings.size, sample=settings.sample, seed=settings.seed, core=camera_core
        )
        self.name = settings.name
        created: list[Path] = []
        if settings.out is not None:
            for folder in (settings.out, *settings.out.parents):
                if folder.exists():
                    break
                created.append(folder)
            settings.out.mkdir(parents=True, exist_ok=True)
            self.name = next_dataset_name(settings.out, settings.name)
        try:
            self.processor = self._make_processor(settings, sinks, reconstructor)
        except BaseException:  # e.g. a model that cannot run: leave no empty folder behind
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        self.processor.add_section(SimulationFigures(self.optics.describe()))
        self.acquisition = self._make_acquisition()

    # ---- what differs between engines (see mlsim_live.live.plus_demo) ----
    def _start_core(self) -> Any:
        """The demo core, started once per process."""
        return start_demo_core()

    def _snake_case_core(self) -> Any:
        """The core with Pycro-Manager's snake_case method names (camera setup, optics)."""
        return self.core

    def _make_acquisition(self) -> Any:
        """The acquisition loop: anything with ``run()``, ``stop()`` and ``dataset_path``."""
        return SIMAcquisition(
            self.processor,
            self.settings,
            stages=(self.optics,),
            post_hardware_hook=self.optics.post_hardware_hook,
            dataset_name=self.name if self.settings.out is not None else None,
        )

    def _make_processor(
        self,
        settings: DemoSettings,
        sinks: tuple[Sink, ...],
        reconstructor: Reconstructor | None,
    ) -> SIMProcessor:
        return SIMProcessor(
            model=settings.model,
            method=settings.method,
            policy=settings.policy,
            out=settings.out,
            name=self.name,
            sinks=sinks,
            reconstructor=reconstructor,
            pixel_size_um=self.optics.pixel_size_um,
            simulated=True,
            optics=self.optics.params.optics,
            frame_shape=(settings.size, settings.size),
            trust=settings.trust,
            stages=settings.stages,
        )

    def stop(self) -> None:
        """End the run after the groups already queued (thread-safe, idempotent)."""
        self.acquisition.stop()

    def run(self) -> dict[str, Any]:
        """Acquire, reconstruct and save; return the summary (also written as JSON)."""
        s = self.settings
        log.info(
            "SIMULATED demo: %s groups of 9 frames, %d x %d px, exposure %.1f ms, policy %s",
            s.groups if s.groups is not None else "unlimited",
            s.size,
            s.size,
            s.exposure_ms or 0.0,
            s.policy,
        )
        return self.acquisition.run()

    @property
    def dataset_path(self) -> Path | None:
        """The raw dataset (NDTiff folder, or OME-TIFF for pymmcore-plus), once the run ended."""
        return self.acquisition.dataset_path
