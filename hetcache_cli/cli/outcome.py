"""One edit's outcome in a `hetcache run` batch, as the summary records it (shared by the one-edit-per-rank
runner, cli/run.py, and the groups of ranks, cli/run_groups.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from hetcache_cli.cli.common import debug_enabled, error_message, stderr
from hetcache_cli.errors import HetcacheError

__all__ = ["Outcome", "failed_outcome"]


@dataclass
class Outcome:
    name: str
    status: str  # done | skipped | failed
    output: str | None = None
    seconds: float = 0.0
    flops_ratio: float | None = None
    error: str | None = None
    exit_code: int = 0
    frames: int | None = None
    device: str | None = None
    rank: int = 0

    def to_dict(self) -> dict:
        return dict(vars(self))


def failed_outcome(name: str, exc: Exception, start: float, show_errors: bool, prefix: str = "") -> Outcome:
    """A failed edit as the summary records it (exit code 2 for bad input, 1 otherwise); re-raised under debug."""
    if debug_enabled():
        raise exc
    code = exc.exit_code if isinstance(exc, HetcacheError) else 1
    message = error_message(exc) if isinstance(exc, HetcacheError) else f"{type(exc).__name__}: {error_message(exc)}"
    if show_errors:
        stderr.print(f"{prefix}[red]failed:[/red] {name}: {message}", highlight=False)
    return Outcome(name, "failed", seconds=time.perf_counter() - start, error=message, exit_code=code)
