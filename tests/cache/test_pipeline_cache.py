"""HetCache attached to a tiny WanVACEPipeline: identities, run isolation, statistics, memory bound."""

import logging

import pytest
import torch

from hetcache_cli.cache import (
    CacheMemoryError,
    HetCacheConfig,
    ModelDims,
    StepStats,
    apply_hetcache,
    build_config,
    describe_run,
    estimate_cache_memory,
    remove_hetcache,
)
from hetcache_cli.cache.planning import plan_model
from hetcache_cli.cache.summary import RunSummary

from cache_helpers import clip, eval_pipeline, run_pipe


@pytest.fixture
def cached(pipe):
    yield pipe
    remove_hetcache(pipe)


def test_all_full_schedule_reproduces_the_uncached_pipeline(cached, small_clip):
    expected = run_pipe(cached, *small_clip, steps=4)
    apply_hetcache(cached, HetCacheConfig(schedule="FFFF"))
    got = run_pipe(cached, *small_clip, steps=4)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_method_none_is_the_original_forward_with_stats(cached, small_clip):
    expected = run_pipe(cached, *small_clip, steps=3)
    stats = StepStats()
    apply_hetcache(cached, HetCacheConfig(method="none"), stats)
    got = run_pipe(cached, *small_clip, steps=3)
    assert torch.equal(got, expected)
    assert [(r.step, r.branch, r.decision) for r in stats.records] == [
        (s, b, "full") for s in range(3) for b in ("cond", "uncond")
    ]
    tokens = stats.records[0].tokens
    # box rows 20..39, columns 8..29 px -> token rows 1-2, columns 0-1, in all 3 latent frames
    assert (tokens.total, tokens.computed, tokens.generative, tokens.margin, tokens.context) == (48, 48, 12, 24, 12)
    assert stats.records[0].timestep == pytest.approx(float(cached.scheduler.timesteps[0]))
    assert stats.summary()["flops_ratio"] == 1.0 and stats.cache_memory_bytes == 0


def test_state_is_reset_after_a_call_and_after_a_call_that_raised(cached, small_clip):
    config = HetCacheConfig(schedule="FFPRPF")
    handle = apply_hetcache(cached, config)
    first = run_pipe(cached, *small_clip, steps=6)
    assert handle.state_manager._state_cache == {}  # caches freed by the pipeline's end-of-call reset
    second = run_pipe(cached, *small_clip, steps=6)
    torch.testing.assert_close(second, first, rtol=0, atol=0)

    def boom(pipe, i, t, kwargs):
        if i == 3:
            raise RuntimeError("interrupted")
        return kwargs

    other_video, other_mask = clip(9, 64, (0, 64, 30, 64), seed=3)  # other frames, other mask
    with pytest.raises(RuntimeError, match="interrupted"):
        run_pipe(cached, other_video, other_mask, steps=6, prompt="green box", callback_on_step_end=boom)
    assert handle.state_manager._state_cache  # the raised call left its caches behind ...
    third = run_pipe(cached, *small_clip, steps=6)
    torch.testing.assert_close(third, first, rtol=0, atol=0)  # ... and they did not leak into the next call


@pytest.mark.slow
def test_fast_preset_spends_at_most_40_percent_of_the_flops():
    pipe = eval_pipeline()
    video, mask = clip(17, 128, (40, 90, 40, 90))  # 50x50 px: ~15% of the frame
    stats = StepStats()
    apply_hetcache(pipe, build_config(preset="fast"), stats)
    # thresholds are fractions of the run's total change: the presets are set for ~30-step runs (at 12
    # steps every step changes more than fast's reuse threshold, so it would never reuse)
    run_pipe(pipe, video, mask, steps=30)
    summary = stats.summary()
    assert all(summary["decisions"][d] > 0 for d in ("full", "partial", "reuse")), summary["decisions"]
    assert summary["flops_ratio"] <= 0.40, summary
    partial = next(r for r in stats.records if r.decision == "partial")
    assert partial.tokens.total == 320 and partial.tokens.computed < 320
    # the dry run, from the pixel mask and the timesteps alone, predicts the run
    pixel = torch.zeros(17, 128, 128, dtype=torch.bool)
    pixel[:, 40:90, 40:90] = True
    pipe.scheduler.set_timesteps(30)
    plan = describe_run(pipe.transformer, build_config(preset="fast"), pipe.scheduler.timesteps, pixel)
    assert plan["flops_ratio"] == pytest.approx(summary["flops_ratio"])
    assert plan["tokens"]["active"] == partial.tokens.computed
    assert plan["cache_memory_bytes"] == stats.cache_memory_bytes
    # ... and for the pipeline, it is the plan the hook executed, step for step
    planned = plan_model(pipe, build_config(preset="fast"), pipe.scheduler.timesteps, pixel)
    assert planned == stats.plan
    ran, predicted = stats.run_summary(), RunSummary.from_plan(planned)
    assert (ran.schedule, ran.decisions, ran.flops, ran.flops_full, ran.tokens) == \
        (predicted.schedule, predicted.decisions, predicted.flops, predicted.flops_full, predicted.tokens)
    assert [(r.step, r.decision, r.flops, r.tokens.computed) for r in stats.records if r.branch == "cond"] == \
        [(s.step, s.decision, s.flops, s.computed) for s in planned.steps]


def test_cache_memory_estimate_matches_the_design_figure():
    dims = ModelDims(dim=1536, ffn_dim=8960, num_layers=30, num_vace_layers=15, num_heads=12)
    need = estimate_cache_memory(dims, 14040, 2, torch.bfloat16)
    kv = 2 * 45 * 2 * 14040 * 1536 * 2  # branches x layers x (K, V) x tokens x width x bf16
    assert kv / 2**30 == pytest.approx(7.23, abs=0.01)  # the 7.2 GiB of docs/method.md section 7
    assert need == kv + 2 * 14040 * 1536 * 2  # plus one residual per branch
    assert estimate_cache_memory(dims, 14040, 2, "bfloat16", "teacache") == 2 * 14040 * 1536 * 2
    assert estimate_cache_memory(dims, 14040, 2, "float32", "none") == 0


def test_cache_memory_bound(cached, small_clip, caplog):
    calls = []
    hook = cached.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        apply_hetcache(cached, HetCacheConfig(max_cache_memory="64KiB"))
        with pytest.raises(CacheMemoryError, match=r"needs .* but max_cache_memory is 64KiB: raise max_cache_memory"):
            run_pipe(cached, *small_clip, steps=4)
        assert calls == []  # refused before the first denoising step
        remove_hetcache(cached)
        stats = StepStats()
        apply_hetcache(cached, HetCacheConfig(max_cache_memory="64KiB", on_cache_overflow="teacache"), stats)
        with caplog.at_level(logging.WARNING, logger="hetcache_cli.cache"):
            run_pipe(cached, *small_clip, steps=4)
    finally:
        hook.remove()
    assert "falling back to teacache" in caplog.text
    assert stats.summary()["decisions"]["partial"] == 0
    assert 0 < stats.cache_memory_bytes <= 64 * 1024
