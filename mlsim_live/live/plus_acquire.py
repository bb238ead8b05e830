"""A live SIM time series through pymmcore-plus, for the demo and for real microscopes.

pymmcore-plus runs a useq MDA of time points x the 9 pattern presets (see
`mlsim_live.live.plus_handler`) on its own thread. Its OME-TIFF writer saves every raw frame on
that thread before ``frameReady`` is emitted (so no raw frame is lost to a slow or failing
reconstruction); the :class:`~mlsim_live.live.plus_handler.SIMFrameHandler` queues each frame
for the pipeline. :class:`SIMEngine`, pymmcore-plus's ``MDAEngine`` with two additions, stops a
run only between SIM groups and lets the demo replace camera frames by simulated ones.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

# isort: off
import mlsim_live.live.plus_logging  # noqa: F401 (first: pymmcore-plus without its logging setup)

# isort: on
from pymmcore_plus import CMMCorePlus
from pymmcore_plus.mda import FinishReason, MDAEngine

from mlsim_live.constants import GROUP_SIZE
from mlsim_live.errors import MLSimError, one_line
from mlsim_live.live.acquire import AcquisitionSettings, AcquisitionStats
from mlsim_live.live.plus_handler import (
    CHANNEL_INDEX,
    SIMFrameHandler,
    sim_channels,
    sim_sequence,
)
from mlsim_live.live.processor import SIMProcessor
from mlsim_live.live.stats import Figures, RunSummary

log = logging.getLogger(__name__)

ENGINE_NAME = "pymmcore-plus"
RAW_SUFFIX = ".ome.tif"
# After a stalled acquisition is cancelled, wait this long for pymmcore-plus to end it.
_CANCEL_GRACE_S = 10.0

FrameStage = Callable[[np.ndarray, Any], np.ndarray]
EventHook = Callable[[Any], None]


# ---- the core ----
_ACRONYMS = {"Roi": "ROI", "Slm": "SLM", "Xy": "XY"}


class SnakeCaseCore:
    """A pymmcore(-plus) core seen through Pycro-Manager's snake_case method names.

    Lets the helpers written for Pycro-Manager's ``Core`` (camera setup, the pattern group
    check, the simulated optics) drive a ``CMMCorePlus``: ``set_property`` calls
    ``setProperty``, ``clear_roi`` calls ``clearROI``.
    """

    def __init__(self, core: Any) -> None:
        self.core = core

    def __getattr__(self, name: str) -> Any:
        head, *words = name.split("_")
        camel = head + "".join(_ACRONYMS.get(w.capitalize(), w.capitalize()) for w in words)
        return getattr(self.core, camel)


def _forget_callbacks(ref: weakref.ref[CMMCorePlus]) -> None:
    """Detach the core's callback relay before the interpreter shuts down.

    A ``CMMCorePlus`` still holding its device callbacks when the interpreter finalizes makes
    the process abort ("FATAL: exception not rethrown", exit 134) on Linux: the core calls back
    into a finalizing interpreter.
    """
    core = ref()
    if core is not None:
        try:
            super(CMMCorePlus, core).registerCallback(None)
        except Exception as exc:  # at exit: say it, never raise
            log.debug("detaching the core's callbacks failed: %s", one_line(exc))


def start_plus_core(
    adapter_path: str | os.PathLike[str], config: str | os.PathLike[str]
) -> CMMCorePlus:
    """A new ``CMMCorePlus`` with the device adapters in ``adapter_path`` and ``config`` loaded.

    The core detaches its callbacks at interpreter exit (see `_forget_callbacks`).
    """
    cfg = Path(config)
    if not cfg.is_file():
        raise MLSimError(f"Micro-Manager configuration {cfg} does not exist; expected a .cfg file")
    core = CMMCorePlus(adapter_paths=[str(adapter_path)])
    atexit.register(_forget_callbacks, weakref.ref(core))
    try:
        core.loadSystemConfiguration(str(cfg))
    except Exception as exc:  # the core's own message says what failed
        raise MLSimError(
            f"pymmcore-plus could not load {cfg.name} with the adapters in {adapter_path}: "
            f"{one_line(exc)}; expected pymmcore and device adapters of the same device "
            "interface version"
        ) from exc
    log.info("pymmcore-plus core started with %s", cfg.name)
    return core


# ---- events and the engine ----
class UnboundedSIMEvents:
    """SIM groups without end (time points ``t`` = 0, 1, ... x the 9 pattern channels).

    An iterable, not an iterator: pymmcore-plus then passes it through the engine's
    ``event_iterator``, where :class:`SIMEngine` ends it between groups on request.
    """

    def __init__(
        self,
        pattern_group: str,
        exposure_ms: float | None = None,
        interval_s: float = 0.0,
    ) -> None:
        self.pattern_group = pattern_group
        self.exposure_ms = exposure_ms
        self.interval_s = interval_s

    def __iter__(self) -> Iterator[Any]:
        import useq

        channels = [
            {"config": ch.config, "group": ch.group}
            for ch in sim_channels(self.pattern_group, self.exposure_ms)
        ]
        for t in itertools.count():
            for c, channel in enumerate(channels):
                start = t * self.interval_s if c == 0 and self.interval_s > 0 else None
                yield useq.MDAEvent.model_validate(
                    {
                        "index": {"t": t, CHANNEL_INDEX: c},
                        "channel": channel,
                        "exposure": self.exposure_ms,
                        "min_start_time": start,
                    }
                )


def starts_group(event: Any) -> bool:
    """True for the first event of a SIM group (pattern channel index 0)."""
    return int(dict(event.index).get(CHANNEL_INDEX, 0)) == 0


class SIMEngine(MDAEngine):
    """pymmcore-plus's ``MDAEngine`` that stops between SIM groups and may transform frames.

    Parameters
    ----------
    mmc : CMMCorePlus
        The core.
    frame_stage : callable, optional
        ``frame_stage(image, event) -> image``, applied to every frame before pymmcore-plus
        saves it and emits ``frameReady`` (the demo's simulated optics).
    after_setup : callable, optional
        ``after_setup(event)``, called once the event's hardware is set (the preset applied),
        before the exposure.
    **kwargs
        ``MDAEngine`` options (e.g. ``use_hardware_sequencing``).
    """

    def __init__(
        self,
        mmc: CMMCorePlus,
        frame_stage: FrameStage | None = None,
        after_setup: EventHook | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(mmc, **kwargs)
        self.frame_stage = frame_stage
        self.after_setup = after_setup
        self.groups_started = 0
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """Start no new SIM group; the group under way finishes (thread-safe)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`request_stop` was called."""
        return self._stop.is_set()

    def event_iterator(self, events: Iterable[Any]) -> Iterator[Any]:
        """The engine's events (hardware-sequenced where possible), ended between groups."""
        for event in super().event_iterator(events):
            if starts_group(event):
                if self._stop.is_set():
                    return
                self.groups_started += 1
            yield event

    def setup_event(self, event: Any) -> None:
        """Set the event's hardware, then call ``after_setup``."""
        super().setup_event(event)
        if self.after_setup is not None:
            self.after_setup(event)

    def exec_event(self, event: Any) -> Generator[Any, Any, None]:  # type: ignore[override]
        """The frames of ``MDAEngine.exec_event``, through ``frame_stage``.

        Values the runner sends (cancel, pause) reach the engine's own generator.
        """
        frames = iter(super().exec_event(event))
        try:
            payload = next(frames)
        except StopIteration:
            return
        while True:
            if payload is not None and self.frame_stage is not None:
                image, sub_event, meta = payload
                payload = (self.frame_stage(image, sub_event), sub_event, meta)
            sent = yield payload
            try:
                payload = frames.send(sent) if hasattr(frames, "send") else next(frames)
            except StopIteration:
                return


# ---- the acquisition ----
@runtime_checkable
class CountsErrors(Protocol):
    """A frame stage that counts the frames it failed on (and passed on unchanged)."""

    @property
    def errors(self) -> int:
        """Frames the stage failed on."""
        ...


class PlusAcquisition:
    """Runs a SIM time series through pymmcore-plus into a :class:`SIMProcessor`.

    Parameters
    ----------
    core : CMMCorePlus
        The core (its ``mda`` runner is used; its engine is restored afterwards).
    processor : SIMProcessor
        Reconstructs and saves; closed at the end of :meth:`run`.
    settings : AcquisitionSettings
        What to acquire; ``pattern_group`` is required (the pattern presets are the channels).
    frame_stage, after_setup : callable, optional
        See :class:`SIMEngine`.
    dataset_name : str, optional
        Name of the raw file ``<out>/<dataset_name>.ome.tif`` (pymmcore-plus's OME-TIFF writer);
        None with ``settings.out`` None saves no raw frames.
    use_hardware_sequencing : bool
        Let pymmcore-plus sequence the presets in hardware where the devices allow it.
    """

    def __init__(
        self,
        core: CMMCorePlus,
        processor: SIMProcessor,
        settings: AcquisitionSettings,
        frame_stage: FrameStage | None = None,
        after_setup: EventHook | None = None,
        dataset_name: str | None = None,
        use_hardware_sequencing: bool = True,
    ) -> None:
        if not settings.pattern_group:
            raise MLSimError(
                "pymmcore-plus sets the SIM pattern through a config group used as channels; "
                "expected a pattern group with presets A0P0..A2P2 (--pattern-group NAME)"
            )
        self.core = core
        self.processor = processor
        self.settings = settings
        self.handler = SIMFrameHandler(processor, pattern_group=settings.pattern_group)
        self.engine = SIMEngine(
            core,
            frame_stage=frame_stage,
            after_setup=after_setup,
            use_hardware_sequencing=use_hardware_sequencing,
        )
        self.dataset_path: Path | None = None
        if settings.out is not None:
            self.dataset_path = settings.out / f"{dataset_name or settings.name}{RAW_SUFFIX}"
        self.ended = "not started"
        self._error: BaseException | None = None
        self._mda_done = threading.Event()

    def stop(self) -> None:
        """End the run after the SIM group under way (thread-safe, idempotent)."""
        if not self.engine.stop_requested:
            log.info("stop requested: finishing the SIM group under way")
        self.engine.request_stop()

    def events(self) -> Iterable[Any]:
        """The run's useq events: an ``MDASequence`` of ``groups`` time points, or unbounded."""
        s = self.settings
        assert s.pattern_group is not None
        if s.groups is None:
            return UnboundedSIMEvents(s.pattern_group, s.exposure_ms, s.interval_s)
        return sim_sequence(s.groups, s.pattern_group, s.exposure_ms, s.interval_s)

    def run(self) -> RunSummary:
        """Acquire until ``groups`` are done or ``stop()``; close the processor; return summary.

        The summary is the processor's with the frame handler's counts (`FrameHandlerStats`),
        an `AcquisitionStats` section as for Pycro-Manager (``raw_frames``: frames pymmcore-plus
        saved and delivered; ``acquisition_ended`` ``aborted`` when pymmcore-plus ended the
        sequence itself, e.g. on a cancel from elsewhere) and ``engine`` (``pymmcore-plus``).
        """
        s = self.settings
        if self.dataset_path is not None and self.dataset_path.exists():
            raise MLSimError(f"{self.dataset_path} exists; expected a new raw file name")
        runner = self.core.mda
        previous_engine = runner.set_engine(self.engine)
        self.handler.connect(self.core.mda.events)
        thread = threading.Thread(target=self._run_mda, name="mlsim-mda", daemon=True)
        self._mda_done.clear()
        started = time.perf_counter()
        acquisition_s = None
        try:
            self.ended = "running"
            self.handler.restart_idle()
            thread.start()
            try:
                self._wait()
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the group under way finishes
                self.ended = "interrupted"
                self.engine.request_stop()
                log.warning("interrupted: no new SIM group starts; the one under way is saved")
                self._wait()
            acquisition_s = time.perf_counter() - started
            if self._error is not None:
                self.ended = "failed"
                raise MLSimError(
                    f"the pymmcore-plus acquisition failed: {one_line(self._error)}; expected "
                    "a configuration whose camera and pattern presets work"
                ) from self._error
        except BaseException:
            if self.ended == "running":
                self.ended = "failed"
            raise
        finally:
            self.handler.disconnect(self.core.mda.events)
            if self._mda_done.is_set() and previous_engine is not None:
                runner.set_engine(previous_engine)
            saved = self.dataset_path if self.dataset_path and self.dataset_path.exists() else None
            stats = AcquisitionStats(
                groups_requested=s.groups,
                groups_submitted=self.engine.groups_started,
                raw_frames=self.handler.frames_ready,
                stage_errors=self.stage_errors,
                ended=self.ended,
                acquisition_s=None if acquisition_s is None else round(acquisition_s, 3),
                raw_dataset=saved,
            )
            summary = self.handler.finish(sections=(stats, Figures({"engine": ENGINE_NAME})))
        if saved:
            log.info("raw frames saved to %s", saved)
        return summary

    @property
    def stage_errors(self) -> int:
        """Frames the ``frame_stage`` failed on (passed on unchanged), when it counts them."""
        stage = self.engine.frame_stage
        return stage.errors if isinstance(stage, CountsErrors) else 0

    def _run_mda(self) -> None:
        output = str(self.dataset_path) if self.dataset_path is not None else None
        try:
            self.core.mda.run(self.events(), output=output)
        except BaseException as exc:  # reported by run() in the calling thread
            self._error = exc
        finally:
            self._mda_done.set()

    def _wait(self) -> None:
        """Wait for the MDA thread; settle ``ended``; cancel a stalled acquisition.

        Waits on an event, not ``Thread.join``: a join interrupted by Ctrl-C can leave the
        thread looking finished while it still runs (CPython 3.11).
        """
        limit_s = self.settings.stall_limit_s
        while not self._mda_done.wait(0.1):
            idle_s = self.handler.idle_s()
            if limit_s is not None and idle_s > limit_s:
                log.error(
                    "no frame arrived for %.1f s (%d frames so far): the acquisition is stalled "
                    "and is cancelled",
                    idle_s,
                    self.handler.frames_ready,
                )
                self.ended = "stalled"
                self.core.mda.cancel()
                if not self._mda_done.wait(_CANCEL_GRACE_S):
                    log.error(
                        "pymmcore-plus did not end the stalled acquisition within %.0f s; the "
                        "outputs are closed without it",
                        _CANCEL_GRACE_S,
                    )
                return
        if self.ended != "running":
            return
        reason = self.core.mda.status.finish_reason
        if self.engine.stop_requested:
            self.ended = "stopped"
        elif reason == FinishReason.COMPLETED:
            self.ended = "completed"
        elif reason == FinishReason.CANCELED:
            self.ended = "aborted"
        if self.ended == "completed" and self.handler.frames_ready < GROUP_SIZE * (
            self.settings.groups or 0
        ):
            log.warning(
                "%d of %d frames arrived: the camera skipped some (see the log above)",
                self.handler.frames_ready,
                GROUP_SIZE * (self.settings.groups or 0),
            )
