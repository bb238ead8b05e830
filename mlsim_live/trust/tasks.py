"""Work of the trust map that can run beside the rest on a second core."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Task(Generic[T]):
    """``fn()`` on a short-lived thread of its own (or at once, when not ``parallel``);
    `result` waits for it and returns its value or raises its exception."""

    def __init__(self, fn: Callable[[], T], parallel: bool) -> None:
        self._fn = fn
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if parallel:
            self._thread = threading.Thread(target=self._run, name="mlsim-trust-task", daemon=True)
            self._thread.start()
        else:
            self._run()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self) -> T:
        """The value of ``fn()``, once it is done (its exception re-raised here)."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


__all__ = ["Task"]
