"""Video read/write through the ffmpeg binary bundled with imageio-ffmpeg.

Frames are uint8 RGB arrays [F, H, W, 3]. Written files are H.264 in BT.709 (tagged, so
players and ffmpeg decode the colours the way they were encoded), or lossless RGB H.264, moved into
place atomically. Frame rates are kept as rationals (29.97 fps is 30000/1001) from read to write.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import imageio_ffmpeg
import numpy as np

from hetcache_cli.errors import HetcacheError, InputError
from hetcache_cli.io.atomic import atomic_path

__all__ = ["VideoClip", "read_video", "write_video", "VIDEO_SUFFIXES", "DEFAULT_CRF"]

logger = logging.getLogger(__name__)

# Containers that hold H.264 and that ffmpeg selects from the extension.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
# x264's "visually lossless" point; the imageio default (quality 5 -> crf 25) blurs fine detail.
DEFAULT_CRF = 18
# Used when a file carries no frame rate (Wan2.1 generates at 16 fps).
_FALLBACK_FPS = 16.0
# ffmpeg prints NTSC rates rounded to 2 decimals; snap them back to the exact rationals.
_NTSC_RATES = tuple(Fraction(n, 1001) for n in (24000, 30000, 48000, 60000, 120000))
_COLOR_ARGS = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
_RGB_ARGS = ["-colorspace", "rgb", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "pc"]


@dataclass
class VideoClip:
    """Decoded video.

    Args:
        frames: uint8 RGB frames, [F, H, W, 3].
        fps: frames per second from the file's metadata.
        path: the file it was read from, if any.
        rate: the exact frame rate when it is known (`read_video(..., rate=...)`), else `fps` as a rational.
    """

    frames: np.ndarray
    fps: float
    path: Path | None = None
    rate: Fraction | None = None

    def __post_init__(self) -> None:
        if self.rate is None:
            self.rate = Fraction(self.fps).limit_denominator(1001)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


def _stderr_reason(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip() and not ln.startswith("===")]
    return lines[-1] if lines else "no details from ffmpeg"


def _clean_fps(fps: float, n_frames: int, duration_s: float, path: Path) -> float:
    if fps and fps > 0:
        for rate in _NTSC_RATES:
            if abs(fps - float(rate)) < 0.006:
                return float(rate)
        return float(fps)
    if duration_s and duration_s > 0:
        return n_frames / duration_s
    logger.warning("%s has no frame rate in its metadata; assuming %g fps", path, _FALLBACK_FPS)
    return _FALLBACK_FPS


def read_video(
    path: str | os.PathLike,
    max_frames: int | None = None,
    rate: Fraction | None = None,
    resample: bool = False,
    expected_frames: int | None = None,
) -> VideoClip:
    """Decode a video file ffmpeg can read into RGB frames.

    Args:
        path: video file (mp4, mov, webm, mkv, gif, ...).
        max_frames: stop after this many frames (None = all).
        rate: the file's exact frame rate (io/probe.py); with it every decoded frame is returned once, as
            stored (no frame is duplicated or dropped), and the clip's `rate` is this one.
        resample: with `rate`, resample a variable-rate file to that constant rate instead (ffmpeg's
            nearest-frame rule: frames are duplicated or dropped so that frame i shows time i / rate).
        expected_frames: how many frames to make room for at once (e.g. the probe's packet count).

    Raises:
        InputError: missing path, a folder, a file ffmpeg cannot decode, or no frames.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"video {path} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"video {path} is a folder; pass a video file such as clip.mp4")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")

    output_params = ["-frames:v", str(max_frames)] if max_frames is not None else []
    if rate is not None:
        output_params += ["-fps_mode", "cfr", "-r", _rate_text(rate)] if resample else ["-fps_mode", "passthrough"]
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=output_params)
    count = 0
    try:
        meta = next(reader)
        width, height = meta["size"]
        # decoded straight into one array (grown when the hint is short): no second copy of the clip
        cap = expected_frames or max(1, round(meta.get("duration", 0.0) * meta.get("fps", 0.0)) + 1)
        frames = np.empty((min(cap, max_frames or cap), height, width, 3), np.uint8)
        for buf in reader:
            if count == len(frames):
                frames = np.concatenate([frames, np.empty((max(1, count // 2),) + frames.shape[1:], np.uint8)])
            frames[count] = np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3)
            count += 1
    except (OSError, RuntimeError, ValueError, KeyError, StopIteration) as err:
        raise InputError(
            f"cannot read video {path}: {_stderr_reason(err)}; "
            "pass a video file ffmpeg can decode (mp4, mov, webm, ...)"
        ) from None
    finally:
        reader.close()
    if not count:
        raise InputError(f"video {path} has no frames; pass a video with at least one frame")
    # a view keeps a short unused tail; a large one (a header that overstated the length) is given back
    frames = frames[:count] if len(frames) - count <= max(2, count // 10) else frames[:count].copy()
    if rate is not None:
        return VideoClip(frames=frames, fps=float(rate), path=path, rate=Fraction(rate))
    fps = _clean_fps(meta.get("fps", 0.0), count, meta.get("duration", 0.0), path)
    return VideoClip(frames=frames, fps=fps, path=path)


def _rate_text(rate: float | Fraction) -> str:
    """ffmpeg's spelling of a frame rate: 30000/1001, 25/1 (floats such as 29.97002997 snap back to rationals)."""
    frac = rate if isinstance(rate, Fraction) else Fraction(rate).limit_denominator(100_000)
    return f"{frac.numerator}/{frac.denominator}"


def _rate_args(quality: float | None, crf: int | None, lossless: bool) -> tuple[list[str], str]:
    """x264 rate-control arguments and the output pixel format."""
    if sum(x is not None for x in (quality, crf)) + bool(lossless) > 1:
        raise InputError("give only one of quality, crf and lossless for the output video")
    if lossless:
        # x264's RGB mode at qp 0: the decoded frames are the encoded RGB frames, bit for bit (no YUV rounding).
        return ["-qp", "0"], "rgb24"
    if quality is not None:
        if not 0 <= quality <= 10:
            raise InputError(f"video quality {quality} is outside 0..10; use e.g. 8 (10 = best)")
        crf = int(round((1 - quality / 10) * 51))
    if crf is None:
        crf = DEFAULT_CRF
    if not 0 <= crf <= 51:
        raise InputError(f"crf {crf} is outside 0..51; use e.g. {DEFAULT_CRF} (lower = better, 0 = lossless)")
    return ["-crf", str(int(crf))], "yuv420p"


def _iter_checked(frames: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [F, H, W, 3] RGB, got shape {frames.shape}")
        if frames.shape[0] == 0:
            raise ValueError("no frames to write")
    shape = None
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"frame {i} must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
        if shape is None:
            shape = frame.shape
        elif frame.shape != shape:
            raise ValueError(f"frame {i} has shape {frame.shape}, frame 0 has {shape}")
        yield frame


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float | Fraction,
    quality: float | None = None,
    crf: int | None = None,
    lossless: bool = False,
    joinable: bool = False,
) -> Path:
    """Encode RGB frames to an H.264 file at `path`, atomically.

    Args:
        path: output file; extension one of VIDEO_SUFFIXES. Parent folders are created.
        frames: uint8 [F, H, W, 3], or an iterable of uint8 [H, W, 3] frames.
        fps: frame rate (NTSC rates like 30000/1001 are kept exact).
        quality: imageio's 0..10 scale (10 = best), mapped to crf = (1 - q/10) * 51.
        crf: x264 constant rate factor, 0..51 (default DEFAULT_CRF).
        lossless: x264 qp 0 in RGB (libx264rgb): decoded frames equal `frames` bit for bit, at any size; for
            tests, intermediate files and exact edits (few players).
        joinable: no B-frames, so that the file's decoding times start at 0 and files of the same settings
            join with ffmpeg's concat demuxer without re-encoding (`io/audio.join_video`): with B-frames the
            joins' time stamps overlap and readers count a frame too many.

    yuv420p needs even sizes: an odd height/width is padded by repeating the last
    row/column (with a warning). Size is otherwise preserved exactly (no macro-block
    resize). On any failure nothing is left at `path` and no temporary file remains.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(
            f"output video {path} has extension '{path.suffix}'; use one of {', '.join(VIDEO_SUFFIXES)}"
        )
    if not fps or fps <= 0:
        raise InputError(f"fps {fps} is not positive; give the frame rate of the source video")
    rate_args, pix_fmt = _rate_args(quality, crf, lossless)
    fps_arg = _rate_text(fps)

    frame_iter = _iter_checked(frames)
    first = next(frame_iter, None)
    if first is None:
        raise ValueError("no frames to write")
    height, width = first.shape[:2]
    pad = pix_fmt == "yuv420p" and (height % 2 or width % 2)
    if pad:
        logger.warning("frames are %dx%d; padding to even size for yuv420p", width, height)
    out_w, out_h = width + (width % 2 if pad else 0), height + (height % 2 if pad else 0)
    mux_args = ["-movflags", "+faststart"] if suffix in (".mp4", ".m4v", ".mov") else []

    if joinable:
        rate_args = [*rate_args, "-bf", "0"]
    if pix_fmt == "rgb24":
        codec_args = ["-c:v", "libx264rgb", *rate_args, "-pix_fmt", pix_fmt, *_RGB_ARGS]
    else:
        codec_args = ["-c:v", "libx264", *rate_args, "-pix_fmt", pix_fmt,
                      "-vf", "scale=out_color_matrix=bt709:out_range=tv", *_COLOR_ARGS]  # fmt: skip

    with atomic_path(path, suffix) as tmp, tempfile.TemporaryFile() as log:
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{out_w}x{out_h}", "-r", fps_arg, "-i", "-",
            "-an", *codec_args, *mux_args, str(tmp),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        try:
            _feed(proc, itertools.chain([first], frame_iter), pad)
            returncode = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if returncode != 0:
            log.seek(0)
            reason = _stderr_reason(log.read().decode(errors="replace"))
            raise HetcacheError(f"ffmpeg could not write {path}: {reason}")
    return path


def _feed(proc: subprocess.Popen, frames: Iterator[np.ndarray], pad: bool) -> None:
    try:
        for frame in frames:
            if pad:
                frame = _pad_even(frame)
            proc.stdin.write(np.ascontiguousarray(frame).data)
        proc.stdin.close()
    except BrokenPipeError:
        # ffmpeg exited early; its non-zero return code and stderr are reported instead.
        with contextlib.suppress(OSError):
            proc.stdin.close()
