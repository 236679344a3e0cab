"""Token classes on hand-made masks: 17 frames of 128x128 -> a 5 x 8 x 8 grid (320 tokens)."""

import pytest
import torch

from hetcache_cli.cache.tokens import (
    CONTEXT,
    GENERATIVE,
    MARGIN,
    classify_tokens,
    control_mask_to_tokens,
    curve_rank,
    pixel_mask_to_tokens,
    subset_count,
    uniform_subset,
)

GRID = (5, 8, 8)


def classes_of(mask, margin_tokens=1, margin_temporal=True, grid=GRID):
    return classify_tokens(pixel_mask_to_tokens(mask, grid), margin_tokens, margin_temporal)


def empty():
    return torch.zeros(17, 128, 128, dtype=torch.bool)


def token(t, h, w, grid=GRID):
    return t * grid[1] * grid[2] + h * grid[2] + w


def test_one_pixel_dot():
    mask = empty()
    mask[5, 20, 37] = True  # pixel frame 5 -> latent frame 2 (frames 5..8); row 1, column 2
    c = classes_of(mask)
    assert c.generative.tolist() == [token(2, 1, 2)]
    assert c.counts == (1, 26, 293)  # a 3x3x3 box around it
    assert c.labels[token(1, 0, 1)] == MARGIN and c.labels[token(0, 1, 2)] == CONTEXT


@pytest.mark.parametrize("frame, latent", [(0, 0), (1, 1), (4, 1), (5, 2), (16, 4)])
def test_causal_temporal_grouping(frame, latent):
    mask = empty()
    mask[frame, 0, 0] = True
    assert classes_of(mask).generative.tolist() == [token(latent, 0, 0)]


def test_thin_line_survives():
    mask = empty()
    mask[:, :, 47] = True  # a 1-px column: the last pixel of token column 2
    c = classes_of(mask)
    assert c.counts == (40, 80, 200)  # 5 frames x 8 rows x column 2; columns 1 and 3 are margin
    assert set((c.generative % 8).tolist()) == {2}
    assert set((c.margin % 8).tolist()) == {1, 3}


def test_mask_only_in_frame_zero():
    mask = empty()
    mask[0] = True
    c = classes_of(mask)
    assert c.counts == (64, 64, 192)  # latent frame 0; latent frame 1 is the temporal margin
    assert classes_of(mask, margin_temporal=False).counts == (64, 0, 256)


def test_empty_and_full_masks():
    assert classes_of(empty()).counts == (0, 0, 320)
    assert classes_of(torch.ones(17, 128, 128, dtype=torch.bool)).counts == (320, 0, 0)


def test_margin_width():
    mask = empty()
    mask[:, 48:64, 48:64] = True  # exactly token (3, 3) in every frame
    assert classes_of(mask, margin_tokens=1).counts == (5, 40, 275)
    assert classes_of(mask, margin_tokens=2).counts == (5, 120, 195)
    assert classes_of(mask, margin_tokens=0).counts == (5, 0, 315)


def test_labels_partition_the_tokens():
    mask = empty()
    mask[3:9, 30:70, 10:90] = True
    c = classes_of(mask)
    assert sum(c.counts) == 320
    ids = torch.cat([c.generative, c.margin, c.context]).sort().values
    assert torch.equal(ids, torch.arange(320))
    assert torch.equal(c.labels[c.generative], torch.full((c.counts[0],), GENERATIVE, dtype=torch.int8))


def test_reference_frames_are_context_and_sizes_are_checked():
    mask = torch.ones(9, 64, 64, dtype=torch.bool)
    tokens = pixel_mask_to_tokens(mask, (4, 4, 4))  # one reference latent frame in front
    assert not tokens[0].any() and tokens[1:].all()
    with pytest.raises(ValueError, match="pass the mask at the pipeline's height and width"):
        pixel_mask_to_tokens(mask, (3, 5, 4))
    with pytest.raises(ValueError, match="one mask frame per video frame"):
        pixel_mask_to_tokens(mask, (2, 4, 4))


def test_control_mask_fallback_matches_pixel_path_on_aligned_masks():
    z = 8
    mask = torch.zeros(17, 128, 128)
    mask[:, 32:64, 80:96] = 1.0
    # fold like WanVACEPipeline.prepare_masks: 8x8 pixel phases as channels, latent frames by nearest-exact
    folded = mask.view(17, 16, 8, 16, 8).permute(2, 4, 0, 1, 3).flatten(0, 1)  # [64, 17, 16, 16]
    folded = torch.nn.functional.interpolate(folded[None], size=(5, 16, 16), mode="nearest-exact")[0]
    control = torch.cat([torch.randn(1, 2 * z, 5, 16, 16), folded[None]], dim=1)
    from_control = control_mask_to_tokens(control, z, (1, 2, 2))
    assert torch.equal(from_control, pixel_mask_to_tokens(mask > 0.5, GRID))


def test_uniform_subset_is_spread_not_a_prefix():
    mask = empty()
    mask[:, 48:96, 48:96] = True  # 3x3 generative cells, margin = 5x5 ring, all frames
    c = classes_of(mask)
    rank = curve_rank(GRID, torch.device("cpu"))
    count = subset_count(0.5, c.counts[1])
    chosen = uniform_subset(c.margin, rank, count)
    assert chosen.numel() == count == 40
    assert torch.all(chosen[1:] > chosen[:-1])  # sorted, distinct
    frames = torch.bincount(chosen // 64, minlength=5)
    assert frames.min() >= 6  # every latent frame gets its share (a prefix would fill frames 0-2 only)
    # inside each frame, every margin token left out has a chosen neighbour (no gap along the ring)
    picked = torch.zeros(320)
    picked[chosen] = 1.0
    near = torch.nn.functional.max_pool2d(picked.view(5, 8, 8)[:, None], 3, 1, 1).flatten()
    assert bool((near[c.margin] > 0).all())
    assert uniform_subset(c.margin, rank, 0).numel() == 0
    assert torch.equal(uniform_subset(c.margin, rank, 999), c.margin)
