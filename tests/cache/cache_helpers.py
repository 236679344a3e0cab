"""Tiny Wan-VACE pipelines, clips and masks for the engine tests (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import torch


def eval_pipeline(num_layers: int = 4, vace_layers=(0, 2), seed: int = 0, experts: int = 1, boundary_ratio=0.5):
    from hetcache_cli.pipeline.tiny import TinyConfig, build_tiny_pipeline

    cfg = TinyConfig(num_layers=num_layers, vace_layers=list(vace_layers), experts=experts,
                     boundary_ratio=boundary_ratio)
    pipe = build_tiny_pipeline(cfg, seed=seed)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # built modules start in train mode: the text encoder's dropout is random
    return pipe


def clip(frames: int, size: int, box: tuple[int, int, int, int], seed: int = 0):
    """PIL video and mask lists: random frames, a white box (y0, y1, x0, x1) on every mask frame."""
    import PIL.Image

    rng = np.random.default_rng(seed)
    video = [PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(frames)]
    mask = np.zeros((size, size, 3), np.uint8)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = 255
    return video, [PIL.Image.fromarray(mask) for _ in range(frames)]


def run_pipe(pipe, video, mask, steps: int, prompt: str = "a red ball", negative: str = "blue", **kwargs):
    size = video[0].size[0]
    return pipe(
        prompt=prompt,
        negative_prompt=negative,
        video=video,
        mask=mask,
        height=size,
        width=size,
        num_frames=len(video),
        num_inference_steps=steps,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        **kwargs,
    ).frames


