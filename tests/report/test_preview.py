"""`hetcache edit --preview`: one window, the real settings, a contact sheet and a video, no output."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.errors import InputError
from hetcache_cli.io.video import read_video, write_video
from hetcache_cli.pipeline.windows import plan_windows
from hetcache_cli.report.preview import contact_sheet, estimate_s, pick_window

runner = CliRunner()


@pytest.fixture(scope="module")
def clip13(tmp_path_factory):
    """13 frames 64x64 at 12 fps, a mask that grows over time (the last window covers the most)."""
    root = tmp_path_factory.mktemp("preview")
    rng = np.random.default_rng(0)
    frames = rng.integers(40, 200, (13, 64, 64, 3), dtype=np.uint8)
    write_video(root / "clip.mp4", frames, 12.0, lossless=True)
    masks = root / "masks"
    masks.mkdir()
    for t in range(13):
        m = np.zeros((64, 64), np.uint8)
        m[20:44, 16 : 20 + 3 * t] = 255
        cv2.imwrite(str(masks / f"m{t:02d}.png"), m)
    return {"video": root / "clip.mp4", "mask": masks, "frames": frames}


def edit(clip, model, out, *extra):
    args = ["edit", clip["video"], "-m", clip["mask"], "-p", "a red ball", "--model", model, "--steps", 2,
            "--window-frames", 9, "--window-overlap", 4, "-o", out, "--crf", 0, *extra]  # fmt: skip
    return runner.invoke(app, [str(a) for a in args])


def test_pick_window_by_frame_or_by_mask_area():
    windows = plan_windows(30, 9, 4)  # frames 0-8, 5-13, 10-18, 15-23, 20-28, 25-29
    mask = np.zeros((30, 4, 4), bool)
    mask[12, :2] = True
    mask[16] = True
    assert pick_window(windows, mask.sum(axis=(1, 2)), None).index == 2  # frames 10-18 hold 8 + 16 pixels, 15-23 only 16
    assert pick_window(windows, mask.sum(axis=(1, 2)), 0).index == 0
    assert pick_window(windows, mask.sum(axis=(1, 2)), 7).index == 1  # shared by windows 0 and 1: window 1 owns it
    assert pick_window(windows, mask.sum(axis=(1, 2)), 29).index == 5
    with pytest.raises(InputError, match="beyond the clip: the edit has 30 frames"):
        pick_window(windows, mask.sum(axis=(1, 2)), 30)


def test_the_picked_window_holds_the_frame_and_owns_it_in_the_output():
    for total in range(1, 40, 3):
        for window_frames, overlap in ((5, 0), (9, 4), (17, 8), (13, 12)):
            windows = plan_windows(total, window_frames, overlap)
            for frame in range(total):
                w = pick_window(windows, np.zeros((total, 1, 1), bool), frame)
                assert w.start <= frame < w.stop
                assert w.index + 1 == len(windows) or windows[w.index + 1].start > frame


def test_estimate_scales_the_window_time_by_tokens():
    assert estimate_s(10.0, 0, [100, 100, 50]) == pytest.approx(25.0)
    assert estimate_s(10.0, 2, [100, 100, 50]) == pytest.approx(50.0)


def test_contact_sheet_rows_and_frames():
    n, h, w = 9, 48, 64
    source = np.zeros((n, h, w, 3), np.uint8)
    mask = np.zeros((n, h, w), bool)
    mask[:, 10:20, 10:30] = True
    sheet = contact_sheet(source, mask, source + 50)
    assert sheet.shape == (3 * (20 + h), 4 * w, 3)
    assert (sheet[20 + h + 20 : 2 * (20 + h)] == (0, 255, 255)).all(axis=-1).any()  # the outline row


@pytest.mark.slow
def test_preview_of_the_first_window_is_the_full_run_up_to_the_next_window(clip13, tiny_model_dir, tmp_path):
    from hetcache_cli.pipeline.edit import prepare_edit, run_edit
    from hetcache_cli.pipeline.model import PipelinePool
    from hetcache_cli.spec.load import build_spec

    spec = build_spec({"video": str(clip13["video"]), "mask": str(clip13["mask"]), "prompt": "a red ball",
                       "model": str(tiny_model_dir), "steps": 2, "window_frames": 9, "window_overlap": 4,
                       "output": str(tmp_path / "full.mp4"), "crf": 0}, "test")  # fmt: skip
    pipe, info = PipelinePool().get(spec.model, spec.device, spec.dtype, spec.offload)
    prep = prepare_edit(spec)
    assert [(w.start, w.stop) for w in prep.windows] == [(0, 9), (4, 13)]
    full = run_edit(prep, pipe, info, keep_frames=True)
    one = run_edit(prepare_edit(spec, overwrite=True), pipe, info, only_windows={0})
    assert one.frames.shape == (9, 64, 64, 3) and len(one.stats["windows"]) == 1
    np.testing.assert_array_equal(one.frames[:4], full.frames[:4])
    assert not np.array_equal(one.frames, clip13["frames"][:9])  # the window was edited

    from hetcache_cli.report.cache_plot import write_cache_plot

    assert write_cache_plot(tmp_path / "full.png", full.stats).stat().st_size > 20_000  # a real windowed run


def test_cli_preview_writes_sheet_video_stats_and_no_output(clip13, tiny_model_dir, tmp_path):
    out = tmp_path / "out.mp4"
    r = edit(clip13, tiny_model_dir, out, "--preview-frame", 12, "--plot", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["window"] == 1 and summary["windows"] == 2 and summary["frames"] == [4, 13]
    assert summary["estimate_s"] == pytest.approx(2 * summary["window_s"])  # two windows of equal tokens
    assert not out.exists() and not (tmp_path / "out.stats.json").exists()
    stats = json.loads((tmp_path / "out.preview.stats.json").read_text())
    assert [w["index"] for w in stats["windows"]] == [1] and stats["windows"][0]["known"] == 0
    assert {s["window"] for s in stats["steps"]} == {1} and stats["preview"]["window"] == 1
    video = read_video(tmp_path / "out.preview.mp4")
    assert video.num_frames == 9 and video.fps == 12.0 and (video.height, video.width) == (64, 64)
    sheet = cv2.imread(str(tmp_path / "out.preview.png"))
    assert sheet.shape == (3 * (20 + 64), 4 * 64, 3)
    assert (tmp_path / "out.preview.cache.png").stat().st_size > 20_000


@pytest.mark.parametrize("extra, fragment", [
    (["--preview-frame", 13], "--preview-frame 13 is beyond the clip: the edit has 13 frames"),
    (["--preview-frame", -1], "--preview-frame -1 is negative"),
    (["--preview", "--dry-run"], "drop --dry-run"),
])  # fmt: skip
def test_bad_preview_input_is_one_line_exit_2_nothing_written(clip13, tiny_model_dir, tmp_path, extra, fragment):
    r = edit(clip13, tiny_model_dir, tmp_path / "out.mp4", *extra)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and fragment in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_preview_into_a_missing_folder_is_refused(clip13, tiny_model_dir, tmp_path):
    r = edit(clip13, tiny_model_dir, tmp_path / "nowhere" / "out.mp4", "--preview")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "output folder" in lines[0] and "mkdir -p" in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_preview_of_a_two_expert_model_plots_both_experts(clip13, tmp_path):
    from hetcache_cli.pipeline.tiny import TinyConfig, build_tiny_pipeline

    model = tmp_path / "two"
    config = TinyConfig(num_layers=2, vace_layers=[0], experts=2, boundary_ratio=0.9)  # 4 steps: 2 per expert
    build_tiny_pipeline(config, seed=0).save_pretrained(model)
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    args = ["edit", clip13["video"], "-m", clip13["mask"], "-p", "a red ball", "--model", model, "--steps", 4,
            "-o", out, "--preview", "--plot", "-q"]  # fmt: skip
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.stderr
    stats = json.loads((out.parent / "o.preview.stats.json").read_text())
    assert list(stats["summary"]["experts"]) == ["transformer", "transformer_2"] and len(stats["windows"]) == 1
    assert (out.parent / "o.preview.cache.png").stat().st_size > 20_000
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "o.preview.cache.png", "o.preview.mp4", "o.preview.png", "o.preview.stats.json"
    ]
