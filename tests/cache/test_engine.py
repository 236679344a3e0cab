"""The engine's identities on a bare tiny transformer (48 tokens): FULL == diffusers, PARTIAL, REUSE, branches."""

import pytest
import torch

from hetcache_cli.cache import HetCacheConfig, StepStats, apply_hetcache, remove_hetcache


def make_inputs(transformer, seed: int, timestep: float = 500.0, text_len: int = 16):
    g = torch.Generator().manual_seed(seed)
    z = transformer.config.in_channels
    mask = torch.zeros(64, 3, 8, 8)
    mask[:, :, 2:6, 0:3] = 1.0  # latent pixels -> tokens rows 1-2, columns 0-1, every frame
    return dict(
        hidden_states=torch.randn(1, z, 3, 8, 8, generator=g),
        timestep=torch.tensor([timestep]),
        encoder_hidden_states=torch.randn(1, text_len, transformer.config.text_dim, generator=g),
        control_hidden_states=torch.cat([torch.randn(1, 2 * z, 3, 8, 8, generator=g), mask[None]], dim=1),
        return_dict=False,
    )


def call(transformer, branch, inputs):
    with transformer.cache_context(branch):
        return transformer(**inputs)[0]


@pytest.fixture
def transformer(pipe):
    t = pipe.transformer
    yield t
    remove_hetcache(t)


def test_full_step_reproduces_diffusers(transformer):
    inputs = make_inputs(transformer, 0)
    with torch.no_grad():
        expected = transformer(**inputs)[0]
        apply_hetcache(transformer, HetCacheConfig(schedule="FF"))
        got = call(transformer, "cond", inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_partial_with_every_token_active_equals_full(transformer):
    first, second = make_inputs(transformer, 0, 900.0), make_inputs(transformer, 1, 700.0)
    with torch.no_grad():
        expected = transformer(**second)[0]
        handle = apply_hetcache(transformer, HetCacheConfig(schedule="FP", margin_ratio=1.0, context_ratio=1.0))
        call(transformer, "cond", first)
        got = call(transformer, "cond", second)
    assert handle.n_active == 48
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_partial_on_a_token_subset_is_exact_when_nothing_changed(transformer):
    # Same inputs twice: the cached K/V and residual of the inactive tokens are exact, so the compact
    # stream must give the FULL output. Hints added twice (or never) to the active rows would not.
    inputs = make_inputs(transformer, 2)
    inputs["control_hidden_states_scale"] = torch.tensor([1.5, 0.7])
    stats = StepStats()
    with torch.no_grad():
        expected = transformer(**inputs)[0]
        handle = apply_hetcache(transformer, HetCacheConfig(schedule="FP", margin_ratio=0.5, context_ratio=0.2), stats)
        call(transformer, "cond", inputs)
        got = call(transformer, "cond", inputs)
    assert [r.decision for r in stats.records] == ["full", "partial"]
    tokens = stats.records[1].tokens
    assert (tokens.generative, tokens.margin, tokens.context) == (12, 24, 12)  # from the folded mask channels
    assert tokens.computed == handle.n_active == 12 + 12 + 2 < 48
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # and the stale-cache path is really used: a PARTIAL step on new inputs differs from FULL
    with torch.no_grad():
        changed = make_inputs(transformer, 3)
        remove_hetcache(transformer)
        full = transformer(**changed)[0]
        apply_hetcache(transformer, HetCacheConfig(schedule="FP", margin_ratio=0.5, context_ratio=0.2))
        call(transformer, "cond", inputs)
        partial = call(transformer, "cond", changed)
    assert (partial - full).abs().max() > 1e-3


def test_reuse_is_input_plus_cached_residual_before_the_head(transformer):
    seen = {}
    hooks = [
        transformer.patch_embedding.register_forward_hook(
            lambda m, i, o: seen.__setitem__("x", o.flatten(2).transpose(1, 2))
        ),
        transformer.norm_out.register_forward_hook(lambda m, i, o: seen.__setitem__("head_in", i[0])),
        transformer.blocks[0].attn1.to_q.register_forward_hook(lambda m, i, o: seen.__setitem__("blocks", True)),
        transformer.vace_patch_embedding.register_forward_hook(lambda m, i, o: seen.__setitem__("vace", True)),
    ]
    try:
        with torch.no_grad():
            handle = apply_hetcache(transformer, HetCacheConfig(schedule="FR"))
            call(transformer, "cond", make_inputs(transformer, 0, 900.0))
            residual = handle.state_manager._state_cache["cond"].residual.clone()
            seen.clear()
            call(transformer, "cond", make_inputs(transformer, 1, 800.0))
    finally:
        for h in hooks:
            h.remove()
    assert "blocks" not in seen and "vace" not in seen
    torch.testing.assert_close(seen["head_in"], (seen["x"] + residual).float(), rtol=0, atol=0)


@pytest.mark.parametrize("schedule", ["FR", "FP"])
def test_guidance_branches_keep_separate_caches(transformer, schedule):
    cond, uncond = make_inputs(transformer, 4), make_inputs(transformer, 4)
    negative = torch.randn(1, 16, transformer.config.text_dim, generator=torch.Generator().manual_seed(9))
    uncond["encoder_hidden_states"] = negative
    with torch.no_grad():
        apply_hetcache(transformer, HetCacheConfig(schedule=schedule, context_ratio=0.3))
        full_cond = call(transformer, "cond", cond)
        full_uncond = call(transformer, "uncond", uncond)
        cached_cond = call(transformer, "cond", cond)
        cached_uncond = call(transformer, "uncond", uncond)
    assert (full_cond - full_uncond).abs().max() > 1e-2  # the prompts make a difference
    # each branch reproduces its own FULL output; a shared cache would give the other branch's
    torch.testing.assert_close(cached_cond, full_cond, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached_uncond, full_uncond, rtol=1e-5, atol=1e-5)


def test_active_set_holds_every_generative_token(transformer):
    for selection in ("attention", "uniform"):
        with torch.no_grad():
            handle = apply_hetcache(
                transformer, HetCacheConfig(schedule="F", selection=selection, margin_ratio=1.0, context_ratio=0.25)
            )
            call(transformer, "cond", make_inputs(transformer, 5))
        state = handle.state_manager._state_cache["cond"]
        classes = handle.run.classes
        active = state.active[0]
        assert active.numel() == handle.n_active == 12 + 24 + 3
        assert torch.all(active[1:] > active[:-1])
        assert torch.isin(classes.generative, active).all() and torch.isin(classes.margin, active).all()
        remove_hetcache(transformer)


def test_teacache_keeps_no_kv_caches(transformer):
    inputs = make_inputs(transformer, 6)
    with torch.no_grad():
        expected = transformer(**inputs)[0]
        handle = apply_hetcache(transformer, HetCacheConfig(method="teacache", schedule="FR"))
        call(transformer, "cond", inputs)
        state = handle.state_manager._state_cache["cond"]
        assert state.kv is None and state.residual is not None
        got = call(transformer, "cond", inputs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bare_transformer_counts_steps_and_restarts(transformer):
    stats = StepStats()
    with torch.no_grad():
        handle = apply_hetcache(transformer, HetCacheConfig(schedule="FRP"), stats)
        outs = [call(transformer, "cond", make_inputs(transformer, s, 900.0 - 100 * s)) for s in range(3)]
        again = [call(transformer, "cond", make_inputs(transformer, s, 900.0 - 100 * s)) for s in range(3)]
    assert [r.decision for r in stats.records] == ["full", "reuse", "partial"]  # reset by the new run
    for a, b in zip(outs, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert handle.schedule == "FRP"


def test_bare_transformer_auto_schedule_needs_begin_run(transformer, pipe):
    with torch.no_grad():
        handle = apply_hetcache(transformer, HetCacheConfig())
        with pytest.raises(ValueError, match="begin_run"):
            call(transformer, "cond", make_inputs(transformer, 0))
        pipe.scheduler.set_timesteps(6)
        plan = handle.begin_run(pipe.scheduler.timesteps)
        assert len(plan) == 6 and plan[0] == "full"
        handle.set_mask(torch.zeros(9, 64, 64, dtype=torch.bool))
        call(transformer, "cond", make_inputs(transformer, 0))
    assert handle.run.classes.counts == (0, 0, 48)


def test_lower_precision_caches(transformer):
    inputs = make_inputs(transformer, 7)
    with torch.no_grad():
        expected = transformer(**inputs)[0]
        handle = apply_hetcache(transformer, HetCacheConfig(schedule="FP", cache_dtype="bfloat16"))
        call(transformer, "cond", inputs)
        state = handle.state_manager._state_cache["cond"]
        assert state.kv_buffer.dtype == torch.bfloat16 and state.residual.dtype == torch.bfloat16
        got = call(transformer, "cond", inputs)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


def test_uncached_bare_transformer_records_every_forward_without_begin_run(transformer):
    from hetcache_cli.cache.flops import ModelDims, forward_flops

    stats = StepStats()
    apply_hetcache(transformer, HetCacheConfig(method="none"), stats)
    with torch.no_grad():
        for i in range(3):
            call(transformer, "cond", make_inputs(transformer, i, 900.0 - 100 * i))
    assert [(r.step, r.decision) for r in stats.records] == [(0, "full"), (1, "full"), (2, "full")]
    dims = ModelDims.from_config(transformer.config, text_len=16)
    assert [r.flops for r in stats.records] == [forward_flops(dims, 48)] * 3
    assert [r.timestep for r in stats.records] == [900.0, 800.0, 700.0]
