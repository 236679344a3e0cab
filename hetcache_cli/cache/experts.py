"""Two experts: Wan2.2 VACE-Fun's `transformer` (high noise) and `transformer_2` (low noise).

`WanVACEPipeline` with a `boundary_ratio` runs `transformer` on the steps whose timestep is
>= boundary_ratio x num_train_timesteps and `transformer_2` on the rest (diffusers 0.42). Each
expert gets its own `HetCacheHook`, so its own caches per guidance branch; an `ExpertGroup`
(expert_group.py) has the run planned for both (planning.py), from the same `prepare_masks` call:

- one decision per step across the switch: each expert's modulation signal comes from its own
  timestep embedder, the signal is normalised over the whole run, and the first step of each
  expert is FULL and restarts the rule (`schedule.decide(starts=...)`). An explicit schedule
  that asks for P or R at an expert's first step is logged and computed F;
- the first expert's caches are freed when the second takes over (the timesteps only go
  down), so the cache memory peak is the larger expert's, not the sum;
- one `StepStats` for both; every record names its expert.
"""

from __future__ import annotations

import logging
from typing import Sequence


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
