"""What every command shares: error mapping, logging, progress, output channels.

Results go to stdout, logs and progress to stderr. Exit 0 ok, 1 runtime failure, 2 bad input.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape

from hetcache_cli.errors import HetcacheError, Interrupted

stderr = Console(stderr=True, soft_wrap=True)
stdout = Console(soft_wrap=True)

EXIT_FAILURE, EXIT_INTERRUPTED = 1, 130  # bad input exits with InputError.exit_code (2)


def debug_enabled() -> bool:
    return os.environ.get("HETCACHE_DEBUG", "") not in ("", "0")


def setup_logging(quiet: bool = False) -> None:
    """Our log level; diffusers and transformers quieted now if imported, else when they load (see `quiet_libraries`)."""
    level = logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)
    logging.getLogger("hetcache_cli").setLevel(logging.ERROR if quiet else logging.INFO)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # read by diffusers / transformers when they are first imported: a bare --help never imports them
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "diffusers" in sys.modules or "transformers" in sys.modules:
        quiet_libraries()


def quiet_libraries() -> None:
    """diffusers' and transformers' logs to errors only, their loading progress bars off (imports both)."""
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog
    except ImportError:
        return
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()


def error_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text


def fail(exc: BaseException) -> typer.Exit:
    """Print one line for `exc` on stderr and return the matching typer.Exit."""
    if isinstance(exc, HetcacheError):
        stderr.print(f"[red]error:[/red] {escape(error_message(exc))}", highlight=False, markup=True)
        return typer.Exit(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        detail = str(exc) if isinstance(exc, Interrupted) and str(exc) else "nothing was written"
        stderr.print(f"[red]interrupted[/red]: {detail}", highlight=False)
        return typer.Exit(EXIT_INTERRUPTED)
    stderr.print(
        f"[red]error:[/red] {type(exc).__name__}: {escape(error_message(exc))} (set HETCACHE_DEBUG=1 for the traceback)",
        highlight=False,
    )
    return typer.Exit(EXIT_FAILURE)


def handle_errors(fn: Callable) -> Callable:
    """Map exceptions to one-line messages and exit codes; HETCACHE_DEBUG=1 re-raises."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            if debug_enabled():
                raise
            raise fail(exc) from None

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


class StepProgress:
    """A progress bar over denoising steps (of every window) on stderr, with an ETA (silent when quiet)."""

    def __init__(self, label: str, total: int, quiet: bool = False) -> None:
        from rich.progress import (
            BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
        )  # fmt: skip

        self._progress = None
        if not quiet:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=stderr,
                transient=False,
            )
            self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> "StepProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, done: int, total: int, label: str | None = None) -> None:
        if self._progress is not None:
            extra = {} if label is None else {"description": label}
            self._progress.update(self._task, completed=done, total=total, **extra)
