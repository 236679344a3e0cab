"""The source clip's frames in order, decoded one at a time from one ffmpeg pipe, never the whole clip.

ffmpeg decodes every stored frame once (`-fps_mode passthrough`) and its `showinfo` filter reports each
frame's time stamp on stderr. Frame i of the clip is the last decoded frame shown at or before the
middle of slot i, (i + 0.5) / rate after the first frame: a constant-rate file maps one to one, a
variable-rate one is resampled to its average rate (frames repeated or dropped, as ffmpeg's fps filter
would), and a damaged file whose frames fail to decode keeps its length and its sync with the audio:
each missing frame shows the one before it, and `filled` lists them. Time stamps are kept (`-copyts`),
so a stream opened at frame k seeks there (`-ss`) and finds the same frames as one read from 0.
"""

from __future__ import annotations

import logging
import queue
import re
import subprocess
import threading
from collections import deque
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from hetcache_cli.errors import InputError
from hetcache_cli.io.probe import MediaInfo

__all__ = ["FrameStream", "describe_filled"]

logger = logging.getLogger(__name__)

_PTS = re.compile(r"Parsed_showinfo.*?\bn:\s*\d+\s+pts:\s*-?\d+\s+pts_time:\s*(-?[\d.e+-]+)")
_END = object()


class FrameStream:
    """Clip frames `start`, `start + 1`, ... up to `count`, read in order with `read_into`.

    Args:
        path: the video file.
        media: its probe (rate, size, first time stamp, variable rate or not).
        count: frames the clip has (`media.frames`, or fewer with --frames).
        start: the first frame to read; the decoder seeks to it (decoding nothing before, but for the
            frames ffmpeg needs from the key frame before it).

    `decoded` counts the frames ffmpeg handed over, `filled` the clip frames that had no decoded frame of
    their own (a constant-rate source only: for a variable-rate one repeats are the resampling).
    """

    def __init__(self, path: str | Path, media: MediaInfo, count: int, start: int = 0) -> None:
        self.path, self.media, self.count = Path(path), media, count
        self.width, self.height = media.width, media.height
        self.rate = media.rate
        self.position = start
        self.decoded = 0
        self.filled: list[int] = []
        self._frame_bytes = self.width * self.height * 3
        self._last: np.ndarray | None = None
        self._next: tuple[float, np.ndarray] | None = None
        self._log: deque[str] = deque(maxlen=20)
        self._times: queue.Queue = queue.Queue()
        self._proc = self._open(start)

    def _open(self, start: int) -> subprocess.Popen:
        seek = []
        if start > 0:
            # half a frame early: a frame stamped a tick before its slot is still found
            seek = ["-ss", f"{self.media.start_s + (start - 0.5) / float(self.rate):.6f}"]
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "info", "-copyts", *seek,
            "-i", str(self.path), "-map", "0:V:0", "-vf", "showinfo", "-fps_mode", "passthrough", "-an", "-sn",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        threading.Thread(target=self._watch, args=(proc.stderr,), daemon=True).start()
        return proc

    def _watch(self, stderr) -> None:
        """Each frame's time stamp from showinfo, in order; the other lines are kept for error messages."""
        for raw in iter(stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            found = _PTS.search(line)
            if found:
                self._times.put(float(found.group(1)))
            elif line and "showinfo" not in line:
                self._log.append(line)
        self._times.put(_END)

    def _decode(self) -> tuple[float, np.ndarray] | None:
        """The next decoded frame and its slot position (time from the first frame x rate), None at the end."""
        buf = self._proc.stdout.read(self._frame_bytes)
        if len(buf) < self._frame_bytes:
            return None
        t = self._times.get()
        if t is _END:
            return None
        self.decoded += 1
        frame = np.frombuffer(buf, np.uint8).reshape(self.height, self.width, 3)
        return (t - self.media.start_s) * float(self.rate), frame

    def _peek(self) -> tuple[float, np.ndarray] | None:
        if self._next is None:
            self._next = self._decode()
        return self._next

    def _frame(self, i: int) -> np.ndarray:
        """Clip frame i: the last decoded frame whose slot position is at most i + 0.5."""
        own = False
        while (nxt := self._peek()) is not None and (nxt[0] <= i + 0.5 or self._last is None):
            self._last, self._next = nxt[1], None
            own = True
        if self._last is None:
            raise InputError(self._no_frames())
        if not own and not self.media.vfr:
            self.filled.append(i)
        return self._last

    def read_into(self, out: np.ndarray) -> None:
        """Fill `out` (uint8 [n, H, W, 3]) with the next n clip frames."""
        if self.position + len(out) > self.count:
            raise ValueError(f"frames {self.position}-{self.position + len(out) - 1} are past the clip's {self.count}")
        for k in range(len(out)):
            out[k] = self._frame(self.position)
            self.position += 1

    def _no_frames(self) -> str:
        reason = self._log[-1] if self._log else "no details from ffmpeg"
        return (
            f"cannot decode video {self.path} from frame {self.position}: {reason}; pass a video file ffmpeg can "
            "decode (mp4, mov, webm, ...)"
        )

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._proc.stdout.close()

    def __enter__(self) -> "FrameStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe_filled(path: str | Path, filled: list[int], count: int) -> str | None:
    """One line on the frames that did not decode, by runs ("frames 30-33"); None when every frame did."""
    if not filled:
        return None
    runs: list[list[int]] = []
    for i in filled:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    where = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:8]) + (", ..." if len(runs) > 8 else "")
    return (
        f"{len(filled)} of the {count} frames of {path} could not be decoded (a damaged file?): frames {where} "
        "show the frame before them, so the video keeps its length and stays in sync with the audio"
    )
