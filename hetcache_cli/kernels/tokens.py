"""Row moves between the full token sequence [B, N, D] and an active subset [B, M, D].

Public wrappers: argument checks, backend choice (`dispatch.resolve_use_triton`), then
the Triton kernel (`_triton_tokens`) or a torch path built on index_select/index_copy_.
Both backends give bit-identical results for gather, scatter and merge.

Indices: int32 or int64, values in [0, N); any order (the engine passes sorted int64).
Out-of-range values are undefined behaviour unless `check=True`, which validates them on
the host (a device sync: keep it off the hot path). Repeated indices are fine for a
gather; for a scatter or merge the row written for a repeated index is undefined (it
may even mix columns of different source rows on a GPU), and `check=True` rejects them.
"""

from __future__ import annotations

import torch

from hetcache_cli.kernels import _checks, dispatch


# out[b, i] = x[b, idx[b, i]]
def gather_tokens(
    x: torch.Tensor, idx: torch.Tensor, *, use_triton: bool | None = None, check: bool = False
) -> torch.Tensor:
    """Rows `idx` of `x`: [B, N, D], [B, M] -> [B, M, D] (a new contiguous tensor)."""
    op = "gather_tokens"
    _checks.check_tokens(op, "x", x)
    _checks.check_index(op, idx, x, "x")
    if check:
        _checks.validate_index_values(op, idx, x.shape[1], unique=False)
    x = _checks.rows_contiguous(x)
    if dispatch.resolve_use_triton(use_triton, x, idx, op=op):
        return dispatch.kernels("tokens").gather(x, idx)
    B, M, D = x.shape[0], idx.shape[1], x.shape[2]
    out = x.new_empty(B, M, D)
    for b in range(B):  # B is 1 or 2: one index_select per batch row, written in place
        torch.index_select(x[b], 0, idx[b], out=out[b])
    return out


# dst[b, idx[b, i]] = src[b, i]   (alpha None)
# dst[b, idx[b, i]] = alpha * dst[b, idx[b, i]] + (1 - alpha) * src[b, i]   (blend, fp32 math)
def scatter_tokens_(
    dst: torch.Tensor,
    idx: torch.Tensor,
    src: torch.Tensor,
    alpha: float | torch.Tensor | None = None,
    *,
    use_triton: bool | None = None,
    check: bool = False,
) -> torch.Tensor:
    """Write rows of `src` [B, M, D] into `dst` [B, N, D] at `idx` [B, M], in place; returns dst.

    alpha: None (copy), a python float, a 0-dim tensor or a [B, M] tensor (one weight per
    row); tensors stay on the device, so no host sync. The blend is computed in float32.
    """
    op = "scatter_tokens_"
    _checks.check_tokens(op, "dst", dst)
    _checks.check_index(op, idx, dst, "dst")
    B, M, D = dst.shape[0], idx.shape[1], dst.shape[2]
    _checks.check_same(op, "src", src, (B, M, D), dst, "dst")
    _checks.check_writable(op, "dst", dst)
    alpha = _check_alpha(op, alpha, B, M, dst)
    if check:
        _checks.validate_index_values(op, idx, dst.shape[1], unique=True)
    src = _checks.rows_contiguous(src)
    if dispatch.resolve_use_triton(use_triton, dst, idx, src, op=op):
        return dispatch.kernels("tokens").scatter_(dst, idx, src, alpha)
    if M == 0:
        return dst
    index = idx.long()
    if alpha is None:
        for b in range(B):  # B is 1 or 2
            dst[b].index_copy_(0, index[b], src[b])
        return dst
    # a python alpha becomes a float32 CPU scalar so that 1 - alpha rounds like the kernel
    weight = alpha.float() if isinstance(alpha, torch.Tensor) else torch.tensor(alpha, dtype=torch.float32)
    for b in range(B):
        w = weight[b, :, None] if weight.dim() == 2 else weight  # [M, 1] or scalar
        rows = dst[b].index_select(0, index[b]).float()
        mixed = w * rows + (1.0 - w) * src[b].float()
        dst[b].index_copy_(0, index[b], mixed.to(dst.dtype))
    return dst


# out = base + residual; out[b, idx[b, i]] = active[b, i]
def merge_tokens(
    base: torch.Tensor,
    residual: torch.Tensor,
    idx: torch.Tensor,
    active: torch.Tensor,
    *,
    slot: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    use_triton: bool | None = None,
    check: bool = False,
) -> torch.Tensor:
    """base + residual for every row, except rows `idx` that take `active` [B, M, D].

    The Triton kernel makes one pass over all N rows and reads each row from exactly one
    source. It needs the inverse map `slot` [B, N] (int32, slot[b, idx[b, i]] = i, -1
    elsewhere); pass the one from `build_slot_map(idx, N)` when the same idx is merged
    many times (once per video), otherwise it is built here (one small scatter). The torch
    path ignores `slot`. `out` may be given (it may alias base or residual, not active).
    """
    op = "merge_tokens"
    _checks.check_tokens(op, "base", base)
    B, N, D = base.shape
    _checks.check_same(op, "residual", residual, (B, N, D), base, "base")
    _checks.check_index(op, idx, base, "base")
    _checks.check_same(op, "active", active, (B, idx.shape[1], D), base, "base")
    if slot is not None:
        _check_slot(op, slot, B, N, base)
    if out is None:
        out = torch.empty_like(base, memory_format=torch.contiguous_format)
    else:
        _checks.check_same(op, "out", out, (B, N, D), base, "base")
        _checks.check_writable(op, "out", out)
    if check:
        _checks.validate_index_values(op, idx, N, unique=True)
    base, residual, active = (_checks.rows_contiguous(t) for t in (base, residual, active))
    if dispatch.resolve_use_triton(use_triton, base, residual, idx, active, op=op):
        if slot is None:
            slot = build_slot_map(idx, N)
        return dispatch.kernels("tokens").merge(base, residual, slot, active, out)
    torch.add(base, residual, out=out)
    if idx.shape[1] > 0:
        index = idx.long()
        for b in range(B):
            out[b].index_copy_(0, index[b], active[b])
    return out


# slot[b, n] = i where idx[b, i] == n, else -1
def build_slot_map(idx: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Inverse of idx [B, M] over n_tokens rows: [B, N] int32, -1 for rows not in idx."""
    if idx.dtype not in _checks.INDEX_DTYPES or idx.dim() != 2:
        raise ValueError(
            f"build_slot_map: idx must be an int32 or int64 [B, M] tensor, got {idx.dtype} {tuple(idx.shape)}"
        )
    B, M = idx.shape
    slot = torch.full((B, n_tokens), -1, dtype=torch.int32, device=idx.device)
    positions = torch.arange(M, dtype=torch.int32, device=idx.device).expand(B, M)
    return slot.scatter_(1, idx.long(), positions)


def _check_alpha(op: str, alpha, B: int, M: int, dst: torch.Tensor) -> float | torch.Tensor | None:
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        return float(alpha)
    if not isinstance(alpha, torch.Tensor):
        raise ValueError(f"{op}: alpha must be None, a float or a tensor, got {type(alpha).__name__}")
    if not alpha.is_floating_point():
        raise ValueError(f"{op}: alpha must be a floating tensor, got {alpha.dtype}")
    if alpha.dim() != 0 and tuple(alpha.shape) != (B, M):
        raise ValueError(
            f"{op}: alpha must be 0-dim or [B, M] = {(B, M)} (one weight per row), got {tuple(alpha.shape)}"
        )
    _checks.check_device(op, "alpha", alpha, dst, "dst")
    return alpha


def _check_slot(op: str, slot: torch.Tensor, B: int, N: int, base: torch.Tensor) -> None:
    if slot.dtype not in _checks.INDEX_DTYPES or tuple(slot.shape) != (B, N):
        raise ValueError(
            f"{op}: slot must be an int32 or int64 [B, N] = {(B, N)} tensor (see build_slot_map), "
            f"got {slot.dtype} {tuple(slot.shape)}"
        )
    _checks.check_device(op, "slot", slot, base, "base")
