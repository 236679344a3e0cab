from fractions import Fraction

import numpy as np
import pytest

from hetcache_cli.errors import InputError
from hetcache_cli.io.video import read_video, write_video


@pytest.mark.parametrize("fps", [12.5, 24.0])
def test_lossless_round_trip_keeps_frames_size_fps(tmp_path, make_clip, fps):
    frames = make_clip(9, 48, 64)
    out = write_video(tmp_path / "clip.mp4", frames, fps, lossless=True)
    clip = read_video(out)
    assert clip.frames.shape == frames.shape and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(fps)
    assert np.abs(clip.frames.astype(int) - frames).max() <= 2
    assert clip.path == out


def test_default_write_keeps_non_multiple_of_16_size(tmp_path, make_clip):
    # 40x24 is not a multiple of imageio's default macro block (16): must not be resized.
    frames = make_clip(9, 24, 40)
    clip = read_video(write_video(tmp_path / "clip.mp4", frames, 16))
    assert clip.frames.shape == frames.shape
    assert np.abs(clip.frames[:, 8:, 8:].astype(int) - frames[:, 8:, 8:]).mean() < 6


def test_ntsc_fps_is_exact(tmp_path, make_clip):
    fps = float(Fraction(30000, 1001))
    clip = read_video(write_video(tmp_path / "clip.mp4", make_clip(5), fps, lossless=True))
    assert clip.fps == pytest.approx(fps, abs=1e-9)


def test_odd_size_is_padded_for_yuv420p(tmp_path, make_clip):
    frames = make_clip(5, 47, 63)
    clip = read_video(write_video(tmp_path / "clip.mp4", frames, 24, crf=0))
    assert clip.frames.shape == (5, 48, 64, 3)
    # The padding repeats the last column/row.
    assert np.abs(clip.frames[:, :47, 63].astype(int) - frames[:, :, 62]).mean() < 4


def test_max_frames(tmp_path, make_clip):
    path = write_video(tmp_path / "clip.mp4", make_clip(9), 24, lossless=True)
    assert read_video(path, max_frames=4).frames.shape[0] == 4


def _frames_then(exc, frames):
    yield frames[0]
    yield frames[1]
    raise exc


@pytest.mark.parametrize("exc", [RuntimeError("model crashed"), KeyboardInterrupt()])
def test_failed_write_leaves_nothing(tmp_path, make_clip, ls, exc):
    frames = make_clip(5)
    with pytest.raises(type(exc)):
        write_video(tmp_path / "out.mp4", _frames_then(exc, frames), 24)
    assert ls(tmp_path) == []


def test_bad_frame_midway_keeps_previous_file(tmp_path, make_clip, ls):
    frames = make_clip(5)
    out = write_video(tmp_path / "out.mp4", frames, 24)
    before = out.read_bytes()
    bad = [frames[0], frames[1], frames[2].astype(np.float32)]
    with pytest.raises(ValueError, match="frame 2"):
        write_video(out, iter(bad), 24)
    assert out.read_bytes() == before
    assert ls(tmp_path) == ["out.mp4"]


def test_write_rejects_bad_options(tmp_path, make_clip):
    frames = make_clip(5)
    with pytest.raises(InputError, match=r"\.avi"):
        write_video(tmp_path / "out.avi", frames, 24)
    with pytest.raises(InputError, match="crf 60"):
        write_video(tmp_path / "out.mp4", frames, 24, crf=60)
    with pytest.raises(ValueError, match="shape"):
        write_video(tmp_path / "out.mp4", frames[..., 0], 24)
    assert list(tmp_path.iterdir()) == []


def test_read_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(InputError, match="nope.mp4 does not exist"):
        read_video(missing)
    with pytest.raises(InputError, match="is a folder"):
        read_video(tmp_path)
    junk = tmp_path / "junk.mp4"
    junk.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError, match="cannot read video .*junk.mp4"):
        read_video(junk)
