"""One edit on the ranks of a torchrun launch (`hetcache edit --parallel ...`): the process group, rank 0's
driver and the other ranks' loop.

Rank 0 reads the inputs, plans the edit (pipeline/edit.py) and writes the output and its statistics; the
other ranks read and write nothing. Before each pipeline call of a window rank 0 broadcasts the call's
arguments (the window's model inputs, sizes, seed); every rank then runs the same pipeline call with
HetCache attached and its hooks set to the layout (cache/parallel.py), so the transformer's collectives
meet. After the call rank 0 gathers the other ranks' step records, measured cache bytes and traffic, and
merges them into the window's statistics: the records are those a single process would write (one per
step and guidance branch), the `parallel` section of the statistics holds the per-rank figures.

The process group is NCCL on CUDA and gloo on the CPU, with the same calls. Every collective has the
group's timeout (`--rank-timeout`); a rank that dies breaks the others' next collective (gloo and NCCL
report a closed peer at once, a silent one at the timeout), they leave with exit 1 and one line on rank 0,
and no output is written (the edit's outputs are atomic; a window's work folder is kept for --resume).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import timedelta

from hetcache_cli.cache.parallel import Comm, GuidanceParallel, Layout, check_layout
from hetcache_cli.pipeline import distributed
from hetcache_cli.errors import HetcacheError, InputError
from hetcache_cli.pipeline.broadcast import receive_arrays, send_arrays, split_arrays

logger = logging.getLogger(__name__)

__all__ = ["ParallelGroup", "Driver", "serve", "run_parallel_edit"]


class ParallelGroup:
    """The default process group of this launch (NCCL on CUDA, gloo otherwise), with a timeout."""

    inner = None  # (guidance group, Ulysses group) made beforehand; None: `groups` makes them on the whole launch
    base, group = 0, None  # broadcasts come from rank 0 over the whole launch (pipeline/broadcast.py)

    def __init__(self, info, device: str, timeout_s: float) -> None:
        self.info, self.device, self.timeout_s = info, device, timeout_s

    def __enter__(self) -> "ParallelGroup":
        import torch
        import torch.distributed as dist

        backend = "nccl" if self.device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(torch.device(self.device))
        try:
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=self.timeout_s))
        except Exception as exc:
            what = _first_line(exc)
            raise HetcacheError(f"rank {self.info.rank} could not start the process group ({what})") from exc
        distributed.group_started = True
        self.backend = backend
        return self

    def __exit__(self, *exc) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def broadcast(self, obj=None):
        import torch.distributed as dist

        box = [obj]
        self.call("receiving the edit from rank 0", dist.broadcast_object_list, box, src=0)
        return box[0]

    def gather(self, obj) -> list | None:
        import torch.distributed as dist

        out = [None] * self.info.world_size if self.info.rank == 0 else None
        self.call("gathering the statistics", dist.gather_object, obj, out, dst=0)
        return out

    def call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HetcacheError:
            raise
        except Exception as exc:
            raise lost(self.info.rank, what, exc) from exc


def lost(rank: int, what: str, exc: BaseException) -> HetcacheError:
    return HetcacheError(
        f"rank {rank} lost the other ranks while {what} ({_first_line(exc)}); no output written"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _hooks(pipe) -> list:
    from hetcache_cli.cache import get_hetcache

    hook = get_hetcache(pipe)
    return list(hook.group.hooks.values()) if hook.group is not None else [hook]


def groups(layout: Layout, timeout_s: float):
    """(guidance group, Ulysses group) of this rank, None = the whole launch; rank = branch * u + p.

    Every rank creates every group, in the same order (torch.distributed requires it)."""
    import torch.distributed as dist

    if not (layout.cfg and layout.ulysses > 1):
        return None, None
    u, rank, timeout = layout.ulysses, dist.get_rank(), timedelta(seconds=timeout_s)
    mine = {}
    for c in range(2):
        ranks = list(range(c * u, (c + 1) * u))
        group = dist.new_group(ranks, timeout=timeout)
        if rank in ranks:
            mine["ulysses"] = group
    for p in range(u):
        group = dist.new_group([p, u + p], timeout=timeout)
        if rank in (p, u + p):
            mine["cfg"] = group
    return mine["cfg"], mine["ulysses"]


def attach(pipe, layout: Layout, timeout_s: float, made=None):
    """Set the layout on every HetCache hook of `pipe` (attached already): (guidance exchange, Ulysses) or None.
    `made`: this rank's (guidance group, Ulysses group) when they exist already (`run --parallel`)."""
    from hetcache_cli.cache.ulysses import Ulysses

    cfg_group, ulysses_group = made if made is not None else groups(layout, timeout_s)
    cfg = GuidanceParallel(Comm(cfg_group)) if layout.cfg else None
    ulysses = Ulysses(Comm(ulysses_group)) if layout.ulysses > 1 else None
    for hook in _hooks(pipe):
        hook.parallel, hook.ulysses = cfg, ulysses
    return cfg, ulysses


def rank_report(stats, layouts) -> dict:
    """What a rank tells rank 0 after a pipeline call: its step records, measured cache bytes and traffic."""
    cfg, ulysses = layouts
    comms = [x.comm for x in (cfg, ulysses) if x is not None]
    sent: dict = {}
    for comm in comms:
        for key, nbytes in comm.traffic.sent.items():
            sent[key] = sent.get(key, 0) + nbytes
    main = comms[-1].traffic  # the Ulysses one counts the forwards and holds the caches when there is one
    traffic = type(main)(sent=sent, forwards=dict(main.forwards), layers=main.layers).to_dict()
    peak = dict(main.peak)
    for comm in comms:
        comm.traffic.reset()
    return {
        "records": list(stats.records) if stats is not None else [],
        "cache_bytes": stats.cache_memory_measured_bytes if stats is not None else 0,
        "text_kv_bytes": stats.text_kv_memory_measured_bytes if stats is not None else 0,
        **peak,
        "traffic": traffic,
        "branches": [cfg.mine] if cfg is not None else ["cond", "uncond"],
    }


class Driver:
    """Rank 0's side: attaches the layout, runs each pipeline call on every rank, merges the statistics."""

    def __init__(self, group: ParallelGroup, layout: Layout) -> None:
        self.group, self.layout = group, layout
        self.layouts = (None, None)
        self.windows: list[list[dict]] = []  # per window: every rank's report (records left out)

    def attach(self, pipe) -> None:
        self.layouts = attach(pipe, self.layout, self.group.timeout_s, self.group.inner)

    def call(self, pipe, stats, **kwargs):
        """The window's pipeline call on every rank; `stats` gets every branch's records, in a single run's order."""
        shared = {k: v for k, v in kwargs.items() if k not in ("generator", "callback_on_step_end")}
        shared["seed"] = kwargs["generator"].initial_seed()
        shared, arrays = split_arrays(shared)
        self.group.broadcast(shared)
        send_arrays(self.group, arrays)
        out = pipe(**kwargs)  # a failed collective raises parallel.RankLost (exit 1)
        stats.finalize()
        reports = self.group.gather(rank_report(stats, self.layouts))
        merge(stats, reports, self.layout.ulysses)
        self.windows.append([{k: v for k, v in r.items() if k != "records"} for r in reports])
        return out

    def finish(self) -> None:
        """Tell the other ranks that the edit is over (they leave their loop)."""
        self.group.broadcast(None)

    def report(self) -> dict:
        """The statistics' `parallel` section: layout, and per rank its peak cache bytes and traffic per window."""
        ranks = []
        for rank in range(self.group.info.world_size):
            per_window = [w[rank] for w in self.windows]
            ranks.append({
                "rank": rank,
                "branches": per_window[0]["branches"] if per_window else [],
                "cache_measured_bytes": max((w["cache_bytes"] for w in per_window), default=0),
                "kv_measured_bytes": max((w["kv_bytes"] for w in per_window), default=0),
                "residual_measured_bytes": max((w["residual_bytes"] for w in per_window), default=0),
                "text_kv_measured_bytes": max((w["text_kv_bytes"] for w in per_window), default=0),
                "traffic": [w["traffic"] for w in per_window],
            })  # fmt: skip
        return {"layout": str(self.layout), "world_size": self.group.info.world_size,
                "backend": self.group.backend, "ranks": ranks}  # fmt: skip


def merge(stats, reports: list[dict], ulysses: int = 1) -> None:
    """Every branch's step records into rank 0's `stats`, ordered as one process records them (step, then
    cond before uncond): the ranks of a Ulysses group record the same steps, so the group's first rank speaks
    for it. The measured cache bytes become the sums over all ranks (the launch's total)."""
    from hetcache_cli.cache.parallel import BRANCHES

    records = [r for report in reports[::ulysses] for r in report["records"]]
    order = {b: i for i, b in enumerate(BRANCHES)}
    records.sort(key=lambda r: (r.step, order.get(r.branch, len(order))))
    stats.records[:] = records
    stats.cache_memory_measured_bytes = sum(r["cache_bytes"] for r in reports)
    stats.text_kv_memory_measured_bytes = sum(r["text_kv_bytes"] for r in reports)


def serve(group: ParallelGroup, pipe, config, layout: Layout, tiled_vae: bool = False) -> int:
    """A rank other than 0: run every pipeline call rank 0 announces, until it says the edit is over."""
    import torch

    from hetcache_cli.cache import StepStats, apply_hetcache, remove_hetcache
    from hetcache_cli.cache.flops import ModelDims

    from hetcache_cli.pipeline.model import execution_device
    from hetcache_cli.pipeline.vae import (
        batched_encode, cpu_convolutions, plain_convolutions, restore_encode, vae_tiling,
    )  # fmt: skip

    stats = StepStats(dims=ModelDims.from_config(pipe.transformer.config, text_len=512))
    apply_hetcache(pipe, config, stats=stats)
    # the VAE encode as rank 0 runs it (pipeline/edit.py), so that every rank conditions on the same latents
    batched_encode(pipe)
    vae_tiling(pipe.vae, tiled_vae)  # every rank encodes as rank 0 does
    if execution_device(pipe).type == "cpu":
        cpu_convolutions(pipe.vae)
    layouts = attach(pipe, layout, group.timeout_s, group.inner)
    calls = 0
    try:
        while (kwargs := group.broadcast(None)) is not None:
            kwargs = receive_arrays(group, kwargs)
            seed = kwargs.pop("seed")
            kwargs["output_type"] = "latent"  # rank 0 decodes
            pipe(**kwargs, generator=torch.Generator().manual_seed(seed))
            stats.finalize()
            group.gather(rank_report(stats, layouts))
            calls += 1
    finally:
        restore_encode(pipe)
        plain_convolutions(pipe.vae)
        vae_tiling(pipe.vae, False)
        remove_hetcache(pipe)
    return calls


def run_parallel_edit(spec, layout: Layout, info, overwrite: bool, timeout_s: float, execute):
    """Rank 0: `execute(spec, driver)` runs the edit (cli/edit.py); other ranks serve its pipeline calls.

    Returns rank 0's edit result, None on the other ranks. Bad input found on rank 0 (or a layout that does not
    fit the model) ends every rank with exit 2; the message is printed by rank 0 only.
    """
    import torch

    from hetcache_cli.pipeline.distributed import ignore_sigterm, rank_device
    from hetcache_cli.pipeline.model import PipelinePool

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    spec = replace(spec, device=rank_device(spec.device, info.local_rank, cuda))
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    with ParallelGroup(info, spec.device, timeout_s) as group:
        if info.rank == 0:
            return _drive(group, spec, layout, overwrite, execute)
        message = group.broadcast(None)
        if message["error"] is not None:
            ignore_sigterm()  # leave with the agreed code even when torchrun stops the ranks of a failed launch
            raise Quiet(message["error"])
        pipe, _ = PipelinePool().get(spec.model, spec.device, spec.dtype, spec.offload)
        serve(group, pipe, message["cache"], layout, spec.vae_tiling)
        return None


class Quiet(HetcacheError):
    """A rank other than 0 leaving with rank 0's exit code; rank 0 alone prints the message."""

    def __init__(self, exit_code: int) -> None:
        super().__init__("")
        self.exit_code = exit_code


def prepare_checked(spec, layout: Layout, world_size: int, overwrite: bool):
    """The edit's checked inputs (pipeline/edit.py), or InputError when the layout does not fit the model."""
    from hetcache_cli.cache.model_check import model_folder, read_transformer_configs
    from hetcache_cli.pipeline.edit import prepare_edit

    prep = prepare_edit(spec, overwrite=overwrite)
    folder = model_folder(spec.model)
    configs = read_transformer_configs(folder) if folder is not None else {}
    heads = min((c["num_attention_heads"] for c in configs.values()), default=0)
    try:
        check_layout(layout, world_size, heads, spec.guidance_scale, spec.guidance_scale_2)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return prep


def _drive(group: ParallelGroup, spec, layout: Layout, overwrite: bool, execute):
    from hetcache_cli.pipeline.distributed import ignore_sigterm

    try:
        prep = prepare_checked(spec, layout, group.info.world_size, overwrite)
    except HetcacheError as exc:
        ignore_sigterm()  # before the others learn of it and exit: torchrun then stops the ranks still running
        group.broadcast({"error": exc.exit_code, "cache": None})
        raise
    group.broadcast({"error": None, "cache": prep.cache})
    driver = Driver(group, layout)
    result = execute(prep, driver)
    driver.finish()
    return result
