"""Rotary embedding of fresh keys fused with their scatter into a post-rope key cache.

On a PARTIAL step the engine computes post-norm keys for the active rows only and must
write them, rotated, into the layer's full-length key cache: one pass instead of a rope
kernel, a temporary and a scatter. The rotation is diffusers' Wan convention: pairs
(x[2p], x[2p + 1]), rotated by freqs_cos[..., 2p] and freqs_sin[..., 2p + 1], where
freqs_cos / freqs_sin [1, N, 1, head_dim] (or [N, head_dim]) are the rotary tables of the
full token grid that `WanRotaryPosEmbed` returns; row i is rotated by position idx[b, i].
Math in float32, one rounding to the cache dtype (as diffusers does).
"""

from __future__ import annotations

import torch

from hetcache_cli.kernels import _checks, dispatch


# cache[b, idx[b, i], h] = rope(k[b, i, h], freqs_cos[idx[b, i]], freqs_sin[idx[b, i]])
def rope_scatter_tokens_(
    cache: torch.Tensor,
    idx: torch.Tensor,
    k: torch.Tensor,
    freqs_cos: torch.Tensor,
    freqs_sin: torch.Tensor,
    *,
    use_triton: bool | None = None,
    check: bool = False,
) -> torch.Tensor:
    """Rotate k [B, M, H, head_dim] by the positions idx [B, M] and write it into
    cache [B, N, H, head_dim] at those rows, in place; returns cache."""
    op = "rope_scatter_tokens_"
    for name, t in (("cache", cache), ("k", k)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{op}: {name} must be [B, tokens, H, head_dim], got {shape}")
        if t.dtype not in _checks.FLOAT_DTYPES:
            raise ValueError(f"{op}: {name} must be float32, float16 or bfloat16, got {t.dtype}")
    B, N, H, head_dim = cache.shape
    _checks.check_index(op, idx, cache, "cache")
    M = idx.shape[1]
    if tuple(k.shape) != (B, M, H, head_dim):
        raise ValueError(
            f"{op}: k must have shape {(B, M, H, head_dim)} to match cache {tuple(cache.shape)} "
            f"and idx {tuple(idx.shape)}, got {tuple(k.shape)}"
        )
    if k.dtype != cache.dtype:
        raise ValueError(f"{op}: k is {k.dtype} but cache is {cache.dtype}; cast one of them")
    _checks.check_device(op, "k", k, cache, "cache")
    if head_dim % 2:
        raise ValueError(f"{op}: head_dim must be even for rotary pairs, got {head_dim}")
    cos = _table(op, "freqs_cos", freqs_cos, N, head_dim, cache)  # [N, head_dim] float32
    sin = _table(op, "freqs_sin", freqs_sin, N, head_dim, cache)
    _checks.check_writable(op, "cache", cache)
    if check:
        _checks.validate_index_values(op, idx, N, unique=True)
    k = _checks.rows_contiguous(k)
    if dispatch.resolve_use_triton(use_triton, cache, idx, k, cos, sin, op=op):
        return dispatch.kernels("rope").rope_scatter_(cache, idx, k, cos, sin)
    if M == 0:
        return cache
    index = idx.long()
    for b in range(B):  # B is 1 or 2
        c = cos.index_select(0, index[b])[:, None, 0::2]  # [M, 1, head_dim / 2]
        s = sin.index_select(0, index[b])[:, None, 1::2]
        x1, x2 = k[b].unflatten(-1, (-1, 2)).unbind(-1)  # [M, H, head_dim / 2] each
        rotated = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)
        cache[b].index_copy_(0, index[b], rotated.to(cache.dtype))
    return cache


def _table(op: str, name: str, t: torch.Tensor, N: int, head_dim: int, cache: torch.Tensor) -> torch.Tensor:
    """A rotary table as a contiguous float32 [N, head_dim] tensor (no copy when it is one)."""
    is_table = isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() >= 1
    if not is_table or t.numel() != N * head_dim or t.shape[-1] != head_dim:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(
            f"{op}: {name} must be a float [1, N, 1, head_dim] or [N, head_dim] table with "
            f"N = {N} and head_dim = {head_dim} from cache, got {shape}"
        )
    _checks.check_device(op, name, t, cache, "cache")
    return t.reshape(N, head_dim).float().contiguous()
