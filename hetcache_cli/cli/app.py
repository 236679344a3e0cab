"""The `hetcache` command: registers the subcommands, nothing else.

One line per command in COMMANDS: (name, module, function). A command module defines the function
and may define EPILOG (examples for its --help). Command modules import nothing heavy at module
level (torch, diffusers, cv2 load inside the functions), so `--help` and bad input answer at once.
"""

from __future__ import annotations

import importlib
import sys

import typer

from hetcache_cli import __version__

COMMANDS = (
    ("edit", "hetcache_cli.cli.edit", "edit"),
    ("mask", "hetcache_cli.cli.mask", "mask"),
    ("run", "hetcache_cli.cli.run", "run"),
    ("template", "hetcache_cli.cli.template", "template"),
    ("bench", "hetcache_cli.cli.bench", "bench"),
    ("calibrate", "hetcache_cli.cli.calibrate", "calibrate"),
    ("eval", "hetcache_cli.cli.eval", "eval_cmd"),
    ("selftest", "hetcache_cli.cli.selftest", "selftest"),
    ("memory", "hetcache_cli.cli.memory", "memory"),
)

app = typer.Typer(
    name="hetcache",
    help="Masked video editing with Wan2.1-VACE, accelerated by HetCache. Exit codes: 0 ok, 1 failure, 2 bad input.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

for _name, _module, _function in COMMANDS:
    _mod = importlib.import_module(_module)
    app.command(_name, epilog=getattr(_mod, "EPILOG", None))(getattr(_mod, _function))


def _version(value: bool) -> None:
    if value:
        print(f"hetcache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Masked video editing with Wan2.1-VACE, accelerated by HetCache."""


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        # a rank of a torchrun launch leaves without the interpreter's teardown (pipeline/distributed.py)
        distributed = sys.modules.get("hetcache_cli.pipeline.distributed")
        if distributed is not None:
            distributed.leave_after_group(exc.code)
        raise
