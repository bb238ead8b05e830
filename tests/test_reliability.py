"""Reliability of the live path: bad groups, failing and slow sinks, closing from several
threads, and the counting invariants (issue 12)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tifffile

from mlsim_live.live.pipeline import Pipeline, invariant_violations
from mlsim_live.live.results import GroupResult

SHAPE = (8, 8)


class ListSink:
    def __init__(self) -> None:
        self.results: list[GroupResult] = []
        self.closed = False

    def on_result(self, result: GroupResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        self.closed = True


def group_frames(t: int, value: float | None = None, dtype=np.uint16) -> list:
    rng = np.random.default_rng(t)
    frames = []
    for a in range(3):
        for p in range(3):
            frame = rng.integers(100, 200, SHAPE).astype(dtype)
            if value is not None:
                frame[...] = value
            frames.append((frame, {"time": t, "angle": a, "phase": p}))
    return frames


def push_group(pipeline: Pipeline, t: int, **kwargs) -> None:
    for frame, axes in group_frames(t, **kwargs):
        pipeline.push(frame, axes)


def assert_invariants(summary: dict) -> None:
    assert invariant_violations(summary) == []


# ---- item 1: one validation rule for every source ----


def test_bad_groups_are_refused_as_errors_with_their_reason(fake_reconstructor):
    sink = ListSink()
    pipeline = Pipeline(fake_reconstructor(), sinks=[sink], policy="all")
    push_group(pipeline, 0)
    nan_frames = group_frames(1, dtype=np.float32)
    nan_frames[4][0][2, 3] = np.nan
    for frame, axes in nan_frames:
        pipeline.push(frame, axes)
    push_group(pipeline, 2, value=7)  # constant frames
    push_group(pipeline, 3)
    summary = pipeline.close(timeout=30)
    assert [r.key["time"] for r in sink.results] == [0, 3]  # never written as a page
    assert summary["groups_reconstructed"] == 2 and summary["errors"] == 2
    assert summary["errors_by_reason"] == {"bad raw data": 2}
    assert_invariants(summary)


def test_non_finite_reconstruction_is_an_error(fake_reconstructor):
    class NaNReconstructor(fake_reconstructor):
        def reconstruct(self, group):
            sr = super().reconstruct(group)
            if self.calls == 2:
                sr[0, 0] = np.nan
            return sr

    sink = ListSink()
    pipeline = Pipeline(NaNReconstructor(), sinks=[sink], policy="all")
    for t in range(3):
        push_group(pipeline, t)
    summary = pipeline.close(timeout=30)
    assert [r.key["time"] for r in sink.results] == [0, 2]
    assert summary["errors_by_reason"] == {"non-finite output": 1}
    assert_invariants(summary)


# ---- items 8-11: shutdown and accounting ----


def test_second_close_does_not_deadlock(fake_reconstructor):
    from mlsim_live.replay.runner import replay

    frames = [(f, a, {}) for t in range(2) for f, a in group_frames(t)]
    done = threading.Event()

    def run() -> None:
        with Pipeline(fake_reconstructor(), policy="all") as pipeline:
            replay(frames, pipeline)
        pipeline.close()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(10), "closing a closed pipeline hung"


def test_two_threads_closing_one_processor(fake_reconstructor, tmp_path):
    from mlsim_live.live.processor import SIMProcessor

    proc = SIMProcessor(
        reconstructor=fake_reconstructor(delay_s=0.2), policy="all", out=tmp_path, name="x"
    )
    for frame, axes in group_frames(0):
        proc(frame, {"Axes": axes})
    summaries: list = []
    errors: list = []

    def close() -> None:
        try:
            summaries.append(proc.close())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=close, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads), "concurrent close hung"
    assert errors == []
    assert [s["groups_reconstructed"] for s in summaries] == [1, 1]


def test_close_timeout_is_honoured_with_a_slow_sink(fake_reconstructor):
    class SlowSink(ListSink):
        def on_result(self, result: GroupResult) -> None:
            time.sleep(3)
            super().on_result(result)

    sink = SlowSink()
    pipeline = Pipeline(fake_reconstructor(), sinks=[sink], policy="all")
    push_group(pipeline, 0)
    time.sleep(0.3)  # the worker is inside the slow sink
    started = time.monotonic()
    summary = pipeline.close(timeout=0.2)
    assert time.monotonic() - started < 1.0
    assert summary["groups_reconstructed"] == 1
    assert_invariants(summary)
    deadline = time.monotonic() + 10
    while not sink.closed and time.monotonic() < deadline:  # closed once it returns
        time.sleep(0.05)
    assert sink.closed and len(sink.results) == 1


def test_group_completed_just_before_close_is_counted(fake_reconstructor, monkeypatch):
    from mlsim_live.live.worker import ReconstructionWorker

    entered, go = threading.Event(), threading.Event()
    original = ReconstructionWorker.submit

    def slow_submit(worker, group):
        entered.set()
        go.wait(10)
        original(worker, group)

    # the push stalls between grouping and submission (a stall injected in the worker's API)
    monkeypatch.setattr(ReconstructionWorker, "submit", slow_submit)
    pipeline = Pipeline(fake_reconstructor(), policy="all")
    pusher = threading.Thread(target=push_group, args=(pipeline, 0), daemon=True)
    pusher.start()
    assert entered.wait(10)
    closer = threading.Thread(target=pipeline.close, kwargs={"timeout": 10}, daemon=True)
    closer.start()
    time.sleep(0.2)
    go.set()
    pusher.join(10)
    closer.join(10)
    summary = pipeline.summary
    assert summary["frames_received"] == 9
    assert summary["groups_acquired"] == 1
    assert summary["groups_reconstructed"] + summary["groups_refused"] == 1
    assert_invariants(summary)


def test_raising_on_result_is_not_counted_twice(fake_reconstructor):
    from mlsim_live.live.grouper import FrameGrouper
    from mlsim_live.live.worker import ReconstructionWorker

    def on_result(result: GroupResult) -> None:
        raise RuntimeError("deliberate on_result failure")

    worker = ReconstructionWorker(fake_reconstructor(), on_result, policy="all")
    grouper = FrameGrouper()
    for frame, axes in group_frames(0):
        group = grouper.add(frame, axes)
    worker.submit(group)
    worker.close(10)
    stats = worker.stats()
    assert stats.groups_reconstructed == 1 and stats.errors == 0
    assert stats.delivery_errors == 1


# ---- fault injection: a reconstructor that fails every third group, a hanging sink ----


def test_reconstructor_failing_every_third_group(fake_reconstructor):
    sink = ListSink()
    pipeline = Pipeline(fake_reconstructor(fail=lambda i: i % 3 == 2), sinks=[sink], policy="all")
    for t in range(12):
        push_group(pipeline, t)
    summary = pipeline.close(timeout=30)
    assert summary["groups_acquired"] == 12
    assert summary["groups_reconstructed"] == 8 and summary["errors"] == 4
    assert summary["errors_by_reason"] == {"RuntimeError": 4}
    assert len(sink.results) == 8
    assert_invariants(summary)


def test_hanging_sink_does_not_hang_close(fake_reconstructor):
    release = threading.Event()

    class HangingSink(ListSink):
        def on_result(self, result: GroupResult) -> None:
            release.wait(30)

    good = ListSink()
    pipeline = Pipeline(fake_reconstructor(), sinks=[HangingSink(), good], policy="all")
    for t in range(3):
        push_group(pipeline, t)
    time.sleep(0.3)
    started = time.monotonic()
    summary = pipeline.close(timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert summary["groups_acquired"] == 3
    assert summary["groups_reconstructed"] + summary["groups_dropped"] == 3
    assert_invariants(summary)
    release.set()


# ---- item 3: a sink that fails stops being fed; the SR file stays readable ----


def test_full_disk_stops_the_writer_and_keeps_what_it_wrote(
    fake_reconstructor, tmp_path, full_disk, caplog
):
    from mlsim_live.live.writer import SRTiffWriter

    page = 16 * 16 * 4  # one 2x SR page of an 8 x 8 group, float32
    full_disk(3 * page + 3000)
    writer = SRTiffWriter(tmp_path / "x_sr.tif")
    other = ListSink()
    pipeline = Pipeline(fake_reconstructor(), sinks=[writer, other], policy="all")
    for t in range(10):
        push_group(pipeline, t)
    summary = pipeline.close(timeout=30)
    assert len(other.results) == 10  # the other sinks go on
    (failure,) = summary["sink_failures"]
    assert failure["error"] == "no space left on device"
    written = writer.groups_written
    assert 1 <= written < 10 and failure["groups_lost"] == 10 - written
    stack = tifffile.imread(tmp_path / "x_sr.tif")
    assert stack.shape[0] == written if stack.ndim == 3 else written == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "no space left on device" in errors[0].getMessage()
    assert_invariants(summary)


def test_full_disk_before_the_first_page_leaves_no_file(fake_reconstructor, tmp_path, full_disk):
    from mlsim_live.live.writer import SRTiffWriter

    full_disk(100)
    writer = SRTiffWriter(tmp_path / "x_sr.tif")
    pipeline = Pipeline(fake_reconstructor(), sinks=[writer], policy="all")
    push_group(pipeline, 0)
    summary = pipeline.close(timeout=30)
    assert summary["sink_failures"][0]["groups_lost"] == 1
    assert not (tmp_path / "x_sr.tif").exists()


@pytest.mark.parametrize("n", [1, 3])
def test_writer_files_are_readable_at_any_time(fake_reconstructor, tmp_path, n):
    from mlsim_live.live.writer import SRTiffWriter

    writer = SRTiffWriter(tmp_path / "x_sr.tif")
    pipeline = Pipeline(fake_reconstructor(), sinks=[writer], policy="all")
    for t in range(n):
        push_group(pipeline, t)
    deadline = time.monotonic() + 10
    while writer.groups_written < n and time.monotonic() < deadline:
        time.sleep(0.02)
    with tifffile.TiffFile(tmp_path / "x_sr.tif") as tif:  # before close
        assert len(tif.pages) == n
    pipeline.close()


# ---- item 12: the local Dask cluster is not exposed ----


@pytest.mark.parametrize("dashboard", [None, "127.0.0.1:8787"])
def test_local_dask_binds_loopback_and_no_dashboard_unless_asked(monkeypatch, dashboard):
    distributed = pytest.importorskip("distributed")
    from mlsim_live.batch import dask_executor

    seen: dict = {}

    class FakeCluster:
        def __init__(self, **kwargs) -> None:
            seen.update(kwargs)

        def close(self) -> None:
            pass

    class FakeClient:
        def __init__(self, cluster) -> None:
            self.scheduler = type("S", (), {"address": "tcp://127.0.0.1:1"})()

        def nthreads(self) -> dict:
            return {"w": 1}

        def close(self) -> None:
            pass

    monkeypatch.setattr(distributed, "LocalCluster", FakeCluster)
    monkeypatch.setattr(distributed, "Client", FakeClient)
    with dask_executor("local", dashboard):
        pass
    assert seen["host"] == "127.0.0.1"
    assert seen["dashboard_address"] == dashboard
