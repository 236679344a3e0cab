"""One edit, end to end: inputs checked and aligned, the pipeline run with the cache, outputs written.

All input checks run before the model loads, so bad input fails in a second with exit 2.
The video and the statistics are written atomically, the statistics last: an edit either
leaves both files or neither.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hetcache_cli import __version__
from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.errors import InputError
from hetcache_cli.io.align import AlignmentPlan, apply_alignment, plan_alignment
from hetcache_cli.io.atomic import atomic_write_text
from hetcache_cli.io.mask import load_mask, mask_coverage
from hetcache_cli.io.paste import paste_back
from hetcache_cli.io.video import read_video, write_video
from hetcache_cli.spec.schema import EditSpec

logger = logging.getLogger(__name__)

STATS_VERSION = 1
# The model's shape rules: frames = 4k+1, sides multiples of VAE (8) x patch (2).
FRAME_MULTIPLE = 4
SIZE_MULTIPLE = 16

ProgressFn = Callable[[int, int], None]


@dataclass
class PreparedEdit:
    spec: EditSpec
    output: Path
    stats_path: Path
    frames: np.ndarray  # [F, H, W, 3] uint8, aligned
    mask: np.ndarray  # [F, H, W] bool
    fps: float
    plan: AlignmentPlan
    cache: HetCacheConfig
    messages: list[str] = field(default_factory=list)


@dataclass
class EditResult:
    output: Path
    stats_path: Path
    stats: dict
    frames: np.ndarray  # [F, H, W, 3] uint8, as written
    raw: np.ndarray  # [F, H, W, 3] uint8, the model's output before paste-back


def default_output(video: Path) -> Path:
    return video.with_name(f"{video.stem}_edited.mp4")


def default_stats(output: Path) -> Path:
    return output.with_name(f"{output.stem}.stats.json")


def resolve_outputs(spec: EditSpec) -> tuple[Path, Path]:
    video = Path(spec.video)
    output = Path(spec.output) if spec.output else default_output(video)
    if output.suffix.lower() not in (".mp4", ".m4v", ".mov", ".mkv"):
        raise InputError(f"output {output} must end in .mp4 (or .m4v/.mov/.mkv); change -o/--output")
    stats = Path(spec.stats) if spec.stats else default_stats(output)
    if output.resolve() == video.resolve():
        raise InputError(f"output {output} is the input video; choose another -o/--output")
    if output.resolve() == stats.resolve():
        raise InputError(f"stats path {stats} equals the output path; choose another --stats")
    return output, stats


def prepare_edit(spec: EditSpec, overwrite: bool = False) -> PreparedEdit:
    """Every input check, before any model is loaded."""
    output, stats_path = resolve_outputs(spec)
    if output.exists() and not overwrite:
        raise InputError(f"output {output} already exists; pass --overwrite or choose another -o/--output")
    cache = spec.cache_config()

    clip = read_video(spec.video)
    src_f, src_h, src_w = clip.frames.shape[:3]
    plan = plan_alignment(
        src_f,
        src_h,
        src_w,
        frames=spec.frames,
        height=spec.height,
        width=spec.width,
        max_area=spec.max_area,
        frame_multiple=FRAME_MULTIPLE,
        size_multiple=SIZE_MULTIPLE,
        fps=clip.fps,
    )
    frames = apply_alignment(clip.frames, plan)
    mask = load_mask(
        spec.mask,
        plan.frames,
        (plan.height, plan.width),
        threshold=spec.mask_threshold,
        invert=spec.mask_invert,
        dilation_px=spec.mask_dilation,
    )
    for msg in plan.messages:
        logger.warning(msg)
    return PreparedEdit(spec, output, stats_path, frames, mask, clip.fps, plan, cache, list(plan.messages))


def run_edit(prep: PreparedEdit, pipe, model_info: dict, progress: ProgressFn | None = None) -> EditResult:
    """Run the denoising with the cache attached and write the video and its statistics."""
    import PIL.Image
    import torch

    from hetcache_cli.cache import StepStats, apply_hetcache, remove_hetcache
    from hetcache_cli.cache.flops import ModelDims

    spec = prep.spec
    device = pipe.transformer.device
    stats = StepStats(dims=ModelDims.from_config(pipe.transformer.config, text_len=512))
    apply_hetcache(pipe, prep.cache, stats=stats)

    video = [PIL.Image.fromarray(f) for f in prep.frames]
    mask_rgb = np.repeat((prep.mask[..., None] * 255).astype(np.uint8), 3, axis=-1)
    mask = [PIL.Image.fromarray(m) for m in mask_rgb]

    def on_step(_pipe, i, _t, kwargs):
        if progress is not None:
            progress(i + 1, spec.steps)
        return kwargs

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        out = pipe(
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            video=video,
            mask=mask,
            height=prep.plan.height,
            width=prep.plan.width,
            num_frames=prep.plan.frames,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance_scale,
            generator=torch.Generator().manual_seed(spec.seed),
            output_type="np",
            callback_on_step_end=on_step,
        )
    finally:
        remove_hetcache(pipe)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall_s = time.perf_counter() - start

    raw = (np.clip(out.frames[0], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # [F, H, W, 3]
    edited = raw
    if spec.paste_back:
        edited = paste_back(raw, prep.frames, prep.mask, spec.paste_dilation, spec.paste_feather)

    summary = stats.summary()
    summary["wall_s"] = wall_s
    summary.update(_peak_memory(device))
    doc = {
        "version": STATS_VERSION,
        "hetcache_version": __version__,
        "paths": {"video": spec.video, "mask": spec.mask, "output": str(prep.output), "stats": str(prep.stats_path)},
        "model": model_info,
        "settings": _settings(prep),
        "steps": stats.to_list(),
        "summary": summary,
    }
    if spec.crf == 0:
        write_video(prep.output, edited, prep.fps, lossless=True)
    else:
        write_video(prep.output, edited, prep.fps, crf=spec.crf)
    try:
        atomic_write_text(prep.stats_path, json.dumps(doc, indent=2) + "\n")
    except BaseException:
        prep.output.unlink(missing_ok=True)
        raise
    return EditResult(prep.output, prep.stats_path, doc, edited, raw)


def plan_edit(prep: PreparedEdit, pipe) -> dict:
    """What `run_edit` would do, without running it: schedule, token counts, FLOPs, cache memory."""
    import torch

    from hetcache_cli.cache.planning import describe_run

    pipe.scheduler.set_timesteps(prep.spec.steps, device=pipe.transformer.device)
    branches = 2 if prep.spec.guidance_scale > 1.0 else 1
    spatial = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]
    plan = describe_run(
        pipe.transformer,
        prep.cache,
        pipe.scheduler.timesteps,
        torch.from_numpy(prep.mask),
        branches=branches,
        spatial=spatial,
        temporal=pipe.vae_scale_factor_temporal,
    )
    plan.update(
        output=str(prep.output),
        frames=prep.plan.frames,
        height=prep.plan.height,
        width=prep.plan.width,
        branches=branches,
        cache=prep.cache.to_dict(),
        alignment=prep.messages,
    )
    return plan


def _settings(prep: PreparedEdit) -> dict:
    spec = prep.spec
    skip = {"video", "mask", "output", "stats", "cache"}
    out = {k: v for k, v in vars(spec).items() if k not in skip}
    out.update(
        frames=prep.plan.frames,
        height=prep.plan.height,
        width=prep.plan.width,
        fps=prep.fps,
        mask_coverage=mask_coverage(prep.mask),
        alignment=prep.messages,
        cache=prep.cache.to_dict(),
    )
    return out


def _peak_memory(device) -> dict:
    import torch

    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)), "peak_memory_kind": "cuda_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return {"peak_memory_bytes": int(rss * scale), "peak_memory_kind": "process_max_rss"}
