"""`hetcache run --parallel LAYOUT`: a batch of edits on groups of ranks, each edit on one group.

The ranks of the launch are split into world_size / layout size groups of consecutive ranks. Each group's first
rank (its leader) claims edits from the batch (pipeline/distributed.py: the same claim order and counter as one
edit per rank) and runs every edit as `hetcache edit --parallel LAYOUT` does (pipeline/parallel_edit.py): it reads
the inputs, drives the pipeline calls and writes the output and statistics; the group's other ranks serve those
calls and write nothing.

Every subgroup is made once, up front, by every rank in the same order (torch.distributed.new_group requires it):
per group its whole set of ranks (the leader's broadcasts and gathers) and, for cfg,ulysses=U, its guidance and
Ulysses groups. The backend is the launch's: gloo on the CPU, gloo and NCCL ("cpu:gloo,cuda:nccl") where CUDA is
present, so the same code runs both.

Per edit the leader broadcasts whether it runs (a skipped or bad edit does not), the other ranks load the model
and report back, and then the pipeline calls follow. An edit that fails outside a pipeline call is `failed` and the
group takes its next edit; a failure inside one (a collective that timed out, a rank that died) leaves the ranks of
the group out of step, so it ends the rank (exit 1) and the others notice within --rank-timeout.
"""

from __future__ import annotations

from datetime import timedelta

from hetcache_cli.cache.parallel import Layout, RankLost
from hetcache_cli.pipeline.distributed import RankInfo
from hetcache_cli.pipeline.parallel_edit import Driver, _first_line, serve

__all__ = ["edit_groups", "make_groups", "SubGroup", "GroupDriver", "follow_edit"]


def edit_groups(layout: Layout, world_size: int) -> list[list[int]]:
    """The groups of consecutive ranks, one edit at a time on each; ValueError (one line, naming the fix) when
    the launch's ranks do not split into groups of the layout's size."""
    size = layout.world_size
    if world_size < size or world_size % size:
        below, above = world_size // size * size, (world_size // size + 1) * size
        fix = " or ".join(str(n) for n in (below, above) if n > 0)
        raise ValueError(
            f"run --parallel {layout} runs each edit on {size} ranks, and {world_size} ranks do not split into groups "
            f"of {size}: start it with torchrun --nproc-per-node {fix}"
        )
    return [list(range(base, base + size)) for base in range(0, world_size, size)]


def make_groups(layout: Layout, world_size: int, rank: int, timeout_s: float):
    """This rank's (group ranks, group, guidance group, Ulysses group), every group made on every rank in the same
    order. cfg alone: the guidance group is the group; ulysses=U alone: the Ulysses group is."""
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    mine: dict = {}
    u = layout.ulysses
    for ranks in edit_groups(layout, world_size):
        group = dist.new_group(ranks, timeout=timeout)
        inner = {}
        if layout.cfg and u > 1:
            base = ranks[0]
            for c in range(2):
                sub = [base + c * u + p for p in range(u)]
                made = dist.new_group(sub, timeout=timeout)
                if rank in sub:
                    inner["ulysses"] = made
            for p in range(u):
                sub = [base + p, base + u + p]
                made = dist.new_group(sub, timeout=timeout)
                if rank in sub:
                    inner["cfg"] = made
        elif layout.cfg:
            inner["cfg"] = group
        else:
            inner["ulysses"] = group
        if rank in ranks:
            mine = {"ranks": ranks, "group": group, "cfg": inner.get("cfg"), "ulysses": inner.get("ulysses")}
    return mine["ranks"], mine["group"], mine["cfg"], mine["ulysses"]


class SubGroup:
    """One group of a `run --parallel` launch, with the interface of parallel_edit.ParallelGroup: `info` holds
    the rank within the group, broadcasts come from and gathers go to the group's first rank."""

    def __init__(self, info: RankInfo, ranks: list[int], group, inner, timeout_s: float, backend: str) -> None:
        self.global_rank, self.ranks, self.group, self.inner = info.rank, ranks, group, inner
        self.base = ranks[0]
        self.info = RankInfo(info.rank - self.base, len(ranks), info.local_rank)
        self.timeout_s, self.backend = timeout_s, backend

    @property
    def leader(self) -> bool:
        return self.info.rank == 0

    def broadcast(self, obj=None):
        import torch.distributed as dist

        box = [obj]
        self.call("receiving the edit from the group's first rank", dist.broadcast_object_list, box, src=self.base,
                  group=self.group)  # fmt: skip
        return box[0]

    def gather(self, obj) -> list | None:
        import torch.distributed as dist

        out = [None] * len(self.ranks) if self.leader else None
        self.call("gathering the statistics", dist.gather_object, obj, out, dst=self.base, group=self.group)
        return out

    def call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RankLost:
            raise
        except Exception as exc:
            raise RankLost(
                f"rank {self.global_rank} lost the ranks of its group {self.ranks} while {what} ({_first_line(exc)})"
            ) from exc


class GroupDriver(Driver):
    """The leader's driver; `broken` while a pipeline call runs on the group, so that a failure there is told apart
    from one between calls (after which the group can go on to its next edit)."""

    broken = False

    def call(self, pipe, stats, **kwargs):
        self.broken = True
        out = super().call(pipe, stats, **kwargs)
        self.broken = False
        return out


def follow_edit(sub: SubGroup, layout: Layout, pool, device_for) -> None:
    """A rank other than the group's first, for one edit of a claimed unit: serve the edit's pipeline calls."""
    message = sub.broadcast(None)
    if not message["run"]:
        return
    spec = message["spec"]
    try:
        pipe, _ = pool.get(spec.model, device_for(spec.device), spec.dtype, spec.offload)
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {_first_line(exc)}"
    sub.gather(error)
    if error is None:
        serve(sub, pipe, message["cache"], layout, spec.vae_tiling)
    else:
        sub.broadcast(None)  # the leader's end of the edit
