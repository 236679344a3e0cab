"""Cache state: per guidance branch (a diffusers `BaseState`) and per run, plus the memory bound.

Per branch ("cond" / "uncond", kept by diffusers' `StateManager`): the K/V caches of every
main and VACE layer in one preallocated buffer, the whole-stack residual, the active index
set and the k-means centroids. Per run (shared by the branches): the plan, the token
classes and the fixed part of the active set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.hooks.hooks import BaseState

from hetcache_cli.cache.blocks import KVSlot
from hetcache_cli.cache.flops import ModelDims
from hetcache_cli.cache.tokens import TokenClasses
from hetcache_cli.errors import InputError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CacheMemoryError(InputError, ValueError):
    """The caches would need more memory than `max_cache_memory` allows."""


def resolve_cache_dtype(name: str, model_dtype: torch.dtype) -> torch.dtype:
    return model_dtype if name == "auto" else _DTYPES[name]


def estimate_cache_memory(
    dims: ModelDims, n_tokens: int, branches: int, dtype: torch.dtype | str, method: str = "hetcache"
) -> int:
    """Bytes of the caches of one run: per branch, K and V of every main and VACE layer plus the residual.

    `teacache` keeps the residual only, `none` nothing.
    """
    if method == "none":
        return 0
    dtype = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    itemsize = torch.empty((), dtype=dtype).element_size()
    rows = 1 + (2 * (dims.num_layers + dims.num_vace_layers) if method == "hetcache" else 0)
    return branches * rows * n_tokens * dims.dim * itemsize


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


class BranchState(BaseState):
    """Caches of one guidance branch; `reset` frees them."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.run_id = -1
        self.forward_count = 0  # bare-transformer step counter
        self.kv_buffer: torch.Tensor | None = None  # [L, 2, B, N, D]
        self.kv: list[KVSlot] | None = None
        self.residual: torch.Tensor | None = None  # [B, N, D]
        self.valid = False  # a FULL step of this run filled the caches
        self.active: torch.Tensor | None = None  # [B, M] int64, sorted
        self.slot: torch.Tensor | None = None  # [B, N] int32 inverse of `active` (Triton merge)
        self.centroids: torch.Tensor | None = None  # [k, D] k-means warm start

    def ensure(self, layers: int, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device) -> None:
        """Allocate the caches once per run and shape; later steps write into them in place."""
        B, N, D = shape
        if self.residual is None or self.residual.shape != (B, N, D) or self.residual.dtype != dtype:
            self.residual = torch.zeros(B, N, D, dtype=dtype, device=device)
            self.kv_buffer = None
            self.kv = None
        if layers and self.kv_buffer is None:
            self.kv_buffer = torch.zeros(layers, 2, B, N, D, dtype=dtype, device=device)
            self.kv = [KVSlot(self.kv_buffer[i, 0], self.kv_buffer[i, 1]) for i in range(layers)]


@dataclass
class RunState:
    """What one pipeline call (or one `begin_run`) shares between its branches."""

    run_id: int = 0
    method: str = "hetcache"  # may fall back to teacache when the caches do not fit
    decisions: list[str] | None = None  # one per step; None = not planned (bare transformer)
    timesteps: list[float] | None = None  # host copies, for the statistics
    pixel_mask: torch.Tensor | None = None  # [F, H, W] bool
    classes: TokenClasses | None = None
    static_active: torch.Tensor | None = None  # [M0] generative + margin subset
    uniform_context: torch.Tensor | None = None  # [Cs] context subset when selection = uniform
    n_context_pick: int = 0
    rope: tuple | None = None  # rotary tables for `rope_key`
    rope_key: tuple | None = None
    memory_checked: bool = False
    extras: dict = field(default_factory=dict)
