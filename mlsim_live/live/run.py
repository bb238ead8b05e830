"""One run of the live path: a frame source -> `Pipeline` -> sinks, the SR file and the summary.

Live acquisition (`SIMProcessor`, fed by Pycro-Manager), the demo and replay all end a run the
same way, through :class:`Run`: close the pipeline, publish ``<name>_sr.tif``, write
``<name>_summary.json`` from the typed `RunSummary`. Only the source of frames differs.

The one output rule for the SR file: it is written, one page per group as results arrive, to a
hidden temporary file beside the final path, and renamed into place when the run ends (also
after Ctrl-C, a stop, or a sink failure such as a full disk), holding every group written in
full. No torn or half-written file is ever found at the final path; a killed run leaves only the
hidden file, which the next run into the folder removes (and says so), whatever its name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsim_live.errors import MLSimError
from mlsim_live.live.pipeline import Pipeline, sink_name
from mlsim_live.live.sinks import Sink
from mlsim_live.live.stats import RunSummary, StatsSection
from mlsim_live.live.writer import (
    SRTiffWriter,
    check_outputs_free,
    output_paths,
    write_summary,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputFiles:
    """The files a run wrote: ``sr_file`` (None when no group was written), ``summary_file``
    and ``sr_groups_written`` (pages in the SR file)."""

    sr_file: Path | None
    summary_file: Path | None
    sr_groups_written: int

    def to_dict(self) -> dict[str, Any]:
        """Their keys of the summary JSON."""
        return {
            "sr_file": None if self.sr_file is None else str(self.sr_file),
            "summary_file": None if self.summary_file is None else str(self.summary_file),
            "sr_groups_written": self.sr_groups_written,
        }


class RunOutputs:
    """``<out>/<name>_sr.tif`` and ``<out>/<name>_summary.json``, written by the one rule.

    Checks at construction that neither exists (unless ``overwrite``) and, when ``out`` exists,
    that it is a writable folder, so a run fails before its first frame.

    Parameters
    ----------
    out : path-like
        Output folder (created when the first group is written, if missing).
    name : str
        Output stem.
    overwrite : bool
        Replace existing outputs.
    """

    def __init__(self, out: str | os.PathLike[str], name: str, overwrite: bool = False) -> None:
        from mlsim_live.io.atomic import check_folder_writable

        self.folder = Path(out)
        self.overwrite = overwrite
        self.sr_path, self.summary_path = output_paths(self.folder, name)
        if self.folder.exists() and not self.folder.is_dir():
            raise MLSimError(f"--out {self.folder} is a file; expected a folder")
        check_outputs_free([self.sr_path, self.summary_path], overwrite)
        if self.folder.is_dir():  # found now, not at the first group
            check_folder_writable(self.folder)
        self.writer: SRTiffWriter | None = None

    def open(self, also: Iterable[str] = ()) -> SRTiffWriter:
        """The sink that writes the SR file (to its hidden temporary path).

        Temporary files that killed runs left in the folder are removed first: those of these
        outputs (and of the file names ``also``), and those of any other output whose process
        on this machine is gone (a killed ``demo_3`` when this run is ``demo_4``).
        """
        from mlsim_live.io.atomic import remove_orphans, temp_path_for

        if self.folder.is_dir():
            names = [self.sr_path.name, self.summary_path.name, *also]
            remove_orphans(self.folder, names, any_name=True)
        self.writer = SRTiffWriter(temp_path_for(self.sr_path), overwrite=True)
        return self.writer

    @property
    def groups_written(self) -> int:
        """Pages written to the SR file so far."""
        return 0 if self.writer is None else self.writer.groups_written

    def publish(self) -> Path | None:
        """Rename the finished SR file into place; None when it holds no group (it is removed).

        Call after the pipeline closed its sinks.
        """
        from mlsim_live.io.atomic import publish

        writer = self.writer
        if writer is None:
            return None
        if writer.groups_written and writer.path.exists():
            try:
                publish(writer.path, self.sr_path, self.overwrite)
            except BaseException:
                self.discard()
                raise
            return self.sr_path
        self.discard()
        return None

    def discard(self) -> None:
        """Remove the temporary SR file (after an error)."""
        if self.writer is not None:
            with contextlib.suppress(FileNotFoundError):
                self.writer.path.unlink()

    def write_summary(self, summary: RunSummary) -> Path:
        """Write the summary JSON atomically."""
        path = write_summary(self.summary_path, summary.to_dict(), overwrite=self.overwrite)
        log.info("summary written to %s", path)
        return path


class Run:
    """One run: a `Pipeline` fed by a source, its sinks, and (optionally) its output files.

    Build it with the pipeline, :meth:`start` it before the first frame (the SR writer is
    attached then), let the source push frames into ``run.pipeline`` (the Pycro-Manager hook,
    the demo, replay), then :meth:`finish` it: the one end of every run.

    Parameters
    ----------
    pipeline : Pipeline
        Frames -> grouper -> worker -> sinks.
    outputs : RunOutputs, optional
        Where the SR file and the summary go; None writes no files.
    """

    def __init__(self, pipeline: Pipeline, outputs: RunOutputs | None = None) -> None:
        self.pipeline = pipeline
        self.outputs = outputs
        self._sections: list[StatsSection] = []
        self._finished: RunSummary | None = None
        self._finish_lock = threading.Lock()

    def start(self, also: Iterable[str] = ()) -> None:
        """Attach the SR writer (see `RunOutputs.open`; ``also``: more output names whose
        orphaned temporary files are removed)."""
        if self.outputs is not None and self.outputs.writer is None:
            self.pipeline.add_sink(self.outputs.open(also))

    def add_sink(self, sink: Sink) -> None:
        """Attach another sink (e.g. the viewer's); it receives the results from now on."""
        self.pipeline.add_sink(sink)

    def add_section(self, section: StatsSection) -> None:
        """Figures a front end knows from the start (e.g. the demo's simulated optics)."""
        self._sections.append(section)

    def summary(self, *sections: StatsSection) -> RunSummary:
        """The running summary (the final one once finished), with ``sections`` appended."""
        if self._finished is not None:
            return self._finished
        return RunSummary(self.pipeline.stats, (*self._sections, *sections))

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` has returned."""
        return self._finished is not None

    def finish(
        self, timeout: float | None = None, sections: Iterable[StatsSection] = ()
    ) -> RunSummary:
        """End the run: close the pipeline, publish the SR file, write the summary JSON.

        Idempotent and safe from several threads: a later call returns the first one's summary.

        Parameters
        ----------
        timeout : float, optional
            Seconds the pipeline may take to finish what waits (see `Pipeline.close`).
        sections : iterable of StatsSection
            Figures the front end adds at the end (e.g. the acquisition's).
        """
        with self._finish_lock:
            if self._finished is not None:
                return self._finished
            self.pipeline.close(timeout)
            summary = RunSummary(self.pipeline.stats, (*self._sections, *sections))
            outputs = self.outputs
            if outputs is not None:
                sr_file = outputs.publish()
                files = OutputFiles(sr_file, outputs.summary_path, outputs.groups_written)
                summary = summary.with_sections(files)
                outputs.write_summary(summary)
            self._finished = summary
            return summary

    def discard(self) -> None:
        """After an error: close the pipeline and remove the temporary SR file."""
        try:
            self.pipeline.close()
        finally:
            if self.outputs is not None:
                self.outputs.discard()

    def sr_failure(self) -> str | None:
        """Why the SR file stopped being written (e.g. ``no space left on device``), or None."""
        writer = None if self.outputs is None else self.outputs.writer
        return None if writer is None else writer.failure_reason

    def sr_groups_lost(self) -> int:
        """Groups the SR writer missed after its failure."""
        writer = None if self.outputs is None else self.outputs.writer
        return 0 if writer is None else self.pipeline.stats.groups_lost_by(sink_name(writer))
