"""Attaching HetCache: `apply_hetcache` / `remove_hetcache` / `get_hetcache` on a pipeline or a transformer."""

from __future__ import annotations

from diffusers.hooks.hooks import HookRegistry

from hetcache_cli.cache import offload
from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.cache.expert_group import attach_group
from hetcache_cli.cache.experts import pipeline_experts
from hetcache_cli.cache.flops import ModelDims
from hetcache_cli.cache.hook import HOOK_NAME, HetCacheHook
from hetcache_cli.cache.model_check import check_against_configs
from hetcache_cli.cache.stats import StepStats


def apply_hetcache(pipe_or_transformer, config: HetCacheConfig, stats: StepStats | None = None) -> HetCacheHook:
    """Attach HetCache to a `WanVACEPipeline` (recommended) or a bare `WanVACETransformer3DModel`.

    Returns the hook, which is also the handle: `handle.schedule`, `handle.begin_run(timesteps)`,
    `handle.set_mask(mask)`. With a pipeline, just call the pipeline; `stats` is reset at the
    start of every call and holds one record per step and guidance branch afterwards. A Wan2.2
    pipeline with `transformer_2` gets a hook on each expert (`handle.group.hooks`); the handle
    is the first expert's. Works under model CPU offload and group offloading, applied before
    or after.
    """
    experts, pipe = _split(pipe_or_transformer)
    for name, transformer in experts:
        if HookRegistry.check_if_exists_or_initialize(transformer).get_hook(HOOK_NAME) is not None:
            raise ValueError("HetCache is already applied to this transformer: call remove_hetcache() first")
        if config.method != "none":  # "none" runs the transformer's own forward: block hooks run as usual
            offload.check_blocks(transformer)
        # settings that depend on the model (score_layer) fail here, not at the first step
        check_against_configs(config, {name: dict(transformer.config)}, {}, type(transformer).__name__)
    if stats is not None and stats.dims is None:
        stats.dims = ModelDims.from_config(experts[0][1].config)
    hooks = {}
    for name, transformer in experts:
        hooks[name] = HetCacheHook(config, stats, pipe, expert=name)
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        offload.attach(registry, hooks[name], HOOK_NAME, outermost=config.method == "none")
    if pipe is not None:
        attach_group(pipe, hooks)
    return next(iter(hooks.values()))


def remove_hetcache(pipe_or_transformer) -> None:
    """Detach HetCache (caches freed); a no-op when it is not attached."""
    experts, pipe = _split(pipe_or_transformer)
    for _, transformer in experts:
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        hook = registry.get_hook(HOOK_NAME)
        if hook is not None:
            hook.reset_state(transformer)
            offload.detach(registry, hook, HOOK_NAME)
    if pipe is not None and hasattr(pipe.__dict__.get("prepare_masks"), "_hetcache_original"):
        del pipe.prepare_masks


def get_hetcache(pipe_or_transformer) -> HetCacheHook | None:
    experts, _ = _split(pipe_or_transformer)
    return HookRegistry.check_if_exists_or_initialize(experts[0][1]).get_hook(HOOK_NAME)


def _split(obj):
    """([(expert name, transformer)], pipeline or None)."""
    if hasattr(obj, "prepare_masks") or hasattr(obj, "transformer_2"):
        experts = pipeline_experts(obj)
        if not hasattr(obj, "prepare_masks") or not experts or experts[0][0] != "transformer":
            raise ValueError(
                f"{type(obj).__name__} is not a Wan-VACE pipeline with a transformer: HetCache needs WanVACEPipeline"
            )
        return experts, obj
    if getattr(obj, "transformer", None) is not None:
        raise ValueError(f"{type(obj).__name__} is not a Wan-VACE pipeline: HetCache needs WanVACEPipeline")
    if not hasattr(obj, "vace_blocks"):
        raise ValueError(f"{type(obj).__name__} is not a WanVACETransformer3DModel: HetCache needs a Wan-VACE model")
    return [("transformer", obj)], None
