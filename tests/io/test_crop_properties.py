"""Crop plans over random masks and windows (hypothesis): every mask pixel, grown by the paste-back
band, lies inside its window's crop; crops stay in the frame; working sizes are multiples of 16 within
the pixel budget."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hetcache_cli.io.crop import crop_mask, plan_crops

PROPERTY = settings(max_examples=80, deadline=None)
Q = 16


@st.composite
def masked_clips(draw):
    """A bool mask [F, H, W] of a few random boxes (some frames may be empty) and its windows' frame ranges."""
    frames = draw(st.integers(1, 12))
    height, width = draw(st.integers(20, 160)), draw(st.integers(20, 160))
    mask = np.zeros((frames, height, width), dtype=bool)
    for _ in range(draw(st.integers(1, 4))):
        f0 = draw(st.integers(0, frames - 1))
        f1 = draw(st.integers(f0 + 1, frames))
        y0, x0 = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
        y1, x1 = draw(st.integers(y0 + 1, height)), draw(st.integers(x0 + 1, width))
        mask[f0:f1, y0:y1, x0:x1] = True
    cuts = sorted(draw(st.sets(st.integers(1, frames - 1), max_size=3))) if frames > 1 else []
    bounds = [0, *cuts, frames]
    ranges = list(zip(bounds, bounds[1:]))
    return mask, ranges


def _grown_box(window_mask, margin):
    ys, xs = np.nonzero(window_mask.any(axis=0))
    height, width = window_mask.shape[1:]
    return (max(0, xs.min() - margin), max(0, ys.min() - margin), min(width, xs.max() + 1 + margin),
            min(height, ys.max() + 1 + margin))  # fmt: skip


@PROPERTY
@given(
    clip=masked_clips(),
    context=st.floats(1.0, 4.0),
    min_size=st.integers(0, 200),
    max_area=st.integers(32 * 32, 200 * 200),
    margin=st.integers(0, 12),
)
def test_every_mask_pixel_is_inside_its_windows_crop(clip, context, min_size, max_area, margin):
    mask, ranges = clip
    _, height, width = mask.shape
    crops = plan_crops(mask, ranges, "auto", context=context, min_size=min_size, max_area=max_area, margin=margin)
    assert len(crops) == len(ranges)
    for (a, b), crop in zip(ranges, crops):
        assert 0 <= crop.x0 < crop.x1 <= width and 0 <= crop.y0 < crop.y1 <= height
        window = mask[a:b]
        if window.any():
            assert crop.contains(_grown_box(window, margin))  # the paste-back band too
            # cropping keeps every mask pixel: the pixels outside the box are all False
            outside = window.copy()
            outside[:, crop.y0 : crop.y1, crop.x0 : crop.x1] = False
            assert not outside.any()
        assert crop.width % Q == 0 and crop.height % Q == 0
        assert crop.width >= 2 * Q and crop.height >= 2 * Q
        assert crop.width * crop.height <= max_area or (crop.width, crop.height) == (2 * Q, 2 * Q)


@PROPERTY
@given(clip=masked_clips(), size=st.tuples(st.integers(2, 10), st.integers(2, 10)))
def test_requested_and_full_sizes_are_kept(clip, size):
    mask, ranges = clip
    _, height, width = mask.shape
    work = (size[0] * Q, size[1] * Q)
    for crop in plan_crops(mask, ranges, "auto", size=work):
        assert (crop.height, crop.width) == work
    for crop in plan_crops(mask, ranges, "full", full_size=work):
        assert (crop.x0, crop.y0, crop.x1, crop.y1) == (0, 0, width, height) and (crop.height, crop.width) == work


@settings(max_examples=25, deadline=None)  # resizes pixels: slower per example
@given(clip=masked_clips(), max_area=st.integers(32 * 32, 96 * 96))
def test_cropped_mask_keeps_the_mask_at_the_working_size(clip, max_area):
    mask, ranges = clip
    for (a, b), crop in zip(ranges, plan_crops(mask, ranges, "auto", max_area=max_area, min_size=0)):
        window = mask[a:b]
        cut = crop_mask(window, crop)
        assert cut.shape == (b - a, crop.height, crop.width)
        assert cut.any(axis=(1, 2)).tolist() == window.any(axis=(1, 2)).tolist()  # no frame's mask vanishes
