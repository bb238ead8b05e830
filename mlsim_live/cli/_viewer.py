"""Whether a live-path command (`demo`, `live`, `replay`) shows the viewer."""

from __future__ import annotations

import argparse
import logging

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
