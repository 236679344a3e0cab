"""Checks of the files a report writes, made before anything is read or computed (no numpy, no torch)."""

from __future__ import annotations

from pathlib import Path

from hetcache_cli.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


def check_output_file(path: str | Path, suffixes: tuple[str, ...], flag: str, inputs: tuple = ()) -> Path:
    """`path` as a Path when a report may be written there: an allowed suffix, an existing folder, not an input."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{flag} {path} must end in {' or '.join(suffixes)}; change the file name")
    if path.is_dir():
        example = path / f"out{suffixes[0]}"
        raise InputError(f"{flag} {path} is a folder; give a file name inside it, e.g. {example}")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(
            f"folder {folder} for {flag} {path.name} does not exist; create it (mkdir -p {folder}) or choose another path"
        )
    for other in inputs:
        if other is not None and Path(other).resolve() == path.resolve():
            raise InputError(f"{flag} {path} is one of the inputs; choose another file name")
    return path


def check_plot_possible(path: str | Path, flag: str, inputs: tuple = ()) -> Path:
    """The PNG path of a cache plot, once matplotlib is known to be installed."""
    from hetcache_cli.report.cache_plot import missing_matplotlib

    problem = missing_matplotlib()
    if problem is not None:
        raise InputError(problem)
    return check_output_file(path, (".png",), flag, inputs)
