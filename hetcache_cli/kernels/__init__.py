"""Token kernels for the HetCache engine: Triton with plain-torch fallbacks.

Every op takes `use_triton: bool | None` (None = auto); `dispatch` decides. Triton is an
optional dependency: without it (or on CPU tensors without TRITON_INTERPRET=1) the torch
paths run. See docs/kernels.md.
"""

from hetcache_cli.kernels.attention import attention_mass
from hetcache_cli.kernels.dispatch import (
    TritonStatus,
    resolve_use_triton,
    triton_available,
    triton_mode,
    triton_status,
)
from hetcache_cli.kernels.tokens import build_slot_map, gather_tokens, merge_tokens, scatter_tokens_

__all__ = [
    "TritonStatus",
    "attention_mass",
    "build_slot_map",
    "gather_tokens",
    "merge_tokens",
    "resolve_use_triton",
    "scatter_tokens_",
    "triton_available",
    "triton_mode",
    "triton_status",
]
