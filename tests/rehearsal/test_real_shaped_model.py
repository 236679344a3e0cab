"""Wan2.1-VACE-1.3B's real shapes (width 1536, 12 heads of 128, 30 blocks, 15 VACE blocks), random
weights saved as the hub folder is (sharded safetensors with an index, float32-kept modules),
loaded through `--model` and edited in bfloat16 with HetCache.

bfloat16 matrix products are slow on a CPU without bfloat16 instructions (the cross-attention of
512 text tokens at 45 layers dominates), so the edit is two steps of one branch: FULL then PARTIAL.
"""

import json
import sys

import numpy as np
import pytest
from rehearsal_helpers import DEMO_EDIT, ROOT, invoke, read_frames

pytestmark = pytest.mark.rehearsal


@pytest.fixture(scope="module")
def real_shaped(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_real_shaped_model import WAN_13B_TRANSFORMER, build

    return build(tmp_path_factory.mktemp("wan13b") / "model"), WAN_13B_TRANSFORMER


def test_folder_is_laid_out_as_the_hub_one(real_shaped):
    path, config = real_shaped
    index = json.loads((path / "transformer" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2 and all((path / "transformer" / s).is_file() for s in shards)
    saved = json.loads((path / "transformer" / "config.json").read_text())
    assert {k: saved[k] for k in config} == config

    from safetensors import safe_open

    dtypes = {}
    for shard in shards:
        with safe_open(path / "transformer" / shard, "pt") as f:
            for name in f.keys():
                dtypes[name] = f.get_slice(name).get_dtype()
    assert dtypes["condition_embedder.time_embedder.linear_1.weight"] == "F32"
    assert dtypes["blocks.0.scale_shift_table"] == "F32"
    assert dtypes["blocks.0.attn1.to_q.weight"] == "BF16"


def test_edit_in_bfloat16_at_real_width(real_shaped, tmp_path):
    path, config = real_shaped
    out = tmp_path / "edit.mp4"
    args = [*DEMO_EDIT, "--model", path, "--dtype", "bfloat16", "--device", "cpu", "--steps", 2,
            "--schedule", "FP", "--guidance-scale", 1, "--frames", 5, "--width", 64, "--height", 64,
            "--crop", "full", "--no-paste-back", "--crf", 0, "-o", out]  # fmt: skip
    dry = invoke("edit", *args, "--dry-run")
    assert "FP" in dry.stdout
    invoke("edit", *args, "--quiet")
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    model = stats["model"]
    assert model["dtype"] == "bfloat16"
    assert (model["transformer"]["num_attention_heads"], model["transformer"]["attention_head_dim"]) == (12, 128)
    assert model["transformer"]["num_layers"] == 30 and len(model["transformer"]["vace_layers"]) == 15
    steps = stats["steps"]
    assert [(s["step"], s["decision"]) for s in steps] == [(0, "full"), (1, "partial")]
    n_tokens = 2 * 4 * 4  # latent frames (5 - 1) / 4 + 1, (64 / 16) ** 2
    assert steps[0]["tokens"]["computed"] == n_tokens
    assert 0 < steps[1]["tokens"]["computed"] < n_tokens
    frames = read_frames(out)
    assert frames.shape == (5, 160, 160, 3) and np.ptp(frames) > 0
