"""The edit spec: one edit's settings, the one home of every edit default (no torch import).

Precedence: CLI flag > YAML spec > the model's `hetcache_defaults.json` (steps, guidance_scale,
negative_prompt, windows; see `spec/model_defaults.py`) > the defaults below (and, for `cache:`, a preset's values:
the model's calibrated preset when it has one, else the shipped `configs/presets/`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from hetcache_cli.cache.config import HetCacheConfig, config_fields

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")
OFFLOADS = ("none", "model", "group", "leaf")
CROP_MODES = ("auto", "full")
MASK_FILLS = ("source", "gray")
VAE_DECODES = ("region", "full")


@dataclass
class EditSpec:
    r"""
    One masked video edit.

    Args:
        video (`str`): Input video, any format ffmpeg reads.
        prompt (`str`): What the masked region should show.
        mask (`str`, *optional*): Mask image (used for every frame), mask video, or folder of per-frame images.
            White = edit. Give this or `box`.
        box (`list[str]`, *optional*): Instead of `mask`: box keyframes x0,y0,x1,y1@FRAME in pixels of the video,
            e.g. ["40,30,200,180@0", "90,30,250,180@16"] (one string for a fixed box; @FRAME defaults to 0),
            interpolated between keyframes and held before the first and after the last, as `hetcache mask --box`.
        negative_prompt (`str`, defaults to `""`): What it should not show.
        output (`str`, *optional*): Output MP4; default `<video stem>_edited.mp4` beside the video.
        stats (`str`, *optional*): Statistics JSON; default `<output stem>.stats.json` beside the output.
        model (`str`, *optional*): Diffusers Wan-VACE folder or Hugging Face hub id in the local cache;
            default the embedded demo model.
        frames (`int`, *optional*): Edit only the first this many frames; default every frame of the video.
        width (`int`, *optional*): The model's working width (multiple of 16); default from `max_area`. The
            output keeps the source's size whatever the working size.
        height (`int`, *optional*): The model's working height (multiple of 16); default from `max_area`.
        max_area (`int`, defaults to `399360`): When width/height are not given, the model works on at most
            this many pixels per frame (480x832): a larger crop (or frame, with `crop: full`) is scaled down to
            fit, a smaller one is worked at its own resolution.
        crop (`str`, defaults to `"auto"`): `auto`: the model works on a box around the mask (one per window,
            steady between windows), cut from the full-resolution frames and stitched back into them; `full`:
            on the whole frame, scaled to the model size and back.
        crop_context (`float`, defaults to `2.0`): With `crop: auto`, each side of the mask's box (grown by the
            paste-back band) is multiplied by this, so the model sees the edit's surroundings.
        crop_min_size (`int`, defaults to `384`): With `crop: auto`, a crop side is at least this many pixels
            of the source (or the whole side of a smaller frame).
        mask_fill (`str`, defaults to `"source"`): What the model is shown inside the mask (VACE's "reactive"
            stream): `source`, the original pixels, which guide the edit ("make the ball red"); `gray`, mid
            grey (127.5), as VACE trains inpainting, for removing or replacing an object.
        audio (`bool`, defaults to `True`): Copy the source's audio streams into the output (re-encoded to AAC
            only where the output container cannot hold their codec).
        window_frames (`int`, defaults to `81`): Frames per model run (4k+1). A longer clip is edited in
            overlapping windows of this many frames, each conditioned on the frames the previous one edited;
            a model folder's `hetcache_defaults.json` may recommend another value (the embedded model does).
        window_overlap (`int`, defaults to `16`): Frames consecutive windows share: the next window is given
            the first of them as known (already edited) frames and edits the last min(4, overlap / 2) again;
            the output cross-fades from the earlier result to the new one over those.
        window_color_match (`bool`, defaults to `False`): Scale and shift each window's colours inside the mask
            to match the previous window's over the frames they share. Off by default: on the embedded model it
            did not lower colour drift or seams consistently (docs/benchmarks.md); try it where a model drifts.
        steps (`int`, defaults to `30`): Denoising steps.
        guidance_scale (`float`, defaults to `5.0`): Classifier-free guidance scale (1 disables guidance). A
            model folder's `hetcache_defaults.json` may recommend another default (the embedded model does).
        guidance_scale_2 (`float`, *optional*): Guidance of the low-noise expert (`transformer_2`) of a two-expert
            model such as Wan2.2 VACE-Fun A14B; default `guidance_scale`. An error for one-expert models.
        seed (`int`, defaults to `0`): Random seed.
        mask_threshold (`float`, defaults to `0.5`): Mask pixels brighter than this (0..1) are edited.
        mask_invert (`bool`, defaults to `False`): Edit the dark part of the mask instead.
        mask_dilation (`int`, defaults to `0`): Grow the mask by this many source pixels before editing.
        paste_back (`bool`, defaults to `True`): Keep the input's pixels outside the (dilated, feathered) mask;
            without it the whole crop (or frame, with `crop: full`) is the model's output.
        paste_dilation (`int`, defaults to `4`): Source pixels the paste-back region extends past the mask.
        paste_feather (`int`, defaults to `4`): Width in source pixels of the soft paste-back edge.
        vae_decode (`str`, defaults to `"region"`): `region` decodes only the latent box around what paste-back
            uses (the mask and its band, plus 64 pixels for the decoder's reach; the whole crop when that box
            is most of it), `full` the whole crop. Region and full differ by at most a few levels in the
            band's pixels (docs/benchmarks.md); without paste-back the whole crop is always decoded.
        vae_tiling (`bool`, defaults to `False`): Encode and decode with diffusers' VAE tiling (256-px tiles):
            about a quarter of the VAE's working memory on large crops (8.1 -> 1.9 GiB decoding 480x832 with
            the Wan VAE), at 1.7x its time on the CPU (docs/benchmarks.md); for a GPU short of memory.
        crf (`int`, defaults to `18`): x264 quality of the output video (H.264, yuv420p): 0 = lossless RGB
            (decoded pixels equal the edit's, bit for bit; few players), 18 = visually lossless, larger =
            smaller files.
        device (`str`, defaults to `"auto"`): `auto`, `cpu`, `cuda` or `cuda:N`.
        dtype (`str`, defaults to `"auto"`): Transformer dtype; `auto` = bfloat16 on CUDA, float32 on CPU.
        offload (`str`, defaults to `"none"`): Keep weights in host memory and move them to the GPU when used:
            `model` one whole component at a time (diffusers `enable_model_cpu_offload`), `group` one block at a time
            (`enable_group_offload` at block level, prefetched on a CUDA stream), `leaf` one layer at a time (leaf
            level: the least GPU memory, the slowest). `none` puts the whole pipeline on the device. See `hetcache
            memory` for what fits where.
        cache (`dict`): HetCache settings (`method`, `preset`, `schedule`, thresholds, ...).
    """

    video: str
    prompt: str
    mask: str | None = None
    box: list[str] | str | None = None
    negative_prompt: str = ""
    output: str | None = None
    stats: str | None = None
    model: str | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    max_area: int = 480 * 832
    crop: str = "auto"
    crop_context: float = 2.0
    crop_min_size: int = 384
    mask_fill: str = "source"
    audio: bool = True
    window_frames: int = 81
    window_overlap: int = 16
    window_color_match: bool = False
    steps: int = 30
    guidance_scale: float = 5.0
    guidance_scale_2: float | None = None
    seed: int = 0
    mask_threshold: float = 0.5
    mask_invert: bool = False
    mask_dilation: int = 0
    paste_back: bool = True
    paste_dilation: int = 4
    paste_feather: int = 4
    vae_decode: str = "region"
    vae_tiling: bool = False
    crf: int = 18
    device: str = "auto"
    dtype: str = "auto"
    offload: str = "none"
    cache: dict[str, Any] = field(default_factory=dict)

    def cache_config(self) -> HetCacheConfig:
        """The cache settings; a preset is the one calibrated for this model when it has one."""
        from hetcache_cli.spec.model_defaults import resolve_cache_config

        values = dict(self.cache)
        preset = values.pop("preset", None)
        return resolve_cache_config(values, preset, self.model)


# What a model folder's hetcache_defaults.json may recommend (ranked between the spec and the defaults).
MODEL_DEFAULT_KEYS = ("steps", "guidance_scale", "guidance_scale_2", "negative_prompt", "window_frames", "window_overlap")
REQUIRED = ("video", "prompt")
MASK_KEYS = ("mask", "box")  # exactly one of them
PATH_FIELDS = ("video", "mask", "output", "stats")


def _accepted_types(hint) -> tuple[type, ...]:
    """`float | None` -> (float, int): the YAML types a field accepts (None is handled apart)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    out: list[type] = []
    for arg in args:
        if arg is type(None):
            continue
        base = typing.get_origin(arg) or arg
        out.append(base)
        if base is float:
            out.append(int)
    return tuple(out)


FIELD_TYPES = {name: _accepted_types(h) for name, h in typing.get_type_hints(EditSpec).items()}
CACHE_FIELD_TYPES = {name: _accepted_types(h) for name, h in typing.get_type_hints(HetCacheConfig).items()}


def spec_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(EditSpec)]


def cache_keys() -> list[str]:
    return sorted(set(config_fields()) | {"preset"})


def edit_defaults() -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(EditSpec):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
    return out
