"""`hetcache run`: every edit in one or more spec files, past failures, with a summary table.

Under torchrun or accelerate launch (WORLD_SIZE > 1) the edits are shared among the ranks
(`hetcache_cli.pipeline.distributed`); rank 0 prints the table and writes the summary.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from hetcache_cli.cli import options as opt
from hetcache_cli.cli.common import handle_errors, print_json, setup_logging, stdout
from hetcache_cli.cli.outcome import Outcome, failed_outcome
from hetcache_cli.cli.run_groups import RunParallel, backend, run_in_groups, run_layout
from hetcache_cli.errors import HetcacheError, InputError

EPILOG = """
Examples:

  hetcache run configs/example_edit.yaml

  hetcache run specs/*.yaml --overwrite --json > summary.json

  torchrun --nproc-per-node 8 -m hetcache_cli run specs/*.yaml

  torchrun --nproc-per-node 8 -m hetcache_cli run specs/*.yaml --parallel cfg

A spec file holds one edit, or a list under `edits:` with optional shared `defaults:`.
An edit whose output exists is skipped unless --overwrite; --resume continues interrupted
long (windowed) edits from their first unfinished window. Exit 0 when every edit
succeeded or was skipped, 2 when the only failures were bad input, 1 otherwise.
Under torchrun / accelerate launch each rank runs whole edits on its own device
(cuda:LOCAL_RANK), the longest first; rank 0 prints the table and writes --summary.
With --parallel LAYOUT each edit runs on a group of ranks as `hetcache edit --parallel`
does (N / layout size groups of consecutive ranks; N must be a multiple of the size).
"""

SUMMARY_VERSION = 1

Summary = Annotated[
    Optional[Path],
    typer.Option(
        "--summary",
        help="Write a JSON summary of the whole run here [default: ./hetcache_run_summary.json under "
        "torchrun/accelerate, none in a single process].",
    ),
]
RankTimeout = Annotated[
    Optional[float],
    typer.Option(
        "--rank-timeout",
        help="Under torchrun: seconds a rank may stay silent (crashed) or a collective may wait before every "
        "rank gives up with exit 1 [default: 300].",
    ),
]


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


def run_one(
    name: str,
    values: dict | Exception,
    pool,
    overwrite: bool,
    quiet: bool,
    *,
    device_for: Callable[[str], str] | None = None,
    show_errors: bool | None = None,
    prefix: str = "",
    resume: bool = False,
) -> Outcome:
    """One edit; `device_for` maps the spec's device to this process's, `show_errors` defaults to not quiet."""
    from hetcache_cli.cli.edit import execute
    from hetcache_cli.pipeline.edit import resolve_outputs
    from hetcache_cli.spec.load import build_spec

    start = time.perf_counter()
    try:
        if isinstance(values, Exception):
            raise values
        spec = build_spec(values, name)
        if device_for is not None:
            spec = dataclasses.replace(spec, device=device_for(spec.device))
        output, _ = resolve_outputs(spec)
        if output.exists() and not overwrite:
            return Outcome(name, "skipped", str(output), error="output exists (use --overwrite)")
        result = execute(spec, pool, overwrite, quiet, label=Path(name).name, resume=resume)
        ratio = result.stats["summary"]["flops_ratio"]
        frames, device = result.stats["settings"]["frames"], result.stats["model"]["device"]
        return Outcome(name, "done", str(result.output), time.perf_counter() - start, ratio, frames=frames, device=device)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return failed_outcome(name, exc, start, not quiet if show_errors is None else show_errors, prefix)


def exit_code(outcomes: list[Outcome]) -> int:
    failed = [o for o in outcomes if o.status == "failed"]
    if not failed:
        return 0
    return 2 if all(o.exit_code == 2 for o in failed) else 1


def summary_doc(outcomes: list[Outcome], wall_s: float, world_size: int) -> dict:
    """The whole run: counts, wall time, throughput, and every edit with the rank and device it ran on."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    frames = sum(o.frames or 0 for o in outcomes if o.status == "done")
    ranks = []
    for r in range(world_size):
        mine = [o for o in outcomes if o.rank == r and o.status != "skipped"]
        devices = sorted({o.device for o in mine if o.device})
        ranks.append({"rank": r, "devices": devices, "edits": len(mine), "busy_s": sum(o.seconds for o in mine)})
    return {
        "version": SUMMARY_VERSION,
        "world_size": world_size,
        **counts,
        "wall_s": wall_s,
        "edits_per_hour": counts["done"] * 3600.0 / wall_s if wall_s > 0 else 0.0,
        "frames_per_s": frames / wall_s if wall_s > 0 else 0.0,
        "exit_code": exit_code(outcomes),
        "ranks": ranks,
        "edits": [o.to_dict() for o in outcomes],
    }


def write_summary(path: Path, doc: dict) -> None:
    from hetcache_cli.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")


def print_table(outcomes: list[Outcome], show_rank: bool = False) -> None:
    from rich.table import Table

    table = Table(title="hetcache run")
    cols = ("edit", "status", "rank", "device") if show_rank else ("edit", "status")
    for col in (*cols, "output", "seconds", "FLOPs vs uncached", "error"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        ratio = "" if o.flops_ratio is None else f"{o.flops_ratio:.0%}"
        seconds = f"{o.seconds:.1f}" if o.status == "done" else ""
        where = (str(o.rank), o.device or "") if show_rank else ()
        table.add_row(o.name, o.status, *where, o.output or "", seconds, ratio, o.error or "")
    stdout.print(table)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    stdout.print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed", highlight=False)


@handle_errors
def run(
    specs: Annotated[list[Path], typer.Argument(help="Spec files (YAML), one edit or a list under `edits:` each.")],
    overwrite: opt.Overwrite = False,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
    summary: Summary = None,
    rank_timeout: RankTimeout = None,
    resume: opt.Resume = False,
    parallel: RunParallel = None,
) -> None:
    """Run every edit in the given spec files; failed edits do not stop the others."""
    start = time.perf_counter()
    if rank_timeout is not None and rank_timeout <= 0:
        raise InputError(f"--rank-timeout {rank_timeout:g} is not positive; give seconds, e.g. --rank-timeout 600")
    from hetcache_cli.pipeline.distributed import rank_info_from_env

    info = rank_info_from_env()
    layout = None
    if parallel is not None:
        # Every rank exits 2 and says why: torchrun stops the other ranks as soon as one exits, so a message
        # left to rank 0 alone can be cut off by a faster rank's exit.
        layout = run_layout(parallel, info)
    if info is not None:
        raise typer.Exit(
            run_distributed(info, specs, overwrite, json_out, quiet, summary, rank_timeout, start, resume, layout)
        )
    setup_logging(quiet or json_out)
    from hetcache_cli.pipeline.model import PipelinePool

    pool = PipelinePool()
    outcomes = [
        run_one(name, values, pool, overwrite, quiet or json_out, resume=resume) for name, values in collect_edits(specs)
    ]
    if summary is not None:
        write_summary(summary, summary_doc(outcomes, time.perf_counter() - start, 1))
    if json_out:
        print_json({"edits": [o.to_dict() for o in outcomes], "exit_code": exit_code(outcomes)})
    elif not quiet:
        print_table(outcomes)
    raise typer.Exit(exit_code(outcomes))


def run_distributed(info, specs, overwrite, json_out, quiet, summary, rank_timeout, start, resume=False,
                    layout=None) -> int:  # fmt: skip
    """This rank's share of the edits (with `layout`: its group's, cli/run_groups.py); every rank returns the same
    exit code, agreed from all outcomes."""
    import torch

    from hetcache_cli.pipeline.distributed import (
        DistributedConfig, RankGroup, claim_order, estimate, ignore_sigterm, rank_device,
    )  # fmt: skip
    from hetcache_cli.pipeline.model import PipelinePool

    lead = info.rank == 0
    silent = quiet or json_out
    setup_logging(silent or not lead)
    config = DistributedConfig() if rank_timeout is None else DistributedConfig(timeout_s=rank_timeout)
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0

    def device_for(device: str) -> str:
        return rank_device(device, info.local_rank, cuda_count)

    with RankGroup(info, config, "gloo" if layout is None else backend(), watch=layout is not None) as group:
        # Rank 0 reads the specs so that every rank plans from the same list.
        items = group.broadcast(collect_edits(specs) if lead else None)
        share = {i: estimate(*items[i], overwrite) for i in range(info.rank, len(items), info.world_size)}
        plan = {i: est for part in group.all_gather(share) for i, est in part.items()}
        units = claim_order([plan[i][0] for i in range(len(items))], [plan[i][1] for i in range(len(items))])

        pool = PipelinePool()
        ran: list[tuple[int, dict]] = []
        if layout is not None:
            ran = run_in_groups(group, info, layout, items, units, pool, overwrite, silent, resume, device_for)
        for unit in group.claims(len(units)) if layout is None else ():
            for i in units[unit]:
                outcome = run_one(
                    *items[i], pool, overwrite, silent or not lead,
                    device_for=device_for, show_errors=not silent, prefix=f"rank {info.rank}: ", resume=resume,
                )  # fmt: skip
                outcome.rank = info.rank
                ran.append((i, outcome.to_dict()))
        group.wait_for_all()
        gathered = group.all_gather(ran)
        group.stop_watching()
        by_index = [(i, d) for part in gathered for i, d in part]
        if sorted(i for i, _ in by_index) != list(range(len(items))):
            raise HetcacheError("ranks did not run each edit exactly once; report this with the command line")
        outcomes = [Outcome(**d) for _, d in sorted(by_index, key=lambda pair: pair[0])]
        code = exit_code(outcomes)
        ignore_sigterm()
        try:
            if lead:
                report(outcomes, info.world_size, time.perf_counter() - start, summary, json_out, quiet, layout)
        finally:
            # torchrun stops every rank as soon as one exits non-zero: leave only once rank 0 has reported.
            group.barrier()
    return code


def report(outcomes: list[Outcome], world_size: int, wall_s: float, summary: Path | None, json_out: bool, quiet: bool,
           layout=None):  # fmt: skip
    from hetcache_cli.pipeline.distributed import DEFAULT_SUMMARY

    doc = summary_doc(outcomes, wall_s, world_size)
    if layout is not None:  # each edit ran on the group led by its `rank`
        from hetcache_cli.pipeline.group_run import edit_groups

        doc["parallel"] = {"layout": str(layout), "groups": edit_groups(layout, world_size)}
    path = summary if summary is not None else Path(DEFAULT_SUMMARY)
    write_summary(path, doc)
    if json_out:
        print_json({**doc, "summary": str(path)})
    elif not quiet:
        print_table(outcomes, show_rank=True)
        stdout.print(
            f"{world_size} ranks, {wall_s:.1f} s: {doc['edits_per_hour']:.1f} edits/hour, "
            f"{doc['frames_per_s']:.2f} frames/s; summary: {path}",
            highlight=False,
        )
