"""What a media file holds, read from its packets without decoding a frame: the exact frame rate, whether
it is variable, and its audio streams.

The bundled ffmpeg (imageio-ffmpeg ships no ffprobe) copies the streams into its `framecrc` muxer,
which prints each stream's time base, codec and parameters, then one line per packet with its
timestamps in that time base. A constant rate is then known exactly as a rational (29.97 fps is
30000/1001, never a rounded float), and a variable one is told apart from the tick rounding of
containers with coarse time bases (Matroska's 1 ms turns 30000/1001 into 33/34 ms frames).
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg

__all__ = ["AudioStream", "MediaInfo", "probe_media", "snap_rate"]

logger = logging.getLogger(__name__)

# Rates a camera or an editor writes; a measured average this close (relative) to one of them is that one.
_STANDARD_RATES = tuple(Fraction(n, 1001) for n in (24000, 30000, 48000, 60000, 120000)) + tuple(
    Fraction(n) for n in (8, 10, 12, 15, 16, 20, 24, 25, 30, 48, 50, 60, 90, 100, 120, 144, 240)
) + (Fraction(25, 2),)
_SNAP_TOLERANCE = 2e-3
# Frame durations that differ by more than this share of the mean (and more than 2 ticks) make a clip VFR.
_VFR_TOLERANCE = 0.02


@dataclass
class AudioStream:
    """One audio stream of a file, in the order ffmpeg numbers them (`0:a:N`)."""

    index: int  # N in 0:a:N
    codec: str  # ffmpeg codec name, e.g. aac, mp3, opus, pcm_s16le
    sample_rate: int | None
    channels: str | None  # ffmpeg's layout name, e.g. mono, stereo, 5.1
    duration_s: float  # last packet's end minus the first packet's start (or 0, when that is before 0)

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class MediaInfo:
    """The video stream's timing and the audio streams of one file.

    Args:
        rate: the video's frame rate, exact for a constant-rate clip, the snapped average for a variable one.
        vfr: the frame durations vary (beyond the container's tick rounding).
        packets: video packets (the frame count of nearly every file).
        min_frame_s, max_frame_s: the shortest and longest frame duration, seconds.
        audio: the audio streams.
        width, height: the decoded frames' size (after the rotation players and ffmpeg apply), 0 when unknown.
        rotation: degrees the stored frames are turned by on decoding (a phone's portrait clip: 90 or -90).
        start_s: the first frame's time stamp, seconds (decoded frames are placed relative to it).
        duration_s: from the first frame's start to the last frame's end, seconds.
    """

    rate: Fraction
    vfr: bool = False
    packets: int = 0
    min_frame_s: float = 0.0
    max_frame_s: float = 0.0
    audio: list[AudioStream] = field(default_factory=list)
    width: int = 0
    height: int = 0
    rotation: float = 0.0
    start_s: float = 0.0
    duration_s: float = 0.0

    @property
    def frames(self) -> int:
        """Frames of the clip at `rate`: every packet of a constant-rate clip; a variable-rate one's duration x rate."""
        if self.vfr and self.duration_s > 0:
            return max(1, round(self.duration_s * self.rate))
        return self.packets

    def to_dict(self) -> dict:
        return {
            "rate": f"{self.rate.numerator}/{self.rate.denominator}", "vfr": self.vfr, "packets": self.packets,
            "min_frame_s": self.min_frame_s, "max_frame_s": self.max_frame_s, "audio": [a.to_dict() for a in self.audio],
            "width": self.width, "height": self.height, "rotation": self.rotation, "start_s": self.start_s,
            "duration_s": self.duration_s,
        }  # fmt: skip


def snap_rate(rate: Fraction | float) -> Fraction:
    """The standard rate within 0.2% of `rate` (29.97 -> 30000/1001), else `rate` as a simple rational."""
    rate = Fraction(rate)
    for std in _STANDARD_RATES:
        if abs(rate / std - 1) < _SNAP_TOLERANCE:
            return std
    return rate.limit_denominator(1001)


@dataclass
class _Stream:
    kind: str = ""
    codec: str = ""
    tb: Fraction = Fraction(1)
    sample_rate: int | None = None
    channels: str | None = None
    pts: list[int] = field(default_factory=list)
    durations: list[int] = field(default_factory=list)


def _parse(text: str) -> dict[int, _Stream]:
    streams: dict[int, _Stream] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            name, _, idx = key.partition(" ")
            if not idx.strip().isdigit():
                continue
            s = streams.setdefault(int(idx), _Stream())
            value = value.strip()
            if name == "tb":
                s.tb = Fraction(value)
            elif name == "media_type":
                s.kind = value
            elif name == "codec_id":
                s.codec = value
            elif name == "sample_rate":
                s.sample_rate = int(value)
            elif name == "channel_layout_name":
                s.channels = value
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        s = streams.setdefault(int(parts[0]), _Stream())
        s.pts.append(int(parts[2]))
        s.durations.append(int(parts[3]))
    return streams


def _video_timing(s: _Stream) -> tuple[Fraction | None, bool, float, float]:
    """(rate, vfr, shortest, longest frame in seconds) from the video packets; rate None when unknown."""
    pts = sorted(s.pts)
    if len(pts) < 2:
        if s.durations and s.durations[0] > 0:
            return snap_rate(1 / (s.durations[0] * s.tb)), False, float(s.durations[0] * s.tb), float(s.durations[0] * s.tb)
        return None, False, 0.0, 0.0
    steps = [b - a for a, b in zip(pts, pts[1:])]
    lo, hi = min(steps), max(steps)
    mean = Fraction(pts[-1] - pts[0], len(steps))
    if lo <= 0 or mean <= 0:
        return None, False, 0.0, 0.0
    if lo == hi:  # every frame the same number of ticks: the rate is exact
        rate = 1 / (lo * s.tb)
        rate = snap_rate(rate) if rate.denominator > 1001 else rate
        return rate, False, float(lo * s.tb), float(hi * s.tb)
    vfr = hi - lo > 2 and (hi - lo) > _VFR_TOLERANCE * mean
    return snap_rate(1 / (mean * s.tb)), vfr, float(lo * s.tb), float(hi * s.tb)


_SIZE = re.compile(r"Stream #\d+:\d+.*?: Video: .*?, (\d+)x(\d+)[ ,\[]")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")


def _frame_size(log: str) -> tuple[int, int, float]:
    """(width, height, rotation) of the first video stream as decoded, from ffmpeg's description of the input."""
    size = _SIZE.search(log)
    if size is None:
        return 0, 0, 0.0
    width, height = int(size.group(1)), int(size.group(2))
    after = log[size.end() :]
    nxt = after.find("Stream #")
    rotation = _ROTATION.search(after if nxt < 0 else after[:nxt])
    degrees = float(rotation.group(1)) if rotation else 0.0
    if round(abs(degrees)) % 180 == 90:  # ffmpeg turns the frames upright on decoding
        width, height = height, width
    return width, height, degrees


def probe_media(path: str | Path) -> MediaInfo | None:
    """The file's video timing, size and audio streams from its packets; None when ffmpeg cannot read them."""
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "info", "-nostats", "-i", str(path),
        "-map", "0:V:0", "-map", "0:a?", "-c", "copy", "-f", "framecrc", "-",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)
    except OSError as err:
        logger.debug("cannot run ffmpeg on %s: %s", path, err)
        return None
    if proc.returncode != 0:
        logger.debug("ffmpeg cannot read the packets of %s: %s", path, proc.stderr.strip()[-300:])
        return None
    width, height, rotation = _frame_size(proc.stderr)
    streams = _parse(proc.stdout)
    videos = [s for s in streams.values() if s.kind == "video"]
    if not videos:
        return None
    rate, vfr, shortest, longest = _video_timing(videos[0])
    if rate is None:
        return None
    audio = []
    for s in (streams[i] for i in sorted(streams)):
        if s.kind != "audio":
            continue
        ends = [p + d for p, d in zip(s.pts, s.durations)]
        # from the first packet, or from 0 for encoder priming (AAC's first packet starts before 0 and is skipped)
        duration = float((max(ends) - max(0, min(s.pts))) * s.tb) if s.pts else 0.0
        audio.append(AudioStream(len(audio), s.codec, s.sample_rate, s.channels, duration))
    video = videos[0]
    first = min(video.pts)
    end = max(p + d for p, d in zip(video.pts, video.durations))
    return MediaInfo(
        rate, vfr, len(video.pts), shortest, longest, audio, width, height, rotation, float(first * video.tb),
        float((end - first) * video.tb),
    )  # fmt: skip
