"""Box and click prompts: parsing, fitting to a clip, keyframe interpolation, post-processing (exact pixels)."""

import logging

import numpy as np
import pytest

from hetcache_cli.errors import InputError
from hetcache_cli.io.boxes import box_mask, interpolate_boxes
from hetcache_cli.mask.post import bounding_box, convex_hull, dilate, postprocess
from hetcache_cli.spec.prompts import Box, Point, fit_boxes, fit_points, parse_box, parse_boxes, parse_point


def boxes_mask(num_frames, height, width, spans):
    """Expected mask from {frame: (c0, c1, r0, r1)} column/row slices."""
    out = np.zeros((num_frames, height, width), bool)
    for f, (c0, c1, r0, r1) in spans.items():
        out[f, r0:r1, c0:c1] = True
    return out


def test_parse():
    assert parse_box("10,20,30,40") == Box(10, 20, 30, 40, 0)
    assert parse_box(" 1.5, 2 ,30,40 @ 7 ") == Box(1.5, 2, 30, 40, 7)
    assert parse_point("12,8@3") == Point(12, 8, 3, True)
    assert parse_point("12,8", positive=False) == Point(12, 8, 0, False)
    assert parse_boxes("1,2,3,4@5") == [Box(1, 2, 3, 4, 5)]
    assert parse_boxes(["1,2,3,4", "5,6,7,8@2"]) == [Box(1, 2, 3, 4, 0), Box(5, 6, 7, 8, 2)]
    assert parse_boxes(None) == []


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("10,20,30", "has 3 number(s), not 4"),
        ("10,20,30,40,50", "has 5 number(s)"),
        ("10,20,x,40", "'x' is not a number"),
        ("nan,20,30,40", "not a finite number"),
        ("30,20,10,40", "x1 (10) must be greater than x0 (30)"),
        ("10,40,30,40", "y1 (40) must be greater than y0 (40)"),
        ("10,20,30,40@-1", "frame '-1' is not a frame index"),
        ("10,20,30,40@two", "frame 'two' is not a frame index"),
        ("", "has 1 number(s)"),
    ],
)
def test_malformed_boxes(text, fragment):
    with pytest.raises(InputError) as err:
        parse_box(text)
    assert fragment in str(err.value) and "x0,y0,x1,y1" in str(err.value)
    assert "\n" not in str(err.value)


def test_keyframes_exact_at_keyframes_and_between():
    # x0 moves 0 -> 20 and y0 0 -> 4 over frames 2..6; held before frame 2 and after frame 6.
    keys = [Box(0, 0, 10, 8, 2), Box(20, 4, 30, 12, 6)]
    mask = box_mask(keys, 9, 16, 40)
    expect = boxes_mask(
        9, 16, 40,
        {0: (0, 10, 0, 8), 1: (0, 10, 0, 8), 2: (0, 10, 0, 8),  # held before, and the first keyframe
         3: (5, 15, 1, 9), 4: (10, 20, 2, 10), 5: (15, 25, 3, 11),  # a quarter, half, three quarters
         6: (20, 30, 4, 12), 7: (20, 30, 4, 12), 8: (20, 30, 4, 12)},  # the last keyframe, held after
    )  # fmt: skip
    assert np.array_equal(mask, expect)


def test_fractional_boxes_follow_the_pixel_centre_rule():
    # Frame 1 is halfway: x0 = 2.5 (pixel 2's centre, inside), x1 = 12.5 (pixel 12's centre, outside),
    # y0 = 1.25 (pixel 1's centre 1.5 is inside), y1 = 6.75 (pixel 6's centre 6.5 is inside).
    keys = [Box(0, 0, 10, 5.5, 0), Box(5, 2.5, 15, 8, 2)]
    assert interpolate_boxes(keys, 3)[1].tolist() == [2.5, 1.25, 12.5, 6.75]
    mask = box_mask(keys, 3, 10, 20)
    assert np.array_equal(mask[1], boxes_mask(1, 10, 20, {0: (2, 12, 1, 7)})[0])
    assert np.array_equal(mask[0], boxes_mask(1, 10, 20, {0: (0, 10, 0, 5)})[0])  # 5.5: row 5's centre is out


def test_fit_boxes_clips_with_a_warning_and_sorts(caplog):
    with caplog.at_level(logging.WARNING):
        fitted = fit_boxes([Box(50, 10, 90, 30, 5), Box(-8, -2, 20, 12, 0)], 9, 64, 48)
    assert fitted == [Box(0, 0, 20, 12, 0), Box(50, 10, 64, 30, 5)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "--box 50,10,90,30@5 extends past the 64x48 frame; clipped to 50,10,64,30@5",
        "--box -8,-2,20,12@0 extends past the 64x48 frame; clipped to 0,0,20,12@0",
    ]
    assert np.array_equal(box_mask(fitted, 1, 48, 64)[0], boxes_mask(1, 48, 64, {0: (0, 20, 0, 12)})[0])


@pytest.mark.parametrize(
    "boxes, fragment",
    [
        ([Box(70, 10, 90, 30)], "lies outside the 64x48 frame"),
        ([Box(-30, 10, 0, 30)], "lies outside the 64x48 frame"),
        ([Box(10, 10, 20, 20, 9)], "frame 9 is beyond the clip, which has 9 frames (0..8)"),
        ([Box(10, 10, 20, 20, 3), Box(12, 10, 22, 20, 3)], "frame 3 already has the box"),
        ([Box(10.1, 10, 10.4, 20)], "covers no whole pixel"),
    ],
)
def test_fit_boxes_errors(boxes, fragment):
    with pytest.raises(InputError) as err:
        fit_boxes(boxes, 9, 64, 48)
    assert fragment in str(err.value)


def test_fit_points():
    assert fit_points([Point(0, 0), Point(63, 47, 8)], 9, 64, 48) == [Point(0, 0), Point(63, 47, 8)]
    with pytest.raises(InputError, match="outside the 64x48 frame"):
        fit_points([Point(64, 10)], 9, 64, 48)
    with pytest.raises(InputError, match="frame 9 is beyond the clip"):
        fit_points([Point(10, 10, 9, positive=False)], 9, 64, 48)


def test_dilate_grows_by_an_ellipse():
    mask = np.zeros((1, 11, 11), bool)
    mask[0, 5, 5] = True
    grown = dilate(mask, 2)
    rows, cols = np.nonzero(grown[0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 7, 3, 7)
    assert not grown[0, 3, 3] and grown[0, 3, 5] and grown[0, 5, 3]  # rounded corners
    assert np.array_equal(dilate(mask, 0), mask)


def test_hull_fills_the_concave_part_only():
    mask = np.zeros((2, 20, 20), bool)
    mask[0, 2:18, 2:6] = True  # an L: vertical bar ...
    mask[0, 14:18, 2:18] = True  # ... and foot
    hull = convex_hull(mask)
    assert hull[0, 10, 10] and not mask[0, 10, 10]  # inside the triangle the L spans
    assert not hull[0, 3, 16]  # beyond the diagonal from (5, 2) to (17, 14)
    assert (hull[0] >= mask[0]).all()
    assert np.array_equal(convex_hull(hull), hull)
    assert not hull[1].any()  # an empty frame stays empty
    rect = np.zeros((1, 12, 12), bool)
    rect[0, 3:9, 2:7] = True
    assert np.array_equal(convex_hull(rect), rect)


def test_bounding_box_per_frame():
    mask = np.zeros((3, 10, 12), bool)
    mask[0, 2, 3] = mask[0, 6, 9] = True
    mask[2, 4:5, 1:11] = True
    box = bounding_box(mask)
    assert np.array_equal(box, boxes_mask(3, 10, 12, {0: (3, 10, 2, 7), 2: (1, 11, 4, 5)}))


def test_postprocess_order_dilate_hull_box_invert():
    mask = boxes_mask(1, 30, 30, {0: (10, 20, 10, 20)})
    grown_box = postprocess(mask, dilate_px=3, as_box=True)
    assert np.array_equal(grown_box, boxes_mask(1, 30, 30, {0: (7, 23, 7, 23)}))  # grown 3 px on every side
    assert np.array_equal(postprocess(mask, dilate_px=3, as_box=True, invert=True), ~grown_box)
    assert np.array_equal(postprocess(mask, hull=True), mask)
    assert np.array_equal(postprocess(mask), mask)
