"""Step decisions: FULL, PARTIAL or REUSE for every denoising step, planned before the loop.

The signal is the relative L1 change of the transformer's timestep modulation (the
`condition_embedder` projection that every block's shift/scale/gate is built from) between
consecutive scheduler timesteps, optionally passed through the `rescale` polynomial, then
normalised so that it sums to 1 over the run: a threshold is a fraction of the run's total
modulation change, so the same preset means the same thing for any model and step count
(more steps -> smaller steps -> more reuse, as with TeaCache). It depends only on the
model and the timesteps, never on the video, so `resolve_schedule` works for a dry run.

Rule (indices are scheduler step indices, never "computed steps"):

    since_computed += signal[i]; since_full += signal[i]
    FULL     if i < warmup_steps, i == 0, i == last step, or the previous max_partial_run
             steps were all non-FULL (forced), or since_full >= full_threshold and fewer than
             max_full_run FULL steps chosen by the threshold came right before
    REUSE    elif since_computed < reuse_threshold
    PARTIAL  otherwise
    since_computed resets on every computed step (FULL or PARTIAL);
    since_full resets on FULL steps only (a PARTIAL step leaves the cached context stale).

Right after a FULL step both accumulators are equal, so this is exactly "accumulated <
reuse_threshold -> REUSE, < full_threshold -> PARTIAL, else FULL". Larger thresholds always
mean fewer FULL / more REUSE steps. `teacache` has no PARTIAL: a step that would be PARTIAL
is FULL.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.cache.flops import ModelDims, forward_flops, text_kv_flops
from hetcache_cli.cache.plan import FULL, PARTIAL, REUSE, schedule_letters  # noqa: F401 (re-exported)

_LETTERS = {"F": FULL, "P": PARTIAL, "R": REUSE}


@torch.no_grad()
def modulation_signal(transformer, timesteps: torch.Tensor | Sequence[float]) -> list[float]:
    """Relative L1 change of the timestep projection between consecutive steps: [S] (first entry 0)."""
    embedder = transformer.condition_embedder
    param = next(embedder.time_embedder.parameters())
    t = torch.as_tensor(timesteps, device=param.device).flatten()  # [S]
    freq = embedder.timesteps_proj(t)  # [S, freq_dim]
    if param.dtype != torch.int8:
        freq = freq.to(param.dtype)
    temb = embedder.time_embedder(freq)
    # diffusers keeps time_embedder in float32 (`_keep_in_fp32_modules`) and time_proj in the model's
    # dtype. The projection is taken in float32 whatever that dtype is, so that a bfloat16 or float16
    # run gets the schedule of the float32 run (the signal is a property of the model's weights).
    proj_layer = embedder.time_proj
    weight = proj_layer.weight.float()
    bias = None if proj_layer.bias is None else proj_layer.bias.float()
    act = embedder.act_fn(temb.float()).to(weight.device)
    proj = torch.nn.functional.linear(act, weight, bias)  # [S, 6 * D]
    change = (proj[1:] - proj[:-1]).abs().mean(dim=-1) / proj[:-1].abs().mean(dim=-1).clamp_min(1e-12)
    return [0.0] + change.cpu().tolist()


def normalise_signal(signal: Sequence[float], rescale: Sequence[float] | None = None) -> list[float]:
    """Apply the rescale polynomial (highest power first) to steps 1.., then scale to sum 1."""
    values = [float(v) for v in signal]
    if rescale:
        values = [0.0] + [max(0.0, _polyval(rescale, v)) for v in values[1:]]
    total = sum(values[1:])
    if total <= 0.0:
        return [0.0] * len(values)
    return [v / total for v in values]


def decide(signal: Sequence[float], config: HetCacheConfig, starts: Sequence[int] = ()) -> list[str]:
    """The rule of the module docstring on a normalised signal: one decision per step.

    `starts`: steps where another transformer takes over (two-expert models); each is FULL and
    restarts the accumulators, like step 0.
    """
    steps = len(signal)
    two_way = config.method == "teacache"
    decisions: list[str] = []
    since_computed = since_full = 0.0
    run = 0  # consecutive non-FULL steps so far
    full_run = 0  # consecutive FULL steps chosen by the threshold so far
    for i in range(steps):
        since_computed += signal[i]
        since_full += signal[i]
        forced = i == 0 or i < config.warmup_steps or i == steps - 1 or run >= config.max_partial_run or i in starts
        capped = not two_way and full_run >= config.max_full_run
        if forced or (since_full >= config.full_threshold and not capped):
            decision = FULL
            full_run = 0 if forced else full_run + 1
        elif since_full >= config.full_threshold:
            decision = PARTIAL  # the threshold's FULL step, past max_full_run of them in a row
        elif since_computed < config.reuse_threshold:
            decision = REUSE
        else:
            decision = FULL if two_way else PARTIAL
        if decision == FULL:
            since_computed = since_full = 0.0
            run = 0
        else:
            run += 1
            full_run = 0
            if decision == PARTIAL:
                since_computed = 0.0
        decisions.append(decision)
    return decisions


def parse_schedule(schedule: str, steps: int) -> list[str]:
    """An explicit schedule string (`FFPPRPPRPF`, one letter per step) -> decisions."""
    letters = schedule.strip().upper()
    if len(letters) != steps:
        raise ValueError(
            f"cache schedule {schedule!r} has {len(letters)} letters but the run has {steps} denoising steps: "
            f"give exactly one letter (F, P or R) per step, or set steps to {len(letters)}"
        )
    bad = sorted(set(letters) - set(_LETTERS))
    if bad:
        raise ValueError(f"cache schedule {schedule!r} has invalid letters {bad}: use F (full), P (partial), R (reuse)")
    if letters and letters[0] != "F":
        raise ValueError(
            f"cache schedule {schedule!r} starts with {letters[0]!r}: the first step must be F, "
            "nothing is cached before the first full step"
        )
    return [_LETTERS[c] for c in letters]


def resolve_schedule(transformer, config: HetCacheConfig, timesteps: torch.Tensor | Sequence[float]) -> list[str]:
    """The decision for every step of a run (no video needed): explicit string or the automatic rule.

    `method="none"` gives all FULL. Usable for `hetcache edit --dry-run` once the scheduler's
    timesteps are set (`pipe.scheduler.set_timesteps(steps)`; `pipe.scheduler.timesteps`).
    """
    steps = len(timesteps)
    if config.method == "none":
        return [FULL] * steps
    if config.schedule is not None:
        return parse_schedule(config.schedule, steps)
    signal = normalise_signal(modulation_signal(transformer, timesteps), config.rescale)
    return decide(signal, config)


def step_flops(
    dims: ModelDims, n_tokens: int, n_active: int, decisions: Sequence[str], text_kv: bool = False
) -> list[float]:
    """FLOPs of one forward (one guidance branch) at every step of one transformer's run.

    `text_kv`: the prompt's K/V are projected at the transformer's first computed step only.
    """
    layers = 0 if text_kv else None
    per = {FULL: forward_flops(dims, n_tokens, None, layers), PARTIAL: forward_flops(dims, n_tokens, n_active, layers),
           REUSE: 0.0}
    out = [per[_LETTERS.get(d, d)] for d in decisions]
    first = next((i for i, d in enumerate(decisions) if _LETTERS.get(d, d) != REUSE), None)
    if text_kv and first is not None:
        out[first] += (dims.num_layers + dims.num_vace_layers) * text_kv_flops(dims)
    return out


def estimate_run_flops(
    dims: ModelDims, n_tokens: int, n_active: int, schedule: Sequence[str], branches: int = 2,
    text_kv: bool = False,
) -> dict:
    """Analytic FLOPs of a planned run vs the uncached run (all steps FULL), both guidance branches."""
    decisions = [_LETTERS.get(d, d) for d in schedule]
    flops = math.fsum(f for f in step_flops(dims, n_tokens, n_active, decisions, text_kv) for _ in range(branches))
    flops_full = branches * len(decisions) * forward_flops(dims, n_tokens)
    return {
        "flops": flops,
        "flops_full": flops_full,
        "flops_ratio": flops / flops_full if flops_full else 1.0,
        "decisions": {d: decisions.count(d) for d in (FULL, PARTIAL, REUSE)},
    }


def calibrate_thresholds(
    signal: Sequence[float], config: HetCacheConfig, full_fraction: float, reuse_fraction: float
) -> tuple[float, float]:
    """Thresholds that give about `full_fraction` FULL and `reuse_fraction` REUSE steps for a raw signal.

    A bisection on each threshold with the other fixed (both counts are monotone in their
    threshold). Returns (reuse_threshold, full_threshold) for `HetCacheConfig`.
    """
    from dataclasses import replace

    values = normalise_signal(signal, config.rescale)
    steps = len(values)

    def count(cfg, kind):
        return decide(values, cfg).count(kind) / max(steps, 1)

    lo, hi = 0.0, 1.0
    for _ in range(30):  # full threshold: larger -> fewer FULL steps
        mid = (lo + hi) / 2
        if count(replace(config, reuse_threshold=0.0, full_threshold=mid), FULL) > full_fraction:
            lo = mid
        else:
            hi = mid
    full = hi
    lo, hi = 0.0, full
    for _ in range(30):  # reuse threshold: larger -> more REUSE steps
        mid = (lo + hi) / 2
        if count(replace(config, reuse_threshold=mid, full_threshold=full), REUSE) < reuse_fraction:
            lo = mid
        else:
            hi = mid
    return lo, full


def _polyval(coefficients: Sequence[float], x: float) -> float:
    out = 0.0
    for c in coefficients:
        out = out * x + float(c)
    return out
