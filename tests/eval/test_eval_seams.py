"""Seams and colour drift of windowed edits (`hetcache eval` with an edit's statistics)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.eval.seams import colour_by_window, join_pairs, pair_errors, seam_report
from hetcache_cli.io.video import write_video

WINDOWS = [
    {"index": 0, "start": 0, "stop": 12, "shared": 0},
    {"index": 1, "start": 8, "stop": 20, "shared": 4, "known": 2},
    {"index": 2, "start": 16, "stop": 24, "shared": 4, "known": 4},
]


def noisy_clip(frames=24, size=48, seed=0):
    """A textured square that drifts one pixel per frame over a static textured background."""
    rng = np.random.default_rng(seed)
    world = rng.integers(40, 200, (size, size + frames, 3)).astype(np.uint8)
    out = np.stack([world[:, t : t + size] for t in range(frames)])
    mask = np.zeros((frames, size, size), bool)
    mask[:, 12:36, 12:36] = True
    return out, mask


def test_join_pairs_span_the_shared_frames_and_the_first_new_one():
    # window 1 cross-fades over its 2 blend frames, window 2 (no blend frames) over its known ones
    assert join_pairs(WINDOWS) == [[9, 10, 11], [15, 16, 17, 18, 19]]


def test_a_jump_at_a_join_is_found_and_a_smooth_clip_passes():
    frames, mask = noisy_clip()
    smooth = seam_report(frames, mask, WINDOWS)
    assert smooth["ratio"] == pytest.approx(1.0, abs=0.35)
    jumped = frames.copy()
    jumped[12:, mask[0]] = np.clip(jumped[12:, mask[0]].astype(int) + 40, 0, 255).astype(np.uint8)  # window 1 new frames
    report = seam_report(jumped, mask, WINDOWS, ref=frames)
    assert report["joins"][0]["window"] == 1 and report["joins"][0]["error"] > 3 * report["within_median"]
    assert report["ratio"] > 3
    assert len(report["pairs"]) == 23 and report["drift"]["pred"] > 60 and report["drift"]["ref"] < 5


def test_colour_by_window_uses_the_frames_each_window_owns():
    frames = np.zeros((24, 4, 4, 3), np.uint8)
    frames[8:16] = 100  # owned by window 1
    frames[16:] = 200
    mask = np.ones((24, 4, 4), bool)
    assert colour_by_window(frames, mask, WINDOWS) == [[0.0] * 3, [100.0] * 3, [200.0] * 3]
    assert np.isnan(pair_errors(frames, np.zeros_like(mask))).all()


def test_eval_reports_seams_from_the_stats_beside_the_prediction(tmp_path):
    frames, mask = noisy_clip()
    pred, ref = tmp_path / "pred.mp4", tmp_path / "ref.mp4"
    write_video(pred, frames, 8.0, lossless=True)
    write_video(ref, frames, 8.0, lossless=True)
    mask_video = tmp_path / "mask.mp4"
    write_video(mask_video, np.repeat((mask[..., None] * 255).astype(np.uint8), 3, axis=-1), 8.0, lossless=True)
    (tmp_path / "pred.stats.json").write_text(json.dumps({"windows": WINDOWS}))
    runner = CliRunner()
    r = runner.invoke(app, ["eval", str(pred), "-r", str(ref), "-m", str(mask_video), "--json"])
    assert r.exit_code == 0, r.stderr
    seams = json.loads(r.stdout)["seams"]
    assert [j["window"] for j in seams["joins"]] == [1, 2] and seams["ratio"] == pytest.approx(1.0, abs=0.35)
    text = runner.invoke(app, ["eval", str(pred), "-r", str(ref), "-m", str(mask_video)])
    assert text.exit_code == 0 and "3 windows; temporal (warp) error inside the mask" in text.stdout

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"windows": [{**WINDOWS[0], "stop": 30}]}))
    bad = runner.invoke(app, ["eval", str(pred), "-r", str(ref), "--stats", str(other)])
    assert bad.exit_code == 2 and "lists windows up to frame 30 but the videos have 24 frames" in bad.stderr
