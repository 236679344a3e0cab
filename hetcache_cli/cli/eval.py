"""`hetcache eval`: quality of a video against a reference, inside / around / outside the mask."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from hetcache_cli.cli import options as opt
from hetcache_cli.cli.common import handle_errors, print_json, setup_logging, stdout
from hetcache_cli.errors import InputError

logger = logging.getLogger(__name__)

EPILOG = """
Examples:

  hetcache eval out_hetcache.mp4 --reference out_uncached.mp4 --mask assets/demo/mask.png

  hetcache eval edited.mp4 -r assets/demo/input.mp4 -m mask.png --margin-px 8 --json

  hetcache eval a.mp4 -r b.mp4

  hetcache eval long_edited.mp4 -r long.mp4 -m track.mp4 --stats long_edited.stats.json

  hetcache eval out_hetcache.mp4 -r out_uncached.mp4 -m mask.png --side-by-side cmp.mp4 --plot cache.png

For a video edited in windows (its statistics beside it, or --stats), the report adds the
temporal error at the window joins next to the median inside windows, and the colour drift
of the masked region from the first window to the last (the reference's beside it).

--side-by-side writes the reference, the prediction and their difference as a heat map (black where
they agree) in three panels, the mask outlined on each, at the reference's frame rate. --plot draws
the edit's statistics: the steps computed fully / partially / reused per window and branch, the
tokens computed per class, the FLOPs per step against the uncached run and the time per window.
"""

Reference = Annotated[
    str,
    typer.Option("--reference", "-r", help="Video to compare against (e.g. the uncached edit).", show_default=False),
]
StatsFile = Annotated[
    Optional[str],
    typer.Option(
        "--stats",
        help="The edit's statistics JSON, for its window joins and --plot [default: <prediction stem>.stats.json if present].",
    ),
]
MarginPx = Annotated[
    Optional[int],
    typer.Option("--margin-px", help="Width of the band around the mask reported as 'margin' [default: 16]."),
]

SideBySide = Annotated[
    Optional[str],
    typer.Option(
        "--side-by-side", help="Also write reference | prediction | difference heat map as this MP4.", show_default=False
    ),
]
Plot = Annotated[
    Optional[str],
    typer.Option(
        "--plot", help="Also draw what the cache did, from the statistics, into this PNG (needs matplotlib).",
        show_default=False,
    ),
]


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_psnr(value: float | None) -> str:
    from hetcache_cli.eval.metrics import PSNR_CAP_DB

    if value is not None and value >= PSNR_CAP_DB:
        return f">={PSNR_CAP_DB:g}"
    return _fmt(value, 2)


def results_table(result: dict):
    """Region rows x metric columns."""
    from rich.table import Table

    size = result["size"]
    title = f"{result['frames']} frames {size['width']}x{size['height']}"
    if result["margin_px"] is not None:
        title += f", margin {result['margin_px']} px"
    table = Table(title=title, title_justify="left")
    columns = ["region", "pixels", "PSNR dB", "SSIM"]
    lpips, temporal = result["lpips"], result["temporal"]
    if lpips is not None:
        columns.append("LPIPS")
    if temporal is not None:
        columns += ["warp err", "ref warp err", "delta"]
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right")
    total = result["pixels"]["all"]
    for region, count in result["pixels"].items():
        row = [region, f"{count / total:.1%}", _fmt_psnr(result["psnr"][region]), _fmt(result["ssim"][region], 4)]
        if lpips is not None:
            row.append(_fmt(lpips[region], 4))
        if temporal is not None:
            row += [_fmt(temporal[k][region], 2) for k in ("pred", "ref", "delta")]
        table.add_row(*row)
    return table


@handle_errors
def eval_cmd(
    prediction: Annotated[str, typer.Argument(help="Video to judge (e.g. the cached edit).", show_default=False)],
    reference: Reference,
    mask: opt.Mask = None,
    mask_threshold: opt.MaskThreshold = None,
    mask_invert: opt.MaskInvert = None,
    margin_px: MarginPx = None,
    stats: StatsFile = None,
    side_by_side: SideBySide = None,
    plot: Plot = None,
    json_out: opt.Json = False,
) -> None:
    """Compare a video with a reference: PSNR, SSIM, temporal warp error (LPIPS when installed), per mask region."""
    setup_logging()
    from hetcache_cli.report.paths import VIDEO_SUFFIXES, check_output_file, check_plot_possible

    inputs = (prediction, reference, mask, stats)
    if side_by_side is not None:
        check_output_file(side_by_side, VIDEO_SUFFIXES, "--side-by-side", inputs)
    if plot is not None:
        check_plot_possible(plot, "--plot", inputs + (side_by_side,))
        stats_doc = load_stats(prediction, stats, required=True)[1]
    from hetcache_cli.eval.metrics import compare_videos
    from hetcache_cli.io.mask import load_mask
    from hetcache_cli.io.video import read_video

    pred, ref = read_video(prediction), read_video(reference)
    if (pred.height, pred.width) != (ref.height, ref.width):
        raise InputError(
            f"{prediction} is {pred.width}x{pred.height} but the reference {reference} is {ref.width}x{ref.height}; "
            f"compare videos of the same size (e.g. resize with ffmpeg -vf scale={ref.width}:{ref.height})"
        )
    frames = min(pred.num_frames, ref.num_frames)
    if pred.num_frames != ref.num_frames:
        logger.warning(
            "%s has %d frames and the reference %s has %d: comparing the first %d",
            prediction, pred.num_frames, reference, ref.num_frames, frames,
        )  # fmt: skip

    edit_mask = None
    if mask is not None:
        given = {"threshold": mask_threshold, "invert": mask_invert}
        given = {k: v for k, v in given.items() if v is not None}
        edit_mask = load_mask(mask, frames, (ref.height, ref.width), **given)
    margin = {} if margin_px is None else {"margin_px": margin_px}
    result = compare_videos(pred.frames[:frames], ref.frames[:frames], edit_mask, **margin)
    for metric, reason in result["skipped"].items():
        logger.info("%s skipped: %s", metric, reason)
    windows = edit_windows(prediction, stats, frames)
    if windows is not None and len(windows) > 1:
        import numpy as np

        from hetcache_cli.eval.seams import seam_report

        region = edit_mask if edit_mask is not None else np.ones((frames, ref.height, ref.width), bool)
        result["seams"] = seam_report(pred.frames[:frames], region, windows, ref.frames[:frames])

    written = {}
    if side_by_side is not None:
        from hetcache_cli.report.side_by_side import write_side_by_side

        names = (f"reference {Path(reference).name}", f"prediction {Path(prediction).name}")
        written["side_by_side"] = write_side_by_side(
            side_by_side, pred.frames[:frames], ref.frames[:frames], edit_mask, ref.rate, names
        )["path"]
    if plot is not None:
        from hetcache_cli.report.cache_plot import write_cache_plot

        written["plot"] = str(write_cache_plot(plot, stats_doc))

    if json_out:
        inputs = {
            "prediction": str(prediction),
            "reference": str(reference),
            "mask": None if mask is None else str(mask),
            "frames_prediction": pred.num_frames,
            "frames_reference": ref.num_frames,
        }
        print_json({**inputs, **result, **written})
    else:
        stdout.print(results_table(result))
        if "seams" in result:
            stdout.print(seams_text(result["seams"], len(windows), edit_mask is not None), highlight=False)
        for path in written.values():
            stdout.print(f"wrote {path}", highlight=False)


def load_stats(prediction: str, stats: str | None, required: bool = False) -> tuple[Path, dict] | None:
    """The edit's statistics (--stats, else beside the prediction); None when absent and not required."""
    import json

    path = Path(stats) if stats is not None else Path(prediction).with_name(f"{Path(prediction).stem}.stats.json")
    if not path.is_file():
        if stats is not None:
            raise InputError(f"statistics {path} do not exist; check the --stats path")
        if required:
            raise InputError(f"--plot draws the edit's statistics, and {path} does not exist; pass them with --stats")
        return None
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("steps", []), list):
            raise ValueError("no step records")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not an edit's statistics JSON ({exc}); pass the .stats.json hetcache wrote") from None
    if required and not doc.get("steps"):
        raise InputError(f"{path} holds no step records; pass the .stats.json hetcache edit wrote")
    return path, doc


def edit_windows(prediction: str, stats: str | None, frames: int) -> list[dict] | None:
    """The windows an edit's statistics list (None without statistics); bad or mismatched files are errors."""
    found = load_stats(prediction, stats)
    if found is None:
        return None
    path, windows = found[0], found[1].get("windows")
    if windows is None or "preview" in found[1]:  # a preview's window is not framed like its video: no joins
        return None
    if not windows or windows[-1].get("stop") != frames:
        raise InputError(
            f"{path} lists windows up to frame {windows[-1].get('stop') if windows else 0} but the videos have "
            f"{frames} frames; pass the statistics of this edit with --stats"
        )
    return windows


def seams_text(seams: dict, count: int, masked: bool) -> str:
    where = "inside the mask" if masked else "over the frame"
    worst = max((j for j in seams["joins"] if j["ratio"] is not None), key=lambda j: j["ratio"], default=None)
    drift = seams["drift"]
    lines = [f"{count} windows; temporal (warp) error {where}:"]
    if worst is None:
        lines.append("  joins: no pixels to measure")
    else:
        lines.append(
            f"  worst join: window {worst['window']}, frames {worst['frames'][0]}-{worst['frames'][1]}, worst pair "
            f"{worst['error']:.2f} vs {worst['within']:.2f} (median of such runs inside windows): {worst['ratio']:.2f}x; "
            f"single pairs inside windows: median {seams['within_median']:.2f}"
        )
    if drift["pred"] is not None:
        lines.append(
            f"  colour drift {where}, first to last window: {drift['pred']:.1f}"
            + (f" (reference {drift['ref']:.1f})" if drift.get("ref") is not None else "")
        )
    return "\n".join(lines)
