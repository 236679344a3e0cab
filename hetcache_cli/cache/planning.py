"""Run-level planning shared by the guidance branches: schedule, token classes, active set, memory.

`RunPlanner` is the run half of `HetCacheHook` (see hook.py); it holds no per-branch cache.
Host syncs happen here only, once per run: the token-class sizes (which size the active set,
so PARTIAL steps never sync) and the timesteps copied for the statistics.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.cache.flops import ModelDims
from hetcache_cli.cache.schedule import FULL, decide, modulation_signal, normalise_signal, parse_schedule
from hetcache_cli.cache.selection import static_active
from hetcache_cli.cache.state import CacheMemoryError, RunState, cache_layout, cache_memory, format_bytes
from hetcache_cli.cache.storage import CacheLayout, activation_bytes
from hetcache_cli.cache.stats import StepStats
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


class RunPlanner:
    def __init__(self, config: HetCacheConfig, stats: StepStats | None) -> None:
        self.config = config
        self.stats = stats
        self.run = RunState(run_id=0, method=config.method)
        self._user_mask: tuple[torch.Tensor, int | None, int | None] | None = None
        self._factors: tuple[int | None, int | None] = (None, None)
        self.group = None  # the ExpertGroup of a pipeline (experts.py), None on a bare transformer
        self.expert = "transformer"

    # ---- public handle API -------------------------------------------------------------

    @property
    def schedule(self) -> str | None:
        """The current run's plan as letters (e.g. 'FFPRPF'), None before it is planned."""
        if self.run.decisions is None:
            return None
        return "".join(d[0].upper() for d in self.run.decisions)

    def set_mask(self, mask: torch.Tensor, spatial: int | None = None, temporal: int | None = None) -> None:
        """Pixel mask [F, H, W] (True / >0.5 = edit) for a bare transformer; kept until replaced.

        `spatial` (pixels per token side, default VAE 8 x patch) and `temporal` (pixel frames
        per latent frame, default 4) describe the VAE.
        """
        if mask.dim() != 3:
            raise ValueError(f"set_mask expects a [F, H, W] mask, got shape {tuple(mask.shape)}")
        self._user_mask = (mask > 0.5 if mask.is_floating_point() else mask.bool(), spatial, temporal)
        self.run.classes = None

    def begin_run(self, timesteps, branches: int = 2, n_tokens: int | None = None) -> list[str]:
        """Start a run on a bare transformer: caches dropped, schedule planned (returned), stats reset."""
        self._begin(timesteps, branches, n_tokens, pixel_mask=None)
        return list(self.run.decisions)

    # ---- run lifecycle -----------------------------------------------------------------

    def begin_pipeline_run(self, pipe, mask: torch.Tensor, n_refs: int, decisions: list[str] | None = None) -> None:
        """Called from the wrapped `prepare_masks` with the pipeline's pixel mask [1, C, F, H, W].

        `decisions`: the plan, when it is made for several experts together (experts.py).
        """
        transformer = self.transformer
        pixel = (mask[0] > 0.5).any(dim=0)  # [F, H, W]
        patch = transformer.config.patch_size
        self._factors = (pipe.vae_scale_factor_spatial * patch[1], pipe.vae_scale_factor_temporal)
        frames, height, width = pixel.shape
        spatial, temporal = self._factors
        n_tokens = ((frames - 1) // temporal + 1 + n_refs) * (height // spatial) * (width // spatial)
        branches = 2 if pipe.do_classifier_free_guidance else 1
        self._begin(pipe.scheduler.timesteps, branches, n_tokens, pixel, pipe._execution_device, decisions)

    def _begin(self, timesteps, branches: int, n_tokens: int | None, pixel_mask: torch.Tensor | None,
               device: torch.device | None = None, decisions: list[str] | None = None) -> None:
        self.state_manager.reset()
        self.run = RunState(run_id=self.run.run_id + 1, method=self.config.method, pixel_mask=pixel_mask)
        self.run.timesteps = [float(t) for t in torch.as_tensor(timesteps).flatten().cpu()]
        self.run.decisions = list(decisions) if decisions is not None else self.plan(self.config)
        if self.stats is not None and self.group is None:
            self.stats.reset()  # a group of experts resets its shared stats once
        if n_tokens is not None:
            self.check_memory(self.transformer, n_tokens, branches, device)

    def end_run(self) -> None:
        self.run = RunState(run_id=self.run.run_id + 1, method=self.config.method)

    def restart_run(self) -> None:
        """Same plan, fresh caches: a bare transformer starting its next run without `begin_run`."""
        old = self.run
        self.run = replace(old, run_id=old.run_id + 1, selection=None)
        if self.stats is not None:
            self.stats.reset()

    def plan(self, config: HetCacheConfig) -> list[str]:
        """The decisions of this run under `config` (a group of experts plans them together)."""
        if self.group is not None:
            return self.group.plan(config, self.run.timesteps)
        steps = len(self.run.timesteps)
        if config.method == "none":
            return [FULL] * steps
        if config.schedule is not None:
            return parse_schedule(config.schedule, steps)
        signal = normalise_signal(modulation_signal(self.transformer, self.run.timesteps), config.rescale)
        return decide(signal, config)

    def decisions_for(self, step: int) -> list[str]:
        if self.run.decisions is None:
            if self.config.schedule is None:
                raise ValueError(
                    "HetCache on a bare transformer needs the run's timesteps: call handle.begin_run(timesteps) "
                    "before the denoising loop, or set an explicit cache schedule"
                )
            self.run.decisions = parse_schedule(self.config.schedule, len(self.config.schedule))
        return self.run.decisions

    # ---- memory ------------------------------------------------------------------------

    @property
    def memory_checked(self) -> bool:
        return self.run.memory_checked

    def layout(self, module, n_tokens: int, branches: int, device: torch.device | None) -> CacheLayout:
        """How this run keeps its caches: `cache_dtype`, and `cache_device` resolved for `device`."""
        return plan_layout(self.config, module, n_tokens, branches, device, self.run.method)

    def check_memory(self, module, n_tokens: int, branches: int, device: torch.device | None = None) -> None:
        """Cache bytes of this run vs `max_cache_memory`, before any step.

        Over the limit, the prompt's text K/V go first (the smallest saving), then, with
        `on_cache_overflow: teacache`, the per-layer K/V (a TeaCache run); otherwise an error.
        """
        run, config = self.run, self.config
        dims = ModelDims.from_config(module.config)
        layout = self.layout(module, n_tokens, branches, device)
        limit = config.max_cache_memory_bytes

        def need(method: str, lay: CacheLayout) -> int:
            return cache_memory(dims, n_tokens, branches, lay, module.dtype, method)["total"]

        first = need(run.method, layout)
        if limit is not None and first > limit:
            # what goes first: the K/V slopes of the forecast (a K/V cache's size), then the prompt's K/V
            plain = replace(layout, forecast_kv=False)
            options = [(run.method, plain), (run.method, replace(plain, text_kv=False))]
            if run.method == "hetcache" and config.on_cache_overflow == "teacache":
                tea = replace(layout, forecast=forecast_for(config, "teacache"), forecast_kv=False)
                options += [("teacache", tea), ("teacache", replace(tea, text_kv=False))]
            fit = next(((m, lay) for m, lay in options if need(m, lay) <= limit), None)
            if fit is None and run.method == "hetcache":
                raise CacheMemoryError(
                    f"HetCache needs {format_bytes(first)} of K/V caches for {n_tokens} tokens x {branches} branches "
                    f"but max_cache_memory is {config.max_cache_memory}: raise max_cache_memory, use fewer frames "
                    "or a smaller size, cache_dtype float8_e4m3fn, or on_cache_overflow: teacache"
                )
            if fit is None:
                raise CacheMemoryError(
                    f"{run.method} needs {format_bytes(first)} of caches but max_cache_memory is "
                    f"{config.max_cache_memory}: raise max_cache_memory or use fewer frames"
                )
            method, fitted = fit
            dropped = [what for what, on in (("the K/V forecast", layout.forecast_kv and not fitted.forecast_kv),
                                             ("the prompt's K/V once", layout.text_kv and not fitted.text_kv)) if on]
            logger.warning(
                "HetCache caches would need %s (max_cache_memory %s): %s for this run",
                format_bytes(first),
                config.max_cache_memory,
                "without " + " and ".join(dropped) if method == run.method else "falling back to teacache",
            )
            layout = fitted
            if method != run.method:
                run.method = method
                if run.timesteps is not None:
                    schedule = config.schedule.replace("P", "F") if config.schedule else None
                    run.decisions = self.plan(replace(config, method=method, schedule=schedule))
        run.layout = layout
        if self.stats is not None:
            parts = cache_memory(dims, n_tokens, branches, layout, module.dtype, run.method)
            by_expert = self.stats.cache_memory_by_expert
            by_expert[self.expert] = (parts["cache"], parts["text"])
            # a group frees an expert's caches when the next one takes over: the peak is the largest
            self.stats.cache_memory_bytes = max(c for c, _ in by_expert.values())
            self.stats.text_kv_memory_bytes = max(t for _, t in by_expert.values())
        run.memory_checked = True

    # ---- token classes and the fixed part of the active set ---------------------------

    def token_classes(self, module, inputs) -> TokenClasses:
        from hetcache_cli.cache.engine import grid_of

        run, config = self.run, self.config
        grid = grid_of(module, inputs.hidden_states)
        if run.classes is not None and run.classes.grid == grid:
            return run.classes
        device = inputs.hidden_states.device
        p_t, p_h, _ = module.config.patch_size
        pixel, spatial, temporal = run.pixel_mask, self._factors[0], self._factors[1]
        if pixel is None and self._user_mask is not None:
            pixel, spatial, temporal = self._user_mask
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

    @property
    def n_active(self) -> int:
        """Tokens computed on a PARTIAL step (fixed per run, known on the host)."""
        if self.run.static_active is None:
            return 0
        return self.run.static_active.numel() + self.run.n_context_pick

    # ---- small per-run caches ------------------------------------------------------------

    def rope(self, module, hidden_states: torch.Tensor):
        key = (tuple(hidden_states.shape[2:]), hidden_states.device)
        if self.run.rope_key != key:
            self.run.rope = module.rope(hidden_states)
            self.run.rope_key = key
        return self.run.rope

    def dims(self, module, inputs) -> ModelDims:
        text_len = inputs.encoder_hidden_states.shape[1]
        if inputs.encoder_hidden_states_image is not None:
            text_len += inputs.encoder_hidden_states_image.shape[1]
        dims = self.run.extras.get("dims")
        if dims is None or dims.text_len != text_len:
            dims = self.run.extras["dims"] = ModelDims.from_config(module.config, text_len)
        return dims

    def score_layer(self, module) -> int:
        layer = self.config.score_layer
        n_layers = len(module.blocks)
        if layer == -1:
            return n_layers // 2
        if not 0 <= layer < n_layers:
            raise ValueError(f"score_layer {layer} is out of range: use -1 (middle block) or 0..{n_layers - 1}")
        return layer

    def timestep_value(self, step: int, timestep: torch.Tensor) -> float:
        timesteps = self.run.timesteps
        if timesteps is not None and step < len(timesteps):
            return timesteps[step]
        return float(timestep.flatten()[0])  # bare transformer without begin_run: one sync per step


def plan_layout(
    config: HetCacheConfig, module, n_tokens: int, branches: int, device: torch.device | None, method: str
) -> CacheLayout:
    """`cache_dtype` and `cache_device` for a run on `device`; `auto` keeps K/V on a GPU only if they fit.

    Fit: the caches on the device, the transformer weights still to come (model CPU offload: those
    in host memory now) and an activation estimate within the GPU's free memory now.
    """
    model_dtype = module.dtype
    text_kv = config.text_kv and method != "none"
    host = config.cache_device == "cpu"
    forecast = forecast_for(config, method)
    kv = forecast and method == "hetcache" and config.forecast != "residual"
    if config.cache_device == "auto" and method == "hetcache" and device is not None and device.type == "cuda":
        dims = ModelDims.from_config(module.config)
        registry = getattr(module, "_diffusers_hook", None)
        grouped = registry is not None and registry.get_hook("group_offloading") is not None
        pending = 0
        if not grouped:  # model CPU offload: the weights come to the GPU when the transformer runs
            pending = sum(p.numel() * p.element_size() for p in module.parameters() if p.device.type == "cpu")
        reserve = activation_bytes(dims.dim, dims.ffn_dim, dims.num_vace_layers, n_tokens, model_dtype)
        free, _ = torch.cuda.mem_get_info(device)

        def need(with_kv: bool) -> int:
            layout = cache_layout(config.cache_dtype, model_dtype, False, text_kv, forecast, with_kv)
            return cache_memory(dims, n_tokens, branches, layout, model_dtype, method)["device"]

        if kv and need(True) + pending + reserve > free and need(False) + pending + reserve <= free:
            kv = False  # the K/V forecast goes before the K/V themselves leave the GPU
            logger.warning(
                "K/V caches with the K/V forecast (%s) do not fit in the GPU's free memory (%s): running without "
                "the K/V forecast (forecast: residual says so explicitly)", format_bytes(need(True)), format_bytes(free),
            )
        host = need(kv) + pending + reserve > free
        if host:
            logger.warning(
                "K/V caches (%s) do not fit in the GPU's free memory (%s, with %s of weights still to load and %s "
                "of activations): keeping them in host memory (cache_device: cuda forces the GPU)",
                format_bytes(need(kv)), format_bytes(free), format_bytes(pending), format_bytes(reserve),
            )
    return cache_layout(config.cache_dtype, model_dtype, host, text_kv, forecast, kv)


def forecast_for(config: HetCacheConfig, method: str | None = None) -> bool:
    """Whether a run of `method` (default: the config's) keeps residual slopes: `auto` = hetcache only."""
    method = method or config.method
    if method == "none" or config.forecast == "none":
        return False
    return config.forecast in ("linear", "residual") or method == "hetcache"


def describe_run(
    model, config: HetCacheConfig, timesteps, mask: torch.Tensor, branches: int = 2, text_len: int = 512,
    spatial: int | None = None, temporal: int = 4, device: torch.device | None = None,
) -> dict:
    """What a run will do, before it runs (`hetcache edit --dry-run`): schedule, tokens, FLOPs, cache memory.

    `model`: a `WanVACEPipeline` (both experts of a Wan2.2 one) or a bare transformer. `mask` is the
    aligned pixel mask [F, H, W] (bool); `timesteps` from `scheduler.set_timesteps(steps)`.
    """
    from hetcache_cli.cache.experts import boundary_timestep, pipeline_experts, plan_experts, step_experts
    from hetcache_cli.cache.schedule import estimate_run_flops, schedule_letters
    from hetcache_cli.cache.tokens import count_tokens

    is_pipe = hasattr(model, "prepare_masks")
    experts = dict(pipeline_experts(model)) if is_pipe else {"transformer": model}
    first = next(iter(experts.values()))
    times = [float(t) for t in torch.as_tensor(timesteps).flatten().cpu()]
    owners = step_experts(times, boundary_timestep(model) if is_pipe else None, list(experts))
    decisions, notes = plan_experts(experts, owners, times, config)
    spatial = spatial or 8 * first.config.patch_size[1]
    tokens = count_tokens(torch.as_tensor(mask), config.margin_tokens, config.margin_temporal,
                          config.margin_ratio, config.context_ratio, spatial, temporal)
    text_kv = config.text_kv and config.method != "none"
    per_expert, flops, flops_full, counts = {}, 0.0, 0.0, {}
    for name, transformer in experts.items():
        mine = [i for i, owner in enumerate(owners) if owner == name]
        if not mine:
            continue
        dims = ModelDims.from_config(transformer.config, text_len)
        est = estimate_run_flops(dims, tokens["total"], tokens["active"], [decisions[i] for i in mine], branches,
                                 text_kv=text_kv)
        layout = plan_layout(config, transformer, tokens["total"], branches, device, config.method)
        memory = cache_memory(dims, tokens["total"], branches, layout, transformer.dtype, config.method)
        per_expert[name] = {
            "first_step": mine[0], "last_step": mine[-1], "schedule": schedule_letters([decisions[i] for i in mine]),
            "flops": est["flops"], "flops_full": est["flops_full"], "cache_memory_bytes": memory["cache"],
            "text_kv_memory_bytes": memory["text"], "cache_memory": memory, "cache_layout": layout.describe(),
        }  # fmt: skip
        flops, flops_full = flops + est["flops"], flops_full + est["flops_full"]
        for d, n in est["decisions"].items():
            counts[d] = counts.get(d, 0) + n
    peak = max(per_expert.values(), key=lambda e: e["cache_memory"]["total"])
    limit = config.max_cache_memory_bytes
    return {
        "schedule": schedule_letters(decisions),
        "tokens": tokens,
        "flops": flops,
        "flops_full": flops_full,
        "flops_ratio": flops / flops_full if flops_full else 1.0,
        "decisions": counts,
        "cache_memory_bytes": peak["cache_memory_bytes"],
        "text_kv_memory_bytes": peak["text_kv_memory_bytes"],
        "cache_memory": peak["cache_memory"],
        "cache_memory_fits": limit is None or peak["cache_memory"]["total"] <= limit,
        "experts": per_expert,
        "notes": notes,
    }
