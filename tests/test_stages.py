"""The live worker's two-stage mode: prepare group n+1 while inferring group n (no timed tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from mlsim_live.errors import MLSimError
from mlsim_live.live.pipeline import Pipeline, invariant_violations
from mlsim_live.live.results import GroupResult
from mlsim_live.recon.base import Capabilities, SupportsStages

SHAPE = (8, 6)
WAIT_S = 30


class StagedFake:
    """A reconstructor with prepare/finish stages; each stage can be gated or made to fail.

    ``prepare`` keeps state between groups, as Wiener's reused pattern estimate does: it
    subtracts the first group's mean level from every group, so calling it out of order (or
    concurrently) would change the outputs. ``*_gate(call)`` returns an event the call waits
    for (None: no wait); ``fail_*(call)`` makes that call raise; ``nan_on(call)`` makes that
    group's output NaN.
    """

    name = "staged-fake"
    provider = "numpy"
    scale = 2

    def __init__(
        self,
        prepare_gate: Callable[[int], threading.Event | None] = lambda call: None,
        finish_gate: Callable[[int], threading.Event | None] = lambda call: None,
        fail_prepare: Callable[[int], bool] = lambda call: False,
        fail_finish: Callable[[int], bool] = lambda call: False,
        nan_on: Callable[[int], bool] = lambda call: False,
    ) -> None:
        self.prepare_gate, self.finish_gate = prepare_gate, finish_gate
        self.fail_prepare, self.fail_finish, self.nan_on = fail_prepare, fail_finish, nan_on
        self.prepare_calls = 0
        self.finish_calls = 0
        self.prepared = threading.Semaphore(0)  # released as each prepare call begins
        self.finishing = threading.Semaphore(0)  # released as each finish call begins
        self.reference: float | None = None
        self.busy = threading.Lock()  # prepare (like finish) never runs twice at once

    def prepare(self, group: np.ndarray) -> tuple[int, np.ndarray]:
        assert self.busy.acquire(blocking=False), "prepare called concurrently"
        try:
            call = self.prepare_calls
            self.prepare_calls += 1
            self.prepared.release()
            _wait(self.prepare_gate(call))
            if self.fail_prepare(call):
                raise RuntimeError(f"deliberate prepare failure on call {call}")
            mean = group.mean(axis=0, dtype=np.float32)
            if self.reference is None:
                self.reference = float(mean.mean())
            return call, mean - np.float32(self.reference)
        finally:
            self.busy.release()

    def finish(self, prepared: tuple[int, np.ndarray]) -> np.ndarray:
        call = self.finish_calls
        self.finish_calls += 1
        self.finishing.release()
        _wait(self.finish_gate(call))
        if self.fail_finish(call):
            raise ValueError(f"deliberate finish failure on call {call}")
        _, image = prepared
        out = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
        return np.full_like(out, np.nan) if self.nan_on(call) else out

    def reconstruct(self, group: np.ndarray) -> np.ndarray:
        return self.finish(self.prepare(group))


def _wait(event: threading.Event | None) -> None:
    if event is not None:
        assert event.wait(WAIT_S), "test gate never opened"


def _acquire(semaphore: threading.Semaphore, times: int = 1) -> None:
    for _ in range(times):
        assert semaphore.acquire(timeout=WAIT_S), "the stage never started"


class ListSink:
    def __init__(self) -> None:
        self.results: list[GroupResult] = []

    def on_result(self, result: GroupResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        pass


def push_group(pipeline: Pipeline, t: int, constant: bool = False) -> None:
    rng = np.random.default_rng(t)
    for a in range(3):
        for p in range(3):
            frame = rng.integers(100, 1000, SHAPE).astype(np.uint16)
            if constant:
                frame[:] = 500
            pipeline.push(frame, {"time": t, "angle": a, "phase": p})


def times_of(sink: ListSink) -> list[int]:
    return [r.key["time"] for r in sink.results]


def test_stages_are_a_declared_capability(fake_reconstructor):
    assert isinstance(StagedFake(), SupportsStages) and Capabilities.of(StagedFake()).stages
    assert not Capabilities.of(fake_reconstructor()).stages
    with Pipeline(StagedFake()) as two, Pipeline(fake_reconstructor()) as one:
        assert two.stages == 2 and one.stages == 1
    assert two.summary["stages"] == 2 and one.summary["stages"] == 1
    with pytest.raises(MLSimError, match="no prepare/finish stages"):
        Pipeline(fake_reconstructor(), stages=2)
    with pytest.raises(MLSimError, match="expected 1 or 2"):
        Pipeline(StagedFake(), stages=3)


def test_both_modes_give_the_same_outputs_in_order_under_policy_all():
    sinks = []
    for mode in (1, 2):
        sink = ListSink()
        with Pipeline(StagedFake(), sinks=[sink], policy="all", stages=mode) as pipeline:
            for t in range(6):
                push_group(pipeline, t)
        summary = pipeline.summary
        assert summary["groups_reconstructed"] == 6 and summary["stages"] == mode
        sinks.append(sink)
    reference, result = sinks
    assert times_of(result) == list(range(6)) == [r.index for r in result.results]
    for a, b in zip(reference.results, result.results, strict=True):
        np.testing.assert_array_equal(a.sr, b.sr)


def test_group_n_plus_1_is_prepared_while_group_n_is_inferred():
    infer = threading.Event()
    rec = StagedFake(finish_gate=lambda call: infer)
    sink = ListSink()
    pipeline = Pipeline(rec, sinks=[sink], policy="all")
    try:
        push_group(pipeline, 0)
        push_group(pipeline, 1)
        _acquire(rec.finishing)  # group 0 in inference, held there
        _acquire(rec.prepared, 2)  # ... while group 1 is prepared beside it
        stats = pipeline.stats
        assert stats.groups_reconstructed == 0 and stats.groups_in_flight == 2
        assert rec.finish_calls == 1
    finally:
        infer.set()
        pipeline.close(WAIT_S)
    assert times_of(sink) == [0, 1]


def test_faults_in_either_stage_are_counted_by_reason_and_never_lost():
    rec = StagedFake(
        fail_prepare=lambda call: call == 1,
        fail_finish=lambda call: call == 2,  # finish call 2 is group 3 (group 1 never got there)
        nan_on=lambda call: call == 3,
    )
    sink = ListSink()
    with Pipeline(rec, sinks=[sink], policy="all") as pipeline:
        for t in range(7):
            push_group(pipeline, t, constant=t == 5)
    summary = pipeline.summary
    assert summary["groups_acquired"] == 7
    assert summary["errors_by_reason"] == {
        "RuntimeError": 1,
        "ValueError": 1,
        "non-finite output": 1,
        "bad raw data": 1,
    }
    assert summary["groups_reconstructed"] == 3 and summary["errors"] == 4
    assert times_of(sink) == [0, 2, 6]
    assert not invariant_violations(summary)


def test_latest_drops_waiting_groups_but_not_the_prepared_one():
    infer = threading.Event()
    rec = StagedFake(finish_gate=lambda call: infer if call == 0 else None)
    sink = ListSink()
    pipeline = Pipeline(rec, sinks=[sink], policy="latest", max_waiting=1)
    try:
        push_group(pipeline, 0)
        _acquire(rec.finishing)  # group 0 held in inference
        push_group(pipeline, 1)
        _acquire(rec.prepared, 2)  # group 1 taken by stage 1: in flight
        for t in (2, 3, 4):  # the hook never waits, though both stages are busy
            push_group(pipeline, t)
        stats = pipeline.stats
        assert stats.groups_dropped == 2  # groups 2 and 3, superseded while waiting
        assert stats.groups_waiting == 1 and stats.groups_in_flight == 2
    finally:
        infer.set()
        pipeline.close(WAIT_S)
    assert times_of(sink) == [0, 1, 4]
    assert pipeline.summary["groups_dropped"] == 2


def test_close_while_both_stages_are_busy_abandons_them_cleanly():
    prepare_held, infer = threading.Event(), threading.Event()
    rec = StagedFake(
        prepare_gate=lambda call: prepare_held if call >= 1 else None,
        finish_gate=lambda call: infer,
    )
    sink = ListSink()
    pipeline = Pipeline(rec, sinks=[sink], policy="all")
    for t in range(3):
        push_group(pipeline, t)
    _acquire(rec.finishing)  # group 0 in inference
    _acquire(rec.prepared, 2)  # group 1 in preparation, group 2 waits
    summary = pipeline.close(timeout=0.2)
    assert summary["groups_dropped"] == 3 and summary["groups_reconstructed"] == 0
    assert summary["groups_in_flight"] == 0 and summary["groups_waiting"] == 0
    prepare_held.set()
    infer.set()
    assert pipeline.wait_finished(WAIT_S)
    after = pipeline.summary
    assert after["groups_dropped"] == 3 and after["groups_reconstructed"] == 0
    assert after["errors"] == 0 and sink.results == []


def test_close_drains_both_stages():
    prepare_held, infer = threading.Event(), threading.Event()
    rec = StagedFake(
        prepare_gate=lambda call: prepare_held if call >= 1 else None,
        finish_gate=lambda call: infer,
    )
    sink = ListSink()
    pipeline = Pipeline(rec, sinks=[sink], policy="all")
    for t in range(3):
        push_group(pipeline, t)
    _acquire(rec.finishing)
    _acquire(rec.prepared, 2)
    closing = threading.Thread(target=pipeline.close)
    closing.start()
    prepare_held.set()
    infer.set()
    closing.join(WAIT_S)
    assert not closing.is_alive()
    assert times_of(sink) == [0, 1, 2] and pipeline.summary["groups_reconstructed"] == 3


@pytest.mark.slow
def test_wiener_rcan_two_stages_match_one_stage():
    """The shipped prior-fed model: the same images, in order, from both modes (policy all)."""
    from mlsim_live import paths
    from mlsim_live.recon import make_stream_reconstructor
    from mlsim_live.sim import simulate_group

    if not paths.has_model("wiener-rcan"):
        pytest.skip("the shipped wiener-rcan model is not installed")
    groups = [simulate_group(sample="mixture", size=64, seed=s).raw for s in range(3)]
    images = []
    for stages in (1, 2):
        rec = make_stream_reconstructor("wiener-rcan")
        assert Capabilities.of(rec).stages
        sink = ListSink()
        with Pipeline(rec, sinks=[sink], policy="all", stages=stages) as pipeline:
            for t, group in enumerate(groups):
                for i, frame in enumerate(group):
                    pipeline.push(frame, {"time": t, "angle": i // 3, "phase": i % 3})
        assert times_of(sink) == [0, 1, 2]
        images.append([r.sr for r in sink.results])
    for a, b in zip(*images, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.abs(a).max()))


def test_bench_live_runs_both_modes_in_one_run(tmp_path, capsys):
    import json

    from mlsim_live import paths
    from mlsim_live.cli import main

    if not paths.has_model("rcan"):
        pytest.skip("the shipped rcan model is not installed")
    out = tmp_path / "live.json"
    args = ["bench", "--live", "--method", "rcan", "--size", "32", "--groups", "3"]
    args += ["--policy", "all", "--frame-ms", "1", "--stages", "1,2", "--json", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert [row["stages"] for row in report["rows"]] == [1, 2] and report["stages"] == 2
    for row in report["rows"]:
        assert row["groups_reconstructed"] == 3 and row["errors"] == 0
        assert set(row["over_first"]) == {"sr_groups_per_s", "latency_p50", "latency_p95"}
    assert report["rows"][0]["over_first"]["sr_groups_per_s"] == 1.0
    assert report["sr_groups_per_s"] == report["rows"][1]["sr_groups_per_s"]


def test_bench_live_refuses_two_stages_for_a_method_without_them(capsys):
    from mlsim_live.cli import main

    args = ["bench", "--live", "--method", "widefield", "--size", "32", "--groups", "2"]
    assert main([*args, "--stages", "2"]) == 2
    assert "no prepare/finish stages" in capsys.readouterr().err
    assert main([*args, "--stages", "3"]) == 2
    assert "expected 1, 2 or a list such as 1,2" in capsys.readouterr().err
