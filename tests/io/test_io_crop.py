"""Crop planning around the mask (io/crop.py) and the patches that stitch results back (io/stitch.py)."""

import numpy as np
import pytest

from hetcache_cli.io.crop import (
    MAX_ASPECT, STEADY_RATIO, Crop, crop_frames, crop_mask, mask_box, plan_crops, resize_frames, uncrop,
)  # fmt: skip
from hetcache_cli.io.stitch import Patch, changed_patch, output_region, patched_frame


def moving_square(frames: int, h: int, w: int, side: int, x_from: int, x_to: int, y: int) -> np.ndarray:
    mask = np.zeros((frames, h, w), bool)
    for t in range(frames):
        x = round(x_from + (x_to - x_from) * t / max(1, frames - 1))
        mask[t, y : y + side, x : x + side] = True
    return mask


def frame_boxes(mask):
    return [mask_box(m) for m in mask]


def test_a_mask_moving_across_the_frame_never_leaves_its_windows_crop():
    mask = moving_square(33, 360, 640, 24, 10, 600, 150)  # left edge to right edge
    ranges = [(0, 17), (12, 29), (24, 33)]
    for margin in (0, 14):
        crops = plan_crops(mask, ranges, context=1.5, min_size=64, max_area=96 * 160, margin=margin)
        for crop, (a, b) in zip(crops, ranges):
            for t in range(a, b):
                x0, y0, x1, y1 = mask_box(mask[t])
                grown = (max(0, x0 - margin), max(0, y0 - margin), min(640, x1 + margin), min(360, y1 + margin))
                assert crop.contains(grown), (crop, t, grown)
            # the crop never cuts a masked pixel: the model's mask at the working size covers every one
            assert crop_mask(mask[a:b], crop).any(axis=(1, 2)).all()


def test_one_window_crop_is_the_grown_box_at_its_own_resolution():
    mask = np.zeros((9, 720, 1280), bool)
    mask[:, 300:340, 600:660] = True  # 60 x 40
    (crop,) = plan_crops(mask, [(0, 9)], context=2.0, min_size=64, max_area=480 * 832, margin=10)
    # (60 + 20) x 2 = 160 wide, (40 + 20) x 2 = 120 -> 128 high; the box is taken pixel for pixel
    assert (crop.width, crop.height) == (160, 128) == (crop.src_width, crop.src_height)
    assert crop.scale == 1.0 and crop.contains((590, 290, 670, 350))
    assert abs((crop.x0 + crop.x1) / 2 - 630) <= 1 and abs((crop.y0 + crop.y1) / 2 - 320) <= 1


def test_min_size_aspect_limit_and_max_area():
    mask = np.zeros((5, 720, 1280), bool)
    mask[:, 100:104, 200:1000] = True  # a thin 800 x 4 line
    (crop,) = plan_crops(mask, [(0, 5)], context=1.0, min_size=48, max_area=64 * 64 * 4)
    assert crop.src_width / crop.src_height <= MAX_ASPECT + 0.05
    assert crop.width * crop.height <= 64 * 64 * 4 and crop.width % 16 == 0 and crop.height % 16 == 0
    assert crop.scale < 1  # too large for max_area: scaled down, never up
    small = np.zeros((5, 720, 1280), bool)
    small[:, 10:14, 10:14] = True
    (crop,) = plan_crops(small, [(0, 5)], context=2.0, min_size=100, max_area=480 * 832)
    assert crop.src_width >= 100 and crop.src_height >= 100 and (crop.x0, crop.y0) == (0, 0)  # clamped into the frame


def test_steady_between_windows():
    mask = np.zeros((40, 720, 1280), bool)
    mask[:10, 300:320, 300:320] = True  # a small object, then a large one, then small again
    mask[10:20, 200:500, 250:650] = True
    mask[20:, 300:320, 900:920] = True
    ranges = [(0, 9), (8, 17), (16, 25), (24, 33), (32, 40)]
    crops = plan_crops(mask, ranges, context=1.5, min_size=32, max_area=10**7)
    for a, b in zip(crops, crops[1:]):
        for side in ("src_width", "src_height"):
            assert getattr(b, side) / getattr(a, side) <= STEADY_RATIO * 1.15
            assert getattr(a, side) / getattr(b, side) <= STEADY_RATIO * 1.15
    for crop, (a, b) in zip(crops, ranges):
        assert crop.contains(mask_box(mask[a:b]))


def test_full_mode_is_the_whole_frame_at_the_given_size():
    mask = np.zeros((9, 720, 1280), bool)
    mask[:, 10:20, 10:20] = True
    crops = plan_crops(mask, [(0, 9), (5, 9)], mode="full", full_size=(464, 832))
    assert crops == [Crop(0, 0, 1280, 720, 832, 464)] * 2
    with pytest.raises(ValueError):
        plan_crops(mask, [(0, 9)], mode="tiles")
    small = np.zeros((9, 120, 200), bool)
    small[:, 50:60, 50:60] = True  # min_size 384 > the frame: the auto crop is the whole frame, fitted as full fits it
    assert plan_crops(small, [(0, 9)], full_size=(112, 208)) == [Crop(0, 0, 200, 120, 208, 112)]


def test_explicit_working_size_sets_the_crops_aspect():
    mask = np.zeros((9, 360, 640), bool)
    mask[:, 100:140, 300:340] = True
    (crop,) = plan_crops(mask, [(0, 9)], context=2.0, min_size=32, size=(64, 128))
    assert (crop.width, crop.height) == (128, 64)
    assert crop.src_width == 2 * crop.src_height and crop.contains((300, 100, 340, 140))


def test_crop_and_uncrop_sizes_and_identity_at_scale_one(make_clip):
    frames = make_clip(3, 48, 64)
    crop = Crop(8, 4, 40, 36, 32, 32)
    assert np.array_equal(crop_frames(frames, crop), frames[:, 4:36, 8:40])
    assert np.array_equal(uncrop(crop_frames(frames, crop), crop), frames[:, 4:36, 8:40])
    half = Crop(0, 0, 64, 48, 32, 32)
    assert crop_frames(frames, half).shape == (3, 32, 32, 3) and uncrop(crop_frames(frames, half), half).shape == (3, 48, 64, 3)
    assert resize_frames(frames, (48, 64)) is frames


def test_crop_mask_keeps_a_one_pixel_mask_when_shrinking():
    mask = np.zeros((1, 100, 100), bool)
    mask[0, 51, 37] = True
    small = crop_mask(mask, Crop(0, 0, 100, 100, 32, 32))
    assert small.sum() >= 1 and small[0, 51 * 32 // 100, 37 * 32 // 100]


def test_patches_stitch_back_only_what_changed(make_clip):
    source = make_clip(6, 40, 50)
    edited = np.array(source[1:5, 10:30, 20:45])
    edited[:, 5:8, 3:9] = 0  # a change inside the box
    patch = changed_patch(1, (20, 10, 45, 30), edited, source[1:5, 10:30, 20:45])
    assert patch.box == (23, 15, 29, 18) and patch.frames.shape == (4, 3, 6, 3)
    for t in range(1, 5):
        out = patched_frame(source[t], patch, t)
        expected = source[t].copy()
        expected[15:18, 23:29] = 0
        assert np.array_equal(out, expected)
    region = output_region(source, patch, 0, 6, (0, 0, 50, 40))
    assert np.array_equal(region[0], source[0]) and np.array_equal(region[2], patched_frame(source[2], patch, 2))
    same = changed_patch(0, (0, 0, 10, 10), np.array(source[:2, :10, :10]), source[:2, :10, :10])
    assert same.frames.size == 0 and np.array_equal(patched_frame(source[0], same, 0), source[0])
    assert isinstance(same, Patch) and np.array_equal(output_region(source, same, 0, 2, (0, 0, 10, 10)), source[:2, :10, :10])
