"""Triton kernels that move token rows: gather, scatter/blend and merge.

Imported only through `dispatch.kernels("tokens")`, after the arguments were checked by
the public wrappers in `tokens.py`. Every kernel works on a tile of BLOCK_ROWS rows by
BLOCK_D columns; the grid is (row blocks, column blocks, batch). Rows must be contiguous
(stride 1 along D); batch and row strides are free. Row offsets are computed in int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hetcache_cli.kernels import dispatch

_TILE_ELEMENTS = 4096  # elements per program: 8 KiB of bf16, enough to keep loads wide
_MAX_BLOCK_D = 512  # divides D = 1536 and 5120 (Wan 1.3B / 14B) without masked lanes


def _blocks(n_cols: int) -> tuple[int, int]:
    block_d = min(triton.next_power_of_2(max(n_cols, 1)), _MAX_BLOCK_D)
    return max(1, _TILE_ELEMENTS // block_d), block_d


def _rne_by_bits(t: torch.Tensor) -> bool:
    # The 3.9 interpreter truncates float32 -> bfloat16; round to nearest even by hand there
    # (NaN payloads aside) so that interpreter runs stay bit-exact with torch. Compiled kernels
    # use the native cast.
    return t.dtype == torch.bfloat16 and dispatch.interpreted()


@triton.jit
def _cast_to(b_x, DTYPE: tl.constexpr, RNE_BY_BITS: tl.constexpr):
    if RNE_BY_BITS:
        b_bits = b_x.to(tl.uint32, bitcast=True)
        b_bits = b_bits + (((b_bits >> 16) & 1) + 0x7FFF)
        b_out = (b_bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        b_out = b_x.to(DTYPE)
    return b_out


@triton.jit
def _gather_kernel(
    p_x, p_idx, p_out,
    M, D,
    stride_xb, stride_xn,
    stride_ib, stride_im,
    stride_ob, stride_om,
    BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    i_m, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_m = i_m * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_m = o_m < M
    m_md = m_m[:, None] & (o_d < D)[None, :]

    b_idx = tl.load(p_idx + i_b * stride_ib + o_m * stride_im, mask=m_m, other=0).to(tl.int64)
    p_rows = p_x + i_b * stride_xb + b_idx[:, None] * stride_xn + o_d[None, :]
    b_rows = tl.load(p_rows, mask=m_md)
    p_dst = p_out + i_b * stride_ob + o_m.to(tl.int64)[:, None] * stride_om + o_d[None, :]
    tl.store(p_dst, b_rows, mask=m_md)


@triton.jit
def _scatter_kernel(
    p_dst, p_idx, p_src, p_alpha,
    alpha, M, D,
    stride_db, stride_dn,
    stride_ib, stride_im,
    stride_sb, stride_sm,
    stride_ab, stride_am,
    ALPHA_MODE: tl.constexpr,  # 0: copy, 1: scalar `alpha`, 2: one weight per row at p_alpha
    RNE_BY_BITS: tl.constexpr,
    BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    i_m, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_m = i_m * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_m = o_m < M
    m_md = m_m[:, None] & (o_d < D)[None, :]

    b_idx = tl.load(p_idx + i_b * stride_ib + o_m * stride_im, mask=m_m, other=0).to(tl.int64)
    p_s = p_src + i_b * stride_sb + o_m.to(tl.int64)[:, None] * stride_sm + o_d[None, :]
    p_d = p_dst + i_b * stride_db + b_idx[:, None] * stride_dn + o_d[None, :]
    b_src = tl.load(p_s, mask=m_md)
    if ALPHA_MODE == 0:
        tl.store(p_d, b_src, mask=m_md)
    else:
        if ALPHA_MODE == 1:
            b_alpha = alpha
        else:
            p_a = p_alpha + i_b * stride_ab + o_m * stride_am
            b_alpha = tl.load(p_a, mask=m_m, other=0.0).to(tl.float32)[:, None]
        b_dst = tl.load(p_d, mask=m_md, other=0.0).to(tl.float32)
        b_mix = b_alpha * b_dst + (1.0 - b_alpha) * b_src.to(tl.float32)
        tl.store(p_d, _cast_to(b_mix, p_dst.dtype.element_ty, RNE_BY_BITS), mask=m_md)


@triton.jit
def _merge_kernel(
    p_base, p_res, p_slot, p_act, p_out,
    N, D,
    stride_bb, stride_bn,
    stride_rb, stride_rn,
    stride_lb, stride_ln,
    stride_ab, stride_am,
    stride_ob, stride_on,
    RNE_BY_BITS: tl.constexpr,
    BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    i_n, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    o_n = i_n * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_n = o_n < N
    m_d = (o_d < D)[None, :]

    b_slot = tl.load(p_slot + i_b * stride_lb + o_n * stride_ln, mask=m_n, other=-1).to(tl.int64)
    m_act = b_slot >= 0
    m_keep = m_n & (b_slot < 0)
    o_n64 = o_n.to(tl.int64)[:, None]
    # each row is read from exactly one source: base + residual, or its active row
    b_base = tl.load(p_base + i_b * stride_bb + o_n64 * stride_bn + o_d[None, :], mask=m_keep[:, None] & m_d, other=0.0)
    b_res = tl.load(p_res + i_b * stride_rb + o_n64 * stride_rn + o_d[None, :], mask=m_keep[:, None] & m_d, other=0.0)
    b_sum = _cast_to(b_base.to(tl.float32) + b_res.to(tl.float32), p_out.dtype.element_ty, RNE_BY_BITS)
    p_a = p_act + i_b * stride_ab + tl.maximum(b_slot, 0)[:, None] * stride_am + o_d[None, :]
    b_act = tl.load(p_a, mask=m_act[:, None] & m_d, other=0.0)
    b_out = tl.where(m_act[:, None], b_act, b_sum)
    tl.store(p_out + i_b * stride_ob + o_n64 * stride_on + o_d[None, :], b_out, mask=m_n[:, None] & m_d)


# out[b, i] = x[b, idx[b, i]]
def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    (B, _, D), M = x.shape, idx.shape[1]
    out = x.new_empty(B, M, D)
    if out.numel() == 0:
        return out
    block_rows, block_d = _blocks(D)
    grid = (triton.cdiv(M, block_rows), triton.cdiv(D, block_d), B)
    _gather_kernel[grid](
        x, idx, out, M, D,
        x.stride(0), x.stride(1), idx.stride(0), idx.stride(1), out.stride(0), out.stride(1),
        BLOCK_ROWS=block_rows, BLOCK_D=block_d,
    )
    return out


# dst[b, idx[b, i]] = src[b, i]   or   alpha * dst[b, idx[b, i]] + (1 - alpha) * src[b, i]
def scatter_(
    dst: torch.Tensor, idx: torch.Tensor, src: torch.Tensor, alpha: float | torch.Tensor | None
) -> torch.Tensor:
    (B, M, D) = src.shape
    if src.numel() == 0:
        return dst
    if alpha is None:
        mode, scalar, weights = 0, 0.0, src
        w_strides = (0, 0)
    elif isinstance(alpha, torch.Tensor):
        mode, scalar, weights = 2, 0.0, alpha.expand(B, M)
        w_strides = (weights.stride(0), weights.stride(1))
    else:
        mode, scalar, weights = 1, float(alpha), src
        w_strides = (0, 0)
    block_rows, block_d = _blocks(D)
    grid = (triton.cdiv(M, block_rows), triton.cdiv(D, block_d), B)
    _scatter_kernel[grid](
        dst, idx, src, weights, scalar, M, D,
        dst.stride(0), dst.stride(1), idx.stride(0), idx.stride(1),
        src.stride(0), src.stride(1), *w_strides,
        ALPHA_MODE=mode, RNE_BY_BITS=_rne_by_bits(dst), BLOCK_ROWS=block_rows, BLOCK_D=block_d,
    )
    return dst


# out = base + residual; out[b, n] = active[b, slot[b, n]] where slot[b, n] >= 0
def merge(
    base: torch.Tensor, residual: torch.Tensor, slot: torch.Tensor, active: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    B, N, D = base.shape
    if out.numel() == 0:
        return out
    block_rows, block_d = _blocks(D)
    grid = (triton.cdiv(N, block_rows), triton.cdiv(D, block_d), B)
    _merge_kernel[grid](
        base, residual, slot, active, out, N, D,
        base.stride(0), base.stride(1), residual.stride(0), residual.stride(1),
        slot.stride(0), slot.stride(1), active.stride(0), active.stride(1),
        out.stride(0), out.stride(1),
        RNE_BY_BITS=_rne_by_bits(out), BLOCK_ROWS=block_rows, BLOCK_D=block_d,
    )
    return out
