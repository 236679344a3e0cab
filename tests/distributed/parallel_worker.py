"""One rank of a `--parallel` layout test (tests/distributed/test_parallel.py), started by torchrun.

Every rank builds the same random tiny Wan-VACE pipeline (4 heads) and runs each case in the layout;
rank 0 then runs the case again in one process (no layout) and writes what the test checks to a JSON file:
the largest difference of the float32 decoded frames, whether the step records agree, the per-rank K/V
bytes, and the traffic per forward by step kind.
"""

import json
import sys
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from hetcache_cli.cache import StepStats, apply_hetcache, build_config, remove_hetcache
from hetcache_cli.cache.parallel import Traffic, parse_layout
from hetcache_cli.pipeline.parallel_edit import attach, merge, rank_report
from hetcache_cli.pipeline.tiny import TinyConfig, build_tiny_pipeline

CASES = {  # name: (cache overrides, preset, steps); the fast preset plans FPFPFPFPFF at 10 steps
    "all_full": ({"schedule": "FFFFFF"}, None, 6),
    "fast": ({}, "fast", 10),
    "partial": ({"schedule": "FPPRFP"}, None, 6),
    "teacache": ({"method": "teacache", "schedule": "FRFRFR"}, None, 6),
    "none": ({"method": "none"}, None, 6),
    "fp8_host": ({"schedule": "FPPRFP", "cache_dtype": "float8_e4m3fn", "cache_device": "cpu"}, None, 6),
}


def inputs(frames: int = 9, size: int = 64):
    """A clip whose mask moves: a square sliding right frame by frame."""
    rng = np.random.default_rng(0)
    video = rng.random((1, frames, size, size, 3), dtype=np.float32)
    mask = np.zeros((1, frames, size, size, 3), np.float32)
    for f in range(frames):
        x0 = 4 + 3 * f
        mask[0, f, 16:40, x0 : x0 + 20] = 1.0
    return video, mask


def run(pipe, config, steps, layout=None, timeout=120.0):
    stats = StepStats()
    hook = apply_hetcache(pipe, config, stats=stats)
    layouts = attach(pipe, layout, timeout) if layout is not None else (None, None)
    held = Traffic()  # one process: the same measurement of the K/V tensors, after every forward

    def observe(*_):
        for branch, state in hook.state_manager._state_cache.items():
            if state.residual is not None:
                held.observe(branch, state)

    handle = pipe.transformer.register_forward_hook(observe) if layout is None else None
    video, mask = inputs()
    try:
        out = pipe(prompt="a red ball", negative_prompt="blurry", video=video, mask=mask, height=64, width=64,
                   num_frames=9, num_inference_steps=steps, guidance_scale=3.0,
                   generator=torch.Generator().manual_seed(7), output_type="np")  # fmt: skip
    finally:
        remove_hetcache(pipe)
        if handle is not None:
            handle.remove()
    stats.finalize()
    stats.kv_bytes = held.peak["kv_bytes"]
    return np.asarray(out.frames[0], np.float32), stats, layouts


def main() -> None:
    layout, result_path = parse_layout(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank = dist.get_rank()
    pipe = build_tiny_pipeline(TinyConfig(num_layers=2, vace_layers=[0], heads=4, head_dim=16), seed=0)
    results = {}
    for name, (overrides, preset, steps) in CASES.items():
        config = build_config(overrides, preset)
        frames, stats, layouts = run(pipe, config, steps, layout)
        reports = [None] * dist.get_world_size() if rank == 0 else None
        dist.gather_object(rank_report(stats, layouts), reports, dst=0)
        if rank != 0:
            continue
        merge(stats, reports, layout.ulysses)
        single, ref, _ = run(pipe, config, steps)
        key = lambda rs: [(r.step, r.branch, r.decision, vars(r.tokens)) for r in rs]  # noqa: E731
        results[name] = {
            "max_abs_diff": float(np.abs(frames - single).max()),
            "records_equal": key(stats.records) == key(ref.records),
            "records": len(stats.records),
            "steps": steps,
            "decisions": [r.decision for r in ref.records],
            "active_fraction": max((r.tokens.computed / r.tokens.total for r in ref.records
                                    if r.decision == "partial"), default=None),  # fmt: skip
            "single_cache_bytes": ref.cache_memory_measured_bytes,
            "single_kv_bytes": ref.kv_bytes,
            "ranks": [{k: v for k, v in r.items() if k != "records"} for r in reports],
        }
    if rank == 0:
        with open(result_path, "w") as fh:
            json.dump(results, fh, indent=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
