"""The source's audio in the edited file: every audio stream copied (re-encoded to AAC only where the
output container cannot hold its codec), written atomically together with the video.

The video is encoded to a hidden temporary file first, then the bundled ffmpeg muxes it with the
source's audio streams into a second temporary file that is renamed onto the output: the output
path never holds a silent or half-muxed file. Packet timestamps are copied, so the audio keeps its
offset to the first frame (ffmpeg shifts both inputs by their own start times, which are the same
clock for an edited clip that starts at the source's first frame).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import imageio_ffmpeg
import numpy as np

from hetcache_cli.errors import HetcacheError
from hetcache_cli.io.atomic import atomic_path
from hetcache_cli.io.probe import AudioStream, MediaInfo

__all__ = ["AudioPlan", "join_video", "plan_audio", "write_video_with_audio"]

logger = logging.getLogger(__name__)

# Audio codecs each container holds in a way players read (ffmpeg codec names); the rest become AAC.
_HOLDS = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"},
    ".m4v": {"aac", "mp3", "ac3", "eac3", "alac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
             "pcm_s32le", "pcm_f32le", "pcm_u8"},
}  # fmt: skip
_AAC_BITRATE = "192k"


@dataclass
class AudioPlan:
    """What happens to each of the source's audio streams.

    Args:
        streams: the source's audio streams that go into the output.
        reencode: indices (0:a:N) re-encoded to AAC; the others are copied packet for packet.
        dropped: streams the user asked to drop (--no-audio).
        duration_s: cut the audio here (seconds; when the edit keeps only the first frames), None = whole.
        messages: one line per change the user did not ask for (a re-encode), for a warning.
        notes: one line per decision that follows what the user asked (dropped, cut).
    """

    streams: list[AudioStream] = field(default_factory=list)
    reencode: list[int] = field(default_factory=list)
    dropped: int = 0
    duration_s: float | None = None
    messages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "streams": [
                {**s.to_dict(), "action": "aac" if s.index in self.reencode else "copy"} for s in self.streams
            ],
            "dropped": self.dropped,
            "duration_s": self.duration_s,
        }


def plan_audio(info: MediaInfo | None, output: Path, keep: bool = True, duration_s: float | None = None) -> AudioPlan:
    """Decide, before anything runs, which audio streams the output gets and how.

    Args:
        info: the source's probe (None when it could not be read: no audio is assumed).
        output: the output path (its extension is the container).
        keep: False drops every audio stream (--no-audio).
        duration_s: the edited part's duration when the edit keeps only the first frames of the clip.
    """
    streams = list(info.audio) if info is not None else []
    if not streams:
        return AudioPlan()
    if not keep:
        return AudioPlan(dropped=len(streams), notes=[f"--no-audio: the {_count(streams)} of the source dropped"])
    holds = _HOLDS.get(output.suffix.lower())
    reencode = [s.index for s in streams if holds is not None and s.codec not in holds]
    messages = [
        f"audio stream {s.index} ({s.codec}) cannot go into {output.suffix} as it is: re-encoded to AAC {_AAC_BITRATE}"
        " (write .mkv to keep it as it is)"
        for s in streams
        if s.index in reencode
    ]
    notes = [f"audio cut to the edited {duration_s:.3f} s (the first frames of the clip)"] if duration_s is not None else []
    return AudioPlan(streams, reencode, 0, duration_s, messages, notes)


def _count(streams: list[AudioStream]) -> str:
    return "audio stream" if len(streams) == 1 else f"{len(streams)} audio streams"


def write_video_with_audio(
    path: Path, frames: np.ndarray | Iterable[np.ndarray], rate, source: Path, plan: AudioPlan, **encode
) -> Path:
    """`write_video` with the source's audio streams as `plan` says, atomically: the output appears complete or not at all.

    `encode` goes to `write_video` (crf / lossless).
    """
    from hetcache_cli.io.video import write_video

    path = Path(path)
    if not plan.streams:
        return write_video(path, frames, rate, **encode)
    with atomic_path(path) as muxed:
        silent = muxed.with_name(f"{muxed.stem}.video{muxed.suffix}")
        try:
            write_video(silent, frames, rate, **encode)
            _mux_or_reencode(silent, source, muxed, plan)
        finally:
            silent.unlink(missing_ok=True)
    return path


def join_video(path: Path, segments: list[Path], source: Path, plan: AudioPlan) -> Path:
    """The video of `segments` (same encoder settings, `write_video(..., joinable=True)`), joined without
    re-encoding by ffmpeg's concat demuxer, with the source's audio streams as `plan` says, atomically."""
    path = Path(path)
    with atomic_path(path) as joined:
        listing = joined.with_name(f"{joined.stem}.txt")
        # the concat demuxer's own quoting: one file per line, a quote closed, escaped and reopened
        names = (str(Path(s).resolve()).replace("'", "'\\''") for s in segments)
        listing.write_text("".join(f"file '{name}'\n" for name in names))
        video = ["-f", "concat", "-safe", "0", "-i", str(listing)]
        try:
            if not plan.streams:
                cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error", *video,
                       "-map", "0:v:0", "-c", "copy", *_faststart(joined), str(joined)]  # fmt: skip
                _run(cmd, f"ffmpeg could not join the video of {path}")
                return path
            _mux_or_reencode(video, source, joined, plan)
        finally:
            listing.unlink(missing_ok=True)
    return path


def _mux_or_reencode(video, source: Path, out: Path, plan: AudioPlan) -> None:
    """Mux the audio as `plan` says; when copying a stream fails, every stream is re-encoded to AAC instead."""
    try:
        _mux(video, source, out, plan, plan.reencode)
    except HetcacheError as err:
        if len(plan.reencode) == len(plan.streams):
            raise
        logger.warning("%s; re-encoding the audio to AAC instead", err)
        plan.messages.append(f"copying the audio failed ({err}); re-encoded to AAC")
        plan.reencode = [s.index for s in plan.streams]
        _mux(video, source, out, plan, plan.reencode)


def _faststart(out: Path) -> list[str]:
    return ["-movflags", "+faststart"] if out.suffix.lower() in (".mp4", ".m4v", ".mov") else []


def _mux(video: Path | list[str], source: Path, out: Path, plan: AudioPlan, reencode: list[int]) -> None:
    """Mux `video` (a file, or ffmpeg input arguments) with the source's audio streams into `out`."""
    inputs = video if isinstance(video, list) else ["-i", str(video)]
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error", *inputs,
           "-i", str(source), "-map", "0:v:0"]  # fmt: skip
    for s in plan.streams:
        cmd += ["-map", f"1:a:{s.index}"]
    cmd += ["-c:v", "copy"]
    for n, s in enumerate(plan.streams):
        cmd += [f"-c:a:{n}", "aac", f"-b:a:{n}", _AAC_BITRATE] if s.index in reencode else [f"-c:a:{n}", "copy"]
    if plan.duration_s is not None:
        cmd += ["-t", f"{plan.duration_s:.6f}"]
    cmd += [*_faststart(out), "-map_metadata", "1", str(out)]
    _run(cmd, f"ffmpeg could not add the audio of {source}")


def _run(cmd: list[str], what: str) -> None:
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        try:
            code = proc.wait()
        except BaseException:
            proc.kill()
            with contextlib.suppress(Exception):
                proc.wait()
            raise
        if code != 0:
            log.seek(0)
            lines = [ln.strip() for ln in log.read().decode(errors="replace").splitlines() if ln.strip()]
            raise HetcacheError(f"{what}: {lines[-1] if lines else 'no details'}")
