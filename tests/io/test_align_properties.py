"""Alignment plans over any source size (hypothesis): sizes are multiples of 16 of at least 32, within
the pixel budget, as close to the source as the rule allows; frames are only ever trimmed at the end;
a size that cannot work is an input error that names the fix."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hetcache_cli.errors import InputError
from hetcache_cli.io.align import apply_alignment, plan_alignment

PROPERTY = settings(max_examples=150, deadline=None)
Q = 16

sides = st.integers(1, 4000)
areas = st.one_of(st.none(), st.integers(32 * 32, 1920 * 1088))


@PROPERTY
@given(src_h=sides, src_w=sides, max_area=areas)
def test_auto_size_is_a_multiple_of_16_within_the_budget(src_h, src_w, max_area):
    try:
        plan = plan_alignment(9, src_h, src_w, max_area=max_area)
    except InputError as exc:
        # only a source that rounds below 32 pixels on a side, or a budget that squeezes it there, fails
        message = str(exc)
        assert "below the minimum 32x32" in message and ("--width/--height" in message or "max_area" in message)
        return
    assert plan.height % Q == 0 and plan.width % Q == 0
    assert plan.height >= 2 * Q and plan.width >= 2 * Q
    scaled = max_area is not None and src_h * src_w > max_area
    if scaled:
        assert plan.height * plan.width <= max_area
    else:  # the nearest multiples of 16 (half a step away), or a step down where those overflow the budget
        near = abs(plan.height - src_h) <= Q / 2 and abs(plan.width - src_w) <= Q / 2
        assert near or (
            max_area is not None and plan.height * plan.width <= max_area
            and abs(plan.height - src_h) < Q and abs(plan.width - src_w) < Q
        )  # fmt: skip
    assert plan.resized == ((plan.height, plan.width) != (src_h, src_w))
    assert (plan.resize_message is not None) == plan.resized


@PROPERTY
@given(src_h=st.integers(2, 250).map(lambda k: k * Q), src_w=st.integers(2, 250).map(lambda k: k * Q))
def test_a_conforming_source_is_never_resized(src_h, src_w):
    plan = plan_alignment(5, src_h, src_w, max_area=src_h * src_w)
    assert (plan.height, plan.width, plan.resized, plan.messages) == (src_h, src_w, False, [])


@PROPERTY
@given(src_h=sides, src_w=sides, height=st.integers(1, 2000), width=st.integers(1, 2000))
def test_requested_sizes_are_kept_or_refused_with_the_fix(src_h, src_w, height, width):
    valid = height % Q == 0 and width % Q == 0 and height >= 2 * Q and width >= 2 * Q
    if not valid:
        with pytest.raises(InputError, match="use --(height|width) "):
            plan_alignment(5, src_h, src_w, height=height, width=width)
        return
    plan = plan_alignment(5, src_h, src_w, height=height, width=width)
    assert (plan.height, plan.width) == (height, width)


@PROPERTY
@given(src_frames=st.integers(1, 200), data=st.data())
def test_frames_are_trimmed_only_at_the_end(src_frames, data):
    frames = data.draw(st.one_of(st.none(), st.integers(-3, src_frames + 5)))
    if frames is not None and not 1 <= frames <= src_frames:
        with pytest.raises(InputError, match="use --frames"):
            plan_alignment(src_frames, 64, 64, frames=frames)
        return
    plan = plan_alignment(src_frames, 64, 64, frames=frames)
    used = src_frames if frames is None else frames
    assert (plan.frames, plan.trimmed_frames, plan.src_frames) == (used, src_frames - used, src_frames)
    assert bool(plan.trimmed_frames) == any("--frames" in m for m in plan.messages)


@settings(max_examples=25, deadline=None)  # resizes pixels
@given(
    src=st.tuples(st.integers(1, 6), st.integers(8, 90), st.integers(8, 90)),
    max_area=st.integers(32 * 32, 64 * 96),
    keep=st.integers(1, 6),
)
def test_applied_plan_gives_the_planned_shape(src, max_area, keep):
    src_frames, src_h, src_w = src
    keep = min(keep, src_frames)
    try:
        plan = plan_alignment(src_frames, src_h, src_w, frames=keep, max_area=max_area)
    except InputError:
        return
    clip = np.random.default_rng(0).integers(0, 256, (src_frames, src_h, src_w, 3), dtype=np.uint8)
    out = apply_alignment(clip, plan)
    assert out.shape == (keep, plan.height, plan.width, 3) and out.dtype == np.uint8
    if not plan.resized:
        assert np.array_equal(out, clip[:keep])
