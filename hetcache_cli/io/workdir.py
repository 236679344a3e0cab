"""Finished windows of an edit, kept beside the output until it is written, so that an interrupted edit can
resume.

The folder is hidden (`.<output name>.hetcache/`), holds the settings it was made for (`settings.json`)
and per finished window the output frames it finished, encoded (`segment_NNNN.mp4`: the frames no later
window touches), and its record (`window_NNNN.json`, written last: a window counts as finished only when
both are there). The last finished window also keeps what differs from the source in its frames
(`window_NNNN.npy`, uint8, lossless): the next window continues from it. Every file is written
atomically. The segments are joined into the output without re-encoding, then the folder is removed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from hetcache_cli.io.atomic import atomic_path, atomic_write_text

__all__ = ["WorkDir", "work_dir_for"]

logger = logging.getLogger(__name__)

_SETTINGS = "settings.json"


def work_dir_for(output: Path) -> Path:
    return output.parent / f".{output.name}.hetcache"


def _diff_keys(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class WorkDir:
    """The hidden work folder of one output.

    Args:
        output: the edit's output video.
        settings: everything the result depends on (JSON-serialisable); a folder made for other
            settings is discarded, with a message naming what changed.
        resume: reuse the finished windows of an earlier, interrupted run with the same settings;
            without it an earlier folder is discarded (its windows are counted in the message).
        windows: how many windows the edit has.
    """

    def __init__(self, output: Path, settings: dict, resume: bool, windows: int) -> None:
        self.path = work_dir_for(Path(output))
        self.settings = json.loads(json.dumps(settings, default=str))
        self.messages: list[str] = []
        self.finished = 0
        old = self._read_settings()
        if old is not None:
            count = self.count_finished(windows)
            if not resume:
                if count:
                    self.messages.append(
                        f"discarding {count} finished window(s) of an interrupted edit of {output} "
                        "(rerun with --resume to continue one)"
                    )
            elif old != self.settings:
                changed = ", ".join(_diff_keys(old, self.settings)) or "format"
                self.messages.append(
                    f"--resume: the interrupted edit of {output} used other settings (changed: {changed}); "
                    "starting over"
                )
            else:
                self.finished = count
                self.messages.append(f"--resume: reusing {count} of {windows} finished windows from {self.path}")
        elif resume:
            self.messages.append(f"--resume: no interrupted edit of {output} found; starting from the first window")
        if not self.finished:
            self.remove()
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path / _SETTINGS, json.dumps(self.settings, indent=1) + "\n")
        for msg in self.messages:
            logger.warning(msg)

    def _read_settings(self) -> dict | None:
        try:
            return json.loads((self.path / _SETTINGS).read_text())
        except (OSError, ValueError):
            return None if not self.path.exists() else {}

    def _names(self, index: int) -> tuple[Path, Path]:
        return self.path / f"window_{index:04d}.npy", self.path / f"window_{index:04d}.json"

    def segment(self, index: int) -> Path:
        """Where window `index`'s finished frames are encoded (the caller writes it atomically)."""
        return self.path / f"segment_{index:04d}.mp4"

    def count_finished(self, windows: int) -> int:
        """Finished windows form a prefix: each one was conditioned on the one before."""
        count = 0
        for index in range(windows):
            if not (self._names(index)[1].is_file() and self.segment(index).is_file()):
                break
            count += 1
        if count and not self._names(count - 1)[0].is_file():
            count -= 1  # the next window needs the last one's frames
        return count

    def save(self, index: int, frames: np.ndarray, record: dict) -> None:
        """Window `index`'s patch frames and record, after its segment; the window before no longer needs its
        patch."""
        frames_path, record_path = self._names(index)
        with atomic_path(frames_path, ".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(frames), allow_pickle=False)
        atomic_write_text(record_path, json.dumps(record) + "\n")
        if index:
            self._names(index - 1)[0].unlink(missing_ok=True)

    def record(self, index: int) -> dict:
        return json.loads(self._names(index)[1].read_text())

    def load(self, index: int) -> tuple[np.ndarray, dict]:
        frames_path, record_path = self._names(index)
        return np.load(frames_path, allow_pickle=False), json.loads(record_path.read_text())

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
