"""The viewer's trust overlay: toggled by key and checkbox, mapped off the GUI thread."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import


import numpy as np
import pytest
from group_results import group_result

from mlsim_live.live.results import GroupResult
from mlsim_live.recon.wiener import WienerReconstructor
from mlsim_live.sim import simulate_group
from mlsim_live.sim.simulate import Signal, SIMParams

pytest.importorskip("pytestqt")


def _result(index: int, raw: np.ndarray, sr: np.ndarray) -> GroupResult:
    return group_result(raw, sr, index, pixel_size_um=0.08)


@pytest.fixture(scope="module")
def group_with_fake():
    """A simulated group and its Wiener reconstruction with a filament the sample lacks."""
    params = SIMParams(signal=Signal(peak_photons=500.0))
    group = simulate_group(params, "filaments", 64, seed=4)
    sr = WienerReconstructor(optics=params.optics).reconstruct(group.raw)
    n = sr.shape[0]
    yy, xx = np.mgrid[:n, :n]
    line = np.exp(-((yy - 0.5 * xx - 0.3 * n) ** 2) / 2.0)
    return group.raw, sr + np.percentile(sr, 99.9) * line, line > 0.5


@pytest.mark.qt
def test_trust_overlay_toggles_and_shows_flagged_pixels(qtbot, group_with_fake) -> None:
    from mlsim_live.trust.sink import TrustSink
    from mlsim_live.viewer import SIMViewer, ViewerSink

    raw, sr, line = group_with_fake
    sink = ViewerSink()
    window = SIMViewer(sink, status_interval_ms=50)
    qtbot.addWidget(window)
    window.resize(900, 500)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    qtbot.waitActive(window)
    window.show_result(_result(0, raw, sr))
    trust = TrustSink(every=False)
    window.attach_trust(trust)
    try:
        assert not window.trust_overlay and not trust.enabled
        trust.on_result(_result(0, raw, sr))  # off: ignored, nothing mapped
        assert trust.summary()["trust_groups"] == 0

        from pyqtgraph.Qt import QtWidgets

        (key_t,) = [
            sc for sc in window.findChildren(QtWidgets.QShortcut) if sc.key().toString() == "T"
        ]
        key_t.activated.emit()  # the key turns it on, and the checkbox follows
        assert window.trust_overlay and trust.enabled and window.trust_box.isChecked()
        result = _result(1, raw, sr)
        sink.on_result(result)
        trust.on_result(result)
        qtbot.waitUntil(lambda: window.displayed_trust() is not None, timeout=60000)
        rgba = window.displayed_trust()
        assert rgba.shape == (*sr.shape, 4)
        inner = line.copy()
        inner[:12], inner[-12:], inner[:, :12], inner[:, -12:] = False, False, False, False
        assert np.mean(rgba[inner, 3] > 0) > 0.8  # the fake filament is coloured
        qtbot.waitUntil(lambda: "flagged (group #1)" in window.status_text(), timeout=5000)

        window.trust_box.setChecked(False)  # the checkbox turns it off
        assert window.displayed_trust() is None and not trust.enabled
    finally:
        trust.close()


@pytest.mark.qt
def test_a_runs_own_trust_sink_keeps_mapping_whatever_the_overlay(qtbot) -> None:
    """With --trust the run's sink writes every map it makes: the viewer shows them but its
    overlay switch does not turn the mapping off."""
    from mlsim_live.trust.sink import TrustSink
    from mlsim_live.viewer import SIMViewer, ViewerSink

    window = SIMViewer(ViewerSink(), status_interval_ms=50)
    qtbot.addWidget(window)
    trust = TrustSink(every=False)
    try:
        window.attach_trust(trust, controls=False)
        assert trust.enabled and trust.on_map is not None
        window.set_trust_overlay(True)
        window.set_trust_overlay(False)
        assert trust.enabled
        own = TrustSink(every=False)
        try:
            window.attach_trust(own)  # the viewer's own sink maps only while the overlay is on
            assert not own.enabled
            window.set_trust_overlay(True)
            assert own.enabled
        finally:
            own.close()
    finally:
        trust.close()
