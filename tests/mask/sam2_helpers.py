"""A tiny random-weight SAM 2 video model for the tests."""

TINY_SIZE = 64  # the model's square input; real SAM 2 uses 1024
TINY_MEAN = (0.5, 0.4, 0.3)
TINY_STD = (0.2, 0.25, 0.3)


def build_tiny_sam2(seed: int = 0):
    """A Sam2VideoModel of ~1 M parameters: a 4-stage Hiera of 1-2 blocks at 64x64, small memory bank."""
    import torch
    from transformers import Sam2HieraDetConfig, Sam2VideoConfig, Sam2VideoModel, Sam2VisionConfig
    from transformers.models.sam2_video.configuration_sam2_video import (
        Sam2VideoMaskDecoderConfig,
        Sam2VideoPromptEncoderConfig,
    )

    s = TINY_SIZE
    backbone = Sam2HieraDetConfig(
        hidden_size=8, embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 2, 2],
        image_size=[s, s], blocks_per_stage=[1, 1, 2, 1], window_size_per_stage=[4, 4, 4, 2],
        global_attention_blocks=[3], window_positional_embedding_background_size=[2, 2],
    )  # fmt: skip
    vision = Sam2VisionConfig(
        backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]], fpn_hidden_size=128,
    )  # fmt: skip
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(hidden_size=128, image_size=s, patch_size=16),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(hidden_size=128, mlp_dim=64, num_attention_heads=2,
                                                       iou_head_hidden_dim=32),
        image_size=s, num_maskmem=3, max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=128, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[s // 16, s // 16], memory_encoder_hidden_size=128,
        memory_encoder_output_channels=64,  # the memory attention's key/value width is fixed at 64
        mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64,
    )  # fmt: skip
    torch.manual_seed(seed)
    return Sam2VideoModel(config).eval()


def save_tiny_sam2(path):
    """The tiny model saved with save_pretrained, plus the processor config real checkpoints carry."""
    import json

    build_tiny_sam2().save_pretrained(path)
    processor = {
        "size": {"height": TINY_SIZE, "width": TINY_SIZE}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": list(TINY_MEAN), "image_std": list(TINY_STD),
    }  # fmt: skip
    (path / "video_preprocessor_config.json").write_text(json.dumps(processor))
    return path
