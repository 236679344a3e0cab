"""One window of an edit through the pipeline, and the pieces that turn windows back into one clip.

`run_window` gives the model the window's frames (its known frames from the earlier output, mask
0), then colour-matches, pastes back and cross-fades the result; `output_frames` streams the
finished clip from the stored windows, one window in memory at a time.
"""

from __future__ import annotations

import time

import numpy as np

from hetcache_cli.io.paste import paste_back
from hetcache_cli.io.workdir import WindowStore
from hetcache_cli.pipeline.windows import (
    Window, crossfade, crossfade_weights, match_color, owned_frames, pad_frames, window_mask,
)  # fmt: skip

__all__ = ["output_frames", "run_window", "summarise_windows", "window_inputs"]

_WINDOW_KEYS = ("schedule", "decisions", "flops", "flops_full", "flops_ratio", "transformer_ms", "cache_memory_bytes",
                "cache_memory_measured_bytes", "text_kv_memory_bytes", "text_kv_memory_measured_bytes", "experts")


def window_inputs(frames: np.ndarray, mask: np.ndarray, window: Window, previous: tuple[Window, np.ndarray] | None):
    """What the model gets for a window: (video uint8 [n, H, W, 3], mask bool [n, H, W], shared output or None).

    `frames` and `mask` are the whole clip's; the known frames carry the earlier output (the previous
    window's final frames, returned as the third item over all shared frames) with mask 0; padding
    repeats the last frame.
    """
    video = frames[window.start : window.stop]
    shared = None
    if window.shared:
        if previous is None:
            raise ValueError(f"window {window.index} shares frames but has no previous window")
        prev_window, prev_frames = previous
        offset = window.start - prev_window.start
        shared = np.asarray(prev_frames[offset : offset + window.shared])
        video = np.concatenate([shared[: window.known], video[window.known :]])
    return pad_frames(video, window.pad), window_mask(mask[window.start : window.stop], window), shared


def run_window(prep, pipe, stats, window: Window, previous, progress, total_steps: int):
    """One window through the pipeline: (final uint8 frames, raw model output, {"window", "steps"} records).

    `stats` is the StepStats attached with the cache; the hook resets it at the start of each call.
    """
    import PIL.Image
    import torch

    from hetcache_cli.pipeline.model import execution_device, guidance_kwargs

    spec = prep.spec
    device = execution_device(pipe)
    video, mask, shared = window_inputs(prep.frames, prep.mask, window, previous)
    region = prep.mask[window.start : window.stop]
    source = prep.frames[window.start : window.stop]
    mask_rgb = np.repeat((mask[..., None] * 255).astype(np.uint8), 3, axis=-1)
    base = window.index * spec.steps

    def on_step(_pipe, i, _t, kwargs):
        if progress is not None:
            progress(base + i + 1, total_steps)
        return kwargs

    seed = spec.seed + window.index
    begin = time.perf_counter()
    out = pipe(
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        video=[PIL.Image.fromarray(f) for f in video],
        mask=[PIL.Image.fromarray(m) for m in mask_rgb],
        height=prep.plan.height,
        width=prep.plan.width,
        num_frames=window.model_frames,
        num_inference_steps=spec.steps,
        guidance_scale=spec.guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        callback_on_step_end=on_step,
        **guidance_kwargs(pipe, spec.guidance_scale_2, spec.model),
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall_s = time.perf_counter() - begin
    raw = (np.clip(out.frames[0][: window.frames], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # [n, H, W, 3]
    del out

    color = None
    if shared is not None and spec.window_color_match:
        raw, color = match_color(raw, shared, region, window.shared)
    if spec.paste_back:
        final = paste_back(raw, source, region, spec.paste_dilation, spec.paste_feather)
    else:
        final = raw.copy()
    if shared is not None:
        final[: window.shared] = crossfade(shared, final[: window.shared], crossfade_weights(window))

    summary = stats.summary()
    steps = [{**record, "window": window.index} for record in stats.to_list()]
    record = {
        **window.to_dict(), "seed": seed, **{k: summary[k] for k in _WINDOW_KEYS}, "wall_s": wall_s,
        "color_match": color,
    }  # fmt: skip
    return final, raw, {"window": record, "steps": steps}


def summarise_windows(window_docs: list[dict]) -> dict:
    """The whole edit's summary over its windows (each window's own is in the statistics' `windows`)."""
    from hetcache_cli.cache.stats import combine_experts

    flops = sum(w["flops"] for w in window_docs)
    flops_full = sum(w["flops_full"] for w in window_docs)
    schedules = [w["schedule"] for w in window_docs]
    return {
        "schedule": schedules[0] if len(set(schedules)) == 1 else "|".join(schedules),
        "flops": flops,
        "flops_full": flops_full,
        "flops_ratio": flops / flops_full if flops_full else 1.0,
        "transformer_ms": sum(w["transformer_ms"] for w in window_docs),
        "decisions": {d: sum(w["decisions"][d] for w in window_docs) for d in ("full", "partial", "reuse")},
        "cache_memory_bytes": max(w["cache_memory_bytes"] for w in window_docs),
        **{k: max(w.get(k, 0) for w in window_docs)
           for k in ("cache_memory_measured_bytes", "text_kv_memory_bytes", "text_kv_memory_measured_bytes")},
        "experts": combine_experts([w.get("experts", {}) for w in window_docs]),
        "windows": len(window_docs),
        "resumed_windows": sum(bool(w.get("resumed")) for w in window_docs),
    }


def output_frames(store: WindowStore, windows: list[Window], chunks: bool = False):
    """The edited clip frame by frame (or window chunk by chunk), one stored window in memory at a time."""
    for i, window in enumerate(windows):
        final, _ = store.load(window.index)
        part = final[: owned_frames(windows, i)]
        if chunks:
            yield np.asarray(part)
        else:
            yield from part
