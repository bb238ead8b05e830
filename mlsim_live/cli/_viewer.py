"""The viewer of the live-path commands (`demo`, `live`, `replay`): whether it shows, and runs
with it (the run on a thread, the viewer in the main thread)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def show_viewer(args: argparse.Namespace) -> bool:
    """True when the viewer is shown (not ``--headless`` and a display exists).

    A ``--screenshot`` path is checked here, before the run starts, so a bad or existing path
    fails at once instead of after the acquisition.
    """
    from mlsim_live.viewer import viewer_enabled

    show = viewer_enabled(args.headless)
    if args.screenshot is not None:
        if show:
            from mlsim_live.viewer import check_screenshot_path

            check_screenshot_path(args.screenshot, args.overwrite)
        else:
            log.warning("--screenshot needs the viewer; no screenshot is taken in a headless run")
    return show


def run_acquisition_with_viewer(
    run: Any, screenshot: Path | None, overwrite: bool
) -> dict[str, Any]:
    """Acquire on a thread while the viewer runs in the main thread; return the summary.

    ``run`` is anything with ``processor``, ``run()`` and ``stop()`` (demo and live runs).
    Closing the window stops the acquisition; the queued groups finish and are saved.
    """
    from mlsim_live.viewer import run_with_viewer as run_job

    return run_job(
        run.run,
        run.stop,
        add_sink=run.processor.add_sink,
        stats_fn=lambda: run.processor.summary,
        simulated=run.processor.pipeline.simulated,
        screenshot=screenshot,
        overwrite=overwrite,
        optics=run.processor.optics,
        trust_sink=run.processor.trust_sink,
    )


def run_replay_with_viewer(
    replay_run: Any, screenshot: Path | None, overwrite: bool
) -> dict[str, Any]:
    """Replay on a thread while the viewer runs in the main thread; return the summary.

    Closing the window stops the replay; the groups already complete are reconstructed and
    saved.
    """
    from mlsim_live.viewer import run_with_viewer as run_job

    return run_job(
        replay_run.run,
        replay_run.stop,
        add_sink=replay_run.add_sink,
        stats_fn=lambda: replay_run.summary,
        simulated=replay_run.simulated,
        title=f"mlsim-live replay: {replay_run.name}",
        screenshot=screenshot,
        overwrite=overwrite,
        optics=replay_run.optics,
        trust_sink=replay_run.trust_sink,
    )
