"""The output is the user's clip: source size, frame count, exact rate and audio kept, only the masked region
changed (crop and stitch), on a 1280x720 clip at 29.97 fps with an AAC track and the embedded model."""

import json
import subprocess
from fractions import Fraction

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.io.crop import mask_box
from hetcache_cli.io.mask import load_mask
from hetcache_cli.io.paste import paste_region
from hetcache_cli.io.probe import probe_media
from hetcache_cli.io.synthetic import MovingShape, SceneSpec, render
from hetcache_cli.io.video import read_video, write_video

runner = CliRunner()
RATE = Fraction(30000, 1001)
FRAMES, H, W = 5, 720, 1280


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def hd_clip(tmp_path_factory):
    """5 frames of 1280x720 at 30000/1001 fps with a small white ball, an AAC sine track, a mask of its path."""
    root = tmp_path_factory.mktemp("hd")
    ball = MovingShape("ball", "white", 16, (300, 480), (0.5, 4.0))
    frames, cover = render(SceneSpec(FRAMES, H, W, pan=(0.2, 0.5), shapes=[ball], texture_seed=4))
    silent, video = root / "silent.mp4", root / "clip.mp4"
    write_video(silent, frames, RATE, crf=10)
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", silent, "-f", "lavfi", "-i",
         f"sine=frequency=440:sample_rate=48000:duration={float(FRAMES / RATE):.4f}", "-map", "0:v", "-map", "1:a",
         "-c:v", "copy", "-c:a", "aac", video],
        check=True,
    )  # fmt: skip
    mask = root / "mask.png"
    path = cv2.dilate((cover.max(axis=0) > 0.05).astype(np.uint8), np.ones((7, 7), np.uint8)) * 255
    cv2.imwrite(str(mask), path)
    return {"video": video, "mask": mask, "ball": cover > 0.5, "root": root}


def edit(clip, out, *extra):
    r = invoke("edit", clip["video"], "--mask", clip["mask"], "--prompt", "a red ball", "-o", out, "--crf", 0,
               "--crop-min-size", 128, "--max-area", 160 * 288, "--json", *extra)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return json.loads(out.with_name(out.stem + ".stats.json").read_text())


@pytest.fixture(scope="module")
def auto_edit(hd_clip):
    out = hd_clip["root"] / "auto.mp4"
    return out, edit(hd_clip, out, "--steps", 6, "--cache", "none")


@pytest.mark.slow
def test_output_keeps_size_frames_rate_and_audio(hd_clip, auto_edit):
    out, stats = auto_edit
    src, got = probe_media(hd_clip["video"]), probe_media(out)
    clip = read_video(out)
    assert clip.frames.shape == (FRAMES, H, W, 3)
    assert got.rate == src.rate == RATE and not got.vfr
    assert [a.codec for a in got.audio] == [a.codec for a in src.audio] == ["aac"]
    assert abs(got.audio[0].duration_s - src.audio[0].duration_s) <= 1 / RATE
    assert stats["settings"]["rate"] == "30000/1001" and (stats["settings"]["width"], stats["settings"]["height"]) == (W, H)
    assert stats["settings"]["audio"]["streams"][0]["action"] == "copy"


@pytest.mark.slow
def test_pixels_outside_the_paste_band_are_the_sources_and_the_ball_turns_red(hd_clip, auto_edit):
    out, _ = auto_edit
    edited = read_video(out).frames.astype(int)
    source = read_video(hd_clip["video"]).frames.astype(int)
    mask = load_mask(hd_clip["mask"], FRAMES, (H, W))
    keep = ~paste_region(mask, 4, 4)
    assert keep.mean() > 0.99
    assert np.array_equal(edited[keep], source[keep])  # --crf 0: bit for bit
    r, g, b = edited[hd_clip["ball"]].mean(axis=0)
    assert r > max(g, b) + 40, (r, g, b)  # the white ball is red now
    assert source[hd_clip["ball"]].mean(axis=0).min() > 200


@pytest.mark.slow
def test_the_mask_stays_inside_the_crop_in_every_frame(hd_clip, auto_edit):
    _, stats = auto_edit
    mask = load_mask(hd_clip["mask"], FRAMES, (H, W))
    (window,) = stats["windows"]
    x0, y0, x1, y1 = window["crop"]["box"]
    for t in range(FRAMES):
        mx0, my0, mx1, my1 = mask_box(mask[t])
        assert x0 <= mx0 and y0 <= my0 and mx1 <= x1 and my1 <= y1


@pytest.mark.parametrize("windows", [(), ("--window-frames", 9, "--window-overlap", 4)])
def test_a_box_moving_across_the_frame_never_leaves_its_windows_crop(tmp_path, windows):
    """A mask that crosses the whole frame within one window (or three): every frame's mask lies in its window's crop."""
    video = write_video(tmp_path / "long.mp4", np.full((17, H, W, 3), 90, np.uint8), RATE)
    args = ("edit", video, "--box", "0,330,60,390@0", "--box", "1220,300,1280,360@16", "--prompt", "x",
            "-o", tmp_path / "n.mp4", "--steps", 1, "--crop-min-size", 64, "--max-area", 160 * 288,
            "--window-frames", 17, *windows, "--dry-run", "--json")  # fmt: skip
    r = invoke(*args)
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert len(plan["windows"]) == (3 if windows else 1)
    for w in plan["windows"]:
        x0, y0, x1, y1 = w["crop"]["box"]
        for t in range(w["start"], w["stop"]):
            bx = round(1220 * t / 16)  # the box's left edge on frame t (interpolated keyframes)
            by = round(330 - 30 * t / 16)
            assert x0 <= bx and bx + 60 <= x1 and y0 <= by and by + 60 <= y1, (w["crop"], t)
        assert w["crop"]["model_size"][0] * w["crop"]["model_size"][1] <= 160 * 288


@pytest.mark.slow
def test_auto_crop_costs_fewer_tokens_and_sees_more_pixels_than_full(hd_clip, auto_edit):
    _, auto = auto_edit
    full = edit(hd_clip, hd_clip["root"] / "full.mp4", "--steps", 1, "--cache", "none", "--crop", "full", "--no-audio")
    (wa,), (wf,) = auto["windows"], full["windows"]
    assert wf["crop"]["box"] == [0, 0, W, H] and wf["crop"]["model_size"] == [288, 160]
    assert wa["tokens"] < wf["tokens"]
    assert wa["crop"]["area_scale"] > wf["crop"]["area_scale"]  # model pixels per mask (source) pixel
    assert auto["summary"]["tokens"] == wa["tokens"] == auto["steps"][0]["tokens"]["total"]
    assert probe_media(hd_clip["root"] / "full.mp4").audio == []  # --no-audio
    assert read_video(hd_clip["root"] / "full.mp4").frames.shape == (FRAMES, H, W, 3)


def test_dry_run_prints_crops_working_size_and_tokens(hd_clip, tmp_path):
    args = ("edit", hd_clip["video"], "--mask", hd_clip["mask"], "--prompt", "a red ball", "-o", tmp_path / "n.mp4",
            "--crop-min-size", 128, "--steps", 4, "--dry-run")  # fmt: skip
    r = invoke(*args, "--json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    (w,) = plan["windows"]
    assert (plan["width"], plan["height"], plan["fps"]) == (W, H, "30000/1001")
    mw, mh = w["crop"]["model_size"]
    assert w["tokens"]["total"] == 2 * (mw // 16) * (mh // 16)
    text = invoke(*args)
    assert text.exit_code == 0
    assert f"-> model {mw}x{mh}" in text.stdout and f"tokens    {w['tokens']['total']} total" in text.stdout
    assert "aac (copy)" in text.stdout
    assert list(tmp_path.iterdir()) == []
