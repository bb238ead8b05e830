"""Pipeline, reconstruction worker and writer: policies, failures, sinks and outputs."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest
import tifffile

from mlsim_live.errors import MLSimError
from mlsim_live.live.pipeline import Pipeline
from mlsim_live.live.results import GroupResult
from mlsim_live.live.sinks import Sink
from mlsim_live.live.writer import SRTiffWriter, output_paths, write_summary

SHAPE = (16, 12)


class ListSink:
    def __init__(self) -> None:
        self.results: list[GroupResult] = []
        self.closed = 0

    def on_result(self, result: GroupResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        self.closed += 1


class BrokenSink(ListSink):
    def on_result(self, result: GroupResult) -> None:
        raise RuntimeError("broken sink")


def group_frames(t: int) -> list[tuple[np.ndarray, dict[str, int]]]:
    rng = np.random.default_rng(t)
    return [
        (rng.integers(100, 1000, SHAPE).astype(np.uint16), {"time": t, "angle": a, "phase": p})
        for a in range(3)
        for p in range(3)
    ]


def push_groups(pipeline: Pipeline, times: range, shuffle_seed: int | None = None) -> None:
    items = [x for t in times for x in group_frames(t)]
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(items))
        items = [items[i] for i in order]
    for f, axes in items:
        pipeline.push(f, axes, {"PixelSize_um": 0.1})


def test_sink_protocol():
    assert isinstance(ListSink(), Sink)
    assert isinstance(SRTiffWriter.__new__(SRTiffWriter), Sink)
    with pytest.raises(MLSimError, match="not a sink"):
        Pipeline(object(), sinks=[object()])  # type: ignore[list-item]


def test_policy_all_reconstructs_every_group_in_any_order(fake_reconstructor):
    sink = ListSink()
    pipeline = Pipeline(fake_reconstructor(), sinks=[sink], policy="all")
    push_groups(pipeline, range(5), shuffle_seed=3)
    summary = pipeline.close(timeout=30)
    assert summary["groups_acquired"] == 5
    assert summary["groups_reconstructed"] == 5
    assert summary["groups_dropped"] == 0 and summary["errors"] == 0
    assert summary["incomplete_groups"] == 0 and summary["frames_received"] == 45
    assert summary["latency_ms"]["p50"] is not None
    assert summary["model"] == "fake" and summary["provider"] == "numpy"
    assert sink.closed == 1
    by_time = {r.key["time"]: r for r in sink.results}
    assert sorted(by_time) == [0, 1, 2, 3, 4]
    for t, result in by_time.items():
        raw = np.stack([f for f, _ in group_frames(t)])
        np.testing.assert_array_equal(result.raw, raw)
        np.testing.assert_allclose(result.widefield, raw.mean(axis=0), rtol=1e-6)
        assert result.sr.shape == (2 * SHAPE[0], 2 * SHAPE[1]) and result.sr.dtype == np.float32
        assert result.pixel_size_um == 0.1 and not result.simulated
    assert [r.index for r in sink.results] == [0, 1, 2, 3, 4]


def test_policy_latest_drops_oldest_and_keeps_newest(fake_reconstructor):
    """The worker is held on group 0 while 6 more groups arrive: exactly 5 are dropped."""
    gate = threading.Event()
    recon = fake_reconstructor(gate=gate)
    sink = ListSink()
    pipeline = Pipeline(recon, sinks=[sink], policy="latest")
    push_groups(pipeline, range(1))
    assert recon.started.wait(10)
    push_groups(pipeline, range(1, 7))  # returns although the worker is blocked
    assert pipeline.summary["groups_dropped"] == 5
    gate.set()
    summary = pipeline.close(timeout=30)
    assert summary["groups_acquired"] == 7
    assert summary["groups_reconstructed"] == 2
    assert summary["groups_dropped"] == 5
    assert [r.key["time"] for r in sink.results] == [0, 6]


def test_policy_all_backpressure_at_memory_bound(fake_reconstructor, caplog):
    gate = threading.Event()
    recon = fake_reconstructor(gate=gate)
    group_bytes = 9 * SHAPE[0] * SHAPE[1] * 2
    pipeline = Pipeline(recon, policy="all", max_waiting_bytes=group_bytes)
    pusher = threading.Thread(target=push_groups, args=(pipeline, range(4)))
    pusher.start()
    assert recon.started.wait(10)
    pusher.join(0.5)
    assert pusher.is_alive()  # held back: one group in the worker, one waiting, no room
    gate.set()
    pusher.join(10)
    assert not pusher.is_alive()
    summary = pipeline.close(timeout=30)
    assert summary["groups_reconstructed"] == 4 and summary["groups_dropped"] == 0
    assert summary["backpressure_waits"] >= 1
    assert "reconstruction is behind" in caplog.text


def test_failing_reconstruction_is_counted_not_raised(fake_reconstructor, caplog):
    sink = ListSink()
    recon = fake_reconstructor(fail=lambda call: call % 2 == 1)
    pipeline = Pipeline(recon, sinks=[sink], policy="all")
    push_groups(pipeline, range(4))
    summary = pipeline.close(timeout=30)
    assert summary["errors"] == 2
    assert summary["groups_reconstructed"] == 2
    assert [r.key["time"] for r in sink.results] == [0, 2]
    assert "deliberate failure" in caplog.text


def test_broken_sink_does_not_stop_other_sinks(fake_reconstructor):
    good = ListSink()
    pipeline = Pipeline(fake_reconstructor(), sinks=[BrokenSink(), good], policy="all")
    push_groups(pipeline, range(3))
    summary = pipeline.close(timeout=30)
    assert len(good.results) == 3
    # a failing sink is fed no more results: one error, its lost groups counted
    assert summary["sink_errors"] == 1
    assert summary["sink_failures"][0]["groups_lost"] == 3
    assert summary["errors"] == 0


def test_bad_frames_are_rejected_without_raising(fake_reconstructor):
    pipeline = Pipeline(fake_reconstructor(), policy="all")
    pipeline.push(np.zeros(SHAPE, np.uint16), {"time": 0})  # no angle/phase
    pipeline.push(np.zeros(SHAPE, np.uint16), {"angle": 5, "phase": 0})
    push_groups(pipeline, range(1))
    pipeline.push(np.zeros(SHAPE, np.uint16), {"time": 0, "angle": 0, "phase": 0})  # late dup
    summary = pipeline.close(timeout=30)
    assert summary["frames_rejected"] == 2
    assert summary["duplicates"] == 1
    assert summary["groups_reconstructed"] == 1
    pipeline.push(np.zeros(SHAPE, np.uint16), {"angle": 0, "phase": 0})  # after close
    assert pipeline.summary["frames_rejected"] == 3


def test_incomplete_groups_in_summary(fake_reconstructor):
    pipeline = Pipeline(fake_reconstructor(), policy="all")
    items = [x for t in range(2) for x in group_frames(t)][:-2]
    for f, axes in items:
        pipeline.push(f, axes)
    summary = pipeline.close(timeout=30)
    assert summary["groups_reconstructed"] == 1
    assert summary["incomplete_groups"] == 1
    assert summary["incomplete"] == [{"key": {"time": 1}, "missing": [[2, 1], [2, 2]]}]


def test_pixel_size_from_metadata_or_given(fake_reconstructor):
    pipeline = Pipeline(fake_reconstructor(), policy="all")
    push_groups(pipeline, range(1))
    assert pipeline.close(timeout=30)["pixel_size_um"] == 0.1
    given = Pipeline(fake_reconstructor(), policy="all", pixel_size_um=0.065, simulated=True)
    push_groups(given, range(1))
    summary = given.close(timeout=30)
    assert summary["pixel_size_um"] == 0.065 and summary["simulated"] is True


def test_unknown_policy():
    with pytest.raises(MLSimError, match="policy"):
        Pipeline(object(), policy="fastest")  # type: ignore[arg-type]


def test_writer_appends_groups_with_metadata(fake_reconstructor, tmp_path):
    sr_path, summary_path = output_paths(tmp_path, "run")
    copies = []

    class CopyAfterWrite(SRTiffWriter):
        def on_result(self, result: GroupResult) -> None:
            super().on_result(result)
            copy = tmp_path / f"copy{len(copies)}.tif"
            shutil.copy(self.path, copy)  # what a crash would leave behind
            copies.append(copy)

    sink = ListSink()
    pipeline = Pipeline(fake_reconstructor(), sinks=[CopyAfterWrite(sr_path), sink], policy="all")
    push_groups(pipeline, range(3))
    summary = pipeline.close(timeout=30)
    write_summary(summary_path, summary)
    stack = tifffile.imread(sr_path)
    assert stack.shape == (3, 2 * SHAPE[0], 2 * SHAPE[1]) and stack.dtype == np.float32
    for page, result in zip(stack, sink.results):
        np.testing.assert_array_equal(page, result.sr)
    with tifffile.TiffFile(sr_path) as tif:
        assert tif.is_bigtiff
        meta = [json.loads(p.description) for p in tif.pages]
        x_res = tif.pages[0].tags["XResolution"].value
    assert [m["axes"] for m in meta] == [{"time": 0}, {"time": 1}, {"time": 2}]
    assert meta[0]["pixel_size_um"] == pytest.approx(0.05)  # 0.1 um raw pixels, 2x grid
    assert meta[0]["latency_ms"] > 0 and meta[0]["completed_at"] >= meta[0]["first_frame_at"]
    assert x_res[0] / x_res[1] == pytest.approx(1e4 / 0.05)  # pixels per cm
    # after each group the file on disk is a valid TIFF holding every group written so far
    for n, copy in enumerate(copies, start=1):
        assert tifffile.imread(copy).reshape(-1, *stack.shape[1:]).shape[0] == n
    saved = json.loads(summary_path.read_text())
    for key in ("groups_acquired", "groups_reconstructed", "groups_dropped", "errors"):
        assert saved[key] == summary[key]
    assert set(saved["latency_ms"]) == {"p50", "p95"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_writer_refuses_to_overwrite(tmp_path):
    sr_path, summary_path = output_paths(tmp_path, "run")
    sr_path.write_bytes(b"old")
    with pytest.raises(MLSimError, match="exists"):
        SRTiffWriter(sr_path)
    SRTiffWriter(sr_path, overwrite=True)
    summary_path.write_text("{}")
    with pytest.raises(MLSimError, match="exists"):
        write_summary(summary_path, {"a": 1})


def test_writer_without_results_leaves_no_file(fake_reconstructor, tmp_path):
    sr_path, _ = output_paths(tmp_path, "empty")
    pipeline = Pipeline(fake_reconstructor(), sinks=[SRTiffWriter(sr_path)])
    pipeline.close(timeout=5)
    assert not sr_path.exists()


class CheckedReconstructor:
    """Fake whose out-of-distribution check records the groups it sees and can be held."""

    name = "checked"
    provider = "numpy"
    scale = 2

    def __init__(self, reasons: list[str], gate: threading.Event | None = None) -> None:
        self.reasons = reasons
        self.gate = gate
        self.checking = threading.Event()
        self.checked_threads: set[str] = set()
        self.checked_means: list[float] = []

    def reconstruct(self, group: np.ndarray) -> np.ndarray:
        mean = group.mean(axis=0, dtype=np.float32)
        return np.repeat(np.repeat(mean, 2, axis=0), 2, axis=1)

    training_ranges: dict = {}  # noqa: RUF012  (a card with ranges: the check can run)

    def check_ood(self, group: np.ndarray, *, warn: bool = True, fresh: bool = False) -> list[str]:
        self.checking.set()
        self.checked_threads.add(threading.current_thread().name)
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        self.checked_means.append(float(group.mean()))
        return list(self.reasons)


def group_mean(t: int) -> float:
    return float(np.mean([f for f, _ in group_frames(t)]))


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_slow_ood_check_runs_beside_reconstruction_on_the_newest_group():
    """A held OOD check delays no reconstruction; it then checks only the newest group."""
    gate = threading.Event()
    recon = CheckedReconstructor(["modulation below the trained range"], gate=gate)
    sink = ListSink()
    pipeline = Pipeline(recon, sinks=[sink], policy="latest")
    push_groups(pipeline, range(1))
    assert recon.checking.wait(10)  # the check of group 0 is held...
    for t in range(1, 4):
        push_groups(pipeline, range(t, t + 1))
        assert wait_until(lambda t=t: len(sink.results) == t + 1)  # ...reconstruction goes on
    summary = pipeline.summary
    assert summary["groups_reconstructed"] == 4 and summary["groups_dropped"] == 0
    assert summary["ood_checks"] == 0 and not any(r.ood for r in sink.results)
    gate.set()
    summary = pipeline.close(timeout=30)
    assert recon.checked_means == [group_mean(0), group_mean(3)]  # groups 1 and 2 skipped
    assert summary["ood_checks"] == 2 and summary["ood_groups"] == 2
    assert summary["groups_reconstructed"] == 4
    assert recon.checked_threads == {"mlsim-ood-check"}


def test_results_carry_the_latest_ood_verdict():
    recon = CheckedReconstructor(["modulation below the trained range"])
    sink = ListSink()
    pipeline = Pipeline(recon, sinks=[sink], policy="all")
    push_groups(pipeline, range(1))
    assert wait_until(lambda: pipeline.summary["ood_checks"] == 1)
    push_groups(pipeline, range(1, 2))
    summary = pipeline.close(timeout=30)
    assert summary["ood_groups"] == summary["ood_checks"] == 2
    last = sink.results[-1]
    assert last.key == {"time": 1} and last.ood
    assert last.extra["ood_reasons"] == ["modulation below the trained range"]
    assert last.extra["ood_checked_key"] == {"time": 0}
    inside = Pipeline(CheckedReconstructor([]), policy="all")
    push_groups(inside, range(2))
    summary = inside.close(timeout=30)
    assert summary["ood_groups"] == 0 and summary["ood_checks"] >= 1


class HeldAfterFirst:
    """Fake reconstructor: the first call returns at once, later calls wait for ``gate``."""

    name = "held"
    provider = "numpy"
    scale = 2

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.calls = 0

    def reconstruct(self, group: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls > 1:
            self.started.set()
            assert self.gate.wait(30), "test gate never opened"
            self.finished.set()
        return np.full((2 * SHAPE[0], 2 * SHAPE[1]), self.calls, np.float32)


def test_late_result_after_close_timeout_keeps_the_sr_file(tmp_path):
    """close() times out with a group in flight: the group counts as dropped, and its late
    result neither rewrites the SR file nor changes the counts."""
    sr_path, _ = output_paths(tmp_path, "late")
    recon = HeldAfterFirst()
    writer = SRTiffWriter(sr_path)
    pipeline = Pipeline(recon, sinks=[writer], policy="all")
    push_groups(pipeline, range(1))
    assert wait_until(lambda: writer.groups_written == 1)
    push_groups(pipeline, range(1, 2))
    assert recon.started.wait(10)
    summary = pipeline.close(timeout=0.2)
    assert summary["groups_acquired"] == 2
    assert summary["groups_reconstructed"] == 1 and summary["groups_dropped"] == 1
    recon.gate.set()
    assert recon.finished.wait(10)
    assert pipeline.wait_finished(10)
    np.testing.assert_array_equal(tifffile.imread(sr_path), np.ones((32, 24), np.float32))
    after = pipeline.summary
    assert after["groups_reconstructed"] == 1 and after["groups_dropped"] == 1
    assert after["groups_acquired"] == after["groups_reconstructed"] + after["groups_dropped"]


def test_writer_ignores_results_after_close(fake_reconstructor, tmp_path):
    sr_path, _ = output_paths(tmp_path, "closed")
    sink = ListSink()
    pipeline = Pipeline(fake_reconstructor(), sinks=[sink], policy="all")
    push_groups(pipeline, range(2))
    pipeline.close(timeout=30)
    writer = SRTiffWriter(sr_path)
    writer.on_result(sink.results[0])
    writer.close()
    writer.on_result(sink.results[1])  # late: must not reopen (truncate) the file
    writer.close()
    np.testing.assert_array_equal(tifffile.imread(sr_path), sink.results[0].sr)
    assert writer.groups_written == 1 and writer.groups_ignored == 1


def test_submit_waiting_for_room_when_closed_counts_as_dropped(fake_reconstructor):
    """Under ``all`` a push waits at the memory bound; closing then ends it, counted."""
    gate = threading.Event()
    recon = fake_reconstructor(gate=gate)
    group_bytes = 9 * SHAPE[0] * SHAPE[1] * 2
    pipeline = Pipeline(recon, policy="all", max_waiting_bytes=group_bytes)
    pusher = threading.Thread(target=push_groups, args=(pipeline, range(3)))
    pusher.start()
    assert recon.started.wait(10)
    # group 0 in flight, group 1 waiting, group 2 submitted and waiting for room
    assert wait_until(
        lambda: pipeline.summary["groups_acquired"] == 3 and pipeline.summary["groups_waiting"] == 1
    )
    pipeline.close(timeout=0.3)
    pusher.join(10)
    assert not pusher.is_alive()
    gate.set()
    assert pipeline.wait_finished(10)
    summary = pipeline.summary
    assert summary["groups_acquired"] == 3
    assert summary["groups_reconstructed"] == 0 and summary["groups_dropped"] == 3
    assert summary["groups_waiting"] == 0


def test_polling_the_summary_does_not_recompute_percentiles(fake_reconstructor):
    """A status bar that polls the summary costs no percentile computation between groups."""
    pipeline = Pipeline(fake_reconstructor(), policy="all")
    push_groups(pipeline, range(2))
    assert wait_until(lambda: pipeline.summary["groups_reconstructed"] == 2)
    first = pipeline.summary["latency_ms"]
    computed = pipeline.latency.computations
    for _ in range(100):
        assert pipeline.summary["latency_ms"] == first
    assert pipeline.latency.computations == computed
    assert first["p50"] is not None
    pipeline.close(timeout=30)
