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
from pathlib import Path
from typing import Any

import numpy as np

from mlsim_live.errors import MLSimError
from mlsim_live.io.atomic import check_folder_writable
from mlsim_live.latency import LatencyWindow
from mlsim_live.live.pipeline import Pipeline
from mlsim_live.live.sinks import Sink
from mlsim_live.live.writer import SRTiffWriter, check_outputs_free, output_paths, write_summary
from mlsim_live.recon import default_method
from mlsim_live.recon.base import Reconstructor, warm_up
from mlsim_live.sim.optics import Optics

log = logging.getLogger(__name__)

DEFAULT_NAME = "mlsim"


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
        Folder for ``<name>_sr.tif`` (written as groups arrive) and ``<name>_summary.json``
        (written by ``close``). None writes no files.
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
    optics : Optics, optional
        The microscope's optics (NA, wavelength, pixel size), for the reconstructor (Wiener OTF,
        RCAN out-of-distribution check).
    frame_shape : (int, int), optional
        Camera frame shape; when given, the reconstructor is warmed up on it now, so the first
        group of the acquisition is not slow.
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
        self.sr_path: Path | None = None
        self.summary_path: Path | None = None
        self._overwrite = overwrite
        all_sinks = list(sinks)
        if out is not None:
            self.sr_path, self.summary_path = output_paths(out, self.name)
            check_outputs_free([self.sr_path, self.summary_path], overwrite)
            if Path(out).is_dir():  # found now, not at the first group
                check_folder_writable(out)
            all_sinks.append(SRTiffWriter(self.sr_path, overwrite=overwrite))
        self.pipeline = Pipeline(
            reconstructor,
            sinks=all_sinks,
            policy=policy,
            pixel_size_um=pixel_size_um,
            simulated=simulated,
            angle_axis=angle_axis,
            phase_axis=phase_axis,
            max_waiting=max_waiting,
            max_waiting_bytes=max_waiting_bytes,
        )
        self.extra_summary: dict[str, Any] = {}
        self._hook_lock = threading.Lock()
        self._hook_ms = LatencyWindow()
        self._hook_failures = 0
        self._closed_summary: dict[str, Any] | None = None
        self._close_lock = threading.Lock()
        log.info(
            "SIM processor: %s on %s, policy %s%s",
            self.pipeline.summary["model"],
            self.pipeline.summary["provider"],
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

    @property
    def summary(self) -> dict[str, Any]:
        """The pipeline summary plus ``hook_ms`` (``p50``, ``p95``) and ``hook_calls``."""
        if self._closed_summary is not None:
            return dict(self._closed_summary)
        summary = self.pipeline.summary
        with self._hook_lock:
            failures = self._hook_failures
        summary["hook_ms"] = self._hook_ms.percentiles(exact=self.pipeline.closed)
        summary["hook_calls"] = self._hook_ms.added
        summary["hook_failures"] = failures
        summary.update(self.extra_summary)
        return summary

    def close(self, timeout: float | None = None) -> dict[str, Any]:
        """End: reconstruct what waits, close the sinks, write the summary JSON; return it.

        Idempotent, and safe from several threads (a second call waits for the first). Call it
        after the acquisition has finished.
        """
        with self._close_lock:
            if self._closed_summary is not None:
                return dict(self._closed_summary)
            return self._close(timeout)

    def _close(self, timeout: float | None) -> dict[str, Any]:
        self.pipeline.close(timeout)
        summary = self.summary
        if self.sr_path is not None:
            summary["sr_file"] = str(self.sr_path) if self.sr_path.exists() else None
        if self.summary_path is not None:
            summary["summary_file"] = str(self.summary_path)
        self._closed_summary = summary
        if self.summary_path is not None:
            write_summary(self.summary_path, summary, overwrite=self._overwrite)
            log.info("summary written to %s", self.summary_path)
        return dict(summary)

    def __enter__(self) -> SIMProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
