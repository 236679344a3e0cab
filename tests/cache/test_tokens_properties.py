"""Token classes over random masks (hypothesis): a mask pixel always maps to a generative token, a
generative token always covers a mask pixel, margin is exactly the dilation band, and the classes
partition the grid."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hetcache_cli.cache.tokens import CONTEXT, GENERATIVE, MARGIN, classify_tokens, count_tokens, pixel_mask_to_tokens

PROPERTY = settings(max_examples=60, deadline=None)
S, T = 16, 4  # pixels per token side (VAE 8 x patch 2); pixel frames per latent frame


def latent_frame(f: int) -> int:
    """Latent frame 0 is pixel frame 0; latent frame k holds pixel frames 4k-3 .. 4k."""
    return (f + T - 1) // T


@st.composite
def masks(draw):
    """A bool [F, H, W] mask of scattered pixels and thin lines: F = 4k+1 and sides multiples of 16, as every
    model run gets them (windows pad clips to 4k+1 frames, alignment and crops size to 16)."""
    frames = draw(st.integers(0, 4)) * T + 1
    height, width = draw(st.integers(1, 5)) * S, draw(st.integers(1, 5)) * S
    mask = np.zeros((frames, height, width), dtype=bool)
    pixel = st.tuples(st.integers(0, frames - 1), st.integers(0, height - 1), st.integers(0, width - 1))
    for f, y, x in draw(st.lists(pixel, max_size=6)):
        mask[f, y, x] = True
    if draw(st.booleans()):  # a one-pixel line through a frame: sampling would lose it, max-pooling must not
        f, y = draw(st.integers(0, frames - 1)), draw(st.integers(0, height - 1))
        mask[f, y, :] = True
    return torch.from_numpy(mask)


def grid_of(mask):
    frames, height, width = mask.shape
    return ((frames - 1) // T + 1, height // S, width // S)


@PROPERTY
@given(mask=masks())
def test_a_mask_pixel_always_maps_to_a_generative_token(mask):
    generative = pixel_mask_to_tokens(mask, grid_of(mask))
    assert tuple(generative.shape) == grid_of(mask)
    for f, y, x in mask.nonzero().tolist():
        assert generative[latent_frame(f), y // S, x // S], f"pixel (frame {f}, y {y}, x {x}) lost"


@PROPERTY
@given(mask=masks())
def test_a_generative_token_always_covers_a_mask_pixel(mask):
    generative = pixel_mask_to_tokens(mask, grid_of(mask))
    for t, h, w in generative.nonzero().tolist():
        frames = range(0, 1) if t == 0 else range(T * t - (T - 1), T * t + 1)
        footprint = mask[frames.start : frames.stop, h * S : (h + 1) * S, w * S : (w + 1) * S]
        assert footprint.any(), f"token ({t}, {h}, {w}) is generative with no mask pixel under it"


@PROPERTY
@given(mask=masks(), margin_tokens=st.integers(0, 2), margin_temporal=st.booleans())
def test_classes_partition_the_grid_and_margin_is_the_dilation_band(mask, margin_tokens, margin_temporal):
    generative = pixel_mask_to_tokens(mask, grid_of(mask))
    classes = classify_tokens(generative, margin_tokens, margin_temporal)
    n = generative.numel()
    ids = torch.cat([classes.generative, classes.margin, classes.context]).sort().values
    assert torch.equal(ids, torch.arange(n))  # every token in exactly one class
    assert torch.equal(classes.labels.reshape(generative.shape) == GENERATIVE, generative)
    dt = 1 if margin_temporal else 0
    gen = generative.nonzero().tolist()
    for token, label in enumerate(classes.labels.tolist()):
        t, rest = divmod(token, generative.shape[1] * generative.shape[2])
        h, w = divmod(rest, generative.shape[2])
        near = any(abs(t - gt) <= dt and abs(h - gh) <= margin_tokens and abs(w - gw) <= margin_tokens for gt, gh, gw in gen)
        if label != GENERATIVE:
            assert label == (MARGIN if near else CONTEXT), (t, h, w)


@PROPERTY
@given(
    mask=masks(), margin_ratio=st.floats(0, 1), context_ratio=st.floats(0, 1), margin_temporal=st.booleans(),
)  # fmt: skip
def test_counts_and_active_set_size(mask, margin_ratio, context_ratio, margin_temporal):
    counts = count_tokens(mask, 1, margin_temporal, margin_ratio, context_ratio)
    t, h, w = grid_of(mask)
    assert counts["total"] == t * h * w == counts["generative"] + counts["margin"] + counts["context"]
    assert counts["generative"] == int(pixel_mask_to_tokens(mask, grid_of(mask)).sum())
    assert counts["generative"] <= counts["active"] <= counts["total"]
    if margin_ratio == 1 and context_ratio == 1:
        assert counts["active"] == counts["total"]
