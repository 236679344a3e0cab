"""One edit, end to end: inputs checked and aligned, the pipeline run window by window with the
cache, outputs written.

All input checks run before the model loads, so bad input fails in a second with exit 2.
The video and the statistics are written atomically, the statistics last: an edit either
leaves both files or neither. A clip longer than one window (pipeline/windows.py) keeps its
finished windows in a hidden work folder beside the output until both are written, so that
`--resume` can continue an interrupted edit.
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
from hetcache_cli.errors import InputError, Interrupted
from hetcache_cli.io.align import AlignmentPlan, apply_alignment, plan_alignment
from hetcache_cli.io.atomic import atomic_write_text
from hetcache_cli.io.mask import mask_coverage
from hetcache_cli.io.video import read_video, write_video
from hetcache_cli.io.workdir import MemoryStore, WindowStore, WorkDir
from hetcache_cli.mask.make import edit_mask
from hetcache_cli.pipeline.window_run import output_frames, run_window, summarise_windows
from hetcache_cli.pipeline.windows import Window, describe_windows, owned_frames, plan_windows, window_mask
from hetcache_cli.spec.schema import EditSpec

logger = logging.getLogger(__name__)

STATS_VERSION = 2
# The model's size rule: sides multiples of VAE (8) x patch (2); frames are windowed (windows.py).
SIZE_MULTIPLE = 16

ProgressFn = Callable[[int, int], None]


@dataclass
class PreparedEdit:
    spec: EditSpec
    output: Path
    stats_path: Path
    frames: np.ndarray  # [F, H, W, 3] uint8 at the model's size, every frame of the edit
    mask: np.ndarray  # [F, H, W] bool
    fps: float
    plan: AlignmentPlan
    cache: HetCacheConfig
    windows: list[Window]
    messages: list[str] = field(default_factory=list)


@dataclass
class EditResult:
    output: Path
    stats_path: Path
    stats: dict
    frames: np.ndarray | None = None  # [F, H, W, 3] uint8 as written (run_edit(keep_frames=True))
    raw: np.ndarray | None = None  # [F, H, W, 3] uint8, the model's output before paste-back (same)


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
        size_multiple=SIZE_MULTIPLE,
        fps=clip.fps,
    )
    frames = apply_alignment(clip.frames, plan)
    mask = edit_mask(spec, plan)  # from the mask file or the box keyframes
    windows = plan_windows(plan.frames, spec.window_frames, spec.window_overlap)
    messages = list(plan.messages)
    for msg in messages:
        logger.warning(msg)
    layout = describe_windows(windows)
    if layout:
        logger.info(layout)
        messages.append(layout)
    return PreparedEdit(spec, output, stats_path, frames, mask, clip.fps, plan, cache, windows, messages)


def _window_finished(window: Window) -> None:
    """Called after each computed window is stored (a seam for tests that interrupt an edit)."""


def run_edit(
    prep: PreparedEdit,
    pipe,
    model_info: dict,
    progress: ProgressFn | None = None,
    resume: bool = False,
    keep_frames: bool = False,
) -> EditResult:
    """Run the denoising window by window with the cache attached, then write the video and its statistics.

    Args:
        resume: reuse the finished windows an interrupted run with the same settings left beside the output.
        keep_frames: also return the written frames and the raw model output (for benchmarks).
    """
    windows = prep.windows
    store: WindowStore
    if len(windows) > 1:
        store = WorkDir(prep.output, run_fingerprint(prep, model_info), resume, len(windows))
        prep.messages.extend(store.messages)
    else:
        store = MemoryStore()
    try:
        return _run_and_write(prep, pipe, model_info, store, progress, keep_frames)
    except KeyboardInterrupt:
        kept = store.count_finished(len(windows)) if isinstance(store, WorkDir) else 0
        if kept:
            raise Interrupted(
                f"no output written; {kept} of {len(windows)} windows are kept in {store.path}: rerun the same "
                "command with --resume to continue"
            ) from None
        raise


def _run_and_write(prep: PreparedEdit, pipe, model_info: dict, store: WindowStore, progress, keep_frames: bool):
    import torch

    from hetcache_cli.cache import StepStats, apply_hetcache, remove_hetcache
    from hetcache_cli.cache.flops import ModelDims
    from hetcache_cli.pipeline.model import execution_device, guidance_kwargs

    spec, windows = prep.spec, prep.windows
    device = execution_device(pipe)  # under offloading the weights may sit in host memory
    guidance_kwargs(pipe, spec.guidance_scale_2, spec.model)
    stats = StepStats(dims=ModelDims.from_config(pipe.transformer.config, text_len=512))
    total_steps = spec.steps * len(windows)
    window_docs: list[dict] = []
    records: list[dict] = []
    raws: list[np.ndarray] = []
    previous: tuple[Window, np.ndarray] | None = None

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    apply_hetcache(pipe, prep.cache, stats=stats)
    try:
        for window in windows:
            if window.index < store.finished:
                final, doc = store.load(window.index)
                doc["window"]["resumed"] = True
            else:
                final, raw, doc = run_window(prep, pipe, stats, window, previous, progress, total_steps)
                store.save(window.index, final, doc)
                _window_finished(window)
                if keep_frames:
                    raws.append(raw)
            window_docs.append(doc["window"])
            records.extend(doc["steps"])
            previous = (window, final)
            if progress is not None:
                progress((window.index + 1) * spec.steps, total_steps)
    finally:
        remove_hetcache(pipe)
    wall_s = time.perf_counter() - start

    summary = summarise_windows(window_docs)
    summary["wall_s"] = wall_s
    summary.update(_peak_memory(device))
    doc = {
        "version": STATS_VERSION,
        "hetcache_version": __version__,
        "paths": {"video": spec.video, "mask": spec.mask, "output": str(prep.output), "stats": str(prep.stats_path)},
        "model": model_info,
        "settings": _settings(prep),
        "windows": window_docs,
        "steps": records,
        "summary": summary,
    }
    rate = {"lossless": True} if spec.crf == 0 else {"crf": spec.crf}
    write_video(prep.output, output_frames(store, windows), prep.fps, **rate)
    try:
        atomic_write_text(prep.stats_path, json.dumps(doc, indent=2) + "\n")
    except BaseException:
        prep.output.unlink(missing_ok=True)
        raise
    frames = raw = None
    if keep_frames:
        frames = np.concatenate(list(output_frames(store, windows, chunks=True)))
        if len(raws) == len(windows):
            raw = np.concatenate([r[: owned_frames(windows, i)] for i, r in enumerate(raws)])
    store.remove()
    return EditResult(prep.output, prep.stats_path, doc, frames, raw)


def plan_edit(prep: PreparedEdit, pipe) -> dict:
    """What `run_edit` would do, without running it: windows, schedule, token counts, FLOPs, cache memory."""
    import torch

    from hetcache_cli.cache.planning import describe_run
    from hetcache_cli.pipeline.model import execution_device, guidance_kwargs

    guidance_kwargs(pipe, prep.spec.guidance_scale_2, prep.spec.model)
    device = execution_device(pipe)
    pipe.scheduler.set_timesteps(prep.spec.steps, device=device)
    branches = 2 if prep.spec.guidance_scale > 1.0 else 1
    spatial = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]
    per_window = []
    for window in prep.windows:
        mask = window_mask(prep.mask[window.start : window.stop], window)
        run = describe_run(
            pipe,
            prep.cache,
            pipe.scheduler.timesteps,
            torch.from_numpy(mask),
            branches=branches,
            spatial=spatial,
            temporal=pipe.vae_scale_factor_temporal,
            device=device,
        )
        per_window.append({**window.to_dict(), **run})
    first = per_window[0]
    flops = sum(w["flops"] for w in per_window)
    flops_full = sum(w["flops_full"] for w in per_window)
    largest = max(per_window, key=lambda w: w["cache_memory"]["total"])
    return {
        "schedule": first["schedule"],
        "tokens": first["tokens"],
        "flops": flops,
        "flops_full": flops_full,
        "flops_ratio": flops / flops_full if flops_full else 1.0,
        "decisions": {d: sum(w["decisions"][d] for w in per_window) for d in first["decisions"]},
        "cache_memory_bytes": max(w["cache_memory_bytes"] for w in per_window),
        "cache_memory": largest["cache_memory"],
        "text_kv_memory_bytes": largest["text_kv_memory_bytes"],
        "cache_memory_fits": all(w["cache_memory_fits"] for w in per_window),
        "experts": first["experts"],
        "notes": first["notes"],
        "windows": per_window,
        "output": str(prep.output),
        "frames": prep.plan.frames,
        "height": prep.plan.height,
        "width": prep.plan.width,
        "branches": branches,
        "offload": prep.spec.offload,
        "cache": prep.cache.to_dict(),
        "alignment": prep.messages,
        "memory": gpu_estimate(prep, pipe, branches),
    }


def gpu_estimate(prep: PreparedEdit, pipe, branches: int) -> dict:
    """The whole edit's GPU / host memory estimate (pipeline/memory.py) for the dry run."""
    from hetcache_cli.pipeline.memory import estimate, pipeline_sizes

    cache = prep.cache
    return estimate(
        pipeline_sizes(pipe, prep.spec.model or "embedded"), max(w.model_frames for w in prep.windows),
        prep.plan.height, prep.plan.width,
        cache.cache_dtype, "cpu" if cache.cache_device == "cpu" else "cuda", prep.spec.offload, branches,
        pipe.transformer.dtype, cache.method,
    )  # fmt: skip


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


def _file_identity(path: str) -> list:
    """(name, size, mtime) of a file, or of every file in a folder: what a resumed edit must find unchanged."""
    p = Path(path)
    files = sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def run_fingerprint(prep: PreparedEdit, model_info: dict) -> dict:
    """Everything a window's result depends on, for `--resume` to check (the output's crf is not)."""
    spec = prep.spec
    values = {k: v for k, v in vars(spec).items() if k not in ("output", "stats", "crf", "cache")}
    values.update(
        cache=prep.cache.to_dict(),
        video_file=_file_identity(spec.video),
        mask_file=_file_identity(spec.mask) if spec.mask else None,
        model={k: model_info.get(k) for k in ("name", "path", "device", "dtype")},
        size=[prep.plan.height, prep.plan.width],
        windows=[w.to_dict() for w in prep.windows],
        hetcache_version=__version__,
    )
    return values


def _peak_memory(device) -> dict:
    import torch

    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)), "peak_memory_kind": "cuda_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return {"peak_memory_bytes": int(rss * scale), "peak_memory_kind": "process_max_rss"}
