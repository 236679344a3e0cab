"""Where an edit reads and writes, checked before anything heavy is imported (no torch, numpy or ffmpeg).

`check_paths` is what a command runs right after building the spec: a missing video or mask, or
an output that exists, fails in a fraction of a second with exit 2, before the model (and torch)
loads. Reading the files (decodable video, readable mask) is checked later, by `prepare_edit`.
"""

from __future__ import annotations

from pathlib import Path

from hetcache_cli.errors import InputError

OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


def default_output(video: Path) -> Path:
    return video.with_name(f"{video.stem}_edited.mp4")


def default_stats(output: Path) -> Path:
    return output.with_name(f"{output.stem}.stats.json")


def resolve_outputs(spec) -> tuple[Path, Path]:
    """(output video, statistics JSON) of a spec, with the defaults filled in."""
    video = Path(spec.video)
    output = Path(spec.output) if spec.output else default_output(video)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"output {output} must end in .mp4 (or .m4v/.mov/.mkv); change -o/--output")
    stats = Path(spec.stats) if spec.stats else default_stats(output)
    if output.resolve() == video.resolve():
        raise InputError(f"output {output} is the input video; choose another -o/--output")
    if output.resolve() == stats.resolve():
        raise InputError(f"stats path {stats} equals the output path; choose another --stats")
    return output, stats


def check_paths(spec, overwrite: bool = False) -> tuple[Path, Path]:
    """The input files exist and the outputs may be written; returns the outputs."""
    video, mask = Path(spec.video), Path(spec.mask) if spec.mask else None  # no mask: box keyframes
    if not video.exists():
        raise InputError(f"video {video} does not exist; check the path")
    if video.is_dir():
        raise InputError(f"video {video} is a folder; pass a video file such as clip.mp4")
    if mask is not None and not mask.exists():
        raise InputError(f"mask {mask} does not exist; check the path")
    output, stats = resolve_outputs(spec)
    if output.exists() and not overwrite:
        raise InputError(f"output {output} already exists; pass --overwrite or choose another -o/--output")
    return output, stats
