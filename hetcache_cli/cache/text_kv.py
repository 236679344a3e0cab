"""The prompt's cross-attention K/V, computed once per run and guidance branch (exact).

In every Wan block the cross-attention keys and values are `norm_k(to_k(text))` and
`to_v(text)` of the text embedding, and the text embedding is `text_embedder(prompt_embeds)`:
nothing in them depends on the step. A branch's `TextKV` keeps the prompt embeddings it was
built from, their text embedding and each layer's K/V. A forward that gets the same prompt
tensor (the same object, not written to since: its `_version`) reuses them and skips the text
embedder; any other prompt rebuilds them, so a callback that swaps `prompt_embeds` stays exact.
The ops are those of diffusers 0.42's `WanAttnProcessor` for text-only cross-attention.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn


class TextKV:
    """One branch's text embedding and per-layer cross-attention K/V."""

    def __init__(self) -> None:
        self.source: torch.Tensor | None = None  # the prompt embeddings the cache was built from
        self.version = -1
        self.text: torch.Tensor | None = None  # [B, L, D] text embedding
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> K, V [B, L, H, d]
        self.computed = 0  # layers whose K/V were computed so far (FLOPs accounting)

    def matches(self, prompt_embeds: torch.Tensor) -> bool:
        return self.text is not None and self.source is prompt_embeds and prompt_embeds._version == self.version

    def bind(self, prompt_embeds: torch.Tensor, text: torch.Tensor) -> None:
        """A new prompt: its text embedding; every layer's K/V is computed again on first use."""
        self.source, self.version, self.text = prompt_embeds, prompt_embeds._version, text
        self.kv = {}

    def layer(self, index: int) -> "TextLayer":
        return TextLayer(self, index)

    @property
    def tensors(self) -> list[torch.Tensor]:
        out = [self.text] if self.text is not None else []
        for k, v in self.kv.values():
            out += [k, v]
        return out


class TextLayer:
    """The cross-attention context of one layer: computes its K/V on first use, then reuses them."""

    __slots__ = ("owner", "index")

    def __init__(self, owner: TextKV, index: int) -> None:
        self.owner = owner
        self.index = index

    def attend(self, attn, x: torch.Tensor) -> torch.Tensor:
        kv = self.owner.kv.get(self.index)
        if kv is None:
            kv = self.owner.kv[self.index] = project(attn, self.owner.text)
            self.owner.computed += 1
        return attend(attn, x, *kv)


def project(attn, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention K and V of the text embedding [B, L, D]: [B, L, H, d] each."""
    if getattr(attn, "fused_projections", False):
        key, value = attn.to_kv(text).chunk(2, dim=-1)
    else:
        key, value = attn.to_k(text), attn.to_v(text)
    key = attn.norm_k(key)
    return key.unflatten(2, (attn.heads, -1)), value.unflatten(2, (attn.heads, -1))


def attend(attn, x: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Queries of x [B, M, D] over the text K/V, then the output projection: [B, M, D]."""
    query = attn.norm_q(attn.to_q(x)).unflatten(2, (attn.heads, -1))  # [B, M, H, d]
    return attention_output(attn, query, key, value)


def attention_output(attn, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Attention of query [B, M, H, d] over key / value [B, K, H, d] with the processor's backend, then to_out."""
    out = attention_core(attn, query, key, value).flatten(2, 3).type_as(query)
    out = attn.to_out[0](out)
    return attn.to_out[1](out)


def attention_core(attn, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Attention of query [B, M, H, d] over key / value [B, K, H, d] with the processor's backend: [B, M, H, d]."""
    return dispatch_attention_fn(
        query,
        key,
        value,
        attn_mask=None,
        dropout_p=0.0,
        is_causal=False,
        backend=getattr(attn.processor, "_attention_backend", None),
        parallel_config=None,
    )
