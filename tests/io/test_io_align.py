import numpy as np
import pytest

from hetcache_cli.errors import InputError
from hetcache_cli.io.align import apply_alignment, plan_alignment


def test_every_frame_is_kept():
    # 4k+1 applies to each window of the model (pipeline/windows.py), never to the clip
    plan = plan_alignment(30, 480, 832, fps=30.0)
    assert (plan.frames, plan.trimmed_frames, plan.resized) == (30, 0, False)
    assert plan.messages == []
    assert plan_alignment(1, 480, 832).frames == 1


def test_valid_clip_is_untouched():
    plan = plan_alignment(81, 480, 832)
    assert (plan.frames, plan.height, plan.width, plan.trimmed_frames, plan.resized) == (81, 480, 832, 0, False)
    assert plan.messages == []


def test_requested_frames():
    plan = plan_alignment(81, 480, 832, frames=50, fps=25.0)
    assert (plan.frames, plan.trimmed_frames) == (50, 31)
    assert plan.messages == ["using the first 50 of 81 frames as set by --frames 50 (31 frames, 1.24 s left out)"]
    with pytest.raises(InputError, match="more frames than the video has \\(30\\); use --frames 30 or fewer"):
        plan_alignment(30, 480, 832, frames=33)
    with pytest.raises(InputError, match="--frames 0 is not positive; use --frames 1 or more"):
        plan_alignment(30, 480, 832, frames=0)


def test_size_rounded_to_nearest_16():
    plan = plan_alignment(9, 480, 854)
    assert (plan.height, plan.width, plan.resized) == (480, 848, True)
    assert plan.messages == ["resizing 854x480 -> 848x480 (multiples of 16; aspect kept within 1%)"]
    assert (plan_alignment(9, 44, 70).height, plan_alignment(9, 44, 70).width) == (48, 64)


def test_one_side_given_derives_the_other():
    plan = plan_alignment(9, 720, 1280, width=832)
    assert (plan.height, plan.width) == (464, 832)  # 468 -> nearest multiple of 16
    plan = plan_alignment(9, 720, 1280, height=480)
    assert (plan.height, plan.width) == (480, 848)  # 853.3 -> 848


def test_both_sides_given_used_as_is():
    plan = plan_alignment(9, 720, 1280, height=480, width=480, max_area=100)
    assert (plan.height, plan.width) == (480, 480)
    assert "aspect ratio changed by" in plan.messages[0]


def test_invalid_given_size():
    with pytest.raises(InputError, match="--width 830 is not a multiple of 16.*use --width 816 or 832"):
        plan_alignment(9, 720, 1280, width=830)
    with pytest.raises(InputError, match="--height 16 is too small; the minimum is 32"):
        plan_alignment(9, 720, 1280, height=16)
    with pytest.raises(InputError, match="below the minimum 32"):
        plan_alignment(9, 40, 4000, width=1280)  # height would be 12.8


def test_max_area_downscales_keeping_aspect():
    plan = plan_alignment(9, 720, 1280, max_area=832 * 480)
    assert (plan.height, plan.width) == (464, 832)
    assert plan.height * plan.width <= 832 * 480
    assert plan.messages == [
        "resizing 1280x720 -> 832x464 (multiples of 16, fits max_area 399360; aspect kept within 1%)"
    ]
    assert (plan_alignment(9, 480, 832, max_area=832 * 480).resized) is False


def test_source_too_small():
    with pytest.raises(InputError, match="video 20x20 becomes 16x16.*minimum 32x32"):
        plan_alignment(9, 20, 20)


def test_apply_trims_and_area_downscales(make_clip):
    frames = make_clip(30, 64, 96)
    plan = plan_alignment(30, 64, 96, width=48, frames=29)
    assert (plan.frames, plan.height, plan.width) == (29, 32, 48)
    out = apply_alignment(frames, plan)
    assert out.shape == (29, 32, 48, 3) and out.dtype == np.uint8
    block_mean = frames[:29].reshape(29, 32, 2, 48, 2, 3).astype(float).mean(axis=(2, 4))
    assert np.abs(out - block_mean).max() <= 1  # INTER_AREA at 2x = 2x2 block mean


def test_apply_without_resize_is_a_view(make_clip):
    frames = make_clip(10, 48, 64)
    out = apply_alignment(frames, plan_alignment(10, 48, 64))
    assert out.shape == frames.shape and np.shares_memory(out, frames)
    assert np.array_equal(apply_alignment(frames, plan_alignment(10, 48, 64, frames=9)), frames[:9])


def test_apply_upscale_stays_in_range():
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    frames[:, ::2] = 255  # stripes: cubic overshoots, must saturate, not wrap
    out = apply_alignment(frames, plan_alignment(5, 32, 32, height=64, width=64))
    assert out.shape == (5, 64, 64, 3)
    assert out.max() == 255 and out.min() == 0


def test_apply_rejects_other_clip(make_clip):
    with pytest.raises(ValueError):
        apply_alignment(make_clip(9, 48, 64), plan_alignment(9, 32, 64))
