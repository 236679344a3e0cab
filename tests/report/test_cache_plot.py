"""The cache plot: drawn for one- and two-expert runs and windowed runs (files and sizes, not pixels)."""

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hetcache_cli.cache.stats import StepStats, TokenCounts
from hetcache_cli.cli.app import app
from hetcache_cli.report import cache_plot
from hetcache_cli.report.cache_plot import class_tokens, plot_png

runner = CliRunner()
CACHE = {"method": "hetcache", "margin_ratio": 0.25, "context_ratio": 0.05}


def run_stats(windows=1, experts=1, steps=6, branches=("cond", "uncond")) -> dict:
    """Statistics in the shape `hetcache edit` writes, the step records made by the real StepStats."""
    all_steps, docs = [], []
    schedule = "FPRPRF"[:steps]
    for w in range(windows):
        stats = StepStats()
        for step in range(steps):
            expert = "transformer_2" if experts == 2 and step >= steps // 2 else "transformer"
            for branch in branches:
                decision = {"F": "full", "P": "partial", "R": "reuse"}[schedule[step]]
                computed = {"full": 100, "partial": 10 + 5 + 3, "reuse": 0}[decision]
                tokens = TokenCounts(total=100, computed=computed, generative=10, margin=20, context=70)
                stats.record(stats.start(torch.device("cpu")), step, 1000.0 - step, branch, decision, tokens,
                             1e9 * computed / 100, expert=expert, flops_full=1e9)  # fmt: skip
        all_steps += [{**r, "window": w} for r in stats.to_list()]
        docs.append({"index": w, "start": 8 * w, "stop": 8 * w + 9, "wall_s": 2.0 + w,
                     "transformer_ms": 1500.0, "resumed": w == 0 and windows > 2})  # fmt: skip
    settings = {"frames": 8 * windows + 1, "width": 64, "height": 64, "steps": steps, "cache": CACHE}
    summary = {"flops_ratio": 0.5, "schedule": schedule, "experts": {}}
    return {"settings": settings, "windows": docs, "steps": all_steps, "summary": summary}


def png_size(data: bytes) -> tuple[int, int]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return image.shape[0], image.shape[1]


def test_tokens_per_class_follow_the_decision():
    def record(decision, computed):
        return {"decision": decision, "tokens": {"total": 100, "computed": computed, "generative": 10, "margin": 20,
                                                 "context": 70}}  # fmt: skip

    assert class_tokens(record("full", 100), CACHE) == (10, 20, 70)
    assert class_tokens(record("reuse", 0), CACHE) == (0, 0, 0)
    assert class_tokens(record("partial", 18), CACHE) == (10, 5, 3)  # margin 25% of 20, context the rest
    assert sum(class_tokens(record("partial", 12), {})) == 12


@pytest.mark.parametrize("windows, experts", [(1, 1), (1, 2), (12, 1)])
def test_plot_for_one_and_two_experts_and_windows(windows, experts):
    data = plot_png(run_stats(windows, experts))
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert png_size(data) == (765, 1170)


def test_plot_without_records_is_refused():
    with pytest.raises(ValueError, match="no step records"):
        plot_png({"steps": []})


def test_eval_plot_reads_the_statistics_beside_the_prediction(tmp_path):
    from hetcache_cli.io.video import write_video

    clip = np.random.default_rng(0).integers(0, 256, (9, 16, 16, 3), dtype=np.uint8)
    write_video(tmp_path / "out.mp4", clip, 8.0, lossless=True)
    (tmp_path / "out.stats.json").write_text(json.dumps(run_stats(1, 2)))
    r = runner.invoke(app, ["eval", str(tmp_path / "out.mp4"), "-r", str(tmp_path / "out.mp4"), "--plot",
                            str(tmp_path / "cache.png")])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "cache.png").stat().st_size > 20_000


def test_without_matplotlib_one_line_says_how_to_install_it(tmp_path, monkeypatch, small_clip):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert "pip install matplotlib" in cache_plot.missing_matplotlib()
    out = tmp_path / "o.mp4"
    for args in (["eval", small_clip["video"], "-r", small_clip["video"], "--plot", tmp_path / "p.png"],
                 ["edit", small_clip["video"], "-m", small_clip["mask"], "-p", "x", "-o", out, "--plot"]):  # fmt: skip
        r = runner.invoke(app, [str(a) for a in args])
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and "pip install matplotlib" in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_eval_of_a_preview_video_plots_its_one_window(tmp_path):
    """A preview's statistics describe one window of the clip, not the preview video's frames: no join check."""
    from hetcache_cli.io.video import write_video

    clip = np.random.default_rng(0).integers(0, 256, (9, 16, 16, 3), dtype=np.uint8)
    write_video(tmp_path / "out.preview.mp4", clip, 8.0, lossless=True)
    stats = run_stats(1, 1)
    stats["windows"][0].update(start=4, stop=13)
    stats["preview"] = {"window": 1}
    (tmp_path / "out.preview.stats.json").write_text(json.dumps(stats))
    r = runner.invoke(app, ["eval", str(tmp_path / "out.preview.mp4"), "-r", str(tmp_path / "out.preview.mp4"),
                            "--plot", str(tmp_path / "cache.png")])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "cache.png").stat().st_size > 20_000
