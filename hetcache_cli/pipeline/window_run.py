"""One window of an edit through the pipeline, and the pieces that turn windows back into one clip.

`run_window` cuts the window's crop from its full-resolution source frames `src` (its known frames from
the output so far, mask 0) at the model's working size, runs the pipeline, scales the result back to the
crop's source size, colour-matches, pastes it into the source inside the dilated, feathered mask and
cross-fades it with the previous window; what differs from the source is kept as a `Patch`.
`final_frames` gives the frames a window finishes, one full-size frame at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from hetcache_cli.io.crop import Crop, crop_mask, resize_frames, uncrop
from hetcache_cli.io.paste import paste_back
from hetcache_cli.io.stitch import Patch, box_union, changed_patch, output_region, patched_frame
from hetcache_cli.io.workdir import WorkDir
from hetcache_cli.pipeline.stages import PromptEmbeds, StageClock
from hetcache_cli.pipeline.vae import DecodeBox, decode_box
from hetcache_cli.pipeline.windows import (
    Window, crossfade, crossfade_weights, match_color, pad_frames, window_mask,
)  # fmt: skip

__all__ = [
    "WindowPasses", "at_origin", "decode_plan", "final_frames", "load_patch", "model_inputs", "run_window", "summarise_windows",
]  # fmt: skip

@dataclass(frozen=True)
class WindowPasses:
    """What every window of an edit shares: the prompt's embeddings (encoded once), the stage clock,
    and whether the VAE decodes only the region paste-back uses (False: the whole crop, as for a
    benchmark that compares the model's raw output)."""

    prompts: PromptEmbeds
    clock: StageClock
    region_decode: bool = True


GRAY = 0.5  # VACE's fill for pixels to generate: 127.5 / 255, 0 after the pipeline's [-1, 1] normalisation


def _box(crop: Crop) -> tuple[int, int, int, int]:
    return crop.x0, crop.y0, crop.x1, crop.y1


def model_inputs(prep, window: Window, crop: Crop, previous: tuple[Window, Patch] | None, src: np.ndarray):
    """What the model gets for a window: (video float32 [n, h, w, 3] in [0, 1], mask bool [n, h, w]).

    Both are the window's crop at the working size; the known frames carry the output so far (the
    previous window's patch over the source) with mask 0; padding repeats the last frame. With
    `mask_fill: gray` the masked pixels are mid grey. `src` holds the window's source frames [frames, H, W, 3].
    """
    if window.shared and previous is None:
        raise ValueError(f"window {window.index} shares frames but has no previous window")
    box = _box(crop)
    frames = np.array(src[:, crop.y0 : crop.y1, crop.x0 : crop.x1])
    if window.known:
        frames[: window.known] = output_region(src, previous[1], window.start, window.start + window.known, box,
                                               window.start)  # fmt: skip
    video = resize_frames(frames, (crop.height, crop.width))  # the box, at the working size
    del frames
    mask = window_mask(crop_mask(prep.mask.region(window.start, window.stop, box), at_origin(crop)), window)
    video = pad_frames(video, window.pad).astype(np.float32) / np.float32(255.0)
    if prep.spec.mask_fill == "gray":
        video[mask] = GRAY
    return video, mask


def at_origin(crop: Crop) -> Crop:
    """The crop of an array that holds only the crop's box."""
    return Crop(0, 0, crop.src_width, crop.src_height, crop.width, crop.height)


def run_window(prep, pipe, stats, window: Window, previous, progress, total_steps: int, src: np.ndarray,
               passes: WindowPasses, parallel=None):  # fmt: skip
    """One window through the pipeline: (output Patch, raw Patch, {"window", "steps"} records).

    The output patch holds every pixel of the window's frames that differs from the source; the raw
    one the model's output scaled back into the crop (before colour match and paste-back; with a
    region decode, the model's input outside the decoded box). `stats` is the StepStats attached with
    the cache; the hook resets it at the start of each call. `passes` gives the prompt's embeddings,
    the stage clock and whether to decode only the pasted region. With `parallel` (rank 0's
    `parallel_edit.Driver`) the call runs on every rank of the layout.
    """
    import torch

    from hetcache_cli.pipeline.model import guidance_kwargs
    from hetcache_cli.pipeline.vae import decode_latents

    spec = prep.spec
    crop: Crop = prep.crops[window.index]
    clock = passes.clock
    prompt_kwargs = passes.prompts.kwargs()
    with clock.stage("composite"):
        video, mask = model_inputs(prep, window, crop, previous, src)
    mask_rgb = np.repeat(mask[..., None].astype(np.float32), 3, axis=-1)  # [n, h, w, 3], 1 = generate
    base = window.index * spec.steps

    def on_step(_pipe, i, _t, kwargs):
        if progress is not None:
            progress(base + i + 1, total_steps)
        return kwargs

    seed = spec.seed + window.index
    encoded = clock.seconds.get("vae_encode", 0.0)
    begin = time.perf_counter()
    call = pipe if parallel is None else (lambda **kwargs: parallel.call(pipe, stats, **kwargs))
    latents = call(
        **prompt_kwargs,
        video=video[None],  # [1, F, H, W, 3] in [0, 1]: the pipeline reads the size from video[0]
        mask=mask_rgb[None],
        height=crop.height,
        width=crop.width,
        num_frames=window.model_frames,
        num_inference_steps=spec.steps,
        guidance_scale=spec.guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        callback_on_step_end=on_step,
        **guidance_kwargs(pipe, spec.guidance_scale_2, spec.model),
    ).frames
    clock.sync()
    denoise_s = time.perf_counter() - begin
    clock.add("denoise", denoise_s - (clock.seconds.get("vae_encode", 0.0) - encoded))

    box = _box(crop)
    region = prep.mask.region(window.start, window.stop, box)
    with clock.stage("vae_decode"):
        scale = pipe.vae_scale_factor_spatial
        dbox = decode_plan(prep, window, crop, scale) if passes.region_decode else None
        if dbox is None or dbox.whole:
            dbox = decode_box(None, tuple(latents.shape[-2:]), scale)
        decoded = decode_latents(pipe, latents, dbox, video)
    wall_s = time.perf_counter() - begin
    with clock.stage("composite"):
        raw = (np.clip(decoded[: window.frames], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # [n, h, w, 3]
        del latents, decoded, video
        raw = uncrop(raw, crop)  # [n, crop rows, crop cols, 3] at the source resolution
        raw_patch = Patch(window.start, box, raw)
        result, color = _composite(prep, window, crop, previous, src, raw, region)
    steps = [{**record, "window": window.index} for record in stats.to_list()]
    record = {
        **window.to_dict(), "seed": seed, **stats.run_summary().to_dict(), "wall_s": wall_s,
        "color_match": color, "crop": crop.to_dict(), "patch": result.to_dict(), "decode": dbox.to_dict(),
        "stages": clock.take(),
    }  # fmt: skip
    return result, raw_patch, {"window": record, "steps": steps}


def decode_plan(prep, window: Window, crop: Crop, scale: int = 8) -> DecodeBox:
    """The latent box a window's VAE decode covers: with paste-back and `vae_decode: region`, the box of
    what paste-back takes from the model (the window's mask box grown by the paste dilation and feather,
    at the working size, one pixel wider for the resize) with the decoder's margin; else the whole crop."""
    spec = prep.spec
    latent_hw = (crop.height // scale, crop.width // scale)
    mask_box = prep.mask.box(window.start, window.stop)
    if spec.vae_decode != "region" or not spec.paste_back or mask_box is None:
        return decode_box(None, latent_hw, scale)
    reach = spec.paste_dilation + spec.paste_feather
    x0, y0 = max(mask_box[0] - reach, crop.x0) - crop.x0, max(mask_box[1] - reach, crop.y0) - crop.y0
    x1, y1 = min(mask_box[2] + reach, crop.x1) - crop.x0, min(mask_box[3] + reach, crop.y1) - crop.y0
    if x1 <= x0 or y1 <= y0:
        return decode_box(None, latent_hw, scale)
    sx, sy = crop.width / crop.src_width, crop.height / crop.src_height
    px = (int(x0 * sx) - 1, int(y0 * sy) - 1, int(np.ceil(x1 * sx)) + 1, int(np.ceil(y1 * sy)) + 1)
    return decode_box(px, latent_hw, scale)


def _composite(prep, window: Window, crop: Crop, previous, src: np.ndarray, raw: np.ndarray, region: np.ndarray):
    """The window's output patch: colour match, paste-back into the source, cross-fade with the previous
    window. Returns (Patch, colour correction or None)."""
    spec = prep.spec
    box = _box(crop)
    source = src[:, crop.y0 : crop.y1, crop.x0 : crop.x1]
    patch = previous[1] if previous is not None else None
    color = None
    if window.shared and spec.window_color_match:
        shared = output_region(src, patch, window.start, window.start + window.shared, box, window.start)
        raw, color = match_color(raw, shared, region, window.shared)
    final = paste_back(raw, source, region, spec.paste_dilation, spec.paste_feather) if spec.paste_back else raw

    # the window's output over its crop and the previous window's patch (where the cross-fade reaches)
    union = box_union(box, patch.box) if window.shared and patch.box[2] > patch.box[0] else box
    ux0, uy0 = union[0], union[1]
    out_frames = np.array(src[:, union[1] : union[3], union[0] : union[2]])
    out_frames[:, crop.y0 - uy0 : crop.y1 - uy0, crop.x0 - ux0 : crop.x1 - ux0] = final
    if window.shared:
        earlier = output_region(src, patch, window.start, window.start + window.shared, union, window.start)
        out_frames[: window.shared] = crossfade(earlier, out_frames[: window.shared], crossfade_weights(window))
    source_union = src[:, union[1] : union[3], union[0] : union[2]]
    return changed_patch(window.start, union, out_frames, source_union), color


def load_patch(store: WorkDir, index: int) -> tuple[Patch, dict]:
    """A stored window's output patch and its record."""
    frames, doc = store.load(index)
    info = doc["window"]["patch"]
    return Patch(int(info["start"]), tuple(int(v) for v in info["box"]), frames), doc


def summarise_windows(window_docs: list[dict]) -> dict:
    """The whole edit's summary over its windows (each window's own is in the statistics' `windows`)."""
    from hetcache_cli.cache.summary import RunSummary

    summary = RunSummary.combine(RunSummary.from_dict(w) for w in window_docs).to_dict(edit=True)
    scales = [w["crop"]["scale"] for w in window_docs]
    summary["scale"] = {"min": min(scales), "max": max(scales)}
    return summary


def final_frames(src: np.ndarray, window: Window, patch: Patch, count: int):
    """The window's first `count` output frames at the source resolution, one at a time (no later window
    touches them): a copy of the source frame with the window's patch written in."""
    for k in range(count):
        yield patched_frame(src[k], patch, window.start + k)
