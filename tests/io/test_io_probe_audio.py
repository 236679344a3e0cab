"""Exact frame rates and audio streams (io/probe.py), audio muxed into outputs (io/audio.py), lossless RGB."""

import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from hetcache_cli.errors import HetcacheError
from hetcache_cli.io.audio import plan_audio, write_video_with_audio
from hetcache_cli.io.probe import probe_media, snap_rate
from hetcache_cli.io.video import read_video, write_video

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args):
    subprocess.run([FFMPEG, "-y", "-hide_banner", "-loglevel", "error", *map(str, args)], check=True)


def lavfi_clip(path: Path, rate: str = "30000/1001", frames: int = 12, audio: str | None = "aac", size="96x64"):
    seconds = frames / float(Fraction(rate))
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds:.4f}"]
    args += ["-frames:v", frames, "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", audio]
    ffmpeg(*args, path)
    return path


@pytest.mark.parametrize("rate, suffix", [("30000/1001", ".mp4"), ("30000/1001", ".mkv"), ("25", ".mp4"), ("24000/1001", ".mov")])
def test_probe_reads_the_exact_rate(tmp_path, rate, suffix):
    info = probe_media(lavfi_clip(tmp_path / f"c{suffix}", rate=rate, audio=None))
    assert info.rate == Fraction(rate) and not info.vfr and info.packets == 12 and info.audio == []


def test_probe_lists_audio_streams(tmp_path):
    info = probe_media(lavfi_clip(tmp_path / "a.mp4"))
    (a,) = info.audio
    assert (a.index, a.codec, a.sample_rate) == (0, "aac", 48000)
    assert a.duration_s == pytest.approx(12 * 1001 / 30000, abs=0.05)


def test_probe_detects_a_variable_rate(tmp_path):
    path = tmp_path / "vfr.mp4"
    # 15 frames at 30 fps, then 15 at 15 fps
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30", "-frames:v", 30,
           "-vf", "setpts='if(lt(N,15),N/30,0.5+(N-15)/15)/TB'", "-fps_mode", "passthrough", "-c:v", "libx264", path)  # fmt: skip
    info = probe_media(path)
    assert info.vfr and info.max_frame_s > 1.5 * info.min_frame_s
    assert 19 < float(info.rate) < 22  # the average: 29 frame steps over ~1.43 s
    clip = read_video(path, rate=info.rate, resample=True)
    assert clip.rate == info.rate and 26 <= clip.num_frames <= 32


def test_probe_of_a_non_video_is_none(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"not a video")
    assert probe_media(bad) is None


def test_snap_rate():
    assert snap_rate(29.97) == Fraction(30000, 1001) and snap_rate(25.01) == 25 and snap_rate(12.5) == Fraction(25, 2)
    assert snap_rate(Fraction(31, 3)) == Fraction(31, 3)


def test_rational_rate_survives_write_and_read(tmp_path, make_clip):
    rate = Fraction(30000, 1001)
    path = write_video(tmp_path / "r.mp4", make_clip(5), rate, crf=18)
    assert probe_media(path).rate == rate
    assert read_video(path, rate=probe_media(path).rate).rate == rate


@pytest.mark.parametrize("shape", [(4, 48, 64), (3, 31, 45)])
def test_lossless_is_bit_exact_rgb_at_any_size(tmp_path, shape):
    frames = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = read_video(write_video(tmp_path / "l.mp4", frames, 8, lossless=True))
    assert np.array_equal(out.frames, frames)


def test_audio_copied_with_the_video(tmp_path, make_clip):
    source = lavfi_clip(tmp_path / "src.mp4")
    info = probe_media(source)
    plan = plan_audio(info, tmp_path / "o.mp4")
    assert plan.reencode == [] and plan.messages == []
    out = write_video_with_audio(tmp_path / "o.mp4", make_clip(12, 64, 96), info.rate, source, plan, crf=18)
    got = probe_media(out)
    assert got.rate == info.rate and [a.codec for a in got.audio] == ["aac"]
    assert got.audio[0].duration_s == pytest.approx(info.audio[0].duration_s, abs=1e-6)  # the same packets
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_audio_the_container_cannot_hold_is_reencoded(tmp_path, make_clip):
    source = lavfi_clip(tmp_path / "src.mkv", audio="libvorbis")
    info = probe_media(source)
    plan = plan_audio(info, tmp_path / "o.mp4")
    assert plan.reencode == [0] and "re-encoded to AAC" in plan.messages[0]
    out = write_video_with_audio(tmp_path / "o.mp4", make_clip(12, 64, 96), info.rate, source, plan, crf=18)
    assert [a.codec for a in probe_media(out).audio] == ["aac"]
    kept = write_video_with_audio(tmp_path / "o.mkv", make_clip(12, 64, 96), info.rate, source,
                                  plan_audio(info, tmp_path / "o.mkv"), crf=18)  # fmt: skip
    assert [a.codec for a in probe_media(kept).audio] == ["vorbis"]


def test_no_audio_and_trimmed_audio(tmp_path, make_clip):
    source = lavfi_clip(tmp_path / "src.mp4", frames=24)
    info = probe_media(source)
    dropped = plan_audio(info, tmp_path / "a.mp4", keep=False)
    assert dropped.streams == [] and dropped.dropped == 1
    out = write_video_with_audio(tmp_path / "a.mp4", make_clip(6, 64, 96), info.rate, source, dropped, crf=18)
    assert probe_media(out).audio == []
    cut = plan_audio(info, tmp_path / "b.mp4", duration_s=6 * 1001 / 30000)
    out = write_video_with_audio(tmp_path / "b.mp4", make_clip(6, 64, 96), info.rate, source, cut, crf=18)
    assert probe_media(out).audio[0].duration_s == pytest.approx(6 * 1001 / 30000, abs=1 / 30)


def test_a_failed_mux_leaves_nothing(tmp_path, make_clip):
    source = lavfi_clip(tmp_path / "src.mp4")
    plan = plan_audio(probe_media(source), tmp_path / "o.mp4")
    source.write_bytes(b"gone")  # the audio cannot be read any more
    with pytest.raises(HetcacheError, match="could not add the audio"):
        write_video_with_audio(tmp_path / "o.mp4", make_clip(12, 64, 96), 30, source, plan, crf=18)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.mp4"]
