"""The cache's planning in the dtypes a GPU run gets: a pipeline loaded through `from_pretrained`
in bfloat16 or float16 keeps diffusers' float32 modules (`_keep_in_fp32_modules`: the time
embedder among them), and the modulation signal must cross that boundary as the model does."""

import pytest
import torch

from hetcache_cli.cache.schedule import modulation_signal
from hetcache_cli.pipeline.tiny import TinyConfig, build_tiny_pipeline


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-dtypes") / "tiny"
    build_tiny_pipeline(TinyConfig(num_layers=2, vace_layers=[0]), seed=0).save_pretrained(path)
    return path


def load_transformer(path, dtype):
    from diffusers import WanVACETransformer3DModel

    return WanVACETransformer3DModel.from_pretrained(path, subfolder="transformer", torch_dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_signal_in_half_precision_matches_float32(saved_tiny, dtype):
    half = load_transformer(saved_tiny, dtype)
    embedder = half.condition_embedder
    # What real weights give: the time embedder kept in float32, the projection in the model's dtype.
    assert next(embedder.time_embedder.parameters()).dtype == torch.float32
    assert embedder.time_proj.weight.dtype == dtype
    timesteps = torch.linspace(999, 10, 12)
    signal = modulation_signal(half, timesteps)
    reference = modulation_signal(load_transformer(saved_tiny, torch.float32), timesteps)
    assert len(signal) == 12 and signal[0] == 0.0
    # Only time_proj's weights are rounded: the signal, and so the schedule, is the float32 one.
    assert signal == pytest.approx(reference, rel=2e-2)
