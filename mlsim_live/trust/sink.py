"""Trust maps of a live or replayed stream, on their own low-priority thread.

`TrustSink` is a pipeline sink (`mlsim_live.live.sinks.Sink`): ``on_result`` only hands the
group over and returns at once, so the map never delays the reconstruction or the acquisition
hook. With ``every=True`` (replay, batch-like use) every group is mapped; with ``every=False``
(live and demo acquisitions, the viewer) only the newest group waiting is mapped, the others
are skipped and counted. Given paths, the maps go to ``<name>_trust.tif`` (one page per mapped
group, its group index in the page's description), a PNG overlay of the first mapped group
and ``<name>_trust.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlsim_live.errors import MLSimError, one_line
from mlsim_live.trust.map import TrustFigures, TrustResult, TrustSettings
from mlsim_live.trust.output import TrustPaths, overlay, summarize, write_png_atomic
from mlsim_live.trust.stream import TrustStream

if TYPE_CHECKING:  # pragma: no cover
    from mlsim_live.sim.optics import Optics

log = logging.getLogger(__name__)

#: Niceness of the trust thread (as the out-of-distribution check's).
TRUST_NICENESS = 10


class TrustSink:
    """Computes the trust map of reconstructed groups off the reconstruction thread.

    Parameters
    ----------
    optics : Optics, optional
        The OTF for the pattern estimate (estimated from the data when None).
    every : bool
        Map every group (True) or only the newest one waiting (False, live).
    paths : TrustPaths, optional
        Write the maps, overlay and figures there.
    settings : TrustSettings, optional
    offset_adu : float, optional
        Camera offset for the pattern estimate.
    overwrite : bool
        Replace existing output files.
    on_map : callable, optional
        ``on_map(result_index, key, trust_result)`` after each map, on the trust thread (the
        viewer's overlay); it must return quickly.

    Attributes
    ----------
    enabled : bool
        While False, groups handed over are ignored (the viewer's overlay switched off).
    """

    def __init__(
        self,
        optics: Optics | None = None,
        *,
        every: bool = False,
        paths: TrustPaths | None = None,
        settings: TrustSettings | None = None,
        offset_adu: float | None = None,
        overwrite: bool = False,
        on_map: Callable[[int, dict[str, Any], TrustResult], None] | None = None,
    ) -> None:
        self.every = every
        self.enabled = True
        self.paths = paths
        self.overwrite = overwrite
        self.on_map = on_map
        self._stream = TrustStream(optics, settings, offset_adu=offset_adu)
        self._queue: deque[tuple[int, dict[str, Any], np.ndarray, np.ndarray]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self.figures: list[TrustFigures] = []
        self.indices: list[int] = []
        self.skipped = 0
        self.failures = 0
        self.latest: tuple[int, TrustFigures] | None = None
        self._writer: Any = None
        self._tmp: Path | None = None
        self._first: tuple[int, np.ndarray, np.ndarray] | None = None
        self._thread = threading.Thread(target=self._run, name="mlsim-trust-map", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------------------------------
    def on_result(self, result: Any) -> None:
        """Hand a `GroupResult` over (never blocks); ignored while ``enabled`` is False."""
        if not self.enabled:
            return
        item = (int(result.index), dict(result.key), result.raw, result.sr)
        with self._cond:
            if self._closing:
                return
            if not self.every and self._queue:
                self.skipped += len(self._queue)
                self._queue.clear()
            self._queue.append(item)
            self._cond.notify()

    def close(self, timeout: float | None = None) -> None:
        """Map what waits (every group with ``every``, else the newest), stop, and finish
        the files."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self.paths is not None:
            self._finish_files()

    def summary(self) -> dict[str, Any]:
        """``trust_flagged_fraction`` (p50, p95 over the mapped groups) and the counts."""
        fractions = [f.flagged_fraction for f in self.figures]
        return {
            "trust_flagged_fraction": {
                "p50": float(np.percentile(fractions, 50)) if fractions else None,
                "p95": float(np.percentile(fractions, 95)) if fractions else None,
            },
            "trust_groups": len(fractions),
            "trust_skipped": self.skipped,
            "trust_failures": self.failures,
        }

    def output_names(self) -> list[str]:
        """The names of the files this sink writes (none without paths)."""
        return [] if self.paths is None else [p.name for p in self.paths.all()]

    def remove_outputs(self) -> None:
        """Delete the files written (after a failed run)."""
        if self.paths is not None:
            for path in self.paths.all():
                path.unlink(missing_ok=True)

    # ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        _lower_thread_priority()
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                index, key, raw, sr = self._queue.popleft()
            try:
                result = self._stream.compute(raw, sr)
                if self.paths is not None:
                    self._write_page(index, key, sr, result)
            except (MLSimError, OSError) as exc:
                self.failures += 1
                log.warning("trust map of group %s failed: %s", key, one_line(exc))
                continue
            except Exception:  # a bug must not kill the thread silently
                self.failures += 1
                log.exception("trust map of group %s failed", key)
                continue
            self.figures.append(result.figures)
            self.indices.append(index)
            self.latest = (index, result.figures)
            on_map = self.on_map  # read once: the viewer may detach it meanwhile
            if on_map is not None:
                try:
                    on_map(index, key, result)
                except Exception:  # the viewer's problem must not stop the maps
                    log.exception("trust overlay callback failed")

    def _write_page(self, index: int, key: dict[str, Any], sr: np.ndarray, res: Any) -> None:
        import tifffile

        from mlsim_live.io.atomic import check_writable, temp_path_for

        assert self.paths is not None
        if self._writer is None:
            for path in self.paths.all():
                check_writable(path, self.overwrite)
            self._tmp = temp_path_for(self.paths.tif)
            self._writer = tifffile.TiffWriter(self._tmp, bigtiff=True)
            self._first = (index, np.asarray(sr, np.float32), res.trust)
        meta = {"index": index, "axes": key, **res.figures.to_dict()}
        self._writer.write(res.trust, description=json.dumps(meta), metadata=None)

    def _finish_files(self) -> None:
        from mlsim_live.io import write_json_atomic
        from mlsim_live.io.atomic import publish

        assert self.paths is not None
        if self._writer is None:
            return
        self._writer.close()
        written: list[Path] = []
        try:
            assert self._tmp is not None and self._first is not None
            publish(self._tmp, self.paths.tif, self.overwrite)
            written.append(self.paths.tif)
            first_index, first_sr, first_trust = self._first
            write_png_atomic(
                self.paths.png, overlay(first_sr, first_trust), overwrite=self.overwrite
            )
            written.append(self.paths.png)
            stream = self._stream
            write_json_atomic(
                self.paths.json,
                {
                    "trust_tif": str(self.paths.tif),
                    "overlay_png": str(self.paths.png),
                    "overlay_group": first_index,
                    "mapped": "every group" if self.every else "the newest group waiting",
                    "noise": stream.noise.to_dict() if stream.noise is not None else None,
                    "estimate": stream.estimate.to_dict() if stream.estimate else None,
                    "summary": summarize(list(self.figures)),
                    "per_group": [
                        {"index": i, **f.to_dict()}
                        for i, f in zip(self.indices, self.figures, strict=True)
                    ],
                    "skipped": self.skipped,
                    "failures": self.failures,
                },
                overwrite=self.overwrite,
            )
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        finally:
            if self._tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._tmp.unlink()


def _lower_thread_priority() -> None:
    """Raise the calling thread's niceness where the OS allows it per thread (Linux)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TRUST_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: normal priority
        pass


__all__ = ["TRUST_NICENESS", "TrustSink"]
