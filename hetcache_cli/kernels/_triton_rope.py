"""Triton kernel: rotary embedding of fresh keys fused with their scatter into a
full-length, post-rope key cache. Imported only through `dispatch.kernels("rope")`.

Grid (row blocks, heads, batch). Each program rotates BLOCK_ROWS rows of one head: pair
p of a head is (x[2p], x[2p+1]), rotated by cos[pos, 2p] and sin[pos, 2p+1] of the row's
position pos = idx[b, i], as diffusers' Wan attention does. Math in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hetcache_cli.kernels._triton_tokens import _cast_to, _rne_by_bits

_TILE_ELEMENTS = 4096


@triton.jit
def _rope_scatter_kernel(
    p_cache, p_idx, p_k, p_cos, p_sin,
    M, HALF,
    stride_cb, stride_cn, stride_ch,
    stride_ib, stride_im,
    stride_kb, stride_km, stride_kh,
    stride_tn, stride_td,
    RNE_BY_BITS: tl.constexpr,
    BLOCK_ROWS: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    i_m, i_h, i_b = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    o_m = i_m * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    o_p = tl.arange(0, BLOCK_HALF)
    m_m = o_m < M
    m_mp = m_m[:, None] & (o_p < HALF)[None, :]
    o_even, o_odd = (2 * o_p)[None, :], (2 * o_p + 1)[None, :]

    b_pos = tl.load(p_idx + i_b * stride_ib + o_m * stride_im, mask=m_m, other=0).to(tl.int64)[:, None]
    p_row = p_k + i_b * stride_kb + o_m.to(tl.int64)[:, None] * stride_km + i_h * stride_kh
    b_x1 = tl.load(p_row + o_even, mask=m_mp, other=0.0).to(tl.float32)
    b_x2 = tl.load(p_row + o_odd, mask=m_mp, other=0.0).to(tl.float32)
    b_cos = tl.load(p_cos + b_pos * stride_tn + o_even * stride_td, mask=m_mp, other=0.0).to(tl.float32)
    b_sin = tl.load(p_sin + b_pos * stride_tn + o_odd * stride_td, mask=m_mp, other=0.0).to(tl.float32)
    b_y1 = b_x1 * b_cos - b_x2 * b_sin
    b_y2 = b_x1 * b_sin + b_x2 * b_cos

    dtype = p_cache.dtype.element_ty
    p_dst = p_cache + i_b * stride_cb + b_pos * stride_cn + i_h * stride_ch
    tl.store(p_dst + o_even, _cast_to(b_y1, dtype, RNE_BY_BITS), mask=m_mp)
    tl.store(p_dst + o_odd, _cast_to(b_y2, dtype, RNE_BY_BITS), mask=m_mp)


# cache[b, idx[b, i], h] = rope(k[b, i, h], cos[idx[b, i]], sin[idx[b, i]])
def rope_scatter_(
    cache: torch.Tensor, idx: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    B, M, H, head_dim = k.shape
    if k.numel() == 0:
        return cache
    half = head_dim // 2
    block_half = triton.next_power_of_2(half)
    block_rows = max(1, _TILE_ELEMENTS // (2 * block_half))
    grid = (triton.cdiv(M, block_rows), H, B)
    _rope_scatter_kernel[grid](
        cache, idx, k, cos, sin, M, half,
        cache.stride(0), cache.stride(1), cache.stride(2), idx.stride(0), idx.stride(1),
        k.stride(0), k.stride(1), k.stride(2), cos.stride(0), cos.stride(1),
        RNE_BY_BITS=_rne_by_bits(cache), BLOCK_ROWS=block_rows, BLOCK_HALF=block_half,
    )
    return cache
