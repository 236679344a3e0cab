"""The source streams through the windows: each frame decoded once, one window of full-size frames held,
finished frames written at once, `--resume` decoding from its window, damaged and variable-rate sources
kept in sync with their audio."""

import json
import re
import subprocess
import tracemalloc

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from typer.testing import CliRunner

import hetcache_cli.pipeline.edit as edit_mod
from hetcache_cli.cli.app import app
from hetcache_cli.io.frames import FrameStream
from hetcache_cli.io.probe import probe_media
from hetcache_cli.io.synthetic import MovingShape, SceneSpec, render
from hetcache_cli.io.video import read_video, write_video

runner = CliRunner()
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FRAMES, SIZE = 45, 512  # windows of 9 frames overlapping by 4: 9 windows


@pytest.fixture(scope="module")
def big_frames(tmp_path_factory):
    """A 45-frame 512x512 clip with a small ball and its mask as one PNG: the crop is a fraction of a frame."""
    root = tmp_path_factory.mktemp("stream")
    ball = MovingShape("ball", "white", 10, (250, 240), (0.3, 0.3))
    frames, cover = render(SceneSpec(FRAMES, SIZE, SIZE, shapes=[ball], texture_seed=7))
    video = write_video(root / "clip.mp4", frames, 8, lossless=True)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[230:270, 230:270] = 255
    cv2.imwrite(str(root / "mask.png"), mask)
    return {"video": video, "mask": root / "mask.png", "frames": frames}


def edit(clip, model, out, *extra):
    args = ["edit", clip["video"], "--mask", clip["mask"], "--prompt", "a red ball", "--model", model, "--steps", 1,
            "--cache", "none", "--window-frames", 9, "--window-overlap", 4, "--crop-min-size", 32, "--crf", 0,
            "--max-area", 32 * 32, "-o", out, "--quiet", *extra]  # fmt: skip
    return runner.invoke(app, [str(a) for a in args])


class Counting(FrameStream):
    opened: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        Counting.opened.append(self)


def test_each_frame_is_decoded_once_and_one_window_of_frames_is_held(big_frames, tiny_model_dir, tmp_path, monkeypatch):
    Counting.opened = []
    monkeypatch.setattr(edit_mod, "FrameStream", Counting)
    peak = {}
    run = edit_mod._run_and_write

    def measured(*args, **kwargs):
        tracemalloc.start()
        try:
            return run(*args, **kwargs)
        finally:
            peak["bytes"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

    monkeypatch.setattr(edit_mod, "_run_and_write", measured)
    segments = []

    def writer(path, frames, *args, **kwargs):  # the frames come one at a time, each window's own once
        assert not isinstance(frames, (list, tuple, np.ndarray))
        segments.append(sum(1 for _ in frames))
        return write_video(path, np.zeros((1, 8, 8, 3), np.uint8), *args, **kwargs)

    monkeypatch.setattr(edit_mod, "write_video", writer)
    out = tmp_path / "o.mp4"
    r = edit(big_frames, tiny_model_dir, out)
    assert r.exit_code == 0, r.stderr
    (stream,) = Counting.opened
    assert stream.decoded == FRAMES and stream.position == FRAMES and not stream.filled
    frame_bytes = SIZE * SIZE * 3
    assert segments == [5] * 9  # each window writes the frames no later window touches, at once
    # one window (9 frames), its overlap moved to the front (4), the frame being encoded and what does not
    # grow with the clip (the crop's arrays: the model works at 32x32); the whole clip (45 frames) never is
    assert peak["bytes"] < 25 * frame_bytes, peak["bytes"] / frame_bytes


@pytest.mark.slow
def test_the_streamed_edit_keeps_the_source_outside_the_mask(big_frames, tiny_model_dir, tmp_path):
    out = tmp_path / "o.mp4"
    assert edit(big_frames, tiny_model_dir, out).exit_code == 0
    edited = read_video(out).frames
    assert edited.shape == big_frames["frames"].shape
    outside = np.ones((SIZE, SIZE), bool)
    outside[200:300, 200:300] = False
    assert np.array_equal(edited[:, outside], big_frames["frames"][:, outside])


@pytest.mark.slow
def test_resume_after_window_2_decodes_from_window_3_and_equals_a_whole_run(big_frames, tiny_model_dir, tmp_path,
                                                                             monkeypatch):  # fmt: skip
    whole = tmp_path / "whole.mp4"
    assert edit(big_frames, tiny_model_dir, whole).exit_code == 0

    def stop_after_second(window):
        if window.index == 1:
            raise KeyboardInterrupt

    out = tmp_path / "o.mp4"
    with monkeypatch.context() as m:
        m.setattr(edit_mod, "_window_finished", stop_after_second)
        r = edit(big_frames, tiny_model_dir, out)
    assert r.exit_code == 130 and "2 of 9 windows are kept" in r.stderr and not out.exists()
    Counting.opened = []
    monkeypatch.setattr(edit_mod, "FrameStream", Counting)
    r = edit(big_frames, tiny_model_dir, out, "--resume")
    assert r.exit_code == 0, r.stderr
    (stream,) = Counting.opened
    third_start = 10  # windows start at 0, 5, 10, ...: the third begins with its overlap with the second
    assert stream.decoded == FRAMES - third_start and stream.position == FRAMES
    assert np.array_equal(read_video(out).frames, read_video(whole).frames)


def _with_audio(tmp_path, name: str, video_args: list, frames: int, seconds: float):
    """`frames` of testsrc2 at 24 fps encoded with `video_args`, and `seconds` of a sine in AAC."""
    path = tmp_path / name
    subprocess.run(
        [FFMPEG, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=24", "-f", "lavfi",
         "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds:.4f}", "-frames:v", str(frames),
         *video_args, "-c:a", "aac", path],
        check=True,
    )  # fmt: skip
    return path


def _durations(path) -> tuple[float, float]:
    info = probe_media(path)
    return info.duration_s, info.audio[0].duration_s


def _box_edit(video, model, out):
    args = ["edit", video, "--box", "20,10,60,50", "--prompt", "a red ball", "--model", model, "--steps", 1,
            "--cache", "none", "--crf", 0, "-o", out, "--quiet"]  # fmt: skip
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_a_damaged_file_says_which_frames_and_stays_in_sync(tiny_model_dir, tmp_path):
    source = _with_audio(tmp_path, "src.mp4", ["-c:v", "libx264", "-g", "12"], 61, 61 / 24)
    data = bytearray(source.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)  # 4 KB zeroed mid-stream
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "o.mp4"
    r = _box_edit(damaged, tiny_model_dir, out)
    assert r.exit_code == 0, r.stderr
    stats = json.loads((tmp_path / "o.stats.json").read_text())
    (msg,) = [m for m in stats["settings"]["alignment"] if "could not be decoded" in m]
    count = int(re.match(r"(\d+) of the 61 frames", msg).group(1))
    assert 0 < count == stats["summary"]["filled_frames"] and re.search(r"frames \d+(-\d+)?", msg)
    assert read_video(out).num_frames == 61
    video_s, audio_s = _durations(out)
    assert video_s == pytest.approx(61 / 24) and abs(audio_s - video_s) < 1 / 24


@pytest.mark.slow
def test_a_variable_rate_file_keeps_its_duration_and_audio(tiny_model_dir, tmp_path):
    # 25 frames lasting 1/24 and 1/12 s in turn: 1.54 s at an average of 16 fps
    vfr = ["-vf", "setpts='(floor(N/2)*3+mod(N,2))/24/TB'", "-fps_mode", "passthrough", "-c:v", "libx264"]
    source = _with_audio(tmp_path, "vfr.mp4", vfr, 25, 37.5 / 24)
    src_video_s = probe_media(source).duration_s
    out = tmp_path / "o.mp4"
    r = _box_edit(source, tiny_model_dir, out)
    assert r.exit_code == 0, r.stderr
    info = probe_media(out)
    assert info.rate == 16 and not info.vfr
    assert abs(info.duration_s - src_video_s) <= 1 / 16
    assert abs(info.audio[0].duration_s - info.duration_s) <= 1 / 16
