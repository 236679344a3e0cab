"""One edit, end to end: inputs checked and fitted, the pipeline run window by window with the
cache, outputs written.

The output is the user's clip: the source's size, frame count, exact frame rate and audio, with only
the masked region changed. The model works on a crop around the mask per window (io/crop.py), or
on the whole frame scaled to its size (`crop: full`); its result is scaled back and stitched into
the full-resolution frames. Memory holds the source frames (uint8), the mask and one window's crops.

All input checks run before the model loads, so bad input fails in a second with exit 2.
The video (with its audio) and the statistics are written atomically, the statistics last: an edit
either leaves both files or neither. A clip longer than one window (pipeline/windows.py) keeps its
finished windows in a hidden work folder beside the output until both are written, so that
`--resume` can continue an interrupted edit.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Collection

import numpy as np

from hetcache_cli import __version__
from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.cache.model_check import check_cache_settings
from hetcache_cli.errors import InputError, Interrupted
from hetcache_cli.io.align import AlignmentPlan
from hetcache_cli.io.atomic import atomic_write_text
from hetcache_cli.io.audio import AudioPlan, write_video_with_audio
from hetcache_cli.io.crop import Crop, crop_mask
from hetcache_cli.io.mask import mask_coverage
from hetcache_cli.io.probe import MediaInfo
from hetcache_cli.io.stitch import Patch, patched_frame
from hetcache_cli.io.workdir import MemoryStore, WindowStore, WorkDir
from hetcache_cli.pipeline.fit import SIZE_MULTIPLE, fit_source
from hetcache_cli.pipeline.window_run import load_patch, output_frames, run_window, summarise_windows
from hetcache_cli.pipeline.windows import Window, describe_windows, owned_frames, window_mask
from hetcache_cli.spec.paths import default_output, default_stats, resolve_outputs  # noqa: F401 (re-exported)
from hetcache_cli.spec.schema import EditSpec

logger = logging.getLogger(__name__)

STATS_VERSION = 3  # = cache.summary.SCHEMA_VERSION (no torch import here)
__all__ = ["SIZE_MULTIPLE", "EditResult", "PreparedEdit", "plan_edit", "prepare_edit", "resolve_outputs", "run_edit"]

ProgressFn = Callable[[int, int], None]


@dataclass
class PreparedEdit:
    spec: EditSpec
    output: Path
    stats_path: Path
    frames: np.ndarray  # [F, H, W, 3] uint8 at the source's size, every frame of the edit
    mask: np.ndarray  # [F, H, W] bool at the source's size
    fps: float
    plan: AlignmentPlan  # frames used; height x width = the whole frame at the model's size (crop: full)
    cache: HetCacheConfig
    windows: list[Window]
    crops: list[Crop] = field(default_factory=list)  # one per window: the box the model works on and its size
    rate: Fraction | None = None  # the exact frame rate, read and written
    media: MediaInfo | None = None
    audio: AudioPlan = field(default_factory=AudioPlan)
    messages: list[str] = field(default_factory=list)


@dataclass
class EditResult:
    output: Path
    stats_path: Path
    stats: dict
    frames: np.ndarray | None = None  # [F, H, W, 3] uint8 as written (run_edit(keep_frames=True))
    raw: np.ndarray | None = None  # [F, H, W, 3] uint8: the source with the model's output in each crop,
    # before colour match and paste-back (same)


def prepare_edit(spec: EditSpec, overwrite: bool = False) -> PreparedEdit:
    """Every input check, before any model is loaded."""
    output, stats_path = resolve_outputs(spec)
    if output.exists() and not overwrite:
        raise InputError(f"output {output} already exists; pass --overwrite or choose another -o/--output")
    cache = spec.cache_config()
    check_cache_settings(cache, spec.model, spec.steps)  # against the model's config.json, before its weights

    fit = fit_source(spec, output)
    messages = fit.messages
    for msg in messages:
        logger.warning(msg)
    layout = describe_windows(fit.windows)
    for note in fit.notes + ([layout] if layout else []):
        logger.info(note)
        messages.append(note)
    return PreparedEdit(
        spec, output, stats_path, fit.frames, fit.mask, fit.fps, fit.plan, cache, fit.windows, fit.crops, fit.rate,
        fit.media, fit.audio, messages,
    )  # fmt: skip


def _window_finished(window: Window) -> None:
    """Called after each computed window is stored (a seam for tests that interrupt an edit)."""


def run_edit(
    prep: PreparedEdit,
    pipe,
    model_info: dict,
    progress: ProgressFn | None = None,
    resume: bool = False,
    keep_frames: bool = False,
    only_windows: Collection[int] | None = None,
) -> EditResult:
    """Run the denoising window by window with the cache attached, then write the video and its statistics.

    Args:
        resume: reuse the finished windows an interrupted run with the same settings left beside the output.
        keep_frames: also return the written frames and the raw model output (for benchmarks).
        only_windows: run only the windows of these indices (a preview) and write nothing: the result's
            `frames` hold their edited frames, [sum of their frames, H, W, 3] uint8 at the source's size,
            and its `stats` list only them. A window whose predecessor does not run gets no known frames.
    """
    windows = prep.windows
    store: WindowStore
    if len(windows) > 1 and only_windows is None:
        store = WorkDir(prep.output, run_fingerprint(prep, model_info), resume, len(windows))
        prep.messages.extend(store.messages)
    else:
        store = MemoryStore()
    try:
        return _run_and_write(prep, pipe, model_info, store, progress, keep_frames, only_windows)
    except KeyboardInterrupt:
        kept = store.count_finished(len(windows)) if isinstance(store, WorkDir) else 0
        if kept:
            raise Interrupted(
                f"no output written; {kept} of {len(windows)} windows are kept in {store.path}: rerun the same "
                "command with --resume to continue"
            ) from None
        raise


def _run_and_write(prep: PreparedEdit, pipe, model_info: dict, store: WindowStore, progress, keep_frames: bool,
                   only: Collection[int] | None = None):  # fmt: skip
    import torch

    from hetcache_cli.cache import StepStats, apply_hetcache, remove_hetcache
    from hetcache_cli.cache.flops import ModelDims
    from hetcache_cli.pipeline.model import execution_device, guidance_kwargs

    spec, windows = prep.spec, prep.windows
    if only is not None:
        windows = [w if w.index - 1 in only else replace(w, shared=0, known=0) for w in windows if w.index in only]
    device = execution_device(pipe)  # under offloading the weights may sit in host memory
    guidance_kwargs(pipe, spec.guidance_scale_2, spec.model)
    stats = StepStats(dims=ModelDims.from_config(pipe.transformer.config, text_len=512))
    total_steps = spec.steps * len(windows)
    window_docs: list[dict] = []
    records: list[dict] = []
    raws: list[Patch] = []
    previous: tuple[Window, Patch] | None = None

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    apply_hetcache(pipe, prep.cache, stats=stats)
    try:
        for window in windows:
            if window.index < store.finished:
                final, doc = load_patch(store, window.index)
                doc["window"]["resumed"] = True
            else:
                final, raw, doc = run_window(prep, pipe, stats, window, previous, progress, total_steps)
                store.save(window.index, final.frames, doc)
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
    if only is not None:
        frames = np.concatenate([np.stack([patched_frame(prep.frames[t], load_patch(store, w.index)[0], t)
                                           for t in range(w.start, w.stop)]) for w in windows])  # fmt: skip
        return EditResult(prep.output, prep.stats_path, doc, frames)
    encode = {"lossless": True} if spec.crf == 0 else {"crf": spec.crf}
    frames_out = output_frames(store, windows, prep.frames)
    write_video_with_audio(prep.output, frames_out, prep.rate or prep.fps, Path(spec.video), prep.audio, **encode)
    doc["settings"]["audio"] = prep.audio.to_dict()  # after the mux: a failed copy falls back to AAC
    try:
        atomic_write_text(prep.stats_path, json.dumps(doc, indent=2) + "\n")
    except BaseException:
        prep.output.unlink(missing_ok=True)
        raise
    frames = raw = None
    if keep_frames:
        frames = np.concatenate(list(output_frames(store, windows, prep.frames, chunks=True)))
        if len(raws) == len(windows):
            raw = np.stack([
                patched_frame(prep.frames[t], r, t)
                for i, (w, r) in enumerate(zip(windows, raws))
                for t in range(w.start, w.start + owned_frames(windows, i))
            ])  # fmt: skip
    store.remove()
    return EditResult(prep.output, prep.stats_path, doc, frames, raw)


def plan_edit(prep: PreparedEdit, pipe) -> dict:
    """What `run_edit` would do, without running it: windows, schedule, token counts, FLOPs, cache memory."""
    from hetcache_cli.cache.summary import RunSummary
    from hetcache_cli.pipeline.model import guidance_kwargs

    guidance_kwargs(pipe, prep.spec.guidance_scale_2, prep.spec.model)
    plans = [window_plan(prep, pipe, window, crop) for window, crop in zip(prep.windows, prep.crops)]
    per_window = [{**w.to_dict(), **p.to_dict(), "crop": c.to_dict()} for w, c, p in zip(prep.windows, prep.crops, plans)]
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
        "fps": _rate_text(prep),
        "crop": prep.spec.crop,
        "audio": prep.audio.to_dict(),
        "branches": plans[0].branches,
        "offload": prep.spec.offload,
        "cache": prep.cache.to_dict(),
        "alignment": prep.messages,
        "memory": gpu_estimate(prep, pipe, plans[0].branches),
    }


_PLANNED = ("schema_version", "schedule", "decisions", "flops", "flops_full", "flops_ratio", "cache_memory_bytes",
            "text_kv_memory_bytes")  # what a plan knows of a run's summary (no times, no measured memory)


def window_plan(prep: PreparedEdit, pipe, window: Window, crop: Crop):
    """The cache plan of one window's pipeline call (cache/planning.py), as the hook will make it."""
    import torch

    from hetcache_cli.cache.plan import guidance_branches
    from hetcache_cli.cache.planning import plan_model
    from hetcache_cli.pipeline.model import execution_device

    device = execution_device(pipe)
    pipe.scheduler.set_timesteps(prep.spec.steps, device=device)
    mask = window_mask(crop_mask(prep.mask[window.start : window.stop], crop), window)
    spatial = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]
    return plan_model(
        pipe, prep.cache, pipe.scheduler.timesteps, torch.from_numpy(mask), branches=guidance_branches(prep.spec.guidance_scale),
        spatial=spatial, temporal=pipe.vae_scale_factor_temporal, device=device,
    )  # fmt: skip


def gpu_estimate(prep: PreparedEdit, pipe, branches: int) -> dict:
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


def _settings(prep: PreparedEdit) -> dict:
    spec = prep.spec
    skip = {"video", "mask", "output", "stats", "cache"}
    out = {k: v for k, v in vars(spec).items() if k not in skip}
    out.update(
        frames=prep.plan.frames,
        height=prep.plan.src_height,
        width=prep.plan.src_width,
        fps=prep.fps,
        rate=_rate_text(prep),
        vfr=bool(prep.media and prep.media.vfr),
        full_frame_model_size=[prep.plan.width, prep.plan.height],
        mask_coverage=mask_coverage(prep.mask),
        alignment=prep.messages,
        cache=prep.cache.to_dict(),
    )
    return out


def _rate_text(prep: PreparedEdit) -> str:
    rate = prep.rate if prep.rate is not None else Fraction(prep.fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def _file_identity(path: str) -> list:
    """(name, size, mtime) of a file, or of every file in a folder: what a resumed edit must find unchanged."""
    p = Path(path)
    files = sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def run_fingerprint(prep: PreparedEdit, model_info: dict) -> dict:
    """Everything a window's result depends on, for `--resume` to check (the output's crf and audio are not)."""
    spec = prep.spec
    values = {k: v for k, v in vars(spec).items() if k not in ("output", "stats", "crf", "audio", "cache")}
    values.update(
        cache=prep.cache.to_dict(),
        video_file=_file_identity(spec.video),
        mask_file=_file_identity(spec.mask) if spec.mask else None,
        model={k: model_info.get(k) for k in ("name", "path", "device", "dtype")},
        size=[prep.plan.height, prep.plan.width],
        windows=[w.to_dict() for w in prep.windows],
        crops=[c.to_dict() for c in prep.crops],
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
