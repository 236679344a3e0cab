"""The hooks of a pipeline's experts as one group: one plan per pipeline call, made from its
`prepare_masks` (the adapter for users who call the pipeline themselves), shared statistics, and the
first expert's caches freed when the second takes over. The pure parts are in experts.py.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import torch

from hetcache_cli.cache.experts import boundary_timestep
from hetcache_cli.cache.plan import guidance_branches
from hetcache_cli.cache.planning import device_room, log_notes, plan_run, plan_tokens


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
