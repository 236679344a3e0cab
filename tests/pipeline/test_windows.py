"""Window planning and blending for long clips (pure numpy, milliseconds)."""

import re

import numpy as np
import pytest

from hetcache_cli.pipeline.windows import (
    Window,
    check_window_settings,
    crossfade,
    crossfade_weights,
    describe_windows,
    match_color,
    owned_frames,
    plan_windows,
    window_mask,
)


def covered(windows):
    return [t for i, w in enumerate(windows) for t in range(w.start, w.start + owned_frames(windows, i))]


@pytest.mark.parametrize("total", [1, 2, 5, 16, 17, 18, 29, 30, 81, 82, 100, 103, 300, 301])
@pytest.mark.parametrize("window, overlap", [(17, 5), (17, 0), (81, 16), (9, 8), (5, 1)])
def test_windows_cover_every_frame_once(total, window, overlap):
    windows = plan_windows(total, window, overlap)
    assert covered(windows) == list(range(total))  # each frame owned by exactly one window, in order
    assert windows[0].start == 0 and windows[-1].stop == total
    for i, w in enumerate(windows):
        assert w.index == i
        assert (w.model_frames - 1) % 4 == 0 and w.model_frames >= 5
        assert w.frames <= window and w.model_frames <= max(window, 5)
        assert w.new >= 1
    for prev, w in zip(windows, windows[1:]):
        assert w.shared == prev.stop - w.start >= overlap
        assert w.blend == min(4, overlap // 2) and w.known == w.shared - w.blend
        assert w.pad == 0 and w.start > prev.start
    if total > window:
        assert all(w.shared == overlap for w in windows[1:-1])


def test_a_clip_that_fits_runs_as_one_window():
    assert plan_windows(17, 17, 5) == [Window(0, 0, 17)]
    assert plan_windows(81, 81, 16) == [Window(0, 0, 81)]
    # not 4k+1: the model sees the last frame repeated up to the next 4k+1 count
    assert plan_windows(30, 81, 16) == [Window(0, 0, 30, pad=3)]
    assert plan_windows(2, 81, 16) == [Window(0, 0, 2, pad=3)]


def test_long_clip_layout():
    windows = plan_windows(300, 81, 16)
    assert [(w.start, w.stop, w.shared, w.known) for w in windows] == [
        (0, 81, 0, 0), (65, 146, 16, 12), (130, 211, 16, 12), (195, 276, 16, 12), (259, 300, 17, 13),
    ]
    # the last window is only as long as its overlap and the remaining frames need (rounded up to 4k+1)
    assert windows[-1].model_frames == 41


@pytest.mark.parametrize(
    "frames, overlap, fragment",
    [
        (20, 4, "window_frames 20 is not 4k+1"),
        (3, 0, "below the minimum 5"),
        (17, 17, "must be below window_frames 17"),
        (17, -2, "negative"),
    ],
)
def test_bad_settings(frames, overlap, fragment):
    problem = check_window_settings(frames, overlap)
    assert problem is not None and fragment in problem and "use --window" in problem
    with pytest.raises(ValueError, match=re.escape(fragment)):
        plan_windows(100, frames, overlap)
    assert check_window_settings(17, 5) is None and check_window_settings(81, 0) is None


def test_window_mask_zeroes_known_frames_and_pads():
    mask = np.ones((6, 4, 4), bool)
    w = Window(1, 10, 16, shared=3, known=2, pad=3)
    out = window_mask(mask, w)
    assert out.shape == (9, 4, 4)
    assert not out[:2].any() and out[2:].all()
    assert mask.all()  # the clip's mask is not modified


def test_crossfade_goes_from_previous_to_current():
    # known frames keep the earlier output, the blend frames ramp to this window's
    w = crossfade_weights(Window(1, 10, 27, shared=7, known=3))
    assert np.allclose(w, [0, 0, 0, 0.2, 0.4, 0.6, 0.8])
    assert np.allclose(crossfade_weights(Window(1, 10, 27, shared=3, known=3)), [0.25, 0.5, 0.75])
    prev = np.zeros((4, 2, 2, 3), np.uint8)
    cur = np.full((4, 2, 2, 3), 250, np.uint8)
    out = crossfade(prev, cur, np.array([0.2, 0.4, 0.6, 0.8]))
    assert out[:, 0, 0, 0].tolist() == [50, 100, 150, 200]
    same = np.random.default_rng(0).integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
    assert np.array_equal(crossfade(same, same, np.array([0.1, 0.5, 0.9])), same)


def test_match_color_removes_a_colour_shift_inside_the_region():
    rng = np.random.default_rng(1)
    target = rng.integers(40, 200, (3, 8, 8, 3)).astype(np.uint8)
    raw = np.concatenate([target, target[:2]]).astype(np.int16)
    raw = np.clip(raw * 0.8 + np.array([30, -10, 5]), 0, 255).astype(np.uint8)  # a drifted copy, 5 frames
    region = np.ones((5, 8, 8), bool)
    out, correction = match_color(raw, target, region, known=3)
    assert np.abs(out[:3].astype(int) - target).mean() < 1.5
    assert np.abs(raw[:3].astype(int) - target).mean() > 10
    assert correction["gain"][0] == pytest.approx(1.25, abs=0.05)
    unchanged, ident = match_color(raw, target, np.zeros_like(region), known=3)
    assert unchanged is raw and ident == {"gain": [1.0, 1.0, 1.0], "offset": [0.0, 0.0, 0.0]}


def test_describe_windows():
    assert describe_windows(plan_windows(17, 17, 5)) is None
    assert "one window of 33" in describe_windows(plan_windows(30, 81, 16))
    assert "103 frames edited in 9 windows of 17/9 frames, overlapping by 5/7" in describe_windows(
        plan_windows(103, 17, 5)
    )
