"""Atomic output files: write to a temporary sibling, then rename over the target.

A reader never sees a half-written output, and an interrupted run (exception, Ctrl-C)
leaves neither a partial file at the target nor a temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator

from hetcache_cli.errors import InputError

__all__ = ["atomic_dir", "atomic_path", "atomic_write_bytes", "atomic_write_text"]

# 0o666 is filtered by the process umask, like any file the user creates normally.
_FILE_MODE = 0o666


def _prepare_parent(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"output path {path} is a folder; give a file name inside it, e.g. {path / 'out'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"cannot create the output folder {path.parent} ({err.strerror or err}); choose a writable location"
        ) from None


def _reserve_temp(path: Path, suffix: str) -> Path:
    # The temp name keeps `suffix` last so that tools choosing a format by extension
    # (ffmpeg picks the muxer from it) treat it like the final file.
    for _ in range(16):
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        except FileExistsError:
            continue
        except OSError as err:
            raise InputError(
                f"cannot write in {path.parent} ({err.strerror or err}); choose a writable output location"
            ) from None
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not reserve a temporary file next to {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`.

    Args:
        path: final destination. Missing parent folders are created.
        suffix: extension of the temporary file (default: that of `path`).

    On any exception, KeyboardInterrupt included, the temporary file is removed and
    `path` is left untouched (an existing file there is kept as it was).
    """
    path = Path(path)
    _prepare_parent(path)
    tmp = _reserve_temp(path, path.suffix if suffix is None else suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; on success it takes the place of `path`.

    An existing folder at `path` is moved aside, replaced and only then deleted, so `path` never
    holds a half-written set of files. On any exception the temporary folder is removed and
    `path` is left as it was.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output folder {path} is a file; give a folder name or remove the file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        tmp.mkdir()
    except OSError as err:
        raise InputError(
            f"cannot write in {path.parent} ({err.strerror or err}); choose a writable output location"
        ) from None
    try:
        yield tmp
        if path.exists():
            old = tmp.with_name(tmp.name.removesuffix(".tmp") + ".old")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
