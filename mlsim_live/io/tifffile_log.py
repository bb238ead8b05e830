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


class _TifffileLog:
    """The tifffile log records of one parse or read (collected by `_capture_tifffile_log`)."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []

    def errors(self) -> list[str]:
        return [one_line(r.getMessage()) for r in self.records if r.levelno >= logging.ERROR]

    def relog_warnings(self, path: Path) -> None:
        for r in self.records:
            if logging.WARNING <= r.levelno < logging.ERROR:
                log.warning("%s: %s", path, one_line(r.getMessage()))


class _ThreadCaptures(logging.Filter):
    """Installed once on tifffile's logger: a record logged by a thread inside
    `_capture_tifffile_log` goes to that capture (and no further); other records pass on.

    Each thread has its own captures, so reads in several threads neither wait for each other
    nor see each other's records, and tifffile's logger is never switched while a file is read.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def stack(self) -> list[_TifffileLog]:
        """This thread's open captures, innermost last."""
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def filter(self, record: logging.LogRecord) -> bool:
        stack = getattr(self._local, "stack", None)
        if stack:
            stack[-1].records.append(record)
            return False
        return True


_CAPTURES = _ThreadCaptures()
_INSTALL_LOCK = threading.Lock()


def _install() -> None:
    """Add the capture filter to tifffile's logger, once per process."""
    logger = logging.getLogger("tifffile")
    if _CAPTURES in logger.filters:
        return
    with _INSTALL_LOCK:
        if _CAPTURES not in logger.filters:
            logger.addFilter(_CAPTURES)


@contextlib.contextmanager
def _capture_tifffile_log() -> Iterator[_TifffileLog]:
    """Collect the tifffile log records this thread makes, instead of printing them.

    Only records logged by the calling thread are collected: decode pages with
    ``maxworkers=1`` inside the block (tifffile's decoding threads log elsewhere).
    """
    _install()
    capture = _TifffileLog()
    stack = _CAPTURES.stack()
    stack.append(capture)
    try:
        yield capture
    finally:
        stack.remove(capture)
