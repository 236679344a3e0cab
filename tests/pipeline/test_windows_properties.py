"""Window plans over any clip length and valid setting (hypothesis): every frame owned exactly once,
every model run 4k+1 frames, overlaps as documented, and invalid settings named with the fix."""

from hypothesis import given, settings
from hypothesis import strategies as st

from hetcache_cli.pipeline.windows import MIN_WINDOW_FRAMES, check_window_settings, owned_frames, plan_windows

PROPERTY = settings(max_examples=150, deadline=None)  # pure integer arithmetic: milliseconds per example

window_frames = st.integers(1, 30).map(lambda k: 4 * k + 1)


@st.composite
def valid_settings(draw):
    frames = draw(window_frames)
    overlap = draw(st.integers(0, frames - 1))
    return frames, overlap


@PROPERTY
@given(total=st.integers(1, 600), setting=valid_settings(), blend_frames=st.integers(0, 8))
def test_every_frame_is_owned_by_exactly_one_window(total, setting, blend_frames):
    frames, overlap = setting
    windows = plan_windows(total, frames, overlap, blend_frames)
    owner = [None] * total
    for i, w in enumerate(windows):
        end = w.start + owned_frames(windows, i)
        for f in range(w.start, end):
            assert owner[f] is None, f"frame {f} owned by windows {owner[f]} and {i}"
            owner[f] = i
    assert None not in owner
    assert sum(owned_frames(windows, i) for i in range(len(windows))) == total


@PROPERTY
@given(total=st.integers(1, 600), setting=valid_settings(), blend_frames=st.integers(0, 8))
def test_windows_are_4k_plus_1_cover_the_clip_and_move_forward(total, setting, blend_frames):
    frames, overlap = setting
    windows = plan_windows(total, frames, overlap, blend_frames)
    assert windows[0].start == 0 and windows[-1].stop == total
    assert [w.index for w in windows] == list(range(len(windows)))
    for w in windows:
        assert (w.model_frames - 1) % 4 == 0 and w.model_frames >= MIN_WINDOW_FRAMES
        assert 1 <= w.frames <= frames
        assert w.pad >= 0 and w.new > 0
    if len(windows) > 1:
        # only a clip shorter than one window is padded; the others are cut to 4k+1 exactly
        assert all(w.pad == 0 for w in windows)
    for prev, w in zip(windows, windows[1:]):
        assert prev.start < w.start and prev.stop < w.stop
        assert w.shared == prev.stop - w.start


@PROPERTY
@given(total=st.integers(1, 600), setting=valid_settings(), blend_frames=st.integers(0, 8))
def test_overlap_rules(total, setting, blend_frames):
    frames, overlap = setting
    windows = plan_windows(total, frames, overlap, blend_frames)
    blend = min(blend_frames, overlap // 2)
    assert windows[0].shared == windows[0].known == 0
    for i, w in enumerate(windows[1:], start=1):
        last = i == len(windows) - 1
        # the planned overlap; the last window may start earlier, to end at the clip's last frame
        assert w.shared == overlap or (last and w.shared > overlap)
        assert w.blend == blend and 0 <= w.known <= w.shared
        assert 2 * w.blend <= w.shared  # cross-faded frames are at most half of the shared ones


@PROPERTY
@given(frames=st.integers(-3, 130), overlap=st.integers(-5, 140))
def test_settings_are_valid_exactly_when_documented(frames, overlap):
    problem = check_window_settings(frames, overlap)
    valid = frames >= MIN_WINDOW_FRAMES and (frames - 1) % 4 == 0 and 0 <= overlap < frames
    assert (problem is None) == valid
    if problem is not None:
        assert "\n" not in problem and ("use --window-frames" in problem or "use --window-overlap" in problem)
