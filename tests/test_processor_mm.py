"""SIMProcessor on a real Micro-Manager core (pymmcore + DemoCamera, Python backend)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import tifffile

from mlsim_live.live.acquire import sim_group_events
from mlsim_live.live.demo import configure_camera
from mlsim_live.live.processor import SIMProcessor
from mlsim_live.live.results import GroupResult

pytestmark = pytest.mark.mm

SIZE = 32


class ListSink:
    def __init__(self) -> None:
        self.results: list[GroupResult] = []

    def on_result(self, result: GroupResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        pass


@pytest.fixture
def camera(mm_core):
    configure_camera(mm_core, SIZE, exposure_ms=2.0)
    mm_core.set_property("Camera", "Mode", "Noise")  # every frame differs
    return mm_core


def acquire(tmp_path, processor, events, name="raw"):
    from pycromanager import Acquisition

    with Acquisition(directory=str(tmp_path), name=name, image_process_fn=processor) as acq:
        acq.acquire(events)
    return acq.get_dataset()


def n_images(dataset) -> int:
    return len(dataset.get_image_coordinates_list())


def test_groups_from_shuffled_events_match_saved_raw(camera, tmp_path, fake_reconstructor):
    events = [e for t in range(3) for e in sim_group_events(t, pattern_group="SIM")]
    order = np.random.default_rng(0).permutation(len(events))
    sink = ListSink()
    proc = SIMProcessor(
        reconstructor=fake_reconstructor(),
        policy="all",
        out=tmp_path,
        name="shuffled",
        sinks=[sink],
    )
    dataset = acquire(tmp_path, proc, [events[i] for i in order])
    summary = proc.close()
    assert n_images(dataset) == 27
    assert summary["groups_acquired"] == 3 and summary["groups_reconstructed"] == 3
    assert summary["incomplete_groups"] == 0 and summary["errors"] == 0
    for result in sink.results:
        t = result.key["time"]
        saved = np.stack(
            [dataset.read_image(time=t, angle=a, phase=p) for a in range(3) for p in range(3)]
        )
        np.testing.assert_array_equal(result.raw, saved)  # raw frames saved unchanged
    assert tifffile.imread(tmp_path / "shuffled_sr.tif").shape == (3, 2 * SIZE, 2 * SIZE)
    saved_summary = json.loads((tmp_path / "shuffled_summary.json").read_text())
    assert saved_summary["groups_reconstructed"] == 3 and "hook_ms" in saved_summary


def test_slow_reconstructor_does_not_hold_the_acquisition(camera, tmp_path, fake_reconstructor):
    """The reconstructor is held closed for the whole acquisition: it still completes."""
    gate = threading.Event()
    recon = fake_reconstructor(gate=gate)
    sink = ListSink()
    proc = SIMProcessor(reconstructor=recon, policy="latest", sinks=[sink])
    groups = 6
    events = [e for t in range(groups) for e in sim_group_events(t, pattern_group="SIM")]
    dataset = acquire(tmp_path, proc, events)
    assert n_images(dataset) == 9 * groups  # the acquisition finished...
    assert recon.started.wait(10)
    assert proc.summary["groups_reconstructed"] == 0  # ...while the first group was still held
    assert proc.summary["groups_dropped"] == groups - 2
    gate.set()
    summary = proc.close(timeout=30)
    assert summary["groups_acquired"] == groups
    assert summary["groups_reconstructed"] == 2
    assert summary["groups_dropped"] == groups - 2
    assert sink.results[-1].key == {"time": groups - 1}  # the newest is always reconstructed


def test_failing_reconstructor_keeps_acquiring(camera, tmp_path, fake_reconstructor):
    proc = SIMProcessor(
        reconstructor=fake_reconstructor(fail=lambda call: True),
        policy="all",
        out=tmp_path,
        name="failing",
    )
    groups = 3
    events = [e for t in range(groups) for e in sim_group_events(t, pattern_group="SIM")]
    dataset = acquire(tmp_path, proc, events)
    summary = proc.close(timeout=30)
    assert n_images(dataset) == 9 * groups
    assert summary["errors"] == groups
    assert summary["groups_reconstructed"] == 0
    assert not (tmp_path / "failing_sr.tif").exists()
    assert json.loads((tmp_path / "failing_summary.json").read_text())["errors"] == groups


def test_hook_returns_frame_unchanged_for_any_metadata(fake_reconstructor):
    """Java-backend style call: the same objects come back, even for metadata without axes."""
    import mlsim_live

    assert mlsim_live.SIMProcessor is SIMProcessor  # the public, lazily imported name
    proc = SIMProcessor(reconstructor=fake_reconstructor(), policy="all")
    image = np.ones((SIZE, SIZE), np.uint16)
    metadata = {"Axes": {"time": 0, "angle": 0, "phase": 0}, "PixelSize_um": 0.1}
    out_image, out_metadata = proc(image, metadata)
    assert out_image is image and out_metadata is metadata
    bare = {"Camera": "Camera"}
    assert proc(image, bare) == (image, bare)
    summary = proc.close()
    assert summary["hook_failures"] == 1
    assert summary["hook_calls"] == 2
    assert summary["frames_received"] == 1
    assert summary["incomplete_groups"] == 1
