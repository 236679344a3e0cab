"""The visible-region PSNR: what two edits differ by after the paste-back composites them."""

import math

import numpy as np
import pytest

from hetcache_cli.eval.metrics import psnr
from hetcache_cli.eval.visible import visible_alpha, visible_psnr
from hetcache_cli.io.paste import paste_back, paste_region


def _mask():
    mask = np.zeros((2, 40, 48), bool)
    mask[:, 12:24, 16:30] = True
    return mask


def test_alpha_is_the_paste_backs_own():
    mask = _mask()
    alpha = visible_alpha(mask, 4, 4)
    assert np.array_equal(alpha > 0, paste_region(mask, 4, 4))
    assert (alpha[mask] == 1).all() and ((alpha > 0) & (alpha < 1)).any()
    # paste_back with a white edit over a black source writes alpha * 255
    white, black = np.full((2, 40, 48, 3), 255, np.uint8), np.zeros((2, 40, 48, 3), np.uint8)
    np.testing.assert_allclose(paste_back(white, black, mask, 4, 4)[..., 0], alpha * 255, atol=0.5)
    assert np.all(visible_alpha(mask, paste=False) == 1)


def test_visible_psnr_is_the_composites_psnr_over_the_paste_region():
    mask = _mask()
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 255, (2, 40, 48, 3))
    pred = ref + rng.normal(0, 2, ref.shape)
    alpha = visible_alpha(mask, 4, 4)
    source = rng.uniform(0, 255, ref.shape)
    a = alpha[..., None]
    composite = lambda edit: a * edit + (1 - a) * source  # noqa: E731
    assert visible_psnr(pred, ref, alpha) == pytest.approx(psnr(composite(pred), composite(ref), alpha > 0))
    # a change beyond the band never reaches the output; one in the band does, weighted by alpha
    far = pred.copy()
    far[:, :, :4] += 50
    assert visible_psnr(far, ref, alpha) == pytest.approx(visible_psnr(pred, ref, alpha))
    band = pred.copy()
    band[(alpha > 0) & (alpha < 1)] += 20
    assert visible_psnr(band, ref, alpha) < visible_psnr(pred, ref, alpha) - 3
    assert visible_psnr(ref, ref, alpha) == math.inf
    assert visible_psnr(pred, ref, np.zeros_like(alpha)) is None
