"""A live SIM time series through Pycro-Manager, for the demo and for real microscopes.

Queues the 9 events of each SIM group (a time point) a few groups ahead of the camera, with the
pattern set per event through a config group or left to hardware sequencing, and feeds every
frame through the image-processor stages into a ``SIMProcessor``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.constants import GROUP_SIZE, N_ANGLES, N_PHASES
from mlsim_live.errors import MLSimError, one_line
from mlsim_live.live.processor import SIMProcessor
from mlsim_live.live.stats import RunSummary

log = logging.getLogger(__name__)

Stage = Callable[[np.ndarray, Any], tuple[np.ndarray, Any]]


def preset_name(angle: int, phase: int) -> str:
    """The config preset of a pattern state: ``A{angle}P{phase}``."""
    return f"A{angle}P{phase}"


def pattern_presets() -> list[str]:
    """The 9 preset names a pattern config group must define, angle-major."""
    return [preset_name(a, p) for a in range(N_ANGLES) for p in range(N_PHASES)]


def sim_group_events(
    index: int,
    exposure_ms: float | None = None,
    pattern_group: str | None = None,
    interval_s: float = 0.0,
    time_axis: str = "time",
    angle_axis: str = "angle",
    phase_axis: str = "phase",
) -> list[dict[str, Any]]:
    """The 9 Pycro-Manager events of SIM group ``index`` (a time point), angle-major.

    Each event carries the axes ``{time_axis: index, angle_axis: a, phase_axis: p}``. With
    ``pattern_group`` it also sets that config group's preset ``A{a}P{p}`` (pattern control by
    config group); without it the events carry only axes (hardware sequencing: the pattern
    device steps through its own sequence, triggered by the camera).
    """
    events = []
    for angle in range(N_ANGLES):
        for phase in range(N_PHASES):
            event: dict[str, Any] = {
                "axes": {time_axis: index, angle_axis: angle, phase_axis: phase}
            }
            if pattern_group:
                event["config_group"] = [pattern_group, preset_name(angle, phase)]
            if exposure_ms is not None:
                event["exposure"] = float(exposure_ms)
            events.append(event)
    if interval_s > 0:
        events[0]["min_start_time"] = index * interval_s
    return events


def _strings(values: Any) -> list[str]:
    """A Micro-Manager string vector (pymmcore tuple or Java StrVector) as a list."""
    if hasattr(values, "size") and hasattr(values, "get"):
        return [str(values.get(i)) for i in range(int(values.size()))]
    return [str(v) for v in values]


def check_pattern_group(core: Any, group: str) -> None:
    """Raise MLSimError unless config group ``group`` has the presets A0P0 .. A2P2."""
    groups = _strings(core.get_available_config_groups())
    if group not in groups:
        raise MLSimError(
            f"config group {group!r} is not defined (groups: {', '.join(groups)}); expected a "
            "pattern group with presets A0P0..A2P2"
        )
    presets = set(_strings(core.get_available_configs(group)))
    missing = [name for name in pattern_presets() if name not in presets]
    if missing:
        raise MLSimError(
            f"config group {group!r} lacks presets {', '.join(missing)}; expected A0P0..A2P2 "
            "(angle-major: A<angle>P<phase>)"
        )


def next_dataset_name(root: str | os.PathLike[str], prefix: str) -> str:
    """The name Pycro-Manager gives the next dataset ``prefix`` in ``root``: ``prefix_N``.

    N is one more than any ``prefix_<n>`` entry there (datasets and our ``_sr.tif`` and
    ``_summary.json`` files alike), so the SR outputs share the raw dataset's name and a new run
    never overwrites an old one.
    """
    pattern = re.compile(re.escape(prefix) + r"_(\d+).*", re.IGNORECASE)
    root = Path(root)
    numbers = [0]
    if root.is_dir():
        for entry in os.listdir(root):
            match = pattern.match(entry)
            if match:
                numbers.append(int(match.group(1)))
    return f"{prefix}_{max(numbers) + 1}"


class FrameCounter:
    """Image-processor stage that counts frames, so the event queue can be paced."""

    def __init__(self) -> None:
        self.count = 0
        self.last_frame_at = time.monotonic()
        self._cond = threading.Condition()

    def __call__(self, image: np.ndarray, metadata: Any) -> tuple[np.ndarray, Any]:
        with self._cond:
            self.count += 1
            self.last_frame_at = time.monotonic()
            self._cond.notify_all()
        return image, metadata

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``count`` frames; True when reached."""
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= count, timeout)

    def idle_s(self) -> float:
        """Seconds since the last frame (or since :meth:`restart_idle`)."""
        with self._cond:
            return time.monotonic() - self.last_frame_at

    def restart_idle(self) -> None:
        """Count the idle time from now (the start of an acquisition)."""
        with self._cond:
            self.last_frame_at = time.monotonic()


class StageChain:
    """One ``image_process_fn`` that runs image-processor stages in order, each guarded.

    A stage that raises never loses the frame nor aborts the acquisition (Pycro-Manager drops
    the frame and aborts when its image processor raises): the error is logged (the first with
    its traceback) and counted in ``errors``, and the frame and metadata the stage received go
    on unchanged to the next stage, so the raw frame is still saved.
    """

    def __init__(self, *stages: Stage) -> None:
        self.stages = stages
        self.errors = 0
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray, metadata: Any) -> tuple[np.ndarray, Any]:
        for stage in self.stages:
            try:
                image, metadata = stage(image, metadata)
            except Exception as exc:
                with self._lock:
                    self.errors += 1
                    first = self.errors == 1
                log.log(
                    logging.ERROR if first else logging.DEBUG,
                    "image-processor stage %s failed on frame %s: %s; the frame goes on unchanged"
                    "%s",
                    getattr(stage, "__name__", type(stage).__name__),
                    _frame_axes(metadata),
                    one_line(exc),
                    " (further failures are counted in stage_errors)" if first else "",
                    exc_info=first,
                )
        return image, metadata


def chain(*stages: Stage) -> StageChain:
    """One ``image_process_fn`` that runs image-processor stages in order (see `StageChain`)."""
    return StageChain(*stages)


def _frame_axes(metadata: Any) -> Any:
    try:
        return dict(metadata.get("Axes") or {})
    except Exception:
        return "?"


def acquisition_ended(acq: Any) -> bool:
    """True when a Pycro-Manager acquisition takes no more events (aborted or finished).

    Asks the backend's acquisition (``acq._acq``, the Python acquisition engine's or the Java
    one's over the bridge) ``is_abort_requested()`` and ``are_events_finished()``, where it
    has them; an acquisition whose answer fails (e.g. a closed bridge) counts as ended.
    """
    return any(_ask(acq, name) for name in ("is_abort_requested", "are_events_finished"))


def _ask(acq: Any, name: str) -> bool:
    """The backend acquisition's ``name()``: False when it has no such method, True when the
    call fails."""
    try:
        method = getattr(getattr(acq, "_acq", None), name)
    except AttributeError:
        return False
    try:
        return bool(method())
    except Exception as exc:
        log.debug("cannot ask the acquisition %s(): %s", name, one_line(exc))
        return True


@dataclass(frozen=True)
class AcquisitionStats:
    """What the acquisition loop adds to a run's summary.

    Attributes
    ----------
    groups_requested : int or None
        Groups asked for (None: until stopped).
    groups_submitted : int
        Groups whose events were queued.
    raw_frames : int
        Frames that reached the image processor.
    stage_errors : int
        Failures of the image-processor stages (their frames went on unchanged).
    ended : str
        ``acquisition_ended``: ``completed`` (every group was acquired), ``stopped``,
        ``interrupted`` (Ctrl-C or SIGTERM, after the frames already queued), ``aborted`` (by
        Pycro-Manager, e.g. a failing hook), ``stalled`` (no frame for ``stall_limit_s``) or
        ``failed`` (an exception).
    acquisition_s : float or None
        Wall time of the acquisition.
    raw_dataset : Path or None
        The raw NDTiff dataset.
    """

    groups_requested: int | None
    groups_submitted: int
    raw_frames: int
    stage_errors: int
    ended: str
    acquisition_s: float | None
    raw_dataset: Path | None

    @property
    def interrupted(self) -> bool:
        """Ended by Ctrl-C or SIGTERM."""
        return self.ended == "interrupted"

    def to_dict(self) -> dict[str, Any]:
        """Its keys of the summary JSON."""
        return {
            "groups_requested": self.groups_requested,
            "groups_submitted": self.groups_submitted,
            "raw_frames": self.raw_frames,
            "stage_errors": self.stage_errors,
            "acquisition_ended": self.ended,
            "interrupted": self.interrupted,
            "acquisition_s": self.acquisition_s,
            "raw_dataset": None if self.raw_dataset is None else str(self.raw_dataset),
        }


@dataclass(frozen=True)
class AcquisitionSettings:
    """A SIM time series.

    Attributes
    ----------
    groups : int or None
        Time points (SIM groups) to acquire; None runs until ``stop()``.
    exposure_ms : float or None
        Exposure per raw frame (None: leave the camera as it is).
    interval_s : float
        Time between group starts (0: as fast as possible).
    out : Path or None
        Folder of the raw NDTiff dataset ``<name>_N``, ``<name>_N_sr.tif`` and
        ``<name>_N_summary.json`` (None: raw data in memory, no files; Python backend only).
    name : str
        Dataset name prefix.
    pattern_group : str or None
        Config group whose presets A0P0..A2P2 set the pattern per event; None for hardware
        sequencing (events carry only axes).
    lookahead_groups : int
        Groups queued ahead of the frames seen by the processor.
    stall_timeout_s : float or None
        The acquisition counts as stalled, and is aborted, when no frame arrives for this long
        (plus ``interval_s`` and one exposure) while more groups are to be queued. None: wait
        for frames forever.
    """

    groups: int | None = 1
    exposure_ms: float | None = None
    interval_s: float = 0.0
    out: Path | None = None
    name: str = "sim"
    pattern_group: str | None = None
    lookahead_groups: int = 2
    stall_timeout_s: float | None = 60.0

    def __post_init__(self) -> None:
        if self.groups is not None and self.groups < 1:
            raise MLSimError(f"{self.groups} groups requested; expected at least 1")
        if self.exposure_ms is not None and not self.exposure_ms > 0:
            raise MLSimError(f"exposure {self.exposure_ms} ms; expected a positive exposure")
        if not self.interval_s >= 0:
            raise MLSimError(f"interval {self.interval_s} s; expected 0 or more seconds")
        if self.lookahead_groups < 1:
            raise MLSimError("lookahead_groups must be at least 1")
        if self.stall_timeout_s is not None and not self.stall_timeout_s > 0:
            raise MLSimError(f"stall timeout {self.stall_timeout_s} s; expected a positive time")

    @property
    def stall_limit_s(self) -> float | None:
        """Seconds without a frame after which the acquisition counts as stalled."""
        if self.stall_timeout_s is None:
            return None
        return self.stall_timeout_s + self.interval_s + (self.exposure_ms or 0.0) / 1e3


class SIMAcquisition:
    """Runs a SIM time series through Pycro-Manager into a :class:`SIMProcessor`.

    Parameters
    ----------
    processor : SIMProcessor
        Receives every frame (after ``stages``); closed at the end of :meth:`run`.
    settings : AcquisitionSettings
        What to acquire.
    stages : sequence of callables
        Image-processor stages that run before the processor (e.g. the demo's simulated
        optics); each takes and returns ``(image, metadata)``.
    post_hardware_hook : callable, optional
        Pycro-Manager post-hardware hook (runs after the event's hardware is set).
    dataset_name : str, optional
        The expected raw dataset name (``<name>_N``), reported in the summary.
    acquisition_kwargs : dict, optional
        More arguments for ``pycromanager.Acquisition`` (e.g. ``port`` for the Java backend).
    """

    def __init__(
        self,
        processor: SIMProcessor,
        settings: AcquisitionSettings,
        stages: Sequence[Stage] = (),
        post_hardware_hook: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        dataset_name: str | None = None,
        acquisition_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.processor = processor
        self.acquisition_kwargs = dict(acquisition_kwargs or {})
        self.settings = settings
        self.stages = tuple(stages)
        self.post_hardware_hook = post_hardware_hook
        self.dataset_name = dataset_name
        self.dataset_path: Path | None = None
        self.groups_submitted = 0
        self.ended = "not started"
        self._counter = FrameCounter()
        self._chain = chain(*self.stages, self._counter, self.processor)
        self._stop = threading.Event()

    def stop(self) -> None:
        """End the run: no new groups are queued, queued ones finish (thread-safe, idempotent)."""
        if not self._stop.is_set():
            log.info("stop requested: finishing the groups already queued")
        self._stop.set()

    @property
    def stopped(self) -> bool:
        """True once ``stop`` was called."""
        return self._stop.is_set()

    def run(self) -> RunSummary:
        """Acquire until ``groups`` are done or ``stop()``; close the processor; return summary.

        The summary is the processor's with an `AcquisitionStats` section.
        """
        from pycromanager import Acquisition

        s = self.settings
        kwargs: dict[str, Any] = {
            "directory": str(s.out) if s.out is not None else None,
            "name": s.name,
            "image_process_fn": self._chain,
        }
        if self.post_hardware_hook is not None:
            kwargs["post_hardware_hook_fn"] = self.post_hardware_hook
        kwargs.update(self.acquisition_kwargs)
        started = time.perf_counter()
        acquisition_s = None
        acq = None
        try:
            try:
                with Acquisition(**kwargs) as acq:
                    try:
                        self._queue_groups(acq)
                    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the queued frames finish
                        self.ended = "interrupted"
                        log.warning(
                            "interrupted: no more groups are queued; the %d frames queued "
                            "finish and are saved",
                            GROUP_SIZE * self.groups_submitted - self._counter.count,
                        )
            except KeyboardInterrupt:  # while the acquisition finished: keep what it saved
                self.ended = "interrupted"
            if self.ended == "completed" and _ask(acq, "is_abort_requested"):
                self.ended = "aborted"  # after every group was queued
            acquisition_s = time.perf_counter() - started
            if acq is not None:
                self._record_dataset(acq)
        except BaseException:
            if self.ended == "running":
                self.ended = "failed"
            raise
        finally:
            figures = AcquisitionStats(
                groups_requested=s.groups,
                groups_submitted=self.groups_submitted,
                raw_frames=self._counter.count,
                stage_errors=self._chain.errors,
                ended=self.ended,
                acquisition_s=None if acquisition_s is None else round(acquisition_s, 3),
                raw_dataset=self.dataset_path,
            )
            summary = self.processor.finish(sections=(figures,))
        return summary

    def _queue_groups(self, acq: Any) -> None:
        s = self.settings
        self.ended = "running"
        self._counter.restart_idle()
        index = 0
        while s.groups is None or index < s.groups:
            ended = self._wait_for_frames(acq, GROUP_SIZE * (index - s.lookahead_groups))
            if ended is not None:
                self.ended = ended
                return
            try:
                acq.acquire(sim_group_events(index, s.exposure_ms, s.pattern_group, s.interval_s))
            except Exception as exc:  # Pycro-Manager ended it since the check above
                if not acquisition_ended(acq):
                    raise
                log.error("Pycro-Manager ended the acquisition (%s); no more groups", one_line(exc))
                self.ended = "aborted"
                return
            index += 1
            self.groups_submitted = index
        self.ended = "completed"

    def _wait_for_frames(self, acq: Any, needed: int) -> str | None:
        """Wait until ``needed`` frames arrived; else say why the queueing ends.

        Returns None when the frames arrived, ``"stopped"`` after :meth:`stop`, ``"aborted"``
        when Pycro-Manager ended the acquisition (e.g. a failing hook), ``"stalled"`` when no
        frame arrived for ``settings.stall_limit_s`` (the acquisition is then aborted).
        """
        limit_s = self.settings.stall_limit_s
        while not self._counter.wait_for(needed, timeout=0.1):
            if self.stopped:
                return "stopped"
            if acquisition_ended(acq):
                log.error(
                    "Pycro-Manager ended the acquisition after %d frames (aborted); no more "
                    "groups are queued",
                    self._counter.count,
                )
                return "aborted"
            idle_s = self._counter.idle_s()
            if limit_s is not None and idle_s > limit_s:
                log.error(
                    "no frame arrived for %.1f s (%d frames so far): the acquisition is stalled "
                    "and is aborted",
                    idle_s,
                    self._counter.count,
                )
                try:
                    acq.abort()
                except Exception as exc:
                    log.warning("aborting the stalled acquisition failed: %s", one_line(exc))
                return "stalled"
        return "stopped" if self.stopped else None

    def _record_dataset(self, acq: Any) -> None:
        if self.settings.out is None:
            return
        path = getattr(acq.get_dataset(), "path", None)
        self.dataset_path = Path(path) if path else None
        if self.dataset_name and self.dataset_path and self.dataset_path.name != self.dataset_name:
            log.warning(
                "raw dataset is %s but the SR outputs are named %s",
                self.dataset_path,
                self.dataset_name,
            )
        log.info("raw frames saved to %s", self.dataset_path)
