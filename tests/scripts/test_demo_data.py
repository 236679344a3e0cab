"""The demo model's training data and conditioning (scripts/demo_data.py): built exactly as WanVACEPipeline builds them."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import demo_data as T  # noqa: E402

from hetcache_cli.pipeline.tiny import VOCABULARY, TinyConfig, build_tiny_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline(TinyConfig(num_layers=2, vace_layers=[0]), seed=0)


def test_edits_change_only_the_mask_and_use_known_words():
    rng = np.random.default_rng(3)
    edits = T.random_edits(rng, 9, 64, 96, n=6)
    for e in edits:
        assert e.target.shape == e.source.shape == (9, 64, 96, 3)
        assert np.array_equal(e.target[~e.mask], e.source[~e.mask])
        assert e.mask.any() and not e.mask.all()
        assert all(word in VOCABULARY for word in e.prompt.split()), e.prompt
        if e.kind == "remove":
            assert e.prompt == T.REMOVE_PROMPT and e.cover.sum() == 0
        else:
            assert e.cover[e.mask].sum() > 0 and e.cover[~e.mask].sum() == 0


@pytest.mark.parametrize("kind", ["path", "track", "box"])
def test_mask_kinds_cover_the_object(kind):
    rng = np.random.default_rng(0)
    scene = T.random_scene(rng, 9, 64, 64)
    _, cover = T.render(T.SceneSpec(9, 64, 64, scene.pan, scene.shapes[-1:], scene.texture_seed))
    mask = T.make_mask(rng, cover, kind)
    assert mask[cover > 0.02].all()
    if kind != "track":
        assert (mask == mask[:1]).all()


@pytest.fixture(scope="module")
def trained_layout_pipe():
    """The tiny pipeline with the trained model's residual, patchified VAE."""
    p = build_tiny_pipeline(TinyConfig(num_layers=2, vace_layers=[0]), seed=0)
    p.register_modules(vae=T.build_trained_vae(TinyConfig()))
    return p


@pytest.mark.parametrize("which", ["pipe", "trained_layout_pipe"])
def test_conditioning_is_what_the_pipeline_feeds_the_transformer(which, request):
    pipe = request.getfixturevalue(which)
    rng = np.random.default_rng(1)
    e = T.random_edits(rng, 5, 64, 80, n=1)[0]
    seen = {}

    def grab(_module, _args, kwargs):
        seen.setdefault("control", kwargs["control_hidden_states"].clone())

    handle = pipe.transformer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        pipe(prompt=e.prompt, video=T.to_pil(e.source), mask=T.mask_pil(e.mask), height=64, width=80,
             num_frames=5, num_inference_steps=1, guidance_scale=1.0, output_type="latent")
    finally:
        handle.remove()
    ours = T.vace_conditioning(pipe, e.source, e.mask)
    assert ours.shape == (1, 2 * 8 + 64, 2, 8, 10)
    torch.testing.assert_close(ours, seen["control"])


def test_flow_sigmas_match_the_scheduler(pipe):
    sched = pipe.scheduler
    sched.set_timesteps(10)
    u = torch.from_numpy(np.linspace(1, 1 / 1000, 11)[:-1]).float()
    torch.testing.assert_close(T.flow_sigma(u, sched.config.flow_shift), sched.sigmas[:-1].float(), atol=1e-4, rtol=0)


def test_target_latents_invert_the_pipeline_decode(pipe):
    """x0 uses the normalisation the pipeline undoes before decoding: z = x0 * std + mean."""
    pipe.vae.register_to_config(latents_mean=[0.5] * 8, latents_std=[2.0] * 8)
    try:
        clip = T.render(T.random_scene(np.random.default_rng(2), 5, 64, 64))[0]
        x0 = T.target_latents(pipe, [clip])
        video = pipe.video_processor.preprocess_video(T.to_pil(clip), 64, 64)
        z = pipe.vae.encode(video).latent_dist.mode()
        torch.testing.assert_close(x0 * 2.0 + 0.5, z, atol=1e-5, rtol=1e-5)
    finally:
        pipe.vae.register_to_config(latents_mean=[0.0] * 8, latents_std=[1.0] * 8)


def test_batched_conditioning_matches_the_pipelines_one_at_a_time(trained_layout_pipe):
    pipe = trained_layout_pipe
    pipe.vae.register_to_config(latents_mean=[0.1] * 8, latents_std=[1.5] * 8)
    try:
        items = []
        for seed in (4, 5, 6):
            e = T.random_edits(np.random.default_rng(seed), 5, 64, 80, n=1)[0]
            items.append((e.source, e.mask))
        batched = T.vace_conditioning_batch(pipe, items)
        for (source, mask), got in zip(items, batched):
            torch.testing.assert_close(got, T.vace_conditioning(pipe, source, mask)[0], atol=1e-4, rtol=1e-4)
    finally:
        pipe.vae.register_to_config(latents_mean=[0.0] * 8, latents_std=[1.0] * 8)
