"""Which guidance branch computed the attention output that diffusers' PyramidAttentionBroadcast reuses.

PAB keeps one state per attention module (no per-`cache_context` state, unlike FirstBlockCache
or MagCache), and `WanVACEPipeline` runs the "cond" and "uncond" passes one after the other. This
script attaches PAB as `hetcache bench --methods diffusers:pab` does (the bench's adapter, the
library's defaults), runs a guided edit on a tiny random Wan-VACE pipeline, and counts, per
branch, the attention calls PAB computed and those it answered with an output computed in which
branch. Prints one line per (branch, what happened). CPU, seconds.

    python scripts/check_pab_branches.py --steps 10 --guidance-scale 5
"""

from __future__ import annotations

import argparse
import collections
import contextlib

import numpy as np
import PIL.Image
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    args = parser.parse_args()

    from diffusers.hooks import pyramid_attention_broadcast as pab

    from hetcache_cli.bench.peers import PyramidAttentionBroadcast
    from hetcache_cli.pipeline.tiny import TinyConfig, build_tiny_pipeline

    torch.manual_seed(0)
    pipe = build_tiny_pipeline(TinyConfig(num_layers=4, vace_layers=[0, 2]), seed=0)
    rng = np.random.default_rng(0)
    video = [PIL.Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(9)]
    m = np.zeros((64, 64, 3), np.uint8)
    m[20:40, 8:30] = 255
    mask = [PIL.Image.fromarray(m)] * 9

    branch = {"now": None}
    context = type(pipe.transformer).cache_context

    @contextlib.contextmanager
    def tracked(self, name):
        branch["now"] = name
        with context(self, name):
            yield

    events: collections.Counter = collections.Counter()
    forward = pab.PyramidAttentionBroadcastHook.new_forward

    def counted(self, module, *a, **k):
        cached = self.state.cache
        out = forward(self, module, *a, **k)
        if cached is not None and out is cached:
            events[(branch["now"], f"reused the output computed in {self.__dict__.get('_branch')}")] += 1
        else:
            self._branch = branch["now"]
            events[(branch["now"], "computed")] += 1
        return out

    peer = PyramidAttentionBroadcast()
    with contextlib.ExitStack() as undo:
        type(pipe.transformer).cache_context = tracked
        undo.callback(setattr, type(pipe.transformer), "cache_context", context)
        pab.PyramidAttentionBroadcastHook.new_forward = counted
        undo.callback(setattr, pab.PyramidAttentionBroadcastHook, "new_forward", forward)
        peer.attach(pipe, args.steps)
        undo.callback(peer.detach, pipe)
        pipe(prompt="a red ball", negative_prompt="blue", video=video, mask=mask, height=64, width=64, num_frames=9,
             num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
             generator=torch.Generator().manual_seed(0), output_type="latent")  # fmt: skip
    print(f"PAB settings: {peer.settings}")
    for (name, what), n in sorted(events.items()):
        print(f"{name}: {what}: {n} attention calls")


if __name__ == "__main__":
    main()
