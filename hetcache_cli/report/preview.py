"""`hetcache edit --preview`: one window of the edit, with the run's real settings, to look at before the long run.

The window is the one holding the requested frame, or the one whose mask covers the most pixels. It
runs through the same pipeline call as a full edit (`run_edit(only_windows=...)`), from the source
alone: a later window of a full edit would also get the previous window's output as known frames.
What is written beside the output (never the output itself):

- `<stem>.preview.png`: a contact sheet, rows source / source with the mask outlined / edit, a few frames;
- `<stem>.preview.mp4`: the window's edited frames at the source's rate;
- `<stem>.preview.stats.json`: the statistics of that one window (for `--plot` and `hetcache eval`).

The time of the whole edit is estimated as the window's time scaled by each window's token count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hetcache_cli.errors import InputError

__all__ = ["PreviewPaths", "check_preview", "contact_sheet", "estimate_s", "pick_window", "run_preview",
           "window_tokens", "write_preview"]  # fmt: skip

SHEET_FRAMES = 4
SHEET_MAX_WIDTH_PX = 1280


@dataclass(frozen=True)
class PreviewPaths:
    sheet: Path
    video: Path
    stats: Path
    plot: Path | None = None


def check_preview(output: Path, frame: int | None, plot: bool) -> PreviewPaths:
    """Where a preview of an edit writing `output` goes; a missing folder or a negative frame is an input error."""
    if frame is not None and frame < 0:
        raise InputError(f"--preview-frame {frame} is negative; give a frame number from 0")
    folder = output.parent
    if not folder.is_dir():
        raise InputError(
            f"output folder {folder} does not exist; create it (mkdir -p {folder}) or choose another -o/--output"
        )
    def beside(suffix: str) -> Path:
        return output.with_name(f"{output.stem}.preview{suffix}")

    return PreviewPaths(beside(".png"), beside(".mp4"), beside(".stats.json"), beside(".cache.png") if plot else None)


def pick_window(windows: list, counts, frame: int | None):
    """The window holding clip frame `frame` (the one that owns it in the output: the later of two that share
    it), or without a frame the window whose mask covers the most pixels (the first of equals)."""
    total = windows[-1].stop
    if frame is None:
        covered = [int(sum(counts[w.start : w.stop])) for w in windows]  # counts: masked pixels per frame
        return windows[covered.index(max(covered))]
    if frame >= total:
        raise InputError(
            f"--preview-frame {frame} is beyond the clip: the edit has {total} frames (0-{total - 1}); pick one of them"
        )
    return [w for w in windows if w.start <= frame][-1]


def window_tokens(window, crop, spatial: int, temporal: int) -> int:
    """Tokens the transformer sees for one window: latent frames x latent rows x latent columns."""
    return ((window.model_frames - 1) // temporal + 1) * (crop.height // spatial) * (crop.width // spatial)


def estimate_s(window_s: float, previewed: int, tokens: list[int]) -> float:
    """The whole edit's time: each window takes the previewed window's time scaled by its share of tokens."""
    return window_s * sum(tokens) / tokens[previewed]


def contact_sheet(source, mask, edit, first_frame: int = 0, count: int = SHEET_FRAMES):
    """uint8 [rows, cols, 3]: `count` frames spread over the window in three captioned rows.

    Args:
        source, edit: uint8 [n, H, W, 3], the window's source and edited frames.
        mask: bool [n, H, W].
        first_frame: the clip frame number of source[0] (for the captions).
    """
    import numpy as np

    from hetcache_cli.report.draw import caption, draw_outline, fit_size, resize

    n, height, width = source.shape[:3]
    picks = sorted(set(np.linspace(0, n - 1, min(count, n)).round().astype(int).tolist()))
    h, w = fit_size(height, width, SHEET_MAX_WIDTH_PX // len(picks))
    thickness = max(1, w // 320)
    numbers = ", ".join(str(first_frame + t) for t in picks)
    rows = []
    for label, pictures in (
        (f"source, frames {numbers}", [resize(source[t], (h, w)) for t in picks]),
        ("source, mask outlined", [draw_outline(resize(source[t], (h, w)), resize(mask[t], (h, w)), thickness)
                                   for t in picks]),
        ("edit", [resize(edit[t], (h, w)) for t in picks]),
    ):  # fmt: skip
        strip = np.concatenate(pictures, axis=1)
        rows += [caption(label, strip.shape[1]), strip]
    return np.concatenate(rows, axis=0)


def write_preview(paths: PreviewPaths, prep, result, window, summary: dict) -> None:
    """The contact sheet, the window's video and its statistics (each written atomically)."""
    import cv2

    from hetcache_cli.io.atomic import atomic_write_bytes, atomic_write_text
    from hetcache_cli.io.video import write_video

    whole = (0, 0, prep.mask.width, prep.mask.height)
    sheet = contact_sheet(result.source, prep.mask.region(window.start, window.stop, whole), result.frames, window.start)
    ok, png = cv2.imencode(".png", sheet[..., ::-1])
    if not ok:
        raise RuntimeError("OpenCV could not encode the contact sheet as PNG")
    atomic_write_bytes(paths.sheet, png.tobytes())
    encode = {"lossless": True} if prep.spec.crf == 0 else {"crf": prep.spec.crf}
    write_video(paths.video, result.frames, prep.rate or prep.fps, **encode)
    doc = dict(result.stats)
    doc["paths"] = {**doc["paths"], "output": str(paths.video), "stats": str(paths.stats)}
    doc["preview"] = summary
    atomic_write_text(paths.stats, json.dumps(doc, indent=2) + "\n")
    if paths.plot is not None:
        from hetcache_cli.report.cache_plot import write_cache_plot

        write_cache_plot(paths.plot, doc)


def run_preview(prep, pipe, model_info: dict, window, paths: PreviewPaths, progress=None) -> dict:
    """Edit `window` of a prepared edit, write the preview files; returns what to tell the user.

    `progress(done, total)` counts the window's steps.
    """
    from hetcache_cli.pipeline.edit import run_edit

    steps = prep.spec.steps
    offset = window.index * steps  # the pipeline counts steps over the whole edit

    def on_step(done: int, _total: int) -> None:
        if progress is not None:
            progress(min(max(done - offset, 0), steps), steps)

    result = run_edit(prep, pipe, model_info, progress=on_step, only_windows={window.index})
    record = result.stats["windows"][0]
    spatial = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]
    temporal = pipe.vae_scale_factor_temporal * pipe.transformer.config.patch_size[0]
    tokens = [window_tokens(w, c, spatial, temporal) for w, c in zip(prep.windows, prep.crops)]
    summary = {
        "window": window.index,
        "windows": len(prep.windows),
        "frames": [window.start, window.stop],
        "window_s": record["wall_s"],
        "estimate_s": estimate_s(record["wall_s"], window.index, tokens),
        "tokens": tokens,
        "flops_ratio": result.stats["summary"]["flops_ratio"],
        "schedule": result.stats["summary"]["schedule"],
        "sheet": str(paths.sheet),
        "video": str(paths.video),
        "stats": str(paths.stats),
        "plot": None if paths.plot is None else str(paths.plot),
    }
    write_preview(paths, prep, result, window, summary)
    return summary
