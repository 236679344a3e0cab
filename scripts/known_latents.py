"""Could a window reuse the previous window's latents for its known frames instead of encoding them?

    python scripts/known_latents.py

The Wan VAE encodes causally in chunks: latent 0 is frame 0 alone, latent j >= 1 is frames 4j-3..4j,
each seeing the frames before it through the causal convolutions' caches. A later window's known
frames are encoded from that window's start, so at best (the same pixels, a window start where the
chunks line up) its latents 1.. cover the same frames as the earlier window's latents k+1..; this
measures how far apart they are on the demo clip with the demo VAE: the relative L2 difference per
latent frame. A benchmark-style measurement (docs/benchmarks.md), not a test.
"""

from __future__ import annotations

import numpy as np


def main() -> None:
    import cv2
    import torch

    from hetcache_cli.io.video import read_video
    from hetcache_cli.pipeline.model import load_pipeline, resolve_model
    from hetcache_cli.resources import demo_dir

    vae = load_pipeline(resolve_model(None), torch.device("cpu"), torch.float32).vae
    frames = read_video(demo_dir() / "input.mp4").frames
    count = 1 + 4 * ((frames.shape[0] - 1) // 4)
    size = (160, 160)
    resized = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames[:count]])
    video = torch.from_numpy(resized).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # [1, 3, F, H, W]

    def rel(a, b) -> float:
        return float((a - b).norm() / b.norm())

    with torch.no_grad():
        first = vae.encode(video).latent_dist.mode()
        print(f"demo clip, {count} frames at {size[0]}x{size[1]}: window 1 = all of them, window 2 from frame 4k")
        for k in range(1, first.shape[2] - 1):
            second = vae.encode(video[:, :, 4 * k :]).latent_dist.mode()  # frame 0 = window 1's latent k's last
            aligned = [rel(second[:, :, j], first[:, :, k + j]) for j in range(1, second.shape[2])]
            alone = rel(second[:, :, 0], first[:, :, k])
            print(f"window 2 from frame {4 * k}: latents 1.. against window 1's {k + 1}..: relative difference "
                  + ", ".join(f"{d:.3f}" for d in aligned)
                  + f"; its latent 0 (one frame) against window 1's latent {k}: {alone:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
