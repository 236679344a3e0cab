"""Long clips in windows, end to end: every frame kept, one-window clips unchanged, resume, seams."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.io.synthetic import MovingShape, SceneSpec, render
from hetcache_cli.io.video import read_video, write_video

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def moving_ball_clip(root, frames: int, size: int, fps: float = 8.0):
    """A clip whose ball crosses the frame, and a mask video that follows it."""
    ball = MovingShape("ball", "white", size * 0.12, (size * 0.55, size * 0.2), (-0.1 * size / frames, 0.6 * size / frames))
    video_frames, cover = render(SceneSpec(frames, size, size, pan=(0.1, 0.3), shapes=[ball], texture_seed=3))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    masks = np.stack([cv2.dilate((c > 0.02).astype(np.uint8), kernel) * 255 for c in cover])
    video, mask = root / "clip.mp4", root / "mask.mp4"
    write_video(video, video_frames, fps, crf=12)
    write_video(mask, np.repeat(masks[..., None], 3, axis=-1), fps, lossless=True)
    return video, mask, masks > 127


@pytest.fixture(scope="module")
def clip30(tmp_path_factory):
    return moving_ball_clip(tmp_path_factory.mktemp("clip30"), 30, 64)


def tiny_edit(video, mask, model, out, *extra, quiet=True):
    return invoke(
        "edit", video, "--mask", mask, "--prompt", "a red ball", "--model", model, "--steps", 2, "-o", out,
        "--window-frames", 9, "--window-overlap", 4, "--crf", 0, *(["--quiet"] if quiet else []), *extra,
    )


@pytest.mark.slow
def test_every_frame_is_kept_and_stats_list_windows(clip30, tiny_model_dir, tmp_path):
    video, mask, _ = clip30
    out = tmp_path / "o.mp4"
    r = tiny_edit(video, mask, tiny_model_dir, out, "--schedule", "FR")
    assert r.exit_code == 0, r.stderr
    clip = read_video(out)
    assert clip.num_frames == 30 and clip.fps == pytest.approx(8.0)
    stats = json.loads(out.with_name("o.stats.json").read_text())
    windows = stats["windows"]
    assert [(w["start"], w["stop"], w["shared"]) for w in windows] == [(0, 9, 0), (5, 14, 4), (10, 19, 4), (15, 24, 4), (20, 29, 4), (25, 30, 4)]
    assert stats["summary"]["windows"] == 6
    for w in windows:
        assert w["schedule"] == "FR" and w["flops"] == pytest.approx(w["flops_full"] / 2) and w["wall_s"] > 0
    # one record per step, branch and window, each tagged with its window
    assert sorted({s["window"] for s in stats["steps"]}) == list(range(6))
    assert len(stats["steps"]) == 6 * 2 * 2
    assert stats["summary"]["flops"] == pytest.approx(sum(s["flops"] for s in stats["steps"]))
    assert not list(tmp_path.glob(".*"))  # the work folder is gone after success
    # the dry run of the same edit plans what ran, window by window: schedules, tokens, FLOPs exactly
    dry = tiny_edit(video, mask, tiny_model_dir, tmp_path / "dry.mp4", "--schedule", "FR", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert [(w["schedule"], w["tokens"]["total"], w["flops"], w["flops_full"], w["decisions"]) for w in plan["windows"]] \
        == [(w["schedule"], w["tokens"], w["flops"], w["flops_full"], w["decisions"]) for w in windows]
    for key in ("schema_version", "schedule", "decisions", "flops", "flops_full", "flops_ratio"):
        assert plan[key] == stats["summary"][key], key
    # and the VAE decodes the box it planned, window by window
    assert [w["decode"] for w in plan["windows"]] == [w["decode"] for w in windows]
    assert plan["stages"]["text_encodes"] == stats["summary"]["text_encodes"] == 1


def test_one_window_clip_equals_a_direct_pipeline_call(small_clip, tiny_model_dir):
    """A clip that fits one window runs exactly as before windows existed: one call of the pipeline (with the
    edit's one batched VAE encode, which tests/pipeline/test_vae_passes.py compares with diffusers' two)."""
    import PIL.Image
    import torch

    from hetcache_cli.io.paste import paste_back
    from hetcache_cli.pipeline.edit import prepare_edit, run_edit
    from hetcache_cli.pipeline.model import PipelinePool
    from hetcache_cli.pipeline.vae import batched_encode, cpu_convolutions, plain_convolutions, restore_encode
    from hetcache_cli.spec.load import build_spec

    out = small_clip["root"] / "direct.mp4"
    spec = build_spec({
        "video": str(small_clip["video"]), "mask": str(small_clip["mask"]), "prompt": "a red ball",
        "model": str(tiny_model_dir), "steps": 3, "output": str(out), "cache": {"method": "none"},
    })  # fmt: skip
    prep = prepare_edit(spec, overwrite=True)
    assert len(prep.windows) == 1
    pipe, info = PipelinePool().get(spec.model, "cpu", "auto")
    result = run_edit(prep, pipe, info, keep_frames=True)

    mask, frames = prep.mask.dense(), read_video(small_clip["video"]).frames
    mask_rgb = np.repeat((mask[..., None] * 255).astype(np.uint8), 3, axis=-1)
    batched_encode(pipe)
    cpu_convolutions(pipe.vae)  # the VAE passes as the edit runs them on the CPU
    direct = pipe(
        prompt="a red ball", negative_prompt="", video=[PIL.Image.fromarray(f) for f in frames],
        mask=[PIL.Image.fromarray(m) for m in mask_rgb], height=64, width=64, num_frames=9, num_inference_steps=3,
        guidance_scale=spec.guidance_scale, generator=torch.Generator().manual_seed(0), output_type="np",
    ).frames[0]  # fmt: skip
    restore_encode(pipe)
    plain_convolutions(pipe.vae)
    raw = (np.clip(direct, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    assert np.array_equal(result.raw, raw)
    assert np.array_equal(result.frames, paste_back(raw, frames, mask, 4, 4))


@pytest.mark.slow
def test_interrupted_edit_resumes_to_the_same_result(clip30, tiny_model_dir, tmp_path, monkeypatch):
    import hetcache_cli.pipeline.edit as edit_mod

    video, mask, _ = clip30
    whole = tmp_path / "whole.mp4"
    assert tiny_edit(video, mask, tiny_model_dir, whole).exit_code == 0

    out = tmp_path / "resumed.mp4"
    work = tmp_path / ".resumed.mp4.hetcache"

    def stop_after_first(window):
        if window.index == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(edit_mod, "_window_finished", stop_after_first)
        r = tiny_edit(video, mask, tiny_model_dir, out)
    assert r.exit_code == 130
    assert "2 of 6 windows are kept" in r.stderr and "--resume" in r.stderr
    assert not out.exists() and not out.with_name("resumed.stats.json").exists()
    assert sorted(p.name for p in work.iterdir()) == [
        "segment_0000.mp4", "segment_0001.mp4", "settings.json", "window_0000.json", "window_0001.json",
        "window_0001.npy",
    ]  # fmt: skip

    r = tiny_edit(video, mask, tiny_model_dir, out, "--resume", quiet=False)
    assert r.exit_code == 0, r.stderr
    assert "reusing 2 of 6 finished windows" in r.stderr
    assert np.array_equal(read_video(out).frames, read_video(whole).frames)
    stats = json.loads(out.with_name("resumed.stats.json").read_text())
    assert stats["summary"]["resumed_windows"] == 2 and [w.get("resumed", False) for w in stats["windows"]][:3] == [True, True, False]
    assert not work.exists()


@pytest.mark.slow
def test_resume_with_other_settings_starts_over(clip30, tiny_model_dir, tmp_path, monkeypatch):
    import hetcache_cli.pipeline.edit as edit_mod

    video, mask, _ = clip30
    out = tmp_path / "o.mp4"

    def stop(window):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(edit_mod, "_window_finished", stop)
        assert tiny_edit(video, mask, tiny_model_dir, out).exit_code == 130
    r = tiny_edit(video, mask, tiny_model_dir, out, "--resume", "--seed", 3, quiet=False)
    assert r.exit_code == 0, r.stderr
    assert "used other settings (changed: seed); starting over" in r.stderr
    stats = json.loads(out.with_name("o.stats.json").read_text())
    assert stats["summary"]["resumed_windows"] == 0


def test_dry_run_lists_the_windows(clip30, tiny_model_dir, tmp_path):
    video, mask, _ = clip30
    args = ("edit", video, "--mask", mask, "--prompt", "a red ball", "--model", tiny_model_dir, "--steps", 4,
            "--window-frames", 9, "--window-overlap", 4, "-o", tmp_path / "never.mp4", "--dry-run")  # fmt: skip
    r = invoke(*args, "--json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [(w["start"], w["stop"]) for w in plan["windows"]] == [(0, 9), (5, 14), (10, 19), (15, 24), (20, 29), (25, 30)]
    assert plan["flops_full"] == pytest.approx(sum(w["flops_full"] for w in plan["windows"]))
    assert all(w["tokens"]["total"] == ((w["model_frames"] - 1) // 4 + 1) * 4 * 4 for w in plan["windows"])
    text = invoke(*args)
    assert text.exit_code == 0 and "window 5   frames 25-29" in text.stdout and "6 window(s)" in text.stdout
    assert not list(tmp_path.iterdir())


def test_cost_estimate_counts_windows(clip30, tmp_path):
    from hetcache_cli.pipeline.distributed import estimate

    video, mask, _ = clip30
    base = {"video": str(video), "mask": str(mask), "prompt": "x", "output": str(tmp_path / "o.mp4"), "steps": 2,
            "guidance_scale": 1.0}  # fmt: skip
    one, _ = estimate("a", {**base, "window_frames": 81}, overwrite=False)
    six, _ = estimate("b", {**base, "window_frames": 9, "window_overlap": 4}, overwrite=False)
    assert one == 33 * 64 * 64 * 2  # one window, padded to 33 model frames
    assert six == (5 * 9 + 5) * 64 * 64 * 2  # five windows of 9 and the last one of 5 model frames


@pytest.mark.slow
def test_long_clip_on_the_embedded_model(tmp_path):
    """The acceptance of long clips: 103 frames (not 4k+1) with a moving ball and a mask video that follows it."""
    from hetcache_cli.eval.seams import colour_by_window, seam_report

    video, mask, region = moving_ball_clip(tmp_path, 103, 96)
    source = read_video(video).frames
    colours = {}
    for prompt in ("a red ball", "a blue ball"):
        out = tmp_path / f"{prompt.split()[1]}.mp4"
        # the embedded model's folder recommends its windows (17 frames, overlap 8)
        r = invoke("edit", video, "--mask", mask, "--prompt", prompt, "--steps", 10, "-o", out, "--crf", 0, "--quiet")
        assert r.exit_code == 0, r.stderr
        clip = read_video(out)
        assert clip.num_frames == 103 and clip.fps == pytest.approx(8.0)
        stats = json.loads(out.with_name(f"{out.stem}.stats.json").read_text())
        windows = stats["windows"]
        assert len(windows) >= 3 and (windows[0]["stop"], windows[1]["shared"]) == (17, 8)
        seams = seam_report(clip.frames, region, windows, source)
        assert seams["ratio"] <= 1.5, seams["joins"]
        colours[prompt] = np.array(colour_by_window(clip.frames, region, windows))  # [windows, RGB]
    red, blue = colours["a red ball"], colours["a blue ball"]
    # in every window the prompt's colour shows inside the mask
    assert np.all(red[:, 0] > red[:, 2]) and np.all(blue[:, 2] > blue[:, 0]), (red.round(), blue.round())
    assert np.all(red[:, 0] - blue[:, 0] > 20) and np.all(blue[:, 2] - red[:, 2] > 20)
