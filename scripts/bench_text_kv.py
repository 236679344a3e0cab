"""DiT time with the prompt's K/V computed once per run and branch (`text_kv`) vs every step.

The demo edit (embedded model, demo clip and mask) through `WanVACEPipeline`, HetCache attached,
latents out (no VAE decode); the transformer's own time (wall clock and process CPU time summed
over its forwards, by hooks around the transformer's call) is what is compared: on a shared
machine CPU time with one thread is the stable one. For each schedule, text_kv off and on run
interleaved, `--repeats` times after one warm-up; medians. The outputs are checked to be identical.

    python scripts/bench_text_kv.py --repeats 5 --threads 1 --json bench_text_kv.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hetcache_cli.cache import HetCacheConfig, StepStats, apply_hetcache, build_config, remove_hetcache  # noqa: E402
from hetcache_cli.io.mask import load_mask  # noqa: E402
from hetcache_cli.io.video import read_video  # noqa: E402
from hetcache_cli.pipeline.model import ModelRef, load_pipeline  # noqa: E402
from hetcache_cli.resources import demo_dir, embedded_model_dir  # noqa: E402


class DitClock:
    """Wall and CPU seconds spent inside the transformer's calls."""

    def __init__(self, transformer) -> None:
        self.wall = self.cpu = 0.0
        self._start = (0.0, 0.0)
        self._handles = [transformer.register_forward_pre_hook(self._begin),
                         transformer.register_forward_hook(self._end)]  # fmt: skip

    def _begin(self, *_):
        self._start = (time.perf_counter(), time.process_time())

    def _end(self, *_):
        self.wall += time.perf_counter() - self._start[0]
        self.cpu += time.process_time() - self._start[1]

    def remove(self):
        for h in self._handles:
            h.remove()


def run(pipe, video, mask, steps: int, config: HetCacheConfig, guidance: float):
    stats = StepStats()
    apply_hetcache(pipe, config, stats)
    clock = DitClock(pipe.transformer)
    try:
        size = video[0].size
        latents = pipe(prompt="a red ball", video=video, mask=mask, height=size[1], width=size[0],
                       num_frames=len(video), num_inference_steps=steps, guidance_scale=guidance,
                       generator=torch.Generator().manual_seed(0), output_type="latent").frames
    finally:
        clock.remove()
        remove_hetcache(pipe)
    return latents, stats.summary(), clock


def main(argv=None) -> int:
    import PIL.Image

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="the demo model's default")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    pipe = load_pipeline(ModelRef("embedded", embedded_model_dir()), torch.device("cpu"), torch.float32)
    clip = read_video(demo_dir() / "input.mp4")
    frames = clip.frames[:17]
    masks = load_mask(str(demo_dir() / "mask.png"), len(frames), frames.shape[1:3])
    video = [PIL.Image.fromarray(f) for f in frames]
    mask = [PIL.Image.fromarray((m * 255).astype("uint8")).convert("RGB") for m in masks]

    schedules = {"all FULL": dict(schedule="F" * args.steps), "fast preset": {}}
    results = []
    for label, extra in schedules.items():
        preset = "fast" if label == "fast preset" else None
        configs = {on: build_config({**extra, "text_kv": on}, preset=preset) for on in (False, True)}
        run(pipe, video, mask, min(args.steps, 4), build_config({"text_kv": True}), args.guidance_scale)  # warm-up
        wall, cpu = {False: [], True: []}, {False: [], True: []}
        outs, summaries = {}, {}
        for _ in range(args.repeats):
            for on, config in configs.items():
                outs[on], summaries[on], clock = run(pipe, video, mask, args.steps, config, args.guidance_scale)
                wall[on].append(clock.wall * 1e3)
                cpu[on].append(clock.cpu * 1e3)
        off, on = statistics.median(cpu[False]), statistics.median(cpu[True])
        wall_off, wall_on = statistics.median(wall[False]), statistics.median(wall[True])
        results.append({
            "schedule": label, "decisions": summaries[True]["schedule"],
            "dit_cpu_ms_text_kv_off": off, "dit_cpu_ms_text_kv_on": on, "dit_cpu_speedup": off / on,
            "dit_wall_ms_text_kv_off": wall_off, "dit_wall_ms_text_kv_on": wall_on, "dit_wall_speedup": wall_off / wall_on,
            "flops_ratio_off": summaries[False]["flops_ratio"], "flops_ratio_on": summaries[True]["flops_ratio"],
            "flops_cut": summaries[False]["flops"] / summaries[True]["flops"],
            "identical_output": bool(torch.equal(outs[False], outs[True])),
            "cpu_ms": {"off": cpu[False], "on": cpu[True]}, "wall_ms": {"off": wall[False], "on": wall[True]},
        })  # fmt: skip

    print(f"demo edit, {len(frames)} frames {frames.shape[2]}x{frames.shape[1]}, {args.steps} steps, guidance "
          f"{args.guidance_scale:g}, {args.threads} threads, median of {args.repeats}")
    print("| schedule | DiT CPU ms, text K/V every step | once | CPU speedup | wall speedup | analytic FLOPs cut "
          "| same output |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['schedule']} ({r['decisions']}) | {r['dit_cpu_ms_text_kv_off']:.0f} | "
              f"{r['dit_cpu_ms_text_kv_on']:.0f} | {r['dit_cpu_speedup']:.2f}x | {r['dit_wall_speedup']:.2f}x | "
              f"{r['flops_cut']:.2f}x | {r['identical_output']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
