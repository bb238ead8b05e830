"""The live viewer: sink coalescing across threads, panels, levels, spectra, status, snapshots."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tifffile
from group_results import group_result

from mlsim_live.errors import MLSimError
from mlsim_live.live.results import GroupResult
from mlsim_live.viewer import display_available, display_status, viewer_enabled
from mlsim_live.viewer.imaging import (
    auto_levels,
    format_length_um,
    log_power_spectrum,
    scale_bar_um,
)
from mlsim_live.viewer.status import model_label, status_text

SIZE = 64
# Pattern wave vectors per angle, in FFT bins of a SIZE x SIZE frame: (ky, kx).
PATTERN_BINS = ((0, 8), (8, 0), (6, 6))


def make_result(
    index: int,
    *,
    brightness: float = 1.0,
    simulated: bool = False,
    ood: bool = False,
    pixel_size_um: float | None = 0.1,
    seed: int = 0,
) -> GroupResult:
    """A SIM-like group: a random sample under 3 x 3 shifted cosine patterns, and a 2x 'SR'."""
    rng = np.random.default_rng(seed + index)
    sample = 0.5 + rng.random((SIZE, SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    raw = np.empty((9, SIZE, SIZE), dtype=np.uint16)
    for a, (ky, kx) in enumerate(PATTERN_BINS):
        for p in range(3):
            pattern = 1 + 0.8 * np.cos(2 * np.pi * (ky * yy + kx * xx) + 2 * np.pi * p / 3)
            raw[3 * a + p] = np.round(100 + 500 * brightness * sample * pattern)
    sr = np.kron(sample, np.ones((2, 2))).astype(np.float32) * 500 * brightness
    return group_result(
        raw,
        sr,
        index,
        latency_ms=40.0 + index,
        reconstructor="rcan:mlsim_default.onnx",
        provider="CPUExecutionProvider",
        pixel_size_um=pixel_size_um,
        simulated=simulated,
        ood=ood,
    )


def feed_from_thread(sink, results: list[GroupResult]) -> threading.Thread:
    """Deliver ``results`` to ``sink.on_result`` from a worker thread, as the pipeline does."""

    def work() -> None:
        for result in results:
            sink.on_result(result)

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def off_centre_peak(spectrum: np.ndarray, exclude_radius: int = 3) -> tuple[int, int]:
    """(dy, dx) of the brightest spectrum pixel outside a disc around zero frequency."""
    h, w = spectrum.shape
    yy, xx = np.mgrid[:h, :w]
    masked = np.where(
        (yy - h // 2) ** 2 + (xx - w // 2) ** 2 > exclude_radius**2, spectrum, -np.inf
    )
    y, x = np.unravel_index(np.argmax(masked), masked.shape)
    return int(y - h // 2), int(x - w // 2)


# -- pure functions (no Qt) ----------------------------------------------------------------------


def test_log_power_spectrum_puts_pattern_peaks_at_their_frequencies() -> None:
    raw = make_result(0).raw
    for a, (ky, kx) in enumerate(PATTERN_BINS):
        spectrum = log_power_spectrum(raw[3 * a])
        assert spectrum.shape == (SIZE, SIZE)
        assert spectrum.dtype == np.float32
        dy, dx = off_centre_peak(spectrum)
        assert (dy, dx) in ((ky, kx), (-ky, -kx))


def test_log_power_spectrum_rejects_stacks() -> None:
    with pytest.raises(ValueError, match="2D"):
        log_power_spectrum(np.zeros((2, 8, 8)))


def test_auto_levels_follow_percentiles_and_never_collapse() -> None:
    data = np.arange(10_000, dtype=np.float32)
    low, high = auto_levels(data, (1.0, 99.0))
    assert low == pytest.approx(np.percentile(data, 1.0))
    assert high == pytest.approx(np.percentile(data, 99.0))
    flat_low, flat_high = auto_levels(np.full((8, 8), 5.0))
    assert flat_low < 5.0 < flat_high
    assert auto_levels(np.full((4, 4), np.nan)) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("field_um", "expected_um"), [(6.4, 1.0), (22.0, 2.0), (100.0, 20.0), (2.6, 0.5)]
)
def test_scale_bar_length_is_round_and_at_most_a_fifth(field_um: float, expected_um: float) -> None:
    assert scale_bar_um(field_um) == pytest.approx(expected_um)


def test_format_length_um() -> None:
    assert format_length_um(0.5) == "500 nm"
    assert format_length_um(2.0) == "2 µm"
    assert format_length_um(1500.0) == "1.5 mm"


def test_status_text_shows_every_statistic_and_marks_missing_ones() -> None:
    stats = {
        "groups_acquired": 12,
        "groups_reconstructed": 10,
        "groups_dropped": 2,
        "errors": 1,
        "latency_ms": {"p50": 87.4, "p95": 120.0},
        "provider": "CUDAExecutionProvider",
        "model": "/models/mlsim_default.onnx",
    }
    text = status_text(stats, sr_fps=9.26)
    for part in (
        "SR 9.3 frames/s",
        "latency p50 87 ms",
        "dropped 2",
        "errors 1",
        "groups 10/12",
        "CUDAExecutionProvider",
        "model mlsim_default.onnx",
    ):
        assert part in text
    empty = status_text(None, sr_fps=None)
    assert "SR – frames/s" in empty
    assert "dropped –" in empty
    assert "latency p50 –" in empty
    with_fallbacks = status_text({}, sr_fps=None, provider="CPUExecutionProvider", latency_ms=12.0)
    assert "latency p50 12 ms" in with_fallbacks
    assert "CPUExecutionProvider" in with_fallbacks
    assert "SR 3.5 frames/s" in status_text({"sr_groups_per_s": 3.5}, sr_fps=None)


def test_model_label() -> None:
    assert model_label("rcan:/opt/models/a.onnx") == "rcan:a.onnx"
    assert model_label("wiener") == "wiener"
    assert model_label({"name": "mlsim_default"}) == "mlsim_default"
    assert model_label(None) == "–"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"QT_QPA_PLATFORM": "offscreen"}, True),
        ({"QT_QPA_PLATFORM": "minimal"}, True),
        ({"DISPLAY": ":0"}, True),
        ({"WAYLAND_DISPLAY": "wayland-0"}, True),
        ({"QT_QPA_PLATFORM": "xcb"}, False),
        ({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":1"}, True),
        ({}, False),
    ],
)
def test_display_available_on_linux(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: bool
) -> None:
    monkeypatch.setattr("sys.platform", "linux")
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert display_available() is expected
    assert display_status()[0] is expected


def test_viewer_enabled_falls_back_to_headless_with_a_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("sys.platform", "linux")
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level("INFO", logger="mlsim_live.viewer"):
        assert viewer_enabled(headless=False) is False
    assert "running headless" in caplog.text
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert viewer_enabled(headless=False) is True
    assert viewer_enabled(headless=True) is False


def test_deciding_on_the_viewer_imports_no_qt() -> None:
    code = (
        "import sys, mlsim_live.viewer as v; v.viewer_enabled(False); "
        "sys.exit(any(m.startswith(('PyQt5', 'pyqtgraph')) for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# -- the window (pytest-qt, offscreen) -----------------------------------------------------------


@pytest.fixture
def viewer(qtbot):
    from mlsim_live.viewer import SIMViewer, ViewerSink

    sink = ViewerSink()
    window = SIMViewer(sink, status_interval_ms=50)
    qtbot.addWidget(window)
    window.resize(900, 500)
    window.show()
    qtbot.waitExposed(window)
    return window, sink


def wait_for_index(qtbot, window, index: int) -> None:
    qtbot.waitUntil(
        lambda: window.current_result is not None and window.current_result.index == index,
        timeout=5000,
    )


@pytest.mark.qt
def test_window_shows_the_last_of_n_results_from_a_worker_thread(qtbot, viewer) -> None:
    window, sink = viewer
    results = [make_result(i) for i in range(20)]
    thread = feed_from_thread(sink, results)
    wait_for_index(qtbot, window, 19)
    thread.join(timeout=5)
    last = results[-1]
    assert sink.n_received == 20
    assert 1 <= window.n_displayed <= 20
    np.testing.assert_array_equal(window.displayed_image("left"), last.widefield)
    np.testing.assert_array_equal(window.displayed_image("sr"), last.sr)
    assert "#19" in window.info_label.text()


@pytest.mark.qt
def test_sink_coalesces_to_the_newest_while_the_gui_is_busy(qtbot, viewer) -> None:
    window, sink = viewer
    results = [make_result(i) for i in range(50)]
    # The GUI thread is blocked in join(): no event is processed while the worker delivers.
    feed_from_thread(sink, results).join(timeout=5)
    assert sink.n_received == 50
    wait_for_index(qtbot, window, 49)
    qtbot.wait(50)
    assert window.n_displayed == 1
    assert sink.n_coalesced == 49
    np.testing.assert_array_equal(window.displayed_image("sr"), results[-1].sr)


@pytest.mark.qt
def test_sr_covers_the_same_field_of_view_and_views_are_linked(qtbot, viewer) -> None:
    window, _ = viewer
    window.show_result(make_result(0))
    left = window.left_panel.image_rect()
    sr = window.sr_panel.image_rect()
    assert window.displayed_image("sr").shape == (2 * SIZE, 2 * SIZE)
    for rect in (left, sr):
        assert (rect.x(), rect.y(), rect.width(), rect.height()) == pytest.approx(
            (0, 0, SIZE, SIZE)
        )
    window.left_panel.view.setRange(xRange=(10, 30), yRange=(5, 25), padding=0)
    qtbot.wait(20)
    left_range = np.array(window.left_panel.view.viewRange())
    sr_range = np.array(window.sr_panel.view.viewRange())
    np.testing.assert_allclose(sr_range, left_range, atol=1e-6)


@pytest.mark.qt
def test_levels_are_automatic_until_the_user_moves_them_then_persist(qtbot, viewer) -> None:
    window, _ = viewer
    window.show_result(make_result(0, brightness=1.0))
    first = window.levels("left")
    window.show_result(make_result(1, brightness=3.0))
    second = window.levels("left")
    assert second[1] > first[1] * 2  # auto levels followed the brighter frame
    assert second == pytest.approx(auto_levels(window.displayed_image("left")))

    # A user drag moves the histogram region; the same signal path as here.
    window.left_panel.hist.setLevels(150.0, 400.0)
    sr_before = window.levels("sr")
    window.show_result(make_result(2, brightness=5.0))
    assert window.levels("left") == pytest.approx((150.0, 400.0))
    assert window.levels("sr")[1] > sr_before[1]  # the other panel still follows the frames

    # Spectra have their own levels; the image levels come back with the images.
    window.set_spectrum(True)
    assert window.levels("left") != pytest.approx((150.0, 400.0))
    window.set_spectrum(False)
    assert window.levels("left") == pytest.approx((150.0, 400.0))

    window.set_levels("sr", 10.0, 20.0)  # the programmatic way persists too
    window.show_result(make_result(4, brightness=2.0))
    assert window.levels("sr") == pytest.approx((10.0, 20.0))
    with pytest.raises(MLSimError, match="low < high"):
        window.set_levels("sr", 5.0, 5.0)

    window.reset_levels()
    assert window.levels("left") == pytest.approx(auto_levels(window.displayed_image("left")))
    assert window.levels("sr") == pytest.approx(auto_levels(window.displayed_image("sr")))
    window.show_result(make_result(3, brightness=1.0))
    assert window.levels("left") == pytest.approx(auto_levels(window.displayed_image("left")))


@pytest.mark.qt
def test_raw_frame_toggle_shows_each_frame_of_the_current_group(qtbot, viewer) -> None:
    window, _ = viewer
    result = make_result(0)
    window.show_result(result)
    for k in (0, 4, 8):
        window.set_raw_frame(k)
        np.testing.assert_array_equal(window.displayed_image("left"), result.raw[k])
        assert window.source_box.currentIndex() == k + 1
        assert f"Raw frame {k}" in window.left_panel.title.text()
    window.source_box.setCurrentIndex(3)  # the combo box drives the same switch
    assert window.raw_frame == 2
    newer = make_result(1)
    window.show_result(newer)  # the choice stays for the next group
    np.testing.assert_array_equal(window.displayed_image("left"), newer.raw[2])
    window.set_raw_frame(None)
    np.testing.assert_array_equal(window.displayed_image("left"), newer.widefield)
    with pytest.raises(MLSimError, match="expected 0 to 8"):
        window.set_raw_frame(9)


@pytest.mark.qt
def test_spectrum_toggle_shows_log_power_spectra_on_a_common_frequency_scale(qtbot, viewer) -> None:
    window, _ = viewer
    result = make_result(0, pixel_size_um=0.1)
    window.show_result(result)
    assert window.left_panel.scale_bar.isVisible()
    window.set_raw_frame(3)  # angle 1: pattern along y
    window.spectrum_box.setChecked(True)  # the tool-bar check box drives the toggle
    assert window.spectrum
    left = window.displayed_image("left")
    sr = window.displayed_image("sr")
    np.testing.assert_allclose(left, log_power_spectrum(result.raw[3]), rtol=1e-6)
    np.testing.assert_allclose(sr, log_power_spectrum(result.sr), rtol=1e-6)
    assert off_centre_peak(left) in ((8, 0), (-8, 0))
    assert "log power spectrum" in window.left_panel.title.text()
    assert not window.left_panel.scale_bar.isVisible()
    # Same frequency step on both grids: the SR spectrum spans twice the widefield one.
    left_rect = window.left_panel.image_rect()
    sr_rect = window.sr_panel.image_rect()
    assert sr_rect.width() == pytest.approx(2 * left_rect.width())
    assert sr_rect.center().x() == pytest.approx(left_rect.center().x(), abs=1)
    window.set_spectrum(False)
    np.testing.assert_array_equal(window.displayed_image("left"), result.raw[3])
    np.testing.assert_array_equal(window.displayed_image("sr"), result.sr)


@pytest.mark.qt
def test_keyboard_shortcuts(qtbot, viewer) -> None:
    from pyqtgraph.Qt import QtCore

    window, _ = viewer
    window.activateWindow()
    qtbot.waitActive(window)
    result = make_result(0)
    window.show_result(result)
    qtbot.keyClick(window, QtCore.Qt.Key.Key_5)
    assert window.raw_frame == 4
    qtbot.keyClick(window, QtCore.Qt.Key.Key_F)
    assert window.spectrum
    qtbot.keyClick(window, QtCore.Qt.Key.Key_F)
    assert not window.spectrum
    qtbot.keyClick(window, QtCore.Qt.Key.Key_W)
    assert window.raw_frame is None


@pytest.mark.qt
def test_a_failing_slot_is_logged_not_raised(qtbot, viewer, caplog) -> None:
    window, _ = viewer

    def broken() -> None:
        raise RuntimeError("boom")

    with caplog.at_level("ERROR", logger="mlsim_live.viewer"):
        window._guarded(broken)
    assert "broken failed" in caplog.text


@pytest.mark.qt
def test_scale_bar_follows_the_pixel_size(qtbot, viewer) -> None:
    window, _ = viewer
    window.show_result(make_result(0, pixel_size_um=0.1))  # 6.4 um field -> 1 um bar
    bar = window.sr_panel.scale_bar
    assert bar.isVisible()
    assert bar.text.textItem.toPlainText() == "1 µm"
    assert bar.size == pytest.approx(10.0)  # raw pixels
    window.show_result(make_result(1, pixel_size_um=None))
    assert not bar.isVisible()


@pytest.mark.qt
def test_status_bar_shows_the_pipeline_statistics(qtbot, viewer) -> None:
    window, sink = viewer
    stats = {
        "groups_acquired": 3,
        "groups_reconstructed": 3,
        "groups_dropped": 7,
        "errors": 2,
        "latency_ms": {"p50": 42.0, "p95": 50.0},
        "provider": "CPUExecutionProvider",
        "model": "models/mlsim_default.onnx",
    }
    window.stats_fn = lambda: stats
    feed_from_thread(sink, [make_result(i) for i in range(3)]).join(timeout=5)
    wait_for_index(qtbot, window, 2)
    qtbot.waitUntil(lambda: "dropped 7" in window.status_text(), timeout=2000)
    text = window.status_text()
    assert re.search(r"SR \d+(\.\d)? frames/s", text), text
    for part in ("latency p50 42 ms", "errors 2", "CPUExecutionProvider", "mlsim_default.onnx"):
        assert part in text

    def broken() -> dict:
        raise RuntimeError("pipeline gone")

    window.stats_fn = broken
    window.update_status()  # logged once, never raised into Qt
    assert "CPUExecutionProvider" in window.status_text()  # falls back to the result's values


@pytest.mark.qt
def test_save_snapshot_png_and_tiff(qtbot, viewer, tmp_path) -> None:
    from pyqtgraph.Qt import QtGui

    window, _ = viewer
    with pytest.raises(MLSimError, match="no images"):
        window.save_snapshot(tmp_path / "early.tif")
    result = make_result(5, pixel_size_um=0.1, simulated=True)
    window.show_result(result)

    png = window.save_snapshot(tmp_path / "shot.png")
    picture = QtGui.QImage(str(png))
    assert not picture.isNull()
    assert picture.width() >= window.width() // 2

    tif = window.save_snapshot(tmp_path / "images.tif")
    with tifffile.TiffFile(tif) as f:
        assert len(f.series) == 3
        wf, sr, raw = (s.asarray() for s in f.series)
        meta = f.shaped_metadata
        x_resolution = f.series[1].pages[0].tags["XResolution"].value
    np.testing.assert_array_equal(wf, result.widefield)
    np.testing.assert_array_equal(sr, result.sr)
    np.testing.assert_array_equal(raw, result.raw)
    assert raw.dtype == np.uint16
    assert [m["name"] for m in meta] == ["widefield", "sr", "raw"]
    assert meta[0]["index"] == 5
    assert meta[0]["simulated"] is True
    assert meta[1]["pixel_size_um"] == pytest.approx(0.05)
    assert x_resolution[0] / x_resolution[1] == pytest.approx(1e4 / 0.05)

    with pytest.raises(MLSimError, match="exists"):
        window.save_snapshot(png)
    window.save_snapshot(png, overwrite=True)
    with pytest.raises(MLSimError, match="suffix"):
        window.save_snapshot(tmp_path / "shot.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.tif", "shot.png"]


@pytest.mark.qt
def test_simulated_and_ood_badges(qtbot, viewer) -> None:
    from mlsim_live.viewer import SIMViewer

    window, _ = viewer
    assert not window.simulated_badge_shown
    window.show_result(make_result(0, simulated=False))
    assert not window.simulated_badge_shown
    assert not window.ood_badge_shown
    window.show_result(make_result(1, simulated=True, ood=True))
    assert window.simulated_badge_shown
    assert window.simulated_badge.isVisible()
    assert window.ood_badge_shown
    window.show_result(make_result(2, simulated=False))
    assert not window.simulated_badge_shown

    demo = SIMViewer(simulated=True)  # demo mode: the badge is on before the first group
    qtbot.addWidget(demo)
    demo.show()
    assert demo.simulated_badge_shown
    demo.show_result(make_result(0, simulated=False))
    assert demo.simulated_badge_shown


@pytest.mark.qt
def test_closing_the_window_stops_the_acquisition_cleanly(qtbot) -> None:
    from mlsim_live.viewer import SIMViewer, ViewerSink

    stop = threading.Event()
    saved_raw_frames: list[np.ndarray] = []
    produced = 0
    calls: list[int] = []

    def on_close() -> None:
        calls.append(1)
        stop.set()

    sink = ViewerSink()
    window = SIMViewer(sink, on_close=on_close)
    qtbot.addWidget(window)
    window.show()

    def acquisition() -> None:  # stands in for the pipeline: saves raw frames, then reconstructs
        nonlocal produced
        while not stop.is_set():
            result = make_result(produced)
            saved_raw_frames.extend(result.raw)
            produced += 1
            sink.on_result(result)
            time.sleep(0.005)
        sink.close()

    thread = threading.Thread(target=acquisition)
    thread.start()
    qtbot.waitUntil(lambda: window.current_result is not None, timeout=5000)
    with qtbot.waitSignal(window.closed, timeout=2000):
        window.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert calls == [1]
    assert window.is_closed
    assert len(saved_raw_frames) == 9 * produced
    assert sink.n_received == produced
    window.close()
    assert calls == [1]  # called once only


@pytest.mark.qt
def test_closing_the_viewer_stops_a_real_pipeline_run(qtbot, fake_reconstructor) -> None:
    from pyqtgraph.Qt import QtCore

    from mlsim_live.live.pipeline import Pipeline
    from mlsim_live.viewer import open_viewer, run_viewer

    pipeline = Pipeline(fake_reconstructor(), pixel_size_um=0.1, simulated=True)
    stop = threading.Event()
    window, sink = open_viewer(
        stats_fn=lambda: pipeline.summary, on_close=stop.set, simulated=True, size=(800, 450)
    )
    qtbot.addWidget(window)
    pipeline.add_sink(sink)
    saved_raw_frames: list[tuple[int, int]] = []  # what the acquisition engine would save

    def acquisition() -> None:
        t = 0
        while not stop.is_set():  # a time series until the window closes
            raw = make_result(t).raw
            for k in range(9):
                saved_raw_frames.append((t, k))
                pipeline.push(raw[k], {"time": t, "angle": k // 3, "phase": k % 3})
            t += 1
            time.sleep(0.005)
        pipeline.close()

    thread = threading.Thread(target=acquisition)
    thread.start()
    qtbot.waitUntil(lambda: window.n_displayed >= 3, timeout=10_000)
    QtCore.QTimer.singleShot(0, window.close)  # the user closes the window
    assert run_viewer(window, timeout_s=30) is False
    thread.join(timeout=10)
    assert not thread.is_alive()
    summary = pipeline.summary
    groups = summary["groups_acquired"]
    assert len(saved_raw_frames) == 9 * groups  # every group of raw frames complete
    assert summary["groups_reconstructed"] + summary["groups_dropped"] == groups
    assert summary["errors"] == 0
    assert summary.get("incomplete_groups", 0) == 0
    assert sink.closed


@pytest.mark.qt
def test_run_viewer_saves_a_screenshot_at_the_end_and_closes(qtbot, tmp_path) -> None:
    from mlsim_live.viewer import check_screenshot_path, open_viewer, run_viewer

    closed = threading.Event()
    window, sink = open_viewer(on_close=closed.set, simulated=True, size=(800, 450))
    qtbot.addWidget(window)
    results = [make_result(i, simulated=True) for i in range(5)]

    def pipeline() -> None:
        for result in results:
            sink.on_result(result)
            time.sleep(0.01)
        sink.close()

    thread = threading.Thread(target=pipeline)
    thread.start()
    shot = tmp_path / "viewer.png"
    assert run_viewer(window, screenshot=shot, timeout_s=30) is True
    thread.join(timeout=5)
    assert shot.is_file()
    assert window.is_closed
    assert closed.is_set()
    assert window.current_result is not None
    assert window.current_result.index == 4  # the newest result was shown before the picture
    assert window.finished
    assert "acquisition finished" in window.status_text()

    with pytest.raises(MLSimError, match="exists"):
        run_viewer(window, screenshot=shot)
    with pytest.raises(MLSimError, match="suffix"):
        check_screenshot_path(tmp_path / "viewer.tif")
    assert check_screenshot_path(shot, overwrite=True) == shot


@pytest.mark.qt
def test_run_viewer_returns_false_when_the_user_closes_first(qtbot) -> None:
    from pyqtgraph.Qt import QtCore

    from mlsim_live.viewer import open_viewer, run_viewer

    stopped = threading.Event()
    window, _ = open_viewer(on_close=stopped.set, size=(400, 300))
    qtbot.addWidget(window)
    QtCore.QTimer.singleShot(100, window.close)
    assert run_viewer(window, done=lambda: False, timeout_s=30) is False
    assert stopped.is_set()


@pytest.mark.qt
def test_run_viewer_done_callable_and_close_when_done(qtbot) -> None:
    from mlsim_live.viewer import open_viewer, run_viewer

    window, sink = open_viewer(size=(400, 300))
    qtbot.addWidget(window)
    sink.on_result(make_result(0))
    deadline = time.monotonic() + 0.2
    assert run_viewer(window, done=lambda: time.monotonic() > deadline, close_when_done=True)
    assert window.is_closed
    assert window.current_result is not None
