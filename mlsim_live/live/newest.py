"""`Newest`: a one-slot mailbox that hands the newest item from a producer thread to a consumer
(the GUI thread), coalescing what the consumer has not taken yet. No Qt: the displays (the
pyqtgraph viewer, its trust overlay, napari's live layer) wrap it with their own signals."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Newest(Generic[T]):
    """A one-slot mailbox: producers `put` items, the consumer `take`s the newest.

    An item put before the previous one was taken replaces it, so the consumer never falls
    behind and is notified once per batch of items (`put` says when to notify). It also counts
    what went through it (`counts`) and remembers when the producer said it is done (`close`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: T | None = None
        self._put = 0
        self._taken = 0
        self._closed = False

    def put(self, item: T) -> bool:
        """Keep ``item`` as the newest (never blocks for long); return True when the slot was
        empty, i.e. the consumer has not yet been told that an item waits."""
        with self._lock:
            was_empty = self._waiting is None
            self._waiting = item
            self._put += 1
        return was_empty

    def take(self) -> T | None:
        """The newest item put since the last `take`, or None."""
        with self._lock:
            waiting, self._waiting = self._waiting, None
            if waiting is not None:
                self._taken += 1
        return waiting

    def close(self) -> bool:
        """The producer is done; True the first time (the caller then tells the consumer once)."""
        with self._lock:
            first, self._closed = not self._closed, True
        return first

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        with self._lock:
            return self._closed

    def counts(self) -> tuple[int, int, int]:
        """``(put, taken, coalesced)`` at one instant: items put, items taken, and items
        replaced by a newer one before they were taken (never delivered)."""
        with self._lock:
            waiting = 0 if self._waiting is None else 1
            return self._put, self._taken, self._put - self._taken - waiting


__all__ = ["Newest"]
