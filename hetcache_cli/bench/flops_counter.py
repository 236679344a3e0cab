"""FLOPs counted from what a transformer actually runs, whatever cache is attached to it.

2 FLOPs per multiply-add, from the shapes of every call made inside the transformer's forward:
- `nn.Linear` (forward hooks): 2 * rows * in_features * out_features;
- `nn.Conv1d/2d/3d` (the patch embeddings): 2 * output elements * in_channels / groups * kernel volume;
- attention through diffusers' dispatch (any backend) or `F.scaled_dot_product_attention`:
  4 * B * H * Lq * Lk * d (QK^T and AV);
- any other matmul-like torch call (`matmul`, `@`, `bmm`, `mm`, `baddbmm`, `addmm`, `F.linear`
  outside a module): 2 * output elements * inner size (HetCache's context scoring and k-means).
A call nested in one already counted (SDPA inside a dispatched backend, `F.linear` inside a
hooked `nn.Linear`) is not counted again. Work a cache skips makes no call, so it counts 0.
Norms, activations and elementwise ops are not counted (neither does the analytic model,
`hetcache_cli.cache.flops`). Counting adds Python overhead: time other runs, not counted ones.

    with count_flops(pipe.transformer) as flops:
        pipe(...)
    flops.total, flops.in_blocks, flops.forwards
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

# the top-level children of a Wan transformer that the analytic count models (`cache.flops`)
BLOCK_PARTS = ("blocks", "vace_blocks")
_CONVS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
_MATMULS = {
    torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.bmm,
    torch.Tensor.bmm, torch.mm, torch.Tensor.mm, torch.baddbmm, torch.Tensor.baddbmm, torch.addmm,
    torch.Tensor.addmm,
}  # fmt: skip


@dataclass
class FlopCount:
    """FLOPs by kind of call and by top-level part of the transformer, and per forward call."""

    linear: float = 0.0
    conv: float = 0.0
    attention: float = 0.0
    matmul: float = 0.0
    by_part: dict[str, float] = field(default_factory=dict)  # linear + conv, by top-level child name
    forwards: list[float] = field(default_factory=list)  # total of each transformer forward call

    @property
    def total(self) -> float:
        return self.linear + self.conv + self.attention + self.matmul

    @property
    def in_blocks(self) -> float:
        """What the analytic count models: linears of the main and VACE blocks, all attention and matmuls."""
        return sum(self.by_part.get(p, 0.0) for p in BLOCK_PARTS) + self.attention + self.matmul

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "in_blocks": self.in_blocks,
            "linear": self.linear,
            "conv": self.conv,
            "attention": self.attention,
            "matmul": self.matmul,
            "by_part": dict(self.by_part),
            "forwards": list(self.forwards),
        }


def linear_flops(x: torch.Tensor, module: torch.nn.Linear) -> float:
    rows = x.numel() // max(module.in_features, 1)
    return 2.0 * rows * module.in_features * module.out_features


def conv_flops(out: torch.Tensor, module: torch.nn.modules.conv._ConvNd) -> float:
    per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
    return 2.0 * out.numel() * per_output


def attention_flops(query: torch.Tensor, key: torch.Tensor, heads_dim: int) -> float:
    """QK^T + AV; `heads_dim` is the axis of the heads (2 for diffusers' [B, L, H, d], 1 for SDPA's [B, H, L, d])."""
    seq_dim = 1 if heads_dim == 2 else 2
    batch = query.shape[0]
    heads, lq, lk, d = query.shape[heads_dim], query.shape[seq_dim], key.shape[seq_dim], query.shape[-1]
    return 4.0 * batch * heads * lq * lk * d


class _Counter(TorchFunctionMode):
    """One counting session; the function mode sees torch calls that no hook counted."""

    def __init__(self, count: FlopCount) -> None:
        super().__init__()
        self.count = count
        self.active = 0  # > 0 inside the transformer's forward
        self.nested = 0  # > 0 inside a call already counted (a hooked module, a dispatched attention)
        self._forward_start = 0.0

    def counting(self) -> bool:
        return self.active > 0 and self.nested == 0

    def add(self, kind: str, flops: float, part: str | None = None) -> None:
        setattr(self.count, kind, getattr(self.count, kind) + flops)
        if part is not None:
            self.count.by_part[part] = self.count.by_part.get(part, 0.0) + flops

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.counting():
            return func(*args, **kwargs)
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.add("attention", attention_flops(args[0], args[1], heads_dim=1))
            self.nested += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.nested -= 1
        out = func(*args, **kwargs)
        if func in _MATMULS or func is torch.nn.functional.linear:
            first = args[0] if func is not torch.Tensor.__rmatmul__ else args[1]
            inner = first.shape[-1] if first.dim() > 0 else 1
            if func in (torch.baddbmm, torch.Tensor.baddbmm, torch.addmm, torch.Tensor.addmm):
                inner = args[1].shape[-1]
            if isinstance(out, torch.Tensor):
                self.add("linear" if func is torch.nn.functional.linear else "matmul", 2.0 * out.numel() * inner)
        return out

    # ---- hooks ------------------------------------------------------------------------

    # the function mode is on only inside the transformer's forward: the VAE and text encoder run at full speed
    def root_pre(self, module, args, kwargs) -> None:
        if self.active == 0:
            self._forward_start = self.count.total
            self.__enter__()
        self.active += 1

    def root_post(self, module, args, kwargs, output) -> None:
        self.active -= 1
        if self.active == 0:
            self.__exit__(None, None, None)
            self.count.forwards.append(self.count.total - self._forward_start)

    def leaf_pre(self, module, args) -> None:
        self.nested += 1

    def leaf_post(self, part: str, module, args, output) -> None:
        self.nested -= 1
        if not self.counting():
            return
        if isinstance(module, torch.nn.Linear):
            self.add("linear", linear_flops(args[0], module), part)
        elif isinstance(output, torch.Tensor):
            self.add("conv", conv_flops(output, module), part)

    def backend(self, fn):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            if self.counting():
                self.add("attention", attention_flops(kwargs["query"], kwargs["key"], heads_dim=2))
            self.nested += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.nested -= 1

        return counted


@contextlib.contextmanager
def count_flops(transformer: torch.nn.Module) -> Iterator[FlopCount]:
    """Count the FLOPs of every forward of `transformer` run inside the block (see the module docstring).

    Hooks go on the transformer's `nn.Linear` / `nn.Conv*` modules and its root; diffusers' attention
    backends are wrapped for the duration. Everything is removed on exit, also after an exception.
    """
    count = FlopCount()
    counter = _Counter(count)
    handles = [
        transformer.register_forward_pre_hook(counter.root_pre, with_kwargs=True),
        transformer.register_forward_hook(counter.root_post, with_kwargs=True, always_call=True),
    ]
    for name, module in transformer.named_modules():
        if isinstance(module, (torch.nn.Linear, *_CONVS)):
            part = name.split(".", 1)[0]
            handles.append(module.register_forward_pre_hook(counter.leaf_pre))
            handles.append(module.register_forward_hook(functools.partial(counter.leaf_post, part), always_call=True))
    backends = _attention_backends()
    originals = dict(backends)
    try:
        for name, fn in originals.items():
            backends[name] = counter.backend(fn)
        yield count
    finally:
        if counter.active > 0:  # a forward that never returned (its post-hook not run)
            counter.active = 0
            counter.__exit__(None, None, None)
        backends.update(originals)
        for handle in handles:
            handle.remove()


def _attention_backends() -> dict:
    try:
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    except ImportError:
        return {}
    return _AttentionBackendRegistry._backends
