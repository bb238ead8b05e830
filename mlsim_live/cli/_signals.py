"""SIGINT and SIGTERM end a run the same way: one KeyboardInterrupt, then a clean finish.

The first signal raises KeyboardInterrupt in the main thread, where the running command stops
reading or acquiring and saves what it finished; later signals are logged and ignored, so that
saving is never cut short. ``kill -9`` cannot be caught: its leftovers are removed by the next
run (`mlsim_live.io.atomic.remove_orphans`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_received: list[int] = []


def received() -> str | None:
    """The name of the first signal received during the current command (None: none)."""
    return signal.Signals(_received[0]).name if _received else None


def exit_code() -> int:
    """The shell's exit code for the signal received: 128 + its number (130 for SIGINT)."""
    return 128 + (_received[0] if _received else signal.SIGINT)


def _handle(signum: int, frame: Any) -> None:
    if _received:
        log.warning(
            "%s received again; still saving what is finished (kill -9 to stop at once)",
            signal.Signals(signum).name,
        )
        return
    _received.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """Route SIGINT and SIGTERM to one KeyboardInterrupt while the block runs (main thread)."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
