"""``SIMProcessor``: the Pycro-Manager image processor that feeds the live pipeline.

Works with both Pycro-Manager backends (the Python backend on pymmcore and the Java backend
attached to Micro-Manager): both hand ``image_process_fn(image, metadata)`` the frame and a
metadata dict whose ``"Axes"`` entry holds the event's axes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.latency import LatencyWindow
from mlsim_live.live.pipeline import Pipeline
from mlsim_live.live.run import Run, RunOutputs
from mlsim_live.live.sinks import Sink
from mlsim_live.live.stats import Figures, Percentiles, RunSummary, StatsSection
from mlsim_live.recon import default_method
from mlsim_live.recon.base import Reconstructor, warm_up
from mlsim_live.sim.optics import Optics

log = logging.getLogger(__name__)

DEFAULT_NAME = "mlsim"


@dataclass(frozen=True)
class HookStats:
    """The Pycro-Manager hook's figures: time per call (ms), calls, and calls that failed."""

    hook_ms: Percentiles
    hook_calls: int
    hook_failures: int

    def to_dict(self) -> dict[str, Any]:
        """Their keys of the summary JSON."""
        return {
            "hook_ms": self.hook_ms.to_dict(),
            "hook_calls": self.hook_calls,
            "hook_failures": self.hook_failures,
        }


class SIMProcessor:
    """Pycro-Manager ``image_process_fn`` that reconstructs SIM groups live.

    Each call returns the raw frame and its metadata unchanged, so Pycro-Manager saves the raw
    data, and pushes the frame into a :class:`Pipeline`, which groups frames by their angle and
    phase axes and reconstructs complete groups on a worker thread. The call never raises.
    Under ``policy="latest"`` it returns at once; under ``policy="all"`` it blocks while the
    groups waiting for reconstruction hold more than ``max_waiting_bytes`` (backpressure on the
    acquisition, logged), and returns at once otherwise.

    Parameters
    ----------
    model : path-like, optional
        ONNX model for ``method="rcan"``; None uses the default model.
    method : {"rcan", "wiener", "widefield"}, optional
        Reconstruction method, built with ``mlsim_live.recon.make_stream_reconstructor``. None:
        ``rcan`` when ``model`` is given or the default model is installed, else ``wiener``
        (with a warning).
    policy : {"latest", "all"}
        ``latest`` (live default) drops the oldest waiting groups when reconstruction falls
        behind; ``all`` reconstructs every group (the hook blocks only at a memory bound).
    angle_axis, phase_axis : str
        Names of the event axes that carry the pattern angle (0..2) and phase (0..2).
    out : path-like, optional
        Folder for ``<name>_sr.tif`` and ``<name>_summary.json``. The SR file is written as
        groups arrive, to a hidden temporary file that ``close`` renames into place (the one
        output rule of `mlsim_live.live.run`); ``close`` writes the summary. None writes no
        files.
    name : str, optional
        Output name stem (default ``"mlsim"``).
    sinks : iterable of Sink
        More receivers of each result (e.g. the viewer).
    reconstructor : Reconstructor, optional
        Use this object instead of building one from ``method``/``model``.
    pixel_size_um : float, optional
        Raw pixel size; by default Micro-Manager's ``PixelSize_um`` of the first frame.
    simulated : bool
        The frames come from simulated optics (demo mode).
    overwrite : bool
        Replace existing output files.
    max_waiting, max_waiting_bytes : int
        Queue bounds (see :class:`Pipeline`).
    stages : {1, 2} or None
        Worker stages (see :class:`Pipeline`); None: two (prepare beside inference) when the
        reconstructor has them.
    optics : Optics, optional
        The microscope's optics (NA, wavelength, pixel size), for the reconstructor (Wiener OTF,
        RCAN out-of-distribution check).
    frame_shape : (int, int), optional
        Camera frame shape; when given, the reconstructor is warmed up on it now, so the first
        group of the acquisition is not slow.
    trust : bool
        Also map the trust of the newest reconstruction (`mlsim_live.trust`) on its own
        low-priority thread, never delaying the reconstruction or this hook: with ``out``
        into ``<name>_trust.tif`` (a page per mapped group), ``.png`` and ``.json``; the
        summary gains ``trust_flagged_fraction`` (p50, p95 over the mapped groups).
    reconstructor_options : dict, optional
        More arguments for ``make_reconstructor``. For ``"wiener"``, ``reuse_estimate`` defaults
        to True live: the pattern is estimated on the first group and reused (it does not drift
        within an acquisition), which keeps each reconstruction fast.

    Examples
    --------
    >>> from pycromanager import Acquisition
    >>> proc = SIMProcessor(method="wiener", out="data", name="cells")
    >>> with Acquisition(directory="data", name="cells", image_process_fn=proc) as acq:
    ...     acq.acquire(events)  # each event has axes {"angle": a, "phase": p, ...}
    >>> proc.close()
    >>> proc.summary["groups_reconstructed"]
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        method: str | None = None,
        policy: str = "latest",
        angle_axis: str = "angle",
        phase_axis: str = "phase",
        out: str | os.PathLike[str] | None = None,
        name: str | None = None,
        sinks: Iterable[Sink] = (),
        reconstructor: Reconstructor | None = None,
        pixel_size_um: float | None = None,
        simulated: bool = False,
        overwrite: bool = False,
        max_waiting: int = 1,
        max_waiting_bytes: int = 1 << 30,
        optics: Optics | None = None,
        frame_shape: tuple[int, int] | None = None,
        reconstructor_options: Mapping[str, Any] | None = None,
        trust: bool = False,
        stages: int | None = None,
    ) -> None:
        if reconstructor is None:
            from mlsim_live.recon import make_stream_reconstructor

            reconstructor = make_stream_reconstructor(
                default_method(method, model),
                model=model,
                optics=optics,
                **dict(reconstructor_options or {}),
            )
        if frame_shape is not None:
            warm_up(reconstructor, frame_shape)
        self.name = name or DEFAULT_NAME
        #: The optics the run knows (None: the methods estimate them from the data).
        self.optics = optics
        outputs = RunOutputs(out, self.name, overwrite) if out is not None else None
        self.sr_path: Path | None = None if outputs is None else outputs.sr_path
        self.summary_path: Path | None = None if outputs is None else outputs.summary_path
        self.trust_sink = _trust_sink(optics, out, self.name, overwrite) if trust else None
        if self.trust_sink is not None:
            sinks = (*sinks, self.trust_sink)
        self.pipeline = Pipeline(
            reconstructor,
            sinks=sinks,
            policy=policy,
            pixel_size_um=pixel_size_um,
            simulated=simulated,
            angle_axis=angle_axis,
            phase_axis=phase_axis,
            max_waiting=max_waiting,
            max_waiting_bytes=max_waiting_bytes,
            stages=stages,
        )
        self.run = Run(self.pipeline, outputs)
        trust_paths = () if self.trust_sink is None else self.trust_sink.output_names()
        self.run.start(also=trust_paths)
        self._hook_lock = threading.Lock()
        self._hook_ms = LatencyWindow()
        self._hook_failures = 0
        log.info(
            "SIM processor: %s on %s, policy %s%s",
            self.pipeline.model,
            self.pipeline.provider,
            policy,
            f", writing {self.sr_path}" if self.sr_path else "",
        )

    def __call__(
        self, image: np.ndarray, metadata: Mapping[str, Any]
    ) -> tuple[np.ndarray, Mapping[str, Any]]:
        """The Pycro-Manager hook: push the frame and return it unchanged."""
        t0 = time.perf_counter()
        try:
            axes = metadata.get("Axes")
            if not isinstance(axes, Mapping):
                raise MLSimError(
                    f"image metadata has no 'Axes' dict (keys: {sorted(metadata)[:8]}); "
                    "expected Pycro-Manager image metadata"
                )
            self.pipeline.push(image, axes, metadata)
        except Exception as exc:  # never abort the acquisition
            with self._hook_lock:
                self._hook_failures += 1
            log.error("SIM processor could not take a frame: %s", exc)
        self._hook_ms.add((time.perf_counter() - t0) * 1e3)
        return image, metadata

    def add_sink(self, sink: Sink) -> None:
        """Attach another sink (e.g. the viewer's) before or during the acquisition."""
        self.pipeline.add_sink(sink)

    def add_section(self, section: StatsSection) -> None:
        """Figures a front end adds to the summary from now on (e.g. the demo's optics)."""
        self.run.add_section(section)

    @property
    def hook_stats(self) -> HookStats:
        """The hook's own figures so far."""
        with self._hook_lock:
            failures = self._hook_failures
        return HookStats(
            hook_ms=Percentiles.of(self._hook_ms.percentiles(exact=self.pipeline.closed)),
            hook_calls=self._hook_ms.added,
            hook_failures=failures,
        )

    @property
    def stats(self) -> RunSummary:
        """The typed summary: the pipeline's `RunStats`, the hook's figures, the sections added
        (and once closed, the output files)."""
        if self.run.finished:
            return self.run.summary()
        return self.run.summary(self.hook_stats, *self._trust_sections())

    @property
    def summary(self) -> dict[str, Any]:
        """`stats` as the dict of ``<name>_summary.json``: the pipeline's keys, ``hook_ms``
        (``p50``, ``p95``), ``hook_calls``, ``hook_failures``, the sections' keys and, once
        closed with ``out``, ``sr_file``, ``summary_file`` and ``sr_groups_written``."""
        return self.stats.to_dict()

    def finish(
        self, timeout: float | None = None, sections: Iterable[StatsSection] = ()
    ) -> RunSummary:
        """End (see :meth:`close`) with ``sections`` added to the summary; return it typed."""
        self.pipeline.close(timeout)  # first, so the hook's and the trust figures are final
        return self.run.finish(timeout, (self.hook_stats, *sections, *self._trust_sections()))

    def _trust_sections(self) -> tuple[StatsSection, ...]:
        """``trust_flagged_fraction`` and the trust map's counts, with ``trust``."""
        if self.trust_sink is None:
            return ()
        return (Figures(self.trust_sink.summary()),)

    def close(self, timeout: float | None = None) -> dict[str, Any]:
        """End: reconstruct what waits, close the sinks, publish ``<name>_sr.tif`` and write
        the summary JSON; return the summary.

        Idempotent, and safe from several threads (a second call waits for the first). Call it
        after the acquisition has finished.
        """
        return self.finish(timeout).to_dict()

    def __enter__(self) -> SIMProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _trust_sink(
    optics: Optics | None, out: str | os.PathLike[str] | None, name: str, overwrite: bool
) -> Any:
    """The sink that maps the newest group's trust (into ``<name>_trust.*`` with ``out``)."""
    from mlsim_live.live.writer import check_outputs_free
    from mlsim_live.trust.output import TrustPaths
    from mlsim_live.trust.sink import TrustSink

    paths = None if out is None else TrustPaths.beside(out, name)
    if paths is not None:
        check_outputs_free(paths.all(), overwrite)
    return TrustSink(optics, every=False, paths=paths, overwrite=overwrite)
