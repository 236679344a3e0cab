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
from hetcache_cli.cache.state import (
    CacheMemoryError,
    RunState,
    estimate_cache_memory,
    format_bytes,
    resolve_cache_dtype,
)
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

    def begin_pipeline_run(self, pipe, mask: torch.Tensor, n_refs: int) -> None:
        """Called from the wrapped `prepare_masks` with the pipeline's pixel mask [1, C, F, H, W]."""
        transformer = self.transformer
        pixel = (mask[0] > 0.5).any(dim=0)  # [F, H, W]
        patch = transformer.config.patch_size
        self._factors = (pipe.vae_scale_factor_spatial * patch[1], pipe.vae_scale_factor_temporal)
        frames, height, width = pixel.shape
        spatial, temporal = self._factors
        n_tokens = ((frames - 1) // temporal + 1 + n_refs) * (height // spatial) * (width // spatial)
        branches = 2 if pipe.do_classifier_free_guidance else 1
        self._begin(pipe.scheduler.timesteps, branches, n_tokens, pixel_mask=pixel)

    def _begin(self, timesteps, branches: int, n_tokens: int | None, pixel_mask: torch.Tensor | None) -> None:
        self.state_manager.reset()
        self.run = RunState(run_id=self.run.run_id + 1, method=self.config.method, pixel_mask=pixel_mask)
        self.run.timesteps = [float(t) for t in torch.as_tensor(timesteps).flatten().cpu()]
        self.run.decisions = self._plan(self.config)
        if self.stats is not None:
            self.stats.reset()
        if n_tokens is not None:
            self.check_memory(self.transformer, n_tokens, branches)

    def end_run(self) -> None:
        self.run = RunState(run_id=self.run.run_id + 1, method=self.config.method)

    def restart_run(self) -> None:
        """Same plan, fresh caches: a bare transformer starting its next run without `begin_run`."""
        old = self.run
        self.run = replace(old, run_id=old.run_id + 1)
        if self.stats is not None:
            self.stats.reset()

    def _plan(self, config: HetCacheConfig) -> list[str]:
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

    def cache_dtype(self, module) -> torch.dtype:
        return resolve_cache_dtype(self.config.cache_dtype, module.dtype)

    def check_memory(self, module, n_tokens: int, branches: int) -> None:
        """Cache bytes of this run vs `max_cache_memory`: error, or fall back to teacache, before any step."""
        run, config = self.run, self.config
        dims = ModelDims.from_config(module.config)
        dtype = self.cache_dtype(module)
        need = estimate_cache_memory(dims, n_tokens, branches, dtype, run.method)
        limit = config.max_cache_memory_bytes
        if limit is not None and need > limit and run.method == "hetcache":
            small = estimate_cache_memory(dims, n_tokens, branches, dtype, "teacache")
            if config.on_cache_overflow == "error" or small > limit:
                raise CacheMemoryError(
                    f"HetCache needs {format_bytes(need)} of K/V caches for {n_tokens} tokens x {branches} branches "
                    f"but max_cache_memory is {config.max_cache_memory}: raise max_cache_memory, use fewer frames "
                    "or a smaller size, cache_dtype bfloat16, or on_cache_overflow: teacache"
                )
            logger.warning(
                "HetCache caches would need %s (max_cache_memory %s): falling back to teacache for this run",
                format_bytes(need),
                config.max_cache_memory,
            )
            run.method = "teacache"
            if run.timesteps is not None:
                schedule = config.schedule.replace("P", "F") if config.schedule else None
                run.decisions = self._plan(replace(config, method="teacache", schedule=schedule))
            need = small
        elif limit is not None and need > limit:
            raise CacheMemoryError(
                f"{run.method} needs {format_bytes(need)} of caches but max_cache_memory is {config.max_cache_memory}: "
                "raise max_cache_memory or use fewer frames"
            )
        if self.stats is not None:
            self.stats.cache_memory_bytes = need
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



def describe_run(
    transformer, config: HetCacheConfig, timesteps, mask: torch.Tensor, branches: int = 2, text_len: int = 512,
    spatial: int | None = None, temporal: int = 4,
) -> dict:
    """What a run will do, before it runs (`hetcache edit --dry-run`): schedule, tokens, FLOPs, cache memory.

    `mask` is the aligned pixel mask [F, H, W] (bool); `timesteps` from `scheduler.set_timesteps(steps)`.
    """
    from hetcache_cli.cache.schedule import estimate_run_flops, resolve_schedule, schedule_letters
    from hetcache_cli.cache.tokens import count_tokens

    spatial = spatial or 8 * transformer.config.patch_size[1]
    decisions = resolve_schedule(transformer, config, timesteps)
    tokens = count_tokens(torch.as_tensor(mask), config.margin_tokens, config.margin_temporal,
                          config.margin_ratio, config.context_ratio, spatial, temporal)
    dims = ModelDims.from_config(transformer.config, text_len)
    dtype = resolve_cache_dtype(config.cache_dtype, transformer.dtype)
    memory = estimate_cache_memory(dims, tokens["total"], branches, dtype, config.method)
    limit = config.max_cache_memory_bytes
    return {
        "schedule": schedule_letters(decisions),
        "tokens": tokens,
        **estimate_run_flops(dims, tokens["total"], tokens["active"], decisions, branches),
        "cache_memory_bytes": memory,
        "cache_memory_fits": limit is None or memory <= limit,
    }
