"""The device side of a planned run, made once per run and shared by the guidance branches.

The plan (plan.py) says how many tokens each class has and how many a PARTIAL step computes;
here those tokens are found on the device: the token classes of the mask, the fixed part of the
active set (generative + a uniform margin subset) and the uniform context subset. Their sizes
come from the same functions the plan's counts do (tokens.py), so no step syncs to learn them.
"""

from __future__ import annotations

import logging

import torch

from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.cache.flops import ModelDims
from hetcache_cli.cache.plan import TokenPlan
from hetcache_cli.cache.selection import active_indices, select_context, static_active
from hetcache_cli.cache.state import RunState
from hetcache_cli.cache.tokens import (
    TokenClasses,
    classify_tokens,
    control_mask_to_tokens,
    curve_rank,
    pixel_mask_to_tokens,
    subset_count,
    uniform_subset,
)

logger = logging.getLogger(__name__)


def token_classes(run: RunState, config: HetCacheConfig, module, inputs, user_mask=None) -> TokenClasses:
    """The run's token classes on the device (made at its first forward, kept for the others).

    `user_mask`: (pixel mask [F, H, W], spatial, temporal) given with `set_mask` on a bare transformer.
    """
    from hetcache_cli.cache.engine import grid_of

    grid = grid_of(module, inputs.hidden_states)
    if run.classes is not None and run.classes.grid == grid:
        return run.classes
    device = inputs.hidden_states.device
    p_t, p_h, _ = module.config.patch_size
    pixel, (spatial, temporal) = run.pixel_mask, run.factors
    if pixel is None and user_mask is not None:
        pixel, spatial, temporal = user_mask
    if pixel is not None:
        spatial = spatial or 8 * p_h
        temporal = (temporal or 4) * p_t
        generative = pixel_mask_to_tokens(pixel.to(device), grid, spatial, temporal)
    else:
        generative = control_mask_to_tokens(
            inputs.control_hidden_states, module.config.in_channels, module.config.patch_size
        )
    classes = classify_tokens(generative, config.margin_tokens, config.margin_temporal)
    rank = curve_rank(grid, device)
    n_gen, n_margin, n_context = classes.counts
    margin_subset = uniform_subset(classes.margin, rank, subset_count(config.margin_ratio, n_margin))
    run.classes = classes
    run.static_active = static_active(classes, margin_subset)
    run.n_context_pick = subset_count(config.context_ratio, n_context)
    run.uniform_context = uniform_subset(classes.context, rank, run.n_context_pick)
    logger.debug(
        "token classes %s: generative %d, margin %d (%d active), context %d (%d active)",
        grid, n_gen, n_margin, margin_subset.numel(), n_context, run.n_context_pick,
    )
    return classes


def class_counts(run: RunState) -> TokenPlan:
    """The counts of the classes found on the device, as the plan states them."""
    n_gen, n_margin, n_context = run.classes.counts
    return TokenPlan(total=run.classes.n_tokens, active=n_active(run), generative=n_gen, margin=n_margin,
                     context=n_context)  # fmt: skip


def n_active(run: RunState) -> int:
    """Tokens computed on a PARTIAL step (fixed per run, known on the host)."""
    if run.static_active is None:
        return 0
    return run.static_active.numel() + run.n_context_pick


def rope(run: RunState, module, hidden_states: torch.Tensor):
    key = (tuple(hidden_states.shape[2:]), hidden_states.device)
    if run.rope_key != key:
        run.rope = module.rope(hidden_states)
        run.rope_key = key
    return run.rope


def dims(run: RunState, module, inputs) -> ModelDims:
    text_len = inputs.encoder_hidden_states.shape[1]
    if inputs.encoder_hidden_states_image is not None:
        text_len += inputs.encoder_hidden_states_image.shape[1]
    cached = run.extras.get(("dims", id(module)))
    if cached is None or cached.text_len != text_len:
        cached = run.extras[("dims", id(module))] = ModelDims.from_config(module.config, text_len)
    return cached


def score_layer(config: HetCacheConfig, n_layers: int) -> int:
    """The main block that scores context tokens; checked against the model before it loads (model_check.py)."""
    layer = config.score_layer
    if layer == -1:
        return n_layers // 2
    if not 0 <= layer < n_layers:
        raise ValueError(f"score_layer {layer} is out of range: use -1 (middle block) or 0..{n_layers - 1}")
    return layer


def choose_active(run: RunState, config: HetCacheConfig, state, probe, batch: int, device, parallel=None,
                  ulysses=None, receive: bool = False) -> torch.Tensor:  # fmt: skip
    """A FULL step's new active set [B, M]: the probe's selection (or the uniform subset) joined to the fixed
    part. Under a layout (parallel.py, ulysses.py) every rank ends with the same set: a Ulysses group takes
    its rank 0's, and the rank of the first guidance branch sends it to the other branch's (`receive`)."""
    if receive:
        return parallel.share_selection(None, device)
    if probe is not None:
        chosen, state.centroids = select_context(
            probe, run.n_context_pick, config.kmeans_clusters, config.kmeans_iters, state.centroids
        )
    else:
        chosen = run.uniform_context
    active = active_indices(run.static_active, chosen, batch)
    if ulysses is not None:  # the group's rank 0 decides, so no rounding parts the ranks
        active = ulysses.agree(active, device)
    if parallel is not None:
        parallel.share_selection(active, device)
    return active

