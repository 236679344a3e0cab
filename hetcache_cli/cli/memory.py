"""`hetcache memory`: estimated GPU and host memory of an edit, from model configs (no weights loaded)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from hetcache_cli.cli import options as opt
from hetcache_cli.cli.common import handle_errors, print_json, setup_logging, stdout
from hetcache_cli.errors import InputError

EPILOG = """
Examples:

  hetcache memory                     # the what-fits-where table: 1.3B / 14B / A14B x 33 / 81 frames

  hetcache memory --model wan2.1-vace-14b --frames 81 --offload group --cache-dtype float8_e4m3fn

  hetcache memory --model path/to/Wan2.2-VACE-Fun-A14B-diffusers --frames 81 --cache-device cpu --json

  hetcache memory --model wan2.1-vace-14b --frames 81 --parallel cfg,ulysses=4   # per GPU of 8
"""

CacheDtype = Annotated[
    Optional[str], typer.Option("--cache-dtype", help="auto | float32 | float16 | bfloat16 | float8_e4m3fn [default: bfloat16].")
]
CacheDevice = Annotated[Optional[str], typer.Option("--cache-device", help="cuda | cpu: where the K/V caches live [default: cuda].")]


@handle_errors
def memory(
    model: Annotated[
        Optional[str],
        typer.Option("--model", help="wan2.1-vace-1.3b | wan2.1-vace-14b | wan2.2-vace-fun-a14b, a folder or a cached hub id [default: all three, as a table]."),
    ] = None,
    frames: Annotated[int, typer.Option("--frames", help="Frames, 4k+1.")] = 81,
    height: Annotated[int, typer.Option("--height", help="Height, a multiple of 16.")] = 480,
    width: Annotated[int, typer.Option("--width", help="Width, a multiple of 16.")] = 832,
    cache_dtype: CacheDtype = None,
    cache_device: CacheDevice = None,
    offload: opt.Offload = None,
    guidance_scale: Annotated[float, typer.Option("--guidance-scale", help="Above 1: two guidance branches.")] = 5.0,
    parallel: Annotated[
        Optional[str],
        typer.Option("--parallel", metavar="LAYOUT", help="Per GPU of `edit --parallel LAYOUT`: cfg, ulysses=U, "
                     "cfg,ulysses=U."),
    ] = None,
    json_out: opt.Json = False,
) -> None:
    """Estimate the memory of an edit's denoising loop: weights on the GPU, HetCache's caches, activations."""
    setup_logging(json_out)
    from hetcache_cli.cache.config import CACHE_DEVICES, CACHE_DTYPES
    from hetcache_cli.cache.plan import guidance_branches
    from hetcache_cli.cache.state import format_bytes as size
    from hetcache_cli.pipeline.memory import OFFLOADS, estimate, fit_table, format_table, model_sizes

    if cache_dtype is not None and cache_dtype not in CACHE_DTYPES:
        raise InputError(f"--cache-dtype {cache_dtype!r} is not valid; use one of {', '.join(CACHE_DTYPES)}")
    if cache_device is not None and cache_device not in CACHE_DEVICES:
        raise InputError(f"--cache-device {cache_device!r} is not valid; use cuda or cpu")
    if offload is not None and offload not in OFFLOADS:
        raise InputError(f"--offload {offload!r} is not valid; use one of {', '.join(OFFLOADS)}")
    if model is None:
        rows = fit_table()
        if json_out:
            print_json(rows)
        else:
            stdout.print(format_table(rows), highlight=False, markup=False)
            stdout.print(
                "Estimates: GPU memory of the denoising loop at 480x832, bf16 weights, two guidance branches, HetCache "
                "caches; (N GB): the smallest of 24 / 48 / 80 GB cards it fits with 1 GiB to spare. Host memory "
                "holds the offloaded weights (and the K/V with cache_device: cpu).",
                highlight=False,
            )
        return
    est = estimate(model_sizes(model), frames, height, width, cache_dtype or "bfloat16", cache_device or "cuda",
                   offload or "none", branches=guidance_branches(guidance_scale), parallel=parallel)  # fmt: skip
    if json_out:
        print_json(est)
        return
    fits = ", ".join(f"{c} GB" for c in est["fits_gb"]) or "none of 24 / 48 / 80 GB"
    stdout.print(
        f"{est['model']}: {frames} frames {width}x{height} ({est['tokens']} tokens), {est['experts']} expert(s), "
        + (f"per GPU of {est['gpus']} (--parallel {est['parallel']}), " if est["parallel"] else "")
        + f"{est['branches']} branch(es), offload {est['offload']}, K/V {est['cache_dtype']} on {est['cache_device']}\n"
        f"GPU   {size(est['gpu_bytes'])} (estimate): weights {size(est['gpu_weights_bytes'])}, caches "
        f"{size(est['gpu_cache_bytes'])}, activations {size(est['gpu_activation_bytes'])}; fits: {fits}\n"
        f"host  {size(est['host_bytes'])} (offloaded weights and host K/V)",
        highlight=False,
    )
