"""`hetcache template`: print a commented edit spec to start from."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from hetcache_cli.cli.common import handle_errors, stderr
from hetcache_cli.errors import InputError


@handle_errors
def template(
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
) -> None:
    """Print a commented YAML edit spec with every key and its default.

    Example: hetcache template -o my_edit.yaml
    """
    from pathlib import Path

    from hetcache_cli.io.atomic import atomic_write_text
    from hetcache_cli.spec.template import render_template

    text = render_template()
    if output is None:
        typer.echo(text, nl=False)
        return
    path = Path(output)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; pass --overwrite or choose another -o")
    atomic_write_text(path, text)
    stderr.print(f"wrote {path}", highlight=False)
