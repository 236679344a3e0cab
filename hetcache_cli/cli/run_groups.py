"""`hetcache run --parallel LAYOUT` under torchrun: each edit of the batch on a group of ranks
(pipeline/group_run.py); the claims, outcomes and summary are those of `hetcache run` (cli/run.py)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from hetcache_cli.errors import HetcacheError, InputError

RunParallel = Annotated[
    Optional[str],
    typer.Option(
        "--parallel",
        metavar="LAYOUT",
        help="Under torchrun: each edit on a group of ranks, laid out as in `hetcache edit --parallel` (cfg: 2 "
        "ranks, ulysses=U: U, cfg,ulysses=U: 2U); the launch's ranks form nproc / size groups of consecutive ranks, "
        "each group's first rank reads the inputs and writes the output.",
    ),
]


def run_layout(text: str, info):
    """The layout of `run --parallel`; InputError (exit 2, one line naming the fix) when it cannot run here."""
    from hetcache_cli.cache.parallel import parse_layout
    from hetcache_cli.pipeline.group_run import edit_groups

    try:
        layout = parse_layout(text)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if info is None:
        raise InputError(
            f"run --parallel {layout} needs torchrun: start it with torchrun --nproc-per-node N -m hetcache_cli run "
            f"... where N is a multiple of {layout.world_size}"
        )
    try:
        edit_groups(layout, info.world_size)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return layout


def backend() -> str:
    import torch

    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def run_in_groups(group, info, layout, items, units, pool, overwrite, silent, resume, device_for) -> list[tuple]:
    """This rank's part of the batch: the (index, outcome dict) pairs of the edits its group ran when it leads the
    group, none otherwise."""
    from hetcache_cli.pipeline.group_run import SubGroup, follow_edit, make_groups

    timeout = group.config.timeout_s
    ranks, made, cfg, ulysses = make_groups(layout, info.world_size, info.rank, timeout)
    sub = SubGroup(info, ranks, made, (cfg, ulysses), timeout, group.backend)
    ran: list[tuple[int, dict]] = []
    if not sub.leader:
        while (unit := sub.broadcast(None)) is not None:
            for _ in units[unit]:
                follow_edit(sub, layout, pool, device_for)
        return ran
    for unit in group.claims(len(units)):
        sub.broadcast(unit)
        for i in units[unit]:
            outcome = lead_edit(*items[i], sub, layout, pool, overwrite, silent or info.rank != 0, not silent,
                                f"rank {info.rank}: ", resume, device_for)  # fmt: skip
            outcome.rank = info.rank
            ran.append((i, outcome.to_dict()))
    sub.broadcast(None)
    return ran


def lead_edit(name, values, sub, layout, pool, overwrite, quiet, show_errors, prefix, resume, device_for):
    """One edit on the group, from its first rank; the outcome as `hetcache run` records it."""
    from hetcache_cli.cache.parallel import RankLost
    from hetcache_cli.cli.edit import execute
    from hetcache_cli.cli.outcome import Outcome, failed_outcome
    from hetcache_cli.pipeline.edit import resolve_outputs
    from hetcache_cli.pipeline.group_run import GroupDriver
    from hetcache_cli.pipeline.parallel_edit import _first_line, prepare_checked
    from hetcache_cli.spec.load import build_spec

    start = time.perf_counter()
    spec = prep = None
    try:  # decide on this rank alone, then tell the group whether the edit runs
        if isinstance(values, Exception):
            raise values
        spec = build_spec(values, name)
        local = dataclasses.replace(spec, device=device_for(spec.device))
        output, _ = resolve_outputs(local)
        if output.exists() and not overwrite:
            sub.broadcast({"run": False})
            return Outcome(name, "skipped", str(output), error="output exists (use --overwrite)")
        prep = prepare_checked(local, layout, sub.info.world_size, overwrite)
    except Exception as exc:
        sub.broadcast({"run": False})
        if isinstance(exc, RankLost):
            raise
        return failed_outcome(name, exc, start, show_errors, prefix)
    sub.broadcast({"run": True, "spec": spec, "cache": prep.cache})
    errors = [f"rank {sub.base + r}: {e}" for r, e in enumerate(sub.gather(None)) if e]
    driver = GroupDriver(sub, layout)
    try:
        if errors:
            raise HetcacheError("; ".join(errors))
        label = Path(name).name
        result = execute(local, pool, overwrite, quiet, label=label, resume=resume, prep=prep, parallel=driver)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if isinstance(exc, RankLost):
            raise
        if driver.broken:  # the group's ranks are inside a pipeline call this rank left: they cannot go on
            raise HetcacheError(
                f"rank {sub.global_rank}: {name} failed inside a pipeline call of its group {sub.ranks} "
                f"({type(exc).__name__}: {_first_line(exc)}); the group cannot go on"
            ) from exc
        driver.finish()
        return failed_outcome(name, exc, start, show_errors, prefix)
    driver.finish()
    ratio = result.stats["summary"]["flops_ratio"]
    frames, device = result.stats["settings"]["frames"], result.stats["model"]["device"]
    seconds = time.perf_counter() - start
    return Outcome(name, "done", str(result.output), seconds, ratio, frames=frames, device=device)
