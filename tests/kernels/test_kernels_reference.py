"""The references themselves, against hand-computed values: a wrong reference would make
every kernel comparison meaningless."""

from __future__ import annotations

import math

import torch

from hetcache_cli.kernels import reference as ref


def test_gather_and_scatter_reference_by_hand():
    x = torch.arange(2 * 4 * 2, dtype=torch.float32).view(2, 4, 2)
    idx = torch.tensor([[3, 0], [1, 1]])
    assert ref.gather_tokens_ref(x, idx).tolist() == [[[6, 7], [0, 1]], [[10, 11], [10, 11]]]
    src = torch.tensor([[[-1.0, -2.0], [-3.0, -4.0]], [[-5.0, -6.0], [-7.0, -8.0]]])
    out = ref.scatter_tokens_ref(x, torch.tensor([[3, 0], [2, 1]]), src)
    assert out.tolist() == [
        [[-3, -4], [2, 3], [4, 5], [-1, -2]],
        [[8, 9], [-7, -8], [-5, -6], [14, 15]],
    ]
    assert x[0, 0].tolist() == [0, 1]  # the reference does not write its input


def test_blend_reference_by_hand():
    dst = torch.tensor([[[4.0], [8.0], [2.0]]])
    src = torch.tensor([[[0.0], [2.0]]])
    idx = torch.tensor([[1, 2]])
    assert ref.scatter_tokens_ref(dst, idx, src, 0.25).flatten().tolist() == [4.0, 2.0, 0.5 + 1.5]
    per_row = torch.tensor([[1.0, 0.0]])
    assert ref.scatter_tokens_ref(dst, idx, src, per_row).flatten().tolist() == [4.0, 8.0, 2.0]


def test_merge_reference_by_hand():
    base = torch.tensor([[[1.0], [2.0], [3.0]]])
    residual = torch.tensor([[[10.0], [20.0], [30.0]]])
    out = ref.merge_tokens_ref(base, residual, torch.tensor([[1]]), torch.tensor([[[-5.0]]]))
    assert out.flatten().tolist() == [11.0, -5.0, 33.0]


def test_attention_mass_reference_closed_forms():
    # identical keys share every query's probability equally: mass = G / N each
    q, k = torch.randn(1, 2, 5, 8), torch.ones(1, 2, 1, 8).expand(1, 2, 4, 8)
    assert torch.allclose(ref.attention_mass_ref(q, k), torch.full((1, 4), 5 / 4))
    # one query, two keys with logits 0 and log(3) after scaling: probabilities 1/4, 3/4
    d = 4
    q = torch.zeros(1, 1, 1, d)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, 2, d)
    k[0, 0, 1, 0] = math.log(3.0) * math.sqrt(d)
    assert torch.allclose(ref.attention_mass_ref(q, k), torch.tensor([[0.25, 0.75]]))
    # averaging over heads: head 0 puts all mass on key 0, head 1 on key 1
    q = torch.ones(1, 2, 1, 1)
    k = torch.tensor([[[[60.0], [0.0]], [[0.0], [60.0]]]])
    assert torch.allclose(ref.attention_mass_ref(q, k, scale=1.0), torch.tensor([[0.5, 0.5]]))
