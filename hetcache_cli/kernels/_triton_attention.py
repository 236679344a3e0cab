"""Triton kernels for attention mass: the softmax probability each key receives, summed
over a set of queries, without materialising the [G, N] probability matrix.

Pass 1 (`_row_lse_kernel`, grid (G blocks, B*H)): for each query row, the log-sum-exp of
its logits over all N keys, online over key blocks (running max and rescaled sum).
Pass 2 (`_key_mass_kernel`, grid (N blocks, B*H)): for each key, sum over query blocks of
exp(logit - lse). Both passes work in base 2 (exp2/log2, logits scaled by log2(e)).
The per-head masses [B, H, N] are averaged over heads in torch: deterministic, no atomics.
Imported only through `dispatch.kernels("attention")`.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from hetcache_cli.kernels import dispatch

_LOG2_E = 1.0 / math.log(2.0)
_MAX_BLOCK = 64


@triton.jit
def _row_lse_kernel(
    p_q, p_k, p_lse,
    H, G, N, HEAD_DIM, qk_scale,
    stride_qb, stride_qh, stride_qg, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    i_g, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    o_g = i_g * BLOCK_G + tl.arange(0, BLOCK_G)
    o_d = tl.arange(0, BLOCK_D)
    m_g, m_d = o_g < G, o_d < HEAD_DIM

    p_qb = p_q + i_b * stride_qb + i_h * stride_qh + o_g[:, None] * stride_qg + o_d[None, :] * stride_qd
    b_q = tl.load(p_qb, mask=m_g[:, None] & m_d[None, :], other=0.0)  # [BLOCK_G, BLOCK_D]
    if UPCAST:
        b_q = b_q.to(tl.float32)
    p_kh = p_k + i_b * stride_kb + i_h * stride_kh
    b_max = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    b_sum = tl.zeros([BLOCK_G], dtype=tl.float32)
    for n_start in range(0, N, BLOCK_N):
        o_n = n_start + tl.arange(0, BLOCK_N)
        m_n = o_n < N
        p_kt = p_kh + o_d[:, None] * stride_kd + o_n[None, :] * stride_kn
        b_kt = tl.load(p_kt, mask=m_d[:, None] & m_n[None, :], other=0.0)  # [BLOCK_D, BLOCK_N]
        if UPCAST:
            b_kt = b_kt.to(tl.float32)
        b_s = tl.dot(b_q, b_kt, input_precision=PRECISION) * qk_scale  # base-2 logits
        b_s = tl.where(m_n[None, :], b_s, float("-inf"))
        b_new_max = tl.maximum(b_max, tl.max(b_s, axis=1))
        b_sum = b_sum * tl.exp2(b_max - b_new_max) + tl.sum(tl.exp2(b_s - b_new_max[:, None]), axis=1)
        b_max = b_new_max
    tl.store(p_lse + i_bh * G + o_g, b_max + tl.log2(b_sum), mask=m_g)


@triton.jit
def _key_mass_kernel(
    p_q, p_k, p_lse, p_mass,
    H, G, N, HEAD_DIM, qk_scale,
    stride_qb, stride_qh, stride_qg, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), (i_bh % H).to(tl.int64)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_d = tl.arange(0, BLOCK_D)
    m_n, m_d = o_n < N, o_d < HEAD_DIM

    p_kt = p_k + i_b * stride_kb + i_h * stride_kh + o_d[:, None] * stride_kd + o_n[None, :] * stride_kn
    b_kt = tl.load(p_kt, mask=m_d[:, None] & m_n[None, :], other=0.0)  # [BLOCK_D, BLOCK_N]
    if UPCAST:
        b_kt = b_kt.to(tl.float32)
    p_qh = p_q + i_b * stride_qb + i_h * stride_qh
    b_mass = tl.zeros([BLOCK_N], dtype=tl.float32)
    for g_start in range(0, G, BLOCK_G):
        o_g = g_start + tl.arange(0, BLOCK_G)
        m_g = o_g < G
        p_qb = p_qh + o_g[:, None] * stride_qg + o_d[None, :] * stride_qd
        b_q = tl.load(p_qb, mask=m_g[:, None] & m_d[None, :], other=0.0)  # [BLOCK_G, BLOCK_D]
        if UPCAST:
            b_q = b_q.to(tl.float32)
        # padded query rows get lse = +inf, so their probabilities are exactly 0
        b_lse = tl.load(p_lse + i_bh * G + o_g, mask=m_g, other=float("inf"))
        b_s = tl.dot(b_q, b_kt, input_precision=PRECISION) * qk_scale
        b_mass += tl.sum(tl.exp2(b_s - b_lse[:, None]), axis=0)
    tl.store(p_mass + i_bh * N + o_n, b_mass, mask=m_n)


def _block(n: int) -> int:
    # tl.dot needs every tile side >= 16
    return min(_MAX_BLOCK, max(16, triton.next_power_of_2(n)))


# out[b, n] = mean_h sum_g softmax_n(q[b, h, g] . k[b, h, n] * scale)
def attention_mass(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    B, H, G, d = q.shape
    N = k.shape[2]
    # The 3.9 interpreter multiplies bf16 dot operands as raw integers: give it float32.
    upcast = dispatch.interpreted()
    precision = "ieee" if upcast or q.dtype == torch.float32 else "tf32"  # tf32 is ignored for 16-bit
    lse = torch.empty(B * H, G, dtype=torch.float32, device=q.device)
    mass = torch.empty(B, H, N, dtype=torch.float32, device=q.device)
    block_g, block_n, block_d = _block(G), _block(N), max(16, triton.next_power_of_2(d))
    common = dict(UPCAST=upcast, PRECISION=precision, BLOCK_G=block_g, BLOCK_N=block_n, BLOCK_D=block_d)
    args = (H, G, N, d, scale * _LOG2_E, *q.stride(), *k.stride())
    _row_lse_kernel[(triton.cdiv(G, block_g), B * H)](q, k, lse, *args, **common)
    _key_mass_kernel[(triton.cdiv(N, block_n), B * H)](q, k, lse, mass, *args, **common)
    return mass.mean(dim=1)
