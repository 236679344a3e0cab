"""Argument errors: every check raises ValueError naming the shapes or values at fault,
before any backend runs, so these tests hold for both backends."""

from __future__ import annotations

import pytest
import torch
from kernel_helpers import index, tokens

from hetcache_cli.kernels import (
    attention_mass,
    build_slot_map,
    gather_tokens,
    merge_tokens,
    scatter_tokens_,
)

B, N, D, M = 2, 37, 24, 5


@pytest.fixture
def case():
    return tokens(B, N, D, torch.float32, 0), index(B, M, N, seed=1), tokens(B, M, D, torch.float32, 2)


def test_gather_rejects_bad_shapes_and_dtypes(case):
    x, idx, _ = case
    with pytest.raises(ValueError, match=r"x must be \[B, N, D\], got shape \(37, 24\)"):
        gather_tokens(x[0], idx)
    with pytest.raises(ValueError, match=r"B = 2 from x \(2, 37, 24\), got idx \(1, 5\)"):
        gather_tokens(x, idx[:1])
    with pytest.raises(ValueError, match=r"got idx \(10,\)"):
        gather_tokens(x, idx.flatten())
    with pytest.raises(ValueError, match="idx must be int32 or int64, got torch.float32"):
        gather_tokens(x, idx.float())
    with pytest.raises(ValueError, match="x must be float32, float16 or bfloat16, got torch.float64"):
        gather_tokens(x.double(), idx)


def test_device_mismatch_is_rejected(case):
    x, idx, src = case
    with pytest.raises(ValueError, match="idx is on meta but x is on cpu"):
        gather_tokens(x, idx.to("meta"))
    with pytest.raises(ValueError, match="src is on meta but dst is on cpu"):
        scatter_tokens_(x, idx, src.to("meta"))
    with pytest.raises(ValueError, match="alpha is on meta but dst is on cpu"):
        scatter_tokens_(x, idx, src, torch.tensor(0.5, device="meta"))


def test_scatter_rejects_mismatched_src_and_alpha(case):
    dst, idx, src = case
    with pytest.raises(ValueError, match=r"src must have shape \(2, 5, 24\) to match dst \(2, 37, 24\), got \(2, 5"):
        scatter_tokens_(dst, idx, src[..., :-1])
    with pytest.raises(ValueError, match="src is torch.float16 but dst is torch.float32"):
        scatter_tokens_(dst, idx, src.half())
    with pytest.raises(ValueError, match=r"alpha must be 0-dim or \[B, M\] = \(2, 5\).*got \(5,\)"):
        scatter_tokens_(dst, idx, src, torch.rand(M))
    with pytest.raises(ValueError, match="alpha must be a floating tensor"):
        scatter_tokens_(dst, idx, src, torch.ones(B, M, dtype=torch.int64))
    with pytest.raises(ValueError, match="alpha must be None, a float or a tensor, got str"):
        scatter_tokens_(dst, idx, src, "0.5")


def test_written_tensors_need_contiguous_rows(case):
    _, idx, src = case
    dst = tokens(B, D, N, torch.float32, 3).transpose(1, 2)
    before = dst.clone()
    with pytest.raises(ValueError, match=r"dst is written in place, so its rows must be contiguous.*\(888, 1, 37\)"):
        scatter_tokens_(dst, idx, src, use_triton=False)
    assert torch.equal(dst, before)
    base = tokens(B, N, D, torch.float32, 4)
    with pytest.raises(ValueError, match="out is written in place, so its rows must be contiguous"):
        merge_tokens(base, base, idx, src, out=dst)


def test_merge_rejects_bad_residual_active_and_slot(case):
    base, idx, active = case
    with pytest.raises(ValueError, match=r"residual must have shape \(2, 37, 24\) to match base .*got \(2, 36, 24\)"):
        merge_tokens(base, base[:, :-1], idx, active)
    with pytest.raises(ValueError, match=r"active must have shape \(2, 5, 24\) to match base"):
        merge_tokens(base, base, idx, active[:, :-1])
    with pytest.raises(ValueError, match=r"slot must be an int32 or int64 \[B, N\] = \(2, 37\)"):
        merge_tokens(base, base, idx, active, slot=torch.zeros(2, 36, dtype=torch.int32))
    with pytest.raises(ValueError, match="slot must be an int32 or int64"):
        merge_tokens(base, base, idx, active, slot=torch.zeros(2, 37))
    with pytest.raises(ValueError, match="build_slot_map: idx must be an int32 or int64"):
        build_slot_map(idx.float(), N)


@pytest.mark.parametrize("bad", [-1, N])
def test_check_rejects_out_of_range_indices(case, bad):
    x, idx, src = case
    idx = idx.clone()
    idx[1, 2] = bad
    with pytest.raises(ValueError, match=r"idx values must lie in \[0, 37\), got min"):
        gather_tokens(x, idx, check=True)
    with pytest.raises(ValueError, match=r"idx values must lie in \[0, 37\)"):
        scatter_tokens_(x, idx, src, check=True)
    with pytest.raises(ValueError, match=r"idx values must lie in \[0, 37\)"):
        merge_tokens(x, x, idx, src, check=True)


def test_check_rejects_repeated_scatter_indices(case):
    x, idx, src = case
    idx = idx.clone()
    idx[1, 3] = idx[1, 0]
    before = x.clone()
    with pytest.raises(ValueError, match=rf"repeated index {int(idx[1, 0])} in batch row 1"):
        scatter_tokens_(x, idx, src, check=True)
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="repeated index"):
        merge_tokens(x, x, idx, src, check=True)
    assert gather_tokens(x, idx, check=True).shape == (B, M, D)  # repeats are fine for a gather


def test_check_accepts_valid_indices(case):
    x, idx, src = case
    assert torch.equal(scatter_tokens_(x.clone(), idx, src, check=True), scatter_tokens_(x.clone(), idx, src))


def test_attention_mass_rejects_bad_inputs():
    q, k = torch.randn(1, 2, 5, 16), torch.randn(1, 2, 9, 16)
    with pytest.raises(ValueError, match=r"must agree on B, H and d, got q \(1, 2, 5, 16\) and k \(1, 3, 9, 16\)"):
        attention_mass(q, torch.randn(1, 3, 9, 16))
    with pytest.raises(ValueError, match=r"k must be \[B, H, tokens, d\], got shape \(2, 9, 16\)"):
        attention_mass(q, k[0])
    with pytest.raises(ValueError, match="q is torch.float32 but k is torch.bfloat16"):
        attention_mass(q, k.bfloat16())
    with pytest.raises(ValueError, match="chunk must be a positive int, got 0"):
        attention_mass(q, k, chunk=0)
    with pytest.raises(ValueError, match="k is on meta but q is on cpu"):
        attention_mass(q, k.to("meta"))
