"""Metrics against hand-computed values and a loop-by-loop SSIM on tiny arrays."""

import json
import math

import numpy as np
import pytest

from hetcache_cli.errors import InputError
from hetcache_cli.eval.metrics import (
    PSNR_CAP_DB,
    compare_videos,
    luma,
    psnr,
    psnr_by_region,
    region_masks,
    ssim,
    ssim_by_region,
    ssim_map,
    warp_error,
    warp_error_by_region,
)


def smooth_texture(h, w, seed=0):
    """Blurred noise in 40..215: a texture optical flow can lock on to."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    lo, hi = blurred.min(), blurred.max()
    return (40 + (blurred - lo) / (hi - lo) * 175).round().astype(np.uint8)


# ---- PSNR --------------------------------------------------------------------------------


def test_psnr_constant_offset():
    ref = np.random.default_rng(1).integers(0, 250, (2, 6, 7, 3), dtype=np.uint8)
    assert psnr(ref + 5, ref) == pytest.approx(10 * math.log10(255**2 / 25), rel=1e-12)


def test_psnr_regions_pool_all_pixels_and_channels():
    ref = np.full((2, 4, 5, 3), 100, dtype=np.uint8)
    mask = np.zeros((2, 4, 5), dtype=bool)
    mask[0, 1:3, 1:3] = True  # 4 pixels in frame 0
    mask[1, 0, 0] = True  # 1 pixel in frame 1
    pred = ref.copy()
    pred[..., 0][mask] += 6  # one channel off by 6: squared error per pixel = 36 / 3 = 12
    regions = {"all": np.ones_like(mask), "inside": mask, "background": ~mask, "none": np.zeros_like(mask)}
    out = psnr_by_region(pred, ref, regions)
    assert out["inside"] == pytest.approx(10 * math.log10(255**2 / 12), rel=1e-12)
    assert out["all"] == pytest.approx(10 * math.log10(255**2 / (12 * 5 / 40)), rel=1e-12)
    assert out["background"] == math.inf
    assert out["none"] is None
    assert psnr(pred, ref, region=mask) == out["inside"]


def test_psnr_identical_is_inf_and_capped_in_compare():
    ref = np.random.default_rng(2).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    assert psnr(ref, ref) == math.inf
    result = compare_videos(ref, ref)
    assert result["psnr"] == {"all": PSNR_CAP_DB}
    json.dumps(result, allow_nan=False)


# ---- SSIM --------------------------------------------------------------------------------


def ssim_loops(x, y):
    """Wang et al. 2004 written out: 11x11 Gaussian (sigma 1.5), only windows inside the image."""
    r, sigma = 5, 1.5
    weights = [[math.exp(-((i - r) ** 2 + (j - r) ** 2) / (2 * sigma**2)) for j in range(11)] for i in range(11)]
    total = sum(sum(row) for row in weights)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    h, w = len(x), len(x[0])
    out = []
    for ci in range(r, h - r):
        row = []
        for cj in range(r, w - r):
            mx = my = 0.0
            for i in range(11):
                for j in range(11):
                    wt = weights[i][j] / total
                    mx += wt * x[ci - r + i][cj - r + j]
                    my += wt * y[ci - r + i][cj - r + j]
            vx = vy = cxy = 0.0
            for i in range(11):
                for j in range(11):
                    wt = weights[i][j] / total
                    dx = x[ci - r + i][cj - r + j] - mx
                    dy = y[ci - r + i][cj - r + j] - my
                    vx += wt * dx * dx
                    vy += wt * dy * dy
                    cxy += wt * dx * dy
            row.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
        out.append(row)
    return np.array(out)


def rgb_luma_lists(frame):
    return [[0.299 * int(p[0]) + 0.587 * int(p[1]) + 0.114 * int(p[2]) for p in row] for row in frame]


def test_ssim_identical_is_one():
    ref = np.random.default_rng(3).integers(0, 256, (2, 13, 14, 3), dtype=np.uint8)
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_loop_reference():
    rng = np.random.default_rng(4)
    ref = smooth_texture(13, 15, seed=4)[None]
    pred = np.clip(ref.astype(int) + rng.integers(-30, 31, ref.shape), 0, 255).astype(np.uint8)
    expected = ssim_loops(rgb_luma_lists(pred[0]), rgb_luma_lists(ref[0]))
    assert expected.shape == (3, 5)
    np.testing.assert_allclose(luma(pred[0]), np.array(rgb_luma_lists(pred[0])), atol=1e-9)
    np.testing.assert_allclose(ssim_map(luma(pred[0]), luma(ref[0])), expected, atol=1e-9)
    assert expected.mean() < 0.95
    assert ssim(pred, ref) == pytest.approx(expected.mean(), abs=1e-9)

    region = np.zeros((1, 13, 15), dtype=bool)
    region[0, 6, 5:8] = True  # interior row 1, columns 0..2
    region[0, 0:3, :] = True  # border rows: outside the valid map, ignored
    assert ssim(pred, ref, region) == pytest.approx(expected[1, 0:3].mean(), abs=1e-9)
    border_only = np.zeros_like(region)
    border_only[0, :5] = True
    assert ssim_by_region(pred, ref, {"b": border_only}) == {"b": None}


def test_ssim_rejects_frames_smaller_than_window():
    ref = np.zeros((1, 10, 20, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="11x11"):
        ssim(ref, ref)


# ---- regions -----------------------------------------------------------------------------


def test_region_masks_exact_pixels():
    mask = np.zeros((2, 9, 9), dtype=bool)
    mask[0, 4, 4] = True  # frame 1 has no mask: all background
    r1 = region_masks(mask, margin_px=1)
    cross = np.zeros((9, 9), dtype=bool)
    cross[3, 4] = cross[5, 4] = cross[4, 3] = cross[4, 5] = True
    np.testing.assert_array_equal(r1["margin"][0], cross)
    assert not r1["margin"][1].any()
    counts = {k: int(v.sum()) for k, v in r1.items()}
    assert counts == {"all": 162, "inside": 1, "margin": 4, "background": 76 + 81}

    r2 = region_masks(mask, margin_px=2)  # |d| <= 2: 4 at distance 1, 4 at sqrt 2, 4 at 2
    assert int(r2["margin"][0].sum()) == 12
    assert int(r2["background"][0].sum()) == 81 - 13
    for r in (r1, r2):
        total = r["inside"].astype(int) + r["margin"] + r["background"]
        np.testing.assert_array_equal(total, 1)


def test_region_masks_zero_and_negative_margin():
    mask = np.zeros((1, 5, 5), dtype=bool)
    mask[0, 2, 2] = True
    assert not region_masks(mask, margin_px=0)["margin"].any()
    with pytest.raises(InputError, match="-1 px"):
        region_masks(mask, margin_px=-1)


def test_compare_reports_none_for_empty_region_and_only_all_without_mask():
    ref = np.random.default_rng(5).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    pred = ref ^ 1
    mask = np.zeros((2, 12, 12), dtype=bool)
    mask[:, 4:8, 4:8] = True
    result = compare_videos(pred, ref, mask, margin_px=0)
    assert result["pixels"] == {"all": 288, "inside": 32, "margin": 0, "background": 256}
    for values in (result["psnr"], result["ssim"], result["temporal"]["pred"], result["temporal"]["delta"]):
        assert set(values) == {"all", "inside", "margin", "background"}
        assert values["margin"] is None and values["inside"] is not None
    json.dumps(result, allow_nan=False)

    plain = compare_videos(pred, ref)
    assert set(plain["psnr"]) == set(plain["ssim"]) == set(plain["temporal"]["ref"]) == {"all"}
    assert plain["margin_px"] is None and plain["frames"] == 2 and plain["size"] == {"width": 12, "height": 12}


# ---- temporal ----------------------------------------------------------------------------


def test_warp_error_static_is_zero_and_flicker_is_positive():
    frame = smooth_texture(32, 32)
    static = np.repeat(frame[None], 4, axis=0)
    assert warp_error(static) == pytest.approx(0.0, abs=0.05)

    flicker = static.copy()
    flicker[1::2] += 20  # every other frame 20 levels brighter (max 215 + 20: no overflow)
    assert 15 < warp_error(flicker) < 25


def test_warp_error_follows_motion():
    big = smooth_texture(32, 48, seed=6)
    moving = np.stack([big[:, 8 - 2 * t : 40 - 2 * t] for t in range(4)])  # content moves right 2 px / frame
    naive = np.abs(np.diff(moving.astype(float), axis=0)).mean()
    assert naive > 5
    assert warp_error(moving) < 0.3 * naive


def test_warp_error_regions_and_single_frame():
    static = np.repeat(smooth_texture(32, 32, seed=7)[None], 3, axis=0)
    mask = np.zeros((3, 32, 32), dtype=bool)
    mask[:, 12:20, 12:20] = True
    flicker = static.copy()
    flicker[1, 12:20, 12:20] += 30
    # Farneback's 15 px window smears the flow around the change: the background starts 10 px away
    out = warp_error_by_region(flicker, region_masks(mask, margin_px=10))
    assert out["inside"] > 20
    assert out["background"] < 0.05 * out["inside"]
    assert warp_error(static[:1]) is None
    result = compare_videos(static[:1], static[:1], mask[:1])
    assert result["temporal"] is None and "2 frames" in result["skipped"]["temporal"]
