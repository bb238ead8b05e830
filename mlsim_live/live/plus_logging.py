"""Import pymmcore-plus without its logging side effects on the application.

Importing pymmcore-plus sets the root logger to DEBUG (every library's debug messages then
reach our handlers) and adds its own stderr handler, which logs each MDA event at INFO. Importing
this module first imports pymmcore-plus with the root level kept, and leaves pymmcore-plus's own
messages (warnings and errors by default; everything with ``-v``) to the application's handlers.
Its log file (``~/.local/share/pymmcore-plus/logs``) is kept.
"""

from __future__ import annotations

import importlib
import logging

PLUS_LOGGER = "pymmcore-plus"


def import_pymmcore_plus_quietly() -> None:
    """Import pymmcore-plus (once) keeping the root logger's level; quiet its stderr handler."""
    root = logging.getLogger()
    level = root.level
    try:
        importlib.import_module("pymmcore_plus")
    finally:
        root.setLevel(level)
    plus_log = logging.getLogger(PLUS_LOGGER)
    for handler in list(plus_log.handlers):
        if type(handler) is logging.StreamHandler:  # its stderr handler, not its log file
            plus_log.removeHandler(handler)
    plus_log.setLevel(logging.DEBUG if level and level <= logging.DEBUG else logging.WARNING)


import_pymmcore_plus_quietly()
