import math

import torch

from hetcache_cli.cache.selection import ScoreProbe, active_indices, kmeans, pick_per_cluster, select_context


def dense_mass(q, k, rows):
    # q, k [B, N, H, d]: softmax over all N keys for each query row in `rows`, summed, mean over heads
    logits = torch.einsum("bghd,bnhd->bhgn", q[:, rows].double(), k.double()) / math.sqrt(q.shape[-1])
    return torch.softmax(logits, dim=-1).sum(dim=2).mean(dim=1)  # [B, N]


def test_probe_scores_match_a_dense_softmax():
    torch.manual_seed(0)
    B, N, H, d = 1, 61, 3, 10
    q, k = torch.randn(B, N, H, d) * 2, torch.randn(B, N, H, d) * 2
    x = torch.randn(B, N, 24)
    generative = torch.tensor([[3, 7, 8, 20, 41]])
    context = torch.tensor([[n for n in range(N) if n not in generative[0].tolist()]])
    probe = ScoreProbe(generative, context)
    probe(x, q, k)
    expected = dense_mass(q, k, generative[0])[0, context[0]].float()
    torch.testing.assert_close(probe.scores, expected, rtol=1e-5, atol=1e-6)
    # the softmax runs over ALL keys: context mass is well below the number of queries
    assert probe.scores.sum() < generative.shape[1] - 0.5
    torch.testing.assert_close(probe.features, x[0, context[0]])


def test_probe_without_generative_tokens_scores_zero():
    probe = ScoreProbe(torch.zeros(1, 0, dtype=torch.long), torch.arange(5)[None])
    probe(torch.randn(1, 5, 4), torch.randn(1, 5, 2, 2), torch.randn(1, 5, 2, 2))
    assert torch.equal(probe.scores, torch.zeros(5))


def test_kmeans_separates_blobs_and_warm_starts():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(40, 2) for c in centres])
    labels, cents = kmeans(x, 3, iters=8)
    groups = [set(labels[i * 40:(i + 1) * 40].tolist()) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3
    labels2, cents2 = kmeans(x, 3, iters=0, centroids=cents)  # warm start: already converged
    assert torch.equal(labels2, labels) and torch.equal(cents2, cents)


def test_pick_per_cluster_is_proportional_and_best_first():
    scores = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.05, 0.6])
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])  # cluster 0: 6 tokens, cluster 1: 2 tokens
    picked = pick_per_cluster(scores, labels, clusters=2, count=4)
    # 3 from the big cluster (its best: 0, 2, 4), 1 from the small one (its best: 7)
    assert picked.tolist() == [0, 2, 4, 7]
    assert pick_per_cluster(scores, labels, 2, 8).tolist() == list(range(8))


def test_select_context_returns_sorted_token_ids_of_fixed_count():
    torch.manual_seed(1)
    N = 50
    context = torch.arange(10, N)[None]
    probe = ScoreProbe(torch.arange(10)[None], context)
    probe(torch.randn(1, N, 16), torch.randn(1, N, 2, 8), torch.randn(1, N, 2, 8))
    for clusters in (0, 1, 4):
        chosen, _ = select_context(probe, 7, clusters, 3, None)
        assert chosen.numel() == 7 and torch.all(chosen[1:] > chosen[:-1]) and chosen.min() >= 10
    top, _ = select_context(probe, 7, 0, 3, None)
    assert set(top.tolist()) == set((torch.topk(probe.scores, 7).indices + 10).tolist())
    idx = active_indices(torch.tensor([1, 5, 9]), top, batch=2)
    assert idx.shape == (2, 10) and torch.all(idx[:, 1:] > idx[:, :-1])
