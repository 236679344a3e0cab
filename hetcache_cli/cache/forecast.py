"""First-order forecast of each token's cached whole-stack residual (TaylorSeer / FoCa style, per token).

A REUSE step, and the tokens a PARTIAL step does not recompute, take `input + residual`. With
a plain cache that residual is the one of the token's last computed step: it goes stale at
the rate the residual changes. Here every token also keeps a slope of its residual against the
step's time (the scheduler timestep / 1000: flow-matching steps are not evenly spaced, so the
step index would be the wrong abscissa), and the residual used at time t is

    r(t) = r_last + slope * (t - t_last)

A FULL step measures every token's slope as the finite difference between the value it
computes and the token's previous value (r_last at t_last); a PARTIAL step does the same for the
rows it recomputes and moves their anchor (see `record_rows`). A token with a single computed
value has slope 0 (the plain cache). Exact when a token's residual is linear in t. Memory: one
more [B, N, D] tensor per branch (the slope) and two [N] vectors; the whole-stack residual itself
stays in `BranchState`.
"""

from __future__ import annotations

import torch


TIME_SCALE = 1000.0  # Wan timesteps run 1000 -> 0; forecasts use t / 1000


class ResidualForecast:
    """Slopes and last-computed times of one branch's residual cache [B, N, D]."""

    def __init__(self, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device) -> None:
        B, N, D = shape
        self.slope = torch.zeros(B, N, D, dtype=dtype, device=device)  # d residual / d t
        self.t_last = torch.zeros(N, dtype=torch.float32, device=device)  # [N] time of the last computed value
        self.seen = torch.zeros(N, dtype=torch.bool, device=device)  # [N] computed at least once this run
        self.steps: tuple[float | None, float | None] = (None, None)  # (previous step's t, this step's t)

    def _at(self, t: float) -> None:
        if t != self.steps[1]:
            self.steps = (self.steps[1], t)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.slope.shape)

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [self.slope, self.t_last, self.seen]

    def _inverse_gap(self, t: float, t_last: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        gap = t - t_last  # [M]
        ok = seen & (gap.abs() > 1e-9)
        return torch.where(ok, 1.0 / torch.where(ok, gap, torch.ones_like(gap)), torch.zeros_like(gap))

    def record_all(self, residual: torch.Tensor, new: torch.Tensor, timestep: float) -> None:
        """Every token computed at `timestep`; `residual` still holds the previous values (not changed here)."""
        t = timestep / TIME_SCALE
        self._at(t)
        inv = self._inverse_gap(t, self.t_last, self.seen)  # [N]
        self.slope.copy_((new.float() - residual.float()) * inv[None, :, None])
        self.t_last.fill_(t)
        self.seen.fill_(True)

    def record_rows(self, idx: torch.Tensor, old: torch.Tensor, new: torch.Tensor, timestep: float) -> None:
        """Rows `idx` [B, M] recomputed by a PARTIAL step at `timestep`: `old` [B, M, D] their residual
        before it (the anchor), `new` what the step computed; the caller writes `new` into the residual.

        Their slopes are measured from the anchor, as a FULL step does, unless the anchor is the step
        right before (`F P`, `P P`), and the anchor moves to the step. With the K/V forecast
        (kv_forecast.py) a PARTIAL row is within a few tenths of a percent of the FULL value (measured
        on the suite's photo-pan-large: 0.1-0.5% against 1-8% for the forecast residual), so the REUSE
        steps after a PARTIAL step take its slope. Over a one-step gap that small error still turns
        into a poor slope (an early `F P R`: the REUSE rows 1.6% off with it, 1.1% with the FULL
        step's slope), so those rows keep theirs. Measured on the fidelity suite: docs/benchmarks.md.
        Before the K/V forecast, PARTIAL values were computed against stale K/V and keeping the FULL
        step's slope was better everywhere (0.3-1.8 dB more background).
        """
        rows = idx[0]
        t = timestep / TIME_SCALE
        self._at(t)
        inv = self._inverse_gap(t, self.t_last[rows], self.seen[rows])  # [M]; 0 where no anchor yet
        if self.steps[0] is not None:  # a row computed at the step before keeps its slope (see above)
            inv = torch.where(self.t_last[rows] == self.steps[0], torch.zeros_like(inv), inv)
        measured = (new.float() - old.float()) * inv[None, :, None]
        self.slope[:, rows] = torch.where(inv[None, :, None] != 0, measured, self.slope[:, rows].float()).to(
            self.slope.dtype
        )
        self.t_last[rows] = t
        self.seen[rows] = True

    def predict(self, residual: torch.Tensor, timestep: float) -> torch.Tensor:
        """The residual forecast for every token at `timestep`: [B, N, D] in the residual's dtype."""
        self._at(timestep / TIME_SCALE)
        h = timestep / TIME_SCALE - self.t_last  # [N]
        return torch.addcmul(residual, self.slope, h[None, :, None].to(self.slope.dtype))
