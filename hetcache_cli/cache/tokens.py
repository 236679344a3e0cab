"""Token classes of a masked edit: generative, margin and context (docs/method.md section 3).

Token order is the rotary order n = t * H' * W' + h * W' + w. Everything runs in torch on
the mask's device; the class sizes are read back to the host once per run (they size the
active set and the statistics).

Pixel -> token footprint: a token covers `spatial` x `spatial` pixels (VAE 8 x patch 2 = 16)
and, in time, latent frame 0 covers pixel frame 0 and latent frame k covers pixel frames
4k-3 .. 4k (the VAE's causal grouping). A token is generative when its footprint touches
the mask anywhere: max-pooling, never nearest sampling, so a one-pixel line survives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GENERATIVE, MARGIN, CONTEXT = 2, 1, 0


@dataclass
class TokenClasses:
    """Class of every token of a [T', H', W'] grid; index tensors are sorted int64 on the mask's device."""

    grid: tuple[int, int, int]
    labels: torch.Tensor  # [N] int8: 2 generative, 1 margin, 0 context
    generative: torch.Tensor  # [G]
    margin: torch.Tensor  # [Mg]
    context: torch.Tensor  # [C]

    @property
    def n_tokens(self) -> int:
        return self.labels.numel()

    @property
    def counts(self) -> tuple[int, int, int]:
        """(generative, margin, context) sizes, already on the host."""
        return self.generative.numel(), self.margin.numel(), self.context.numel()


def pixel_mask_to_tokens(
    mask: torch.Tensor, grid: tuple[int, int, int], spatial: int = 16, temporal: int = 4
) -> torch.Tensor:
    """[F, H, W] bool pixel mask -> [T', H', W'] bool token mask by footprint max-pooling.

    Sides that are not multiples of `spatial` are padded (a partial border cell still counts).
    When the latent grid has more frames than the mask covers (reference images are prepended
    by the pipeline), the extra leading frames are non-generative.
    """
    if mask.dim() != 3:
        raise ValueError(f"pixel mask must be [F, H, W], got shape {tuple(mask.shape)}")
    t_grid, h_grid, w_grid = grid
    m = mask.bool().float()[None]  # [1, F, H, W]
    frames, height, width = mask.shape
    pad_h, pad_w = -height % spatial, -width % spatial
    m = F.pad(m, (0, pad_w, 0, pad_h))
    m = F.max_pool2d(m, kernel_size=spatial, stride=spatial)  # [1, F, H', W']
    # causal grouping: frame 0 alone, then groups of `temporal` frames
    m = F.pad(m, (0, 0, 0, 0, temporal - 1, -(frames + temporal - 1) % temporal))
    m = m[0].unflatten(0, (-1, temporal)).amax(dim=1)  # [T_mask, H', W']
    m = m[:, :h_grid, :w_grid]
    if m.shape[1:] != (h_grid, w_grid):
        raise ValueError(
            f"pixel mask {height}x{width} gives a {m.shape[1]}x{m.shape[2]} token grid, "
            f"but the latents have {h_grid}x{w_grid}: pass the mask at the pipeline's height and width"
        )
    extra = t_grid - m.shape[0]
    if extra < 0:
        raise ValueError(
            f"pixel mask has {frames} frames ({m.shape[0]} latent frames) but the latents have {t_grid}: "
            "pass one mask frame per video frame"
        )
    return F.pad(m, (0, 0, 0, 0, extra, 0)).bool()


def control_mask_to_tokens(control: torch.Tensor, in_channels: int, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """Fallback when no pixel mask is known: [B, 2z + s*s, T', Hl, Wl] VACE control latents -> [T', H', W'] bool.

    The pipeline folds the pixel mask into s*s channels (one per pixel phase) at latent
    resolution; any set phase marks the latent pixel, then patches are max-pooled. Weaker than
    the pixel path in time: the pipeline resamples the mask to latent frames with
    nearest-exact sampling, so a mask present only between two sampled frames is lost.
    """
    folded = control[0, 2 * in_channels :]  # [s*s, T', Hl, Wl]
    if folded.shape[0] == 0:
        raise ValueError("control_hidden_states has no mask channels: pass the mask with handle.set_mask()")
    latent = (folded > 0.5).any(dim=0).float()  # [T', Hl, Wl]
    p_t, p_h, p_w = patch_size
    pooled = F.max_pool3d(latent[None, None], kernel_size=(p_t, p_h, p_w), stride=(p_t, p_h, p_w))
    return pooled[0, 0].bool()


def classify_tokens(generative: torch.Tensor, margin_tokens: int, margin_temporal: bool) -> TokenClasses:
    """[T', H', W'] bool generative grid -> classes. Margin = box dilation (space, +-1 frame) minus generative."""
    grid = tuple(generative.shape)
    g = generative.bool()
    kt = 3 if margin_temporal else 1
    ks = 2 * margin_tokens + 1
    dilated = F.max_pool3d(
        g.float()[None, None], kernel_size=(kt, ks, ks), stride=1, padding=(kt // 2, margin_tokens, margin_tokens)
    )[0, 0].bool()
    margin = dilated & ~g
    labels = torch.zeros(grid, dtype=torch.int8, device=g.device)
    labels[margin] = MARGIN
    labels[g] = GENERATIVE
    labels = labels.flatten()  # [N]
    # nonzero() sizes its output on the host: one sync per class, once per run
    return TokenClasses(
        grid=grid,
        labels=labels,
        generative=(labels == GENERATIVE).nonzero().flatten(),
        margin=(labels == MARGIN).nonzero().flatten(),
        context=(labels == CONTEXT).nonzero().flatten(),
    )


def subset_count(ratio: float, total: int) -> int:
    """round(ratio * total), halves rounded up."""
    return min(total, int(math.floor(ratio * total + 0.5)))


def curve_rank(grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """[N] int64 position of every token along a frame-major Z-order (Morton) curve.

    Consecutive positions are spatial neighbours, so evenly strided positions spread over any
    region shape: a 2D block as well as a one-token-wide ring around the mask.
    """
    t_grid, h_grid, w_grid = grid
    h = torch.arange(h_grid, device=device)[:, None].expand(h_grid, w_grid)
    w = torch.arange(w_grid, device=device)[None, :].expand(h_grid, w_grid)
    bits = max(h_grid, w_grid, 2).bit_length()
    code = torch.zeros(h_grid, w_grid, dtype=torch.int64, device=device)
    for b in range(bits):
        code |= ((h >> b) & 1) << (2 * b + 1) | ((w >> b) & 1) << (2 * b)
    t = torch.arange(t_grid, device=device)[:, None, None]
    return (t << (2 * bits)) | code[None]  # [T', H', W'] -> flattened below


def uniform_subset(candidates: torch.Tensor, rank: torch.Tensor, count: int) -> torch.Tensor:
    """`count` candidates at evenly strided positions along the curve `rank` (sorted ids)."""
    total = candidates.numel()
    if count >= total:
        return candidates
    if count == 0:
        return candidates[:0]
    along = candidates[torch.argsort(rank.flatten()[candidates])]
    picks = ((torch.arange(count, device=candidates.device) + 0.5) * (total / count)).long()
    return along[picks].sort().values


def count_tokens(
    mask: torch.Tensor, margin_tokens: int, margin_temporal: bool, margin_ratio: float, context_ratio: float,
    spatial: int = 16, temporal: int = 4,
) -> dict:
    """Class sizes and the PARTIAL active count for a pixel mask [F, H, W] (before any model runs)."""
    frames, height, width = mask.shape
    grid = ((frames - 1) // temporal + 1, height // spatial, width // spatial)
    generative = pixel_mask_to_tokens(mask.bool(), grid, spatial, temporal)
    n_gen, n_margin, n_context = classify_tokens(generative, margin_tokens, margin_temporal).counts
    active = n_gen + subset_count(margin_ratio, n_margin) + subset_count(context_ratio, n_context)
    return {"total": n_gen + n_margin + n_context, "generative": n_gen, "margin": n_margin,
            "context": n_context, "active": active}
