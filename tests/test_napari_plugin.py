"""The napari plugin: manifest, reader (names, scales, non-SIM files refused), the reconstruction
widget (widefield, wiener, trust; same images as ``reconstruct``) and the live SR layer
(coalesced to the newest result, driven by the replay source), on the offscreen Qt platform.

napari's viewer (``make_napari_viewer``) draws with OpenGL even when hidden; where Qt can make no
OpenGL context (offscreen without an X server: run ``xvfb-run -a python -m pytest`` for the
full viewer) the same tests run against napari's viewer model, which holds the layers the plugin
adds and slices them as the viewer does, without a canvas.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

napari = pytest.importorskip("napari")
pytest.importorskip("npe2")

from group_results import group_result  # noqa: E402

from mlsim_live.cli import main  # noqa: E402
from mlsim_live.io import write_tiff_atomic  # noqa: E402
from mlsim_live.live.results import GroupResult  # noqa: E402
from mlsim_live.napari.layers import META_KEY, FrameArray, file_kind  # noqa: E402
from mlsim_live.napari.reader import napari_get_reader  # noqa: E402

pytestmark = pytest.mark.qt

SIZE = 48
PIXEL_UM = 0.065
N_GROUPS = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> dict[str, Path]:
    """Two simulated groups in one plain angle-major stack (ImageJ, 65 nm pixels), and its
    ``reconstruct --method wiener --trust`` outputs."""
    from mlsim_live.sim import simulate_group

    folder = tmp_path_factory.mktemp("napari")
    raw = np.concatenate([simulate_group(size=SIZE, seed=s).raw for s in range(N_GROUPS)])
    path = write_tiff_atomic(folder / "cells.tif", raw, pixel_size_um=PIXEL_UM)
    out = folder / "out"
    assert main(["reconstruct", str(path), "--out", str(out), "--method", "wiener", "--trust"]) == 0
    return {"raw": path, "sr": out / "cells_sr.tif", "trust": out / "cells_trust.tif"}


def opengl_available() -> bool:
    """True when Qt can make an OpenGL context here (napari's canvas needs one)."""
    from qtpy.QtGui import QOffscreenSurface, QOpenGLContext

    context = QOpenGLContext()
    if not context.create():
        return False
    surface = QOffscreenSurface()
    surface.create()
    current = context.makeCurrent(surface)
    context.doneCurrent()
    return bool(current)


@pytest.fixture
def viewer(request, qapp):
    """A napari viewer from ``make_napari_viewer``, or its viewer model without OpenGL."""
    if opengl_available():
        return request.getfixturevalue("make_napari_viewer")()
    from napari.components import ViewerModel
    from npe2 import PluginManager

    PluginManager.instance().discover()  # as napari does when it starts (the plugin's reader)
    return ViewerModel()


def read(path: Path) -> tuple:
    reader = napari_get_reader(str(path))
    assert reader is not None, f"{path} refused"
    (layer,) = reader(str(path))
    return layer


# --------------------------------------------------------------------------------------------
# manifest and reader


def test_manifest_is_valid_declared_and_its_commands_import():
    import importlib

    from npe2 import PluginManifest

    import mlsim_live.napari

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    entry = project["project"]["entry-points"]["napari.manifest"]
    assert entry == {"mlsim-live": "mlsim_live.napari:napari.yaml"}
    manifest = PluginManifest.from_file(Path(mlsim_live.napari.__file__).with_name("napari.yaml"))
    assert manifest.name == project["project"]["name"]
    assert [r.filename_patterns for r in manifest.contributions.readers] == [["*.tif", "*.tiff"]]
    for command in manifest.contributions.commands:
        module, name = command.python_name.split(":")
        assert callable(getattr(importlib.import_module(module), name))


def test_file_kinds_and_stems():
    assert file_kind("a/cells.ome.tif") == ("raw", "cells")
    assert file_kind("sim_0000_raw.tif") == ("raw", "sim_0000")
    assert file_kind("sim_0000_raw_sr.tif") == ("sr", "sim_0000")
    assert file_kind("cells_trust.tiff") == ("trust", "cells")
    assert file_kind("_sr.tif") == ("raw", "_sr")


def test_reader_shows_raw_frames_angle_major_at_the_pixel_size(stack):
    data, kwargs, kind = read(stack["raw"])
    assert kind == "image" and kwargs["name"] == "cells raw"
    assert isinstance(data, FrameArray) and data.shape == (9 * N_GROUPS, SIZE, SIZE)
    np.testing.assert_allclose(kwargs["scale"], [1.0, PIXEL_UM, PIXEL_UM], rtol=1e-6)
    assert kwargs["translate"] == [0.0, 0.0, 0.0]
    meta = kwargs["metadata"][META_KEY]
    assert meta["kind"] == "raw" and meta["n_groups"] == N_GROUPS and meta["order"] == "angle-major"
    frames = tifffile.imread(stack["raw"])
    np.testing.assert_array_equal(data[10], frames[10])
    np.testing.assert_array_equal(np.asarray(data[7:12, 5]), frames[7:12, 5])


def test_reader_puts_sr_and_trust_on_the_half_pixel_grid_over_their_groups(stack):
    half = PIXEL_UM / 2
    for path, name in ((stack["sr"], "cells SR wiener"), (stack["trust"], "cells trust wiener")):
        data, kwargs, _ = read(path)
        assert kwargs["name"] == name
        assert data.shape == (N_GROUPS, 2 * SIZE, 2 * SIZE)
        # each group spans its 9 raw frames; its pixels cover the raw pixels they came from
        np.testing.assert_allclose(kwargs["scale"], [9.0, half, half], rtol=1e-6)
        np.testing.assert_allclose(kwargs["translate"], [4.0, -half / 2, -half / 2], rtol=1e-6)
        np.testing.assert_array_equal(data[1], tifffile.imread(path)[1])
    _, kwargs, _ = read(stack["trust"])
    assert kwargs["contrast_limits"] == (0.0, 1.0)
    assert kwargs["metadata"][META_KEY]["kind"] == "trust"


def test_reader_refuses_files_that_are_not_sim_stacks(stack, tmp_path):
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.ones((32, 32), np.uint16))  # one 2D image
    ten = tmp_path / "ten.tif"
    tifffile.imwrite(ten, np.ones((10, 16, 16), np.uint16))  # not 9*T frames
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.ones((9, 16, 16, 3), np.uint8), photometric="rgb")
    text = tmp_path / "notes.tif"
    text.write_text("not a TIFF")
    png = tmp_path / "cells.png"
    png.write_bytes(b"\x89PNG")
    for path in (image, ten, rgb, text, png, tmp_path / "missing.tif", tmp_path):
        assert napari_get_reader(str(path)) is None, path
    assert napari_get_reader([str(stack["raw"]), str(image)]) is None


# --------------------------------------------------------------------------------------------
# in a viewer


def test_viewer_opens_raw_sr_and_trust_through_the_plugin(viewer, stack):
    for key in ("raw", "sr", "trust"):
        viewer.open(str(stack[key]), plugin="mlsim-live")
    assert [layer.name for layer in viewer.layers] == [
        "cells raw",
        "cells SR wiener",
        "cells trust wiener",
    ]
    raw, sr, trust = viewer.layers
    np.testing.assert_allclose(raw.scale[-1], 2 * sr.scale[-1])
    # the slider on frame 13 (group 1) shows group 1's reconstruction
    viewer.dims.set_point(0, 13)
    np.testing.assert_array_equal(sr._slice.image.raw, tifffile.imread(stack["sr"])[1])
    # flagged trust is coloured and opaque, trusted pixels are transparent
    rgba = trust.colormap.map(np.array([0.1, 0.45, 0.6, 1.0]))
    assert rgba[0, 3] > 0.7 and rgba[1, 3] > 0.3 and rgba[2, 3] == 0 and rgba[3, 3] == 0
    assert rgba[0, 0] > 0.9 and rgba[0, 2] < 0.3


def run_widget(widget, qtbot, method: str, trust: bool = False) -> None:
    widget.method_box.setCurrentText(method)
    widget.trust_box.setChecked(trust)
    worker = widget.run()
    assert worker is not None, widget.status.text()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: widget.worker is None, timeout=5_000)


def test_widget_reconstructs_a_raw_layer_as_reconstruct_does(viewer, qtbot, stack):
    from mlsim_live.napari.widget import ReconstructWidget

    viewer.open(str(stack["raw"]), plugin="mlsim-live")
    viewer.add_image(np.ones((5, 8, 8), np.float32), name="not SIM")
    widget = ReconstructWidget(viewer)
    assert [widget.layer_box.itemText(i) for i in range(widget.layer_box.count())] == ["cells raw"]
    widget.select_layer("cells raw")

    run_widget(widget, qtbot, "widefield")
    run_widget(widget, qtbot, "wiener", trust=True)
    names = [layer.name for layer in viewer.layers]
    assert names == [
        "cells raw",
        "not SIM",
        "cells widefield",
        "cells SR widefield",
        "cells SR wiener",
        "cells trust wiener",
    ], widget.status.text()

    raw = tifffile.imread(stack["raw"]).astype(np.float32)
    widefield = viewer.layers["cells widefield"]
    np.testing.assert_allclose(widefield.data, raw.reshape(N_GROUPS, 9, SIZE, SIZE).mean(axis=1))
    np.testing.assert_allclose(widefield.scale, [9.0, PIXEL_UM, PIXEL_UM], rtol=1e-6)

    sr = viewer.layers["cells SR wiener"]
    assert sr.data.shape == (N_GROUPS, 2 * SIZE, 2 * SIZE)
    np.testing.assert_allclose(sr.data, tifffile.imread(stack["sr"]), rtol=1e-4, atol=1e-3)
    # beside the raw frames: one frame width and a small gap to the right, on the 2x grid
    half = PIXEL_UM / 2
    np.testing.assert_allclose(sr.scale, [9.0, half, half], rtol=1e-6)
    np.testing.assert_allclose(sr.translate[1], -half / 2, rtol=1e-6)
    assert SIZE * PIXEL_UM < sr.translate[2] < 1.1 * SIZE * PIXEL_UM
    trust = viewer.layers["cells trust wiener"]
    np.testing.assert_allclose(trust.translate, sr.translate)
    assert trust.data.shape == sr.data.shape and 0 <= trust.data.min() <= trust.data.max() <= 1
    assert sr.metadata[META_KEY]["reconstructor"] == "wiener"

    # again: the layer is updated in place, not duplicated
    run_widget(widget, qtbot, "wiener")
    assert [layer.name for layer in viewer.layers] == names


def test_widget_reads_a_foreign_phase_major_layer_and_reports_bad_input(viewer, qtbot, stack):
    from mlsim_live.napari.widget import ReconstructWidget

    frames = tifffile.imread(stack["raw"])[:9]  # one group, angle-major
    phase_major = frames[[3 * (k % 3) + k // 3 for k in range(9)]]
    viewer.add_image(phase_major, name="stack", scale=(1, 0.1, 0.1))
    widget = ReconstructWidget(viewer)
    widget.select_layer("stack")
    widget.order_box.setCurrentText("phase-major")
    run_widget(widget, qtbot, "wiener")
    sr = viewer.layers["stack SR wiener"]
    assert sr.data.shape == (2 * SIZE, 2 * SIZE)  # one group: a 2D image
    np.testing.assert_allclose(sr.scale, [0.05, 0.05])
    from mlsim_live.recon import make_reconstructor

    expected = make_reconstructor("wiener").reconstruct(frames)
    np.testing.assert_allclose(sr.data, expected, rtol=1e-4, atol=1e-3)

    viewer.layers.remove("stack")
    assert widget.layer_box.count() == 0
    assert widget.run() is None
    assert "no raw SIM layer" in widget.status.text()


# --------------------------------------------------------------------------------------------
# live SR layer


def make_result(index: int, size: int = 16) -> GroupResult:
    rng = np.random.default_rng(index)
    raw = rng.integers(100, 1000, (9, size, size)).astype(np.uint16)
    sr = rng.random((2 * size, 2 * size), dtype=np.float32) + index
    return group_result(raw, sr, index, latency_ms=10.0, reconstruct_ms=5.0, reconstructor="fake")


def test_live_layer_shows_the_newest_of_many_results(viewer, qtbot):
    from mlsim_live.live.sinks import Sink
    from mlsim_live.napari import LiveSRLayer

    live = LiveSRLayer(viewer)
    assert isinstance(live, Sink)
    results = [make_result(i) for i in range(40)]

    # the pipeline's thread hands over 40 results while the GUI thread is not looking:
    # on_result never waits for the GUI
    feeder = threading.Thread(target=lambda: [live.on_result(r) for r in results])
    feeder.start()
    feeder.join(10)
    assert not feeder.is_alive()
    assert live.n_received == 40 and live.n_shown == 0

    qtbot.waitUntil(lambda: live.n_shown > 0, timeout=10_000)
    qtbot.wait(50)  # a second update would arrive now if more than one were queued
    assert live.n_shown == 1 and live.shown_index == 39 and live.n_coalesced == 39
    sr = viewer.layers["live SR"]
    np.testing.assert_array_equal(sr.data, results[-1].sr)
    np.testing.assert_allclose(sr.scale, [0.05, 0.05])
    np.testing.assert_array_equal(viewer.layers["live widefield"].data, results[-1].widefield)

    live.on_result(make_result(40))
    qtbot.waitUntil(lambda: live.shown_index == 40, timeout=10_000)
    assert [layer.name for layer in viewer.layers] == ["live widefield", "live SR"]
    np.testing.assert_array_equal(sr.data, make_result(40).sr)
    with qtbot.waitSignal(live.finished, timeout=5_000):
        live.close()
    assert live.closed


def test_live_layer_follows_a_replayed_stack(viewer, qtbot, stack):
    from mlsim_live.live.pipeline import Pipeline
    from mlsim_live.napari import LiveSRLayer
    from mlsim_live.recon import make_stream_reconstructor
    from mlsim_live.replay import TiffSource, replay

    class Recorder:
        def __init__(self) -> None:
            self.results: list[GroupResult] = []

        def on_result(self, result: GroupResult) -> None:
            self.results.append(result)

        def close(self) -> None:
            pass

    live = LiveSRLayer(viewer, stem="cells")
    recorder = Recorder()
    source = TiffSource(stack["raw"])
    pipeline = Pipeline(
        make_stream_reconstructor("wiener"),
        [live, recorder],
        policy="all",
        pixel_size_um=source.pixel_size_um,
    )
    done = threading.Event()
    thread = threading.Thread(target=lambda: (replay(source, pipeline), done.set()))
    thread.start()
    qtbot.waitUntil(done.is_set, timeout=120_000)
    thread.join()
    source.close()
    assert pipeline.summary["groups_reconstructed"] == N_GROUPS
    qtbot.waitUntil(lambda: live.shown_index == N_GROUPS - 1 and live.closed, timeout=10_000)
    assert live.n_received == N_GROUPS
    sr = viewer.layers["cells SR"]
    np.testing.assert_array_equal(sr.data, recorder.results[-1].sr)
    np.testing.assert_allclose(sr.scale, [PIXEL_UM / 2] * 2, rtol=1e-6)


def test_reader_takes_the_live_writers_sr_file(stack, tmp_path):
    """``replay``/``demo`` write SR pages with JSON descriptions and centimetre resolution."""
    out = tmp_path / "replay"
    args = ["replay", str(stack["raw"]), "--out", str(out), "--method", "widefield", "--headless"]
    assert main(args) == 0
    data, kwargs, _ = read(out / "cells_sr.tif")
    assert kwargs["name"] == "cells SR widefield"
    assert data.shape == (N_GROUPS, 2 * SIZE, 2 * SIZE)
    np.testing.assert_allclose(kwargs["scale"][1:], [PIXEL_UM / 2] * 2, rtol=1e-4)


@pytest.mark.mm
def test_live_layer_follows_the_pymmcore_plus_demo(viewer, qtbot, tmp_path):
    """As under napari-micromanager: pymmcore-plus drives the (simulated) microscope while a
    QApplication runs, and the layer follows the pipeline fed by the frameReady handler."""
    pytest.importorskip("pymmcore_plus")
    pytest.importorskip("mm_test_adapters")
    from mlsim_live.live.demo import DemoSettings
    from mlsim_live.live.plus_demo import PlusDemoRun
    from mlsim_live.napari import LiveSRLayer

    live = LiveSRLayer(viewer, stem="demo")
    settings = DemoSettings(
        groups=3, size=32, out=tmp_path, exposure_ms=1.0, method="wiener", policy="all"
    )
    demo = PlusDemoRun(settings, sinks=(live,))
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=demo.run()))
    thread.start()
    qtbot.waitUntil(lambda: "summary" in outcome, timeout=120_000)
    thread.join()
    summary = outcome["summary"]
    assert summary["groups_reconstructed"] == 3 and summary["errors"] == 0
    qtbot.waitUntil(lambda: live.shown_index == 2 and live.closed, timeout=10_000)
    sr = viewer.layers["demo SR"]
    np.testing.assert_array_equal(sr.data, tifffile.imread(tmp_path / "demo_1_sr.tif")[-1])
    np.testing.assert_allclose(sr.scale, [summary["pixel_size_um"] / 2] * 2)
    assert sr.metadata[META_KEY]["simulated"] is True
