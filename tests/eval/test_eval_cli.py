"""`hetcache eval` end to end on tiny lossless videos."""

import json

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hetcache_cli.cli.eval import EPILOG, eval_cmd
from hetcache_cli.eval.metrics import PSNR_CAP_DB, compare_videos
from hetcache_cli.io.mask import load_mask
from hetcache_cli.io.video import read_video, write_video

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
app.command("eval", epilog=EPILOG)(eval_cmd)
app.command("noop")(lambda: None)  # a second command keeps "eval" a subcommand
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["eval", *[str(a) for a in args]])


def texture(frames, h, w, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (h, w + 2 * frames, 3)).astype(np.float32)
    big = cv2.GaussianBlur(noise, (0, 0), 2.0)
    big = (40 + (big - big.min()) / (big.max() - big.min()) * 175).round().astype(np.uint8)
    return np.stack([big[:, 2 * t : 2 * t + w] for t in range(frames)])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    ref = texture(5, 32, 32)
    pred = ref.copy()
    pred[:, 10:20, 10:20] += 12  # the "edit": 12 levels brighter inside the mask
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[10:20, 10:20] = 255
    paths = {"ref": root / "ref.mp4", "pred": root / "pred.mp4", "mask": root / "mask.png"}
    write_video(paths["ref"], ref, 8.0, lossless=True)
    write_video(paths["pred"], pred, 8.0, lossless=True)
    cv2.imwrite(str(paths["mask"]), mask)
    write_video(root / "short.mp4", ref[:4], 8.0, lossless=True)
    write_video(root / "wide.mp4", texture(5, 32, 48), 8.0, lossless=True)
    paths["root"] = root
    return paths


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == ""


def test_json_matches_metrics_on_decoded_frames(clips):
    r = invoke(clips["pred"], "--reference", clips["ref"], "--mask", clips["mask"], "--margin-px", 4, "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["frames"] == 5 and out["frames_prediction"] == 5 and out["frames_reference"] == 5
    assert out["size"] == {"width": 32, "height": 32} and out["margin_px"] == 4
    assert out["pixels"]["inside"] == 5 * 100
    assert out["psnr"]["background"] == PSNR_CAP_DB  # lossless and identical outside the band
    assert out["psnr"]["inside"] == pytest.approx(20 * np.log10(255 / 12), abs=1.0)
    assert out["ssim"]["inside"] < out["ssim"]["background"] <= 1.0
    assert out["lpips"] is None and out["skipped"]["lpips"]

    pred, ref = read_video(clips["pred"]).frames, read_video(clips["ref"]).frames
    expected = compare_videos(pred, ref, load_mask(clips["mask"], 5, (32, 32)), margin_px=4)
    assert {k: out[k] for k in expected} == json.loads(json.dumps(expected))


def test_table_on_stdout(clips):
    r = invoke(clips["pred"], "-r", clips["ref"], "-m", clips["mask"])
    assert r.exit_code == 0, r.stderr
    for word in ("PSNR", "SSIM", "inside", "margin", "background", f">={PSNR_CAP_DB:g}", "margin 16 px"):
        assert word in r.stdout, r.stdout
    assert "lpips skipped" in r.stderr


def test_without_mask_reports_all_only(clips):
    r = invoke(clips["ref"], "-r", clips["ref"], "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["psnr"] == {"all": PSNR_CAP_DB} and out["ssim"] == {"all": 1.0}
    assert out["mask"] is None


def test_frame_count_mismatch_compares_prefix(clips):
    r = invoke(clips["pred"], "-r", clips["root"] / "short.mp4", "--json")
    assert r.exit_code == 0, r.stderr
    assert "has 5 frames" in r.stderr and "has 4: comparing the first 4" in r.stderr
    out = json.loads(r.stdout)
    assert out["frames"] == 4 and out["frames_prediction"] == 5 and out["frames_reference"] == 4


def test_size_mismatch_is_usage_error(clips):
    r = invoke(clips["root"] / "wide.mp4", "-r", clips["ref"], "--json")
    assert_one_line_error(r, "48x32", "32x32", "scale=32:32")


def test_missing_reference_and_bad_margin(clips):
    assert_one_line_error(invoke(clips["pred"], "-r", clips["root"] / "nope.mp4"), "nope.mp4")
    r = invoke(clips["pred"], "-r", clips["ref"], "-m", clips["mask"], "--margin-px", -3)
    assert_one_line_error(r, "-3 px")
