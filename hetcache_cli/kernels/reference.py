"""Plain-torch references for the token kernels, written for clarity, not speed.

Tests compare the Triton kernels and the torch paths against these. Nothing here calls
into the rest of `hetcache_cli.kernels`. Blends and attention mass are computed in
float32 and cast back, which is the precision contract of the kernels.
"""

from __future__ import annotations

import math

import torch


def gather_tokens_ref(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    # out[b, i] = x[b, idx[b, i]]
    batch = torch.arange(x.shape[0], device=x.device)[:, None]  # [B, 1]
    return x[batch, idx.long()].clone()  # [B, M, D]


def scatter_tokens_ref(
    dst: torch.Tensor,
    idx: torch.Tensor,
    src: torch.Tensor,
    alpha: float | torch.Tensor | None = None,
) -> torch.Tensor:
    # out = dst.clone(); out[b, idx[b, i]] = src[b, i]                       (alpha None)
    # out[b, idx[b, i]] = alpha * dst[b, idx[b, i]] + (1 - alpha) * src[b, i] (blend)
    out = dst.clone()
    batch = torch.arange(dst.shape[0], device=dst.device)[:, None]  # [B, 1]
    rows = idx.long()
    if alpha is None:
        out[batch, rows] = src
        return out
    weight = torch.as_tensor(alpha, dtype=torch.float32, device=dst.device)
    if weight.dim() == 2:
        weight = weight[..., None]  # [B, M, 1]: one weight per row
    mixed = weight * dst[batch, rows].float() + (1.0 - weight) * src.float()
    out[batch, rows] = mixed.to(dst.dtype)
    return out


def merge_tokens_ref(
    base: torch.Tensor, residual: torch.Tensor, idx: torch.Tensor, active: torch.Tensor
) -> torch.Tensor:
    # out = base + residual; out[b, idx[b, i]] = active[b, i]
    out = base + residual
    batch = torch.arange(base.shape[0], device=base.device)[:, None]
    out[batch, idx.long()] = active
    return out


def attention_mass_ref(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    # out[b, n] = mean_h sum_g softmax_n(q[b, h, g] . k[b, h, n] * scale)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    logits = torch.einsum("bhgd,bhnd->bhgn", q.double(), k.double()) * scale  # [B, H, G, N]
    probs = torch.softmax(logits, dim=-1)
    return probs.sum(dim=2).mean(dim=1).float()  # [B, N]
