"""The three kinds of transformer forward: FULL, PARTIAL (compact stream) and REUSE.

Each mirrors `WanVACETransformer3DModel.forward` (diffusers 0.42) around the block stack:
rotary tables, patch embeddings, condition embedding, blocks, output head. What differs:

FULL     every block on all N tokens; K/V of every main and VACE layer copied into the
         branch's caches; residual = stack output - stack input stored (and, with a forecast,
         every token's residual slope measured); the score layer feeds the context selection.
PARTIAL  the active rows A of the main and VACE streams are gathered once; every block runs
         on A only against the full-length K/V caches; tokens outside A get their current
         input + cached residual (forecast to this step when the branch keeps slopes); merged
         rows go through the head on all tokens.
REUSE    no block runs (VACE included): current input + cached (or forecast) residual, then
         the head.

With the branch's `TextKV` (text_kv.py), FULL and PARTIAL skip the text embedder once the
prompt's K/V are cached, and every block's cross-attention reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hetcache_cli.cache.blocks import Rope, gather_rope, run_stack
from hetcache_cli.cache.state import BranchState
from hetcache_cli.cache.text_kv import TextKV
from hetcache_cli.kernels import gather_tokens, merge_tokens, scatter_tokens_


@dataclass
class Inputs:
    hidden_states: torch.Tensor  # [B, C, F, H, W] latents
    timestep: torch.Tensor  # [B]
    encoder_hidden_states: torch.Tensor  # [B, L, text_dim]
    encoder_hidden_states_image: torch.Tensor | None
    control_hidden_states: torch.Tensor  # [B, Cc, F, H, W]
    control_hidden_states_scale: torch.Tensor | None


@dataclass
class Embedded:
    x: torch.Tensor  # [B, N, D] patch-embedded main stream (the stack's input)
    temb: torch.Tensor  # [B, D]
    tproj: torch.Tensor | None = None  # [B, 6, D]
    text: torch.Tensor | TextKV | None = None  # [B, L, D], or the branch's cached text K/V
    scales: tuple[torch.Tensor, ...] = ()


def grid_of(module, hidden_states: torch.Tensor) -> tuple[int, int, int]:
    p_t, p_h, p_w = module.config.patch_size
    _, _, frames, height, width = hidden_states.shape
    return frames // p_t, height // p_h, width // p_w


def _scales(module, inputs: Inputs) -> tuple[torch.Tensor, ...]:
    scale = inputs.control_hidden_states_scale
    if scale is None:
        scale = inputs.control_hidden_states.new_ones(len(module.config.vace_layers))
    scales = torch.unbind(scale)
    if len(scales) != len(module.config.vace_layers):
        raise ValueError(
            f"Length of `control_hidden_states_scale` {len(scales)} should be equal to "
            f"{len(module.config.vace_layers)}."
        )
    return scales


def embed(module, inputs: Inputs, with_blocks: bool = True, text_kv: TextKV | None = None) -> Embedded:
    """Patch and condition embeddings; `with_blocks=False` (REUSE) computes only what the head needs.

    With `text_kv` (text-only conditioning), the text embedder runs only when the prompt changed.
    """
    x = module.patch_embedding(inputs.hidden_states).flatten(2).transpose(1, 2)  # [B, N, D]
    if not with_blocks:
        return Embedded(x=x, temb=_time_embedding(module, inputs))
    if text_kv is not None and inputs.encoder_hidden_states_image is None:
        if text_kv.matches(inputs.encoder_hidden_states):
            temb = _time_embedding(module, inputs)
            tproj = module.condition_embedder.time_proj(module.condition_embedder.act_fn(temb))
        else:
            temb, tproj, text, _ = module.condition_embedder(inputs.timestep, inputs.encoder_hidden_states, None)
            text_kv.bind(inputs.encoder_hidden_states, text)
        return Embedded(x=x, temb=temb, tproj=tproj.unflatten(1, (6, -1)), text=text_kv, scales=_scales(module, inputs))
    temb, tproj, text, text_image = module.condition_embedder(
        inputs.timestep, inputs.encoder_hidden_states, inputs.encoder_hidden_states_image
    )
    tproj = tproj.unflatten(1, (6, -1))
    if text_image is not None:
        text = torch.concat([text_image, text], dim=1)
    return Embedded(x=x, temb=temb, tproj=tproj, text=text, scales=_scales(module, inputs))


def embed_control(module, inputs: Inputs, n_tokens: int) -> torch.Tensor:
    """VACE patch embedding, zero-padded to the main stream's length: [B, N, D]."""
    control = module.vace_patch_embedding(inputs.control_hidden_states).flatten(2).transpose(1, 2)
    padding = control.new_zeros(control.size(0), n_tokens - control.size(1), control.size(2))
    return torch.cat([control, padding], dim=1)


def _time_embedding(module, inputs: Inputs) -> torch.Tensor:
    # the time half of WanTimeTextImageEmbedding.forward: the head needs temb only
    embedder = module.condition_embedder
    t = embedder.timesteps_proj(inputs.timestep)
    dtype = next(iter(embedder.time_embedder.parameters())).dtype
    if t.dtype != dtype and dtype != torch.int8:
        t = t.to(dtype)
    return embedder.time_embedder(t).type_as(inputs.encoder_hidden_states)


def head(module, x: torch.Tensor, temb: torch.Tensor, hidden_shape: torch.Size) -> torch.Tensor:
    """Output norm, projection and unpatchify: [B, N, D] -> [B, C, F, H, W]."""
    return unpatchify(module, head_rows(module, x, temb), hidden_shape)


def head_rows(module, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
    """The head's per-token part, output norm and projection: [B, L, D] -> [B, L, p_t * p_h * p_w * C]."""
    shift, scale = (module.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
    shift = shift.to(x.device)
    scale = scale.to(x.device)
    x = (module.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
    return module.proj_out(x)


def unpatchify(module, x: torch.Tensor, hidden_shape: torch.Size) -> torch.Tensor:
    """[B, N, p_t * p_h * p_w * C] in token order -> [B, C, F, H, W]."""
    batch = hidden_shape[0]
    p_t, p_h, p_w = module.config.patch_size
    frames, height, width = hidden_shape[2] // p_t, hidden_shape[3] // p_h, hidden_shape[4] // p_w
    x = x.reshape(batch, frames, height, width, p_t, p_h, p_w, -1)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def forward_full(
    module,
    inputs: Inputs,
    rope: Rope,
    state: BranchState | None = None,
    keep_kv: bool = True,
    probe=None,
    probe_layer: int = -1,
    use_triton: bool | None = None,
    timestep: float | None = None,
) -> torch.Tensor:
    """Every block on all tokens (the uncached result); refreshes the branch's residual and K/V caches.

    `timestep` (host float) dates the refreshed residual for the branch's forecast, if it keeps one.
    """
    emb = embed(module, inputs, text_kv=state.text if state is not None else None)
    control = embed_control(module, inputs, emb.x.size(1))
    kv = state.kv if (state is not None and keep_kv) else None
    out = run_stack(
        module, emb.x, control, emb.text, emb.tproj, rope, emb.scales, kv, None, probe, probe_layer, use_triton
    )
    if state is not None and state.residual is not None:
        new = out - emb.x
        if state.forecast is not None:
            state.forecast.record_all(state.residual, new, timestep)
        state.residual.copy_(new)
    return head(module, out, emb.temb, inputs.hidden_states.shape)


def forward_partial(
    module, inputs: Inputs, rope: Rope, state: BranchState, use_triton: bool | None = None,
    timestep: float | None = None,
) -> torch.Tensor:
    """Blocks on the active rows only (`state.active` [B, M]); the other rows: input + cached residual.

    With a forecast the other rows take their residual extrapolated to `timestep` instead.
    """
    emb = embed(module, inputs, text_kv=state.text)
    x_in = emb.x.contiguous()  # [B, N, D]
    idx = state.active  # [B, M]
    control = embed_control(module, inputs, x_in.size(1))
    x_act = gather_tokens(x_in, idx, use_triton=use_triton)  # [B, M, D]
    control_act = gather_tokens(control, idx, use_triton=use_triton)  # [B, M, D]
    out_act = run_stack(
        module,
        x_act,
        control_act,
        emb.text,
        emb.tproj,
        gather_rope(rope, idx),
        emb.scales,
        state.kv,
        idx,
        use_triton=use_triton,
    )
    residual = _residual_at(state, timestep).to(x_in.dtype)
    merged = merge_tokens(x_in, residual, idx, out_act, slot=state.slot, use_triton=use_triton)  # [B, N, D]
    # the recomputed rows' residual is now the freshest one: later REUSE steps use it
    new_rows = (out_act - x_act).to(state.residual.dtype)
    if state.forecast is not None:
        old_rows = gather_tokens(state.residual, idx, use_triton=use_triton)
        state.forecast.record_rows(idx, old_rows, new_rows, timestep)
    scatter_tokens_(state.residual, idx, new_rows, use_triton=use_triton)
    return head(module, merged, emb.temb, inputs.hidden_states.shape)


def forward_reuse(module, inputs: Inputs, state: BranchState, timestep: float | None = None) -> torch.Tensor:
    """No block runs: current input + cached (or forecast) whole-stack residual, then the head."""
    emb = embed(module, inputs, with_blocks=False)
    x = emb.x + _residual_at(state, timestep).to(emb.x.dtype)
    return head(module, x, emb.temb, inputs.hidden_states.shape)


def _residual_at(state: BranchState, timestep: float | None) -> torch.Tensor:
    """The residual the uncomputed rows take: the cached one, or its forecast at `timestep`."""
    if state.forecast is None:
        return state.residual
    return state.forecast.predict(state.residual, timestep)
