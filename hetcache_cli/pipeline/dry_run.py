"""What an edit would do, without running it (`--dry-run`, `hetcache memory`): windows, crops, each window's
cache plan (the plan the hook will make, from the same functions), FLOPs, memory and the stages' work."""

from __future__ import annotations

import numpy as np

from hetcache_cli.io.crop import Crop, crop_mask
from hetcache_cli.pipeline.plan import EditPlan
from hetcache_cli.pipeline.window_run import at_origin, decode_plan
from hetcache_cli.pipeline.windows import Window, window_mask

__all__ = ["gpu_estimate", "model_mask", "plan_edit", "window_plan"]


def plan_edit(prep: EditPlan, pipe) -> dict:
    """What `run_edit` would do, without running it: windows, schedule, token counts, FLOPs, cache memory."""
    from hetcache_cli.cache.summary import RunSummary
    from hetcache_cli.pipeline.model import guidance_kwargs

    guidance_kwargs(pipe, prep.spec.guidance_scale_2, prep.spec.model)
    plans, per_window = [], []
    runs: dict[tuple, object] = {}  # a plan depends only on the window's model mask: a long clip repeats them
    for window, crop in zip(prep.windows, prep.crops):
        mask = model_mask(prep, window, crop)
        key = (mask.shape, np.packbits(mask).tobytes())
        if key not in runs:
            runs[key] = window_plan(prep, pipe, mask)
        plans.append(runs[key])
        decode = decode_plan(prep, window, crop, pipe.vae_scale_factor_spatial).to_dict()
        per_window.append({**window.to_dict(), **runs[key].to_dict(), "crop": crop.to_dict(), "decode": decode})
    total = RunSummary.combine(RunSummary.from_plan(p) for p in plans)
    largest = max(plans, key=lambda p: p.peak_expert.memory["total"])
    first = per_window[0]
    return {
        **{k: v for k, v in total.to_dict().items() if k in _PLANNED},
        "tokens": first["tokens"],
        "cache_memory": dict(largest.peak_expert.memory),
        "cache_memory_fits": all(p.fits for p in plans),
        "experts": first["experts"],
        "notes": first["notes"],
        "windows": per_window,
        "output": str(prep.output),
        "frames": prep.plan.frames,
        "height": prep.plan.src_height,
        "width": prep.plan.src_width,
        "fps": prep.rate_text,
        "crop": prep.spec.crop,
        "audio": prep.audio.to_dict(),
        "branches": plans[0].branches,
        "offload": prep.spec.offload,
        "cache": prep.cache.to_dict(),
        "alignment": list(prep.messages),
        "memory": gpu_estimate(prep, pipe, plans[0].branches),
        "stages": {
            "text_encodes": 1, "vae_encode_passes": len(per_window), "denoise_steps": prep.spec.steps * len(per_window),
            "vae_decode": prep.spec.vae_decode if prep.spec.paste_back else "full",
            "vae_decode_fraction": sum(w["decode"]["fraction"] for w in per_window) / len(per_window),
            "segments": len(per_window),
        },  # fmt: skip
    }


_PLANNED = ("schema_version", "schedule", "decisions", "flops", "flops_full", "flops_ratio", "cache_memory_bytes",
            "text_kv_memory_bytes")  # what a plan knows of a run's summary (no times, no measured memory)


def model_mask(prep: EditPlan, window: Window, crop: Crop) -> np.ndarray:
    """bool [model frames, H, W]: the window's mask at the model's size, as its pipeline call gets it."""
    box = (crop.x0, crop.y0, crop.x1, crop.y1)
    return window_mask(crop_mask(prep.mask.region(window.start, window.stop, box), at_origin(crop)), window)


def window_plan(prep: EditPlan, pipe, mask: np.ndarray):
    """The cache plan of one window's pipeline call (cache/planning.py), as the hook will make it."""
    import torch

    from hetcache_cli.cache.plan import guidance_branches
    from hetcache_cli.cache.planning import plan_model
    from hetcache_cli.pipeline.model import execution_device

    device = execution_device(pipe)
    pipe.scheduler.set_timesteps(prep.spec.steps, device=device)
    spatial = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]
    return plan_model(
        pipe, prep.cache, pipe.scheduler.timesteps, torch.from_numpy(mask),
        branches=guidance_branches(prep.spec.guidance_scale), spatial=spatial,
        temporal=pipe.vae_scale_factor_temporal, device=device,
    )  # fmt: skip


def gpu_estimate(prep: EditPlan, pipe, branches: int) -> dict:
    """The whole edit's GPU / host memory estimate (pipeline/memory.py) for the dry run."""
    from hetcache_cli.pipeline.memory import estimate, pipeline_sizes

    cache = prep.cache
    # the largest working size of any window (a crop, or the whole frame at the model's size)
    sizes = [(c.height, c.width) for c in prep.crops] or [(prep.plan.height, prep.plan.width)]
    height, width = max(sizes, key=lambda s: s[0] * s[1])
    return estimate(
        pipeline_sizes(pipe, prep.spec.model or "embedded"), max(w.model_frames for w in prep.windows),
        height, width,
        cache.cache_dtype, "cpu" if cache.cache_device == "cpu" else "cuda", prep.spec.offload, branches,
        pipe.transformer.dtype, cache.method, cache.forecast,
    )  # fmt: skip
