"""One edit, end to end: the plan made (pipeline/plan.py), the pipeline run window by window with the cache,
the output written as the windows finish.

The output is the user's clip: the source's size, frame count, exact frame rate and audio, with only
the masked region changed. The model works on a crop around the mask per window (io/crop.py), or
on the whole frame scaled to its size (`crop: full`); its result is scaled back and stitched into
the full-resolution frames. Memory holds one window's source frames, decoded as the windows advance
(io/frames.py), never the whole clip: the frames a window finishes are composited and encoded at once.

All input checks run before the model loads, so bad input fails in a second with exit 2.
Each window's finished frames are encoded into a segment in a hidden work folder beside the output
(io/workdir.py); at the end the segments are joined without re-encoding and muxed with the audio into
the output, atomically, and the statistics are written last: an edit either leaves both files or
neither. `--resume` continues an interrupted edit from its first unfinished window, decoding the source
from that window's first frame.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hetcache_cli import __version__
from hetcache_cli.errors import Interrupted
from hetcache_cli.io.atomic import atomic_write_text
from hetcache_cli.io.audio import join_video
from hetcache_cli.io.crop import crop_mask
from hetcache_cli.io.frames import FrameStream, describe_filled
from hetcache_cli.io.stitch import patched_frame
from hetcache_cli.io.video import write_video
from hetcache_cli.io.workdir import WorkDir
from hetcache_cli.pipeline.plan import SIZE_MULTIPLE, EditPlan, build_plan
from hetcache_cli.pipeline.window_run import at_origin, final_frames, load_patch, run_window, summarise_windows
from hetcache_cli.pipeline.windows import Window, owned_frames, window_mask
from hetcache_cli.spec.paths import default_output, default_stats, resolve_outputs  # noqa: F401 (re-exported)
from hetcache_cli.spec.schema import EditSpec

logger = logging.getLogger(__name__)

STATS_VERSION = 2
__all__ = ["SIZE_MULTIPLE", "EditPlan", "EditResult", "plan_edit", "prepare_edit", "resolve_outputs", "run_edit"]

ProgressFn = Callable[[int, int], None]


@dataclass
class EditResult:
    output: Path
    stats_path: Path
    stats: dict
    frames: np.ndarray | None = None  # [F, H, W, 3] uint8 as written (run_edit(keep_frames=True))
    raw: np.ndarray | None = None  # [F, H, W, 3] uint8: the source with the model's output in each crop,
    # before colour match and paste-back (same)


def prepare_edit(spec: EditSpec, overwrite: bool = False) -> EditPlan:
    """Every input check and the edit's plan, before any model is loaded (no frame of the source is decoded)."""
    plan, warnings, notes = build_plan(spec, overwrite)
    for msg in warnings:
        logger.warning(msg)
    for note in notes:
        logger.info(note)
    return plan


def _window_finished(window: Window) -> None:
    """Called after each computed window is stored (a seam for tests that interrupt an edit)."""


class SourceWindow:
    """The current window's source frames in one array of the largest window's size: moving to the next
    window shifts its overlap to the front and decodes only the frames after it."""

    def __init__(self, stream: FrameStream, capacity: int) -> None:
        self.stream = stream
        self.frames = np.empty((capacity, stream.height, stream.width, 3), np.uint8)
        self.start, self.count = stream.position, 0

    def advance(self, window: Window) -> np.ndarray:
        """uint8 [window.frames, H, W, 3]: the window's source frames (a view, valid until the next call)."""
        keep = max(0, self.start + self.count - window.start)
        if keep:
            offset = window.start - self.start
            self.frames[:keep] = self.frames[offset : offset + keep]
        self.stream.read_into(self.frames[keep : window.frames])
        self.start, self.count = window.start, window.frames
        return self.frames[: window.frames]


def run_edit(
    prep: EditPlan,
    pipe,
    model_info: dict,
    progress: ProgressFn | None = None,
    resume: bool = False,
    keep_frames: bool = False,
) -> EditResult:
    """Run the denoising window by window with the cache attached, writing each window's finished frames, then
    join them into the video and write its statistics.

    Args:
        resume: reuse the finished windows an interrupted run with the same settings left beside the output.
        keep_frames: also return the written frames and the raw model output (for benchmarks of short clips).
    """
    windows = prep.windows
    store = WorkDir(prep.output, run_fingerprint(prep, model_info), resume, len(windows))
    try:
        return _run_and_write(prep, pipe, model_info, store, progress, keep_frames)
    except BaseException as err:
        kept = store.count_finished(len(windows))
        if not kept:
            store.remove()
        if isinstance(err, KeyboardInterrupt) and kept:
            raise Interrupted(
                f"no output written; {kept} of {len(windows)} windows are kept in {store.path}: rerun the same "
                "command with --resume to continue"
            ) from None
        raise


def _run_and_write(prep: EditPlan, pipe, model_info: dict, store: WorkDir, progress, keep_frames: bool):
    import torch

    from hetcache_cli.cache import StepStats, apply_hetcache, remove_hetcache
    from hetcache_cli.cache.flops import ModelDims
    from hetcache_cli.pipeline.model import execution_device, guidance_kwargs

    spec, windows = prep.spec, prep.windows
    device = execution_device(pipe)  # under offloading the weights may sit in host memory
    guidance_kwargs(pipe, spec.guidance_scale_2, spec.model)
    stats = StepStats(dims=ModelDims.from_config(pipe.transformer.config, text_len=512))
    total_steps = spec.steps * len(windows)
    encode = {"lossless": True} if spec.crf == 0 else {"crf": spec.crf}
    window_docs: list[dict] = []
    records: list[dict] = []
    kept: list[np.ndarray] = []
    raws: list[np.ndarray] = []
    previous = None
    first = store.finished
    for index in range(first):
        doc = store.record(index)
        doc["window"]["resumed"] = True
        window_docs.append(doc["window"])
        records.extend(doc["steps"])
    if first:
        previous = (windows[first - 1], load_patch(store, first - 1)[0])

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    stream = None
    apply_hetcache(pipe, prep.cache, stats=stats)
    try:
        if first < len(windows):
            stream = FrameStream(spec.video, prep.media, prep.plan.frames, start=windows[first].start)
            source = SourceWindow(stream, max(w.frames for w in windows))
        for window in windows[first:]:
            src = source.advance(window)
            final, raw, doc = run_window(prep, pipe, stats, window, previous, progress, total_steps, src)
            doc["window"]["filled"] = [t for t in stream.filled if window.start <= t < window.stop]
            owned = owned_frames(list(windows), window.index)
            frames = final_frames(src, window, final, owned)
            if keep_frames:
                frames = _kept(frames, kept)
                raws.extend(patched_frame(src[k], raw, window.start + k) for k in range(owned))
            write_video(store.segment(window.index), frames, prep.rate, joinable=True, **encode)
            store.save(window.index, final.frames, doc)
            _window_finished(window)
            window_docs.append(doc["window"])
            records.extend(doc["steps"])
            previous = (window, final)
            if progress is not None:
                progress((window.index + 1) * spec.steps, total_steps)
    finally:
        remove_hetcache(pipe)
        if stream is not None:
            stream.close()
    wall_s = time.perf_counter() - start

    messages = list(prep.messages) + store.messages
    filled = sorted({t for w in window_docs for t in w.get("filled", [])})
    damaged = describe_filled(spec.video, filled, prep.plan.frames)
    if damaged:
        logger.warning(damaged)
        messages.append(damaged)
    summary = summarise_windows(window_docs)
    summary["wall_s"] = wall_s
    summary["filled_frames"] = len(filled)
    summary.update(_peak_memory(device))
    doc = {
        "version": STATS_VERSION,
        "hetcache_version": __version__,
        "paths": {"video": spec.video, "mask": spec.mask, "output": str(prep.output), "stats": str(prep.stats_path)},
        "model": model_info,
        "settings": _settings(prep, messages),
        "windows": window_docs,
        "steps": records,
        "summary": summary,
    }
    join_video(prep.output, [store.segment(w.index) for w in windows], Path(spec.video), prep.audio)
    doc["settings"]["audio"] = prep.audio.to_dict()  # after the mux: a failed copy falls back to AAC
    try:
        atomic_write_text(prep.stats_path, json.dumps(doc, indent=2) + "\n")
    except BaseException:
        prep.output.unlink(missing_ok=True)
        raise
    store.remove()
    full = len(kept) == prep.plan.frames
    return EditResult(
        prep.output, prep.stats_path, doc, np.stack(kept) if full else None,
        np.stack(raws) if full and len(raws) == len(kept) else None,
    )  # fmt: skip


def _kept(frames, into: list):
    for frame in frames:
        into.append(frame)
        yield frame


def plan_edit(prep: EditPlan, pipe) -> dict:
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
    runs: dict[tuple, dict] = {}  # a run depends only on the window's model mask: a long clip repeats them
    for window, crop in zip(prep.windows, prep.crops):
        box = (crop.x0, crop.y0, crop.x1, crop.y1)
        mask = window_mask(crop_mask(prep.mask.region(window.start, window.stop, box), at_origin(crop)), window)
        key = (mask.shape, np.packbits(mask).tobytes())
        if key not in runs:
            runs[key] = describe_run(
                pipe,
                prep.cache,
                pipe.scheduler.timesteps,
                torch.from_numpy(mask),
                branches=branches,
                spatial=spatial,
                temporal=pipe.vae_scale_factor_temporal,
                device=device,
            )
        per_window.append({**window.to_dict(), **runs[key], "crop": crop.to_dict()})
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
        "height": prep.plan.src_height,
        "width": prep.plan.src_width,
        "fps": prep.rate_text,
        "crop": prep.spec.crop,
        "audio": prep.audio.to_dict(),
        "branches": branches,
        "offload": prep.spec.offload,
        "cache": prep.cache.to_dict(),
        "alignment": list(prep.messages),
        "memory": gpu_estimate(prep, pipe, branches),
    }


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


def _settings(prep: EditPlan, messages: list[str]) -> dict:
    spec = prep.spec
    skip = {"video", "mask", "output", "stats", "cache"}
    out = {k: v for k, v in vars(spec).items() if k not in skip}
    out.update(
        frames=prep.plan.frames,
        height=prep.plan.src_height,
        width=prep.plan.src_width,
        fps=prep.fps,
        rate=prep.rate_text,
        vfr=prep.media.vfr,
        full_frame_model_size=[prep.plan.width, prep.plan.height],
        mask_coverage=prep.mask.coverage(),
        alignment=messages,
        cache=prep.cache.to_dict(),
    )
    return out


def _file_identity(path: str) -> list:
    """(name, size, mtime) of a file, or of every file in a folder: what a resumed edit must find unchanged."""
    p = Path(path)
    files = sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def run_fingerprint(prep: EditPlan, model_info: dict) -> dict:
    """Everything a window's result and its encoded segment depend on, for `--resume` to check (the audio is
    muxed at the end, so it is not)."""
    spec = prep.spec
    values = {k: v for k, v in vars(spec).items() if k not in ("output", "stats", "audio", "cache")}
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
