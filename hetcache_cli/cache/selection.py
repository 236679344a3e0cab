"""Which context tokens a PARTIAL step recomputes (docs/method.md section 4).

At every FULL step, at the main block `score_layer`:
- score: the attention mass each context key receives from the generative queries, with the
  softmax over ALL keys and averaged over heads (`kernels.attention_mass`, no G x N matrix);
- diversity: k-means over the context tokens' attention inputs (on the device, a few
  iterations, warm-started from the previous FULL step's centroids);
- pick: every cluster contributes in proportion to its size, its best-scored tokens first.
  Implemented as a global ranking by "fractional rank inside the cluster", so the number of
  picked tokens is fixed per run (host-known, no sync) and the result is a sorted index tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hetcache_cli.cache.tokens import TokenClasses
from hetcache_cli.kernels import attention_mass, gather_tokens


@dataclass
class ScoreProbe:
    """Collects, during a FULL step's score layer, what the selection needs.

    Called by the self-attention of that layer with its input and post-norm, post-rope q, k.
    """

    generative: torch.Tensor  # [B, G] int64
    context: torch.Tensor  # [B, C] int64
    use_triton: bool | None = None
    scores: torch.Tensor | None = None  # [C] float32
    features: torch.Tensor | None = None  # [C, D] float32

    def __call__(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> None:
        # x [B, N, D], q / k [B, N, H, d]
        B, N, H, d = q.shape
        C = self.context.shape[1]
        if C == 0:
            return
        if self.generative.shape[1] > 0:
            q_gen = gather_tokens(q.flatten(2), self.generative, use_triton=self.use_triton)  # [B, G, H*d]
            q_gen = q_gen.unflatten(2, (H, d)).transpose(1, 2)  # [B, H, G, d]
            mass = attention_mass(q_gen, k.transpose(1, 2), use_triton=self.use_triton)  # [B, N]
            self.scores = mass.mean(dim=0)[self.context[0]]  # [C]
        else:
            self.scores = torch.zeros(C, dtype=torch.float32, device=q.device)
        self.features = gather_tokens(x, self.context[:1], use_triton=self.use_triton)[0].float()  # [C, D]


def kmeans(
    x: torch.Tensor, clusters: int, iters: int, centroids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on the device: x [C, D] -> (assignment [C] int64, centroids [k, D]).

    Starts from `centroids` when their shape fits (warm start), else from evenly strided rows.
    An empty cluster keeps its previous centroid. No host syncs.
    """
    C, D = x.shape
    k = min(clusters, C)
    if centroids is None or centroids.shape != (k, D):
        centroids = x[torch.linspace(0, C - 1, k, device=x.device).long()].clone()
    sq = (x * x).sum(dim=1, keepdim=True)  # [C, 1]

    def assign(c: torch.Tensor) -> torch.Tensor:
        dist = sq - 2.0 * (x @ c.T) + (c * c).sum(dim=1)[None]  # [C, k]
        return dist.argmin(dim=1)

    for _ in range(iters):
        labels = assign(centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)  # [k, D]
        sizes = _counts(labels, k).to(x.dtype)[:, None]  # [k, 1]
        centroids = torch.where(sizes > 0, sums / sizes.clamp_min(1.0), centroids)
    return assign(centroids), centroids


def pick_per_cluster(scores: torch.Tensor, labels: torch.Tensor, clusters: int, count: int) -> torch.Tensor:
    """Positions (into the score vector) of `count` tokens: proportional per cluster, best score first; sorted."""
    C = scores.numel()
    if count >= C:
        return torch.arange(C, device=scores.device)
    by_score = torch.argsort(scores, descending=True, stable=True)  # [C]
    grouped = by_score[torch.argsort(labels[by_score], stable=True)]  # cluster-major, score-descending
    sizes = _counts(labels, clusters)  # [k]
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.empty_like(labels)
    rank[grouped] = torch.arange(C, device=scores.device) - starts[labels[grouped]]
    fraction = (rank.float() + 0.5) / sizes[labels].float()  # [C] in (0, 1)
    # ties in fraction keep score order: sort the score-ordered list by fraction, stably
    order = by_score[torch.argsort(fraction[by_score], stable=True)]
    return order[:count].sort().values


def _counts(labels: torch.Tensor, k: int) -> torch.Tensor:
    # torch.bincount reads labels.max() back to the host on CUDA; a scatter-add does not
    return torch.zeros(k, dtype=torch.int64, device=labels.device).index_add_(0, labels, torch.ones_like(labels))


def select_context(
    probe: ScoreProbe, count: int, clusters: int, iters: int, centroids: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Context token ids [count] (sorted) chosen from a filled probe, and the centroids to warm-start from."""
    context = probe.context[0]
    if count == 0 or probe.scores is None:
        return context[:0], centroids
    if clusters <= 1:
        positions = torch.topk(probe.scores, count).indices.sort().values
        return context[positions], centroids
    x = torch.nn.functional.layer_norm(probe.features, probe.features.shape[-1:])
    labels, centroids = kmeans(x, clusters, iters, centroids)
    positions = pick_per_cluster(probe.scores, labels, min(clusters, context.numel()), count)
    return context[positions], centroids


def active_indices(static: torch.Tensor, chosen: torch.Tensor, batch: int) -> torch.Tensor:
    """Sorted union of the run's fixed active tokens and the chosen context tokens: [B, M] int64."""
    idx = torch.cat([static, chosen]).sort().values
    return idx[None].expand(batch, -1).contiguous()


def static_active(classes: TokenClasses, margin_subset: torch.Tensor) -> torch.Tensor:
    """Tokens active on every PARTIAL step of a run: generative + the margin subset, sorted [M0]."""
    return torch.cat([classes.generative, margin_subset]).sort().values
