"""Wall-clock of the HetCache engine vs the uncached transformer, on the Wan2.1-VACE architectures.

Random weights at the real width (`--arch 1.3b`: D=1536, 12 heads x 128, FFN 8960; `--arch 14b`:
D=5120, 40 heads x 128, FFN 13824; text 512 x 4096) and a reduced depth (default 2 blocks + 1
VACE block at layer 0: the 2:1 ratio of the 1.3B model), or the real depth with `--full-depth`
(30 blocks, VACE every 2nd / 40 blocks, VACE every 5th).
The latents, the VACE conditioning (mask folded by `WanVACEPipeline.prepare_masks` itself)
and the text embeddings are fed straight to the transformer; the denoising loop is a UniPC
flow-matching scheduler, one guidance branch by default. A short warm-up (excluded), then
`--repeats` rounds that run every configuration once (interleaved, so a load spike from
other processes hits all of them); medians reported. Wall-clock and process CPU time are
both measured: on a shared machine CPU time (with --threads 1) is the stable one.

    python scripts/bench_engine.py --frames 9 --size 192 --steps 10 --json bench_engine.json
    python scripts/bench_engine.py --arch 1.3b --full-depth --frames 33 --height 480 --width 832 \
        --device cuda --dtype bfloat16 --cfg --steps 50 --threads 16      # on a GPU

FLOPs cut = uncached FLOPs / engine FLOPs (analytic, `hetcache_cli.cache.flops`);
efficiency = speedup / FLOPs cut (1.0 = every saved FLOP saved its time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from types import SimpleNamespace

import torch


ARCHS = {
    "1.3b": dict(heads=12, ffn=8960, layers=30, vace_every=2),
    "14b": dict(heads=40, ffn=13824, layers=40, vace_every=5),
}


def build_transformer(arch: str, layers: int, vace_layers: list[int], seed: int):
    from diffusers import WanVACETransformer3DModel

    spec = ARCHS[arch]
    torch.manual_seed(seed)
    model = WanVACETransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=spec["heads"],
        attention_head_dim=128,
        in_channels=16,
        out_channels=16,
        text_dim=4096,
        freq_dim=256,
        ffn_dim=spec["ffn"],
        num_layers=layers,
        vace_layers=vace_layers,
        vace_in_channels=96,
    )
    return model.eval()


def build_inputs(transformer, frames: int, height: int, width: int, mask_fraction: float, seed: int,
                 device: torch.device, dtype: torch.dtype):
    """Latents, VACE conditioning and text for one edit; the mask is a centred box of `mask_fraction`."""
    from diffusers import WanVACEPipeline

    g = torch.Generator().manual_seed(seed)
    latent_frames, latent_h, latent_w = (frames - 1) // 4 + 1, height // 8, width // 8
    box_h, box_w = int(round(height * mask_fraction**0.5)), int(round(width * mask_fraction**0.5))
    top, left = (height - box_h) // 2, (width - box_w) // 2
    pixel = torch.zeros(frames, height, width, dtype=torch.bool)
    pixel[:, top : top + box_h, left : left + box_w] = True
    fake = SimpleNamespace(transformer=transformer, vae_scale_factor_temporal=4, vae_scale_factor_spatial=8)
    folded = WanVACEPipeline.prepare_masks(fake, pixel.float()[None, None].expand(1, 3, -1, -1, -1), [[]])
    video_latents = torch.randn(1, 32, latent_frames, latent_h, latent_w, generator=g)
    return dict(
        latents=torch.randn(1, 16, latent_frames, latent_h, latent_w, generator=g).to(device),
        control=torch.cat([video_latents, folded], dim=1).to(device, dtype),
        text=torch.randn(1, 512, 4096, generator=g).to(device, dtype),
        negative=torch.randn(1, 512, 4096, generator=g).to(device, dtype),
        pixel_mask=pixel.to(device),
    )


@torch.no_grad()
def denoise(transformer, scheduler, inputs: dict, steps: int, cfg: bool) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    latents = inputs["latents"].clone()
    dtype = inputs["text"].dtype
    for t in scheduler.timesteps:
        kwargs = dict(timestep=t.expand(1), control_hidden_states=inputs["control"], return_dict=False)
        with transformer.cache_context("cond"):
            pred = transformer(latents.to(dtype), encoder_hidden_states=inputs["text"], **kwargs)[0]
        if cfg:
            with transformer.cache_context("uncond"):
                uncond = transformer(latents.to(dtype), encoder_hidden_states=inputs["negative"], **kwargs)[0]
            pred = uncond + 5.0 * (pred - uncond)
        latents = scheduler.step(pred.float(), t, latents, return_dict=False)[0]
    if latents.is_cuda:
        torch.cuda.synchronize(latents.device)
    return latents


def run_config(name, config, transformer, scheduler, inputs, args) -> dict:
    """One denoising run with `config` (None = uncached): wall and CPU seconds, stats, latents."""
    from hetcache_cli.cache import StepStats, apply_hetcache, remove_hetcache
    from hetcache_cli.cache.flops import ModelDims

    stats = StepStats(dims=ModelDims.from_config(transformer.config, text_len=512))
    handle = apply_hetcache(transformer, config, stats) if config is not None else None
    try:
        if handle is not None:
            scheduler.set_timesteps(args.steps)
            handle.begin_run(scheduler.timesteps, branches=2 if args.cfg else 1)
            handle.set_mask(inputs["pixel_mask"])
        wall, cpu = time.perf_counter(), time.process_time()
        latents = denoise(transformer, scheduler, inputs, args.steps, args.cfg)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out = {"name": name, "wall_s": wall, "cpu_s": cpu, "latents": latents}
        if handle is not None:
            summary = stats.summary()
            partial = [r for r in stats.records if r.decision == "partial"]
            out.update(
                schedule=handle.schedule,
                flops_ratio=summary["flops_ratio"],
                decisions=summary["decisions"],
                cache_memory_bytes=summary["cache_memory_bytes"],
                active_tokens=partial[0].tokens.computed if partial else None,
                tokens=stats.records[0].tokens.total,
            )
    finally:
        if handle is not None:
            remove_hetcache(transformer)
    print(f"  {name}: wall {wall:.2f} s, cpu {cpu:.2f} s", file=sys.stderr)
    return out


def bench(configs: dict, transformer, scheduler, inputs, args) -> list[dict]:
    """Warm-up (excluded), then `repeats` rounds that run every configuration once, interleaved."""
    from hetcache_cli.cache import HetCacheConfig

    warm = argparse.Namespace(**{**vars(args), "steps": 3})
    run_config("warm-up", None, transformer, scheduler, inputs, warm)
    run_config("warm-up", HetCacheConfig(schedule="FPR"), transformer, scheduler, inputs, warm)
    rounds = [[run_config(n, c, transformer, scheduler, inputs, args) for n, c in configs.items()]
              for _ in range(args.repeats)]
    results = []
    for i, name in enumerate(configs):
        runs = [r[i] for r in rounds]
        merged = dict(runs[-1])
        merged.update(
            wall_s=statistics.median(r["wall_s"] for r in runs),
            cpu_s=statistics.median(r["cpu_s"] for r in runs),
            runs_wall_s=[r["wall_s"] for r in runs],
            runs_cpu_s=[r["cpu_s"] for r in runs],
        )
        results.append(merged)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="1.3b")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=192, help="square frame side in pixels (multiple of 16)")
    parser.add_argument("--height", type=int, help="frame height (multiple of 16); overrides --size")
    parser.add_argument("--width", type=int, help="frame width (multiple of 16); overrides --size")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vace-layers", type=int, nargs="+", default=[0])
    parser.add_argument("--full-depth", action="store_true", help="the real depth and VACE layers of --arch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mask-fraction", type=float, default=0.15)
    parser.add_argument("--cfg", action="store_true", help="two guidance branches per step")
    parser.add_argument("--presets", nargs="+", default=["quality", "balanced", "fast"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time measures the work)")
    parser.add_argument("--json", default="bench_engine.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from diffusers import UniPCMultistepScheduler

    from hetcache_cli.cache import build_config

    torch.set_num_threads(args.threads)
    if args.full_depth:
        spec = ARCHS[args.arch]
        args.layers, args.vace_layers = spec["layers"], list(range(0, spec["layers"], spec["vace_every"]))
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    frame_h, frame_w = args.height or args.size, args.width or args.size
    transformer = build_transformer(args.arch, args.layers, args.vace_layers, args.seed).to(device)
    if dtype != torch.float32:
        transformer = transformer.to(dtype)  # diffusers warns: its fp32-kept norms are cast too
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    inputs = build_inputs(transformer, args.frames, frame_h, frame_w, args.mask_fraction, args.seed, device, dtype)

    configs = {"uncached": None} | {p: build_config(preset=p) for p in args.presets}
    results = bench(configs, transformer, scheduler, inputs, args)

    base = results[0]
    rows = []
    for r in results:
        cut = 1.0 / r.get("flops_ratio", 1.0)
        diff = (r["latents"] - base["latents"]).abs().mean().item() / base["latents"].abs().mean().item()
        speedup, cpu_speedup = base["wall_s"] / r["wall_s"], base["cpu_s"] / r["cpu_s"]
        rows.append({k: v for k, v in r.items() if k != "latents"} | {
            "speedup": speedup, "cpu_speedup": cpu_speedup, "flops_cut": cut,
            "efficiency": speedup / cut, "cpu_efficiency": cpu_speedup / cut, "rel_l1_vs_uncached": diff})

    width = args.steps + 2
    header = (f"{'config':<10} {'schedule':<{width}} {'active':>9} {'wall s':>7} {'cpu s':>7} {'FLOPs cut':>9} "
              f"{'speedup':>8} {'eff.':>5} {'cpu speedup':>11} {'cpu eff.':>8} {'rel L1':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        active = f"{r['active_tokens']}/{r['tokens']}" if r.get("active_tokens") else "-"
        print(f"{r['name']:<10} {r.get('schedule') or 'F' * args.steps:<{width}} {active:>9} {r['wall_s']:>7.2f} "
              f"{r['cpu_s']:>7.2f} {r['flops_cut']:>8.2f}x {r['speedup']:>7.2f}x {r['efficiency']:>5.2f} "
              f"{r['cpu_speedup']:>10.2f}x {r['cpu_efficiency']:>8.2f} {r['rel_l1_vs_uncached']:>7.3f}")
    meta = {
        "argv": sys.argv[1:], "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": {"arch": args.arch, "heads": ARCHS[args.arch]["heads"], "ffn": ARCHS[args.arch]["ffn"],
                  "layers": args.layers, "vace_layers": args.vace_layers},
        "device": str(device), "dtype": args.dtype, "frames": args.frames, "height": frame_h, "width": frame_w,
        "tokens": rows[1].get("tokens") if len(rows) > 1 else None,
    }
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=2)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
