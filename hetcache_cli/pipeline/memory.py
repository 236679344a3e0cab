"""What fits where: GPU and host memory of an edit, estimated from model configs (no weights loaded).

Weights are counted by building each component on PyTorch's meta device from its config (the
known Wan-VACE architectures below, or a model folder's config files), so parameter counts are
exact. GPU memory during the denoising loop, per `offload`:

- none: every component on the GPU (text encoder and transformers in the run dtype, VAE float32);
- model: one transformer at a time (diffusers moves whole components);
- group: a transformer's non-block weights plus two blocks (the one running, the next prefetched);
- leaf: two of the largest layers.

On top of the weights: HetCache's caches on the GPU (engine's `cache_memory`: K/V unless
`cache_device: cpu`, residual, fp8 scales, host staging, the prompt's K/V; one expert at a time,
the first expert's are freed at the switch) and an activation estimate (`storage.activation_bytes`,
plus one dequantised layer for fp8 / host K/V). Not included: the VAE's decode working memory, the
CUDA context (~0.5 GiB) and allocator fragmentation. These are estimates, not measurements.
"""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hetcache_cli.errors import InputError

GIB = 2**30
CARDS_GIB = (24, 48, 80)  # common GPU sizes (an "80 GB" card has 80 GiB)
RESERVE = GIB  # CUDA context and allocator slack kept free on a card

_WAN = dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
            freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
            vace_in_channels=96)  # fmt: skip
VACE_1_3B = dict(_WAN, num_attention_heads=12, ffn_dim=8960, num_layers=30, vace_layers=list(range(0, 30, 2)))
VACE_14B = dict(_WAN, num_attention_heads=40, ffn_dim=13824, num_layers=40, vace_layers=list(range(0, 40, 5)))
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128)
ARCHITECTURES = {
    "wan2.1-vace-1.3b": [VACE_1_3B],
    "wan2.1-vace-14b": [VACE_14B],
    "wan2.2-vace-fun-a14b": [VACE_14B, VACE_14B],  # high- and low-noise experts, boundary_ratio 0.875
}
ALIASES = {
    "Wan-AI/Wan2.1-VACE-1.3B-diffusers": "wan2.1-vace-1.3b",
    "Wan-AI/Wan2.1-VACE-14B-diffusers": "wan2.1-vace-14b",
    "1.3b": "wan2.1-vace-1.3b",
    "14b": "wan2.1-vace-14b",
    "a14b": "wan2.2-vace-fun-a14b",
}
OFFLOADS = ("none", "model", "group", "leaf")


@dataclass
class TransformerSize:
    config: dict
    param_bytes: int  # all weights in the run dtype
    block_bytes: int  # the largest main or VACE block
    rest_bytes: int  # everything outside the blocks (embeddings, head)
    leaf_bytes: int  # the largest single layer


@dataclass
class ModelSizes:
    name: str
    transformers: list[TransformerSize]
    text_encoder_params: int
    vae_params: int


def _nbytes(module, itemsize: int) -> int:
    return sum(p.numel() for p in module.parameters()) * itemsize


def transformer_size(config: dict, dtype: torch.dtype) -> TransformerSize:
    return _transformer_size(json.dumps(config, sort_keys=True), dtype)


@functools.lru_cache(maxsize=16)
def _transformer_size(config_json: str, dtype: torch.dtype) -> TransformerSize:
    from diffusers import WanVACETransformer3DModel

    config = json.loads(config_json)
    keys = set(inspect.signature(WanVACETransformer3DModel.__init__).parameters)
    with torch.device("meta"):
        model = WanVACETransformer3DModel(**{k: v for k, v in config.items() if k in keys})
    return measure_transformer(model, dtype, config)


def measure_transformer(model, dtype: torch.dtype, config: dict | None = None) -> TransformerSize:
    """Sizes of a (meta or loaded) WanVACETransformer3DModel, its weights taken in `dtype`."""
    size = torch.empty((), dtype=dtype).element_size()
    config = config if config is not None else {k: v for k, v in model.config.items() if not k.startswith("_")}
    blocks = list(model.blocks) + list(model.vace_blocks)
    leaves = [m for m in model.modules() if not list(m.children())]
    total = _nbytes(model, size)
    return TransformerSize(
        config=config,
        param_bytes=total,
        block_bytes=max(_nbytes(b, size) for b in blocks),
        rest_bytes=total - sum(_nbytes(b, size) for b in blocks),
        leaf_bytes=max(_nbytes(m, size) for m in leaves),
    )


@functools.lru_cache(maxsize=16)
def _count(kind: str, config_json: str) -> int:
    """Parameters of a text encoder or VAE built from its config on the meta device."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    config = json.loads(config_json)
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**config)) if kind == "text" else AutoencoderKLWan(**config)
    return sum(p.numel() for p in model.parameters())


def model_sizes(model: str, dtype: torch.dtype = torch.bfloat16) -> ModelSizes:
    """Sizes of a known architecture (see ARCHITECTURES, ALIASES) or of a diffusers folder's configs."""
    key = ALIASES.get(model, model)
    name = key.lower() if key.lower() in ARCHITECTURES else model
    if name in ARCHITECTURES:
        configs = ARCHITECTURES[name]
        text: dict = UMT5_XXL
        vae_config: dict = {}
    else:
        folder = _folder(model)
        configs = [_read(folder / part / "config.json") for part in ("transformer", "transformer_2")
                   if (folder / part / "config.json").is_file()]  # fmt: skip
        if not configs:
            raise InputError(f"{folder} has no transformer/config.json; pass a diffusers Wan-VACE folder")
        text = {k: v for k, v in _read(folder / "text_encoder" / "config.json").items()
                if not k.startswith("_") and k not in ("architectures", "transformers_version")}  # fmt: skip
        vae_config = {k: v for k, v in _read(folder / "vae" / "config.json").items() if not k.startswith("_")}
    return ModelSizes(
        name=name,
        transformers=[transformer_size(c, dtype) for c in configs],
        text_encoder_params=_count("text", json.dumps(text, sort_keys=True)),
        vae_params=_count("vae", json.dumps(vae_config, sort_keys=True)),
    )


def pipeline_sizes(pipe, name: str) -> ModelSizes:
    """Sizes of a loaded WanVACEPipeline (both experts of a Wan2.2 one)."""
    from hetcache_cli.cache.experts import pipeline_experts

    return ModelSizes(
        name=name,
        transformers=[measure_transformer(t, t.dtype) for _, t in pipeline_experts(pipe)],
        text_encoder_params=sum(p.numel() for p in pipe.text_encoder.parameters()),
        vae_params=sum(p.numel() for p in pipe.vae.parameters()),
    )


def _folder(model: str) -> Path:
    from hetcache_cli.pipeline.model import resolve_model

    if model not in ARCHITECTURES and "/" not in model and not Path(model).exists():
        known = ", ".join(ARCHITECTURES)
        raise InputError(f"model {model!r} is not known here; use one of {known}, a model folder or a cached hub id")
    return resolve_model(model).path


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}; pass a complete diffusers folder") from exc


def estimate(
    sizes: ModelSizes, frames: int, height: int, width: int, cache_dtype: str = "auto", cache_device: str = "cuda",
    offload: str = "none", branches: int = 2, dtype: torch.dtype = torch.bfloat16, method: str = "hetcache",
    forecast: str = "auto", parallel: str | None = None,
) -> dict:
    """GPU and host bytes of one edit's denoising loop (see the module docstring for what is counted).

    `forecast` as the cache setting: `auto` / `linear` keep K/V slopes for float K/V on the GPU. `parallel`
    (`cfg`, `ulysses=U`, `cfg,ulysses=U`): per GPU of that layout. Weights are replicated; with cfg each GPU
    holds one branch's caches; with Ulysses a GPU holds H/U heads of the K/V of all N tokens and L rows of the
    residual (L = ceil((N + U - 1) / U): the step caches x L / N), the prompt's K/V replicated; activations of
    L tokens plus the head-sharded Q/K/V/output of all N tokens.
    """
    from hetcache_cli.cache.config import HetCacheConfig
    from hetcache_cli.cache.flops import ModelDims
    from hetcache_cli.cache.planning import plan_layout
    from hetcache_cli.cache.state import cache_memory
    from hetcache_cli.cache.storage import activation_bytes
    from hetcache_cli.cache.ulysses import rows_per_rank

    if offload not in OFFLOADS:
        raise InputError(f"offload {offload!r} is not valid; use one of {', '.join(OFFLOADS)}")
    if (frames - 1) % 4 or height % 16 or width % 16:
        raise InputError(f"{frames} frames {width}x{height}: use 4k+1 frames and sides that are multiples of 16")
    n_tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
    spread = _layout(parallel, sizes, branches)
    u, rows = spread.ulysses, rows_per_rank(n_tokens, spread.ulysses) if spread.ulysses > 1 else n_tokens
    if spread.cfg:
        branches = 1  # per GPU
    text_bytes = sizes.text_encoder_params * torch.empty((), dtype=dtype).element_size()  # loaded in `dtype`
    vae_bytes = sizes.vae_params * 4  # float32
    # the layout as a run's plan decides it (planning.plan_layout), for a GPU with room for the caches
    try:
        config = HetCacheConfig(method=method, cache_dtype=cache_dtype, cache_device=cache_device, forecast=forecast)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    per_expert = []
    for t in sizes.transformers:
        dims = ModelDims.from_config(t.config)
        layout, _ = plan_layout(config, dims, dtype, n_tokens, branches, None, method)
        caches = cache_memory(dims, n_tokens, branches, layout, dtype, method)
        if u > 1:  # step caches sharded (K/V by heads, residual by rows), the prompt's K/V replicated
            shard = lambda b: b * rows // n_tokens  # noqa: E731
            caches = {"device": shard(caches["device"] - caches["text"]) + caches["text"], "host": shard(caches["host"])}
        activations = activation_bytes(dims.dim, dims.ffn_dim, dims.num_vace_layers, rows, dtype)
        if u > 1:
            activations += 4 * n_tokens * dims.dim // u * torch.empty((), dtype=dtype).element_size()
        if layout.quantised or layout.host:
            activations += 2 * n_tokens * dims.dim * torch.empty((), dtype=dtype).element_size()
        resident = {"none": t.param_bytes, "model": t.param_bytes, "group": t.rest_bytes + 2 * t.block_bytes,
                    "leaf": 2 * t.leaf_bytes}[offload]  # fmt: skip
        per_expert.append({"weights": resident, "caches": caches["device"], "host_caches": caches["host"],
                           "activations": activations, "tokens": n_tokens})  # fmt: skip
    all_transformers = sum(t.param_bytes for t in sizes.transformers)
    others = text_bytes + vae_bytes + all_transformers - per_expert[0]["weights"] if offload == "none" else 0
    peak = max(e["weights"] + e["caches"] + e["activations"] for e in per_expert) + others
    weights_on_gpu = max(e["weights"] for e in per_expert) + others
    host = (0 if offload == "none" else text_bytes + vae_bytes + all_transformers) + max(
        e["host_caches"] for e in per_expert)
    worst = max(per_expert, key=lambda e: e["weights"] + e["caches"] + e["activations"])
    return {
        "model": sizes.name, "frames": frames, "height": height, "width": width, "tokens": n_tokens,
        "experts": len(sizes.transformers), "branches": branches, "offload": offload, "cache_dtype": cache_dtype,
        "cache_device": cache_device, "gpu_bytes": peak, "gpu_weights_bytes": weights_on_gpu,
        "gpu_cache_bytes": worst["caches"], "gpu_activation_bytes": worst["activations"], "host_bytes": host,
        "fits_gb": [c for c in CARDS_GIB if peak + RESERVE <= c * GIB],
        "parallel": str(spread) if parallel else None, "gpus": spread.world_size,
    }  # fmt: skip


def _layout(parallel: str | None, sizes: ModelSizes, branches: int):
    """The `--parallel` layout, checked against the model's heads and the guidance branches (InputError)."""
    from hetcache_cli.cache.parallel import Layout, check_layout, parse_layout

    if not parallel:
        return Layout()
    try:
        layout = parse_layout(parallel)
        heads = min(t.config["num_attention_heads"] for t in sizes.transformers)
        check_layout(layout, layout.world_size, heads, 2.0 if branches == 2 else 1.0)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return layout


TABLE_MODELS = ("wan2.1-vace-1.3b", "wan2.1-vace-14b", "wan2.2-vace-fun-a14b")
TABLE_COLUMNS = (("none", "cuda", None), ("model", "cuda", None), ("group", "cuda", None), ("model", "cpu", None),
                 ("group", "cpu", None), ("none", "cuda", "cfg"), ("none", "cuda", "cfg,ulysses=2"),
                 ("none", "cuda", "cfg,ulysses=4"))  # fmt: skip


def fit_table(frames=(33, 81), cache_dtypes=("bfloat16", "float8_e4m3fn"), height: int = 480, width: int = 832,
              sizes: dict | None = None) -> list[dict]:
    """Rows of the README's table: model x frames x cache dtype, one estimate per offload column."""
    sizes = sizes or {m: model_sizes(m) for m in TABLE_MODELS}
    rows = []
    for model in sizes:
        for n in frames:
            for cache_dtype in cache_dtypes:
                cells = [estimate(sizes[model], n, height, width, cache_dtype, device, offload, parallel=parallel)
                         for offload, device, parallel in TABLE_COLUMNS]  # fmt: skip
                rows.append({"model": model, "frames": n, "cache_dtype": cache_dtype, "cells": cells})
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown: GPU GiB per column and the smallest of 24 / 48 / 80 GB cards it fits on."""
    head = ["model", "frames", "K/V caches", "offload none", "offload model", "offload group",
            "model + host K/V", "group + host K/V", "2 GPUs: cfg", "4 GPUs: cfg,ulysses=2",
            "8 GPUs: cfg,ulysses=4"]  # fmt: skip
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = []
        for cell in row["cells"]:
            card = f"{cell['fits_gb'][0]} GB" if cell["fits_gb"] else "> 80 GB"
            cells.append(f"{cell['gpu_bytes'] / GIB:.1f} GiB ({card})")
        dtype = {"bfloat16": "bf16", "float8_e4m3fn": "fp8"}.get(row["cache_dtype"], row["cache_dtype"])
        out.append(f"| {row['model']} | {row['frames']} | {dtype} | " + " | ".join(cells) + " |")
    return "\n".join(out)
