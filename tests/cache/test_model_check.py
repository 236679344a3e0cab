"""Cache settings against model configs (cache/model_check.py): pure, no weights."""

import json
import struct

import pytest

from hetcache_cli.cache.config import HetCacheConfig
from hetcache_cli.cache.model_check import check_against_configs, read_transformer_configs, weights_width
from hetcache_cli.errors import InputError

WAN = dict(num_attention_heads=12, attention_head_dim=128, num_layers=30, vace_layers=list(range(0, 30, 2)),
           ffn_dim=8960, patch_size=[1, 2, 2])


def test_score_layer_is_checked_against_every_expert():
    check_against_configs(HetCacheConfig(score_layer=29), {"transformer": WAN}, {"transformer": 1536}, "m")
    small = {**WAN, "num_layers": 20, "vace_layers": [0, 10]}
    with pytest.raises(InputError, match="transformer_2 has 20 blocks; use -1 .* or 0..19"):
        check_against_configs(HetCacheConfig(score_layer=25), {"transformer": WAN, "transformer_2": small}, {}, "m")


def test_heads_must_match_the_weights_and_vace_layers_the_blocks():
    with pytest.raises(InputError, match="40 heads x 128 = 5120 but its weights are 1536 wide"):
        check_against_configs(HetCacheConfig(), {"transformer": {**WAN, "num_attention_heads": 40}},
                              {"transformer": 1536}, "m")
    with pytest.raises(InputError, match=r"VACE blocks at layers \[30\]"):
        check_against_configs(HetCacheConfig(), {"transformer": {**WAN, "vace_layers": [0, 30]}}, {}, "m")
    with pytest.raises(InputError, match="lacks ffn_dim"):
        check_against_configs(HetCacheConfig(), {"transformer": {k: v for k, v in WAN.items() if k != "ffn_dim"}},
                              {}, "m")


def test_configs_and_width_are_read_without_the_weights(tmp_path):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer_2").mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps({
        "transformer": ["diffusers", "WanVACETransformer3DModel"],
        "transformer_2": ["diffusers", "WanVACETransformer3DModel"], "boundary_ratio": None}))
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(WAN))
    header = json.dumps({"blocks.0.attn1.to_q.weight": {"dtype": "BF16", "shape": [1536, 1536], "data_offsets": [0, 0]}})
    raw = header.encode()
    (tmp_path / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    # without a boundary_ratio diffusers never runs transformer_2: it is not checked
    assert read_transformer_configs(tmp_path) == {"transformer": WAN}
    assert weights_width(tmp_path / "transformer") == 1536
    assert weights_width(tmp_path / "transformer_2") is None


def test_width_is_read_from_a_sharded_folder_as_the_hub_lays_it_out(tmp_path):
    from hetcache_cli.pipeline.tiny import TinyConfig, build_tiny_pipeline

    transformer = build_tiny_pipeline(TinyConfig(num_layers=2, vace_layers=[0]), seed=0).transformer
    transformer.save_pretrained(tmp_path / "transformer", max_shard_size="100KB")
    assert list((tmp_path / "transformer").glob("*.safetensors.index.json"))
    assert len(list((tmp_path / "transformer").glob("*.safetensors"))) >= 2
    config = transformer.config
    assert weights_width(tmp_path / "transformer") == config.num_attention_heads * config.attention_head_dim
