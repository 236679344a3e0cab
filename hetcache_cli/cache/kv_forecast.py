"""First-order forecast of the per-layer K/V caches for PARTIAL steps (fidelity suite, docs/engine.md).

A PARTIAL step's active rows attend over all N keys, and the inactive tokens' K/V are those
of the last FULL step: measured on the fidelity suite, that staleness costs 3-7 dB inside the
mask (an oracle PARTIAL step given this step's exact K/V recovers it). Here every layer also
keeps the slope of its K and V against the step's time, taken between the last two FULL
steps, and a PARTIAL step at time t attends to

    K(t) = K_full + slope_K * (t - t_full)      (V alike)

with its own active rows' fresh K/V written over those rows. The cache itself keeps the FULL
step's values (the anchor of the line): a PARTIAL step writes its extrapolated K/V into a
temporary of one layer, not into the cache. Before the second FULL step the slopes are zero
(the plain cache). Memory: one more K/V-sized buffer per branch; float K/V on the compute
device only (the fp8 and host layouts keep the plain cache).
"""

from __future__ import annotations

import torch

from hetcache_cli.cache.forecast import TIME_SCALE
from hetcache_cli.kernels import scatter_tokens_


class KVForecast:
    """Slopes [L, 2, B, N, D] of one branch's K/V caches and the times of its last two FULL steps."""

    def __init__(self, layers: int, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device) -> None:
        B, N, D = shape
        self.slopes = torch.zeros(layers, 2, B, N, D, dtype=dtype, device=device)
        self.t_full: float | None = None  # time of the last FULL step (t / 1000)
        self.dt: float | None = None  # during a FULL step: its time minus the previous FULL's (None: first)
        self.h = 0.0  # during a PARTIAL step: its time minus t_full

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [self.slopes]

    def begin_full(self, timestep: float) -> None:
        t = timestep / TIME_SCALE
        self.dt = None if self.t_full is None or abs(t - self.t_full) < 1e-9 else t - self.t_full
        self.t_full = t

    def begin_partial(self, timestep: float) -> None:
        self.h = 0.0 if self.t_full is None else timestep / TIME_SCALE - self.t_full

    def wrap(self, slots: list) -> list["ForecastSlot"]:
        return [ForecastSlot(slot, self, i) for i, slot in enumerate(slots)]


class ForecastSlot:
    """A float `KVSlot` whose FULL writes measure slopes and whose PARTIAL reads are extrapolated."""

    def __init__(self, inner, forecast: KVForecast, layer: int) -> None:
        self.inner, self.forecast, self.layer = inner, forecast, layer

    @property
    def k(self) -> torch.Tensor:
        return self.inner.k

    @property
    def v(self) -> torch.Tensor:
        return self.inner.v

    def store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """FULL step: slope = (new - cached) / (t - t_previous_full), then the new K/V into the cache."""
        fc = self.forecast
        slope_k, slope_v = fc.slopes[self.layer]
        if fc.dt is None:
            slope_k.zero_()
            slope_v.zero_()
        else:
            slope_k.copy_((k.float() - self.inner.k.float()) / fc.dt)
            slope_v.copy_((v.float() - self.inner.v.float()) / fc.dt)
        self.inner.store(k, v)

    def update(self, idx: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dtype: torch.dtype, use_triton=None):
        """PARTIAL step: all N rows extrapolated to this step, the active rows `idx` [B, M] fresh: [B, N, D] each."""
        fc = self.forecast
        slope_k, slope_v = fc.slopes[self.layer]
        full_k = torch.add(self.inner.k.to(dtype), slope_k.to(dtype), alpha=fc.h)
        full_v = torch.add(self.inner.v.to(dtype), slope_v.to(dtype), alpha=fc.h)
        scatter_tokens_(full_k, idx, k.to(dtype), use_triton=use_triton)
        scatter_tokens_(full_v, idx, v.to(dtype), use_triton=use_triton)
        return full_k, full_v
