"""`hetcache edit --parallel ...`: one edit on the ranks of a torchrun launch (pipeline/parallel_edit.py)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from hetcache_cli.errors import InputError

Parallel = Annotated[
    Optional[str],
    typer.Option(
        "--parallel",
        metavar="LAYOUT",
        help="Under torchrun: one edit on several ranks. cfg = one guidance branch per rank (2 ranks); "
        "ulysses=U = each branch's tokens shared by U ranks (U divides the heads); cfg,ulysses=U on 2U ranks. "
        "Rank 0 reads the inputs and writes the output.",
    ),
]
RankTimeout = Annotated[
    Optional[float],
    typer.Option(
        "--rank-timeout",
        help="With --parallel: seconds a collective may wait for a silent rank before every rank gives up "
        "with exit 1 [default: 300].",
    ),
]


def parallel_layout(text: str, preview: bool, dry_run: bool, timeout: float | None):
    """The `--parallel` layout and this process's rank; InputError (exit 2) for what cannot run."""
    from hetcache_cli.cache.parallel import parse_layout
    from hetcache_cli.pipeline.distributed import rank_info_from_env

    try:
        layout = parse_layout(text)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if preview or dry_run:
        raise InputError(f"--parallel runs the whole edit; drop {'--preview' if preview else '--dry-run'}")
    if timeout is not None and timeout <= 0:
        raise InputError(f"--rank-timeout {timeout:g}: give a positive number of seconds")
    info = rank_info_from_env()
    if info is None:
        raise InputError(
            f"--parallel {layout} needs {layout.world_size} processes: start the edit with "
            f"torchrun --nproc-per-node {layout.world_size} -m hetcache_cli edit ..."
        )
    return layout, info


def run_parallel(spec, layout, info, overwrite: bool, timeout: float | None, on_rank0):
    """Rank 0: `on_rank0(prep, driver)`, the edit's result; other ranks: None (they print and write nothing).
    A rank other than 0 that stops because rank 0 found bad input exits with rank 0's code, silently."""
    from hetcache_cli.cli.common import setup_logging
    from hetcache_cli.pipeline.parallel_edit import Quiet, run_parallel_edit

    if info.rank != 0:
        setup_logging(True)
    try:
        return run_parallel_edit(spec, layout, info, overwrite, timeout or 300.0, on_rank0)
    except Quiet as exc:
        raise typer.Exit(exc.exit_code) from None
