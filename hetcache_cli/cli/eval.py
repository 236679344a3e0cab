"""`hetcache eval`: quality of a video against a reference, inside / around / outside the mask."""

from __future__ import annotations

import logging
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
"""

Reference = Annotated[
    str,
    typer.Option("--reference", "-r", help="Video to compare against (e.g. the uncached edit).", show_default=False),
]
MarginPx = Annotated[
    Optional[int],
    typer.Option("--margin-px", help="Width of the band around the mask reported as 'margin' [default: 16]."),
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
    json_out: opt.Json = False,
) -> None:
    """Compare a video with a reference: PSNR, SSIM, temporal warp error (LPIPS when installed), per mask region."""
    setup_logging()
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

    if json_out:
        inputs = {
            "prediction": str(prediction),
            "reference": str(reference),
            "mask": None if mask is None else str(mask),
            "frames_prediction": pred.num_frames,
            "frames_reference": ref.num_frames,
        }
        print_json({**inputs, **result})
    else:
        stdout.print(results_table(result))
