"""How a source clip is fitted to the model, and what is kept of it, decided before any model loads.

The source is read at its exact frame rate (a variable-rate one resampled to its average, said so)
and stays at its own size: the mask is made at that size, the clip is split into windows, and each
window gets a crop (io/crop.py) the model works on at a size that fits its rules. The audio plan
and one message per decision worth telling come with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from hetcache_cli.io.align import AlignmentPlan, plan_alignment
from hetcache_cli.io.audio import AudioPlan, plan_audio
from hetcache_cli.io.crop import Crop, describe_crops, plan_crops
from hetcache_cli.io.probe import MediaInfo, probe_media
from hetcache_cli.io.video import VideoClip, read_video
from hetcache_cli.mask.make import edit_mask
from hetcache_cli.pipeline.windows import Window, plan_windows
from hetcache_cli.spec.schema import EditSpec

__all__ = ["SIZE_MULTIPLE", "FittedSource", "fit_source"]

# The model's size rule: sides multiples of VAE (8) x patch (2); frames are windowed (windows.py).
SIZE_MULTIPLE = 16


@dataclass
class FittedSource:
    frames: np.ndarray  # [F, H, W, 3] uint8 at the source's size (a view of the decoded clip)
    mask: np.ndarray  # [F, H, W] bool at the source's size
    fps: float
    rate: Fraction
    plan: AlignmentPlan
    windows: list[Window]
    crops: list[Crop]
    media: MediaInfo | None
    audio: AudioPlan
    messages: list[str] = field(default_factory=list)  # what changed from the source or the request: warnings
    notes: list[str] = field(default_factory=list)  # how the model sees the clip: information


def fit_source(spec: EditSpec, output: Path) -> FittedSource:
    """Read the source and decide frames, mask, windows, crops and audio (every input check included)."""
    media = probe_media(spec.video)
    clip, messages = _read_source(spec.video, media)
    src_f, src_h, src_w = clip.frames.shape[:3]
    plan = plan_alignment(
        src_f, src_h, src_w, frames=spec.frames, height=spec.height, width=spec.width, max_area=spec.max_area,
        size_multiple=SIZE_MULTIPLE, fps=clip.fps,
    )  # fmt: skip
    frames = clip.frames[: plan.frames]  # a view: the source frames are the only full-size copy
    mask = edit_mask(spec, plan, (src_h, src_w))  # from the mask file or the box keyframes
    windows = plan_windows(plan.frames, spec.window_frames, spec.window_overlap)
    crops = _plan_crops(spec, plan, mask, windows)
    messages += [m for m in plan.messages if m != plan.resize_message]
    notes = []
    if spec.crop == "full" and plan.resize_message:
        notes.append(f"{plan.resize_message}; the output is scaled back to {src_w}x{src_h}")
    else:
        notes += describe_crops(crops, (src_h, src_w))
    if spec.crf and (src_h % 2 or src_w % 2):
        sides = " and ".join(s for s, odd in (("column", src_w % 2), ("row", src_h % 2)) if odd)
        messages.append(
            f"the source is {src_w}x{src_h}: H.264 yuv420p needs even sides, so the output repeats its last {sides} "
            f"({src_w + src_w % 2}x{src_h + src_h % 2}); --crf 0 writes lossless RGB at the exact size"
        )
    trimmed = float(plan.frames / clip.rate) if plan.trimmed_frames else None
    audio = plan_audio(media, output, keep=spec.audio, duration_s=trimmed)
    messages += audio.messages
    notes += audio.notes
    return FittedSource(frames, mask, clip.fps, clip.rate, plan, windows, crops, media, audio, messages, notes)


def _read_source(path: str, media: MediaInfo | None) -> tuple[VideoClip, list[str]]:
    """The source's frames at its exact rate; a variable-rate source resampled to its average rate, said so."""
    if media is None:
        return read_video(path), []
    if not media.vfr:
        return read_video(path, rate=media.rate, expected_frames=media.packets), []
    clip = read_video(path, rate=media.rate, resample=True)
    return clip, [
        f"{path} has a variable frame rate (frames last {media.min_frame_s * 1e3:.1f}-{media.max_frame_s * 1e3:.1f} "
        f"ms): its {media.packets} frames are resampled to a constant {media.rate} fps, their average "
        f"({clip.num_frames} frames: ffmpeg repeats or drops the nearest frame), so the output keeps the duration "
        "and the audio stays in sync"
    ]


def _plan_crops(spec: EditSpec, plan: AlignmentPlan, mask: np.ndarray, windows: list[Window]) -> list[Crop]:
    # the paste-back band and the blur it reads lie inside the crop, so compositing there equals the whole frame's
    margin = spec.paste_dilation + 2 * spec.paste_feather + 2 if spec.paste_back else 0
    explicit = spec.width is not None or spec.height is not None
    return plan_crops(
        mask, [(w.start, w.stop) for w in windows], mode=spec.crop, context=spec.crop_context,
        min_size=spec.crop_min_size, max_area=spec.max_area, margin=margin, full_size=(plan.height, plan.width),
        size=(plan.height, plan.width) if explicit else None, q=SIZE_MULTIPLE,
    )  # fmt: skip
