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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Collection

import numpy as np

from hetcache_cli import __version__
from hetcache_cli.cache.model_check import check_cache_settings
from hetcache_cli.errors import Interrupted
from hetcache_cli.io.atomic import atomic_write_text
from hetcache_cli.io.audio import join_video
from hetcache_cli.io.frames import FrameStream, describe_filled
from hetcache_cli.io.stitch import patched_frame
from hetcache_cli.io.video import write_video
from hetcache_cli.io.workdir import WorkDir
from hetcache_cli.pipeline.plan import SIZE_MULTIPLE, EditPlan, build_plan
from hetcache_cli.pipeline.stages import PromptEmbeds, StageClock, stage_table
from hetcache_cli.pipeline.vae import batched_encode, cpu_convolutions, plain_convolutions, restore_encode, vae_tiling
from hetcache_cli.pipeline.window_run import (
    WindowPasses, final_frames, load_patch, run_window, summarise_windows,
)  # fmt: skip
from hetcache_cli.pipeline.windows import Window, owned_frames
from hetcache_cli.spec.paths import default_output, default_stats, resolve_outputs  # noqa: F401 (re-exported)
from hetcache_cli.spec.schema import EditSpec

logger = logging.getLogger(__name__)

STATS_VERSION = 3  # = cache.summary.SCHEMA_VERSION (no torch import here)
__all__ = ["SIZE_MULTIPLE", "EditPlan", "EditResult", "prepare_edit", "resolve_outputs", "run_edit"]

ProgressFn = Callable[[int, int], None]


@dataclass
class EditResult:
    output: Path
    stats_path: Path
    stats: dict
    frames: np.ndarray | None = None  # [F, H, W, 3] uint8 as written (run_edit(keep_frames=True))
    raw: np.ndarray | None = None  # [F, H, W, 3] uint8: the source with the model's output in each crop,
    # before colour match and paste-back (same)
    source: np.ndarray | None = None  # [F, H, W, 3] uint8: the source frames of a preview's windows


def prepare_edit(spec: EditSpec, overwrite: bool = False) -> EditPlan:
    """Every input check and the edit's plan, before any model is loaded (no frame of the source is decoded)."""
    plan, warnings, notes = build_plan(spec, overwrite)
    check_cache_settings(plan.cache, spec.model, spec.steps)  # against the model's config.json, before its weights
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
    only_windows: Collection[int] | None = None,
    parallel=None,
) -> EditResult:
    """Run the denoising window by window with the cache attached, writing each window's finished frames, then
    join them into the video and write its statistics.

    Args:
        resume: reuse the finished windows an interrupted run with the same settings left beside the output.
        keep_frames: also return the written frames and the raw model output (for benchmarks of short clips).
        only_windows: run only the windows of these indices (a preview) and write nothing: the result's
            `frames` hold their edited frames and `source` their source frames, [sum of their frames, H, W, 3]
            uint8 at the source's size, and its `stats` list only them. A window whose predecessor does not
            run gets no known frames.
    """
    windows = prep.windows
    if only_windows is not None:
        return _run_and_write(prep, pipe, model_info, None, progress, keep_frames, only_windows)
    store = WorkDir(prep.output, run_fingerprint(prep, model_info), resume, len(windows))
    try:
        return _run_and_write(prep, pipe, model_info, store, progress, keep_frames, parallel=parallel)
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


def _run_and_write(prep: EditPlan, pipe, model_info: dict, store: WorkDir | None, progress, keep_frames: bool,
                   only: Collection[int] | None = None, parallel=None):  # fmt: skip
    import torch

    from hetcache_cli.cache import StepStats, apply_hetcache, remove_hetcache
    from hetcache_cli.cache.flops import ModelDims
    from hetcache_cli.pipeline.model import execution_device, guidance_kwargs

    spec, windows = prep.spec, list(prep.windows)
    if only is not None:  # a preview: no work folder (store is None), nothing written
        windows = [w if w.index - 1 in only else replace(w, shared=0, known=0) for w in windows if w.index in only]
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
    preview: list[tuple[np.ndarray, np.ndarray]] = []  # (source, edited) frames of a preview's windows
    first = store.finished if store is not None else 0
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
    clock = StageClock(device)
    prompts = PromptEmbeds(pipe, spec.prompt, spec.negative_prompt, spec.guidance_scale, clock)
    passes = WindowPasses(prompts, clock, region_decode=spec.vae_decode == "region" and not keep_frames)
    apply_hetcache(pipe, prep.cache, stats=stats)
    batched_encode(pipe, clock)
    vae_tiling(pipe.vae, spec.vae_tiling)
    if device.type == "cpu":
        cpu_convolutions(pipe.vae)
    if parallel is not None:
        parallel.attach(pipe)
    try:
        if first < len(windows):
            stream = FrameStream(spec.video, prep.media, prep.plan.frames, start=windows[first].start)
            source = SourceWindow(stream, max(w.frames for w in windows))
        for window in windows[first:]:
            with clock.stage("read"):
                src = source.advance(window)
            final, raw, doc = run_window(prep, pipe, stats, window, previous, progress, total_steps, src, passes,
                                         parallel)  # fmt: skip
            doc["window"]["filled"] = [t for t in stream.filled if window.start <= t < window.stop]
            if store is None:
                edited = (patched_frame(src[k], final, window.start + k) for k in range(window.frames))
                preview.extend((src[k].copy(), frame) for k, frame in enumerate(edited))
            else:
                owned = owned_frames(list(prep.windows), window.index)
                frames = final_frames(src, window, final, owned)
                if keep_frames:
                    frames = _kept(frames, kept)
                    raws.extend(patched_frame(src[k], raw, window.start + k) for k in range(owned))
                with clock.stage("write"):
                    write_video(store.segment(window.index), frames, prep.rate, joinable=True, **encode)
                for name, seconds in clock.take().items():
                    doc["window"]["stages"][name] = doc["window"]["stages"].get(name, 0.0) + seconds
                store.save(window.index, final.frames, doc)
                _window_finished(window)
            window_docs.append(doc["window"])
            records.extend(doc["steps"])
            previous = (window, final)
            if progress is not None:
                progress((window.index + 1) * spec.steps, total_steps)
    finally:
        restore_encode(pipe)
        plain_convolutions(pipe.vae)
        vae_tiling(pipe.vae, False)
        remove_hetcache(pipe)
        if stream is not None:
            stream.close()
    wall_s = time.perf_counter() - start

    messages = list(prep.messages) + (store.messages if store is not None else [])
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
    summary["stages"] = stage_table(window_docs, edit_s=wall_s)
    summary["text_encodes"] = prompts.encodes
    if parallel is not None:
        doc["parallel"] = parallel.report()
    if store is None:
        source, edited = (np.stack(x) for x in zip(*preview))
        return EditResult(prep.output, prep.stats_path, doc, edited, source=source)
    join_begin = time.perf_counter()
    join_video(prep.output, [store.segment(w.index) for w in windows], Path(spec.video), prep.audio)
    done = time.perf_counter()
    summary["stages"] = stage_table(window_docs, edit_s=done - start, join_s=done - join_begin)
    summary["text_encodes"] = prompts.encodes
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
