"""The viewer's Qt-free models: what the panels show, the trust overlay's mailbox and colours,
and snapshot names and TIFFs (no display, no Qt)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from group_results import group_result

from mlsim_live.errors import MLSimError
from mlsim_live.live.results import GroupResult
from mlsim_live.viewer.content import (
    IMAGE,
    SPECTRUM,
    centred_rect,
    check_raw_index,
    view_content,
)
from mlsim_live.viewer.snapshot import check_snapshot_path, write_snapshot_tiff
from mlsim_live.viewer.trust_overlay import NewestTrust, TrustMap, trust_rgba, trust_status


def _result(raw: np.ndarray | None = None, size: int = 16, scale: int = 2) -> GroupResult:
    rng = np.random.default_rng(0)
    frames = rng.random((9, size, size), dtype=np.float32) if raw is None else raw
    sr = rng.random((scale * size, scale * size), dtype=np.float32)
    return group_result(
        frames, sr, 3, key={"time": 3, "position": 1}, latency_ms=41.6, simulated=True
    )


def test_images_cover_the_same_field_of_view_in_raw_pixels() -> None:
    result = _result(size=16, scale=2)
    content = view_content(result, None, spectrum=False)
    assert content.kind == IMAGE and content.scale_bar and content.field_width_px == 16
    assert content.left.rect == content.sr.rect == (0.0, 0.0, 16.0, 16.0)
    np.testing.assert_array_equal(content.left.data, result.widefield)
    assert content.sr.data.shape == (32, 32)
    assert content.left.title == "Widefield (mean of 9 frames)"
    assert content.sr.title == "Super-resolution (2x) · wiener"
    assert content.info.startswith("group #3 (time 3, position 1) · latency 42 ms")
    assert content.bounds() == (0.0, 0.0, 16.0, 16.0)


def test_spectra_share_the_frequency_step_so_the_sr_reaches_farther() -> None:
    content = view_content(_result(size=16, scale=2), 4, spectrum=True)
    assert content.kind == SPECTRUM and not content.scale_bar
    assert content.left.rect == centred_rect((16, 16)) == (-8.5, -8.5, 16.0, 16.0)
    assert content.sr.rect == (-16.5, -16.5, 32.0, 32.0)
    assert content.bounds() == content.sr.rect
    assert content.left.title == "Raw frame 4 (angle 1, phase 1) · log power spectrum"
    assert content.geometry != view_content(_result(size=16), 4, spectrum=False).geometry


def test_a_raw_frame_the_result_lacks_falls_back_to_the_widefield(caplog) -> None:
    result = _result(raw=np.ones((3, 8, 8), np.float32))
    with caplog.at_level("WARNING", logger="mlsim_live.viewer"):
        content = view_content(result, 5, spectrum=False)
    assert content.left.title == "Widefield (mean of 3 frames)"
    assert "has no raw frame 5" in caplog.text
    shown = view_content(result, 2, spectrum=False)
    np.testing.assert_array_equal(shown.left.data, result.raw[2])


def test_raw_frame_numbers_are_checked() -> None:
    assert check_raw_index(None) is None
    assert check_raw_index(np.int64(8)) == 8
    for bad in (-1, 9):
        with pytest.raises(MLSimError, match="expected 0 to 8"):
            check_raw_index(bad)


def test_the_trust_mailbox_keeps_the_newest_map_and_notifies_once_per_batch() -> None:
    box = NewestTrust()
    assert box.take() is None
    maps = [TrustMap(i, np.full((2, 2), i / 10), i / 10) for i in range(3)]
    assert box.put(maps[0]) is True  # first map: notify the GUI
    assert box.put(maps[1]) is False  # not yet taken: no second notification
    assert box.put(maps[2]) is False
    assert box.take() is maps[2]
    assert box.take() is None
    assert box.counts() == (3, 1, 2)  # put, taken, replaced before they were taken
    assert box.put(maps[0]) is True


def test_the_mailbox_says_once_that_the_producer_is_done() -> None:
    box = NewestTrust()
    assert not box.closed
    assert box.close() is True  # the first close: tell the consumer
    assert box.close() is False  # idempotent: no second "finished"
    assert box.closed
    box.put(TrustMap(0, np.zeros(1), 0.0))  # a late item is still handed over
    assert box.take() is not None


def test_the_trust_mailbox_loses_no_notification_across_threads() -> None:
    box = NewestTrust()
    notified: list[int] = []
    taken: list[int] = []

    def trust_thread() -> None:
        for i in range(2000):
            if box.put(TrustMap(i, np.zeros(1), 0.0)):
                notified.append(i)

    thread = threading.Thread(target=trust_thread)
    thread.start()
    while thread.is_alive() or notified:
        if notified:
            notified.pop()
            got = box.take()
            if got is not None:
                taken.append(got.index)
    thread.join()
    assert box.take() is None, "a map was left waiting without a notification"
    assert taken[-1] == 1999
    assert taken == sorted(taken)


def test_trust_colours_flag_low_trust_in_red_and_leave_the_rest_transparent() -> None:
    rgba = trust_rgba(np.array([[0.0, 0.25], [0.5, 1.0]]))
    assert rgba.dtype == np.uint8 and rgba.shape == (2, 2, 4)
    assert tuple(rgba[0, 0]) == (255, 60, 30, 220)
    assert tuple(rgba[0, 1]) == (255, 60, 30, 155)
    assert rgba[1, 0, 3] == 0 and rgba[1, 1, 3] == 0


def test_trust_status_text() -> None:
    assert trust_status(None) == " · trust: mapping…"
    assert trust_status(TrustMap(7, np.zeros(1), 0.0812)) == " · trust: 8.1% flagged (group #7)"


def test_snapshot_paths_are_refused_before_anything_is_written(tmp_path) -> None:
    check_snapshot_path(tmp_path / "a.png", overwrite=False, have_images=False)
    with pytest.raises(MLSimError, match=r"suffix '\.gif'"):
        check_snapshot_path(tmp_path / "a.gif", overwrite=False, have_images=True)
    with pytest.raises(MLSimError, match="does not exist"):
        check_snapshot_path(tmp_path / "no" / "a.png", overwrite=False, have_images=True)
    (tmp_path / "old.tif").write_bytes(b"x")
    with pytest.raises(MLSimError, match="exists"):
        check_snapshot_path(tmp_path / "old.tif", overwrite=False, have_images=True)
    check_snapshot_path(tmp_path / "old.tif", overwrite=True, have_images=True)
    with pytest.raises(MLSimError, match="no images to save yet"):
        check_snapshot_path(tmp_path / "a.TIFF", overwrite=False, have_images=False)


def test_snapshot_tiff_holds_widefield_sr_and_raw_with_metadata(tmp_path) -> None:
    tifffile = pytest.importorskip("tifffile")
    result = _result(size=8, scale=2)
    path = tmp_path / "snap.tif"
    write_snapshot_tiff(result, path)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 3
        widefield, sr, raw = (s.asarray() for s in tif.series)
        metadata = [json.loads(s.pages[0].description) for s in tif.series]
    np.testing.assert_allclose(widefield, result.widefield)
    np.testing.assert_allclose(sr, result.sr)
    np.testing.assert_array_equal(raw, result.raw)
    assert [m["name"] for m in metadata] == ["widefield", "sr", "raw"]
    assert [m["pixel_size_um"] for m in metadata] == [0.1, 0.05, 0.1]
    assert metadata[1]["key"] == {"time": 3, "position": 1}
    assert metadata[0]["simulated"] is True and metadata[0]["index"] == 3
