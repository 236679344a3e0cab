"""Does a peer cache keep Wan-VACE's output when it skips? A check on identical inputs.

A step cache may skip work only where it returns what the skipped work would have returned.
Feed the transformer the same inputs twice in one cache context: whatever the peer skips on the
second call, a correct cache returns the first call's output. Wan-VACE adds each VACE hint to the
main stream after its block, in the transformer's own forward, outside the blocks; a cache that
stores a whole-stack residual (which already holds the hints) and lets the forward add the hints
again returns, on a skipped call, the output of `stack + sum(hints)`. The check computes that
prediction too: when the second output differs from the first but matches it, the cache adds the
hints twice (docs/method.md section 10).

The inputs are random and small (2 latent frames, 8x8 latent pixels, 16 text tokens), so the check
costs three forwards of a few dozen tokens on any model size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from hetcache_cli.bench.flops_counter import count_flops

TOLERANCE = 1e-4  # relative to the output's largest magnitude


@dataclass
class HintCheck:
    skipped: bool  # the second call ran fewer FLOPs than the first
    max_diff: float  # max |second - first| / max |first|
    double_hint_diff: float  # max |second - head(stack + sum(hints))| / max |first|
    flops_first: float
    flops_second: float

    @property
    def verdict(self) -> str:
        if not self.skipped:
            return "no skip"
        if self.max_diff <= TOLERANCE:
            return "ok"
        return "hints twice" if self.double_hint_diff <= TOLERANCE else "changed"

    def describe(self) -> str:
        cut = f"skipped {1 - self.flops_second / self.flops_first:.0%} of the FLOPs" if self.flops_first else "skipped"
        if self.verdict == "hints twice":
            return (
                f"broken on VACE: on identical inputs its second call ({cut}) changes the output by "
                f"{self.max_diff:.3g} (relative max); adding every VACE hint twice predicts that output to "
                f"{self.double_hint_diff:.1e}"
            )
        if self.verdict == "changed":
            return f"changes the output on identical inputs by {self.max_diff:.3g} (relative max) when it skips ({cut})"
        if self.verdict == "ok":
            return f"identical inputs give identical outputs when it skips ({cut})"
        return "skipped nothing on identical inputs"

    def to_dict(self) -> dict:
        return asdict(self) | {"verdict": self.verdict}


def probe_inputs(transformer, seed: int = 0, frames: int = 2, size: int = 8, text_len: int = 16) -> dict:
    """Random transformer inputs of the model's channel counts: latents [1, C, frames, size, size]."""
    config = transformer.config
    param = next(transformer.parameters())
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=param.device, dtype=param.dtype)

    return {
        "hidden_states": rand(1, config.in_channels, frames, size, size),
        "timestep": torch.tensor([500.0], device=param.device),
        "encoder_hidden_states": rand(1, text_len, config.text_dim),
        "control_hidden_states": rand(1, config.vace_in_channels, frames, size, size),
        "return_dict": False,
    }


@torch.no_grad()
def double_hint_output(transformer, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(uncached output, output with every VACE hint added once more before the output head)."""
    hints: list[torch.Tensor] = []
    handles = [block.register_forward_hook(lambda m, a, out: hints.append(out[0])) for block in transformer.vace_blocks]
    try:
        first = transformer(**inputs)[0]
    finally:
        for h in handles:
            h.remove()
    scale = inputs.get("control_hidden_states_scale")
    scales = [1.0] * len(hints) if scale is None else list(torch.unbind(scale))
    extra = sum(h * s for h, s in zip(hints, scales))

    def add_hints(module, args):
        return (args[0] + extra,)

    handle = transformer.norm_out.register_forward_pre_hook(add_hints)
    try:
        doubled = transformer(**inputs)[0]
    finally:
        handle.remove()
    return first, doubled


@torch.no_grad()
def check_hints(transformer, attach, detach) -> HintCheck:
    """Run the check with the peer attached by `attach(transformer)` and removed by `detach(transformer)`."""
    inputs = probe_inputs(transformer)
    reference, doubled = double_hint_output(transformer, inputs)
    attach(transformer)
    try:
        outputs, flops = [], []
        with transformer.cache_context("cond"):
            for _ in range(2):
                with count_flops(transformer) as count:
                    outputs.append(transformer(**inputs)[0])
                flops.append(count.total)
        transformer._reset_stateful_cache()
    finally:
        detach(transformer)
    first, second = outputs
    scale = reference.abs().max().clamp_min(1e-12)
    return HintCheck(
        skipped=flops[1] < 0.99 * flops[0],
        max_diff=float((second - first).abs().max() / scale),
        double_hint_diff=float((second - doubled).abs().max() / scale),
        flops_first=flops[0],
        flops_second=flops[1],
    )
