"""Ulysses sequence parallelism inside HetCache's compact stream (docs/context_parallel.md sections 2-5).

Within one guidance branch, u ranks share the tokens. Token ownership follows an order S of the N tokens
built from the active set A (sorted global indices) and the rest I:

    a = A padded to a multiple of u (its last token repeated),  r = I padded so that |a| + |r| = u * L
    (its last token repeated; when I is empty, a takes that padding too)
    rank p owns  a[p::u] ++ r[p::u]   (L rows, its |a|/u active ones first);  S = concat over p

with L = ceil((N + u - 1) / u) fixed per run, so every per-token tensor keeps its shape when A changes.
The padding repeats tokens (up to 2u - 1 rows over all ranks): a repeated token is computed twice with
the same inputs and written twice with the same value, so the result is that of one process.

Every per-token operation (modulation, norms, projections, cross-attention, FFN, VACE hints, the head's
norm and projection) runs on the rank's L rows. Self-attention changes layout with all-to-alls: Q, K, V
from token-sharded [B, L, H, d] to head-sharded [B, uL, H/u, d], attention over all N keys of the rank's
heads, the output back. The K/V caches are stored head-sharded in global token order ([B, N, D/u] per
layer): a FULL step writes every token at its global index, a PARTIAL step writes the active rows' fresh
K/V at their global indices and reads the cached rest locally, so only the active rows cross ranks. The
whole-stack residual (and its forecast) is token-sharded by S; when a FULL step chooses a new A, S changes
and the residual is redistributed (an all-gather of the rank's rows; the design note's all-to-all would send
1/u of it). The head's projected rows are all-gathered into the full prediction every rank's scheduler needs.

Selection at a FULL step: each rank computes the attention mass of the generative queries for its heads;
the per-rank means are all-gathered and summed in rank order (the same vector on every rank); the k-means
features (the score layer's input rows) are all-gathered. Rank 0 of the group broadcasts the chosen A.
"""

from __future__ import annotations

import torch

from hetcache_cli.cache.blocks import _qkv, apply_rotary, run_stack
from hetcache_cli.cache.engine import embed, embed_control, head_rows, unpatchify
from hetcache_cli.cache.parallel import Comm
from hetcache_cli.cache.text_kv import attention_core
from hetcache_cli.kernels import attention_mass, gather_tokens


def rows_per_rank(n_tokens: int, u: int) -> int:
    """L: the rows each rank holds (N / u rounded up, plus room for the active set's padding)."""
    return -(-(n_tokens + u - 1) // u)


def _pad(x: torch.Tensor, multiple: int, filler: torch.Tensor) -> torch.Tensor:
    extra = (-x.numel()) % multiple
    return torch.cat([x, filler.reshape(1).expand(extra)]) if extra else x


def ownership(active: torch.Tensor | None, n_tokens: int, u: int, device=None) -> tuple[torch.Tensor, int]:
    """(S [u * L] global token ids, m = active rows per rank): rank p owns S[p*L:(p+1)*L], its first m active."""
    L = rows_per_rank(n_tokens, u)
    device = device if active is None else active.device
    rest = torch.ones(n_tokens, dtype=torch.bool, device=device)
    if active is None:
        active = torch.empty(0, dtype=torch.int64, device=device)
    rest[active] = False
    rest = torch.arange(n_tokens, device=device)[rest]
    a = _pad(active, u, active[-1:]) if active.numel() else active
    if rest.numel():  # the rest takes the padding of the total: a repeated inactive token
        r = torch.cat([rest, rest[-1:].expand(u * L - a.numel() - rest.numel())])
    else:  # every token active: all rows are, repeats of an active token pad them
        a, r = torch.cat([a, a[-1:].expand(u * L - a.numel())]), rest
    S = torch.cat([torch.cat([a[p::u], r[p::u]]) for p in range(u)])
    return S, a.numel() // u


class Ulysses:
    """The sequence-parallel forwards of one rank, with the same signatures as engine.forward_*."""

    def __init__(self, comm: Comm) -> None:
        self.comm, self.u, self.p = comm, comm.size, comm.rank

    # ---- layout --------------------------------------------------------------------------

    def order(self, state, n_tokens: int, device) -> tuple[torch.Tensor, int]:
        if getattr(state, "order", None) is None or state.order[0].device != torch.device(device):
            state.order = ownership(None, n_tokens, self.u, device)
        return state.order

    def local(self, S: torch.Tensor) -> torch.Tensor:
        L = S.numel() // self.u
        return S[self.p * L : (self.p + 1) * L]

    def agree(self, active: torch.Tensor, device) -> torch.Tensor:
        """The active set [B, M] of the group's rank 0 on every rank of the group."""
        return self.comm.broadcast_rows(active if self.p == 0 else None, 0, device, "full", "active_set")

    def reorder(self, state, active: torch.Tensor | None, n_tokens: int) -> None:
        """A FULL step chose `active` [B, M]: ownership follows it; the token-sharded caches move along."""
        old, _ = self.order(state, n_tokens, state.residual.device)
        new = ownership(active[0] if active is not None else None, n_tokens, self.u, old.device)
        if torch.equal(new[0], old):
            state.order = new
            return
        rows = self.local(new[0])
        state.residual.copy_(self._gather_rows(state.residual, old, n_tokens)[:, rows])
        fc = state.forecast
        if fc is not None:
            fc.slope.copy_(self._gather_rows(fc.slope, old, n_tokens)[:, rows])
            for name in ("t_last", "seen"):
                vec = getattr(fc, name)
                full = self._gather_rows(vec[None, :, None].float(), old, n_tokens)[0, :, 0]
                vec.copy_(full[rows].to(vec.dtype))
        state.order = new

    def _gather_rows(self, x: torch.Tensor, S: torch.Tensor, n_tokens: int, kind: str = "full",
                     op: str = "redistribute") -> torch.Tensor:  # fmt: skip
        """[B, L, ...] rows of every rank (order S) -> [B, N, ...] in global order."""
        parts = self.comm.all_gather(x, kind, op)
        out = x.new_empty((x.shape[0], n_tokens, *x.shape[2:]))
        out[:, S] = torch.cat(parts, dim=1)
        return out

    # ---- all-to-all ----------------------------------------------------------------------

    def to_heads(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        """[B, L, H, d] token-sharded -> [B, u*L, H/u, d]: every rank's rows (in rank order), this rank's heads."""
        B, L, H, d = x.shape
        send = x.reshape(B, L, self.u, H // self.u, d).permute(2, 0, 1, 3, 4).contiguous()
        recv = self._all_to_all(send, kind, "attention_in")
        return recv.permute(1, 0, 2, 3, 4).reshape(B, self.u * L, H // self.u, d)

    def to_tokens(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        """[B, u*L, H/u, d] -> [B, L, H, d]: this rank's rows, every head."""
        B, UL, h, d = x.shape
        L = UL // self.u
        send = x.reshape(B, self.u, L, h, d).permute(1, 0, 2, 3, 4).contiguous()
        recv = self._all_to_all(send, kind, "attention_out")
        return recv.permute(1, 2, 0, 3, 4).reshape(B, L, self.u * h, d)

    def _all_to_all(self, send: torch.Tensor, kind: str, op: str) -> torch.Tensor:
        recv = torch.empty_like(send)
        self.comm.dist.all_to_all_single(recv, send, group=self.comm.group)
        self.comm.traffic.add(kind, op, send.numel() * send.element_size() * (self.u - 1) // self.u)
        return recv

    # ---- forwards ------------------------------------------------------------------------

    def _head(self, module, x: torch.Tensor, temb: torch.Tensor, S: torch.Tensor, shape, kind: str) -> torch.Tensor:
        """The head's norm and projection on this rank's rows, gathered into the full prediction [B, C, F, H, W]."""
        rows = head_rows(module, x, temb)  # [B, L, p*C]
        return unpatchify(module, self._gather_rows(rows, S, rows_total(shape, module), kind, "prediction"), shape)

    def forward_full(self, module, inputs, rope, state=None, keep_kv=True, probe=None, probe_layer=-1,
                     use_triton=None, timestep=None):  # fmt: skip
        emb = embed(module, inputs, text_kv=state.text if state is not None else None)
        n = emb.x.size(1)
        control = embed_control(module, inputs, n)
        S, _ = self.order(state, n, emb.x.device)
        rows = self.local(S)
        x = emb.x[:, rows]
        step = Sharded(self, "full", S, n, rows)
        kv = state.kv if (state is not None and keep_kv) else None
        out = run_stack(module, x, control[:, rows], emb.text, emb.tproj, _rope_rows(rope, rows), emb.scales, kv,
                        step, probe, probe_layer, use_triton)  # fmt: skip
        if state is not None and state.residual is not None:
            new = out - x
            if state.forecast is not None:
                state.forecast.record_all(state.residual, new, timestep)
            state.residual.copy_(new)
        self.comm.traffic.count("full")
        self.comm.traffic.layers = step.layers
        return self._head(module, out, emb.temb, S, inputs.hidden_states.shape, "full")

    def forward_partial(self, module, inputs, rope, state, use_triton=None, timestep=None):
        emb = embed(module, inputs, text_kv=state.text)
        n = emb.x.size(1)
        S, m = self.order(state, n, emb.x.device)
        rows = self.local(S)
        L = rows.numel()
        fresh = torch.cat([S[q * L : q * L + m] for q in range(self.u)])  # every rank's active rows, rank order
        x = emb.x[:, rows]
        control = embed_control(module, inputs, n)[:, rows[:m]]
        step = Sharded(self, "partial", S, n, rows, fresh)
        out_act = run_stack(module, x[:, :m], control, emb.text, emb.tproj, _rope_rows(rope, rows[:m]), emb.scales,
                            state.kv, step, use_triton=use_triton)  # fmt: skip
        merged = x + _residual_at(state, timestep).to(x.dtype)
        merged[:, :m] = out_act
        new_rows = (out_act - x[:, :m]).to(state.residual.dtype)
        if state.forecast is not None:
            local = torch.arange(m, device=x.device)[None]
            state.forecast.record_rows(local, state.residual[:, :m], new_rows, timestep)
        state.residual[:, :m] = new_rows
        self.comm.traffic.count("partial")
        self.comm.traffic.layers = step.layers
        return self._head(module, merged, emb.temb, S, inputs.hidden_states.shape, "partial")

    def forward_reuse(self, module, inputs, state, timestep=None):
        emb = embed(module, inputs, with_blocks=False)
        S, _ = self.order(state, emb.x.size(1), emb.x.device)
        x = emb.x[:, self.local(S)] + _residual_at(state, timestep).to(emb.x.dtype)
        self.comm.traffic.count("reuse")
        return self._head(module, x, emb.temb, S, inputs.hidden_states.shape, "reuse")


def rows_total(shape, module) -> int:
    p_t, p_h, p_w = module.config.patch_size
    return (shape[2] // p_t) * (shape[3] // p_h) * (shape[4] // p_w)


def _rope_rows(rope, rows: torch.Tensor):
    return rope[0].index_select(1, rows), rope[1].index_select(1, rows)


def _residual_at(state, timestep):
    return state.residual if state.forecast is None else state.forecast.predict(state.residual, timestep)


class Sharded:
    """One forward's self-attention layout, passed down the stack in place of the active index tensor."""

    def __init__(self, ulysses: Ulysses, mode: str, S, n_tokens: int, rows, fresh=None) -> None:
        self.ul, self.mode, self.S, self.n, self.rows, self.fresh = ulysses, mode, S, n_tokens, rows, fresh
        self.layers = 0  # self-attention layers run so far in this forward

    def self_attention(self, attn, x, rope, kv=None, probe=None, use_triton=None) -> torch.Tensor:
        ul, kind = self.ul, self.mode
        self.layers += 1
        query, key, value = _qkv(attn, x)
        query, key = attn.norm_q(query), attn.norm_k(key)  # RMS norms over all heads: before the split
        query = apply_rotary(query.unflatten(2, (attn.heads, -1)), *rope)
        key = apply_rotary(key.unflatten(2, (attn.heads, -1)), *rope)
        value = value.unflatten(2, (attn.heads, -1))
        query, key, value = (ul.to_heads(t, kind) for t in (query, key, value))  # [B, uL, H/u, d]
        if self.mode == "full":
            B, _, h, d = key.shape
            keys, values = key.new_empty(B, self.n, h, d), value.new_empty(B, self.n, h, d)
            keys[:, self.S], values[:, self.S] = key, value  # global order; a repeated token once
            if kv is not None:
                kv.store(keys.flatten(2), values.flatten(2))
            if probe is not None:
                self._probe(probe, x, query, keys, use_triton)
        else:
            idx = self.fresh[None].expand(key.shape[0], -1)
            keys, values = kv.update(idx, key.flatten(2), value.flatten(2), query.dtype, use_triton)
            keys, values = keys.unflatten(2, (key.shape[2], -1)), values.unflatten(2, (key.shape[2], -1))
        out = ul.to_tokens(attention_core(attn, query, keys, values), kind)  # [B, L, H, d]
        out = attn.to_out[0](out.flatten(2, 3).type_as(x))
        return attn.to_out[1](out)

    def _probe(self, probe, x, query, keys, use_triton) -> None:
        """ScoreProbe's fields from the sharded tensors: the head-averaged mass summed over ranks' head groups."""
        ul = self.ul
        C = probe.context.shape[1]
        if C == 0:
            return
        B, _, h, d = query.shape
        if probe.generative.shape[1] > 0:
            q = query.new_empty(B, self.n, h, d)
            q[:, self.S] = query
            q_gen = gather_tokens(q.flatten(2), probe.generative, use_triton=use_triton).unflatten(2, (h, d))
            mass = attention_mass(q_gen.transpose(1, 2), keys.transpose(1, 2), use_triton=use_triton)  # [B, N]
            mass = torch.stack(ul.comm.all_gather(mass, "full", "selection")).sum(0) / ul.u
            probe.scores = mass.mean(dim=0)[probe.context[0]]
        else:
            probe.scores = torch.zeros(C, dtype=torch.float32, device=x.device)
        features = ul._gather_rows(x, self.S, self.n, "full", "selection")
        probe.features = gather_tokens(features, probe.context[:1], use_triton=use_triton)[0].float()
