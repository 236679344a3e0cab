"""Two experts (Wan2.2 layout): a tiny pipeline with `transformer_2`, the switch in the middle of the run."""

import logging

import pytest
import torch

from hetcache_cli.cache import HetCacheConfig, StepStats, apply_hetcache, build_config, describe_run, remove_hetcache
from hetcache_cli.cache.expert_group import ExpertGroup
from hetcache_cli.cache.experts import step_experts, switch_steps
from hetcache_cli.cache.planning import plan_model
from hetcache_cli.cache.summary import RunSummary
from hetcache_cli.cache.text_kv import project

from cache_helpers import eval_pipeline, run_pipe

STEPS = 6  # UniPC, flow shift 3: timesteps 999, 937, 857 | 750, 600, 376 around the boundary 800


@pytest.fixture(scope="module")
def pipe2():
    torch.manual_seed(0)
    return eval_pipeline(experts=2, boundary_ratio=0.8)


@pytest.fixture
def cached2(pipe2):
    yield pipe2
    remove_hetcache(pipe2)


@pytest.fixture(scope="module")
def uncached(pipe2, small_clip):
    return run_pipe(pipe2, *small_clip, steps=STEPS)


def owners(pipe2, steps=STEPS):
    pipe2.scheduler.set_timesteps(steps)
    return step_experts(pipe2.scheduler.timesteps.tolist(), 800.0, ["transformer", "transformer_2"])


def test_the_pipeline_switches_in_the_middle(pipe2):
    assert owners(pipe2) == ["transformer"] * 3 + ["transformer_2"] * 3
    assert switch_steps(owners(pipe2)) == [3]


def test_all_full_equals_uncached_and_records_name_their_expert(cached2, small_clip, uncached):
    stats = StepStats()
    handle = apply_hetcache(cached2, HetCacheConfig(schedule="F" * STEPS), stats)
    assert isinstance(handle.group, ExpertGroup) and set(handle.group.hooks) == {"transformer", "transformer_2"}
    got = run_pipe(cached2, *small_clip, steps=STEPS)
    torch.testing.assert_close(got, uncached, rtol=0, atol=1e-6)
    assert [(r.step, r.expert) for r in stats.records if r.branch == "cond"] == list(enumerate(owners(cached2)))
    summary = stats.summary()["experts"]
    assert (summary["transformer"]["first_step"], summary["transformer_2"]["first_step"]) == (0, 3)


def test_the_switch_step_is_full(cached2, small_clip):
    stats = StepStats()
    # thresholds that make every step after the warm-up PARTIAL or REUSE unless a rule forces FULL
    config = HetCacheConfig(reuse_threshold=0.2, full_threshold=0.99, warmup_steps=1, max_partial_run=9)
    apply_hetcache(cached2, config, stats)
    run_pipe(cached2, *small_clip, steps=STEPS)
    cond = [r for r in stats.records if r.branch == "cond"]
    assert [r.decision for r in cond][3] == "full"
    assert all(r.decision != "full" for r in cond[1:3]) and any(r.decision != "full" for r in cond[4:5])
    assert {r.decision for r in stats.records if r.step == 3} == {"full"}  # both branches


def test_an_explicit_schedule_is_forced_full_at_the_switch(cached2, small_clip, caplog):
    stats = StepStats()
    handle = apply_hetcache(cached2, HetCacheConfig(schedule="FPRPRF"), stats)
    with caplog.at_level(logging.WARNING, logger="hetcache_cli.cache"):
        run_pipe(cached2, *small_clip, steps=STEPS)
    assert "asks for P at step 3, the first step of transformer_2" in caplog.text
    assert "".join(r.decision[0].upper() for r in stats.records if r.branch == "cond") == "FPRFRF"
    assert handle.schedule is None  # reset after the call


def test_each_expert_keeps_its_own_caches(cached2, small_clip, uncached):
    # The prompt's text K/V are cached per expert and branch for the whole run: with one cache for both,
    # transformer_2 would attend to the K/V made by transformer's weights, and the all-FULL run would differ.
    seen = {}

    def capture(pipe, i, t, kwargs):
        for name, hook in handle.group.hooks.items():
            state = hook.state_manager._state_cache.get("cond")
            if state is not None:  # the states are cleared at the end of the call: keep what we check
                seen[(i, name)] = (state, state.text.text.clone(), state.text.kv[0][0].clone())
        return kwargs

    handle = apply_hetcache(cached2, HetCacheConfig(schedule="F" * STEPS))
    run_pipe(cached2, *small_clip, steps=STEPS, callback_on_step_end=capture)
    first, second = seen[(2, "transformer")], seen[(5, "transformer_2")]
    # two state objects (held here: an id() of a freed one can be reused by the next); the first expert's
    # caches freed at the switch
    assert first[0] is not second[0] and (5, "transformer") not in seen
    with torch.no_grad():
        k_own = project(cached2.transformer_2.blocks[0].attn2, second[1])[0]
        k_other = project(cached2.transformer.blocks[0].attn2, second[1])[0]
    torch.testing.assert_close(second[2], k_own, rtol=0, atol=0)
    assert (k_own - k_other).abs().max() > 1e-2

    # the negative control: one cache for both experts (and kept across the switch) changes the output
    remove_hetcache(cached2)
    handle = apply_hetcache(cached2, HetCacheConfig(schedule="F" * STEPS))
    hooks = handle.group.hooks
    hooks["transformer_2"].state_manager = hooks["transformer"].state_manager
    handle.group.activate = lambda hook: None
    shared = run_pipe(cached2, *small_clip, steps=STEPS)
    assert (shared - uncached).abs().max() > 1e-3


def test_dry_run_plans_both_experts_as_the_run_does(cached2, small_clip):
    config = build_config(preset="fast")
    stats = StepStats()
    apply_hetcache(cached2, config, stats)
    run_pipe(cached2, *small_clip, steps=10)
    summary = stats.summary()
    pixel = torch.zeros(9, 64, 64, dtype=torch.bool)
    pixel[:, 20:40, 8:30] = True
    cached2.scheduler.set_timesteps(10)
    # the dry run's plan is the one the hooks executed: made by the same function from the same inputs
    planned = plan_model(cached2, config, cached2.scheduler.timesteps, pixel)
    assert planned == stats.plan and [e.name for e in planned.experts] == ["transformer", "transformer_2"]
    ran, predicted = stats.run_summary(), RunSummary.from_plan(planned)
    for key in ("schedule", "decisions", "flops", "flops_full", "tokens", "cache_memory_bytes", "text_kv_memory_bytes"):
        assert getattr(ran, key) == getattr(predicted, key), key
    for name, expert in predicted.experts.items():
        got = ran.experts[name]
        assert (got.schedule, got.decisions, got.flops, got.flops_full) == \
            (expert.schedule, expert.decisions, expert.flops, expert.flops_full)
        assert expert.schedule[0] == "F"
    plan = describe_run(cached2, config, cached2.scheduler.timesteps, pixel)
    assert plan["schedule"] == summary["schedule"] and plan["flops"] == summary["flops"]
    # the first expert's caches are freed before the second allocates its own: the peak is one expert's
    assert plan["cache_memory_bytes"] == stats.cache_memory_bytes == stats.cache_memory_measured_bytes
    assert plan["cache_memory_bytes"] == plan["experts"]["transformer_2"]["cache_memory_bytes"]