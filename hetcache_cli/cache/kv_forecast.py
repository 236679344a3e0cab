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
(the plain cache).

Memory (issue 26): the slopes are kept only where they pay and in 4 bits. Per layer, the
`KEEP_FRACTION` of the tokens whose K and V moved most between the two FULL steps (the largest
slope norms: where leaving the token at its FULL value would be worst), skipping the tokens
every PARTIAL step recomputes anyway (their rows are overwritten by fresh K/V); each kept row's
slope in signed 4 bits (-7..7, two to a byte) with one float32 scale per row (absmax / 7). The
rest take the FULL value. With bfloat16 K/V that is under 0.25x the K/V caches' bytes
(`kv_forecast_bytes`: 0.8 x (D + 12) / 4D; D >= 64), half of it with float32 K/V. Measured on the suite
(docs/benchmarks.md): 4 bits on 80-85% of the rows give the full-precision slopes' output to
about 0.1 dB, while 8 bits on 45% of the rows (about the same bytes) lost up to 8 dB. Float K/V on
the compute device only (the fp8 and host layouts keep the plain cache).
"""

from __future__ import annotations

import torch

from hetcache_cli.cache.forecast import TIME_SCALE
from hetcache_cli.kernels import scatter_tokens_

KEEP_FRACTION = 0.8  # of the tokens per layer whose K/V slope is kept
QMAX = 7.0  # signed 4 bits


def kept_rows(n_tokens: int, keep: float = KEEP_FRACTION) -> int:
    return max(1, min(n_tokens, int(keep * n_tokens)))


def kv_forecast_bytes(layers: int, batch: int, n_tokens: int, dim: int, keep: float = KEEP_FRACTION) -> int:
    """Bytes of one branch's K/V forecast as `KVForecast` allocates them (int32 rows, 4-bit slopes, float32 scales)."""
    rows = kept_rows(n_tokens, keep)
    return layers * (rows * 4 + 2 * batch * rows * (dim // 2) + 2 * batch * rows * 4)


def pack4(q: torch.Tensor) -> torch.Tensor:
    """int values in -7..7 [..., D] (D even) -> uint8 [..., D / 2], two to a byte."""
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack4(packed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [..., D / 2] -> [..., D] in `dtype`, values -7..7."""
    lo, hi = (packed & 15), (packed >> 4)
    return torch.stack((lo, hi), dim=-1).flatten(-2).to(dtype) - 8


class KVForecast:
    """One branch's K/V slopes: per layer the kept rows [R], 4-bit slopes [2, B, R, D / 2], scales [2, B, R]."""

    def __init__(self, layers: int, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device,
                 keep: float = KEEP_FRACTION) -> None:
        B, N, D = shape
        if D % 2:
            raise ValueError(f"the K/V forecast packs two 4-bit slopes to a byte: width {D} must be even")
        R = kept_rows(N, keep)
        self.rows = torch.zeros(layers, R, dtype=torch.int32, device=device)
        self.q = torch.zeros(layers, 2, B, R, D // 2, dtype=torch.uint8, device=device)
        self.scale = torch.zeros(layers, 2, B, R, dtype=torch.float32, device=device)  # 0: no slope yet
        self.t_full: float | None = None  # time of the last FULL step (t / 1000)
        self.dt: float | None = None  # during a FULL step: its time minus the previous FULL's (None: first)
        self.h = 0.0  # during a PARTIAL step: its time minus t_full
        self.fresh: torch.Tensor | None = None  # [M0] tokens every PARTIAL step recomputes (no slope needed)

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [self.rows, self.q, self.scale]

    def begin_full(self, timestep: float, fresh: torch.Tensor | None = None) -> None:
        t = timestep / TIME_SCALE
        self.dt = None if self.t_full is None or abs(t - self.t_full) < 1e-9 else t - self.t_full
        self.t_full = t
        self.fresh = fresh

    def begin_partial(self, timestep: float) -> None:
        self.h = 0.0 if self.t_full is None else timestep / TIME_SCALE - self.t_full

    def wrap(self, slots: list) -> list["ForecastSlot"]:
        return [ForecastSlot(slot, self, i) for i, slot in enumerate(slots)]

    def measure(self, layer: int, k_old, v_old, k_new, v_new) -> None:
        """FULL step: keep the rows whose K/V moved most, their slopes in 4 bits with a scale per row."""
        if self.dt is None:
            self.scale[layer].zero_()
            return
        dk = (k_new.float() - k_old.float()) / self.dt  # [B, N, D]
        dv = (v_new.float() - v_old.float()) / self.dt
        score = dk.square().sum(dim=(0, 2)) + dv.square().sum(dim=(0, 2))  # [N]
        if self.fresh is not None:
            score[self.fresh] = -1.0  # overwritten on every PARTIAL step: picked last
        R = self.rows.shape[1]
        rows = torch.topk(score, R, sorted=False).indices.sort().values  # [R]
        self.rows[layer].copy_(rows)
        for j, d in enumerate((dk, dv)):
            picked = d.index_select(1, rows)  # [B, R, D]
            scale = picked.abs().amax(dim=-1) / QMAX  # [B, R]
            self.scale[layer, j].copy_(scale)
            self.q[layer, j].copy_(pack4(torch.round(picked / scale.clamp_min(1e-30)[..., None]).clamp_(-QMAX, QMAX)))

    def extrapolate(self, layer: int, j: int, full: torch.Tensor) -> None:
        """full [B, N, D] (a private copy of the FULL value) += slope * h on the kept rows, in place."""
        step = (self.scale[layer, j] * self.h).to(full.dtype)[..., None]  # [B, R, 1]
        full.index_add_(1, self.rows[layer], unpack4(self.q[layer, j], full.dtype) * step)


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
        """FULL step: slopes from (new - cached) / (t - t_previous_full), then the new K/V into the cache."""
        self.forecast.measure(self.layer, self.inner.k, self.inner.v, k, v)
        self.inner.store(k, v)

    def update(self, idx: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dtype: torch.dtype, use_triton=None):
        """PARTIAL step: all N rows extrapolated to this step, the active rows `idx` [B, M] fresh: [B, N, D] each."""
        fc = self.forecast
        full_k = self.inner.k.to(dtype, copy=True)
        full_v = self.inner.v.to(dtype, copy=True)
        if fc.h != 0.0:
            fc.extrapolate(self.layer, 0, full_k)
            fc.extrapolate(self.layer, 1, full_v)
        scatter_tokens_(full_k, idx, k.to(dtype), use_triton=use_triton)
        scatter_tokens_(full_v, idx, v.to(dtype), use_triton=use_triton)
        return full_k, full_v
