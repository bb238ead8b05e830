"""The project's one error type."""

from __future__ import annotations


class MLSimError(ValueError):
    """Bad input, bad configuration or a failed operation, with a message for the user.

    The message is one line that says what was found and what is expected. The CLI prints it
    to stderr and exits with code 2, without a traceback.
    """


def one_line(message: object, limit: int = 160) -> str:
    """``message`` (text or an exception) as one line of at most ``limit`` characters."""
    text = " ".join(str(message).split())
    if not text and isinstance(message, BaseException):
        text = type(message).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
