"""Build a random-weight model folder with Wan2.1-VACE-1.3B's transformer, saved as hub folders are.

The transformer has the released config (width 1536, 12 heads of 128, FFN 8960, 30 blocks, VACE
blocks at 0, 2, ..., 28, text width 4096, 16 latent channels); its weights are random (normal,
std 0.02), stored in bfloat16 except the modules diffusers keeps in float32
(`_keep_in_fp32_modules`: time embedder, modulation tables, norms), in sharded safetensors with
an index, as `Wan-AI/Wan2.1-VACE-1.3B-diffusers` ships them. The text encoder is a one-layer UMT5
of width 4096 and the VAE a small AutoencoderKLWan with 16 latent channels: the same classes and
the interfaces the transformer needs, at a fraction of the size. About 4.4 GB on disk.

It lets the loading path, the real widths and the real head counts run on a CPU without weights:

    python scripts/make_real_shaped_model.py runs/wan13b-random
    hetcache edit assets/demo/input.mp4 --mask assets/demo/mask.png --prompt "a red ball" \\
        --model runs/wan13b-random --dtype bfloat16 --steps 2 --frames 5 --width 64 --height 64

The output is noise (random weights); what it checks is that everything runs at these shapes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hetcache_cli.pipeline.tiny import TinyConfig, build_scheduler, build_tokenizer, build_vae  # noqa: E402

WAN_13B_TRANSFORMER = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
    "vace_layers": list(range(0, 30, 2)),
    "vace_in_channels": 96,
}


def build_transformer(config: dict, seed: int):
    """The transformer on the meta device, materialised in bfloat16 with random weights, float32 where diffusers keeps it."""
    from diffusers import WanVACETransformer3DModel

    with torch.device("meta"):
        model = WanVACETransformer3DModel(**config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    keep = tuple(WanVACETransformer3DModel._keep_in_fp32_modules or ())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in keep for part in name.split(".")):
                param.data = torch.empty(param.shape, dtype=torch.float32)
            if "norm" in name:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.normal_(0.0, 0.02, generator=gen)
    return model.eval()


def build_text_encoder(vocab_size: int, width: int):
    """A one-layer UMT5 encoder whose output has the width the transformer's text embedder takes."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size, d_model=width, d_kv=64, d_ff=256, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    )  # fmt: skip
    return UMT5EncoderModel(config).eval()


def build(out: Path, seed: int = 0, max_shard_size: str = "2GB") -> Path:
    from diffusers import WanVACEPipeline

    torch.manual_seed(seed)
    tiny = TinyConfig(z_dim=WAN_13B_TRANSFORMER["in_channels"])
    tokenizer = build_tokenizer(tiny.vocab)
    pipe = WanVACEPipeline(
        tokenizer=tokenizer,
        text_encoder=build_text_encoder(len(tokenizer), WAN_13B_TRANSFORMER["text_dim"]),
        vae=build_vae(tiny).eval(),
        scheduler=build_scheduler(tiny),
        transformer=build_transformer(WAN_13B_TRANSFORMER, seed),
    )
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, max_shard_size=max_shard_size)
    (tmp / "hetcache_real_shaped.json").write_text(json.dumps(
        {"transformer": "Wan2.1-VACE-1.3B config, random weights (normal, std 0.02)", "seed": seed}, indent=2,
    ) + "\n")  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (replaced if it exists)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-shard-size", default="2GB", help="safetensors shard size [default: 2GB]")
    args = parser.parse_args(argv)
    path = build(args.out, args.seed, args.max_shard_size)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote {path} ({size / 1e9:.2f} GB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
