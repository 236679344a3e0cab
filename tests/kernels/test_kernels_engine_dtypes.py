"""The Triton kernels fed as a GPU run feeds them: a bfloat16 / float16 pipeline loaded through
`from_pretrained` (float32-kept modules included), HetCache with PARTIAL steps, the kernels on
Triton against the same run on the torch paths.

Triton needs the interpreter here (TRITON_INTERPRET=1 from the start), so these cases skip in a
normal run and test_kernels_triton_subprocess.py runs them in a child process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from hetcache_cli.kernels import dispatch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cache"))
from cache_helpers import clip, run_pipe  # noqa: E402

# Latents after 4 steps; the kernels move data exactly, but the merge adds in float32 before
# rounding to the storage dtype where torch adds in the storage dtype: about an ulp per step.
LATENT_TOL = {torch.bfloat16: dict(rtol=0, atol=5e-2), torch.float16: dict(rtol=0, atol=5e-3)}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from hetcache_cli.pipeline.tiny import TinyConfig, build_tiny_pipeline

    path = tmp_path_factory.mktemp("tiny-kernels") / "tiny"
    build_tiny_pipeline(TinyConfig(num_layers=2, vace_layers=[0]), seed=0).save_pretrained(path)
    return path


def load(path: Path, dtype: torch.dtype):
    from diffusers import AutoencoderKLWan, WanVACEPipeline

    vae = AutoencoderKLWan.from_pretrained(path, subfolder="vae", dtype=torch.float32)
    pipe = WanVACEPipeline.from_pretrained(path, vae=vae, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_engine_with_triton_kernels_matches_torch_paths(tiny_dir, dtype, monkeypatch):
    if dispatch.triton_mode() != "interpreter":
        pytest.skip("needs TRITON_INTERPRET=1 from the start; test_kernels_triton_subprocess.py runs it")
    from hetcache_cli.cache import HetCacheConfig, StepStats, apply_hetcache

    pipe = load(tiny_dir, dtype)
    assert pipe.transformer.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    video, mask = clip(9, 64, (20, 40, 8, 30))
    config = HetCacheConfig(schedule="FPPF", margin_ratio=0.5, context_ratio=0.3)

    chosen = []
    resolve = dispatch.resolve_use_triton

    def recording(use_triton, *tensors, op="kernel"):
        on = resolve(use_triton, *tensors, op=op)
        chosen.append((op, on, tuple(t.dtype for t in tensors)))
        return on

    monkeypatch.setattr(dispatch, "resolve_use_triton", recording)
    stats = StepStats()
    apply_hetcache(pipe, config, stats)
    with torch.no_grad():
        on_triton = run_pipe(pipe, video, mask, steps=4)
    decided = [(r.step, r.branch, r.decision, r.tokens.computed) for r in stats.records]
    assert any(on for _, on, _ in chosen), "no kernel ran on Triton"
    # the activations a GPU run feeds the kernels are in the model's dtype
    assert any(dtype in dtypes for _, on, dtypes in chosen if on)

    monkeypatch.setattr(dispatch, "resolve_use_triton", lambda *a, **k: False)
    with torch.no_grad():
        on_torch = run_pipe(pipe, video, mask, steps=4)
    assert [(r.step, r.branch, r.decision, r.tokens.computed) for r in stats.records] == decided
    assert "partial" in {d for _, _, d, _ in decided}
    torch.testing.assert_close(on_triton.float(), on_torch.float(), **LATENT_TOL[dtype])
