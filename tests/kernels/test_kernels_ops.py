"""Each op on both backends against the plain-torch reference, over tiny odd shapes.

The `use_triton` fixture (conftest.py) runs every test on the torch path and, under the
Triton interpreter, on the Triton kernels; row moves must match the reference exactly.
"""

from __future__ import annotations

import pytest
import torch
from kernel_helpers import BLEND_TOL, DTYPES, MASS_TOL, index, tokens

from hetcache_cli.kernels import (
    attention_mass,
    build_slot_map,
    gather_tokens,
    merge_tokens,
    scatter_tokens_,
)
from hetcache_cli.kernels import reference as ref

# (B, N, D, M, index dtype, sorted): odd N, D not a power of two, M = 0, M = N, and
# D = 600 > 512 so that the kernels use several column and row blocks
SHAPES = [
    (2, 37, 24, 11, torch.int64, False),
    (1, 63, 40, 63, torch.int32, True),
    (2, 37, 40, 0, torch.int64, True),
    (2, 63, 600, 37, torch.int32, False),
]
SHAPE_IDS = ["B2-N37-D24-M11", "B1-N63-D40-MN", "B2-M0", "B2-D600"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gather_matches_reference(shape, dtype, use_triton):
    B, N, D, M, idx_dtype, sort = shape
    x, idx = tokens(B, N, D, dtype, 1), index(B, M, N, idx_dtype, sort=sort, seed=2)
    out = gather_tokens(x, idx, use_triton=use_triton)
    assert out.shape == (B, M, D) and out.is_contiguous()
    assert torch.equal(out, ref.gather_tokens_ref(x, idx))


def test_gather_allows_repeated_indices(use_triton):
    x = tokens(2, 37, 24, torch.float32, 1)
    idx = torch.tensor([[5, 5, 0, 36], [1, 1, 1, 2]])
    assert torch.equal(gather_tokens(x, idx, use_triton=use_triton), ref.gather_tokens_ref(x, idx))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_scatter_matches_reference(shape, dtype, use_triton):
    B, N, D, M, idx_dtype, sort = shape
    dst, idx = tokens(B, N, D, dtype, 3), index(B, M, N, idx_dtype, sort=sort, seed=4)
    src = tokens(B, M, D, dtype, 5)
    expected = ref.scatter_tokens_ref(dst, idx, src)
    out = scatter_tokens_(dst, idx, src, use_triton=use_triton)
    assert out is dst
    assert torch.equal(dst, expected)


def _alphas(B: int, M: int):
    g = torch.Generator().manual_seed(6)
    return {
        "float": 0.3,
        "0-dim": torch.tensor(0.8),
        "per-row": torch.rand(B, M, generator=g),
        "per-row-bf16": torch.rand(B, M, generator=g).to(torch.bfloat16),
    }


@pytest.mark.parametrize("kind", ["float", "0-dim", "per-row", "per-row-bf16"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_blend_matches_reference(shape, dtype, kind, use_triton):
    B, N, D, M, idx_dtype, sort = shape
    dst, idx = tokens(B, N, D, dtype, 7), index(B, M, N, idx_dtype, sort=sort, seed=8)
    src, alpha = tokens(B, M, D, dtype, 9), _alphas(B, M)[kind]
    expected = ref.scatter_tokens_ref(dst, idx, src, alpha)
    scatter_tokens_(dst, idx, src, alpha, use_triton=use_triton)
    torch.testing.assert_close(dst, expected, **BLEND_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_blend_endpoints_are_exact(dtype, use_triton):
    dst, idx, src = tokens(2, 37, 24, dtype, 10), index(2, 9, 37, seed=11), tokens(2, 9, 24, dtype, 12)
    keep = dst.clone()
    scatter_tokens_(dst, idx, src, 1.0, use_triton=use_triton)
    assert torch.equal(dst, keep)
    scatter_tokens_(dst, idx, src, torch.zeros(()), use_triton=use_triton)
    assert torch.equal(dst, ref.scatter_tokens_ref(keep, idx, src))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_merge_matches_reference(shape, dtype, use_triton):
    B, N, D, M, idx_dtype, sort = shape
    base, residual = tokens(B, N, D, dtype, 13), tokens(B, N, D, dtype, 14)
    idx, active = index(B, M, N, idx_dtype, sort=sort, seed=15), tokens(B, M, D, dtype, 16)
    expected = ref.merge_tokens_ref(base, residual, idx, active)
    assert torch.equal(merge_tokens(base, residual, idx, active, use_triton=use_triton), expected)
    slot = build_slot_map(idx, N)
    assert torch.equal(merge_tokens(base, residual, idx, active, slot=slot, use_triton=use_triton), expected)
    assert torch.equal(merge_tokens(base, residual, idx, active, slot=slot.long(), use_triton=use_triton), expected)


def test_merge_into_base_in_place(use_triton):
    base, residual = tokens(2, 37, 40, torch.bfloat16, 17), tokens(2, 37, 40, torch.bfloat16, 18)
    idx, active = index(2, 12, 37, seed=19), tokens(2, 12, 40, torch.bfloat16, 20)
    expected = ref.merge_tokens_ref(base, residual, idx, active)
    out = merge_tokens(base, residual, idx, active, out=base, use_triton=use_triton)
    assert out is base and torch.equal(base, expected)


def test_build_slot_map_inverts_idx():
    idx = index(2, 11, 37, torch.int32, seed=21)
    slot = build_slot_map(idx, 37)
    assert slot.dtype == torch.int32 and slot.shape == (2, 37)
    for b in range(2):
        assert torch.equal(slot[b, idx[b].long()], torch.arange(11, dtype=torch.int32))
        assert int((slot[b] >= 0).sum()) == 11 and bool((slot[b][slot[b] < 0] == -1).all())


# Layout: rows with a stride (a view into a wider buffer) are used in place; rows that
# are not contiguous are copied for inputs and rejected for outputs (test_kernels_errors)
def test_strided_rows_and_transposed_inputs(use_triton):
    B, N, D, M = 2, 37, 24, 10
    wide = tokens(B, N, 2 * D, torch.float32, 22)
    x = wide[..., :D]  # row stride 2D, rows contiguous
    xt = tokens(B, D, N, torch.float32, 23).transpose(1, 2)  # rows not contiguous
    idx = index(B, 2 * M, N, seed=24)[:, ::2]  # non-contiguous index
    for inp in (x, xt):
        assert torch.equal(gather_tokens(inp, idx, use_triton=use_triton), ref.gather_tokens_ref(inp, idx))
    src = tokens(B, D, M, torch.float32, 25).transpose(1, 2)
    expected = ref.scatter_tokens_ref(x, idx, src, 0.25)
    untouched = wide[..., D:].clone()
    scatter_tokens_(x, idx, src, 0.25, use_triton=use_triton)
    torch.testing.assert_close(x, expected, **BLEND_TOL[torch.float32])
    assert torch.equal(wide[..., D:], untouched)
    active = tokens(B, D, M, torch.float32, 26).transpose(1, 2)
    merged = merge_tokens(xt, x, idx, active, use_triton=use_triton)
    assert torch.equal(merged, ref.merge_tokens_ref(xt, x, idx, active))


def test_duplicate_scatter_rows_leave_other_rows_exact(use_triton):
    # without check=True the row written for a repeated index is undefined; all others exact
    dst, src = tokens(1, 37, 24, torch.float32, 27), tokens(1, 5, 24, torch.float32, 28)
    idx = torch.tensor([[3, 8, 3, 20, 31]])
    expected = ref.scatter_tokens_ref(dst, idx[:, [1, 3, 4]], src[:, [1, 3, 4]])
    scatter_tokens_(dst, idx, src, use_triton=use_triton)
    others = torch.ones(37, dtype=torch.bool)
    others[3] = False
    assert torch.equal(dst[:, others], expected[:, others])


ATTN_SHAPES = [(2, 3, 20, 63, 24), (1, 2, 1, 37, 40), (2, 1, 33, 17, 16)]  # (B, H, G, N, d)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ATTN_SHAPES, ids=lambda s: "B{}-H{}-G{}-N{}-d{}".format(*s))
def test_attention_mass_matches_reference(shape, dtype, use_triton):
    B, H, G, N, d = shape
    q = (2.0 * tokens(B * H, G, d, torch.float32, 29)).view(B, H, G, d).to(dtype)
    k = tokens(B * H, N, d, torch.float32, 30).view(B, H, N, d).to(dtype)
    expected = ref.attention_mass_ref(q, k)
    for chunk in (7, 1024):
        out = attention_mass(q, k, chunk=chunk, use_triton=use_triton)
        assert out.dtype == torch.float32 and out.shape == (B, N)
        torch.testing.assert_close(out, expected, **MASS_TOL)
    torch.testing.assert_close(out.sum(dim=1), torch.full((B,), float(G)), rtol=1e-5, atol=1e-4)


def test_attention_mass_strided_layout_and_scale(use_triton):
    B, H, G, N, d = 1, 2, 9, 37, 24
    q = tokens(B, G, H * d, torch.bfloat16, 31).view(B, G, H, d).transpose(1, 2)  # [B, H, G, d] view
    k = tokens(B, N, H * d, torch.bfloat16, 32).view(B, N, H, d).transpose(1, 2)
    expected = ref.attention_mass_ref(q, k, scale=0.5)
    torch.testing.assert_close(attention_mass(q, k, 0.5, use_triton=use_triton), expected, **MASS_TOL)


def test_attention_mass_empty_sides(use_triton):
    q, k = torch.randn(2, 3, 0, 16), torch.randn(2, 3, 37, 16)
    assert torch.equal(attention_mass(q, k, use_triton=use_triton), torch.zeros(2, 37))
    assert attention_mass(k, q, use_triton=use_triton).shape == (2, 0)
