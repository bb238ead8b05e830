"""tifffile, imported lazily, and a collector for its log records while a file is parsed or read."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlsim_live.errors import one_line

log = logging.getLogger(__name__)


def _tifffile() -> Any:
    import tifffile

    return tifffile


class _TifffileLog(logging.Handler):
    """Collects tifffile's log records while a file is parsed or read."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [one_line(r.getMessage()) for r in self.records if r.levelno >= logging.ERROR]

    def relog_warnings(self, path: Path) -> None:
        for r in self.records:
            if logging.WARNING <= r.levelno < logging.ERROR:
                log.warning("%s: %s", path, one_line(r.getMessage()))


_LOG_LOCK = threading.RLock()


@contextlib.contextmanager
def _capture_tifffile_log() -> Iterator[_TifffileLog]:
    """Route tifffile's log records into a collector instead of the console."""
    logger = logging.getLogger("tifffile")
    handler = _TifffileLog()
    with _LOG_LOCK:
        propagate = logger.propagate
        logger.addHandler(handler)
        logger.propagate = False
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate
