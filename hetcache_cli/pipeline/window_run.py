"""One window of an edit through the pipeline, and the pieces that turn windows back into one clip.

`run_window` cuts the window's crop from its full-resolution source frames `src` (its known frames from
the output so far, mask 0) at the model's working size, runs the pipeline, scales the result back to the
crop's source size, colour-matches, pastes it into the source inside the dilated, feathered mask and
cross-fades it with the previous window; what differs from the source is kept as a `Patch`.
`final_frames` gives the frames a window finishes, one full-size frame at a time.
"""

from __future__ import annotations

import time

import numpy as np

from hetcache_cli.io.crop import Crop, crop_mask, resize_frames, uncrop
from hetcache_cli.io.paste import paste_back
from hetcache_cli.io.stitch import Patch, box_union, changed_patch, output_region, patched_frame
from hetcache_cli.io.workdir import WorkDir
from hetcache_cli.pipeline.windows import (
    Window, crossfade, crossfade_weights, match_color, pad_frames, window_mask,
)  # fmt: skip

__all__ = ["at_origin", "final_frames", "load_patch", "model_inputs", "run_window", "summarise_windows"]

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


def run_window(prep, pipe, stats, window: Window, previous, progress, total_steps: int, src: np.ndarray):
    """One window through the pipeline: (output Patch, raw Patch, {"window", "steps"} records).

    The output patch holds every pixel of the window's frames that differs from the source; the raw
    one the model's output scaled back into the crop (before colour match and paste-back). `stats`
    is the StepStats attached with the cache; the hook resets it at the start of each call.
    """
    import torch

    from hetcache_cli.pipeline.model import execution_device, guidance_kwargs

    spec = prep.spec
    crop: Crop = prep.crops[window.index]
    device = execution_device(pipe)
    video, mask = model_inputs(prep, window, crop, previous, src)
    mask_rgb = np.repeat(mask[..., None].astype(np.float32), 3, axis=-1)  # [n, h, w, 3], 1 = generate
    base = window.index * spec.steps

    def on_step(_pipe, i, _t, kwargs):
        if progress is not None:
            progress(base + i + 1, total_steps)
        return kwargs

    seed = spec.seed + window.index
    begin = time.perf_counter()
    out = pipe(
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        video=video[None],  # [1, F, H, W, 3] in [0, 1]: the pipeline reads the size from video[0]
        mask=mask_rgb[None],
        height=crop.height,
        width=crop.width,
        num_frames=window.model_frames,
        num_inference_steps=spec.steps,
        guidance_scale=spec.guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        callback_on_step_end=on_step,
        **guidance_kwargs(pipe, spec.guidance_scale_2, spec.model),
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall_s = time.perf_counter() - begin
    raw = (np.clip(out.frames[0][: window.frames], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # [n, h, w, 3]
    del out, video

    box = _box(crop)
    raw = uncrop(raw, crop)  # [n, crop rows, crop cols, 3] at the source resolution
    raw_patch = Patch(window.start, box, raw)
    source = src[:, crop.y0 : crop.y1, crop.x0 : crop.x1]
    region = prep.mask.region(window.start, window.stop, box)
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
    result = changed_patch(window.start, union, out_frames, source_union)
    del out_frames, final, raw

    steps = [{**record, "window": window.index} for record in stats.to_list()]
    record = {
        **window.to_dict(), "seed": seed, **stats.run_summary().to_dict(), "wall_s": wall_s,
        "color_match": color, "crop": crop.to_dict(), "patch": result.to_dict(),
    }  # fmt: skip
    return result, raw_patch, {"window": record, "steps": steps}


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
