"""Attention mass: how much softmax attention each key receives from a set of queries.

Used to score context tokens by the attention the generative queries pay them, with the
softmax taken over ALL keys (docs/method.md section 4). Neither backend materialises the full
[G, N] matrix: the Triton path works in tiles, the torch path in chunk x chunk blocks.
Both compute logits and sums in float32 whatever the input dtype.
"""

from __future__ import annotations

import math

import torch

from hetcache_cli.kernels import _checks, dispatch

DEFAULT_CHUNK = 1024  # torch path: at most B * H * chunk * chunk float32 logits alive


# out[b, n] = mean_h sum_g softmax_n(q[b, h, g] . k[b, h, n] * scale)
def attention_mass(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
    use_triton: bool | None = None,
) -> torch.Tensor:
    """Per-key attention mass: q [B, H, G, d], k [B, H, N, d] -> [B, N] float32.

    Each query's softmax runs over all N keys; the G probabilities a key receives are
    summed and the sum is averaged over heads, so out[b].sum() == G. scale defaults to
    1 / sqrt(d). Any strides are accepted (e.g. a [B, N, H, d] tensor permuted). `chunk`
    bounds the block size of the torch path only.
    """
    op = "attention_mass"
    _check_qk(op, q, k)
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"{op}: chunk must be a positive int, got {chunk!r}")
    B, H, G, d = q.shape
    N = k.shape[2]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    if G == 0 or N == 0 or H == 0:
        return torch.zeros(B, N, dtype=torch.float32, device=q.device)
    if dispatch.resolve_use_triton(use_triton, q, k, op=op):
        return dispatch.kernels("attention").attention_mass(q, k, float(scale))
    return _attention_mass_torch(q, k, float(scale), chunk)


def _attention_mass_torch(q: torch.Tensor, k: torch.Tensor, scale: float, chunk: int) -> torch.Tensor:
    B, H, G, _ = q.shape
    N = k.shape[2]
    g_spans = [(g, min(g + chunk, G)) for g in range(0, G, chunk)]
    n_spans = [(n, min(n + chunk, N)) for n in range(0, N, chunk)]

    def logits(g0: int, g1: int, k_t: torch.Tensor) -> torch.Tensor:
        return torch.matmul(q[:, :, g0:g1].float(), k_t).mul_(scale)  # [B, H, g, n]

    # pass 1: log-sum-exp of every query row over all keys, one key chunk at a time
    lse = torch.full((B, H, G), float("-inf"), dtype=torch.float32, device=q.device)
    for n0, n1 in n_spans:
        k_t = k[:, :, n0:n1].float().transpose(-1, -2)  # [B, H, d, n]
        for g0, g1 in g_spans:
            part = torch.logsumexp(logits(g0, g1, k_t), dim=-1)  # [B, H, g]
            lse[:, :, g0:g1] = torch.logaddexp(lse[:, :, g0:g1], part)
    # pass 2: each key's probability mass summed over the queries
    mass = torch.zeros(B, H, N, dtype=torch.float32, device=q.device)
    for n0, n1 in n_spans:
        k_t = k[:, :, n0:n1].float().transpose(-1, -2)
        for g0, g1 in g_spans:
            probs = logits(g0, g1, k_t).sub_(lse[:, :, g0:g1, None]).exp_()
            mass[:, :, n0:n1] += probs.sum(dim=2)
    return mass.mean(dim=1)


def _check_qk(op: str, q: torch.Tensor, k: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{op}: {name} must be [B, H, tokens, d], got shape {tuple(t.shape)}")
        if t.dtype not in _checks.FLOAT_DTYPES:
            raise ValueError(f"{op}: {name} must be float32, float16 or bfloat16, got {t.dtype}")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"{op}: q [B, H, G, d] and k [B, H, N, d] must agree on B, H and d, "
            f"got q {tuple(q.shape)} and k {tuple(k.shape)}"
        )
    if q.dtype != k.dtype:
        raise ValueError(f"{op}: q is {q.dtype} but k is {k.dtype}; cast one of them")
    _checks.check_device(op, "k", k, q, "q")
