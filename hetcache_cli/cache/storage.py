"""Where and how one guidance branch's per-layer K/V caches are kept; blocks.py writes and reads them.

Every layout has one slot per layer with two methods: `store(k, v)` on FULL steps (all N rows) and
`update(idx, k, v, dtype)` on PARTIAL steps (the M active rows' fresh K/V in, the full-length K/V
out, in the query's dtype).

- float, on the compute device (default): one [L, 2, B, N, D] buffer in `cache_dtype`; PARTIAL
  writes the fresh rows into it in place and attends over it (no copy when the dtypes match).
- fp8 (`cache_dtype: float8_e4m3fn`): the same buffer in float8 e4m3 with one float32 scale per
  layer, K/V and head (absmax / 448 of what the FULL step wrote); PARTIAL dequantises the layer
  into a temporary and puts the fresh rows in at full precision.
- host (`cache_device: cpu`, or `auto` when the GPU is short): the buffer (float or fp8) is in
  host memory, pinned on CUDA; FULL copies each layer out on a side stream, PARTIAL copies layer
  i+1 in while layer i computes (two device staging buffers). Without CUDA the same code runs
  with synchronous copies.

fp8 and host do not write the fresh rows back: the active set is fixed between two FULL steps,
so each PARTIAL step puts the same rows in before it reads the layer, and what attention sees is
the same as with the float layout's in-place write.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hetcache_cli.cache.kv_forecast import kv_forecast_bytes
from hetcache_cli.kernels import scatter_tokens_

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448


@dataclass(frozen=True)
class CacheLayout:
    """How a run keeps its caches: K/V dtype, residual dtype, K/V in host memory or on the device."""

    kv_dtype: torch.dtype
    residual_dtype: torch.dtype
    host: bool = False
    text_kv: bool = False
    forecast: bool = False  # per-token residual slopes (forecast.py), in the residual's dtype
    # per-layer K/V slopes (kv_forecast.py, 4 bits on a share of the rows): float K/V on the device only
    forecast_kv: bool = False

    @property
    def quantised(self) -> bool:
        return self.kv_dtype == FP8

    def describe(self) -> dict:
        return {
            "kv_dtype": str(self.kv_dtype).removeprefix("torch."),
            "residual_dtype": str(self.residual_dtype).removeprefix("torch."),
            "kv_device": "host" if self.host else "device",
            "text_kv": self.text_kv,
            "forecast": self.forecast,
            "forecast_kv": self.forecast_kv,
        }


def itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def cache_bytes(
    layers: int, n_tokens: int, dim: int, heads: int, text_len: int, branches: int, layout: CacheLayout,
    model_dtype: torch.dtype, batch: int = 1, text_layers: int | None = None,
) -> dict:
    """Bytes of the caches of one run, as allocated: each part, 'cache' (the step caches: K/V, scales,
    residual, forecast slopes, staging), 'text' (the prompt's K/V), 'device', 'host' and 'total'.

    Per branch: K/V of `layers` layers (`layers` = 0 keeps the residual only, as teacache does),
    fp8 scales, the whole-stack residual, the host layout's two staging layers, and the prompt's
    text embedding plus its K/V in each of `text_layers` layers (default `layers`) when `layout.text_kv`.
    """
    text_layers = layers if text_layers is None else text_layers
    rows = batch * n_tokens * dim
    parts = {
        "kv": layers * 2 * rows * itemsize(layout.kv_dtype),
        "scales": layers * 2 * heads * 4 if (layers and layout.quantised) else 0,
        "residual": rows * itemsize(layout.residual_dtype),
        "staging": 2 * 2 * rows * itemsize(layout.kv_dtype) if (layers and layout.host) else 0,
        # slopes [B, N, D] + the time of each token's last computed value (float32) and a seen flag (bool)
        "forecast": (rows * itemsize(layout.residual_dtype) + n_tokens * 5 if layout.forecast else 0)
        + (kv_forecast_bytes(layers, batch, n_tokens, dim) if (layers and layout.forecast_kv) else 0),
        "text_kv": (2 * text_layers + 1) * batch * text_len * dim * itemsize(model_dtype) if layout.text_kv else 0,
    }
    parts = {k: branches * v for k, v in parts.items()}
    host = parts["kv"] if layout.host else 0
    total = sum(parts.values())
    return {**parts, "cache": total - parts["text_kv"], "text": parts["text_kv"], "device": total - host, "host": host,
            "total": total}


def activation_bytes(dim: int, ffn_dim: int, num_vace_layers: int, n_tokens: int, dtype: torch.dtype) -> int:
    """A rough peak of one transformer forward's activations (one branch, batch 1): an estimate, not a bound.

    The main and VACE streams and every VACE hint (kept until its main block), about eight more
    [N, D] tensors inside a block (norm, Q/K/V, rope, attention, projections), three float32 [N, D]
    temporaries of the modulation, and the FFN's two [N, F] tensors; attention itself runs without
    an N x N matrix (SDPA / flash kernels).
    """
    size = itemsize(dtype)
    rows = n_tokens * dim
    return (2 + num_vace_layers + 8) * rows * size + 3 * rows * 4 + 2 * n_tokens * ffn_dim * size


# ---- fp8 -------------------------------------------------------------------------------


def quantise(x: torch.Tensor, heads: int, scale_out: torch.Tensor) -> torch.Tensor:
    """[B, N, H*d] -> float8 [B, N, H*d]; writes the per-head scale (absmax / 448) into `scale_out` [H]."""
    xh = x.unflatten(-1, (heads, -1)).float()  # [B, N, H, d]
    scale = (xh.abs().amax(dim=(0, 1, 3)) / FP8_MAX).clamp_min(torch.finfo(torch.float32).tiny)  # [H]
    scale_out.copy_(scale)
    return (xh / scale[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(FP8).flatten(-2)


def dequantise(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float8 [B, N, H*d] and scales [H] -> [B, N, H*d] in `dtype` (a new tensor)."""
    heads = scale.numel()
    return (q.unflatten(-1, (heads, -1)).to(dtype) * scale[:, None].to(dtype)).flatten(-2)


# ---- slots -----------------------------------------------------------------------------


@dataclass
class KVSlot:
    """One layer's full-length post-norm, post-rope K and V, float, on the compute device."""

    k: torch.Tensor  # [B, N, H * d]
    v: torch.Tensor  # [B, N, H * d]

    def store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k.copy_(k)
        self.v.copy_(v)

    def update(self, idx: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dtype: torch.dtype, use_triton=None):
        scatter_tokens_(self.k, idx, k.to(self.k.dtype), use_triton=use_triton)
        scatter_tokens_(self.v, idx, v.to(self.v.dtype), use_triton=use_triton)
        return self.k.to(dtype), self.v.to(dtype)


class _StoreSlot:
    """A slot of a `KVStore` (fp8 and / or host layouts)."""

    def __init__(self, store: "KVStore", layer: int) -> None:
        self.store_ = store
        self.layer = layer

    def store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.store_.write(self.layer, k, v)

    def update(self, idx: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dtype: torch.dtype, use_triton=None):
        full_k, full_v = self.store_.read(self.layer, dtype)
        scatter_tokens_(full_k, idx, k.to(dtype), use_triton=use_triton)
        scatter_tokens_(full_v, idx, v.to(dtype), use_triton=use_triton)
        return full_k, full_v


class KVStore:
    """K/V of every layer of one branch in a layout other than plain float on the device."""

    def __init__(self, layers: int, shape: tuple[int, int, int], layout: CacheLayout, device: torch.device,
                 heads: int) -> None:
        B, N, D = shape
        self.layout = layout
        self.heads = heads
        self.device = device
        cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if (layout.host and cuda) else None
        where = torch.device("cpu") if layout.host else device
        pin = layout.host and cuda
        self.buffer = torch.zeros(layers, 2, B, N, D, dtype=layout.kv_dtype, device=where, pin_memory=pin)
        self.scales = torch.ones(layers, 2, heads, dtype=torch.float32, device=device) if layout.quantised else None
        self.staging = torch.zeros(2, 2, B, N, D, dtype=layout.kv_dtype, device=device) if layout.host else None
        self.events = [torch.cuda.Event() for _ in range(2)] if self.stream is not None else None
        self.loaded = [-1, -1]  # the layer each staging buffer holds
        self.order: list[int] = list(range(layers))  # layer order of a forward (set by `begin`)
        self.position = {layer: i for i, layer in enumerate(self.order)}
        self.slots = [_StoreSlot(self, i) for i in range(layers)]

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.buffer, self.scales, self.staging) if t is not None]

    def begin(self, order: list[int] | None = None, prefetch: bool = False) -> None:
        """A new forward: the staging buffers are stale; with `prefetch`, start copying in the first layer."""
        if order is not None and order != self.order:
            self.order = list(order)
            self.position = {layer: i for i, layer in enumerate(self.order)}
        self.loaded = [-1, -1]
        if prefetch and self.layout.host and self.order:
            self._load(self.order[0], 0)

    # ---- FULL: all rows --------------------------------------------------------------

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        pair = []
        for j, x in enumerate((k, v)):
            if self.layout.quantised:
                x = quantise(x, self.heads, self.scales[layer, j])
            elif x.dtype != self.layout.kv_dtype:
                x = x.to(self.layout.kv_dtype)
            pair.append(x)
        if self.stream is None:
            self.buffer[layer, 0].copy_(pair[0])
            self.buffer[layer, 1].copy_(pair[1])
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            for j, x in enumerate(pair):
                self.buffer[layer, j].copy_(x, non_blocking=True)
                x.record_stream(self.stream)  # keep the device copy alive until the stream has read it

    # ---- PARTIAL: the full-length layer -----------------------------------------------

    def read(self, layer: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's K and V in `dtype`, as new tensors the caller may write into."""
        if self.layout.host:
            k, v = self._fetch(layer)
        else:
            k, v = self.buffer[layer, 0], self.buffer[layer, 1]
        if self.layout.quantised:
            return dequantise(k, self.scales[layer, 0], dtype), dequantise(v, self.scales[layer, 1], dtype)
        if k.dtype == dtype and self.layout.host:
            return k, v  # the staging buffer is a private copy already
        return k.to(dtype, copy=True), v.to(dtype, copy=True)

    def _fetch(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos = self.position[layer]
        s = pos % 2
        if self.loaded[s] != layer:
            self._load(layer, s)
        if pos + 1 < len(self.order):
            self._load(self.order[pos + 1], 1 - s)  # layer-ahead: overlaps with this layer's compute
        if self.events is not None:
            torch.cuda.current_stream(self.device).wait_event(self.events[s])
        return self.staging[s, 0], self.staging[s, 1]

    def _load(self, layer: int, s: int) -> None:
        self.loaded[s] = layer
        if self.stream is None:
            self.staging[s].copy_(self.buffer[layer])
            return
        # the staging buffer was last read by the layer before the current one: wait for the compute stream
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            self.staging[s].copy_(self.buffer[layer], non_blocking=True)
            self.events[s].record(self.stream)
