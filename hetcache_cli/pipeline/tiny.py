"""A tiny Wan-VACE pipeline built offline from configs: the embedded default model and test model.

Everything real Wan2.1-VACE has, at toy width: a word-level tokenizer built from an in-memory
vocabulary, a UMT5 text encoder, an AutoencoderKLWan (8x spatial, 4x causal temporal
compression) and a WanVACETransformer3DModel. With `experts=2` it has Wan2.2 VACE-Fun's
layout: a second transformer (`transformer_2`, the low-noise expert, its own weights) and a
`boundary_ratio`. Saved with `save_pretrained`, it loads through the same
`WanVACEPipeline.from_pretrained` path as real weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

# Words the demo prompts use; anything else maps to <unk>.
VOCABULARY = (
    "a an the of with and in on empty background nothing remove object scene "
    "red green blue yellow orange purple white black gray pink cyan brown dark light bright "
    "ball square box circle disc triangle star ring block cube car bird fish shape "
    "small big large vintage moving striped textured plain smooth"
).split()


@dataclass
class TinyConfig:
    vocab: list[str] = field(default_factory=lambda: list(VOCABULARY))
    text_dim: int = 32
    text_layers: int = 2
    text_heads: int = 4
    vae_base_dim: int = 16
    z_dim: int = 8
    heads: int = 4
    head_dim: int = 16
    ffn_dim: int = 128
    num_layers: int = 4
    vace_layers: list[int] = field(default_factory=lambda: [0, 2])
    flow_shift: float = 3.0
    experts: int = 1  # 2: a Wan2.2-style pipeline with `transformer_2`
    boundary_ratio: float = 0.5  # with two experts: `transformer` runs the timesteps >= this x 1000

    def to_dict(self) -> dict:
        return asdict(self)


def build_tokenizer(vocab: list[str]):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    table = {tok: i for i, tok in enumerate(specials + [w for w in vocab if w not in specials])}
    tok = Tokenizer(WordLevel(table, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", table["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_text_encoder(cfg: TinyConfig, vocab_size: int):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=cfg.text_dim,
        d_kv=cfg.text_dim // cfg.text_heads,
        d_ff=cfg.text_dim * 2,
        num_layers=cfg.text_layers,
        num_heads=cfg.text_heads,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return UMT5EncoderModel(config)


def build_vae(cfg: TinyConfig):
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=cfg.vae_base_dim,
        z_dim=cfg.z_dim,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * cfg.z_dim,
        latents_std=[1.0] * cfg.z_dim,
    )


def build_transformer(cfg: TinyConfig):
    from diffusers import WanVACETransformer3DModel

    return WanVACETransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.z_dim,
        out_channels=cfg.z_dim,
        text_dim=cfg.text_dim,
        freq_dim=64,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
        vace_layers=list(cfg.vace_layers),
        vace_in_channels=2 * cfg.z_dim + 64,
    )


def build_scheduler(cfg: TinyConfig):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=cfg.flow_shift,
    )


def build_tiny_pipeline(cfg: TinyConfig | None = None, seed: int = 0):
    """A randomly initialised tiny WanVACEPipeline (deterministic for a seed)."""
    from diffusers import WanVACEPipeline

    cfg = cfg or TinyConfig()
    if cfg.experts not in (1, 2):
        raise ValueError(f"experts is {cfg.experts}: a Wan-VACE pipeline has 1 or 2 transformers")
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(cfg.vocab)
    two = cfg.experts == 2
    pipe = WanVACEPipeline(
        tokenizer=tokenizer,
        text_encoder=build_text_encoder(cfg, len(tokenizer)),
        vae=build_vae(cfg),
        scheduler=build_scheduler(cfg),
        transformer=build_transformer(cfg),
        transformer_2=build_transformer(cfg) if two else None,
        boundary_ratio=cfg.boundary_ratio if two else None,
    )
    for module in (pipe.text_encoder, pipe.vae, pipe.transformer, pipe.transformer_2):
        if module is not None:
            module.eval()  # as from_pretrained leaves them: no dropout
    pipe.set_progress_bar_config(disable=True)
    return pipe
