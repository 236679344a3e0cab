"""Sharing a batch of edits among the processes of `torchrun` or `accelerate launch`.

One edit runs on one rank. Every rank derives the same claim order from the same plan
(most expensive edit first, the cost estimated from each edit's plan), and a
rank takes its next edit by bumping an atomic counter in the process group's store, so a
rank that finishes early takes the next edit instead of idling while another holds a
queue (longest-processing-time-first list scheduling, decided at run time).

The process group uses gloo and nothing else: only small Python objects (the plan, the
cost estimates, the outcomes) and one counter cross ranks, never a tensor, so there is no
need for NCCL, and the same code runs on CPU-only nodes and under the CPU tests.

A rank that dies does not hang the others. Every collective (group start, plan exchange,
final gather) has the timeout `DistributedConfig.timeout_s`. A rank out of work waits for
the busy ones by watching their heartbeats in the store rather than by a clock, so an edit
may take longer than the timeout, while a rank whose heartbeat stops for `timeout_s` fails
the run on every live rank (exit 1). Finished outputs are complete files (atomic writes),
so running the same command again resumes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Mapping, Sequence

from hetcache_cli.errors import HetcacheError, InputError

logger = logging.getLogger(__name__)

group_started = False  # this process started a torch.distributed process group (see `leave_after_group`)

# Written by rank 0 in the current directory unless --summary says otherwise.
DEFAULT_SUMMARY = "hetcache_run_summary.json"


@dataclass
class DistributedConfig:
    r"""
    How ranks of one `hetcache run` cooperate.

    Args:
        timeout_s (`float`, defaults to `300.0`): Longest wait in a collective (group start, plan
            exchange, final gather), and longest silence of a rank's heartbeat, before every live
            rank gives up with exit 1. Edits themselves may run longer.
        heartbeat_s (`float`, defaults to `5.0`): How often each rank tells the store it is alive.
    """

    timeout_s: float = 300.0
    heartbeat_s: float = 5.0


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int


def rank_info_from_env(environ: Mapping[str, str] = os.environ) -> RankInfo | None:
    """This process's place in a torchrun/accelerate launch; None when it runs alone (no WORLD_SIZE, or 1)."""
    try:
        world = int(environ.get("WORLD_SIZE") or 1)
        if world <= 1:
            return None
        rank = int(environ["RANK"])
        local = int(environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        raise InputError(
            f"WORLD_SIZE={environ.get('WORLD_SIZE')!r} RANK={environ.get('RANK')!r} do not describe a rank; "
            "start several processes with torchrun or accelerate launch, or unset WORLD_SIZE"
        ) from None
    return RankInfo(rank, world, local)


def rank_device(device: str, local_rank: int, cuda_count: int) -> str:
    """The device an edit runs on in this rank: `auto`/`cuda` -> cuda:LOCAL_RANK (modulo the GPUs here).

    `cpu` and an explicit `cuda:N` are kept; `auto` without a GPU is the CPU; `cuda` without
    one is kept so that loading the model reports it.
    """
    if device == "cpu" or device.startswith("cuda:"):
        return device
    if cuda_count == 0:
        return "cpu" if device == "auto" else device
    return f"cuda:{local_rank % cuda_count}"


def estimate(name: str, values: dict | Exception, overwrite: bool) -> tuple[float, str | None]:
    """(cost, output key) of one edit for planning, cheap: the edit's own plan (pipeline/plan.py), which decodes
    no frame of the source.

    cost = model frames x model pixels x steps x guidance branches over the windows the edit will run (the
    transformer's work grows at least that fast; overlaps included, each window at its crop's working size);
    0 for an edit that will not run (bad spec, unreadable video or mask, output present without --overwrite).
    The key is the resolved output path, None when it cannot be resolved.
    """
    from hetcache_cli.pipeline.plan import build_plan
    from hetcache_cli.spec.load import build_spec
    from hetcache_cli.spec.paths import resolve_outputs

    if isinstance(values, Exception):
        return 0.0, None
    try:
        spec = build_spec(values, name)
        output, _ = resolve_outputs(spec)
    except HetcacheError:
        return 0.0, None
    key = str(output.resolve())
    if output.exists() and not overwrite:
        return 0.0, key
    try:
        plan, _, _ = build_plan(spec, overwrite=True)
    except HetcacheError:
        return 0.0, key
    return plan.model_cost(), key


def claim_order(costs: Sequence[float], keys: Sequence[str | None] | None = None) -> list[list[int]]:
    """Claim units of edit indices, the most expensive first (ties in spec order).

    Edits with the same output key form one unit, run in spec order on one rank, so they
    behave as in a single process (the later one finds the output and is skipped) and two
    ranks never write one file.
    """
    keys = list(keys) if keys is not None else [None] * len(costs)
    if len(keys) != len(costs):
        raise ValueError(f"{len(costs)} costs but {len(keys)} keys")
    units: list[list[int]] = []
    by_key: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key is None:
            units.append([i])
        elif key in by_key:
            by_key[key].append(i)
        else:
            by_key[key] = [i]
            units.append(by_key[key])
    return sorted(units, key=lambda unit: (-sum(costs[i] for i in unit), unit[0]))


def wait_for_ranks(store, prefix: str, rank: int, world_size: int, timeout_s: float, poll_s: float = 0.5) -> None:
    """Mark this rank finished and return when all are; raise when a rank's heartbeat is silent for timeout_s.

    Heartbeats are counters bumped by each rank (`<prefix>/beat/<rank>`): comparing values
    seen by this rank's own clock needs no synchronised clocks across nodes.
    """
    store.add(f"{prefix}/finished", 1)
    seen: dict[int, int] = {}
    since: dict[int, float] = {}
    while store.add(f"{prefix}/finished", 0) < world_size:
        now = time.monotonic()
        for r in range(world_size):
            if r == rank:
                continue
            beat = store.add(f"{prefix}/beat/{r}", 0)
            if seen.get(r) != beat:
                seen[r], since[r] = beat, now
            elif now - since[r] > timeout_s:
                raise HetcacheError(
                    f"rank {r} has not answered for {timeout_s:g} s (crashed or killed?); finished outputs "
                    "are kept: run the same command again to resume (or raise --rank-timeout)"
                )
        time.sleep(poll_s)


def leave_after_group(code) -> None:
    """End a process that started a process group with exit `code`, skipping the interpreter's teardown.

    Called by `main` (cli/app.py) once the command has returned: outputs are written, messages printed and the
    group destroyed. The teardown is skipped because torch's distributed backends keep C++ threads and work
    objects whose destructors can run while the interpreter finalises: about one launch in twenty of
    `edit --parallel ulysses=2` aborted there (SIGABRT, "terminate called without an active exception") after a
    complete edit, which torchrun reports as a failed launch. Nothing of ours needs the teardown (no atexit
    handler; files are closed and renamed before the command returns), so flush the streams and leave.
    """
    if not group_started:
        return
    for flush in [h.flush for h in logging.getLogger().handlers] + [sys.stdout.flush, sys.stderr.flush]:
        try:
            flush()
        except (OSError, ValueError):  # a closed pipe or file: nothing more can be said on it
            pass
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message") prints the message and exits 1
        print(code, file=sys.stderr, flush=True)
        code = 1
    os._exit(code)


def ignore_sigterm() -> None:
    """Let this rank finish with its own exit code once all ranks agreed on it.

    torchrun terminates the other ranks as soon as one exits non-zero; a rank past the
    final gather only has to leave, so it ignores that SIGTERM and exits with the agreed
    code instead of -15 (torchrun still kills it after its grace period if it hangs).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _Heartbeat(threading.Thread):
    """Bumps this rank's counter; with `watch` (rank, world size, timeout) it also ends this process (exit 1, one
    line) when another rank's counter is silent for the timeout or the store goes away, so that a rank busy in an
    edit does not outlive a dead one (`run --parallel`: a group's collectives do not notice another group's rank)."""

    def __init__(self, store, key: str, period_s: float, watch: tuple | None = None) -> None:
        super().__init__(name="hetcache-heartbeat", daemon=True)
        self._store, self._key, self._period_s, self._watch = store, key, period_s, watch
        self._stop_event = threading.Event()
        self.watching = watch is not None
        self._seen: dict[int, tuple[int, float]] = {}

    def run(self) -> None:
        while True:
            try:
                self._store.add(self._key, 1)
                problem = self._silent() if self.watching else None
            except Exception as exc:  # the store went away: the main thread's next store call reports it
                logger.debug("heartbeat stopped: %s", exc)
                problem = f"lost the other ranks ({type(exc).__name__}: the store went away)"
                if not self.watching:
                    return
            if problem is not None and self.watching and not self._stop_event.is_set():
                rank = self._watch[0]
                os.write(2, f"error: rank {rank} {problem}; finished outputs are kept\n".encode())
                os._exit(1)
            if self._stop_event.wait(self._period_s):
                return

    def _silent(self) -> str | None:
        rank, world, timeout_s = self._watch
        prefix, now = self._key.rsplit("/beat/", 1)[0], time.monotonic()
        for r in range(world):
            if r == rank:
                continue
            beat = self._store.add(f"{prefix}/beat/{r}", 0)
            if r not in self._seen or self._seen[r][0] != beat:
                self._seen[r] = (beat, now)
            elif now - self._seen[r][1] > timeout_s:
                return f"stops: rank {r} has not answered for {timeout_s:g} s (crashed or killed?)"
        return None

    def stop(self) -> None:
        self._stop_event.set()


class RankGroup:
    """A process group with a timeout, a shared claim counter and a heartbeat (a context manager).

    gloo unless `backend` says otherwise (`run --parallel` on CUDA: "cpu:gloo,cuda:nccl")."""

    def __init__(self, info: RankInfo, config: DistributedConfig | None = None, backend: str = "gloo",
                 watch: bool = False) -> None:  # fmt: skip
        self.info, self.backend, self.watch = info, backend, watch
        self.config = config or DistributedConfig()
        self._store = None
        self._heartbeat: _Heartbeat | None = None
        self.prefix = ""

    def __enter__(self) -> "RankGroup":
        import torch
        import torch.distributed as dist

        global group_started

        timeout = timedelta(seconds=self.config.timeout_s)
        self._call("starting the process group", dist.init_process_group, backend=self.backend, timeout=timeout)
        group_started = True
        try:
            if torch.cuda.is_available():
                # Libraries that touch "the current device" then use this rank's GPU, not GPU 0.
                torch.cuda.set_device(self.info.local_rank % torch.cuda.device_count())
            self._store = dist.distributed_c10d._get_default_store()
            # A fresh key space per run: torchrun keeps its store across --max-restarts.
            self.prefix = f"hetcache/{self.broadcast(uuid.uuid4().hex if self.info.rank == 0 else None)}"
            watch = (self.info.rank, self.info.world_size, self.config.timeout_s) if self.watch else None
            key = f"{self.prefix}/beat/{self.info.rank}"
            self._heartbeat = _Heartbeat(self._store, key, self.config.heartbeat_s, watch)
            self._heartbeat.start()
        except BaseException:
            dist.destroy_process_group()
            raise
        return self

    def __exit__(self, *exc) -> None:
        import torch.distributed as dist

        if self._heartbeat is not None:
            self._heartbeat.stop()
        dist.destroy_process_group()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        import torch.distributed as dist

        box = [obj]
        self._call("receiving the plan from rank 0", dist.broadcast_object_list, box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.info.world_size
        self._call("exchanging results", dist.all_gather_object, out, obj)
        return out

    def stop_watching(self) -> None:
        """From here on ranks may leave (and the store with rank 0): a silent rank no longer ends this one."""
        if self._heartbeat is not None:
            self._heartbeat.watching = False

    def barrier(self) -> None:
        import torch.distributed as dist

        self._call("finishing", dist.barrier)

    def claims(self, count: int) -> Iterator[int]:
        """Indices 0..count-1, each yielded on exactly one rank, in order of claim."""
        while True:
            index = self._call("claiming the next edit", self._store.add, f"{self.prefix}/next", 1) - 1
            if index >= count:
                return
            yield index

    def wait_for_all(self) -> None:
        info = self.info
        self._call(
            "waiting for the other ranks", wait_for_ranks, self._store, self.prefix, info.rank, info.world_size,
            self.config.timeout_s,
        )  # fmt: skip

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HetcacheError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HetcacheError(
                f"rank {self.info.rank} lost the other ranks while {what} ({first}); finished outputs are kept: "
                "run the same command again to resume"
            ) from exc
