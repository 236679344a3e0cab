"""The `hetcache` command: registers the subcommands, nothing else."""

from __future__ import annotations

import typer

from hetcache_cli import __version__
from hetcache_cli.cli.bench import EPILOG as BENCH_EPILOG
from hetcache_cli.cli.bench import bench
from hetcache_cli.cli.edit import EPILOG as EDIT_EPILOG
from hetcache_cli.cli.edit import edit
from hetcache_cli.cli.eval import EPILOG as EVAL_EPILOG
from hetcache_cli.cli.eval import eval_cmd
from hetcache_cli.cli.mask import EPILOG as MASK_EPILOG
from hetcache_cli.cli.mask import mask
from hetcache_cli.cli.memory import EPILOG as MEMORY_EPILOG
from hetcache_cli.cli.memory import memory
from hetcache_cli.cli.run import EPILOG as RUN_EPILOG
from hetcache_cli.cli.selftest import EPILOG as SELFTEST_EPILOG
from hetcache_cli.cli.selftest import selftest
from hetcache_cli.cli.run import run
from hetcache_cli.cli.template import template

app = typer.Typer(
    name="hetcache",
    help="Masked video editing with Wan2.1-VACE, accelerated by HetCache. Exit codes: 0 ok, 1 failure, 2 bad input.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command(epilog=EDIT_EPILOG)(edit)
app.command(epilog=MASK_EPILOG)(mask)
app.command(epilog=RUN_EPILOG)(run)
app.command()(template)
app.command(epilog=BENCH_EPILOG)(bench)
app.command("eval", epilog=EVAL_EPILOG)(eval_cmd)
app.command(epilog=SELFTEST_EPILOG)(selftest)
app.command(epilog=MEMORY_EPILOG)(memory)


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
    app()
