"""Making the cache plan (plan.py): one function for the hook at run time and for the dry run.

`plan_run` takes the transformer(s), the timesteps, the token counts and the settings and returns
a frozen `CachePlan`; it reads the models' configs and runs their timestep embedders (the
schedule's signal), nothing else. What it needs to know about the device (free memory, weights
still to come under offloading) is measured apart, by `device_room`, so the same inputs give the
same plan. Host syncs happen here only, once per run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import torch

from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.cache.experts import plan_experts, step_experts
from hetcache_cli.cache.flops import ModelDims, forward_flops
from hetcache_cli.cache.plan import FULL, PARTIAL, REUSE, CachePlan, ExpertPlan, StepPlan, TokenPlan
from hetcache_cli.cache.schedule import step_flops
from hetcache_cli.cache.state import CacheMemoryError, cache_layout, cache_memory, format_bytes
from hetcache_cli.cache.storage import CacheLayout, activation_bytes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceRoom:
    """What the GPU has for the caches at the start of a run (`cache_device: auto`)."""

    free_bytes: int
    pending_bytes: int = 0  # transformer weights in host memory that come to the GPU when it runs


def device_room(transformers: Sequence, device: torch.device | None) -> DeviceRoom | None:
    """The GPU's free memory now and the weights still to load; None off CUDA (nothing to decide)."""
    if device is None or torch.device(device).type != "cuda":
        return None
    pending = 0
    for module in transformers:
        registry = getattr(module, "_diffusers_hook", None)
        grouped = registry is not None and registry.get_hook("group_offloading") is not None
        if not grouped:  # model CPU offload: the weights come to the GPU when the transformer runs
            pending = max(pending, sum(p.numel() * p.element_size() for p in module.parameters() if p.device.type == "cpu"))
    free, _ = torch.cuda.mem_get_info(device)
    return DeviceRoom(free_bytes=int(free), pending_bytes=pending)


def forecast_for(config: HetCacheConfig, method: str | None = None) -> bool:
    """Whether a run of `method` (default: the config's) keeps residual slopes: `auto` = hetcache only."""
    method = method or config.method
    if method == "none" or config.forecast == "none":
        return False
    return config.forecast in ("linear", "residual") or method == "hetcache"


def plan_layout(
    config: HetCacheConfig, dims: ModelDims, model_dtype: torch.dtype, n_tokens: int, branches: int,
    room: DeviceRoom | None, method: str,
) -> tuple[CacheLayout, list[str]]:
    """(`cache_dtype` and `cache_device` resolved, notes); `auto` keeps K/V on the GPU only if they fit `room`:
    the caches, the weights still to come and an activation estimate within the GPU's free memory."""
    text_kv = config.text_kv and method != "none"
    host = config.cache_device == "cpu"
    forecast = forecast_for(config, method)
    kv = forecast and method == "hetcache" and config.forecast != "residual"
    notes: list[str] = []
    if config.cache_device == "auto" and method == "hetcache" and room is not None:
        reserve = activation_bytes(dims.dim, dims.ffn_dim, dims.num_vace_layers, n_tokens, model_dtype)
        free, pending = room.free_bytes, room.pending_bytes

        def need(with_kv: bool) -> int:
            layout = cache_layout(config.cache_dtype, model_dtype, False, text_kv, forecast, with_kv)
            return cache_memory(dims, n_tokens, branches, layout, model_dtype, method)["device"]

        if kv and need(True) + pending + reserve > free and need(False) + pending + reserve <= free:
            kv = False  # the K/V forecast goes before the K/V themselves leave the GPU
            notes.append(
                f"K/V caches with the K/V forecast ({format_bytes(need(True))}) do not fit in the GPU's free memory "
                f"({format_bytes(free)}): running without the K/V forecast (forecast: residual says so explicitly)"
            )
        host = need(kv) + pending + reserve > free
        if host:
            notes.append(
                f"K/V caches ({format_bytes(need(kv))}) do not fit in the GPU's free memory ({format_bytes(free)}, "
                f"with {format_bytes(pending)} of weights still to load and {format_bytes(reserve)} of activations): "
                "keeping them in host memory (cache_device: cuda forces the GPU)"
            )
    return cache_layout(config.cache_dtype, model_dtype, host, text_kv, forecast, kv), notes


def fit_memory(
    config: HetCacheConfig, experts: Mapping[str, tuple[ModelDims, torch.dtype, CacheLayout]], n_tokens: int,
    branches: int,
) -> tuple[str, dict[str, CacheLayout], list[str], list[str]]:
    """(method, layout per expert, what was dropped, notes) within `max_cache_memory`, or CacheMemoryError.

    Over the limit, the K/V slopes of the forecast go first (a K/V cache's size), then the prompt's
    K/V, then, with `on_cache_overflow: teacache`, the per-layer K/V (a TeaCache run). Experts run one
    at a time, so the largest one's caches are what must fit.
    """
    method, limit = config.method, config.max_cache_memory_bytes
    layouts = {name: layout for name, (_, _, layout) in experts.items()}

    def need(m: str, change: dict) -> int:
        return max(cache_memory(dims, n_tokens, branches, replace(layouts[name], **change), dtype, m)["total"]
                   for name, (dims, dtype, _) in experts.items())  # fmt: skip

    first = need(method, {})
    if limit is None or first <= limit:
        return method, layouts, [], []
    options = [(method, {"forecast_kv": False}), (method, {"forecast_kv": False, "text_kv": False})]
    if method == "hetcache" and config.on_cache_overflow == "teacache":
        tea = {"forecast": forecast_for(config, "teacache"), "forecast_kv": False}
        options += [("teacache", tea), ("teacache", {**tea, "text_kv": False})]
    fit = next(((m, change) for m, change in options if need(m, change) <= limit), None)
    if fit is None and method == "hetcache":
        raise CacheMemoryError(
            f"HetCache needs {format_bytes(first)} of K/V caches for {n_tokens} tokens x {branches} branches "
            f"but max_cache_memory is {config.max_cache_memory}: raise max_cache_memory, use fewer frames "
            "or a smaller size, cache_dtype float8_e4m3fn, or on_cache_overflow: teacache"
        )
    if fit is None:
        raise CacheMemoryError(
            f"{method} needs {format_bytes(first)} of caches but max_cache_memory is "
            f"{config.max_cache_memory}: raise max_cache_memory or use fewer frames"
        )
    fitted_method, change = fit
    any_layout = next(iter(layouts.values()))
    dropped = [what for what, key in (("the K/V forecast", "forecast_kv"), ("the prompt's K/V once", "text_kv"))
               if getattr(any_layout, key) and change.get(key) is False]  # fmt: skip
    if fitted_method != method:
        dropped.append("the per-layer K/V caches (teacache)")
    note = (
        f"HetCache caches would need {format_bytes(first)} (max_cache_memory {config.max_cache_memory}): "
        + ("without " + " and ".join(dropped) if fitted_method == method else "falling back to teacache")
        + " for this run"
    )
    return fitted_method, {n: replace(lay, **change) for n, lay in layouts.items()}, dropped, [note]


def plan_run(
    transformers: Mapping[str, object], timesteps, config: HetCacheConfig, tokens: TokenPlan, *,
    branches: int, boundary: float | None = None, room: DeviceRoom | None = None, text_len: int = 512,
) -> CachePlan:
    """The plan of one run over one or more experts (`{name: transformer}` in pipeline order).

    `timesteps`: the scheduler's; `boundary`: the timestep at which the second expert takes over
    (`experts.boundary_timestep`); `tokens`: the counts of the run's mask (`plan_tokens`).
    """
    times = [float(t) for t in torch.as_tensor(timesteps).flatten().cpu()]
    owners = step_experts(times, boundary, list(transformers))
    # a transformer that runs no step of this run keeps no caches and is left out of the plan
    running = {name: t for name, t in transformers.items() if name in owners} or dict(list(transformers.items())[:1])
    info = {name: (ModelDims.from_config(t.config, text_len), t.dtype) for name, t in running.items()}
    notes: list[str] = []
    base = {}
    for name, (dims, dtype) in info.items():
        layout, layout_notes = plan_layout(config, dims, dtype, tokens.total, branches, room, config.method)
        base[name] = (dims, dtype, layout)
        notes += [n for n in layout_notes if n not in notes]
    method, layouts, dropped, fit_notes = fit_memory(config, base, tokens.total, branches)
    notes += fit_notes
    if method != config.method:  # a teacache fallback has no PARTIAL step
        schedule = config.schedule.replace("P", "F") if config.schedule else None
        config = replace(config, method=method, schedule=schedule)
    decisions, schedule_notes = plan_experts(running, owners, times, config)
    notes += schedule_notes
    if tokens.active == 0:  # nothing to compute on a PARTIAL step: it is a REUSE step
        decisions = [REUSE if d == PARTIAL else d for d in decisions]
    steps: list[StepPlan] = []
    experts: list[ExpertPlan] = []
    text_kv = method != "none" and config.text_kv
    for name in running:
        dims, dtype = info[name]
        mine = [i for i, owner in enumerate(owners) if owner == name]
        flops = step_flops(dims, tokens.total, tokens.active, [decisions[i] for i in mine], text_kv)
        full = forward_flops(dims, tokens.total)
        computed = {FULL: tokens.total, PARTIAL: tokens.active, REUSE: 0}
        steps += [StepPlan(i, times[i], name, decisions[i], computed[decisions[i]], f, full) for i, f in zip(mine, flops)]
        layout = layouts[name] if method != "none" else None
        memory = cache_memory(dims, tokens.total, branches, layouts[name], dtype, method)
        experts.append(ExpertPlan(name, tuple(mine), dims, layout, memory))
    return CachePlan(
        method=method, branches=branches, tokens=tokens, steps=tuple(sorted(steps, key=lambda s: s.step)),
        experts=tuple(experts), max_cache_memory_bytes=config.max_cache_memory_bytes, dropped=tuple(dropped),
        notes=tuple(notes),
    )  # fmt: skip


def plan_tokens(mask: torch.Tensor, config: HetCacheConfig, spatial: int = 16, temporal: int = 4) -> TokenPlan:
    """Token counts of a pixel mask [F, H, W] (bool) under the cache settings; one host sync."""
    from hetcache_cli.cache.tokens import count_tokens

    counts = count_tokens(torch.as_tensor(mask), config.margin_tokens, config.margin_temporal, config.margin_ratio,
                          config.context_ratio, spatial, temporal)  # fmt: skip
    return TokenPlan(**counts)


def describe_run(
    model, config: HetCacheConfig, timesteps, mask: torch.Tensor, branches: int = 2, text_len: int = 512,
    spatial: int | None = None, temporal: int = 4, device: torch.device | None = None,
) -> dict:
    """`plan_model(...).to_dict()`: the dry run's view of a run, as JSON-ready values."""
    return plan_model(model, config, timesteps, mask, branches, text_len, spatial, temporal, device).to_dict()


def plan_model(
    model, config: HetCacheConfig, timesteps, mask: torch.Tensor, branches: int = 2, text_len: int = 512,
    spatial: int | None = None, temporal: int = 4, device: torch.device | None = None,
) -> CachePlan:
    """The plan of a run of `model` (a `WanVACEPipeline`, both experts of a Wan2.2 one, or a bare transformer)
    on the aligned pixel mask [F, H, W]; `timesteps` from `scheduler.set_timesteps(steps)`."""
    from hetcache_cli.cache.experts import boundary_timestep, pipeline_experts

    is_pipe = hasattr(model, "prepare_masks")
    experts = dict(pipeline_experts(model)) if is_pipe else {"transformer": model}
    first = next(iter(experts.values()))
    spatial = spatial or 8 * first.config.patch_size[1]
    tokens = plan_tokens(mask, config, spatial, temporal)
    boundary = boundary_timestep(model) if is_pipe else None
    room = device_room(list(experts.values()), device)
    return plan_run(experts, timesteps, config, tokens, branches=branches, boundary=boundary, room=room,
                    text_len=text_len)  # fmt: skip


def log_notes(plan: CachePlan) -> None:
    for note in plan.notes:
        logger.warning(note)
