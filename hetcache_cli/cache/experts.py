"""Two experts: Wan2.2 VACE-Fun's `transformer` (high noise) and `transformer_2` (low noise).

`WanVACEPipeline` with a `boundary_ratio` runs `transformer` on the steps whose timestep is
>= boundary_ratio x num_train_timesteps and `transformer_2` on the rest (diffusers 0.42). Each
expert gets its own `HetCacheHook`, so its own caches per guidance branch; an `ExpertGroup`
has the run planned for both (planning.py), from the same `prepare_masks` call:

- one decision per step across the switch: each expert's modulation signal comes from its own
  timestep embedder, the signal is normalised over the whole run, and the first step of each
  expert is FULL and restarts the rule (`schedule.decide(starts=...)`). An explicit schedule
  that asks for P or R at an expert's first step is logged and computed F;
- the first expert's caches are freed when the second takes over (the timesteps only go
  down), so the cache memory peak is the larger expert's, not the sum;
- one `StepStats` for both; every record names its expert.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from typing import Sequence

import torch

from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.cache.schedule import FULL, decide, modulation_signal, normalise_signal, parse_schedule

logger = logging.getLogger(__name__)

EXPERTS = ("transformer", "transformer_2")


def pipeline_experts(pipe) -> list[tuple[str, object]]:
    """The (name, transformer) pairs a pipeline runs: one, or two with a `boundary_ratio`."""
    names = [n for n in EXPERTS if getattr(pipe, n, None) is not None]
    if "transformer_2" in names and getattr(pipe.config, "boundary_ratio", None) is None:
        names.remove("transformer_2")  # diffusers never runs it without a boundary
    return [(n, getattr(pipe, n)) for n in names]


def boundary_timestep(pipe) -> float | None:
    ratio = getattr(pipe.config, "boundary_ratio", None)
    return None if ratio is None else ratio * pipe.scheduler.config.num_train_timesteps


def step_experts(timesteps: Sequence[float], boundary: float | None, names: Sequence[str]) -> list[str]:
    """The expert of every step, by the pipeline's rule: t >= boundary -> the first, else the second."""
    if len(names) == 1 or boundary is None:
        return [names[0]] * len(timesteps)
    return [names[0] if float(t) >= boundary else names[1] for t in timesteps]


def switch_steps(owners: Sequence[str]) -> list[int]:
    """Steps where another expert takes over (never step 0)."""
    return [i for i in range(1, len(owners)) if owners[i] != owners[i - 1]]


def plan_experts(
    transformers: dict[str, object], owners: Sequence[str], timesteps: Sequence[float], config: HetCacheConfig
) -> tuple[list[str], list[str]]:
    """(decisions for every step, notes for the user) of a run over one or more experts."""
    steps = len(timesteps)
    if config.method == "none":
        return [FULL] * steps, []
    starts = switch_steps(owners)
    if config.schedule is not None:
        decisions = parse_schedule(config.schedule, steps)
        notes = []
        for i in starts:
            if decisions[i] != FULL:
                notes.append(
                    f"cache schedule asks for {decisions[i][0].upper()} at step {i}, the first step of {owners[i]} "
                    "(nothing of it is cached yet): computing it F"
                )
                decisions[i] = FULL
        return decisions, notes
    signal = [0.0] * steps
    for name, transformer in transformers.items():
        mine = [i for i in range(steps) if owners[i] == name]
        if mine:
            for i, value in zip(mine, modulation_signal(transformer, [timesteps[i] for i in mine])):
                signal[i] = value  # 0 at the expert's first step: no change is measured across two models
    return decide(normalise_signal(signal, config.rescale), config, starts), []


class ExpertGroup:
    """The hooks of a pipeline (one per expert): one plan per call, shared statistics, caches freed at the switch."""

    def __init__(self, pipe, hooks: dict) -> None:
        self.hooks = hooks  # name -> HetCacheHook, in pipeline order
        self.active = None
        self.plan = None  # the CachePlan of the current call
        for hook in hooks.values():
            hook.group = self

    def begin(self, pipe, mask: torch.Tensor, n_refs: int) -> None:
        """A pipeline call starts: its plan is made (planning.py) and every expert's hook executes it."""
        from hetcache_cli.cache.planning import device_room, log_notes, plan_run, plan_tokens
        from hetcache_cli.cache.plan import guidance_branches

        self.active = None
        first = next(iter(self.hooks.values()))
        transformers = {name: hook.transformer for name, hook in self.hooks.items()}
        pixel = (mask[0] > 0.5).any(dim=0)  # [F, H, W]
        factors = (pipe.vae_scale_factor_spatial * first.transformer.config.patch_size[1], pipe.vae_scale_factor_temporal)
        tokens = plan_tokens(pixel, first.config, *factors)
        if n_refs:  # reference images are extra latent frames of context, never edited
            per_frame = (pixel.shape[1] // factors[0]) * (pixel.shape[2] // factors[0])
            tokens = replace(tokens, total=tokens.total + n_refs * per_frame, context=tokens.context + n_refs * per_frame)
        # everything of the plan but the token counts, which the first forward may correct (`replan`)
        self._plan_for = functools.partial(
            plan_run, transformers, pipe.scheduler.timesteps, first.config,
            branches=guidance_branches(pipe.guidance_scale), boundary=boundary_timestep(pipe),
            room=device_room(list(transformers.values()), pipe._execution_device),
        )  # fmt: skip
        self.plan = self._plan_for(tokens)
        log_notes(self.plan)
        if first.stats is not None:
            first.stats.begin(self.plan)
        for hook in self.hooks.values():
            hook.begin(self.plan, pixel, factors)

    def replan(self, tokens) -> None:
        """The same call planned again with the token counts found on the device (reference images)."""
        self.plan = self._plan_for(tokens)
        first = next(iter(self.hooks.values()))
        if first.stats is not None:
            first.stats.begin(self.plan)
        for hook in self.hooks.values():
            hook.run.plan = self.plan

    def activate(self, hook) -> None:
        """`hook`'s expert runs now: the previous expert's caches are freed (it does not run again)."""
        if self.active is hook:
            return
        if self.active is not None:
            self.active.state_manager.reset()
            if self.active.stats is not None:
                self.active.stats.observe_cache(self.active.expert, 0)
        self.active = hook


def attach_group(pipe, hooks: dict) -> ExpertGroup:
    """Plan every expert's run from the pipeline's `prepare_masks` (called once per pipeline call)."""
    group = ExpertGroup(pipe, hooks)
    original = pipe.prepare_masks

    @functools.wraps(original)
    def prepare_masks(mask, reference_images=None, generator=None):
        out = original(mask, reference_images, generator)
        n_refs = len(reference_images[0]) if reference_images else 0
        group.begin(pipe, mask, n_refs)
        return out

    prepare_masks._hetcache_original = original
    pipe.prepare_masks = prepare_masks
    return group
