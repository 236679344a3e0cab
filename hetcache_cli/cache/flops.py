"""Analytic FLOPs of a Wan-VACE transformer forward (2 FLOPs per multiply-add).

Per block, with N query tokens, K key tokens, text length L, width D and FFN width F:
self-attention projections 8ND^2, QK^T + AV 4NKD, cross-attention 4ND^2 + 4LD^2 + 4NLD,
FFN 4NDF. A VACE block costs the same plus 2ND^2 for each of its proj_in / proj_out.
A FULL forward has N = K = all tokens; a PARTIAL forward computes N = active tokens
against K = all (cached) keys; a REUSE forward runs no block. The text K/V term 4LD^2 counts
only in the blocks that computed it (with `text_kv`, the first computed step of a run and branch).
Patch embedding, time embedding and the output head are left out (under 0.1%).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelDims:
    dim: int
    ffn_dim: int
    num_layers: int
    num_vace_layers: int
    num_heads: int
    text_len: int = 512

    @classmethod
    def from_config(cls, config, text_len: int = 512) -> "ModelDims":
        """From a WanVACETransformer3DModel config (a dict or a FrozenDict)."""
        return cls(
            dim=config["num_attention_heads"] * config["attention_head_dim"],
            ffn_dim=config["ffn_dim"],
            num_layers=config["num_layers"],
            num_vace_layers=len(config["vace_layers"]),
            num_heads=config["num_attention_heads"],
            text_len=text_len,
        )


def block_flops(dims: ModelDims, n_query: int, n_key: int) -> float:
    d, f, length = dims.dim, dims.ffn_dim, dims.text_len
    self_attn = 8 * n_query * d * d + 4 * n_query * n_key * d
    cross_attn = 4 * n_query * d * d + 4 * length * d * d + 4 * n_query * length * d
    ffn = 4 * n_query * d * f
    return float(self_attn + cross_attn + ffn)


def forward_flops(
    dims: ModelDims, n_tokens: int, n_active: int | None = None, text_layers: int | None = None
) -> float:
    """FLOPs of one transformer forward for one guidance branch.

    `n_active=None` or `n_active == n_tokens` is a FULL forward, 0 is a REUSE forward.
    `text_layers`: how many blocks projected the text K/V in this forward (None = all of them).
    """
    n_query = n_tokens if n_active is None else n_active
    if n_query == 0:
        return 0.0
    layers = dims.num_layers + dims.num_vace_layers
    per_block = block_flops(dims, n_query, n_tokens)
    vace_proj = (dims.num_vace_layers + 1) * 2 * n_query * dims.dim * dims.dim
    cached_text = 0 if text_layers is None else layers - text_layers
    return layers * per_block + vace_proj - cached_text * text_kv_flops(dims)


def text_kv_flops(dims: ModelDims) -> float:
    """The text K and V projections of one block: 4LD^2."""
    return float(4 * dims.text_len * dims.dim * dims.dim)


def attention_flops(dims: ModelDims, n_tokens: int) -> float:
    """QK^T + AV of the main blocks only (the 'attention' column of docs/method.md section 6)."""
    return float(dims.num_layers * 4 * n_tokens * n_tokens * dims.dim)


def vace_flops(dims: ModelDims, n_tokens: int) -> float:
    vace_proj = (dims.num_vace_layers + 1) * 2 * n_tokens * dims.dim * dims.dim
    return dims.num_vace_layers * block_flops(dims, n_tokens, n_tokens) + vace_proj
