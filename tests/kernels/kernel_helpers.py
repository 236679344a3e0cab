"""Inputs and tolerances shared by the kernel tests (imported by name: tests/kernels is on
sys.path when pytest imports these modules)."""

from __future__ import annotations

import torch

DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# blends: about one unit in the last place of the storage dtype (GPU kernels may fuse the
# multiply-add, which moves the float32 result by an ulp before the cast)
BLEND_TOL = {
    torch.float32: dict(rtol=1.3e-6, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5),
}
# attention mass: float32 logits and sums against a float64 dense softmax; inputs are
# the same low-precision values on both sides, so the tolerance does not depend on dtype
MASS_TOL = dict(rtol=1e-4, atol=1e-5)


def tokens(B: int, N: int, D: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, D, generator=g).to(dtype)


def index(
    B: int, M: int, N: int, dtype: torch.dtype = torch.int64, *, sort: bool = False, seed: int = 0
) -> torch.Tensor:
    """[B, M] distinct row indices in [0, N), one random subset per batch row."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randperm(N, generator=g)[:M] for _ in range(B)]
    idx = torch.stack(rows) if B else torch.empty(0, M, dtype=torch.int64)
    if sort:
        idx = idx.sort(dim=1).values
    return idx.to(dtype)
