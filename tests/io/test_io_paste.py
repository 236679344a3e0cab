import cv2
import numpy as np
import pytest

from hetcache_cli.io.paste import paste_back, paste_region

F, H, W = 3, 48, 64


@pytest.fixture
def pair():
    rng = np.random.default_rng(1)
    edited = rng.integers(0, 256, (F, H, W, 3), dtype=np.uint8)
    source = rng.integers(0, 256, (F, H, W, 3), dtype=np.uint8)
    mask = np.zeros((F, H, W), bool)
    mask[:, 16:28, 20:36] = True
    mask[2] = False  # a frame with nothing to edit
    return edited, source, mask


def test_outside_region_is_source_inside_mask_is_edited(pair):
    edited, source, mask = pair
    out = paste_back(edited, source, mask, dilation_px=3, feather_px=4)
    region = paste_region(mask, 3, 4)
    assert np.array_equal(out[~region], source[~region])
    assert np.array_equal(out[mask], edited[mask])
    assert not region[2].any() and np.array_equal(out[2], source[2])
    band = region & ~mask
    assert (out[band] != source[band]).any() and (out[band] != edited[band]).any()  # a real blend


def test_region_is_bounded_by_dilation_plus_feather(pair):
    _, _, mask = pair
    region = paste_region(mask, 3, 4)[0]
    assert region[16:28, 20:36].all()
    assert region[16, 13] and region[16, 42]  # 7 px left / right of the mask edge
    assert not region[16, 12] and not region[16, 43]  # 8 px: beyond 3 + 4
    assert not region[10, 14]  # a square Gaussian window reaches this corner; the band does not
    dist_px = cv2.distanceTransform((~mask[0]).astype(np.uint8), cv2.DIST_L2, 5)
    assert dist_px[region].max() <= 3 + 4 + 0.5


def test_zero_dilation_and_feather_is_hard_mask(pair):
    edited, source, mask = pair
    assert np.array_equal(paste_region(mask, 0, 0), mask)
    out = paste_back(edited, source, mask, 0, 0)
    assert np.array_equal(out, np.where(mask[..., None], edited, source))


def test_shape_mismatch(pair):
    edited, source, mask = pair
    with pytest.raises(ValueError):
        paste_back(edited, source, mask[:, :-1])
    with pytest.raises(ValueError):
        paste_back(edited[:2], source, mask)
