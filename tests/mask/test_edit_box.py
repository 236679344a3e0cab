"""`hetcache edit` with box prompts: `--box` / `box:` equal the mask file `hetcache mask --box` writes."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.io.video import read_video
from hetcache_cli.pipeline.edit import prepare_edit
from hetcache_cli.spec.load import build_spec

runner = CliRunner()
# Odd edges: at the 32x32 working size the model's mask has partly covered pixels.
BOXES = ("11,9,41,37@0", "23,21,53,49@8")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def box_flags(boxes=BOXES):
    return [arg for b in boxes for arg in ("--box", b)]


@pytest.fixture
def box_mask_file(small_clip, tmp_path):
    path = tmp_path / "boxes_mask.mp4"
    r = invoke("mask", small_clip["video"], *box_flags(), "-o", path, "--quiet")
    assert r.exit_code == 0, r.stderr
    return path


@pytest.mark.parametrize("extra", [{}, {"mask_dilation": 2, "mask_invert": True}])
def test_box_spec_gives_the_mask_files_mask(small_clip, box_mask_file, tmp_path, extra):
    common = {"video": str(small_clip["video"]), "prompt": "a red ball", "width": 32, "height": 32, **extra}
    from_file = prepare_edit(build_spec({**common, "mask": str(box_mask_file), "output": str(tmp_path / "a.mp4")}))
    from_box = prepare_edit(build_spec({**common, "box": list(BOXES), "output": str(tmp_path / "b.mp4")}))
    box_mask, file_mask = from_box.mask.dense(), from_file.mask.dense()
    assert box_mask.shape == (9, 64, 64)  # the mask lives at the source size; crops are cut from it
    assert np.array_equal(box_mask, file_mask)
    assert 0.05 < box_mask.mean() < 0.95
    if not extra:
        assert box_mask[0, 9:37, 11:41].all() and not box_mask[0, 37:].any() and not box_mask[0, :, 41:].any()


def test_edit_box_equals_edit_with_the_mask_file(small_clip, tiny_model_dir, box_mask_file, tmp_path):
    common = ["--prompt", "a red ball", "--model", tiny_model_dir, "--steps", 2, "--cache", "none", "--crf", 0,
              "--width", 32, "--height", 32, "--json"]  # fmt: skip
    a, b = tmp_path / "with_file.mp4", tmp_path / "with_box.mp4"
    ra = invoke("edit", small_clip["video"], "--mask", box_mask_file, "-o", a, *common)
    rb = invoke("edit", small_clip["video"], *box_flags(), "-o", b, *common)
    assert ra.exit_code == 0, ra.stderr
    assert rb.exit_code == 0, rb.stderr
    assert np.array_equal(read_video(a).frames, read_video(b).frames)
    stats_a = json.loads((tmp_path / "with_file.stats.json").read_text())
    stats_b = json.loads((tmp_path / "with_box.stats.json").read_text())
    assert stats_b["settings"]["mask_coverage"] == stats_a["settings"]["mask_coverage"] > 0
    assert stats_b["settings"]["box"] == list(BOXES) and stats_b["paths"]["mask"] is None


def test_spec_box_key_and_cli_box_over_a_spec_mask(small_clip, tiny_model_dir, tmp_path):
    spec = tmp_path / "edit.yaml"
    spec.write_text(yaml.safe_dump({
        "video": str(small_clip["video"]), "mask": str(small_clip["mask"]), "prompt": "a red ball",
        "model": str(tiny_model_dir), "steps": 1, "cache": {"method": "none"},
    }))  # fmt: skip
    out = tmp_path / "o.mp4"
    r = invoke("edit", "--spec", spec, "--box", "2,2,20,20", "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["frames"] == 9
    stats = json.loads((tmp_path / "o.stats.json").read_text())
    assert stats["settings"]["box"] == ["2,2,20,20"] and stats["paths"]["mask"] is None
    assert stats["settings"]["mask_coverage"] == pytest.approx(18 * 18 / 64**2)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--box", "70,10,90,30"), "box 70,10,90,30@0 lies outside the 64x64 frame"),
        (("--box", "1,1,9,9@12"), "frame 12 is beyond the clip, which has 9 frames"),
        (("--box", "1,1,9"), "box '1,1,9' has 3 number(s)"),
        (("--box", "1,1,9,9", "--mask", "m.png"), "both mask and box are given"),
        ((), "missing mask; give --mask FILE or --box"),
    ],
)
def test_edit_box_errors(small_clip, tmp_path, args, fragment):
    out = tmp_path / "out"
    out.mkdir()
    r = invoke("edit", small_clip["video"], "--prompt", "a red ball", "-o", out / "o.mp4", *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], r.stderr
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_edit_demo_clip_with_a_mask_from_hetcache_mask(tmp_path):
    """The shipped demo clip and embedded model, with a box mask made by `hetcache mask` (as a user would)."""
    from hetcache_cli.resources import demo_dir

    mask = tmp_path / "ball_box.mp4"
    r = invoke("mask", demo_dir() / "input.mp4", "--box", "38,52,118,107", "-o", mask, "--quiet")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "demo_box.mp4"
    r = invoke("edit", demo_dir() / "input.mp4", "--mask", mask, "--prompt", "a red ball", "--frames", 5,
               "--steps", 2, "-o", out, "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["frames"], summary["width"], summary["height"]) == (5, 160, 160)
    stats = json.loads((tmp_path / "demo_box.stats.json").read_text())
    assert stats["settings"]["mask_coverage"] == pytest.approx(80 * 55 / 160**2)
    edited, source = read_video(out).frames.astype(int), read_video(demo_dir() / "input.mp4").frames[:5].astype(int)
    assert np.abs(edited - source)[:, 52:107, 38:118].mean() > 2  # the box was edited ...
    assert np.abs(edited - source)[:, :40, :30].mean() < 2  # ... and the corner kept (paste-back)
