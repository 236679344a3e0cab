"""One edit on several ranks: the layout (`--parallel`), the collectives with their traffic counted, and
guidance (CFG) parallelism inside the hook.

Guidance parallel (docs/context_parallel.md section 1.1): rank r of the group computes guidance branch r
only ("cond" on rank 0, "uncond" on rank 1) with its own caches, as one process keeps them per branch.
The pipeline still calls the transformer once per branch and step, on every rank:

- the call of a branch this rank owns runs the hook's forward as usual;
- the call of another branch runs nothing: before the step's last branch it returns an empty tensor of
  the prediction's shape, which the exchange fills in place; at the step's last branch (where the
  pipeline combines `uncond + scale * (cond - uncond)`) every rank all-gathers its own prediction, the
  earlier placeholders are filled and the last branch's prediction returned.

So per step only the noise predictions cross ranks. The shared active set (hook.py: the first branch's FULL
step chooses it for every branch) is broadcast from the rank of the first branch at each FULL step: both
ranks then take the same PARTIAL rows, as one process does. Step decisions come from the plan, which every
rank makes from the same timesteps and model; the hook checks once per run that all ranks planned the same
letters (a mismatch would put ranks on different collectives) and fails otherwise.

The engine holds no process group of its own: `Comm` wraps whatever group the launcher made (gloo on CPU,
NCCL on CUDA: the same calls) and counts the bytes each rank sends, by the kind of step they served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hetcache_cli.errors import HetcacheError

if TYPE_CHECKING:
    import torch

BRANCHES = ("cond", "uncond")  # the order in which WanVACEPipeline calls them in a step


@dataclass(frozen=True)
class Layout:
    """How one edit is spread: `cfg` (one guidance branch per rank) and the Ulysses degree (1 = none)."""

    cfg: bool = False
    ulysses: int = 1

    @property
    def world_size(self) -> int:
        return (2 if self.cfg else 1) * self.ulysses

    def __str__(self) -> str:
        parts = (["cfg"] if self.cfg else []) + ([f"ulysses={self.ulysses}"] if self.ulysses > 1 else [])
        return ",".join(parts) or "none"


def parse_layout(text: str) -> Layout:
    """`cfg`, `ulysses=U` or `cfg,ulysses=U` (U >= 2); ValueError with a one-line message otherwise."""
    cfg, ulysses, seen = False, 1, set()
    for part in (p.strip() for p in text.split(",")):
        key = part.split("=", 1)[0]
        if key in seen:
            raise ValueError(f"--parallel {text!r} names {key} twice")
        seen.add(key)
        if part == "cfg":
            cfg = True
        elif (m := re.fullmatch(r"ulysses=(\d+)", part)) and int(m.group(1)) >= 2:
            ulysses = int(m.group(1))
        else:
            raise ValueError(f"--parallel {text!r}: expected cfg, ulysses=U (U >= 2) or cfg,ulysses=U")
    return Layout(cfg=cfg, ulysses=ulysses)


def check_layout(layout: Layout, world_size: int, heads: int, guidance_scale: float,
                 guidance_scale_2: float | None = None) -> None:  # fmt: skip
    """ValueError (one line, naming the fix) when the layout does not fit the launch or the model."""
    if world_size != layout.world_size:
        raise ValueError(
            f"--parallel {layout} needs {layout.world_size} ranks, this launch has {world_size}: "
            f"start it with torchrun --nproc-per-node {layout.world_size}"
        )
    if layout.ulysses > 1 and heads % layout.ulysses:
        divisors = [d for d in range(2, heads + 1) if heads % d == 0]
        raise ValueError(
            f"--parallel ulysses={layout.ulysses}: the model has {heads} attention heads, which {layout.ulysses} "
            f"does not divide; use ulysses={' | '.join(map(str, divisors))}"
        )
    scales = [guidance_scale] + ([guidance_scale_2] if guidance_scale_2 is not None else [])
    if layout.cfg and min(scales) <= 1.0:
        raise ValueError(
            "--parallel cfg splits the two guidance branches, but guidance_scale <= 1 runs only one: "
            "raise --guidance-scale above 1 or drop cfg from --parallel"
        )


@dataclass
class Traffic:
    """Bytes this rank sent, by the kind of step (full / partial / reuse) and collective."""

    sent: dict = field(default_factory=dict)  # (kind, op) -> bytes
    forwards: dict = field(default_factory=dict)  # kind -> forwards this rank computed
    layers: int = 0  # self-attention layers per forward (Ulysses), for the per-layer figure
    held: dict = field(default_factory=dict)  # branch -> (K/V bytes, residual bytes) this rank holds now
    peak: dict = field(default_factory=lambda: {"kv_bytes": 0, "residual_bytes": 0})

    def observe(self, branch: str, state) -> None:
        """The measured tensors of a branch's caches: K/V (with scales, staging, slopes) and residual (with slopes)."""
        kv = (state.store.tensors if state.store is not None else [state.kv_buffer])
        kv += state.kv_forecast.tensors if state.kv_forecast is not None else []
        res = [state.residual] + (state.forecast.tensors if state.forecast is not None else [])
        size = lambda ts: sum(t.numel() * t.element_size() for t in ts if t is not None)  # noqa: E731
        self.held[branch] = (size(kv), size(res))
        self.peak["kv_bytes"] = max(self.peak["kv_bytes"], sum(k for k, _ in self.held.values()))
        self.peak["residual_bytes"] = max(self.peak["residual_bytes"], sum(r for _, r in self.held.values()))

    def add(self, kind: str, op: str, nbytes: int) -> None:
        self.sent[(kind, op)] = self.sent.get((kind, op), 0) + int(nbytes)

    def count(self, kind: str) -> None:
        self.forwards[kind] = self.forwards.get(kind, 0) + 1

    def to_dict(self) -> dict:
        kinds = sorted({k for k, _ in self.sent} | set(self.forwards))
        out = {}
        for kind in kinds:
            ops = {op: nbytes for (k, op), nbytes in self.sent.items() if k == kind}
            n = self.forwards.get(kind, 0)
            total = sum(ops.values())
            per_forward = total / n if n else None
            out[kind] = {"forwards": n, "bytes_sent": total, "bytes_per_forward": per_forward, "by_op": ops}
            attention = ops.get("attention_in", 0) + ops.get("attention_out", 0)
            if attention and n and self.layers:  # the all-to-alls of one self-attention layer
                out[kind]["attention_bytes_per_layer"] = attention / n / self.layers
        return out

    def reset(self) -> None:
        self.sent.clear()
        self.forwards.clear()
        self.held.clear()
        self.peak = {"kv_bytes": 0, "residual_bytes": 0}


class RankLost(HetcacheError):
    """A collective failed: another rank died, or stayed silent past the group's timeout (exit 1)."""


class _Guarded:
    """torch.distributed with every call turned into `RankLost` on failure (one line, which collective)."""

    def __init__(self, dist) -> None:
        self._dist = dist

    def __getattr__(self, name):
        fn = getattr(self._dist, name)
        if not callable(fn) or name[0].isupper():
            return fn

        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                text = str(exc).strip()
                first = text.splitlines()[0][:200] if text else type(exc).__name__
                raise RankLost(
                    f"rank {self._dist.get_rank()} lost the other ranks during {name} ({first}); no output written"
                ) from exc

        return call


class Comm:
    """Collectives on one process group (None: the default one), with the bytes this rank sends counted.

    Bytes sent are the logical payload a rank contributes to the others, independent of the backend's
    algorithm: all-gather sends its tensor to each of the g-1 others; broadcast's source sends to g-1.
    """

    def __init__(self, group=None) -> None:
        import torch.distributed as dist

        self.dist, self.group = _Guarded(dist), group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.traffic = Traffic()
        self._checked_run: int | None = None

    def check_plan(self, run_id: int, schedule: str, device) -> None:
        """Once per run: every rank must have planned the same step letters (else the collectives would part)."""
        if self._checked_run == run_id:
            return
        self._checked_run = run_id
        if not self.same_everywhere(schedule, device):
            raise RuntimeError(
                f"the ranks planned different cache schedules (this rank: {schedule}); set an explicit "
                "schedule (--schedule) so that every rank runs the same steps"
            )

    def all_gather(self, tensor: torch.Tensor, kind: str, op: str = "all_gather") -> list[torch.Tensor]:
        import torch

        tensor = tensor.contiguous()
        out = [torch.empty_like(tensor) for _ in range(self.size)]
        self.dist.all_gather(out, tensor, group=self.group)
        self.traffic.add(kind, op, tensor.numel() * tensor.element_size() * (self.size - 1))
        return out

    def broadcast_rows(self, rows: torch.Tensor | None, src: int, device, kind: str, op: str) -> torch.Tensor:
        """An int64 tensor of rank `src` (of any shape [B, M]) on every rank: its shape, then its values."""
        import torch

        shape = torch.tensor(list(rows.shape) if self.rank == src else [0, 0], dtype=torch.int64, device=device)
        self.dist.broadcast(shape, self._global(src), group=self.group)
        if self.rank != src:
            rows = torch.empty(tuple(int(s) for s in shape.tolist()), dtype=torch.int64, device=device)
        rows = rows.to(device=device, dtype=torch.int64).contiguous()
        self.dist.broadcast(rows, self._global(src), group=self.group)
        if self.rank == src:
            self.traffic.add(kind, op, (rows.numel() + 2) * 8 * (self.size - 1))
        return rows

    def same_everywhere(self, text: str, device) -> bool:
        """Whether every rank of the group holds the same `text` (a max and a min of its bytes, padded)."""
        import torch

        data = torch.tensor(list(text.encode()) or [0], dtype=torch.int64, device=device)
        length = torch.tensor([data.numel()], dtype=torch.int64, device=device)
        lengths = [torch.empty_like(length) for _ in range(self.size)]
        self.dist.all_gather(lengths, length, group=self.group)
        if len({int(x) for x in lengths}) != 1:
            return False
        high, low = data.clone(), data.clone()
        self.dist.all_reduce(high, op=self.dist.ReduceOp.MAX, group=self.group)
        self.dist.all_reduce(low, op=self.dist.ReduceOp.MIN, group=self.group)
        return bool(torch.equal(high, low))

    def _global(self, rank: int) -> int:
        return rank if self.group is None else self.dist.get_global_rank(self.group, rank)


class GuidanceParallel:
    """The CFG layout inside the hook: which branch this rank computes, and the per-step exchange."""

    def __init__(self, comm: Comm, branches: tuple[str, ...] = BRANCHES) -> None:
        if comm.size != len(branches):
            raise ValueError(f"guidance parallel needs {len(branches)} ranks in its group, not {comm.size}")
        self.comm, self.branches = comm, branches
        self.mine = branches[comm.rank]
        self._placeholders: dict[str, torch.Tensor] = {}
        self._own: torch.Tensor | None = None
        self.kind = "full"  # the kind of this rank's current step, for the traffic count

    def owns(self, branch: str) -> bool:
        return branch == self.mine

    @property
    def chooser(self) -> bool:
        """Whether this rank computes the branch that chooses the shared active set (the first one)."""
        return self.mine == self.branches[0]

    def computed(self, branch: str, output: torch.Tensor, kind: str) -> torch.Tensor:
        """This rank's own prediction for `branch`; at the step's last branch the exchange runs."""
        self.kind = kind
        self.comm.traffic.count(kind)
        self._own = output
        if branch == self.branches[-1]:
            return self._exchange(branch)
        return output

    def foreign(self, branch: str, like: torch.Tensor, out_channels: int) -> torch.Tensor:
        """Another rank's branch: a placeholder filled at the exchange, or, at the last branch, its prediction."""
        import torch

        if branch not in self.branches:
            raise ValueError(f"guidance parallel knows the branches {self.branches}, not {branch!r}")
        if branch == self.branches[-1]:
            return self._exchange(branch)
        shape = (like.shape[0], out_channels, *like.shape[2:])
        self._placeholders[branch] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return self._placeholders[branch]

    def _exchange(self, last: str) -> torch.Tensor:
        if self._own is None:
            raise RuntimeError("guidance parallel: this rank's branch was not computed before the step's last branch")
        gathered = self.comm.all_gather(self._own, self.kind, "cfg_prediction")
        self._own = None
        for branch, placeholder in self._placeholders.items():
            placeholder.copy_(gathered[self.branches.index(branch)])
        self._placeholders.clear()
        return gathered[self.branches.index(last)]

    def share_selection(self, active: torch.Tensor | None, device) -> torch.Tensor:
        """The active set chosen by the first branch's rank, on every rank of the group."""
        return self.comm.broadcast_rows(active, 0, device, self.kind, "active_set")
