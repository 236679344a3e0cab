"""The fidelity suite's pieces: fronts, acceptance checks, clips, and the runner on a tiny pipeline."""

import math

import numpy as np
import pytest
import torch

from hetcache_cli.bench.clips import SuiteClip, suite_clips
from hetcache_cli.bench.fronts import front_at, front_margin, pareto_front
from hetcache_cli.bench.suite import Setting, check_clip, run_clip, summarise
from hetcache_cli.cache import HetCacheConfig


def test_pareto_front_drops_dominated_points_and_sorts_by_cut():
    points = [(1.0, 60.0), (2.0, 50.0), (1.5, 45.0), (3.0, 40.0), (2.5, 50.0), (4.0, 30.0)]
    assert pareto_front(points) == [(1.0, 60.0), (2.5, 50.0), (3.0, 40.0), (4.0, 30.0)]
    # the slowest point is dominated: the front still starts at its cut, at the better quality
    assert pareto_front([(1.3, 54.0), (1.6, 56.0), (3.0, 45.0)]) == [(1.3, 56.0), (1.6, 56.0), (3.0, 45.0)]


def test_front_is_read_by_linear_interpolation_and_not_outside_its_cuts():
    front = [(1.0, 60.0), (2.0, 50.0), (4.0, 30.0)]
    assert front_at(front, 1.5) == pytest.approx(55.0)
    assert front_at(front, 3.0) == pytest.approx(40.0)
    assert front_at(front, 4.0) == pytest.approx(30.0)
    assert front_at(front, 0.9) is None and front_at(front, 4.1) is None


def test_front_margin_is_the_smallest_lead_and_needs_coverage():
    better = [(1.0, 60.0), (4.0, 42.0)]
    other = [(1.0, 55.0), (3.0, 41.0), (4.0, 40.0)]
    lead, at = front_margin(better, other, 1.5, 4.0)
    # better at 3x: 60 - 18 * 2 / 3 = 48; other: 41 -> the smallest lead is 2 dB at 4x
    assert lead == pytest.approx(2.0) and at == pytest.approx(4.0)
    assert front_margin(better, [(2.0, 50.0), (4.0, 40.0)], 1.5, 4.0)[0] is None  # other starts at 2x


def _p(method, cut, inside, background, preset=None):
    return {"method": method, "preset": preset, "flops_cut": cut, "label": f"{method} {cut}",
            "schedule": "F", "decisions": {"full": 1, "partial": 0, "reuse": 0},
            "psnr": {"inside": inside, "margin": inside, "background": background, "all": inside}}


def test_clip_checks_compare_fronts_and_balanced_background():
    points = [_p("teacache", 1.2, 55, 70), _p("teacache", 4.5, 35, 50),
              _p("hetcache", 1.4, 65, 72), _p("hetcache", 4.2, 45, 51),
              _p("hetcache", 3.0, 50, 62, preset="balanced")]
    checks = check_clip(points)
    assert checks["front_ok"] and checks["front_lead_db"] > 0
    # teacache's background at 3x: 70 - 20 * 1.8 / 3.3 = 59.1 -> balanced leads by 2.9 dB
    assert checks["balanced_bg_lead_db"] == pytest.approx(62 - (70 - 20 * 1.8 / 3.3))
    worse = points[:4] + [_p("hetcache", 3.0, 50, 55, preset="balanced")]
    assert not check_clip(worse)["balanced_bg_ok"]
    rows = [{"clip": "a", "guidance": 1.0, "points": points, "checks": checks}]
    summary = summarise(rows)
    assert summary["median_ok"] and summary["median_clip"] == "a g=1"


def test_suite_clips_cover_the_cases_and_are_deterministic():
    clips = suite_clips(frames=9, height=64, width=80)
    again = suite_clips(frames=9, height=64, width=80)
    assert [c.name for c in clips] == ["shapes-path", "shapes-track", "photo-pan-large", "photo-zoom-moving",
                                       "window-second", "photo-crop-hires"]
    for c, d in zip(clips, again):
        assert c.frames.shape == (9, 64, 80, 3) and c.frames.dtype == np.uint8
        assert c.mask.shape == (9, 64, 80) and c.mask.dtype == bool
        assert np.array_equal(c.frames, d.frames) and np.array_equal(c.mask, d.mask)
        assert 0 < c.mask_fraction < 0.5
        assert (c.frames[0] != c.frames[-1]).any()  # the camera or the object moves
    assert {c.moving_mask for c in clips} == {True, False}
    fractions = [c.mask_fraction for c in clips]
    assert min(fractions) < 0.06 and max(fractions) > 0.25  # small and large masks


def test_large_mask_clips_are_large_deterministic_and_not_in_the_default_suite():
    from hetcache_cli.bench.clips import large_mask_clips

    clips, again = large_mask_clips(9, 64, 80), large_mask_clips(9, 64, 80)
    assert [c.name for c in clips] == ["shapes-large", "photo-still-large"]
    assert not {c.name for c in clips} & {c.name for c in suite_clips(9, 64, 80)}
    for c, d in zip(clips, again):
        assert c.frames.shape == (9, 64, 80, 3) and c.mask.shape == (9, 64, 80)
        assert np.array_equal(c.frames, d.frames) and np.array_equal(c.mask, d.mask)
        assert 0.3 < c.mask_fraction < 0.4  # photo-pan-large's third of the frame
    assert [c.moving_mask for c in clips] == [False, True]


def test_window_clip_starts_from_known_frames_and_crop_clip_is_what_crop_auto_gives():
    from hetcache_cli.bench.clips import crop_clip, window_clip
    from hetcache_cli.pipeline.windows import plan_windows

    window = plan_windows(2 * 17 - 1, 17, 8)[1]
    clip = window_clip()
    assert window.known == 4 and clip.frames.shape[0] == window.model_frames == 17
    assert not clip.mask[: window.known].any() and clip.mask[window.known :].any(axis=(1, 2)).all()
    # the known frames carry the first window's edit: a red ball where the source has a white one
    red = (clip.frames[..., 0] > 180) & (clip.frames[..., 1] < 90) & (clip.frames[..., 2] < 90)
    assert red[: window.known].any(axis=(1, 2)).all() and not red[window.known :].any()
    crop = crop_clip(128, 160, 17)
    assert crop.frames.shape == (17, 128, 160, 3) and "crop: auto" in crop.description
    assert "240x192" in crop.description  # a box of the 400x320 source, scaled down to the model's size


def test_run_clip_scores_against_uncached_and_reuses_the_conditioning(tiny_model_dir):
    from hetcache_cli.pipeline.model import ModelRef, load_pipeline

    pipe = load_pipeline(ModelRef("tiny", tiny_model_dir), torch.device("cpu"), torch.float32)
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    mask = np.zeros((5, 32, 48), bool)
    mask[:, 8:24, 8:20] = True
    clip = SuiteClip("tiny", "random frames", frames, mask, "a red ball")
    encodes = []
    original = pipe.prepare_video_latents
    pipe.prepare_video_latents = lambda *a, **k: encodes.append(1) or original(*a, **k)
    # all FULL and the prompt's K/V projected every step: exactly the uncached run and its FLOPs
    same_as_uncached = HetCacheConfig(method="teacache", schedule="FFFF", text_kv=False)
    settings = [Setting("teacache", "same as uncached", same_as_uncached),
                Setting("hetcache", "cached", HetCacheConfig(schedule="FRPF")),
                Setting("hetcache", "hetcache:balanced", HetCacheConfig(schedule="FRPF"), preset="balanced")]
    from hetcache_cli.bench.runner import shared_conditioning

    torch.set_num_threads(1)
    with shared_conditioning(pipe):
        row = run_clip(pipe, clip, 1.0, 4, settings)
    del pipe.prepare_video_latents
    assert len(encodes) == 1  # one VAE encode for all four runs
    same, cached, preset = row["points"]
    assert same["flops_cut"] == pytest.approx(1.0) and same["psnr"]["inside"] == 100.0
    assert same["psnr"]["visible"] == 100.0
    # the visible region is the mask and its paste band: between the in-mask and the whole-frame errors
    assert cached["psnr"]["visible"] < 100.0 and cached["psnr"]["visible"] >= cached["psnr"]["inside"] - 3
    assert cached["flops_cut"] > 1.3 and cached["schedule"] == "FRPF"
    assert math.isfinite(cached["psnr"]["background"]) and cached["psnr"]["inside"] < 100.0
    assert preset["psnr"] == cached["psnr"]  # the same setting is one run


def test_merge_reports_takes_the_methods_not_rerun_and_recomputes_the_checks():
    from hetcache_cli.bench.suite import merge_reports

    tea = [_p("teacache", 1.2, 55, 70), _p("teacache", 4.5, 35, 50)]
    old_het = [_p("hetcache", 1.4, 50, 60), _p("hetcache", 4.2, 30, 45), _p("hetcache", 3.0, 40, 50, preset="balanced")]
    new_het = [_p("hetcache", 1.4, 65, 72), _p("hetcache", 4.2, 45, 51), _p("hetcache", 3.0, 50, 62, preset="balanced")]
    row = {"clip": "a", "guidance": 1.0}
    earlier = {"steps": 30, "rows": [{**row, "points": tea + old_het, "checks": check_clip(tea + old_het)}]}
    new = {"steps": 30, "rows": [{**row, "points": new_het, "checks": check_clip(new_het)}]}
    assert not earlier["rows"][0]["checks"]["front_ok"] and new["rows"][0]["checks"]["front_lead_db"] is None
    merged = merge_reports(new, earlier)
    points = merged["rows"][0]["points"]
    assert sorted(p["psnr"]["inside"] for p in points if p["method"] == "hetcache") == [45, 50, 65]
    assert merged["rows"][0]["checks"]["front_ok"] and merged["summary"]["front_ok"]
    assert merged["merged_methods"] == ["teacache"]
    with pytest.raises(ValueError, match="20-step"):
        merge_reports(new, {**earlier, "steps": 20})


def test_visible_check_compares_with_step_only_reuse_at_the_cuts_it_reaches():
    from hetcache_cli.bench.suite import check_visible

    def p(method, cut, visible):
        return {**_p(method, cut, visible, visible), "psnr": {"visible": visible, "inside": visible,
                                                             "background": visible}}

    ref = [p("forecast-reuse", 1.5, 70), p("forecast-reuse", 3.0, 55)]  # reaches 1.5x, 2x and 3x
    het = [p("hetcache", 1.4, 72), p("hetcache", 3.0, 54.7)]
    checks = check_visible(ref + het)
    assert set(checks["visible_leads_db"]) == {"1.5", "2", "3"}
    assert checks["visible_ok"]  # 3x: 54.7 against 55: within the 0.5 dB tolerance
    assert checks["visible_leads_db"]["3"] == pytest.approx(-0.3)
    worse = check_visible(ref + [p("hetcache", 1.4, 72), p("hetcache", 3.0, 54.3)])
    assert not worse["visible_ok"] and worse["visible_leads_db"]["3"] == pytest.approx(-0.7)
    short = check_visible(ref + [p("hetcache", 1.4, 72), p("hetcache", 2.5, 60)])  # does not reach 3x
    assert short["visible_leads_db"]["3"] is None and not short["visible_ok"]
    assert check_visible(het)["visible_ok"] is None  # no step-only sweep: no verdict
    assert check_visible(het)["visible_8bit_ok"] is None


def test_visible_check_read_at_the_8_bit_floor_counts_only_what_an_8_bit_video_can_show():
    from hetcache_cli.bench.suite import EIGHT_BIT_DB, check_visible

    assert EIGHT_BIT_DB == pytest.approx(58.92, abs=0.01)  # rounding error RMS 1/sqrt(12) of a level

    def p(method, cut, visible):
        return {**_p(method, cut, visible, visible), "psnr": {"visible": visible, "inside": visible,
                                                             "background": visible}}

    # 2x: 80 against 83 (both above the floor: a miss of the plain check only); 3x: 58 against 61 (a miss of both:
    # hetcache below the floor by 0.9 dB)
    ref = [p("forecast-reuse", 1.5, 90), p("forecast-reuse", 2.0, 83), p("forecast-reuse", 3.0, 61)]
    het = [p("hetcache", 1.5, 91), p("hetcache", 2.0, 80), p("hetcache", 3.0, 58)]
    checks = check_visible(ref + het)
    assert checks["visible_leads_db"] == pytest.approx({"1.5": 1.0, "2": -3.0, "3": -3.0})
    assert checks["visible_leads_8bit_db"] == pytest.approx({"1.5": 0.0, "2": 0.0, "3": 58.0 - EIGHT_BIT_DB})
    assert not checks["visible_ok"] and not checks["visible_8bit_ok"]
    above = check_visible(ref[:2] + het[:2])  # only the cuts both fronts hold above the floor
    assert not above["visible_ok"] and above["visible_8bit_ok"]
