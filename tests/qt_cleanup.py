"""Carry out Qt's pending deletions now (for tests that must see Qt objects gone)."""

from __future__ import annotations


def delete_deferred() -> None:
    """Run the ``deleteLater`` calls waiting in this (the GUI) thread: the widgets', then the
    slot objects PyQt deletes after them (a second round)."""
    from PyQt5 import QtCore, QtWidgets

    for _ in range(2):
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
        QtWidgets.QApplication.processEvents()
