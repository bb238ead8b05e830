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

from mlsim_live.errors import MLSimError
from mlsim_live.live.processor import SIMProcessor
from mlsim_live.recon.base import N_ANGLES, N_PHASES

log = logging.getLogger(__name__)

GROUP_SIZE = N_ANGLES * N_PHASES
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
        self._cond = threading.Condition()

    def __call__(self, image: np.ndarray, metadata: Any) -> tuple[np.ndarray, Any]:
        with self._cond:
            self.count += 1
            self._cond.notify_all()
        return image, metadata

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``count`` frames; True when reached."""
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= count, timeout)


def chain(*stages: Stage) -> Stage:
    """One ``image_process_fn`` that runs image-processor stages in order."""

    def image_process_fn(image: np.ndarray, metadata: Any) -> tuple[np.ndarray, Any]:
        for stage in stages:
            image, metadata = stage(image, metadata)
        return image, metadata

    return image_process_fn


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
    """

    groups: int | None = 1
    exposure_ms: float | None = None
    interval_s: float = 0.0
    out: Path | None = None
    name: str = "sim"
    pattern_group: str | None = None
    lookahead_groups: int = 2

    def __post_init__(self) -> None:
        if self.groups is not None and self.groups < 1:
            raise MLSimError(f"{self.groups} groups requested; expected at least 1")
        if (self.exposure_ms is not None and self.exposure_ms <= 0) or self.interval_s < 0:
            raise MLSimError("exposure must be positive and the interval non-negative")
        if self.lookahead_groups < 1:
            raise MLSimError("lookahead_groups must be at least 1")


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
        self._counter = FrameCounter()
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

    def run(self) -> dict[str, Any]:
        """Acquire until ``groups`` are done or ``stop()``; close the processor; return summary."""
        from pycromanager import Acquisition

        s = self.settings
        kwargs: dict[str, Any] = {
            "directory": str(s.out) if s.out is not None else None,
            "name": s.name,
            "image_process_fn": chain(*self.stages, self._counter, self.processor),
        }
        if self.post_hardware_hook is not None:
            kwargs["post_hardware_hook_fn"] = self.post_hardware_hook
        kwargs.update(self.acquisition_kwargs)
        started = time.perf_counter()
        acquisition_s = None
        try:
            with Acquisition(**kwargs) as acq:
                self._queue_groups(acq)
            acquisition_s = time.perf_counter() - started
            self._record_dataset(acq)
        finally:
            self.processor.extra_summary.update(
                {
                    "groups_requested": s.groups,
                    "groups_submitted": self.groups_submitted,
                    "raw_frames": self._counter.count,
                    "acquisition_s": None if acquisition_s is None else round(acquisition_s, 3),
                    "raw_dataset": str(self.dataset_path) if self.dataset_path else None,
                }
            )
            summary = self.processor.close()
        return summary

    def _queue_groups(self, acq: Any) -> None:
        s = self.settings
        index = 0
        while not self.stopped and (s.groups is None or index < s.groups):
            needed = GROUP_SIZE * (index - s.lookahead_groups)
            while not self.stopped and not self._counter.wait_for(needed, timeout=0.1):
                pass
            if self.stopped:
                break
            acq.acquire(sim_group_events(index, s.exposure_ms, s.pattern_group, s.interval_s))
            index += 1
            self.groups_submitted = index

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
