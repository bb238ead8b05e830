"""Replay recorded raw frames through the live pipeline (grouper -> worker -> sinks), paced or
as fast as possible, and save the same outputs as a live run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsim_live.constants import LEARNED_METHODS
from mlsim_live.errors import MLSimError
from mlsim_live.live.pipeline import Pipeline
from mlsim_live.live.results import GroupResult
from mlsim_live.live.sinks import Sink
from mlsim_live.live.stats import Figures, RunStats, RunSummary, StatsSection
from mlsim_live.recon.base import GROUP_SIZE, Reconstructor, warm_up
from mlsim_live.replay.sources import FrameSource, describe, open_source

if TYPE_CHECKING:  # pragma: no cover
    from mlsim_live.sim.optics import Optics

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("mlsim_replay")
# Under policy "all": complete groups allowed to wait for the worker before reading pauses.
DEFAULT_MAX_AHEAD = 4
# After an interrupt (Ctrl-C, SIGTERM): seconds the groups already complete may take to finish.
INTERRUPT_GRACE_S = 10.0


@dataclass(frozen=True)
class ReplayStats:
    """How the frames were pushed.

    Attributes
    ----------
    frames_pushed : int
        Raw frames handed to the pipeline.
    replay_s : float
        From the first frame read to the pipeline closed (all reconstructions done).
    push_s : float
        From the first frame read to the last frame pushed.
    raw_frames_per_s : float or None
        ``frames_pushed / replay_s``.
    fps_requested : float or None
        The pacing asked for (None: as fast as possible).
    late_frames : int
        Paced frames pushed more than one frame period after their due time (reading or
        back-pressure was slower than ``fps``).
    stopped : bool
        The replay was stopped before the end of the source.
    interrupted : bool
        It was stopped by an interrupt (Ctrl-C, SIGTERM): the groups already complete were
        given `INTERRUPT_GRACE_S` to finish.
    """

    frames_pushed: int
    replay_s: float
    push_s: float
    raw_frames_per_s: float | None
    fps_requested: float | None
    late_frames: int
    stopped: bool
    interrupted: bool = False


class _ResultCounter:
    """Sink that counts results and wakes the replay loop when one arrives."""

    def __init__(self) -> None:
        self.results = 0
        self._cond = threading.Condition()

    def on_result(self, result: GroupResult) -> None:
        with self._cond:
            self.results += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)


def check_fps(fps: float | None) -> float | None:
    """Return ``fps`` if it is None or a positive finite number; raise MLSimError otherwise."""
    if fps is None:
        return None
    if not (fps > 0 and fps < float("inf")):
        raise MLSimError(f"--fps {fps}; expected a positive number of raw frames per second")
    return float(fps)


def replay(
    source: Iterable[Any],
    pipeline: Pipeline,
    fps: float | None = None,
    *,
    stop: threading.Event | None = None,
    max_ahead: int = DEFAULT_MAX_AHEAD,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayStats:
    """Push every frame of ``source`` into ``pipeline``, then close the pipeline.

    Parameters
    ----------
    source : FrameSource or iterable of (frame, axes, metadata)
        The recorded frames.
    pipeline : Pipeline
        The live pipeline (grouper, worker, sinks). Closed on return, also on error.
    fps : float, optional
        Raw frames per second, paced by ``clock`` (frame ``i`` is due ``i / fps`` after the
        first; a frame that is more than a period late re-anchors the schedule, as a camera
        would not burst to catch up). None: as fast as possible.
    stop : threading.Event, optional
        Set it (e.g. from the viewer) to end the replay early; the groups already complete are
        still reconstructed.
    max_ahead : int
        Under policy ``all``, reading waits while this many complete groups wait for the
        worker, so memory stays flat however large the source is.
    clock : callable
        Monotonic seconds (tests may pass a fake).

    Returns
    -------
    ReplayStats

    A KeyboardInterrupt (Ctrl-C, or SIGTERM through the CLI) stops the replay like ``stop``:
    the groups already complete get `INTERRUPT_GRACE_S` to finish and the stats say
    ``interrupted``.

    Raises
    ------
    MLSimError
        From the source, when a frame cannot be read; the pipeline is closed first.
    """
    fps = check_fps(fps)
    if max_ahead < 1:
        raise MLSimError(f"max_ahead {max_ahead}; expected at least 1")
    stop = stop or threading.Event()
    period = 1.0 / fps if fps else 0.0
    throttle = pipeline.policy == "all"
    counter = _ResultCounter()
    if throttle:
        pipeline.add_sink(counter)
    frames = late = 0
    started = clock()
    due = started
    pushed_at = started
    stopped = interrupted = False
    try:
        for frame, axes, metadata in source:
            if stop.is_set():
                stopped = True
                break
            if fps:
                now = clock()
                if due > now:
                    if stop.wait(due - now):
                        stopped = True
                        break
                elif now - due > period:
                    late += 1
                    due = now
                due += period
            pipeline.push(frame, axes, metadata)
            frames += 1
            if throttle and frames % GROUP_SIZE == 0:
                _wait_for_worker(pipeline, counter, frames // GROUP_SIZE, max_ahead, stop)
        pushed_at = clock()
    except KeyboardInterrupt:
        stopped = interrupted = True
        pushed_at = clock()
        log.warning("interrupted after %d frames: finishing the groups already complete", frames)
    finally:
        try:
            pipeline.close(INTERRUPT_GRACE_S if interrupted else None)
        except KeyboardInterrupt:  # while closing: what is finished is kept all the same
            interrupted = stopped = True
            pipeline.close(INTERRUPT_GRACE_S)
    ended = clock()
    replay_s = ended - started
    if stopped:
        log.info("replay stopped after %d frames", frames)
    if late:
        log.info("%d frames were pushed late (the source was slower than %s fps)", late, fps)
    return ReplayStats(
        frames_pushed=frames,
        replay_s=round(replay_s, 6),
        push_s=round(pushed_at - started, 6),
        raw_frames_per_s=round(frames / replay_s, 3) if replay_s > 0 else None,
        fps_requested=fps,
        late_frames=late,
        stopped=stopped,
        interrupted=interrupted,
    )


def _wait_for_worker(
    pipeline: Pipeline,
    counter: _ResultCounter,
    groups_pushed: int,
    max_ahead: int,
    stop: threading.Event,
) -> None:
    """Block while ``max_ahead`` complete groups wait for the reconstruction worker."""
    if groups_pushed - counter.results <= max_ahead:
        return  # cheap check first: the worker keeps up
    while not stop.is_set():
        if pipeline.waiting < max_ahead:
            return
        counter.wait(0.05)


# --------------------------------------------------------------------------------------------
# a whole replay: source, reconstructor, outputs


@dataclass(frozen=True)
class ReplaySettings:
    """What a replay reads, how it reconstructs, and where it writes.

    Attributes
    ----------
    input : Path
        A TIFF raw stack or an NDTiff dataset folder.
    out : Path
        Output folder for ``<name>_sr.tif`` and ``<name>_summary.json`` (created).
    name : str or None
        Output stem; default the input's name (file stem or dataset folder name).
    fps : float or None
        Raw frames per second; None: as fast as possible.
    policy : {"all", "latest"} or None
        None: ``all`` when ``fps`` is None (every group is reconstructed), ``latest`` with
        ``fps`` (drops groups when reconstruction is behind, as live).
    method, model : str, Path or None
        Reconstruction method and ONNX model (see ``mlsim_live.recon.make_reconstructor``);
        method None: rcan with a model (given or installed), else wiener.
    order : {"angle-major", "phase-major"}
        Frame order of a plain TIFF stack.
    angle_axis, phase_axis : str or None
        Axes that hold angle and phase: TIFF letters (``C``, ``Z``) or NDTiff axis names.
    pixel_size_um, na, wavelength_nm : float or None
        Optics; each defaults to the recording's, by `mlsim_live.sim.optics.resolve_optics`
        (a lone NA or wavelength needs its partner in the recording). With all three known,
        the reconstructor gets an `Optics` (Wiener OTF, RCAN out-of-distribution check).
    offset_adu : float or None
        Camera offset to subtract instead of the reconstructor's own estimate.
    overwrite : bool
        Replace existing outputs.
    trust : bool
        Also map every reconstruction's trust (`mlsim_live.trust`, on its own low-priority
        thread) into ``<name>_trust.tif``, ``.png`` and ``.json``; the summary gains
        ``trust_flagged_fraction``.
    stages : {1, 2} or None
        Worker stages (see `mlsim_live.live.pipeline.Pipeline`); None: the default.
    """

    input: Path
    out: Path = DEFAULT_OUT
    name: str | None = None
    fps: float | None = None
    policy: str | None = None
    method: str | None = None
    model: Path | None = None
    order: str = "angle-major"
    angle_axis: str | None = None
    phase_axis: str | None = None
    pixel_size_um: float | None = None
    na: float | None = None
    wavelength_nm: float | None = None
    offset_adu: float | None = None
    overwrite: bool = False
    trust: bool = False
    stages: int | None = None

    def __post_init__(self) -> None:
        check_fps(self.fps)
        if self.policy not in (None, "all", "latest"):
            raise MLSimError(f"policy {self.policy!r}; expected 'all' or 'latest'")

    @property
    def effective_policy(self) -> str:
        """The queue policy used: the one given, else ``all`` unpaced and ``latest`` paced."""
        if self.policy is not None:
            return self.policy
        return "latest" if self.fps else "all"


class ReplayRun:
    """One replay: the source, the reconstructor, the pipeline and the outputs.

    Build it in the main thread (the model loads here), attach sinks (the viewer) with
    :meth:`add_sink`, then call :meth:`run` (blocking, any thread); :meth:`stop` ends it early
    from any thread. The SR file is written to a hidden temporary file and renamed into place
    when the replay succeeds; on error nothing is left in the output folder.

    Parameters
    ----------
    settings : ReplaySettings
        What to replay.
    sinks : iterable of Sink
        More receivers of each reconstruction.
    reconstructor : Reconstructor, optional
        Use this instead of building one from ``settings.method``/``settings.model``.
    source : FrameSource, optional
        Use this instead of opening ``settings.input``.
    """

    def __init__(
        self,
        settings: ReplaySettings,
        sinks: Iterable[Sink] = (),
        reconstructor: Reconstructor | None = None,
        source: FrameSource | None = None,
    ) -> None:
        from mlsim_live.live.run import Run, RunOutputs

        self.settings = settings
        s = settings
        self.source = source or open_source(
            s.input,
            order=s.order,
            angle_axis=s.angle_axis,
            phase_axis=s.phase_axis,
            pixel_size_um=s.pixel_size_um,
        )
        try:
            self.name = s.name or self.source.name
            outputs = RunOutputs(s.out, self.name, s.overwrite)
            self.sr_path, self.summary_path = outputs.sr_path, outputs.summary_path
            #: The optics the replay knows (options, else the recording's; None: estimated).
            self.optics = _resolved_optics(s, self.source)
            self.trust_sink = _trust_sink(s, self.optics, self.name) if s.trust else None
            if self.trust_sink is not None:
                sinks = [*sinks, self.trust_sink]
            if reconstructor is None:
                reconstructor = _make_reconstructor(s, self.optics)
            warm_up(reconstructor, self.source.frame_shape)
            self.pipeline = Pipeline(
                reconstructor,
                sinks=sinks,
                policy=s.effective_policy,
                pixel_size_um=self.source.pixel_size_um,
                simulated=self.source.simulated,
                stages=s.stages,
            )
        except BaseException:
            self.source.close()
            raise
        self._run = Run(self.pipeline, outputs)
        self._stop = threading.Event()
        self.stats: ReplayStats | None = None
        log.info(
            "replay of %s (%s, %d frames of %dx%d) with %s on %s, policy %s, %s",
            self.source.path,
            self.source.format,
            self.source.n_frames,
            *self.source.frame_shape,
            self.pipeline.model,
            self.pipeline.provider,
            s.effective_policy,
            f"{s.fps:g} raw frames/s" if s.fps else "as fast as possible",
        )

    @property
    def simulated(self) -> bool:
        """The recording came from simulated optics (demo)."""
        return self.pipeline.simulated

    @property
    def summary(self) -> RunSummary:
        """The running summary (for the viewer's status bar); the final one after :meth:`run`."""
        return self._run.summary()

    def add_sink(self, sink: Sink) -> None:
        """Attach another sink (e.g. the viewer's) before :meth:`run`."""
        self._run.add_sink(sink)

    def stop(self) -> None:
        """End the replay after the groups already complete (thread-safe, idempotent)."""
        self._stop.set()

    def run(self) -> RunSummary:
        """Replay, save ``<name>_sr.tif`` and ``<name>_summary.json``; return the summary.

        The outputs follow the one rule of `mlsim_live.live.run`: the SR file is written to a
        hidden temporary file and renamed into place at the end. An interrupt (Ctrl-C,
        SIGTERM) ends the replay early: the groups finished are saved and the summary says
        ``interrupted``. When the SR file cannot be written (a full disk), the groups written
        before stay readable in ``<name>_sr.tif``, the summary counts the groups lost, and
        MLSimError says why in one line. Temporary files that a killed run left for these
        outputs are removed first.

        Raises
        ------
        MLSimError
            Unreadable frames, an output folder that cannot be written, no group
            reconstructed, or an SR file that could not be written to the end.
        """
        from mlsim_live.io.atomic import check_folder_writable

        s = self.settings
        created_out = not s.out.exists()
        try:
            s.out.mkdir(parents=True, exist_ok=True)
            check_folder_writable(s.out)
            trust_names = []
            if self.trust_sink is not None and self.trust_sink.paths is not None:
                trust_names = [p.name for p in self.trust_sink.paths.all()]
            self._run.start(also=trust_names)
            self.stats = replay(self.source, self.pipeline, s.fps, stop=self._stop)
            failure = self._run.sr_failure()
            written = self._run.outputs.groups_written if self._run.outputs else 0
            if written == 0 and not (self.stats.interrupted or failure):
                stats = self.pipeline.stats
                raise MLSimError(
                    f"{self.source.path}: no group was reconstructed ("
                    f"{stats.groups_acquired} complete groups, {stats.errors} "
                    f"failed, {stats.incomplete_groups} incomplete); expected raw SIM "
                    "groups of 9 frames that the method can reconstruct"
                )
            sections: list[StatsSection] = [
                ReplayFigures.of(self.stats, self.source, self.pipeline.stats)
            ]
            if self.trust_sink is not None:
                sections.append(Figures(self.trust_sink.summary()))
            summary = self._run.finish(sections=sections)
        except BaseException:
            if self.trust_sink is not None:
                self.trust_sink.remove_outputs()
            self._run.discard()
            if created_out:
                _remove_if_empty(s.out)
            raise
        finally:
            self.source.close()
        if failure is not None:
            raise MLSimError(
                f"{self.sr_path}: {failure} after {written} group(s) "
                f"({self._run.sr_groups_lost()} not written; {self.summary_path.name} has the "
                "counts); expected free space and a writable --out folder"
            )
        figures = summary.section(ReplayFigures)
        log.info(
            "replayed %d frames in %.2f s (%s raw frames/s, %s groups/s): %s",
            self.stats.frames_pushed,
            self.stats.replay_s,
            self.stats.raw_frames_per_s,
            None if figures is None else figures.groups_per_s,
            self.sr_path,
        )
        return summary

    def close(self) -> None:
        """Release the source and the pipeline without running (e.g. after a setup error)."""
        self._run.discard()
        self.source.close()


@dataclass(frozen=True)
class ReplayFigures:
    """What replay adds to a run's summary: the input, how it was pushed, and the rates.

    Attributes
    ----------
    input : Path
        The recording.
    source : dict
        Its description (`mlsim_live.replay.sources.describe`).
    stats : ReplayStats
        How the frames were pushed.
    groups_per_s : float or None
        Groups reconstructed per second of the replay.
    """

    input: Path
    source: Mapping[str, Any]
    stats: ReplayStats
    groups_per_s: float | None

    @classmethod
    def of(cls, stats: ReplayStats, source: FrameSource, run: RunStats) -> ReplayFigures:
        """The figures of a finished replay of ``source``."""
        replay_s = stats.replay_s
        groups_per_s = round(run.groups_reconstructed / replay_s, 3) if replay_s > 0 else None
        return cls(Path(source.path), describe(source), stats, groups_per_s)

    def to_dict(self) -> dict[str, Any]:
        """Its keys of the summary JSON."""
        stats = self.stats
        return {
            "input": str(self.input),
            "source": dict(self.source),
            "raw_frames": stats.frames_pushed,
            "fps_requested": stats.fps_requested,
            "late_frames": stats.late_frames,
            "stopped": stats.stopped,
            "interrupted": stats.interrupted,
            "replay_s": round(stats.replay_s, 3),
            "raw_frames_per_s": stats.raw_frames_per_s,
            "groups_per_s": self.groups_per_s,
        }


def _resolved_optics(settings: ReplaySettings, source: FrameSource) -> Optics | None:
    """The optics of options and recording, by the one rule of
    `mlsim_live.sim.optics.resolve_optics`: each value from the option, else from the
    recording (the demo tags its simulated optics; the pixel size of the source already
    honours the option)."""
    from mlsim_live.sim.optics import OpticsValues, resolve_optics

    options = OpticsValues(settings.na, settings.wavelength_nm, settings.pixel_size_um)
    recording = OpticsValues(
        getattr(source, "na", None), getattr(source, "wavelength_nm", None), source.pixel_size_um
    )
    return resolve_optics(options, recording, where=str(source.path))


def _make_reconstructor(settings: ReplaySettings, optics: Optics | None) -> Reconstructor:
    """Build the reconstructor of ``settings`` with the run's optics."""
    from mlsim_live.recon import default_method, make_stream_reconstructor

    method = default_method(settings.method, settings.model)
    model = settings.model if method in LEARNED_METHODS else None
    return make_stream_reconstructor(
        method, model=model, optics=optics, offset_adu=settings.offset_adu
    )


def _trust_sink(settings: ReplaySettings, optics: Optics | None, name: str) -> Any:
    """The sink that maps every group's trust into ``<name>_trust.*`` (with the optics of the
    reconstructor)."""
    from mlsim_live.live.writer import check_outputs_free
    from mlsim_live.trust.output import TrustPaths
    from mlsim_live.trust.sink import TrustSink

    paths = TrustPaths.beside(settings.out, name)
    check_outputs_free(paths.all(), settings.overwrite)
    return TrustSink(
        optics,
        every=True,
        paths=paths,
        offset_adu=settings.offset_adu,
        overwrite=settings.overwrite,
    )


def _remove_if_empty(folder: Path) -> None:
    try:
        os.rmdir(folder)
    except OSError:
        pass
