"""Bad input: one line on stderr naming the problem and the fix, exit 2, nothing written."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.io.video import write_video

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_usage_error(result, fragment, out_dir):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not list(out_dir.glob("*.mp4")) and not list(out_dir.glob("*.json"))
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")], list(out_dir.iterdir())


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def edit_args(video, mask, out_dir, *extra):
    return ("edit", video, "--mask", mask, "--prompt", "a red ball", "-o", out_dir / "o.mp4", "--steps", 2, *extra)


def test_missing_video(small_clip, out_dir):
    r = invoke(*edit_args(out_dir.parent / "nope.mp4", small_clip["mask"], out_dir))
    assert_usage_error(r, "nope.mp4", out_dir)


def test_unreadable_video(small_clip, out_dir, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    r = invoke(*edit_args(bad, small_clip["mask"], out_dir))
    assert_usage_error(r, "bad.mp4", out_dir)


def test_missing_mask(small_clip, out_dir):
    r = invoke(*edit_args(small_clip["video"], out_dir.parent / "nomask.png", out_dir))
    assert_usage_error(r, "nomask.png", out_dir)


def test_empty_mask(small_clip, out_dir, tmp_path):
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((64, 64), np.uint8))
    r = invoke(*edit_args(small_clip["video"], empty, out_dir))
    assert_usage_error(r, "empty", out_dir)


def test_full_mask(small_clip, out_dir, tmp_path):
    full = tmp_path / "full.png"
    cv2.imwrite(str(full), np.full((64, 64), 255, np.uint8))
    r = invoke(*edit_args(small_clip["video"], full, out_dir))
    assert_usage_error(r, "whole", out_dir)


def test_mask_video_too_short(small_clip, out_dir, tmp_path):
    short = tmp_path / "short_mask.mp4"
    write_video(short, np.full((3, 64, 64, 3), 255, np.uint8), 8.0)
    r = invoke(*edit_args(small_clip["video"], short, out_dir))
    assert_usage_error(r, "short_mask.mp4", out_dir)


def test_invalid_size(small_clip, out_dir):
    r = invoke(*edit_args(small_clip["video"], small_clip["mask"], out_dir, "--width", 100))
    assert_usage_error(r, "100", out_dir)


def test_more_frames_than_the_video_has(small_clip, out_dir):
    r = invoke(*edit_args(small_clip["video"], small_clip["mask"], out_dir, "--frames", 12))
    assert_usage_error(r, "use --frames 9 or fewer", out_dir)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (("--window-frames", 20), "window_frames 20 is not 4k+1 (the model runs on 4k+1 frames); use --window-frames 17 or 21"),
        (("--window-frames", 1), "window_frames 1 is below the minimum 5"),
        (("--window-frames", 17, "--window-overlap", 17), "window_overlap 17 must be below window_frames 17"),
        (("--window-frames", 9, "--window-overlap", 12), "window_overlap 12 must be below window_frames 9"),
        (("--window-overlap", -1), "window_overlap -1 is negative"),
    ],
)
def test_bad_window_settings(small_clip, out_dir, flags, fragment):
    r = invoke(*edit_args(small_clip["video"], small_clip["mask"], out_dir, *flags))
    assert_usage_error(r, fragment, out_dir)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (("--crop", "tiles"), "crop 'tiles' is not valid; use auto (a box around the mask) or full"),
        (("--crop-context", 0.5), "crop_context is 0.5; use a factor of 1 or more"),
        (("--crop-min-size", 8), "crop_min_size is 8; use at least 32 pixels"),
        (("--mask-fill", "grey"), "mask_fill 'grey' is not valid; use source (edit what is there) or gray"),
        (("--max-area", 100), "max_area is 100; use at least 1024 pixels"),
    ],
)
def test_bad_crop_and_fill_settings(small_clip, out_dir, flags, fragment):
    r = invoke(*edit_args(small_clip["video"], small_clip["mask"], out_dir, *flags))
    assert_usage_error(r, fragment, out_dir)


def test_output_equals_input(small_clip, out_dir):
    video = small_clip["video"]
    r = invoke("edit", video, "--mask", small_clip["mask"], "--prompt", "x", "-o", video, "--overwrite")
    assert r.exit_code == 2 and "is the input video" in r.stderr
    assert video.exists()


def test_unknown_spec_key(small_clip, out_dir, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"video: {small_clip['video']}\nmask: {small_clip['mask']}\nprompt: x\nstepz: 3\n")
    r = invoke("edit", "--spec", spec, "-o", out_dir / "o.mp4")
    assert_usage_error(r, "unknown key 'stepz'", out_dir)


def test_missing_prompt(small_clip, out_dir):
    r = invoke("edit", small_clip["video"], "--mask", small_clip["mask"], "-o", out_dir / "o.mp4")
    assert_usage_error(r, "--prompt", out_dir)


def test_bad_cache_method(small_clip, out_dir):
    r = invoke(*edit_args(small_clip["video"], small_clip["mask"], out_dir, "--cache", "magic"))
    assert_usage_error(r, "magic", out_dir)


def test_model_folder_not_wan_vace(small_clip, out_dir, tmp_path):
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    r = invoke(*edit_args(small_clip["video"], small_clip["mask"], out_dir, "--model", folder))
    assert_usage_error(r, "StableDiffusionPipeline", out_dir)


def test_folder_without_model_index(small_clip, out_dir, tmp_path):
    r = invoke(*edit_args(small_clip["video"], small_clip["mask"], out_dir, "--model", tmp_path))
    assert_usage_error(r, "model_index.json", out_dir)


def test_hub_id_not_cached(small_clip, out_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    r = invoke(*edit_args(small_clip["video"], small_clip["mask"], out_dir, "--model", "someone/not-a-model"))
    assert_usage_error(r, "not in the local Hugging Face cache", out_dir)


def test_existing_output_needs_overwrite(small_clip, out_dir):
    target = out_dir / "o.mp4"
    target.write_bytes(b"old")
    r = invoke(*edit_args(small_clip["video"], small_clip["mask"], out_dir))
    assert r.exit_code == 2 and "--overwrite" in r.stderr
    assert target.read_bytes() == b"old"
