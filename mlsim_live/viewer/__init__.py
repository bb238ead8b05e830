"""The live viewer (PyQt5 + pyqtgraph): the only part of mlsim-live that imports Qt.

``display_available`` and ``viewer_enabled`` import no Qt, so runs decide cheaply whether to
show the viewer; the Qt classes are loaded on first use::

    from mlsim_live.viewer import viewer_enabled

    if viewer_enabled(args.headless):
        from mlsim_live.viewer import open_viewer, run_viewer

        window, sink = open_viewer(stats_fn=pipeline.summary, on_close=stop, simulated=True)
        ...  # give `sink` to the pipeline, start the acquisition in a thread
        run_viewer(window, screenshot=args.screenshot)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsim_live.viewer.display import display_available, display_status, viewer_enabled

__all__ = [
    "SIMViewer",
    "ViewerSink",
    "check_screenshot_path",
    "display_available",
    "display_status",
    "log_power_spectrum",
    "open_viewer",
    "run_viewer",
    "run_with_viewer",
    "viewer_enabled",
]

if TYPE_CHECKING:  # pragma: no cover
    from mlsim_live.viewer.app import (
        check_screenshot_path,
        open_viewer,
        run_viewer,
        run_with_viewer,
    )
    from mlsim_live.viewer.imaging import log_power_spectrum
    from mlsim_live.viewer.sink import ViewerSink
    from mlsim_live.viewer.window import SIMViewer

_LAZY = {
    "SIMViewer": "mlsim_live.viewer.window",
    "ViewerSink": "mlsim_live.viewer.sink",
    "check_screenshot_path": "mlsim_live.viewer.app",
    "open_viewer": "mlsim_live.viewer.app",
    "run_viewer": "mlsim_live.viewer.app",
    "run_with_viewer": "mlsim_live.viewer.app",
    "log_power_spectrum": "mlsim_live.viewer.imaging",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlsim_live.viewer' has no attribute {name!r}")
