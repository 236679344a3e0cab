"""Cache state: per guidance branch (a diffusers `BaseState`) and per run, plus the memory bound.

Per branch ("cond" / "uncond", kept by diffusers' `StateManager`): the K/V caches of every
main and VACE layer in one preallocated buffer (float on the device, or a `storage.KVStore` for
the fp8 and host layouts), the whole-stack residual, the prompt's text K/V, the active index
set and the k-means centroids. Per run (shared by the branches): the plan, the token
classes and the fixed part of the active set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.hooks.hooks import BaseState

from hetcache_cli.cache.flops import ModelDims
from hetcache_cli.cache.forecast import ResidualForecast
from hetcache_cli.cache.kv_forecast import KVForecast
from hetcache_cli.cache.plan import CachePlan
from hetcache_cli.cache.storage import FP8, CacheLayout, KVSlot, KVStore, cache_bytes
from hetcache_cli.cache.tokens import TokenClasses
from hetcache_cli.errors import InputError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float8_e4m3fn": FP8}


class CacheMemoryError(InputError, ValueError):
    """The caches would need more memory than `max_cache_memory` allows."""


def resolve_cache_dtype(name: str, model_dtype: torch.dtype) -> torch.dtype:
    return model_dtype if name == "auto" else _DTYPES[name]


def cache_layout(
    name: str, model_dtype: torch.dtype, host: bool = False, text_kv: bool = False, forecast: bool = False,
    forecast_kv: bool = False,
) -> CacheLayout:
    """The layout of a `cache_dtype` setting: fp8 keeps the residual (and its forecast slopes) in the model's dtype.

    K/V slopes (`forecast_kv`) are kept for float K/V on the compute device only.
    """
    kv = resolve_cache_dtype(name, model_dtype) if isinstance(name, str) else name
    return CacheLayout(kv_dtype=kv, residual_dtype=model_dtype if kv == FP8 else kv, host=host, text_kv=text_kv,
                       forecast=forecast, forecast_kv=forecast_kv and forecast and kv != FP8 and not host)


def cache_memory(
    dims: ModelDims, n_tokens: int, branches: int, layout: CacheLayout, model_dtype: torch.dtype,
    method: str = "hetcache",
) -> dict:
    """Bytes of the caches of one run, split by part and by device / host memory (see `storage.cache_bytes`)."""
    layers = dims.num_layers + dims.num_vace_layers
    kv_layers = layers if method == "hetcache" else 0
    branches = 0 if method == "none" else branches
    return cache_bytes(kv_layers, n_tokens, dims.dim, dims.num_heads, dims.text_len, branches, layout, model_dtype,
                       text_layers=layers)


def estimate_cache_memory(
    dims: ModelDims, n_tokens: int, branches: int, dtype: torch.dtype | str, method: str = "hetcache",
    host: bool = False, text_kv: bool = False, model_dtype: torch.dtype | None = None, forecast: bool = False,
    forecast_kv: bool = False,
) -> int:
    """Bytes of the caches of one run: per branch, K and V of every main and VACE layer plus the residual.

    `teacache` keeps the residual only, `none` nothing. `text_kv` adds the prompt's K/V per layer;
    `float8_e4m3fn` adds a scale per layer and head and keeps the residual in `model_dtype`; `host`
    adds the two staging layers on the device; a residual `forecast` adds its slopes (one more
    residual-sized tensor) and a float32 and a bool per token; `forecast_kv` (with `forecast`, float
    K/V on the device) 4-bit slopes on a share of the rows (`kv_forecast.kv_forecast_bytes`).
    """
    dtype = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    model_dtype = model_dtype or (torch.bfloat16 if dtype == FP8 else dtype)
    layout = cache_layout(dtype, model_dtype, host, text_kv, forecast, forecast_kv)
    return cache_memory(dims, n_tokens, branches, layout, model_dtype, method)["total"]


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
        self.kv_buffer: torch.Tensor | None = None  # [L, 2, B, N, D] (on the host in the host layout)
        self.kv: list | None = None  # one slot per layer: KVSlot, or a KVStore's slot
        self.store: KVStore | None = None  # fp8 and host layouts
        self.text = None  # TextKV: the prompt's cross-attention K/V (text_kv.py)
        self.residual: torch.Tensor | None = None  # [B, N, D]
        self.valid = False  # a FULL step of this run filled the caches
        self.active: torch.Tensor | None = None  # [B, M] int64, sorted
        self.slot: torch.Tensor | None = None  # [B, N] int32 inverse of `active` (Triton merge)
        self.centroids: torch.Tensor | None = None  # [k, D] k-means warm start
        self.forecast: ResidualForecast | None = None  # per-token residual slopes (cache/forecast.py)
        self.kv_forecast: KVForecast | None = None  # per-layer K/V slopes (cache/kv_forecast.py)
        self.order = None  # Ulysses: (token order S, active rows per rank), cache/ulysses.py

    def ensure(
        self, layers: int, shape: tuple[int, int, int], layout: CacheLayout | torch.dtype, device: torch.device,
        heads: int = 1, kv_shape: tuple[int, int, int] | None = None,
    ) -> None:
        """Allocate the caches once per run and shape; later steps write into them in place.

        `shape` is the residual's [B, rows, D]; `kv_shape` the K/V's [B, N, D_kv] (default `shape`; Ulysses
        keeps a rank's rows of the residual and its heads of the K/V)."""
        if isinstance(layout, torch.dtype):
            layout = CacheLayout(kv_dtype=layout, residual_dtype=layout)
        B, N, D = shape
        residual = self.residual
        if residual is None or residual.shape != (B, N, D) or residual.dtype != layout.residual_dtype:
            self.residual = torch.zeros(B, N, D, dtype=layout.residual_dtype, device=device)
            self.kv_buffer = self.kv = self.store = self.forecast = self.kv_forecast = None
        if layout.forecast and self.forecast is None:
            self.forecast = ResidualForecast((B, N, D), layout.residual_dtype, device)
        if layers and self.kv_buffer is None:
            shape = kv_shape or shape
            if layout.quantised or layout.host:
                self.store = KVStore(layers, shape, layout, device, heads)
                self.kv_buffer, self.kv = self.store.buffer, self.store.slots
            else:
                self.kv_buffer = torch.zeros(layers, 2, *shape, dtype=layout.kv_dtype, device=device)
                self.kv = [KVSlot(self.kv_buffer[i, 0], self.kv_buffer[i, 1]) for i in range(layers)]
                if layout.forecast_kv:
                    self.kv_forecast = KVForecast(layers, shape, layout.kv_dtype, device)
                    self.kv = self.kv_forecast.wrap(self.kv)

    def nbytes(self) -> dict:
        """Bytes of the tensors this branch holds now: 'cache' (K/V, scales, residual, staging; 'host' of it
        in host memory) and 'text' (the prompt's K/V)."""
        tensors = [self.residual] + (self.store.tensors if self.store is not None else [self.kv_buffer])
        tensors += self.forecast.tensors if self.forecast is not None else []
        tensors += self.kv_forecast.tensors if self.kv_forecast is not None else []
        cache = sum(t.numel() * t.element_size() for t in tensors if t is not None)
        text = sum(t.numel() * t.element_size() for t in self.text.tensors) if self.text is not None else 0
        on_host = self.store is not None and self.store.layout.host
        host = self.kv_buffer.numel() * self.kv_buffer.element_size() if on_host else 0
        return {"cache": cache, "text": text, "host": host}


@dataclass
class RunState:
    """What one pipeline call (or one `begin_run`) shares between its branches: the plan it executes and the
    device tensors made from it once (token classes, the fixed part of the active set, the shared selection)."""

    run_id: int = 0
    plan: CachePlan | None = None  # None: not planned yet (a bare transformer before its first forward)
    branches: int = 2  # guidance branches (bare transformer: as given to begin_run)
    timesteps: list[float] | None = None  # the run's, as given (bare transformer); the plan's otherwise
    pixel_mask: torch.Tensor | None = None  # [F, H, W] bool
    factors: tuple[int | None, int | None] = (None, None)  # pixels per token side, pixel frames per latent frame
    classes: TokenClasses | None = None
    static_active: torch.Tensor | None = None  # [M0] generative + margin subset
    uniform_context: torch.Tensor | None = None  # [Cs] context subset when selection = uniform
    n_context_pick: int = 0
    selection: tuple | None = None  # (step, active [B, M], slot [B, N]): the active set all branches share
    rope: tuple | None = None  # rotary tables for `rope_key`
    rope_key: tuple | None = None
    extras: dict = field(default_factory=dict)

    @property
    def method(self) -> str | None:
        return self.plan.method if self.plan is not None else None
