"""`hetcache run`: every edit in one or more spec files, past failures, with a summary table."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from hetcache_cli.cli import options as opt
from hetcache_cli.cli.common import debug_enabled, error_message, handle_errors, print_json, setup_logging, stderr, stdout
from hetcache_cli.errors import HetcacheError

EPILOG = """
Examples:

  hetcache run configs/example_edit.yaml

  hetcache run specs/*.yaml --overwrite --json > summary.json

A spec file holds one edit, or a list under `edits:` with optional shared `defaults:`.
An edit whose output exists is skipped unless --overwrite. Exit 0 when every edit
succeeded or was skipped, 2 when the only failures were bad input, 1 otherwise.
"""


@dataclass
class Outcome:
    name: str
    status: str  # done | skipped | failed
    output: str | None = None
    seconds: float = 0.0
    flops_ratio: float | None = None
    error: str | None = None
    exit_code: int = 0

    def to_dict(self) -> dict:
        return dict(vars(self))


def collect_edits(spec_files: list[Path]) -> list[tuple[str, dict | Exception]]:
    """(name, values) per edit, or (name, error) for a file that cannot be read."""
    from hetcache_cli.spec.load import load_spec_file

    items: list[tuple[str, dict | Exception]] = []
    for path in spec_files:
        try:
            edits = load_spec_file(path)
        except HetcacheError as exc:
            items.append((str(path), exc))
            continue
        for i, values in enumerate(edits):
            items.append((str(path) if len(edits) == 1 else f"{path}[{i}]", values))
    return items


def run_one(name: str, values: dict | Exception, pool, overwrite: bool, quiet: bool) -> Outcome:
    from hetcache_cli.cli.edit import execute
    from hetcache_cli.pipeline.edit import resolve_outputs
    from hetcache_cli.spec.load import build_spec

    start = time.perf_counter()
    try:
        if isinstance(values, Exception):
            raise values
        spec = build_spec(values, name)
        output, _ = resolve_outputs(spec)
        if output.exists() and not overwrite:
            return Outcome(name, "skipped", str(output), error="output exists (use --overwrite)")
        result = execute(spec, pool, overwrite, quiet, label=Path(name).name)
        ratio = result.stats["summary"]["flops_ratio"]
        return Outcome(name, "done", str(result.output), time.perf_counter() - start, ratio)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if debug_enabled():
            raise
        code = exc.exit_code if isinstance(exc, HetcacheError) else 1
        message = error_message(exc) if isinstance(exc, HetcacheError) else f"{type(exc).__name__}: {error_message(exc)}"
        if not quiet:
            stderr.print(f"[red]failed:[/red] {name}: {message}", highlight=False)
        return Outcome(name, "failed", seconds=time.perf_counter() - start, error=message, exit_code=code)


def exit_code(outcomes: list[Outcome]) -> int:
    failed = [o for o in outcomes if o.status == "failed"]
    if not failed:
        return 0
    return 2 if all(o.exit_code == 2 for o in failed) else 1


def print_table(outcomes: list[Outcome]) -> None:
    from rich.table import Table

    table = Table(title="hetcache run")
    for col in ("edit", "status", "output", "seconds", "FLOPs vs uncached", "error"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        ratio = "" if o.flops_ratio is None else f"{o.flops_ratio:.0%}"
        seconds = f"{o.seconds:.1f}" if o.status == "done" else ""
        table.add_row(o.name, o.status, o.output or "", seconds, ratio, o.error or "")
    stdout.print(table)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    stdout.print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed", highlight=False)


@handle_errors
def run(
    specs: Annotated[list[Path], typer.Argument(help="Spec files (YAML), one edit or a list under `edits:` each.")],
    overwrite: opt.Overwrite = False,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
) -> None:
    """Run every edit in the given spec files; failed edits do not stop the others."""
    setup_logging(quiet or json_out)
    from hetcache_cli.pipeline.model import PipelinePool

    pool = PipelinePool()
    outcomes = [run_one(name, values, pool, overwrite, quiet or json_out) for name, values in collect_edits(specs)]
    if json_out:
        print_json({"edits": [o.to_dict() for o in outcomes], "exit_code": exit_code(outcomes)})
    elif not quiet:
        print_table(outcomes)
    raise typer.Exit(exit_code(outcomes))
