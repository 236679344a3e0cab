"""Compiled Triton kernels on a CUDA device at engine-like sizes (Wan 1.3B rows, bf16).

Skipped without CUDA, and under TRITON_INTERPRET=1 (these sizes are far too large for
the interpreter)."""

from __future__ import annotations

import pytest
import torch
from kernel_helpers import BLEND_TOL, MASS_TOL

from hetcache_cli.kernels import (
    attention_mass,
    build_slot_map,
    dispatch,
    gather_tokens,
    merge_tokens,
    scatter_tokens_,
)
from hetcache_cli.kernels import reference as ref

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or dispatch.triton_mode() != "native",
        reason="needs a CUDA device and compiled (not interpreted) Triton",
    ),
]

# (B, N, D, M): Wan-1.3B rows at 33 frames with a 30% active set; a 14B-wide case
ROW_CASES = [(1, 14040, 1536, 4212), (2, 3001, 5120, 1013)]


def _case(B, N, D, M, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(B, N, D, generator=g, device="cuda").to(dtype)
    idx = torch.stack([torch.randperm(N, generator=g, device="cuda")[:M].sort().values for _ in range(B)])
    rows = torch.randn(B, M, D, generator=g, device="cuda").to(dtype)
    return x, idx, rows


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: "B{}-N{}-D{}-M{}".format(*c))
def test_row_kernels_match_reference_and_torch(case, dtype):
    x, idx, rows = _case(*case, dtype, seed=0)
    for index in (idx, idx.int()):
        assert torch.equal(gather_tokens(x, index, use_triton=True), ref.gather_tokens_ref(x, index))
        out = scatter_tokens_(x.clone(), index, rows, use_triton=True)
        assert torch.equal(out, ref.scatter_tokens_ref(x, index, rows))
        assert torch.equal(out, scatter_tokens_(x.clone(), index, rows, use_triton=False))
    for alpha in (0.7, torch.rand(idx.shape, device="cuda")):
        out = scatter_tokens_(x.clone(), idx, rows, alpha, use_triton=True)
        torch.testing.assert_close(out, ref.scatter_tokens_ref(x, idx, rows, alpha), **BLEND_TOL[dtype])
    residual = torch.randn_like(x)
    expected = ref.merge_tokens_ref(x, residual, idx, rows)
    slot = build_slot_map(idx, x.shape[1])
    assert torch.equal(merge_tokens(x, residual, idx, rows, slot=slot, use_triton=True), expected)
    assert torch.equal(merge_tokens(x, residual, idx, rows, use_triton=False), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_attention_mass_on_device(dtype):
    B, H, G, N, d = 1, 12, 613, 3001, 128
    g = torch.Generator(device="cuda").manual_seed(1)
    q = torch.randn(B, G, H, d, generator=g, device="cuda").to(dtype).transpose(1, 2)  # engine layout
    k = torch.randn(B, N, H, d, generator=g, device="cuda").to(dtype).transpose(1, 2)
    expected = ref.attention_mass_ref(q, k)
    torch.testing.assert_close(attention_mass(q, k, use_triton=True), expected, **MASS_TOL)
    torch.testing.assert_close(attention_mass(q, k, chunk=512, use_triton=False), expected, **MASS_TOL)
