"""`hetcache mask` end to end: box keyframes, outputs, preview, post-processing flags, bad input."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.io.mask import load_mask
from hetcache_cli.io.video import read_video
from hetcache_cli.io.boxes import box_mask
from hetcache_cli.mask.post import postprocess
from hetcache_cli.spec.prompts import Box

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def read_mask_video(path):
    clip = read_video(path)
    values = np.unique(clip.frames)
    assert set(values.tolist()) <= {0, 255}, values  # lossless: exactly black and white
    assert (clip.frames[..., 0] == clip.frames[..., 2]).all()
    return clip, clip.frames[..., 0] == 255


def assert_usage_error(result, fragment, out_dir):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert list(out_dir.iterdir()) == []  # nothing written, no temporary file left


def test_box_keyframes_to_lossless_video(small_clip, out_dir):
    out = out_dir / "mask.mp4"
    r = invoke("mask", small_clip["video"], "--box", "4,6,20,30@0", "--box", "36,10,60,26@8", "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["frames"], summary["width"], summary["height"], summary["kind"]) == (9, 64, 64, "video")
    assert summary["method"] == "boxes" and summary["empty_frames"] == []
    clip, mask = read_mask_video(out)
    assert clip.fps == pytest.approx(8.0) and mask.shape == (9, 64, 64)
    expect = np.zeros((9, 64, 64), bool)
    expect[0, 6:30, 4:20] = True  # keyframe 0
    expect[4, 8:28, 20:40] = True  # halfway: (20, 8, 40, 28)
    expect[8, 10:26, 36:60] = True  # keyframe 8
    for f in (0, 4, 8):
        assert np.array_equal(mask[f], expect[f]), f
    assert np.array_equal(mask, box_mask([Box(4, 6, 20, 30, 0), Box(36, 10, 60, 26, 8)], 9, 64, 64))
    # hetcache edit reads it as it is.
    assert np.array_equal(load_mask(out, 9, (64, 64)), mask)


def test_png_folder_output(small_clip, out_dir):
    out = out_dir / "frames"
    r = invoke("mask", small_clip["video"], "--box", "10,12,30,40", "-o", out, "--quiet")
    assert r.exit_code == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:05d}.png" for i in range(9)]
    first = cv2.imread(str(out / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert first.dtype == np.uint8 and first.shape == (64, 64)
    assert np.array_equal(load_mask(out, 9, (64, 64)), box_mask([Box(10, 12, 30, 40)], 9, 64, 64))
    assert [p.name for p in out_dir.iterdir()] == ["frames"]  # the temporary folder is gone

    again = invoke("mask", small_clip["video"], "--box", "1,2,3,4", "-o", out, "--quiet")
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.stderr
    (out / "notes.txt").write_text("mine")
    refused = invoke("mask", small_clip["video"], "--box", "1,2,3,4", "-o", out, "--overwrite")
    assert refused.exit_code == 2 and "holds other files (notes.txt" in refused.stderr
    (out / "notes.txt").unlink()
    replaced = invoke("mask", small_clip["video"], "--box", "1,2,3,4", "-o", out, "--overwrite", "--quiet")
    assert replaced.exit_code == 0, replaced.stderr
    assert load_mask(out, 9, (64, 64)).sum() == 9 * 2 * 2


@pytest.mark.parametrize(
    "flags",
    [("--dilate", 3), ("--hull",), ("--as-box", "--dilate", 2), ("--invert",), ("--hull", "--as-box", "--invert")],
)
def test_post_processing_flags(small_clip, out_dir, flags):
    out = out_dir / "m.mp4"
    r = invoke("mask", small_clip["video"], "--box", "10,12,30,40@0", "--box", "30,12,50,40@8", "-o", out, *flags)
    assert r.exit_code == 0, r.stderr
    _, mask = read_mask_video(out)
    raw = box_mask([Box(10, 12, 30, 40, 0), Box(30, 12, 50, 40, 8)], 9, 64, 64)
    dilate_px = int(flags[flags.index("--dilate") + 1]) if "--dilate" in flags else 0
    expect = postprocess(raw, dilate_px, "--hull" in flags, "--as-box" in flags, "--invert" in flags)
    assert np.array_equal(mask, expect)
    if flags == ("--as-box", "--dilate", 2):
        assert np.array_equal(mask[0], np.pad(np.ones((32, 24), bool), ((10, 22), (8, 32))))  # 8..31 x 10..41
    if "--invert" in flags:
        assert mask[0, 0, 0] and not mask[0, 20, 20]


def test_preview_tints_the_mask(small_clip, out_dir):
    out, preview = out_dir / "m.mp4", out_dir / "check.mp4"
    r = invoke("mask", small_clip["video"], "--box", "8,8,40,40", "-o", out, "--preview", preview, "--quiet")
    assert r.exit_code == 0, r.stderr
    clip = read_video(preview)
    source = read_video(small_clip["video"]).frames.astype(int)
    assert clip.frames.shape == (9, 64, 64, 3) and clip.fps == pytest.approx(8.0)
    diff = np.abs(clip.frames.astype(int) - source).mean(axis=-1)
    inside, outside = diff[:, 12:36, 12:36], diff[:, 48:, 48:]
    assert inside.mean() > 40 and outside.mean() < 4
    tinted = clip.frames[:, 12:36, 12:36].astype(int)
    assert (tinted[..., 2] > tinted[..., 0]).mean() > 0.9  # blue over the white ball and dark background


def test_clipped_box_warns_once_on_stderr(small_clip, out_dir):
    r = invoke("mask", small_clip["video"], "--box", "-5,40,30,80", "-o", out_dir / "m.mp4")
    assert r.exit_code == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == ["WARNING: --box -5,40,30,80@0 extends past the 64x64 frame; clipped to 0,40,30,64@0"]
    _, mask = read_mask_video(out_dir / "m.mp4")
    assert mask[0, 40:64, 0:30].all() and mask.sum() == 9 * 24 * 30


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--box", "70,10,90,30"), "--box 70,10,90,30@0 lies outside the 64x64 frame"),
        (("--box", "10,10,30,30@9"), "frame 9 is beyond the clip, which has 9 frames (0..8)"),
        (("--box", "10,10,30"), "has 3 number(s), not 4; use x0,y0,x1,y1[@FRAME]"),
        (("--box", "30,10,10,30"), "x1 (10) must be greater than x0 (30)"),
        (("--box", "10,10,30,30@x"), "frame 'x' is not a frame index"),
        (("--box", "1,1,9,9", "--box", "2,2,9,9"), "frame 0 already has the box"),
        ((), "no prompt: give --box"),
        (("--negative", "5,5"), "frame 0 has no --point or --box"),
        (("--track",), "no prompt"),
        (("--box", "1,1,9,9", "--tracker", "x/y"), "--tracker is used only when SAM 2 tracks"),
        (("--box", "1,1,9,9", "--dilate", -1), "--dilate -1 is negative"),
        (("--box", "1,1,9,9", "-o", "OUT/m.png"), "give a video (m.mp4) or a folder name (m_frames)"),
        (("--box", "1,1,9,9", "--preview", "OUT/p.gif"), "--preview"),
        (("--point", "30,30", "--tracker", "nobody/no-such-sam2"), "`hf download nobody/no-such-sam2`"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(small_clip, out_dir, args, fragment):
    args = [str(a).replace("OUT", str(out_dir)) for a in args]
    if "-o" not in args:
        args += ["-o", str(out_dir / "m.mp4")]
    r = invoke("mask", small_clip["video"], *args)
    assert_usage_error(r, fragment, out_dir)


def test_missing_video(out_dir):
    assert_usage_error(invoke("mask", out_dir.parent / "nope.mp4", "--box", "1,1,5,5", "-o", out_dir / "m.mp4"),
                       "nope.mp4 does not exist", out_dir)  # fmt: skip
