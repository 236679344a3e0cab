"""The VAE on the CPU: channels-last encoder weights, and diffusers' tiling against the decode's memory.

    python scripts/bench_vae_layout.py                                   # encode timings (demo VAE, real width)
    python scripts/bench_vae_layout.py --tiling 480x832 --threads 1      # + the tiled decode (slow: ~25 min)

Part 1, in one process: the batched (inactive + reactive) encode of 17 random frames with the VAE's
plain weights and with the encoder's 3-D convolution weights channels-last (`cpu_convolutions`'
layout), best of 2 timings each, and the largest latent difference; the demo VAE at 160 and 320 px
and a real-width random Wan VAE (base 96, z 16) at 128 px, 9 frames. Part 2 (`--tiling HxW`): a
real-width random Wan VAE decodes 3 latent frames (9 frames) at that size, whole and with
`enable_tiling()`, each in a child process: wall time and peak RSS above the loaded model (the
peak while loading it; 0 for a decode that stays under that, as at small sizes).
A benchmark, not a test; docs/benchmarks.md gives the measured numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _best(fn, repeat: int = 2):
    out = fn()
    runs = []
    for _ in range(repeat):
        begin = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - begin)
    return min(runs), out


def encode_layouts() -> None:
    import torch
    from diffusers import AutoencoderKLWan

    from hetcache_cli.pipeline.model import load_pipeline, resolve_model
    from hetcache_cli.pipeline.vae import _encoder_weights

    demo = load_pipeline(resolve_model(None), torch.device("cpu"), torch.float32).vae
    wide = AutoencoderKLWan(base_dim=96, z_dim=16).eval()
    cases = (("demo VAE", demo, 17, 160), ("demo VAE", demo, 17, 320), ("real-width random Wan VAE", wide, 9, 128))
    with torch.no_grad():
        for name, vae, frames, size in cases:
            x = torch.rand(2, 3, frames, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
            encode = lambda: vae.encode(x).latent_dist.mode()  # noqa: E731
            plain_s, plain = _best(encode)
            _encoder_weights(vae, torch.channels_last_3d)
            last_s, last = _best(encode)
            _encoder_weights(vae, torch.contiguous_format)
            print(f"{name}, batch of 2 x {frames} frames {size}x{size}: encode {plain_s:.2f} s plain, {last_s:.2f} s "
                  f"channels-last ({plain_s / last_s:.2f}x), max latent difference {(plain - last).abs().max():.1e}",
                  flush=True)  # fmt: skip


def decode_child(height: int, width: int, tiled: bool) -> None:
    import resource

    import torch
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan(base_dim=96, z_dim=16).eval()
    if tiled:
        vae.enable_tiling()
    z = torch.randn(1, 16, 3, height // 8, width // 8, generator=torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    begin = time.perf_counter()
    with torch.no_grad():
        vae.decode(z)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": time.perf_counter() - begin, "peak_gib": peak / 2**20,
                      "above_model_gib": (peak - before) / 2**20}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiling", default=None, metavar="HxW", help="also decode at this size, whole and tiled")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        decode_child(int(args.child[0]), int(args.child[1]), args.child[2] == "tiled")
        return
    encode_layouts()
    if args.tiling:
        height, width = (int(v) for v in args.tiling.lower().split("x"))
        for mode in ("whole", "tiled"):
            threads = ["--threads", str(args.threads)] if args.threads else []
            out = subprocess.run([sys.executable, __file__, *threads, "--child", str(height), str(width), mode],
                                 check=True, capture_output=True, text=True).stdout  # fmt: skip
            r = json.loads(out.strip().splitlines()[-1])
            print(f"decode 9 frames {height}x{width} {mode}: {r['seconds']:.1f} s, peak RSS {r['peak_gib']:.2f} GiB "
                  f"({r['above_model_gib']:.2f} GiB above the loaded model)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
