"""The edit's plan, made once before any model loads and without decoding the source: probe -> mask ->
windows -> crops -> audio.

The probe gives the frame count, size, exact rate (a variable-rate source is resampled to its average,
said so), rotation and audio; the mask is read once into its compact form (io/mask_frames.py); the clip
is split into windows and each window gets a crop (io/crop.py) the model works on at a size that fits
its rules. `--dry-run`, the run, `hetcache run` and the torchrun cost estimate all read this one plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.cache.plan import guidance_branches
from hetcache_cli.errors import InputError
from hetcache_cli.io.align import AlignmentPlan, plan_alignment
from hetcache_cli.io.audio import AudioPlan, plan_audio
from hetcache_cli.io.crop import Crop, crops_for_boxes, describe_crops
from hetcache_cli.io.mask_frames import MaskFrames, box_mask_frames, read_mask_frames
from hetcache_cli.io.probe import MediaInfo, probe_media
from hetcache_cli.pipeline.windows import Window, describe_windows, plan_windows
from hetcache_cli.spec.paths import resolve_outputs
from hetcache_cli.spec.prompts import fit_boxes, parse_boxes
from hetcache_cli.spec.schema import EditSpec

__all__ = ["SIZE_MULTIPLE", "EditPlan", "build_plan"]

# The model's size rule: sides multiples of VAE (8) x patch (2); frames are windowed (windows.py).
SIZE_MULTIPLE = 16


@dataclass(frozen=True)
class EditPlan:
    """Everything an edit does, decided from the spec, the probe and the mask.

    Args:
        spec: the edit's settings.
        output, stats_path: where the video and its statistics go.
        cache: the HetCache configuration.
        media: the source's probe.
        rate: the exact frame rate, read and written.
        plan: frames used; height x width = the whole frame at the model's size (crop: full).
        mask: the edit mask of every frame used, at the source's size.
        windows: the model runs, in order; crops: one per window.
        audio: what happens to the source's audio streams.
        messages: what changed from the source or the request (warnings), then how the model sees the clip.
    """

    spec: EditSpec
    output: Path
    stats_path: Path
    cache: HetCacheConfig
    media: MediaInfo
    rate: Fraction
    plan: AlignmentPlan
    mask: MaskFrames
    windows: tuple[Window, ...]
    crops: tuple[Crop, ...]
    audio: AudioPlan
    messages: tuple[str, ...] = ()

    @property
    def fps(self) -> float:
        return float(self.rate)

    @property
    def rate_text(self) -> str:
        return f"{self.rate.numerator}/{self.rate.denominator}"

    def model_cost(self, steps: int | None = None) -> float:
        """Model frames x model pixels x steps x guidance branches over every window (for sharing out edits)."""
        branches = guidance_branches(self.spec.guidance_scale)
        pixels = sum(w.model_frames * c.width * c.height for w, c in zip(self.windows, self.crops))
        return float(pixels * (steps or self.spec.steps) * branches)


def probe_source(path: str) -> MediaInfo:
    """The source's probe; a file ffmpeg cannot read, or one without a video frame, is bad input."""
    media = probe_media(path)
    if media is None or media.packets < 1 or not (media.width and media.height):
        raise InputError(f"cannot read video {path}: ffmpeg finds no video frames in it; pass a video file ffmpeg "
                         "can decode (mp4, mov, webm, ...)")  # fmt: skip
    return media


def build_plan(spec: EditSpec, overwrite: bool = False) -> tuple[EditPlan, list[str], list[str]]:
    """(plan, warnings, notes): every input check, without decoding a frame of the source."""
    output, stats_path = resolve_outputs(spec)
    if output.exists() and not overwrite:
        raise InputError(f"output {output} already exists; pass --overwrite or choose another -o/--output")
    cache = spec.cache_config()
    media = probe_source(spec.video)
    src_h, src_w = media.height, media.width
    messages = [_vfr_message(spec.video, media)] if media.vfr else []
    plan = plan_alignment(
        media.frames, src_h, src_w, frames=spec.frames, height=spec.height, width=spec.width, max_area=spec.max_area,
        size_multiple=SIZE_MULTIPLE, fps=float(media.rate),
    )  # fmt: skip
    mask = _edit_mask(spec, plan, (src_h, src_w))
    windows = tuple(plan_windows(plan.frames, spec.window_frames, spec.window_overlap))
    crops = tuple(_plan_crops(spec, plan, mask, windows))
    messages += [m for m in plan.messages if m != plan.resize_message]
    notes = []
    if spec.crop == "full" and plan.resize_message:
        notes.append(f"{plan.resize_message}; the output is scaled back to {src_w}x{src_h}")
    else:
        notes += describe_crops(list(crops), (src_h, src_w))
    if spec.crf and (src_h % 2 or src_w % 2):
        sides = " and ".join(s for s, odd in (("column", src_w % 2), ("row", src_h % 2)) if odd)
        messages.append(
            f"the source is {src_w}x{src_h}: H.264 yuv420p needs even sides, so the output repeats its last {sides} "
            f"({src_w + src_w % 2}x{src_h + src_h % 2}); --crf 0 writes lossless RGB at the exact size"
        )
    trimmed = float(plan.frames / media.rate) if plan.trimmed_frames else None
    audio = plan_audio(media, output, keep=spec.audio, duration_s=trimmed)
    messages += audio.messages
    notes += audio.notes
    layout = describe_windows(list(windows))
    notes += [layout] if layout else []
    edit = EditPlan(
        spec, output, stats_path, cache, media, media.rate, plan, mask, windows, crops, audio, tuple(messages + notes)
    )
    return edit, messages, notes


def _vfr_message(path: str, media: MediaInfo) -> str:
    return (
        f"{path} has a variable frame rate (frames last {media.min_frame_s * 1e3:.1f}-{media.max_frame_s * 1e3:.1f} "
        f"ms): its {media.packets} frames are resampled to a constant {media.rate} fps, their average "
        f"({media.frames} frames: the nearest frame is repeated or dropped), so the output keeps the duration "
        "and the audio stays in sync"
    )


def _edit_mask(spec: EditSpec, plan: AlignmentPlan, size_hw: tuple[int, int]) -> MaskFrames:
    """The mask from `spec.mask` (a file) or `spec.box` (keyframes in source pixels, drawn as `hetcache mask
    --box` draws them, then fitted like a mask file: the same edit either way)."""
    if spec.mask is not None:
        return read_mask_frames(
            spec.mask, plan.frames, size_hw, threshold=spec.mask_threshold, invert=spec.mask_invert,
            dilation_px=spec.mask_dilation,
        )  # fmt: skip
    boxes = fit_boxes(parse_boxes(spec.box, "box"), plan.src_frames, plan.src_width, plan.src_height, "box")
    what = "box " + " ".join(b.text() for b in boxes)
    return box_mask_frames(
        boxes, plan.frames, (plan.src_height, plan.src_width), size_hw, spec.mask_threshold, spec.mask_invert,
        spec.mask_dilation, what,
    )  # fmt: skip


def _plan_crops(spec: EditSpec, plan: AlignmentPlan, mask: MaskFrames, windows) -> list[Crop]:
    # the paste-back band and the blur it reads lie inside the crop, so compositing there equals the whole frame's
    margin = spec.paste_dilation + 2 * spec.paste_feather + 2 if spec.paste_back else 0
    explicit = spec.width is not None or spec.height is not None
    return crops_for_boxes(
        [mask.box(w.start, w.stop) for w in windows], (mask.height, mask.width), mode=spec.crop,
        context=spec.crop_context, min_size=spec.crop_min_size, max_area=spec.max_area, margin=margin,
        full_size=(plan.height, plan.width), size=(plan.height, plan.width) if explicit else None, q=SIZE_MULTIPLE,
    )  # fmt: skip
