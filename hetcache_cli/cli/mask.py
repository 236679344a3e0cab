"""`hetcache mask`: an edit mask from box keyframes, or from clicks and boxes tracked by SAM 2."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hetcache_cli.cli import options as opt
from hetcache_cli.cli.common import StepProgress, handle_errors, print_json, setup_logging, stdout
from hetcache_cli.errors import InputError
from hetcache_cli.mask.job import DEFAULT_CHUNK_FRAMES, DEFAULT_TRACKER, MaskJob

EPILOG = f"""
Examples:

  hetcache mask assets/demo/input.mp4 --box 38,52,118,107 -o mask.mp4 --preview check.mp4

  hetcache mask clip.mp4 --box 100,80,260,240@0 --box 300,90,460,250@48 --dilate 8

  hetcache mask clip.mp4 --point 412,230 --point 430,300@40 --negative 500,260 -o mask_frames

  hetcache mask clip.mp4 --box 380,180,520,360@12 --track --as-box --dilate 16

  hetcache edit clip.mp4 --mask mask.mp4 --prompt "a red vintage car"

Coordinates are pixels of the video (x right, y down from the top-left corner); @FRAME is a
0-based frame index (default 0). Boxes alone are keyframes of one moving box, interpolated
linearly and held before the first and after the last. Clicks, and boxes with --track, are
prompts for one object that SAM 2 tracks through the clip, forwards and backwards. SAM 2
weights are read from a local folder or the local Hugging Face cache, never downloaded; fetch
them once with `hf download {DEFAULT_TRACKER}`. Post-processing runs in the order --dilate,
--hull, --as-box, --invert.
"""

Video = Annotated[str, typer.Argument(help="The clip (any format ffmpeg reads).", show_default=False)]
Output = Annotated[
    Optional[str],
    typer.Option(
        "--output", "-o", metavar="MASK",
        help="A mask video (.mp4/.mkv/.mov, lossless) or a folder name for one PNG per frame "
        "[default: <video>_mask.mp4].",
    ),
]  # fmt: skip
Boxes = Annotated[
    Optional[list[str]],
    typer.Option(
        "--box", metavar="X0,Y0,X1,Y1[@FRAME]",
        help="A box in video pixels, on frame FRAME (default 0); repeat for keyframes of a moving box.",
    ),
]  # fmt: skip
Points = Annotated[
    Optional[list[str]],
    typer.Option("--point", metavar="X,Y[@FRAME]", help="A click on the object, tracked by SAM 2 (repeatable)."),
]
Negatives = Annotated[
    Optional[list[str]],
    typer.Option(
        "--negative", metavar="X,Y[@FRAME]", help="A click off the object, refining a --point or --box on that frame."
    ),
]
Track = Annotated[bool, typer.Option("--track", help="Track the --box prompts with SAM 2 instead of interpolating them.")]
Tracker = Annotated[
    Optional[str],
    typer.Option(
        "--tracker", metavar="MODEL",
        help=f"SAM 2 weights: a folder or a hub id in the local cache [default: {DEFAULT_TRACKER}].",
    ),
]  # fmt: skip
ChunkFrames = Annotated[
    Optional[int],
    typer.Option("--chunk-frames", help=f"Frames prepared for SAM 2 at a time [default: {DEFAULT_CHUNK_FRAMES}]."),
]
Dilate = Annotated[Optional[int], typer.Option("--dilate", metavar="PX", help="Grow the mask by PX pixels [default: 0].")]
Hull = Annotated[bool, typer.Option("--hull", help="Each frame's mask becomes its convex hull.")]
AsBox = Annotated[bool, typer.Option("--as-box", help="Each frame's mask becomes its bounding box.")]
Invert = Annotated[bool, typer.Option("--invert", help="Swap edit and keep.")]
Preview = Annotated[
    Optional[str],
    typer.Option("--preview", metavar="PREVIEW.mp4", help="Also write the clip with the mask tinted over it (MP4)."),
]


@handle_errors
def mask(
    video: Video,
    output: Output = None,
    box: Boxes = None,
    point: Points = None,
    negative: Negatives = None,
    track: Track = False,
    tracker: Tracker = None,
    chunk_frames: ChunkFrames = None,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    dilate: Dilate = None,
    hull: Hull = False,
    as_box: AsBox = False,
    invert: Invert = False,
    preview: Preview = None,
    overwrite: opt.Overwrite = False,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
) -> None:
    """Make an edit mask from a box or a few clicks, tracked through the clip."""
    setup_logging(quiet or json_out)
    values = dict(
        video=video, output=output, boxes=box or [], points=point or [], negatives=negative or [], track=track,
        tracker=tracker, chunk_frames=chunk_frames, device=device, dtype=dtype, dilate_px=dilate, hull=hull,
        as_box=as_box, invert=invert, preview=preview, overwrite=overwrite,
    )  # fmt: skip
    job = MaskJob(**{k: v for k, v in values.items() if v is not None})
    if not job.uses_tracker:
        flags = {"--tracker": tracker, "--chunk-frames": chunk_frames, "--device": device, "--dtype": dtype}
        unused = [name for name, value in flags.items() if value is not None]
        if unused:
            raise InputError(f"{unused[0]} is used only when SAM 2 tracks: add --point, or --track for the boxes")

    if not Path(video).exists():  # before the imports below load cv2
        raise InputError(f"video {video} does not exist; check the path")

    from hetcache_cli.mask.make import make_mask

    bar: StepProgress | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # started by the first tracked frame, after every input check
            bar = StepProgress("tracking", total).__enter__()
        bar.update(done, total)

    try:
        result = make_mask(job, progress=None if quiet or json_out else progress)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if json_out:
        print_json(result.to_dict())
    elif not quiet:
        what = "lossless video" if result.kind == "video" else "PNG frames"
        how = "SAM 2 " + result.tracker if result.method == "sam2" else "box keyframes"
        stdout.print(
            f"wrote {result.output} ({result.frames} frames {result.width}x{result.height} @ {result.fps:g} fps, "
            f"{what}) from {how} in {result.seconds:.1f} s: {result.coverage:.1%} of the pixels, empty in "
            f"{len(result.empty_frames)} frame(s)" + (f"; preview: {result.preview}" if result.preview else ""),
            highlight=False,
        )
