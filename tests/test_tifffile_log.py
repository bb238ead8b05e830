"""tifffile's log records are collected per thread, without switching its logger during reads."""

from __future__ import annotations

import logging
import threading

from mlsim_live.io.tifffile_log import _capture_tifffile_log

TIFFFILE = logging.getLogger("tifffile")


def test_capture_collects_this_threads_records_only(caplog):
    caplog.set_level(logging.WARNING, logger="tifffile")
    inside, other_done = threading.Event(), threading.Event()

    def other_thread():
        assert inside.wait(10)
        TIFFFILE.warning("from another thread")
        other_done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with _capture_tifffile_log() as tlog:
        TIFFFILE.error("corrupt data in page 3")
        inside.set()
        assert other_done.wait(10)
    thread.join(10)
    assert tlog.errors() == ["corrupt data in page 3"]
    assert [r.getMessage() for r in tlog.records] == ["corrupt data in page 3"]
    # the other thread's record went on to the handlers; the captured one did not
    messages = [r.getMessage() for r in caplog.records if r.name == "tifffile"]
    assert messages == ["from another thread"]


def test_reads_in_two_threads_do_not_wait_for_each_other():
    """A capture held open in one thread does not hold up a capture in another."""
    holding, release = threading.Event(), threading.Event()
    finished = threading.Event()

    def long_read():
        with _capture_tifffile_log() as tlog:
            TIFFFILE.warning("slow file")
            holding.set()
            assert release.wait(10)
        assert [r.getMessage() for r in tlog.records] == ["slow file"]

    thread = threading.Thread(target=long_read)
    thread.start()
    assert holding.wait(10)

    def short_read():
        with _capture_tifffile_log() as tlog:
            TIFFFILE.error("bad page")
        assert tlog.errors() == ["bad page"]
        finished.set()

    short = threading.Thread(target=short_read)
    short.start()
    done_while_held = finished.wait(5)
    release.set()
    thread.join(10)
    short.join(10)
    assert done_while_held


def test_nested_captures_and_logger_left_as_it_was():
    propagate, handlers = TIFFFILE.propagate, list(TIFFFILE.handlers)
    with _capture_tifffile_log() as outer:
        with _capture_tifffile_log() as inner:
            TIFFFILE.warning("inner")
        TIFFFILE.warning("outer")
        assert TIFFFILE.propagate == propagate and TIFFFILE.handlers == handlers
    assert [r.getMessage() for r in inner.records] == ["inner"]
    assert [r.getMessage() for r in outer.records] == ["outer"]
