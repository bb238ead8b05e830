"""Whether a Qt window can be shown here, decided without importing Qt."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# Qt platform plugins that draw without a window system (or are one themselves).
_SELF_CONTAINED_PLATFORMS = frozenset(
    {"offscreen", "minimal", "vnc", "eglfs", "linuxfb", "vkkhrdisplay", "windows", "cocoa"}
)


def display_status() -> tuple[bool, str]:
    """Say whether the viewer can open a window, and why.

    The offscreen and minimal Qt platforms count as a display (they render, so screenshots
    work). Otherwise, on Linux, ``DISPLAY`` (X11) or ``WAYLAND_DISPLAY`` must be set;
    Windows and macOS always have one. PyQt5 and pyqtgraph must be installed.

    Returns
    -------
    available : bool
        True when a window can be opened.
    reason : str
        What was found, for a log line.
    """
    for module in ("PyQt5", "pyqtgraph"):
        if importlib.util.find_spec(module) is None:
            return False, f"{module} is not installed"
    platform = os.environ.get("QT_QPA_PLATFORM", "").strip()
    if platform:
        name = platform.split(":", 1)[0].split(";", 1)[0].lower()
        if name in _SELF_CONTAINED_PLATFORMS:
            return True, f"QT_QPA_PLATFORM={platform}"
        if name == "xcb":
            if os.environ.get("DISPLAY"):
                return True, f"QT_QPA_PLATFORM={platform}, DISPLAY={os.environ['DISPLAY']}"
            return False, f"QT_QPA_PLATFORM={platform} but DISPLAY is not set"
        if name.startswith("wayland"):
            if os.environ.get("WAYLAND_DISPLAY"):
                return True, f"QT_QPA_PLATFORM={platform}, WAYLAND_DISPLAY is set"
            return False, f"QT_QPA_PLATFORM={platform} but WAYLAND_DISPLAY is not set"
        return True, f"QT_QPA_PLATFORM={platform}"
    if sys.platform in ("win32", "darwin"):
        return True, f"platform {sys.platform}"
    if os.environ.get("DISPLAY"):
        return True, f"DISPLAY={os.environ['DISPLAY']}"
    if os.environ.get("WAYLAND_DISPLAY"):
        return True, "WAYLAND_DISPLAY is set"
    return False, "neither DISPLAY nor WAYLAND_DISPLAY nor QT_QPA_PLATFORM is set"


def display_available() -> bool:
    """Return True when the viewer can open a window (see `display_status`)."""
    return display_status()[0]


def viewer_enabled(headless: bool) -> bool:
    """Decide whether a run shows the viewer; log a line when it falls back to headless.

    Parameters
    ----------
    headless : bool
        True when the user asked for ``--headless``.

    Returns
    -------
    bool
        True to show the viewer, False to run headless.
    """
    if headless:
        return False
    available, reason = display_status()
    if not available:
        log.info(
            "no display available (%s): running headless; set QT_QPA_PLATFORM=offscreen "
            "to render the viewer without a screen",
            reason,
        )
        return False
    return True
