"""`hetcache edit` and `hetcache run` end to end on a tiny random model (CPU, seconds)."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from hetcache_cli.cli.app import app
from hetcache_cli.io.mask import load_mask
from hetcache_cli.io.paste import paste_region
from hetcache_cli.io.video import read_video

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_edit_writes_video_and_stats(small_clip, tiny_model_dir, tmp_path):
    out = tmp_path / "edited.mp4"
    r = invoke(
        "edit", small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball",
        "--model", tiny_model_dir, "--steps", 3, "--cache", "none", "-o", out, "--json",
    )
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["output"] == str(out)
    clip = read_video(out)
    assert clip.frames.shape == (9, 64, 64, 3)
    assert clip.fps == pytest.approx(8.0)

    stats = json.loads((tmp_path / "edited.stats.json").read_text())
    assert stats["version"] == 3
    assert stats["paths"]["output"] == str(out)
    assert stats["settings"]["frames"] == 9 and stats["settings"]["cache"]["method"] == "none"
    steps = stats["steps"]
    assert [(s["step"], s["branch"]) for s in steps] == [(i, b) for i in range(3) for b in ("cond", "uncond")]
    n_tokens = 3 * 4 * 4  # latent frames (9-1)/4+1 x (64/16)^2
    for s in steps:
        assert s["decision"] == "full"
        assert s["tokens"]["total"] == s["tokens"]["computed"] == n_tokens
        assert s["tokens"]["generative"] + s["tokens"]["margin"] + s["tokens"]["context"] == n_tokens
        assert s["flops"] > 0 and s["ms"] > 0
    summ = stats["summary"]
    assert summ["flops_ratio"] == pytest.approx(1.0)
    assert summ["flops"] == pytest.approx(sum(s["flops"] for s in steps))
    assert summ["decisions"] == {"full": 6, "partial": 0, "reuse": 0}
    assert summ["wall_s"] > 0 and summ["peak_memory_bytes"] > 0


def test_paste_back_keeps_unmasked_pixels(small_clip, tiny_model_dir, tmp_path):
    out = tmp_path / "pasted.mp4"
    r = invoke(
        "edit", small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball",
        "--model", tiny_model_dir, "--steps", 2, "--cache", "none", "-o", out, "--crf", 0, "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    edited = read_video(out).frames.astype(int)
    source = read_video(small_clip["video"]).frames.astype(int)
    mask = load_mask(small_clip["mask"], 9, (64, 64))
    keep = ~paste_region(mask, 4, 4)
    assert keep.sum() > 1000
    # Both files are lossless 4:4:4 H.264; decoding differs by at most rounding.
    assert np.abs(edited - source)[keep].max() <= 2
    # Inside the mask the (random-weight) model's output differs from the input.
    assert np.abs(edited - source)[mask].mean() > 5


def test_no_paste_back_changes_background(small_clip, tiny_model_dir, tmp_path):
    out = tmp_path / "raw.mp4"
    r = invoke(
        "edit", small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball", "--no-paste-back",
        "--model", tiny_model_dir, "--steps", 2, "--cache", "none", "-o", out, "--crf", 0, "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    edited = read_video(out).frames.astype(int)
    source = read_video(small_clip["video"]).frames.astype(int)
    keep = ~paste_region(load_mask(small_clip["mask"], 9, (64, 64)), 4, 4)
    assert np.abs(edited - source)[keep].mean() > 2


def test_interrupt_leaves_nothing(small_clip, tiny_model_dir, tmp_path, monkeypatch):
    import hetcache_cli.pipeline.window_run as window_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(window_run, "paste_back", interrupted)
    out = tmp_path / "x.mp4"
    r = invoke(
        "edit", small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball",
        "--model", tiny_model_dir, "--steps", 1, "--cache", "none", "-o", out,
    )
    assert r.exit_code == 130
    assert list(tmp_path.iterdir()) == []


def test_run_goes_on_past_a_failed_edit(small_clip, tiny_model_dir, tmp_path):
    spec = tmp_path / "batch.yaml"
    common = {"mask": str(small_clip["mask"]), "model": str(tiny_model_dir), "steps": 1, "cache": {"method": "none"}}
    spec.write_text(
        yaml.safe_dump(
            {
                "defaults": common,
                "edits": [
                    {"video": str(small_clip["video"]), "prompt": "a red ball", "output": "a.mp4"},
                    {"video": "missing.mp4", "prompt": "a blue ball", "output": "b.mp4"},
                    {"video": str(small_clip["video"]), "prompt": "a green ball", "output": "c.mp4"},
                ],
            }
        )
    )
    r = invoke("run", spec, "--json")
    assert r.exit_code == 2, r.stderr
    report = json.loads(r.stdout)
    assert [e["status"] for e in report["edits"]] == ["done", "failed", "done"]
    assert "missing.mp4" in report["edits"][1]["error"]
    assert (tmp_path / "a.mp4").exists() and (tmp_path / "c.mp4").exists() and not (tmp_path / "b.mp4").exists()

    again = invoke("run", spec)
    assert again.exit_code == 2
    assert "2 skipped" in again.stdout and "1 failed" in again.stdout


def test_dry_run_plans_without_writing(small_clip, tiny_model_dir, tmp_path):
    out = tmp_path / "never.mp4"
    args = ["edit", small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball",
            "--model", tiny_model_dir, "--steps", 6, "--schedule", "FPRPRF", "-o", out, "--dry-run"]
    r = invoke(*args, "--json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["schedule"] == "FPRPRF"
    # forwards, as a run counts them: 6 steps x 2 guidance branches
    assert plan["branches"] == 2 and plan["decisions"] == {"full": 4, "partial": 4, "reuse": 4}
    assert plan["tokens"]["total"] == 48 and plan["schema_version"] == 3
    assert 0 < plan["flops_ratio"] < 1
    text = invoke(*args)
    assert text.exit_code == 0 and "FPRPRF" in text.stdout
    assert list(tmp_path.iterdir()) == []

    out.write_bytes(b"an earlier edit")  # a dry run writes nothing, so an existing output does not stop it
    again = invoke(*args)
    assert again.exit_code == 0, again.stderr
    assert "exists: the edit itself needs --overwrite" in again.stdout
    assert out.read_bytes() == b"an earlier edit" and list(tmp_path.iterdir()) == [out]


@pytest.mark.slow
def test_hetcache_stats_follow_the_schedule(small_clip, tiny_model_dir, tmp_path):
    out = tmp_path / "cached.mp4"
    r = invoke(
        "edit", small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball",
        "--model", tiny_model_dir, "--steps", 5, "--schedule", "FPRPF", "-o", out, "--json",
        "--width", 128, "--height", 128,  # an 8x8 token grid, so the active set is a strict subset
    )
    assert r.exit_code == 0, r.stderr
    stats = json.loads((tmp_path / "cached.stats.json").read_text())
    assert stats["summary"]["schedule"] == "FPRPF"
    by_step = {(s["step"], s["branch"]): s for s in stats["steps"]}
    for step, letter in enumerate("FPRPF"):
        for branch in ("cond", "uncond"):
            rec = by_step[(step, branch)]
            assert rec["decision"][0].upper() == letter
            if letter == "R":
                assert rec["tokens"]["computed"] == 0 and rec["flops"] == 0
            if letter == "P":
                assert 0 < rec["tokens"]["computed"] < rec["tokens"]["total"]
    assert 0 < stats["summary"]["flops_ratio"] < 1
    assert stats["summary"]["cache_memory_bytes"] > 0


@pytest.mark.slow
def test_demo_fast_preset_spends_at_most_40_percent(tmp_path):
    """The acceptance check of the engine on the shipped demo clip and embedded model."""
    from hetcache_cli.resources import demo_dir

    out = tmp_path / "demo_fast.mp4"
    r = invoke(
        "edit", demo_dir() / "input.mp4", "--mask", demo_dir() / "mask.png", "--prompt", "a red ball",
        "--preset", "fast", "-o", out, "--json",
    )
    assert r.exit_code == 0, r.stderr
    stats = json.loads((tmp_path / "demo_fast.stats.json").read_text())
    decisions = stats["summary"]["decisions"]
    assert decisions["full"] > 0 and decisions["partial"] > 0 and decisions["reuse"] > 0
    assert stats["summary"]["flops_ratio"] <= 0.40
    assert stats["settings"]["cache"]["preset"] == "fast"
