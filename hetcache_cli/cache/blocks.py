"""Wan / Wan-VACE block forwards with K/V caching, on all tokens or on a compact active stream.

The ops and their order are those of diffusers 0.42 (`WanTransformerBlock.forward`,
`WanVACETransformerBlock.forward`, `WanAttnProcessor.__call__`), so that a block run on all
tokens gives the diffusers result. Self-attention is the only op that mixes tokens; the
rest (modulation, norms, cross-attention, FFN, VACE projections) is per token and runs on
whatever rows it is given.

Two modes of `self_attention`:
- all tokens (`idx is None`): K/V are computed for every token; when a `KVSlot` is given
  they are also copied into it (the FULL step refreshing the cache);
- active rows (`idx` [B, M]): Q/K/V of the M rows only; their K/V rows are written into the
  layer's full-length cache in place, and the M queries attend over all N cached keys.

Under Ulysses sequence parallelism `idx` is a `ulysses.Sharded` layout instead (x: this rank's rows),
which runs the self-attention with its all-to-alls. How a slot stores K/V (float, fp8, host memory) is
storage.py's business. Cross-attention takes
either the text embedding or the layer's cached text K/V (text_kv.py). Each block is called
through its internals, so `run_stack` runs the block's diffusers hooks (group offloading,
layerwise casting) around it, as the block's own forward would (offload.py).
"""

from __future__ import annotations

from typing import Callable

import torch

from hetcache_cli.cache import offload
from hetcache_cli.cache.storage import KVSlot
from hetcache_cli.cache.text_kv import TextKV, attention_output

__all__ = ["KVSlot", "Rope", "block_body", "gather_rope", "run_stack", "self_attention", "vace_block"]

Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin: [1, L, 1, head_dim] each
Probe = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def apply_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    # x [B, L, H, d]; same ops as WanAttnProcessor's apply_rotary_emb
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def gather_rope(rope: Rope, idx: torch.Tensor) -> Rope:
    """Rotary tables of the active rows: idx [B, M] (rows shared over the batch) -> [1, M, 1, d]."""
    rows = idx[0]
    return rope[0].index_select(1, rows), rope[1].index_select(1, rows)


def _qkv(attn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if getattr(attn, "fused_projections", False):
        return attn.to_qkv(x).chunk(3, dim=-1)
    return attn.to_q(x), attn.to_k(x), attn.to_v(x)


def self_attention(
    attn,
    x: torch.Tensor,
    rope: Rope,
    kv: KVSlot | None = None,
    idx: torch.Tensor | None = None,
    probe: Probe | None = None,
    use_triton: bool | None = None,
) -> torch.Tensor:
    # x [B, L, D] with L = N (all tokens) or M (active rows, idx [B, M])
    if attn.add_k_proj is not None:
        raise ValueError("HetCache supports Wan-VACE text-to-video blocks only (no image K/V projections)")
    if idx is not None and not isinstance(idx, torch.Tensor):  # a ulysses.Sharded layout: rows of this rank
        return idx.self_attention(attn, x, rope, kv, probe, use_triton)
    query, key, value = _qkv(attn, x)
    query = attn.norm_q(query)
    key = attn.norm_k(key)
    query = query.unflatten(2, (attn.heads, -1))  # [B, L, H, d]
    key = key.unflatten(2, (attn.heads, -1))
    value = value.unflatten(2, (attn.heads, -1))
    query = apply_rotary(query, *rope)
    key = apply_rotary(key, *rope)
    if idx is None:
        if kv is not None:
            kv.store(key.flatten(2), value.flatten(2))
        if probe is not None:
            probe(x, query, key)
    else:
        key, value = kv.update(idx, key.flatten(2), value.flatten(2), query.dtype, use_triton)
        key = key.unflatten(2, (attn.heads, -1))  # [B, N, H, d]
        value = value.unflatten(2, (attn.heads, -1))
    return attention_output(attn, query, key, value)


def block_body(
    block,
    x: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    temb: torch.Tensor,
    rope: Rope,
    kv: KVSlot | None = None,
    idx: torch.Tensor | None = None,
    probe: Probe | None = None,
    use_triton: bool | None = None,
) -> torch.Tensor:
    """Self-attention, cross-attention and FFN of a main or VACE block; x [B, L, D], temb [B, 6, D].

    `encoder_hidden_states`: the text embedding [B, Lt, D], or the layer's `text_kv.TextLayer`.
    """
    shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = (
        block.scale_shift_table.to(temb.device) + temb.float()
    ).chunk(6, dim=1)
    norm = (block.norm1(x.float()) * (1 + scale_msa) + shift_msa).type_as(x)
    attn_output = self_attention(block.attn1, norm, rope, kv, idx, probe, use_triton)
    x = (x.float() + attn_output * gate_msa).type_as(x)

    norm = block.norm2(x.float()).type_as(x)
    x = x + cross_attention(block.attn2, norm, encoder_hidden_states)

    norm = (block.norm3(x.float()) * (1 + c_scale_msa) + c_shift_msa).type_as(x)
    ff_output = block.ffn(norm)
    return (x.float() + ff_output.float() * c_gate_msa).type_as(x)


def cross_attention(attn, x: torch.Tensor, context) -> torch.Tensor:
    """A block's `attn2`: `context` is the text embedding, or a text_kv.TextLayer holding its K/V."""
    if isinstance(context, torch.Tensor):
        return attn(x, context, None, None)
    return context.attend(attn, x)


def vace_block(
    block,
    x: torch.Tensor,
    control: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    temb: torch.Tensor,
    rope: Rope,
    kv: KVSlot | None = None,
    idx: torch.Tensor | None = None,
    use_triton: bool | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """One VACE block: (hint or None, new control stream); x and control are [B, L, D] on the same rows."""
    if block.proj_in is not None:
        control = block.proj_in(control)
        control = control + x
    control = block_body(block, control, encoder_hidden_states, temb, rope, kv, idx, None, use_triton)
    hint = block.proj_out(control) if block.proj_out is not None else None
    return hint, control


def run_stack(
    module,
    x: torch.Tensor,
    control: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    temb: torch.Tensor,
    rope: Rope,
    scales: tuple[torch.Tensor, ...],
    kv: list[KVSlot] | None = None,
    idx: torch.Tensor | None = None,
    probe: Probe | None = None,
    probe_layer: int = -1,
    use_triton: bool | None = None,
) -> torch.Tensor:
    """All VACE blocks, then all main blocks with each hint added once after its layer: x [B, L, D] -> [B, L, D].

    `kv` lists the main layers' slots first, then the VACE layers' (so does a `TextKV` given as
    `encoder_hidden_states`). With `idx`, x and control hold the active rows only and every hint
    is computed for, and added to, those rows.
    """
    n_main = len(module.blocks)
    text = encoder_hidden_states
    per_layer = isinstance(text, TextKV)
    hints = []
    for i, block in enumerate(module.vace_blocks):
        slot = kv[n_main + i] if kv is not None else None
        context = text.layer(n_main + i) if per_layer else text
        hooks = offload.enter(block)
        hint, control = vace_block(block, x, control, context, temb, rope, slot, idx, use_triton)
        offload.leave(block, hooks)
        hints.append(hint)
    vace_layers = set(module.config.vace_layers)
    j = 0  # diffusers pairs the j-th VACE block with the j-th VACE layer met in block order
    for i, block in enumerate(module.blocks):
        slot = kv[i] if kv is not None else None
        layer_probe = probe if i == probe_layer else None
        context = text.layer(i) if per_layer else text
        hooks = offload.enter(block)
        x = block_body(block, x, context, temb, rope, slot, idx, layer_probe, use_triton)
        offload.leave(block, hooks)
        if i in vace_layers:
            x = x + hints[j].to(x.device) * scales[j]
            j += 1
    return x
