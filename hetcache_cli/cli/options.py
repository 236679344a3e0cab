"""Option aliases shared by commands. Every default is None: the spec dataclass holds the real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Mask = Annotated[Optional[str], typer.Option("--mask", "-m", help="Mask image, mask video or folder of frames (white = edit).")]
Box = Annotated[
    Optional[list[str]],
    typer.Option(
        "--box", metavar="X0,Y0,X1,Y1[@FRAME]",
        help="Instead of --mask: a box in video pixels on frame FRAME (default 0); repeat for keyframes of a "
        "moving box (interpolated, as `hetcache mask --box`).",
    ),
]  # fmt: skip
Prompt = Annotated[Optional[str], typer.Option("--prompt", "-p", help="What the masked region should show.")]
NegativePrompt = Annotated[Optional[str], typer.Option("--negative-prompt", help="What it should not show.")]
Output = Annotated[Optional[str], typer.Option("--output", "-o", help="Output MP4 [default: <video>_edited.mp4].")]
SpecFile = Annotated[Optional[Path], typer.Option("--spec", help="YAML edit spec; flags override its values.")]
Model = Annotated[
    Optional[str], typer.Option("--model", help="Diffusers Wan-VACE folder or cached hub id [default: embedded demo model].")
]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Denoising steps [default: 30].")]
Guidance = Annotated[Optional[float], typer.Option("--guidance-scale", help="Classifier-free guidance, 1 = off [default: the model folder's hetcache_defaults.json, else 5.0].")]
Guidance2 = Annotated[
    Optional[float],
    typer.Option("--guidance-scale-2", help="Guidance of the low-noise expert of a two-expert (Wan2.2) model [default: --guidance-scale]."),
]
Offload = Annotated[
    Optional[str],
    typer.Option("--offload", help="none | model | group | leaf: weights in host memory, moved to the GPU when used [default: none]."),
]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed [default: 0].")]
Frames = Annotated[Optional[int], typer.Option("--frames", help="Edit only the first N frames [default: every frame].")]
WindowFrames = Annotated[
    Optional[int],
    typer.Option(
        "--window-frames",
        help="Frames per model run, 4k+1; longer clips run in overlapping windows [default: the model folder's "
        "hetcache_defaults.json, else 81].",
    ),
]
WindowOverlap = Annotated[
    Optional[int],
    typer.Option("--window-overlap", help="Frames shared by consecutive windows [default: the model's, else 16]."),
]
WindowColorMatch = Annotated[
    Optional[bool],
    typer.Option(
        "--window-color-match/--no-window-color-match",
        help="Match each window's edited colours to the previous window's over their overlap [default: off].",
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted long edit from its first unfinished window (same settings; otherwise it "
        "starts over).",
    ),
]
Width = Annotated[
    Optional[int],
    typer.Option("--width", help="Model working width, a multiple of 16; the output keeps the video's size [default: from max_area]."),
]
Height = Annotated[
    Optional[int],
    typer.Option("--height", help="Model working height, a multiple of 16 [default: from max_area]."),
]
MaxArea = Annotated[
    Optional[int],
    typer.Option("--max-area", help="Most model pixels per frame; larger crops are scaled down to fit [default: 399360 = 480x832]."),
]
Crop = Annotated[
    Optional[str],
    typer.Option(
        "--crop",
        help="auto: the model works on a box around the mask, stitched back into the full-resolution frames; "
        "full: on the whole frame scaled to the model size [default: auto].",
    ),
]
CropContext = Annotated[
    Optional[float],
    typer.Option("--crop-context", help="Crop side = this x the mask box's side (crop: auto) [default: 2.0]."),
]
CropMinSize = Annotated[
    Optional[int], typer.Option("--crop-min-size", help="Smallest crop side in video pixels (crop: auto) [default: 384].")
]
MaskFill = Annotated[
    Optional[str],
    typer.Option(
        "--mask-fill",
        help="What the model sees inside the mask: source (the original pixels; recolour, restyle) or gray "
        "(mid grey, as VACE trains inpainting; remove, replace) [default: source].",
    ),
]
VaeDecode = Annotated[
    Optional[str],
    typer.Option(
        "--vae-decode",
        help="region (decode only the latent box around the mask and its paste band; faster on large crops) or "
        "full (the whole crop) [default: region].",
    ),
]
VaeTiling = Annotated[
    Optional[bool],
    typer.Option(
        "--vae-tiling/--no-vae-tiling",
        help="Run the VAE in 256-px tiles: about a quarter of its memory on large crops, slower [default: off].",
    ),
]
Audio = Annotated[
    Optional[bool],
    typer.Option("--audio/--no-audio", help="Copy the video's audio streams into the output [default: on]."),
]
Cache = Annotated[Optional[str], typer.Option("--cache", help="none | teacache | hetcache [default: hetcache].")]
Preset = Annotated[Optional[str], typer.Option("--preset", help="quality | balanced | fast (cache settings preset).")]
Schedule = Annotated[
    Optional[str], typer.Option("--schedule", help="Explicit cache schedule, one letter per step: F, P or R.")
]
Stats = Annotated[Optional[str], typer.Option("--stats", help="Statistics JSON [default: beside the output].")]
PasteBack = Annotated[
    Optional[bool],
    typer.Option("--paste-back/--no-paste-back", help="Keep input pixels outside the mask [default: on]."),
]
MaskThreshold = Annotated[Optional[float], typer.Option("--mask-threshold", help="Mask binarisation threshold 0..1 [default: 0.5].")]
MaskInvert = Annotated[Optional[bool], typer.Option("--mask-invert/--no-mask-invert", help="Edit the dark part of the mask.")]
MaskDilation = Annotated[Optional[int], typer.Option("--mask-dilation", help="Grow the mask by N pixels [default: 0].")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
Device = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N [default: auto].")]
Dtype = Annotated[Optional[str], typer.Option("--dtype", help="auto | float32 | float16 | bfloat16 [default: auto].")]
Json = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, warnings or summary text.")]
Crf = Annotated[Optional[int], typer.Option("--crf", help="Output x264 quality: 0 lossless, 18 visually lossless [default: 18].")]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Check inputs, print the crop and working size of each window, the token counts, the cache schedule "
        "and the FLOPs estimate; write nothing.",
    ),
]
