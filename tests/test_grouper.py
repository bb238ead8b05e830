"""FrameGrouper: any arrival order, missing and duplicated frames, bad frames."""

from __future__ import annotations

import numpy as np
import pytest

from mlsim_live.errors import MLSimError
from mlsim_live.live.grouper import FrameGrouper


def frame(t: int, a: int, p: int, shape: tuple[int, int] = (8, 6)) -> np.ndarray:
    """A frame whose value encodes its time point, angle and phase."""
    return np.full(shape, 100 * t + 10 * a + p, dtype=np.uint16)


def all_frames(times: range) -> list[tuple[dict[str, int], np.ndarray]]:
    return [
        ({"time": t, "angle": a, "phase": p}, frame(t, a, p))
        for t in times
        for a in range(3)
        for p in range(3)
    ]


def expected_group(t: int) -> np.ndarray:
    return np.stack([frame(t, a, p) for a in range(3) for p in range(3)])


def test_in_order_groups_are_angle_major():
    grouper = FrameGrouper()
    done = [g for axes, f in all_frames(range(2)) if (g := grouper.add(f, axes)) is not None]
    assert [g.key for g in done] == [{"time": 0}, {"time": 1}]
    for t, group in enumerate(done):
        np.testing.assert_array_equal(group.frames, expected_group(t))
        assert group.frames.dtype == np.uint16
        assert group.completed_at >= group.first_frame_at
    assert grouper.finish() == []
    assert grouper.duplicates == 0


def test_shuffled_interleaved_arrival():
    items = all_frames(range(4))
    order = np.random.default_rng(1).permutation(len(items))
    grouper = FrameGrouper()
    done = {}
    for i in order:
        axes, f = items[i]
        group = grouper.add(f, axes)
        if group is not None:
            done[group.key["time"]] = group
    assert sorted(done) == [0, 1, 2, 3]
    for t, group in done.items():
        np.testing.assert_array_equal(group.frames, expected_group(t))
    assert grouper.finish() == []


def test_key_holds_all_other_axes():
    grouper = FrameGrouper()
    last = None
    for a in range(3):
        for p in range(3):
            last = grouper.add(frame(0, a, p), {"position": 2, "angle": a, "z": 5, "phase": p})
    assert last is not None and last.key == {"position": 2, "z": 5}


def test_missing_frames_are_reported_at_finish():
    items = [x for x in all_frames(range(3)) if x[0] != {"time": 1, "angle": 2, "phase": 0}]
    items = [x for x in items if x[0] != {"time": 2, "angle": 0, "phase": 1}]
    grouper = FrameGrouper()
    done = [g.key for axes, f in items if (g := grouper.add(f, axes)) is not None]
    assert done == [{"time": 0}]
    incomplete = sorted(grouper.finish(), key=lambda g: g.key["time"])
    assert [(g.key, g.missing) for g in incomplete] == [
        ({"time": 1}, ((2, 0),)),
        ({"time": 2}, ((0, 1),)),
    ]
    assert grouper.finish() == incomplete


def test_duplicate_in_pending_group_last_one_wins():
    grouper = FrameGrouper()
    replacement = np.full((8, 6), 999, dtype=np.uint16)
    grouper.add(frame(0, 1, 1), {"time": 0, "angle": 1, "phase": 1})
    grouper.add(replacement, {"time": 0, "angle": 1, "phase": 1})
    group = None
    for axes, f in all_frames(range(1)):
        if axes["angle"] == 1 and axes["phase"] == 1:
            continue
        group = grouper.add(f, axes)
    assert group is not None
    np.testing.assert_array_equal(group.frames[4], replacement)
    assert grouper.duplicates == 1


def test_duplicate_after_completion_is_ignored_and_counted():
    grouper = FrameGrouper()
    for axes, f in all_frames(range(1)):
        grouper.add(f, axes)
    assert grouper.add(frame(0, 0, 0), {"time": 0, "angle": 0, "phase": 0}) is None
    assert grouper.duplicates == 1
    assert grouper.n_pending == 0
    assert grouper.finish() == []


def test_frames_are_copied():
    grouper = FrameGrouper()
    buffer = frame(0, 0, 0)
    grouper.add(buffer, {"angle": 0, "phase": 0})
    buffer[:] = 7  # the caller reuses its buffer
    group = None
    for a in range(3):
        for p in range(3):
            if (a, p) != (0, 0):
                group = grouper.add(frame(0, a, p), {"angle": a, "phase": p})
    assert group is not None and group.key == {}
    assert int(group.frames[0, 0, 0]) == 0


@pytest.mark.parametrize(
    "axes",
    [
        {"time": 0, "phase": 0},
        {"time": 0, "angle": 3, "phase": 0},
        {"time": 0, "angle": 0, "phase": -1},
        {"time": 0, "angle": 0.5, "phase": 0},
        {"time": 0, "angle": "a", "phase": 0},
    ],
)
def test_bad_axes_raise(axes):
    with pytest.raises(MLSimError):
        FrameGrouper().add(frame(0, 0, 0), axes)


def test_mismatched_frame_in_group_raises():
    grouper = FrameGrouper()
    grouper.add(frame(0, 0, 0), {"angle": 0, "phase": 0})
    with pytest.raises(MLSimError, match="like the rest of its group"):
        grouper.add(frame(0, 0, 1, shape=(4, 4)), {"angle": 0, "phase": 1})
    with pytest.raises(MLSimError, match="2D"):
        grouper.add(np.zeros((2, 8, 6)), {"angle": 0, "phase": 2})


def test_custom_axis_names():
    grouper = FrameGrouper(angle_axis="channel", phase_axis="z")
    group = None
    for a in range(3):
        for p in range(3):
            group = grouper.add(frame(1, a, p), {"time": 1, "channel": a, "z": p})
    assert group is not None and group.key == {"time": 1}
    np.testing.assert_array_equal(group.frames, expected_group(1))
    with pytest.raises(MLSimError):
        FrameGrouper(angle_axis="z", phase_axis="z")


def test_pending_overflow_abandons_oldest():
    grouper = FrameGrouper(max_pending=2)
    for t in range(3):
        grouper.add(frame(t, 0, 0), {"time": t, "angle": 0, "phase": 0})
    assert grouper.n_pending == 2
    assert [g.key for g in grouper.incomplete] == [{"time": 0}]
    # a late frame of the abandoned group is a duplicate, not a new group
    assert grouper.add(frame(0, 0, 1), {"time": 0, "angle": 0, "phase": 1}) is None
    assert grouper.duplicates == 1
    assert [g.key["time"] for g in grouper.finish()] == [0, 1, 2]
