"""The edit path's fitting: what the model gets per window (crop, mask fill, known frames), odd sizes, VFR sources."""

import json
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.io.crop import Crop
from hetcache_cli.io.mask import load_mask
from hetcache_cli.io.paste import paste_region
from hetcache_cli.io.stitch import Patch
from hetcache_cli.io.synthetic import MovingShape, SceneSpec, render
from hetcache_cli.io.video import read_video, write_video
from hetcache_cli.pipeline.edit import prepare_edit
from hetcache_cli.pipeline.window_run import GRAY, model_inputs
from hetcache_cli.spec.load import build_spec

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def spec(small_clip, tmp_path, **values):
    base = {"video": str(small_clip["video"]), "mask": str(small_clip["mask"]), "prompt": "a red ball",
            "output": str(tmp_path / "o.mp4")}  # fmt: skip
    return build_spec({**base, **values})


@pytest.mark.parametrize("fill", ["source", "gray"])
def test_mask_fill_is_what_the_model_sees_inside_the_mask(small_clip, tmp_path, fill):
    prep = prepare_edit(spec(small_clip, tmp_path, mask_fill=fill))
    (window,), (crop,) = prep.windows, prep.crops
    frames = read_video(small_clip["video"]).frames
    video, mask = model_inputs(prep, window, crop, None, frames)
    source = frames.astype(np.float32) / 255.0  # the 64x64 clip is its own crop at scale 1
    assert crop == Crop(0, 0, 64, 64, 64, 64) and video.shape == (9, 64, 64, 3) and mask.any()
    assert np.array_equal(video[~mask], source[~mask])
    if fill == "gray":
        assert (video[mask] == GRAY).all()  # 127.5 / 255: 0 after the pipeline's normalisation
    else:
        assert np.array_equal(video[mask], source[mask])


def test_known_frames_come_from_the_earlier_output_cut_with_this_windows_crop(tmp_path):
    ball = MovingShape("ball", "white", 6, (40, 20), (0.0, 3.0))
    frames, cover = render(SceneSpec(17, 96, 160, shapes=[ball], texture_seed=2))
    video = write_video(tmp_path / "c.mp4", frames, 8, lossless=True)
    mask = write_video(tmp_path / "m.mp4", np.repeat((cover[..., None] > 0.05) * np.uint8(255), 3, -1), 8, lossless=True)
    prep = prepare_edit(build_spec({
        "video": str(video), "mask": str(mask), "prompt": "x", "output": str(tmp_path / "o.mp4"), "window_frames": 9,
        "window_overlap": 6, "crop_min_size": 32, "crop_context": 1.5,
    }))  # fmt: skip
    first, second = prep.windows[:2]
    crop = prep.crops[1]
    assert second.known > 0 and (crop.src_width, crop.src_height) == (crop.width, crop.height)  # scale 1: exact
    earlier = np.zeros((first.frames, 96, 160, 3), np.uint8) + 7  # an "edited" previous window, whole frame
    src = frames[second.start : second.stop]  # the lossless clip decodes to `frames`
    video_in, mask_in = model_inputs(prep, second, crop, (first, Patch(first.start, (0, 0, 160, 96), earlier)), src)
    box = np.s_[crop.y0 : crop.y1, crop.x0 : crop.x1]
    assert (video_in[: second.known] == np.float32(7 / 255)).all()
    rest = frames[second.start + second.known : second.stop][(slice(None), *box)]
    assert np.array_equal(video_in[second.known : second.frames], rest / np.float32(255))
    assert not mask_in[: second.known].any() and mask_in[second.known :].any()


def test_odd_sized_source(tmp_path, tiny_model_dir):
    ball = MovingShape("ball", "white", 6, (24, 30), (0.0, 1.0))
    frames, cover = render(SceneSpec(5, 49, 65, shapes=[ball], texture_seed=1))
    video = write_video(tmp_path / "odd.mp4", frames, 8, lossless=True)
    mask = tmp_path / "m.png"
    import cv2

    cv2.imwrite(str(mask), ((cover.max(axis=0) > 0.05) * 255).astype(np.uint8))
    common = ("--mask", mask, "--prompt", "a red ball", "--model", tiny_model_dir, "--steps", 1, "--cache", "none")
    r = invoke("edit", video, *common, "-o", tmp_path / "a.mp4", "--json")
    assert r.exit_code == 0, r.stderr
    assert read_video(tmp_path / "a.mp4").frames.shape == (5, 50, 66, 3)  # yuv420p: padded, and said so
    stats = json.loads((tmp_path / "a.stats.json").read_text())
    assert any("repeats its last column and row (66x50)" in m for m in stats["settings"]["alignment"])
    r = invoke("edit", video, *common, "-o", tmp_path / "b.mp4", "--crf", 0, "--json")
    assert r.exit_code == 0, r.stderr
    out = read_video(tmp_path / "b.mp4").frames
    keep = ~paste_region(load_mask(mask, 5, (49, 65)), 4, 4)
    assert out.shape == (5, 49, 65, 3) and np.array_equal(out[keep], frames[keep])


def test_variable_frame_rate_source_is_resampled_and_said_so(tmp_path, small_clip):
    path = tmp_path / "vfr.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=30",
         "-frames:v", "30", "-vf", "setpts='if(lt(N,15),N/30,0.5+(N-15)/15)/TB'", "-fps_mode", "passthrough",
         "-c:v", "libx264", path],
        check=True,
    )  # fmt: skip
    prep = prepare_edit(build_spec({"video": str(path), "mask": str(small_clip["mask"]), "prompt": "x",
                                    "output": str(tmp_path / "o.mp4")}))  # fmt: skip
    assert prep.media.vfr and prep.rate == prep.media.rate
    (msg,) = [m for m in prep.messages if "variable frame rate" in m]
    assert f"constant {prep.rate} fps" in msg and "audio stays in sync" in msg
    assert prep.plan.frames == len(prep.mask) == prep.media.frames == round(prep.media.duration_s * prep.rate)


@pytest.mark.slow
def test_windows_with_moving_crops_change_only_the_stitched_region(tmp_path, tiny_model_dir):
    """Two windows, each on its own crop of a 64x192 clip: outside the paste band the output is the source,
    bit for bit (the cross-fade too), and every frame is kept."""
    ball = MovingShape("ball", "white", 5, (30, 16), (0.5, 12.0))
    frames, cover = render(SceneSpec(13, 64, 192, shapes=[ball], texture_seed=5))
    video = write_video(tmp_path / "c.mp4", frames, 8, lossless=True)
    masks = np.repeat(((cover > 0.05) * 255).astype(np.uint8)[..., None], 3, -1)
    mask = write_video(tmp_path / "m.mp4", masks, 8, lossless=True)
    out = tmp_path / "o.mp4"
    r = invoke("edit", video, "--mask", mask, "--prompt", "a red ball", "--model", tiny_model_dir, "--steps", 1,
               "--cache", "none", "--window-frames", 9, "--window-overlap", 4, "--crop-min-size", 32,
               "--crop-context", 1.2, "--crf", 0, "-o", out, "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    stats = json.loads((tmp_path / "o.stats.json").read_text())
    crops = [w["crop"]["box"] for w in stats["windows"]]
    assert len(crops) == 2 and crops[0] != crops[1] and all(c[2] - c[0] < 192 for c in crops)
    edited = read_video(out).frames
    assert edited.shape == frames.shape
    bool_mask = load_mask(mask, 13, (64, 192))
    keep = ~paste_region(bool_mask, 4, 4)
    assert np.array_equal(edited[keep], frames[keep])
    assert np.abs(edited.astype(int) - frames)[bool_mask].mean() > 5  # the masked region changed
