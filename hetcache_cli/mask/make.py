"""Making edit masks: `make_mask` for `hetcache mask` (`hetcache edit` reads its mask in pipeline/plan.py).

Every check that needs no decoding (prompt syntax, outputs, tracker weights) runs before the video
is read, and nothing is written until the mask is complete.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hetcache_cli.errors import InputError
from hetcache_cli.io.mask import mask_coverage
from hetcache_cli.io.video import VIDEO_SUFFIXES, read_video
from hetcache_cli.io.boxes import box_mask
from hetcache_cli.mask.job import MaskJob
from hetcache_cli.mask.output import check_output, output_kind, write_mask, write_preview
from hetcache_cli.mask.post import postprocess
from hetcache_cli.spec.prompts import Box, Point, fit_boxes, fit_points, parse_box, parse_point

__all__ = ["MaskResult", "default_mask_output", "make_mask"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


@dataclass
class MaskResult:
    """What `make_mask` wrote and what the mask holds."""

    output: Path
    kind: str  # video | folder
    method: str  # boxes | sam2
    frames: int
    width: int
    height: int
    fps: float
    coverage: float  # fraction of all pixels marked for editing
    empty_frames: list[int] = field(default_factory=list)
    preview: Path | None = None
    seconds: float = 0.0
    tracker: str | None = None

    def to_dict(self) -> dict:
        out = dict(vars(self))
        out.update(output=str(self.output), preview=None if self.preview is None else str(self.preview))
        return out


def default_mask_output(video: Path) -> Path:
    return video.with_name(f"{video.stem}_mask.mp4")


@dataclass
class _Prompts:
    boxes: list[Box]
    points: list[Point]


def _parse_prompts(job: MaskJob) -> _Prompts:
    if not (job.boxes or job.points or job.negatives):
        raise InputError(
            "no prompt: give --box x0,y0,x1,y1[@FRAME] (a box, interpolated between keyframes) or "
            "--point x,y[@FRAME] (a click on the object, tracked by SAM 2)"
        )
    if job.track and not (job.boxes or job.points):
        raise InputError("--track needs a --box or a --point to track")
    boxes = [parse_box(b) for b in job.boxes]
    points = [parse_point(p) for p in job.points] + [parse_point(p, positive=False) for p in job.negatives]
    if job.uses_tracker:
        anchored = {b.frame for b in boxes} | {p.frame for p in points if p.positive}
        for p in points:
            if p.frame not in anchored:
                raise InputError(
                    f"--negative {p.text()}: frame {p.frame} has no --point or --box; a negative click only "
                    "refines a positive click or a box on the same frame"
                )
    return _Prompts(boxes, points)


def _check_job(job: MaskJob) -> tuple[Path, Path, str, Path | None]:
    """(video, output, output kind, preview) after every check that needs no decoding."""
    video = Path(job.video)
    if job.dilate_px < 0:
        raise InputError(f"--dilate {job.dilate_px} is negative; use 0 or more pixels")
    if job.chunk_frames < 1:
        raise InputError(f"--chunk-frames {job.chunk_frames} is below 1; use e.g. 16")
    output = Path(job.output) if job.output else default_mask_output(video)
    kind = output_kind(output)
    preview = Path(job.preview) if job.preview else None
    paths = [("the output", output)]
    if preview is not None:
        if preview.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(f"--preview {preview} must end in .mp4 (or {'/'.join(VIDEO_SUFFIXES[1:])})")
        paths.append(("the preview", preview))
    for what, path in paths:
        if video.exists() and path.resolve() == video.resolve():
            raise InputError(f"{what} {path} is the input video; choose another path")
    if preview is not None and preview.resolve() == output.resolve():
        raise InputError(f"--preview {preview} equals the mask output; choose another path")
    check_output(output, kind, job.overwrite)
    if preview is not None:
        check_output(preview, "video", job.overwrite, "--preview")
    return video, output, kind, preview


def make_mask(job: MaskJob, progress: ProgressFn | None = None) -> MaskResult:
    """Make the mask `job` describes and write it (and its preview): see `hetcache mask --help`."""
    start = time.perf_counter()
    prompts = _parse_prompts(job)
    video, output, kind, preview = _check_job(job)
    if job.uses_tracker:
        from hetcache_cli.mask.tracker import resolve_tracker

        resolve_tracker(job.tracker)  # a missing download fails before the clip is decoded

    clip = read_video(video)
    num_frames, height, width = clip.frames.shape[:3]
    boxes = fit_boxes(prompts.boxes, num_frames, width, height)
    points = fit_points(prompts.points, num_frames, width, height)
    if job.uses_tracker:
        from hetcache_cli.mask.tracker import load_tracker

        tracker = load_tracker(job.tracker, job.device, job.dtype)
        raw = tracker.track(clip.frames, points, boxes, chunk_frames=job.chunk_frames, progress=progress)
        method = "sam2"
    else:
        raw = box_mask(boxes, num_frames, height, width)
        method = "boxes"
    mask = postprocess(raw, dilate_px=job.dilate_px, hull=job.hull, as_box=job.as_box, invert=job.invert)
    del raw

    empty = [int(f) for f in np.flatnonzero(~mask.any(axis=(1, 2)))]
    if len(empty) == num_frames:
        logger.warning("the mask is empty in every frame: hetcache edit cannot use it; check the prompts in --preview")
    elif empty:
        logger.warning("the mask is empty in %d of %d frames (first: %d)", len(empty), num_frames, empty[0])

    write_mask(output, mask, clip.fps, kind)
    if preview is not None:
        try:
            write_preview(preview, clip.frames, mask, clip.fps, points, boxes)
        except BaseException:
            _remove(output)
            raise
    return MaskResult(
        output=output, kind=kind, method=method, frames=num_frames, width=width, height=height, fps=clip.fps,
        coverage=mask_coverage(mask), empty_frames=empty, preview=preview, seconds=time.perf_counter() - start,
        tracker=job.tracker if method == "sam2" else None,
    )  # fmt: skip


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
